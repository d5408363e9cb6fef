"""The retail pipeline's transforms, checks, periods and report on tiny pandas frames (no cluster)."""

from __future__ import annotations

import csv
import datetime as dt

import narwhals as nw
import pandas as pd
import pytest

from include.pipelines.retail import periods, quality, report
from include.pipelines.retail import transforms as T
from include.pipelines.retail.datasets import COUNTRIES, COUNTRIES_FILE, DAILY_TABLES, INVOICE_LINES, TABLE_SCHEMAS
from tests.conftest import DATA_ROOT

SHARED = DATA_ROOT


def lazy(df: pd.DataFrame) -> nw.LazyFrame:
    return nw.from_native(df).lazy()


def collect(frame: nw.LazyFrame, key: str) -> pd.DataFrame:
    return frame.collect().to_native().sort_values(key).reset_index(drop=True)


def lines(rows: list[tuple]) -> pd.DataFrame:
    """(InvoiceNo, StockCode, Quantity, UnitPrice, CustomerID, Country) rows, typed as ingest types them."""
    df = pd.DataFrame(rows, columns=["InvoiceNo", "StockCode", "Quantity", "UnitPrice", "CustomerID", "Country"])
    df["Quantity"] = df["Quantity"].astype("Int64")
    df["CustomerID"] = df["CustomerID"].astype("Int64")
    df["UnitPrice"] = df["UnitPrice"].astype(float)
    df["Description"] = "ITEM " + df["StockCode"]
    return df


@pytest.fixture
def day() -> pd.DataFrame:
    return lines([
        ("536365", "85123A", 6, 2.55, 17850, "United Kingdom"),
        ("536365", "85123A", 6, 2.55, 17850, "United Kingdom"),  # an exact duplicate: a real line, kept
        ("536366", "22633", 2, 1.85, None, "United Kingdom"),  # no customer
        ("536367", "22633", 3, 0.1, 13047, "United Kingdom"),
        ("C536379", "D", -1, 27.5, 14527, "United Kingdom"),  # a cancellation
        ("536370", "22728", 24, 3.75, 12583, "France"),
        ("536371", "22728", 0, 3.75, 12583, "France"),  # zero quantity: other
        ("536372", "POST", 1, 0.0, 12583, "France"),  # zero price: other
        ("536373", "21730", -6, 4.25, 17850, "Germany"),  # negative quantity, not a cancellation: other
        ("C536374", "21730", -2, 4.25, 12662, "Germany"),
        ("A563185", "B", 1, 11062.06, None, "United Kingdom"),  # a bad-debt adjustment
    ])


def test_classify_gives_each_line_its_kind_and_exact_value(day):
    out = T.classify(lazy(day)).collect().to_native()
    assert list(out["line_kind"]) == ["sale", "sale", "sale", "sale", "cancellation", "sale", "other", "other", "other",
                                      "cancellation", "adjustment"]
    assert list(out["_milli"]) == [15300, 15300, 3700, 300, -27500, 90000, 0, 0, -25500, -8500, 11062060]


def test_sales_by_country_as_the_issue_defines_it(day):
    out = collect(T.sales_by_country(T.classify(lazy(day))), "country")
    assert tuple(out.columns) == T.SALES_BY_COUNTRY
    rows = {r.country: (r.invoices, r.customers, r.units, r.revenue, r.cancelled_lines, r.cancelled_value)
            for r in out.itertuples()}
    assert rows == {
        # invoices 536365, 536366, 536367 (distinct); customers 17850, 13047 (null not counted);
        # units 6 + 6 + 2 + 3 (the duplicate counts); revenue 15.3 + 15.3 + 3.7 + 0.3
        "United Kingdom": (3, 2, 17, 34.6, 1, 27.5),
        "France": (1, 1, 24, 90.0, 0, 0.0),
        "Germany": (0, 0, 0, 0.0, 1, 8.5),  # present with no sale line: zeros, not a missing row
    }
    assert out["invoices"].dtype.kind == "i" and out["revenue"].dtype.kind == "f"


def test_money_is_exact_to_the_thousandth():
    df = lines([(f"5{i:05d}", "22633", 1, 0.1, 1, "Spain") for i in range(10)] + [("600000", "22633", 3, 0.001, 1, "Spain")])
    out = collect(T.sales_by_country(T.classify(lazy(df))), "country")
    assert out.loc[0, "revenue"] == 1.003  # not 1.0030000000000001: summed as whole thousandths


def test_sales_by_product_only_codes_with_a_sale_line(day):
    out = collect(T.sales_by_product(T.classify(lazy(day))), "stock_code")
    assert tuple(out.columns) == T.SALES_BY_PRODUCT
    rows = {r.stock_code: (r.units, r.revenue, r.invoices) for r in out.itertuples()}
    assert rows == {"85123A": (12, 30.6, 1), "22633": (5, 4.0, 2), "22728": (24, 90.0, 1)}


def test_period_counts_are_distinct_over_the_whole_period():
    monday = lines([("1", "10002", 1, 1.0, 42, "EIRE"), ("2", "10002", 1, 1.0, 43, "EIRE")])
    tuesday = lines([("3", "10002", 2, 1.0, 42, "EIRE"), ("C4", "10002", -1, 1.0, 42, "Japan")])
    frames = [lazy(df).with_columns(nw.lit(d).alias("_day")) for df, d in ((monday, "2011-01-03"), (tuesday, "2011-01-04"))]
    classified = T.classify(nw.concat(frames, how="vertical"))
    out = collect(T.period_sales_by_country(classified, "month", "2011-01"), "country")
    rows = {r.country: (r.month, r.invoices, r.customers, r.units, r.revenue) for r in out.itertuples()}
    # customer 42 bought on both days: one customer over the period (adding daily counts would say 3)
    assert rows == {"EIRE": ("2011-01", 3, 2, 4, 4.0), "Japan": ("2011-01", 0, 0, 0, 0.0)}
    activity = collect(T.daily_activity(classified), "day")
    assert list(activity["revenue"]) == [2.0, 2.0] and list(activity["cancelled_lines"]) == [0, 1]
    assert list(activity["invoices"]) == [2, 1] and list(activity["cancelled_value"]) == [0.0, 1.0]
    cancelled = collect(T.top_products(classified, T.CANCELLATION), "stock_code")
    assert (cancelled.loc[0, "lines"], cancelled.loc[0, "units"], cancelled.loc[0, "value"]) == (1, 1, 1.0)


def test_enrich_keeps_every_line_and_adds_the_reference(day):
    countries = pd.DataFrame({"country": ["United Kingdom", "France"], "iso_code": ["GB", "FR"],
                              "region": ["Europe", "Europe"]})
    out = T.enrich_lines(lazy(day), lazy(countries)).collect().to_native()
    assert len(out) == len(day)
    assert list(out.columns) == [*day.columns, "line_total", "line_kind", "iso_code", "region"]
    uk = out[out["Country"] == "United Kingdom"]
    assert set(uk["iso_code"]) == {"GB"}
    assert out[out["Country"] == "Germany"]["region"].isna().all()  # not in this reference: null, not dropped
    assert list(out["line_total"].head(4)) == [15.3, 15.3, 3.7, 0.3]


def test_the_shipped_reference_reads_through_its_contract():
    from tests.include.test_reader import read

    table = read(COUNTRIES_FILE, COUNTRIES)
    assert table.filter(table["_reason"].is_valid()).num_rows == 0
    rows = {r["country"]: (r["iso_code"], r["region"]) for r in table.to_pylist()}
    assert len(rows) == 38
    assert rows["Norway"] == ("NO", "Europe")  # "NO" is a code here, not a null token
    assert rows["EIRE"] == ("IE", "Europe") and rows["RSA"] == ("ZA", "Africa") and rows["USA"][0] == "US"
    assert rows["Channel Islands"][0] is None and rows["Unspecified"] == (None, "Unknown")


@pytest.mark.usefixtures("shared_data")  # missing data fails, never skips
def test_the_reference_covers_every_country_of_the_data():
    seen = set()
    for path in sorted((SHARED / "retail" / "by-day").glob("*.csv")):
        with open(path, newline="", encoding="utf-8") as f:
            seen |= {row["Country"] for row in csv.DictReader(f)}
    with open(COUNTRIES_FILE, newline="", encoding="utf-8") as f:
        assert seen == {row["country"] for row in csv.DictReader(f)}


def test_declared_schemas_cover_every_daily_table():
    assert [c for c, _ in TABLE_SCHEMAS["invoice_lines"]] == list(INVOICE_LINES.names)
    assert [c for c, _ in TABLE_SCHEMAS["sales_by_country"]] == list(T.SALES_BY_COUNTRY)
    assert [c for c, _ in TABLE_SCHEMAS["sales_by_product"]] == list(T.SALES_BY_PRODUCT)
    assert set(DAILY_TABLES) == {"invoice_lines", "_rejects/invoice_lines", "enriched_lines", "sales_by_country",
                                 "sales_by_product"}


def test_daily_checks_find_inconsistent_marts(day):
    classified = T.classify(lazy(day))
    marts = {"sales_by_country": T.sales_by_country(classified).collect().to_native(),
             "sales_by_product": T.sales_by_product(classified).collect().to_native()}
    assert quality.check_daily_marts(marts, len(day)) == []
    broken = dict(marts, sales_by_product=marts["sales_by_product"].iloc[1:])
    problems = quality.check_daily_marts(broken, len(day))
    assert any("units differ" in p for p in problems) and any("revenue differs" in p for p in problems)
    dup = dict(marts, sales_by_country=pd.concat([marts["sales_by_country"]] * 2))
    assert any("duplicated keys" in p for p in quality.check_daily_marts(dup, len(day)))
    assert quality.check_daily_marts({"sales_by_country": marts["sales_by_country"].iloc[:0],
                                      "sales_by_product": marts["sales_by_product"].iloc[:0]}, 0) == []


def test_period_check_against_the_daily_marts():
    daily = pd.DataFrame({"country": ["EIRE", "EIRE"], "invoices": [2, 1], "customers": [2, 1], "units": [2, 2],
                          "revenue": [2.0, 2.0]})
    good = pd.DataFrame({"month": ["2011-01"], "country": ["EIRE"], "invoices": [3], "customers": [2], "units": [4],
                         "revenue": [4.0]})
    assert quality.check_period_mart("m", good, daily) == []
    bad = good.assign(units=[5], customers=[4])
    problems = quality.check_period_mart("m", bad, daily)
    assert any("units 5 != 4" in p for p in problems) and any("customers 4 outside [2, 3]" in p for p in problems)


def test_periods():
    assert periods.period_days("month", "2011-02-14") == [f"2011-02-{d:02d}" for d in range(1, 29)]
    assert periods.period_days("week", "2010-12-08") == [f"2010-12-{d:02d}" for d in range(6, 13)]
    assert periods.period_label("month", "2011-02-14") == "2011-02" and periods.period_label("week", "2010-12-12") == "2010-12-06"
    assert periods.mart_table("month") == "monthly_sales_by_country"
    with pytest.raises(ValueError, match="period 'year'"):
        periods.period_days("year", "2011-01-01")


def test_report_is_self_contained_and_escapes_the_data():
    days = ["2011-01-03", "2011-01-04", "2011-01-05"]
    daily = pd.DataFrame({"day": ["2011-01-03", "2011-01-05"], "revenue": [10.0, 5.0], "invoices": [2, 1],
                          "cancelled_lines": [1, 0], "cancelled_value": [1.5, 0.0]})
    mart = pd.DataFrame({"month": ["2011-01"] * 2, "country": ["EIRE", "<b>Atlantis</b>"], "invoices": [2, 1],
                         "customers": [1, 1], "units": [3, 1], "revenue": [12.0, 3.0]})
    products = pd.DataFrame({"stock_code": ["22633", "POST"], "lines": [2, 1], "units": [3, 1], "value": [12.0, 3.0]})
    cancelled = pd.DataFrame({"stock_code": ["22633"], "lines": [1], "units": [1], "value": [1.5]})
    html = report.render(title="Retail sales, month 2011-01", period_label="2011-01", days=days, daily=daily, mart=mart,
                         top_products=products, cancelled_products=cancelled,
                         descriptions={"22633": '<script>alert("x")</script> HAND WARMER'}, customers=2,
                         generated=dt.datetime(2011, 2, 1, tzinfo=dt.UTC))
    for chart in ("revenue-per-day", "top-countries", "top-products", "cancellations-per-day", "cancelled-products"):
        assert f'<svg id="{chart}"' in html
    assert "<script" not in html and "&lt;script&gt;" in html and "&lt;b&gt;Atlantis" in html
    assert "http" not in html and "src=" not in html and "<link" not in html  # nothing fetched
    assert "Days without trading: 2011-01-04." in html
    assert html.count('class="bar empty-day"') == 2  # one per chart over the days
    assert ">POST<" not in html.split('id="top-products"')[1].split("</svg>")[0]  # postage is not a product
