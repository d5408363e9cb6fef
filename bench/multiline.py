"""The reader on records with quoted line breaks: the generated athletes file, and a copy of it in
which every ``--every``-th record has a line break inside its first quoted field (a benchmark, not a test).

    .venv/bin/python bench/multiline.py [--rows 5000000] [--every 100] [--data-dir /tmp/bench-data]

Such records are read by the ``csv`` module instead of pyarrow (``include.etl.csvfile``, "non-simple"
lines); free-text columns (descriptions, reviews, addresses) have them. Both files are read in this
process as an engine reads them (``include.etl.testing.read_file``: the survey, the plan, every
block's parse, 64 MiB blocks), one after the other; the copy is written beside the generated file
(``bench/run.py``'s cache in ``--data-dir``), outside git. Prints the CPU and wall seconds of each
and their ratio, and checks that both give the same rows.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def with_line_breaks(src: Path, out: Path, every: int) -> int:
    """Copy ``src`` with a CRLF after the opening quote of the first quoted field of every ``every``-th record."""
    changed = 0
    with open(src, "rb") as f, open(out, "wb") as o:
        o.write(f.readline())
        for k, line in enumerate(f):
            i = line.find(b',"') if k % every == 0 else -1
            if i >= 0:
                line = line[: i + 2] + b"\r\n" + line[i + 2 :]
                changed += 1
            o.write(line)
    return changed


def timed_read(path: Path) -> tuple[float, float, int]:
    from include.etl.testing import read_file
    from include.pipelines.olympics.datasets import ATHLETES

    cpu, wall = time.process_time(), time.monotonic()
    table = read_file(path, ATHLETES, block_bytes=1 << 26)
    return time.process_time() - cpu, time.monotonic() - wall, table.num_rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--every", type=int, default=100, help="one record in this many gets a line break")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/bench-data"))
    args = parser.parse_args(argv)
    from bench.run import input_set

    plain = Path(input_set(args.data_dir, args.rows, 0)["sources"]["athletes"])
    multi = plain.with_name(f"athlete_events.linebreaks-every{args.every}.csv")
    if not multi.exists():
        partial = multi.with_suffix(".partial")
        changed = with_line_breaks(plain, partial, args.every)
        partial.rename(multi)
        print(f"wrote {multi} ({changed:,} records with a line break)")
    print(f"load {os.getloadavg()[0]:.2f}; {args.rows:,} rows, one record in {args.every} with a quoted line break")
    results = {}
    for name, path in (("plain", plain), ("line breaks", multi)):
        cpu, wall, rows = results[name] = timed_read(path)
        print(f"| {name} | {path.stat().st_size / 1e6:.0f} MB | {cpu:.1f} CPU s | {wall:.1f} s | {rows:,} rows |")
    if results["plain"][2] != results["line breaks"][2]:
        raise SystemExit(f"the two files gave {results['plain'][2]:,} and {results['line breaks'][2]:,} rows")
    print(f"line breaks / plain: {results['line breaks'][0] / results['plain'][0]:.2f}x CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
