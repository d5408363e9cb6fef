"""The Olympics chain on single-process tools (Polars lazy/streaming, DuckDB).

Same inputs (the CSVs), same outputs (Parquet datasets ``{root}/olympics/{table}/ds={ds}/``),
same semantics as ``include/pipelines/olympics/transforms.py``: typed inputs with ``NA``/empty -> null, left
joins, and the two marts. No reject handling: the benchmark's generated data has no bad rows
(the platform's ingest counts them and the benchmark checks they are 0).
"""

from __future__ import annotations

import time
from pathlib import Path

ATHLETE_TYPES = {
    "ID": "int", "Name": "str", "Sex": "str", "Age": "int", "Height": "float", "Weight": "float",
    "Team": "str", "NOC": "str", "Games": "str", "Year": "int", "Season": "str", "City": "str",
    "Sport": "str", "Event": "str", "Medal": "str",
}
REGION_TYPES = {"NOC": "str", "region": "str", "notes": "str"}
VENUE_TYPES = {"Year": "int", "Season": "str", "City": "str", "lon": "float", "lat": "float"}
NA = ["NA", ""]


def _part(root: Path, table: str, ds: str) -> Path:
    d = root / "olympics" / table / f"ds={ds}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _lf_copy(src: str, dest: Path) -> str:
    """Reference tables are tiny; noc_regions.csv ends its lines with a bare CR, which neither
    Polars nor DuckDB accepts as a line end: rewrite with LF (universal newlines, timed)."""
    with open(src, newline=None, encoding="utf-8") as f:
        text = f.read()
    dest.write_text(text, encoding="utf-8")
    return str(dest)


def run_polars(sources: dict[str, str], root: Path, ds: str) -> dict:
    import polars as pl

    pt = {"int": pl.Int64, "float": pl.Float64, "str": pl.String}
    times: dict[str, float] = {}
    tmp = root / "_tmp"
    tmp.mkdir(parents=True, exist_ok=True)

    def ingest(table: str, path: str, types: dict) -> None:
        t0 = time.perf_counter()
        if table != "athletes":
            path = _lf_copy(path, tmp / f"{table}.csv")
        lf = pl.scan_csv(path, schema={k: pt[v] for k, v in types.items()}, null_values=NA)
        lf.sink_parquet(_part(root, table, ds) / "part-0.parquet", engine="streaming")
        times[f"ingest_{table}"] = time.perf_counter() - t0

    ingest("athletes", sources["athletes"], ATHLETE_TYPES)
    ingest("regions", sources["regions"], REGION_TYPES)
    ingest("venues", sources["venues"], VENUE_TYPES)

    t0 = time.perf_counter()
    read = lambda t: pl.scan_parquet(_part(root, t, ds) / "*.parquet", hive_partitioning=False)  # noqa: E731
    enriched = (
        read("athletes")
        .join(read("regions").select("NOC", "region"), on="NOC", how="left", maintain_order="left")
        .join(read("venues").select("Year", "Season", "City", "lon", "lat"), on=["Year", "Season", "City"],
              how="left", maintain_order="left")
    )
    enriched.sink_parquet(_part(root, "enriched", ds) / "part-0.parquet", engine="streaming")
    times["enrich"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    e = read("enriched")
    avg = (
        e.group_by("Year", "Season")
        .agg(pl.col("Age").sum().alias("_s"), pl.col("Age").count().alias("n"))
        .select(
            pl.col("Year").cast(pl.Int64).alias("year"), pl.col("Season").alias("season"),
            pl.when(pl.col("n") > 0).then(pl.col("_s").cast(pl.Float64) / pl.col("n").cast(pl.Float64))
            .otherwise(None).alias("avg_age"),
            pl.col("n").cast(pl.Int64),
        )
    )
    m = pl.col("Medal")
    medals = (
        e.filter(m.is_not_null())
        .group_by(pl.col("Year").alias("year"), pl.col("Season").alias("season"),
                  pl.coalesce("region", "NOC").alias("region"))
        .agg((m == "Gold").sum().cast(pl.Int64).alias("gold"), (m == "Silver").sum().cast(pl.Int64).alias("silver"),
             (m == "Bronze").sum().cast(pl.Int64).alias("bronze"))
        .with_columns(pl.col("year").cast(pl.Int64), (pl.col("gold") + pl.col("silver") + pl.col("bronze")).alias("total"))
    )
    avg.sink_parquet(_part(root, "avg_age_by_year", ds) / "part-0.parquet", engine="streaming")
    medals.sink_parquet(_part(root, "medals_by_region", ds) / "part-0.parquet", engine="streaming")
    times["aggregate"] = time.perf_counter() - t0
    return times


def run_duckdb(sources: dict[str, str], root: Path, ds: str, threads: int | None = None) -> dict:
    import duckdb

    times: dict[str, float] = {}
    tmp = root / "_tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(":memory:")
    if threads:
        con.execute(f"SET threads = {threads}")
    con.execute(f"SET temp_directory = '{tmp}'")
    dt = {"int": "BIGINT", "float": "DOUBLE", "str": "VARCHAR"}

    def out(table: str) -> str:
        return str(_part(root, table, ds) / "part-0.parquet")

    def ingest(table: str, path: str, types: dict) -> None:
        t0 = time.perf_counter()
        if table != "athletes":
            path = _lf_copy(path, tmp / f"{table}.csv")
        cols = "{" + ", ".join(f"'{k}': '{dt[v]}'" for k, v in types.items()) + "}"
        con.execute(
            f"COPY (SELECT * FROM read_csv('{path}', header=true, columns={cols}, nullstr=['NA', ''], "
            f"quote='\"', escape='\"', delim=',', auto_detect=false)) TO '{out(table)}' (FORMAT parquet)"
        )
        times[f"ingest_{table}"] = time.perf_counter() - t0

    ingest("athletes", sources["athletes"], ATHLETE_TYPES)
    ingest("regions", sources["regions"], REGION_TYPES)
    ingest("venues", sources["venues"], VENUE_TYPES)

    t0 = time.perf_counter()
    con.execute(
        f"""COPY (
        SELECT a.*, r.region, v.lon, v.lat
        FROM read_parquet('{out('athletes')}', hive_partitioning=false) a
        LEFT JOIN (SELECT NOC, region FROM read_parquet('{out('regions')}', hive_partitioning=false)) r ON a.NOC = r.NOC
        LEFT JOIN (SELECT Year, Season, City, lon, lat FROM read_parquet('{out('venues')}', hive_partitioning=false)) v
          ON a.Year = v.Year AND a.Season = v.Season AND a.City = v.City
        ) TO '{out('enriched')}' (FORMAT parquet)"""
    )
    times["enrich"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    e = f"read_parquet('{out('enriched')}', hive_partitioning=false)"
    con.execute(
        f"""COPY (
        SELECT CAST(Year AS BIGINT) AS year, Season AS season,
               CASE WHEN count(Age) > 0 THEN CAST(sum(Age) AS DOUBLE) / count(Age) END AS avg_age,
               CAST(count(Age) AS BIGINT) AS n
        FROM {e} GROUP BY Year, Season
        ) TO '{out('avg_age_by_year')}' (FORMAT parquet)"""
    )
    con.execute(
        f"""COPY (
        SELECT CAST(Year AS BIGINT) AS year, Season AS season, coalesce(region, NOC) AS region,
               CAST(count_if(Medal = 'Gold') AS BIGINT) AS gold,
               CAST(count_if(Medal = 'Silver') AS BIGINT) AS silver,
               CAST(count_if(Medal = 'Bronze') AS BIGINT) AS bronze,
               CAST(count_if(Medal = 'Gold') + count_if(Medal = 'Silver') + count_if(Medal = 'Bronze') AS BIGINT) AS total
        FROM {e} WHERE Medal IS NOT NULL GROUP BY Year, Season, coalesce(region, NOC)
        ) TO '{out('medals_by_region')}' (FORMAT parquet)"""
    )
    times["aggregate"] = time.perf_counter() - t0
    con.close()
    return times
