"""Where the platform's ingest spends its time: one block, stage by stage, in one process.

    .venv/bin/python bench/profile_ingest.py /tmp/bench-data/rows1000000-seed0/athlete_events.csv [--mb 64] [--reps 3]

Runs what an engine's ingest task runs (:mod:`include.etl.reader`) on the first ``--mb`` MB of
the file, as one block: the planner's survey of the block (``survey_block``: line count and the
lines that may open a multi-line record), the parse (``parse_block``: pyarrow for single-line
records, the csv module for the rest, Arrow typing), the conversion to pandas (Dask) and a
Parquet write; for comparison Polars on the same bytes. Prints the median CPU seconds per stage
over ``--reps`` runs and the top functions of ``parse_block`` by cumulative time (cProfile).
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
    args = p.parse_args()

    import polars as pl
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from include.etl.csvfile import Block, read_header, survey_block
    from include.etl.reader import parse_block, to_pandas
    from include.pipelines.olympics.datasets import ATHLETES

    header = read_header(args.csv, ATHLETES)
    with open(args.csv, "rb") as f:
        head = f.read(args.mb * 2**20)
    end = head.rfind(b"\n") + 1
    block = Block(header.data_offset, end - header.data_offset, header.first_line)
    times: dict[str, list[float]] = {}

    def timed(name, fn):
        t = time.process_time()
        out = fn()
        times.setdefault(name, []).append(time.process_time() - t)
        return out

    schema = {c.name: {"integer": pl.Int64, "float": pl.Float64, "string": pl.String}[c.type] for c in ATHLETES.columns}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.reps):
            timed("survey_block (planner: lines, multi-line record starts)", lambda: survey_block(args.csv, block,
                                                                                                 ATHLETES.format))
            table = timed("parse_block (split, type, check)", lambda: parse_block(args.csv, block, header, ATHLETES))
            timed("to pandas (what Dask holds)", lambda t=table: to_pandas(t))
            accepted = table.filter(pc.is_null(table["_reason"]))
            timed("write Parquet (pyarrow)", lambda a=accepted: pq.write_table(a, Path(tmp) / "part.parquet"))
            data = head[header.data_offset:end]
            timed("for comparison: Polars read_csv + write_parquet, same bytes",
                  lambda d=data: pl.read_csv(io.BytesIO(d), has_header=False, new_columns=list(ATHLETES.names),
                                             schema=schema, null_values=["NA", ""]).write_parquet(Path(tmp) / "pl.parquet"))
    prof = cProfile.Profile()
    prof.enable()
    parse_block(args.csv, block, header, ATHLETES)
    prof.disable()

    print(f"{block.length / 2**20:.1f} MB, {table.num_rows:,} rows, one process, median CPU seconds of {args.reps}")
    for k, v in times.items():
        print(f"  {k:62s} {statistics.median(v):7.2f} s")
    print("\nparse_block, top functions by cumulative time:")
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(14)
    print("\n".join(out.getvalue().splitlines()[6:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
