"""The period report: one self-contained HTML page (inline CSS and SVG, no script, nothing fetched).

Written beside the period mart, inside its partition (``{lake}/retail/monthly_sales_by_country/
ds=2011-01-01/report.html``), where the lake browser finds and serves it (docs/lake-browser.md).
Every value from the data is escaped. Charts: revenue per day (days without trading shown as
such), top countries, top products, cancellations per day and the most cancelled products; the
headline figures on top and the whole mart as a table at the end.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Sequence
from typing import Any

# Stock codes of goods: five digits and an optional letter (85123A). The others are postage,
# fees, manual entries and discounts (POST, DOT, AMAZONFEE, M, D, BANK CHARGES, ...).
PRODUCT_CODE = re.compile(r"^\d{5}")
BLUE, RED, GREY, INK = "#2b6cb0", "#c53030", "#a0aec0", "#1a202c"
CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #1a202c; margin: 24px;
       max-width: 1100px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 28px 0 8px; }
p.sub { color: #4a5568; margin: 0 0 16px; }
.kpis { display: flex; flex-wrap: wrap; gap: 12px; }
.kpi { border: 1px solid #e2e8f0; border-radius: 6px; padding: 10px 14px; min-width: 120px; }
.kpi b { display: block; font-size: 20px; } .kpi span { color: #4a5568; font-size: 12px; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
svg text { font-size: 11px; fill: #2d3748; } svg .axis { stroke: #cbd5e0; }
table { border-collapse: collapse; font-size: 12px; } th, td { padding: 3px 8px; border-bottom: 1px solid #edf2f7; }
th { text-align: left; background: #f7fafc; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #4a5568; font-size: 12px; }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def money(value: float) -> str:
    return f"£{value:,.2f}"


def _short(text: str, n: int = 34) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"


def column_chart(chart_id: str, labels: Sequence[str], values: Sequence[float], *, color: str, title: str,
                 empty: Sequence[bool] = (), width: int = 1040, height: int = 220) -> str:
    """Vertical bars, one per label (days); ``empty`` marks days without trading (a grey tick)."""
    n = max(len(values), 1)
    left, bottom, top = 70, 36, 12
    plot_w, plot_h = width - left - 10, height - bottom - top
    peak = max([v for v in values if v > 0] or [1.0])
    step = plot_w / n
    bar_w = max(step * 0.75, 1.0)
    parts = [f'<svg id="{_e(chart_id)}" width="{width}" height="{height}" role="img" aria-label="{_e(title)}">']
    for frac in (0, 0.5, 1):
        y = top + plot_h * (1 - frac)
        parts.append(f'<line class="axis" x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_e(_compact(peak * frac))}</text>')
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        x = left + i * step + (step - bar_w) / 2
        is_empty = bool(empty[i]) if i < len(empty) else False
        if is_empty:
            parts.append(f'<rect class="bar empty-day" x="{x:.1f}" y="{top + plot_h - 3:.1f}" width="{bar_w:.1f}" height="3" '
                         f'fill="{GREY}"><title>{_e(label)}: no trading</title></rect>')
        else:
            h = plot_h * max(value, 0) / peak
            parts.append(f'<rect class="bar" x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                         f'fill="{color}"><title>{_e(label)}: {_e(money(value))}</title></rect>')
        if n <= 16 or i % max(n // 16, 1) == 0:
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{height - bottom + 14}" text-anchor="middle">'
                         f'{_e(label[5:] if len(label) == 10 else label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(chart_id: str, labels: Sequence[str], values: Sequence[float], *, color: str, title: str,
              notes: Sequence[str] = (), width: int = 540) -> str:
    """Horizontal bars (rankings), largest first as given."""
    row, left = 22, 270
    height = max(len(values), 1) * row + 10
    peak = max([v for v in values if v > 0] or [1.0])
    plot_w = width - left - 90
    parts = [f'<svg id="{_e(chart_id)}" width="{width}" height="{height}" role="img" aria-label="{_e(title)}">']
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = 5 + i * row
        w = plot_w * max(value, 0) / peak
        note = notes[i] if i < len(notes) else ""
        parts.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end">{_e(_short(label, 30))}</text>'
                     f'<rect class="bar" x="{left}" y="{y + 3}" width="{w:.1f}" height="{row - 7}" fill="{color}">'
                     f'<title>{_e(label)}: {_e(money(value))}{_e(" · " + note if note else "")}</title></rect>'
                     f'<text x="{left + w + 4:.1f}" y="{y + 14}">{_e(money(value))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _compact(value: float) -> str:
    if value >= 1e6:
        return f"£{value / 1e6:.1f}M"
    if value >= 1e3:
        return f"£{value / 1e3:.0f}k"
    return f"£{value:.0f}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[bool]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="n">{_e(v)}</td>' if num else f"<td>{_e(v)}</td>" for v, num in zip(r, numeric, strict=True))
        + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render(*, title: str, period_label: str, days: Sequence[str], daily: Any, mart: Any, top_products: Any,
           cancelled_products: Any, descriptions: dict[str, str], customers: int, generated: dt.datetime,
           top: int = 10) -> str:
    """The report page. ``daily``: per ``day`` revenue, invoices, cancelled_lines, cancelled_value
    (trading days only); ``mart``: the period mart; ``top_products`` / ``cancelled_products``:
    per ``stock_code`` lines, units, value (sorted by value, largest first); ``customers``: distinct
    customers of the period's sale lines."""
    per_day = {r["day"]: r for r in daily.to_dict("records")}
    trading = [d for d in days if d in per_day]
    revenue = [float(per_day[d]["revenue"]) if d in per_day else 0.0 for d in days]
    cancelled = [float(per_day[d]["cancelled_value"]) if d in per_day else 0.0 for d in days]
    empty = [d not in per_day for d in days]
    total_revenue = float(mart["revenue"].sum())
    cancel_lines = int(daily["cancelled_lines"].sum()) if len(daily) else 0
    cancel_value = float(daily["cancelled_value"].sum()) if len(daily) else 0.0
    countries = mart.sort_values(["revenue", "country"], ascending=[False, True])
    top_countries = countries.head(top)
    is_product = top_products["stock_code"].astype(str).str.match(PRODUCT_CODE)
    products = top_products[is_product].head(top)
    non_product = float(top_products.loc[~is_product, "value"].sum())
    cancels = cancelled_products.head(top)
    kpis = [
        (money(total_revenue), "revenue (sale lines)"),
        (f"{int(mart['invoices'].sum()):,}", "invoices"),
        (f"{customers:,}", "customers"),
        (f"{int(mart['units'].sum()):,}", "units sold"),
        (f"{int((mart['units'] > 0).sum())}", "countries with sales"),
        (f"{len(trading)} / {len(days)}", "trading days"),
        (f"{cancel_lines:,}", "cancelled lines"),
        (money(cancel_value), "value cancelled"),
    ]
    kpi_html = "".join(f'<div class="kpi"><b>{_e(v)}</b><span>{_e(k)}</span></div>' for v, k in kpis)
    mart_rows = [(r["country"], f"{int(r['invoices']):,}", f"{int(r['customers']):,}", f"{int(r['units']):,}",
                  money(float(r["revenue"]))) for r in countries.to_dict("records")]

    def product_label(code: str) -> str:
        desc = descriptions.get(code)
        return f"{code} {desc}" if desc else str(code)

    no_days = [d for d, e in zip(days, empty, strict=True) if e]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title><style>{CSS}</style></head>
<body>
<h1>{_e(title)}</h1>
<p class="sub">{_e(days[0])} to {_e(days[-1])} · generated {_e(generated.strftime('%Y-%m-%d %H:%M UTC'))} from the
period's invoice_lines partitions · distinct counts are over the whole period</p>
<div class="kpis">{kpi_html}</div>
<h2>Revenue per day</h2>
{column_chart("revenue-per-day", days, revenue, color=BLUE, title="revenue per day", empty=empty)}
<p class="note">Days without trading: {_e(", ".join(no_days) if no_days else "none")}.</p>
<div class="grid">
<div><h2>Top countries by revenue</h2>
{bar_chart("top-countries", list(top_countries["country"]), list(top_countries["revenue"].astype(float)), color=BLUE,
           title="top countries", notes=[f"{int(i):,} invoices" for i in top_countries["invoices"]])}</div>
<div><h2>Top products by revenue</h2>
<p class="note">Goods only: postage, fees and manual entries (stock codes such as POST, DOT, AMAZONFEE, M) are left
out here ({_e(money(non_product))} in the period) but counted everywhere else.</p>
{bar_chart("top-products", [product_label(c) for c in products["stock_code"]], list(products["value"].astype(float)),
           color=BLUE, title="top products", notes=[f"{int(u):,} units" for u in products["units"]])}</div>
</div>
<h2>Cancellations per day (value cancelled)</h2>
{column_chart("cancellations-per-day", days, cancelled, color=RED, title="cancellations per day", empty=empty)}
<h2>Most cancelled stock codes (value cancelled)</h2>
{bar_chart("cancelled-products", [product_label(c) for c in cancels["stock_code"]], list(cancels["value"].astype(float)),
           color=RED, title="most cancelled products", notes=[f"{int(n):,} lines" for n in cancels["lines"]])}
<h2>{_e(period_label)}: sales by country</h2>
{_table(["country", "invoices", "customers", "units", "revenue"], mart_rows, [False, True, True, True, True])}
<p class="note">Sale lines: invoice number starting with neither C nor A, quantity &gt; 0 and unit price &gt; 0.
Cancellations: invoice number starting with C; their value is −quantity × unit price.</p>
</body></html>
"""
