"""The period report: one self-contained HTML page (inline CSS and SVG, no script, nothing fetched).

Written beside the period mart, inside its partition (``{lake}/retail/monthly_sales_by_country/
ds=2011-01-01/report.html``), where the lake browser finds and serves it (docs/lake-browser.md).
Every value from the data is escaped. Charts: revenue per day (days without trading shown as
such), top countries, top products, cancellations per day and the most cancelled products; the
headline figures on top and the mart's countries with sales as a table at the end.

Readable at any period length: day ticks are the day of the month when the period lies in one
month (else ``MM-DD``), and only every n-th is drawn when their estimated widths would touch;
ranking labels wrap onto two lines and carry the full name as an SVG ``<title>`` (a tooltip).
"""

from __future__ import annotations

import datetime as dt
import html
import math
import re
import textwrap
from collections.abc import Iterable, Sequence
from typing import Any

# Stock codes of goods: five digits and an optional letter (85123A). The others are postage,
# fees, manual entries and discounts (POST, DOT, AMAZONFEE, M, D, BANK CHARGES, ...).
PRODUCT_CODE = re.compile(r"^\d{5}")
BLUE, RED, GREY, INK = "#2b6cb0", "#c53030", "#a0aec0", "#1a202c"
FONT = 11  # px: the charts' text size, a presentation attribute of each <svg> (tests read it)
CHAR_EM = 0.65  # a character's estimated advance in em (Arial/Helvetica: digits 0.56, capitals up to 0.72)
NO_DESCRIPTION = "(no description)"
CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #1a202c; margin: 24px;
       max-width: 1100px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 28px 0 8px; }
p.sub { color: #4a5568; margin: 0 0 16px; }
.kpis { display: flex; flex-wrap: wrap; gap: 12px; }
.kpi { border: 1px solid #e2e8f0; border-radius: 6px; padding: 10px 14px; min-width: 120px; }
.kpi b { display: block; font-size: 20px; } .kpi span { color: #4a5568; font-size: 12px; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
svg text { fill: #2d3748; } svg .axis { stroke: #cbd5e0; }
table { border-collapse: collapse; font-size: 12px; } th, td { padding: 3px 8px; border-bottom: 1px solid #edf2f7; }
th { text-align: left; background: #f7fafc; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #4a5568; font-size: 12px; }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def money(value: float) -> str:
    return f"£{value:,.2f}"


def _text_width(text: str) -> float:
    return len(text) * FONT * CHAR_EM


def _lines(text: str, width: int = 30) -> list[str]:
    """A ranking label on at most two lines (words kept whole; cut with "…" only beyond that)."""
    return textwrap.wrap(" ".join(str(text or "").split()), width, max_lines=2, placeholder=" …",
                         break_on_hyphens=False) or [""]


def _day_ticks(days: Sequence[str]) -> list[str]:
    """The day of the month ("1".."31") when every day is in one month, else ``MM-DD``."""
    one_month = len({d[:7] for d in days}) == 1
    return [str(int(d[8:])) if one_month else d[5:] for d in days]


def is_placeholder(description: str | None) -> bool:
    """A stock-keeping note rather than a product's name: empty, with a "?", or with at most one
    capital letter ("???missing", "check", "Damaged", "wrongly marked 23343"). The catalogue
    writes goods in capitals; no goods code's description on a sale or cancellation line of the
    data set matches this."""
    text = str(description or "")
    return "?" in text or sum(c.isupper() for c in text) < 2


def best_description(names: Iterable[str]) -> str | None:
    """The name to show for a stock code among the descriptions its lines carry: real names before
    placeholders, then the alphabetically first (the same every run)."""
    ranked = sorted({" ".join(str(n).split()) for n in names}, key=lambda n: (is_placeholder(n), n))
    return ranked[0] if ranked else None


def product_label(code: str, descriptions: dict[str, str]) -> str:
    """``code description``; a goods code whose description is a placeholder: ``code (no description)``."""
    desc = " ".join(str(descriptions.get(code) or "").split())
    if PRODUCT_CODE.match(str(code)) and is_placeholder(desc):
        return f"{code} {NO_DESCRIPTION}"
    return f"{code} {desc}" if desc else str(code)


def column_chart(chart_id: str, labels: Sequence[str], values: Sequence[float], *, color: str, title: str,
                 empty: Sequence[bool] = (), width: int = 1040, height: int = 220) -> str:
    """Vertical bars, one per label (days, ``YYYY-MM-DD``); ``empty`` marks days without trading (a grey tick)."""
    n = max(len(values), 1)
    left, bottom, top = 70, 36, 12
    plot_w, plot_h = width - left - 10, height - bottom - top
    peak = max([v for v in values if v > 0] or [1.0])
    step = plot_w / n
    bar_w = max(step * 0.75, 1.0)
    ticks = _day_ticks(labels)
    every = math.ceil((max(map(_text_width, ticks), default=0) + 6) / step)  # ticks 6 px apart at least
    parts = [f'<svg id="{_e(chart_id)}" width="{width}" height="{height}" font-size="{FONT}" role="img" '
             f'aria-label="{_e(title)}">']
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
        if i % every == 0:
            parts.append(f'<text class="tick" x="{x + bar_w / 2:.1f}" y="{height - bottom + 16}" '
                         f'text-anchor="middle">{_e(ticks[i])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(chart_id: str, labels: Sequence[str], values: Sequence[float], *, color: str, title: str,
              notes: Sequence[str] = (), width: int = 540) -> str:
    """Horizontal bars (rankings), largest first as given. Labels wrap onto two lines (rows grow to
    fit them) and each carries its full text as a ``<title>``."""
    wrapped = [_lines(label) for label in labels]
    row, left = (32 if any(len(lines) > 1 for lines in wrapped) else 22), 270
    height = max(len(values), 1) * row + 10
    peak = max([v for v in values if v > 0] or [1.0])
    plot_w = width - left - 100
    parts = [f'<svg id="{_e(chart_id)}" width="{width}" height="{height}" font-size="{FONT}" role="img" '
             f'aria-label="{_e(title)}">']
    for i, (label, lines, value) in enumerate(zip(labels, wrapped, values, strict=True)):
        y = 5 + i * row
        mid = y + row / 2 + 4  # the baseline of a line centred on the bar
        w = plot_w * max(value, 0) / peak
        note = notes[i] if i < len(notes) else ""
        if len(lines) == 1:
            text = _e(lines[0])
        else:
            text = "".join(f'<tspan x="{left - 6}" y="{mid - 6 + 12 * j:.1f}">{_e(line)}</tspan>'
                           for j, line in enumerate(lines))
        parts.append(f'<g class="label"><title>{_e(label)}</title>'
                     f'<text x="{left - 6}" y="{mid:.1f}" text-anchor="end">{text}</text></g>'
                     f'<rect class="bar" x="{left}" y="{y + 3}" width="{w:.1f}" height="{row - 7}" fill="{color}">'
                     f'<title>{_e(label)}: {_e(money(value))}{_e(" · " + note if note else "")}</title></rect>'
                     f'<text x="{left + w + 4:.1f}" y="{mid:.1f}">{_e(money(value))}</text>')
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
           unknown_customer: tuple[int, float] | None = None, top: int = 10) -> str:
    """The report page. ``daily``: per ``day`` revenue, invoices, cancelled_lines, cancelled_value
    (trading days only); ``mart``: the period mart; ``top_products`` / ``cancelled_products``:
    per ``stock_code`` lines, units, value (sorted by value, largest first); ``customers``: distinct
    customers of the period's sale lines; ``unknown_customer``: the number of sale lines without a
    ``CustomerID`` and their revenue (the marts count no customer for them), said in a note.

    The mart's countries without a sale line (only cancellations or other lines: every figure 0)
    are left out of the table and the ranking, and named in a note."""
    per_day = {r["day"]: r for r in daily.to_dict("records")}
    trading = [d for d in days if d in per_day]
    revenue = [float(per_day[d]["revenue"]) if d in per_day else 0.0 for d in days]
    cancelled = [float(per_day[d]["cancelled_value"]) if d in per_day else 0.0 for d in days]
    empty = [d not in per_day for d in days]
    total_revenue = float(mart["revenue"].sum())
    cancel_lines = int(daily["cancelled_lines"].sum()) if len(daily) else 0
    cancel_value = float(daily["cancelled_value"].sum()) if len(daily) else 0.0
    has_sales = mart["invoices"] > 0
    no_sales = sorted(mart.loc[~has_sales, "country"].astype(str))
    countries = mart[has_sales].sort_values(["revenue", "country"], ascending=[False, True])
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
        (f"{len(countries)}", "countries with sales"),
        (f"{len(trading)} / {len(days)}", "trading days"),
        (f"{cancel_lines:,}", "cancelled lines"),
        (money(cancel_value), "value cancelled"),
    ]
    kpi_html = "".join(f'<div class="kpi"><b>{_e(v)}</b><span>{_e(k)}</span></div>' for v, k in kpis)
    # 0 customers with sales: none of the country's sale lines has a CustomerID.
    mart_rows = [(r["country"], f"{int(r['invoices']):,}", f"{int(r['customers']):,}" if r["customers"] else "unknown",
                  f"{int(r['units']):,}", money(float(r["revenue"]))) for r in countries.to_dict("records")]
    unknown = "Sale lines without a CustomerID"
    if unknown_customer is not None:
        lines, value = unknown_customer
        share = f", {value / total_revenue:.1%} of revenue" if total_revenue else ""
        unknown = f"{lines:,} sale lines ({money(value)}{share}) have no CustomerID: they"
    unknown += (" count in revenue, invoices and units but in no customer count (a country whose sale lines "
                'all lack one shows "unknown" customers).')
    left_out = (f" Left out: {', '.join(no_sales)}, with lines in the period but no sale line (only "
                f"cancellations or other lines)." if no_sales else "")

    product_names = [product_label(c, descriptions) for c in products["stock_code"]]
    cancel_names = [product_label(c, descriptions) for c in cancels["stock_code"]]
    no_days = [d for d, e in zip(days, empty, strict=True) if e]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title><style>{CSS}</style></head>
<body>
<h1>{_e(title)}</h1>
<p class="sub">{_e(days[0])} to {_e(days[-1])} · generated {_e(generated.strftime('%Y-%m-%d %H:%M UTC'))} from the
period's invoice_lines partitions · distinct counts are over the whole period</p>
<div class="kpis">{kpi_html}</div>
<p class="note" id="unknown-customers">Customers: distinct CustomerIDs. {_e(unknown)}</p>
<h2>Revenue per day</h2>
{column_chart("revenue-per-day", days, revenue, color=BLUE, title="revenue per day", empty=empty)}
<p class="note">Days without trading: {_e(", ".join(no_days) if no_days else "none")}.</p>
<div class="grid">
<div><h2>Top countries by revenue</h2>
{bar_chart("top-countries", list(top_countries["country"]), list(top_countries["revenue"].astype(float)), color=BLUE,
           title="top countries", notes=[f"{int(i):,} invoices" for i in top_countries["invoices"]])}</div>
<div><h2>Top products by revenue</h2>
<p class="note">Goods only: postage, fees and manual entries (stock codes such as POST, DOT, AMAZONFEE, M) are left
out here ({_e(money(non_product))} in the period) but counted everywhere else. A goods code whose description
in the data is empty or a stock-keeping note (“???missing”, “check”, “damaged”) is shown as
“{_e(NO_DESCRIPTION)}”.</p>
{bar_chart("top-products", product_names, list(products["value"].astype(float)),
           color=BLUE, title="top products", notes=[f"{int(u):,} units" for u in products["units"]])}</div>
</div>
<h2>Cancellations per day (value cancelled)</h2>
{column_chart("cancellations-per-day", days, cancelled, color=RED, title="cancellations per day", empty=empty)}
<h2>Most cancelled stock codes (value cancelled)</h2>
{bar_chart("cancelled-products", cancel_names, list(cancels["value"].astype(float)),
           color=RED, title="most cancelled products", notes=[f"{int(n):,} lines" for n in cancels["lines"]])}
<h2>{_e(period_label)}: sales by country</h2>
{_table(["country", "invoices", "customers", "units", "revenue"], mart_rows, [False, True, True, True, True])}
<p class="note" id="left-out">Countries with at least one sale line.{_e(left_out)}</p>
<p class="note">Sale lines: invoice number starting with neither C nor A, quantity &gt; 0 and unit price &gt; 0.
Cancellations: invoice number starting with C; their value is −quantity × unit price.</p>
</body></html>
"""
