"""The retail period report (include/pipelines/retail/report.py) on small synthetic frames: its
charts' text laid out without overlaps (checked on the SVG's geometry), full product names,
countries without sales, customers without an id and placeholder descriptions."""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET

import pandas as pd
import pytest

from include.pipelines.retail import report

CHARTS = ("revenue-per-day", "top-countries", "top-products", "cancellations-per-day", "cancelled-products")
LONG = "WHITE HANGING HEART T-LIGHT HOLDERS"  # 35 characters, the longest in the data; the old cut was 30
# Estimated text extents: a character's average advance in em (Arial/Helvetica: digits 0.56,
# capitals up to 0.72), ascent and descent as fractions of the font size. The report draws no
# rotated text (asserted), so a label's box is its anchor point plus these.
CHAR_EM, ASCENT, DESCENT = 0.65, 0.8, 0.25


def _days(first: str, n: int) -> list[str]:
    start = dt.date.fromisoformat(first)
    return [(start + dt.timedelta(days=i)).isoformat() for i in range(n)]


def _render(days: list[str], *, mart: pd.DataFrame | None = None, descriptions: dict[str, str] | None = None,
            **kwargs) -> str:
    """A report as ``jobs.rollup`` calls ``render``: Saturdays without trading, three countries, big money."""
    trading = [d for d in days if dt.date.fromisoformat(d).weekday() != 5]
    daily = pd.DataFrame({"day": trading, "revenue": [95_000.0 + 1_000 * i for i in range(len(trading))],
                          "invoices": [60] * len(trading), "cancelled_lines": [3] * len(trading),
                          "cancelled_value": [1_250.5] * len(trading)})
    if mart is None:
        mart = pd.DataFrame({"month": "2011-01", "country": ["United Kingdom", "EIRE", "Hong Kong"],
                             "invoices": [1_500, 40, 3], "customers": [900, 3, 0], "units": [400_000, 9_000, 120],
                             "revenue": [1_234_567.89, 23_456.0, 789.5]})
    codes = ["85123A", "72807C", "22423", "23000", "POST"]
    products = pd.DataFrame({"stock_code": codes, "lines": [90, 8, 50, 2, 30], "units": [9_000, 80, 700, 4, 30],
                             "value": [25_000.0, 9_000.0, 8_000.0, 10.0, 5_000.0]})
    cancelled = pd.DataFrame({"stock_code": ["M", "85123A"], "lines": [4, 2], "units": [4, 10],
                              "value": [3_000.0, 25.5]})
    if descriptions is None:
        descriptions = {"85123A": LONG, "72807C": "???missing", "22423": "REGENCY CAKESTAND 3 TIER", "M": "Manual"}
    return report.render(title="Retail sales, month 2011-01", period_label="2011-01", days=days, daily=daily,
                         mart=mart, top_products=products, cancelled_products=cancelled, descriptions=descriptions,
                         customers=903, generated=dt.datetime(2011, 2, 1, tzinfo=dt.UTC), **kwargs)


def _element(page: str, tag: str, element_id: str) -> ET.Element:
    """One element of the page (an <svg>, a <p>), parsed as XML."""
    match = re.search(rf'<{tag}\b[^>]*\bid="{element_id}".*?</{tag}>', page, re.S)
    assert match, element_id
    return ET.fromstring(match.group(0))


def _boxes(svg: ET.Element) -> list[tuple[str, float, float, float, float]]:
    """Each line of text drawn (a <text>, or each <tspan> of one): its text and estimated box."""
    size = float(svg.get("font-size"))
    boxes = []
    for text in svg.iter("text"):
        assert text.get("transform") is None and text.get("font-size") is None, ET.tostring(text)
        anchor = text.get("text-anchor", "start")
        lines = [(t.text or "", t.get("x"), t.get("y")) for t in text.iter("tspan")] or [
            (text.text or "", text.get("x"), text.get("y"))]
        for content, x, y in lines:
            width = len(content) * size * CHAR_EM
            x0 = float(x) - {"start": 0, "middle": width / 2, "end": width}[anchor]
            boxes.append((content, x0, float(y) - ASCENT * size, x0 + width, float(y) + DESCENT * size))
    return boxes


def _assert_readable(svg: ET.Element) -> None:
    """No two lines of text overlap, and every one lies inside the chart."""
    boxes = _boxes(svg)
    width, height = float(svg.get("width")), float(svg.get("height"))
    for text, x0, y0, x1, y1 in boxes:
        assert 0 <= x0 and x1 <= width and 0 <= y0 and y1 <= height, (svg.get("id"), text, x0, y0, x1, y1)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            apart = a[3] <= b[1] or b[3] <= a[1] or a[4] <= b[2] or b[4] <= a[2]
            assert apart, (svg.get("id"), a, b)


@pytest.mark.parametrize("days", [
    _days("2011-01-01", 31),  # the issue: a month of 31 days ran its labels together
    _days("2011-02-01", 28),
    _days("2010-12-27", 7),   # a week across two months and years
    _days("2011-01-01", 92),  # longer than any period: ticks thinned out
], ids=["month-31", "month-28", "week", "quarter"])
def test_charts_text_does_not_overlap(days):
    page = _render(days)
    for chart in CHARTS:
        _assert_readable(_element(page, "svg", chart))
    for chart in ("revenue-per-day", "cancellations-per-day"):
        svg = _element(page, "svg", chart)
        ticks = [t.text for t in svg.iter("text") if t.get("class") == "tick"]
        bars = svg.findall("rect")
        assert [b.find("title").text.split(":")[0] for b in bars] == days  # one bar per day, titled with it
        if len(days) == 31:  # every day labelled, by its day of the month
            assert ticks == [str(d) for d in range(1, 32)]
        elif len(days) == 7:
            assert ticks == ["12-27", "12-28", "12-29", "12-30", "12-31", "01-01", "01-02"]
        else:
            assert ticks and ticks[0] == (days[0][8:].lstrip("0") if len(days) <= 31 else days[0][5:])


def test_product_names_are_available_in_full():
    page = _render(_days("2011-01-01", 31))
    svg = _element(page, "svg", "top-products")
    labels = svg.findall("g[@class='label']")
    full = f"85123A {LONG}"
    first = labels[0]
    assert first.find("title").text == full  # the tooltip
    lines = [t.text for t in first.find("text").iter("tspan")]
    assert len(lines) == 2 and " ".join(lines) == full and "…" not in page.split('id="top-products"')[1]
    # Each bar's own title keeps its full label, value and note (the browser test reads these).
    assert svg.find("rect/title").text == f"{full}: £25,000.00 · 9,000 units"
    assert all(g.find("title").text == "".join(g.find("text").itertext()) for g in labels[1:])  # short: one line
    assert _element(page, "svg", "cancelled-products").find("g/title").text == "M Manual"
    # Beyond two lines a label is cut, its tooltip still whole.
    svg = ET.fromstring(report.bar_chart("x", ["A" * 20 + " B" * 30], [1.0], color="red", title="t"))
    assert svg.find("g/title").text == "A" * 20 + " B" * 30 and svg.find("g/text/tspan[2]").text.endswith("…")


def test_countries_without_sales_are_left_out_and_named():
    mart = pd.DataFrame({"month": "2011-01", "country": ["United Kingdom", "Japan", "EIRE"],
                         "invoices": [10, 0, 2], "customers": [7, 0, 1], "units": [100, 0, 5],
                         "revenue": [500.0, 0.0, 20.0]})
    page = _render(_days("2011-01-01", 31), mart=mart)
    table = ET.fromstring(re.search(r"<table>.*?</table>", page, re.S).group(0))
    rows = [[td.text for td in tr] for tr in table.find("tbody")]
    assert rows == [["United Kingdom", "10", "7", "100", "£500.00"], ["EIRE", "2", "1", "5", "£20.00"]]
    countries = _element(page, "svg", "top-countries")
    assert [t.text for t in countries.iter("text") if t.get("text-anchor") == "end"] == ["United Kingdom", "EIRE"]
    note = "".join(_element(page, "p", "left-out").itertext())
    assert "Left out: Japan, with lines in the period but no sale line" in note
    assert re.search(r'<b>2</b><span>countries with sales</span>', page)


def test_unknown_customers_are_explained():
    page = _render(_days("2011-01-01", 31), unknown_customer=(1_234, 98_765.43))
    note = "".join(_element(page, "p", "unknown-customers").itertext())
    assert "1,234 sale lines (£98,765.43, 7.8% of revenue) have no CustomerID" in note
    assert "in no customer count" in note
    table = ET.fromstring(re.search(r"<table>.*?</table>", page, re.S).group(0))
    hong_kong = next([td.text for td in tr] for tr in table.find("tbody") if tr[0].text == "Hong Kong")
    assert hong_kong == ["Hong Kong", "3", "unknown", "120", "£789.50"]  # invoices but no CustomerID at all
    # Without the figures (a caller that does not pass them) the note still says what is counted.
    plain = "".join(_element(_render(_days("2011-01-01", 31)), "p", "unknown-customers").itertext())
    assert "Sale lines without a CustomerID count in revenue, invoices and units" in plain


@pytest.mark.parametrize(("description", "placeholder"), [
    ("???missing", True), ("check", True), ("Damaged", True), ("wrongly marked 23343", True), ("?", True),
    ("", True), (None, True), ("POSSIBLE DAMAGES OR LOST?", True),
    ("WHITE HANGING HEART T-LIGHT HOLDER", False), ("BAG 125g SWIRLY MARBLES", False),
    ("*USB Office Mirror Ball", False), ("3 TRADITIONAl BISCUIT CUTTERS SET", False),
])
def test_placeholder_descriptions(description, placeholder):
    assert report.is_placeholder(description) is placeholder


def test_placeholder_descriptions_show_the_stock_code():
    page = _render(_days("2011-01-01", 31))
    names = [g.find("title").text for g in _element(page, "svg", "top-products").findall("g")]
    assert names == [f"85123A {LONG}", "72807C (no description)", "22423 REGENCY CAKESTAND 3 TIER",
                     "23000 (no description)"]  # a placeholder, a real name, no description at all
    assert "???missing" not in page.split('id="top-products"')[1]
    assert "is shown as\n“(no description)”" in page  # and said so above the chart
    # Not goods (manual entries, discounts): their descriptions are shown as they are.
    assert report.product_label("M", {"M": "Manual"}) == "M Manual"
    # Among the descriptions of a code's lines, a real name wins over notes that sort before it.
    assert report.best_description(["???missing", "SET/3 VANILLA  SCENTED CANDLE IN BOX ", "damages"]) == (
        "SET/3 VANILLA SCENTED CANDLE IN BOX")
    assert report.best_description(["???missing", "check"]) == "???missing" and report.best_description([]) is None
