"""Where the platform's ingest spends its time: one Dask-sized block, stage by stage, in one process.

    .venv/bin/python bench/profile_ingest.py /tmp/bench-data/rows1000000-seed0/athlete_events.csv [--mb 64]
                                             [--reps 3] [--no-careful]

Runs what a Dask ingest task runs (``include.etl.engines.dask.ingest_block`` =
``include.etl.parse.parse_block``: pyarrow's CSV reader + Arrow checks, or the careful path
when the block needs it) on the first ``--mb`` MB of the file, then the accepted/rejected
split and a Parquet write; for comparison the careful path on the same bytes (decode ->
``tokenize`` -> ``parse_frame``, what every block ran before the fast path) and Polars.
Checks that both paths give the same frame. Prints the median seconds per stage over
``--reps`` runs and the top functions of ``parse_block`` by cumulative time (cProfile).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
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
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--no-careful", action="store_true", help="skip the careful path (slow) for comparison")
    args = p.parse_args()

    import pandas as pd
    import polars as pl

    from include.etl.parse import _careful_block, _fast_block, check_header, parse_block
    from include.etl.reader import REJECT_COLUMNS
    from include.pipelines.olympics.datasets import ATHLETES

    header = check_header(args.csv, ATHLETES)
    with open(args.csv, "rb") as f:
        block = f.read(args.mb * 2**20)
    block = block[: block.rfind(b"\n") + 1]
    times: dict[str, list[float]] = {}

    def timed(name, fn):
        t = time.perf_counter()
        out = fn()
        times.setdefault(name, []).append(time.perf_counter() - t)
        return out

    fast = _fast_block(block, ATHLETES, args.csv, header, 1, True) is not None
    schema = {c.name: {"integer": pl.Int64, "float": pl.Float64, "string": pl.String}[c.type] for c in ATHLETES.columns}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.reps):
            parsed = timed("parse_block (pyarrow read + Arrow checks)" if fast else "parse_block (careful path)",
                           lambda: parse_block(block, ATHLETES, args.csv, header, 1, skip_header=True))
            names = [c for c in parsed.columns if c not in REJECT_COLUMNS]
            accepted = timed("split accepted/rejected", lambda p=parsed, n=names: p[p["_reason"].isna()][n])
            timed("write Parquet (pyarrow)", lambda a=accepted: a.to_parquet(Path(tmp) / "part.parquet", index=False))
            timed("for comparison: Polars read_csv + write_parquet, same bytes",
                  lambda: pl.read_csv(io.BytesIO(block), schema=schema, null_values=["NA", ""]).write_parquet(
                      Path(tmp) / "pl.parquet"))
        if not args.no_careful:
            careful = timed("for comparison: careful path (decode, tokenize, parse_frame)",
                            lambda: _careful_block(block, ATHLETES, args.csv, header, 1, True))
            pd.testing.assert_frame_equal(parsed, careful, check_exact=True)
    prof = cProfile.Profile()
    prof.enable()
    parse_block(block, ATHLETES, args.csv, header, 1, skip_header=True)
    prof.disable()

    print(f"{len(block) / 2**20:.1f} MB, {len(parsed):,} rows, one process, median of {args.reps} "
          f"({'fast path' if fast else 'careful path: the block does not qualify for the fast path'})")
    for k, v in times.items():
        print(f"  {k:62s} {statistics.median(v):7.2f} s")
    if not args.no_careful:
        print("  careful path and parse_block gave identical frames")
    print("\nparse_block, top functions by cumulative time:")
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(14)
    print("\n".join(out.getvalue().splitlines()[6:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
