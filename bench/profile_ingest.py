"""Where the platform's ingest spends its time: one Dask-sized block, stage by stage, in one process.

    .venv/bin/python bench/profile_ingest.py /tmp/bench-data/rows1000000-seed0/athlete_events.csv [--mb 64]

Runs the same functions as a Dask ingest task (``include.etl.engines.dask.ingest_block`` =
decode -> ``tokenize`` -> ``parse_frame``) on the first ``--mb`` MB of the file, then the
accepted/rejected split and a Parquet write, and for comparison Polars on the same bytes.
Prints seconds per stage and the top functions by cumulative time (cProfile).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("csv")
    p.add_argument("--mb", type=int, default=64)
    args = p.parse_args()

    import pandas as pd  # noqa: F401 - imported before timing, as on a warm worker

    from include.etl.parse import check_header, parse_frame, skip_first_line, tokenize
    from include.etl.schemas import ATHLETES, REJECT_COLUMNS

    header = check_header(args.csv, ATHLETES)
    with open(args.csv, "rb") as f:
        block = f.read(args.mb * 2**20)
    block = block[: block.rfind(b"\n") + 1]
    times = {}

    t = time.perf_counter()
    text = skip_first_line(block.decode("utf-8", errors="replace"))
    times["decode + skip header"] = time.perf_counter() - t
    t = time.perf_counter()
    raw = tokenize(text, header, 2)
    times["tokenize (pandas C parser, dtype=str)"] = time.perf_counter() - t
    t = time.perf_counter()
    prof = cProfile.Profile()
    prof.enable()
    parsed = parse_frame(raw, ATHLETES, args.csv)
    prof.disable()
    times["parse_frame (types, domains, reasons)"] = time.perf_counter() - t
    t = time.perf_counter()
    names = [c for c in parsed.columns if c not in REJECT_COLUMNS]
    ok = parsed["_reason"].isna()
    accepted = parsed[ok][names]
    times["split accepted/rejected"] = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        accepted.to_parquet(Path(tmp) / "part.parquet", index=False)
        times["write Parquet (pyarrow)"] = time.perf_counter() - t
        import polars as pl

        t = time.perf_counter()
        schema = {c.name: {"int": pl.Int64, "float": pl.Float64, "str": pl.String}[c.type] for c in ATHLETES.columns}
        pl.read_csv(io.BytesIO(block), schema=schema, null_values=["NA", ""]).write_parquet(Path(tmp) / "pl.parquet")
        times["for comparison: Polars read_csv + write_parquet, same bytes"] = time.perf_counter() - t

    rows = len(parsed)
    print(f"{len(block) / 2**20:.1f} MB, {rows:,} rows, one process")
    for k, v in times.items():
        print(f"  {k:60s} {v:7.2f} s")
    print("\nparse_frame, top functions by cumulative time:")
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(14)
    print("\n".join(out.getvalue().splitlines()[6:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
