"""The Dask ingest of one block, cut into the stages issue 19 names, in CPU seconds (one process, one thread).

    nice -n 19 .venv/bin/python bench/profile_stages.py /tmp/bench-data/rows5000000-seed0/athlete_events.csv [--mb 64] [--reps 3]

This runs a block as a multi-block Dask ingest does: the planner's survey (``survey_block``: the
line count and the quote pre-scan of the block's tail, or of all of it when a record may run past
its end) and then ``parse_block`` (with the planner's ``nonsimple`` offsets when it surveyed them
all; else the parse's own quote pre-scan). The parse is a step-by-step copy of
:func:`include.etl.reader.parse_bytes` (same calls, same order, checked equal to it) with a CPU
clock read between steps. Then what ``DaskEngine.write_split`` does per partition: the frame to
pandas, the accepted/rejects filters and counts, pandas back to Arrow (Dask's ``to_parquet``),
the Parquet write. Prints the median CPU seconds per stage, and the whole-file estimate
(x blocks in the file).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class Clock:
    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}
        self.current: dict[str, float] = {}
        self.t = time.process_time()

    def tick(self, name: str) -> None:
        now = time.process_time()
        self.current[name] = self.current.get(name, 0.0) + now - self.t
        self.t = now

    def rep(self) -> None:
        for k, v in self.current.items():
            self.times.setdefault(k, []).append(v)
        self.current = {}
        self.t = time.process_time()


def parse_bytes_timed(clk: Clock, block: bytes, first_line: int, source: str, header, dataset, ds, nonsimple, lookahead):
    """include.etl.reader.parse_bytes with clock ticks (keep in step with it)."""
    import numpy as np
    import pyarrow as pa

    from include.etl.convert import Reasons, _duplicates, check_rule, convert_column
    from include.etl.csvfile import line_spans
    from include.etl.reader import _pyarrow_body, _read_fields, _slow_records, output_schema

    codec = dataset.format.python_encoding
    starts, ends, nexts = line_spans(np.frombuffer(block, dtype=np.uint8))
    clk.tick("parse: line spans again (record boundaries)")
    data, slow, simple = _slow_records(block, starts, ends, dataset, nonsimple, lookahead)
    simple_idx = np.flatnonzero(simple)
    body = _pyarrow_body(block, slow, starts, nexts, codec)
    clk.tick("parse: quote pre-scan (unless surveyed) + slow records (csv module) + body")
    table, invalid = _read_fields(body, header, dataset)
    clk.tick("parse: pyarrow read_csv (split fields)")
    width = len(header.names)
    for number, count, _text in invalid:
        i = int(simple_idx[number - 1])
        slow.append((i, i, None, f"expected {width} fields, found {count}"))
        simple[i] = False
    good = np.flatnonzero(simple)
    slow = [(i, last, None, f"expected {width} fields, found {len(f)}") if f is not None and len(f) != width
            else (i, last, f, e) for i, last, f, e in slow]
    firsts = np.concatenate([good, np.array([r[0] for r in slow], dtype=np.int64)])
    lasts = np.concatenate([good, np.array([r[1] for r in slow], dtype=np.int64)])
    order = np.argsort(firsts, kind="stable")
    take = pa.array(order, pa.int64())
    clk.tick("parse: record order (argsort)")
    raw = {}
    for col in dataset.columns:
        pos = header.positions[col.name]
        fast = table.column(f"f{pos}").combine_chunks().cast(pa.string()) if table.num_rows else pa.array([], pa.string())
        late = pa.array([None if r[2] is None else r[2][pos] for r in slow], pa.string())
        raw[col.name] = pa.concat_arrays([fast, late]).take(take) if slow else fast
    clk.tick("parse: raw columns (combine_chunks, take)")
    reasons = Reasons(len(order)) if not slow else Reasons(
        len(order), np.array([None] * table.num_rows + [r[3] for r in slow], dtype=object)[order])
    clk.tick("checks: Reasons init")
    typed = {}
    for col in dataset.columns:
        typed[col.name] = convert_column(col, raw[col.name], dataset.format.null_values, reasons)
        clk.tick(f"checks: convert {col.type}" + (" + allowed" if col.allowed else "") + (" + range" if col.range else ""))
    if dataset.rules:
        env = {**{c.out: typed[c.name] for c in dataset.columns}, **typed}
        for rule in dataset.rules:
            check_rule(rule, env, ds, reasons)
    if dataset.key and len(reasons.text):
        _duplicates(dataset, typed, raw, reasons)
    clk.tick("checks: rules, duplicate keys")
    columns = {col.out: typed[col.name] for col in dataset.columns}
    firsts, lasts = firsts[order], lasts[order]
    raw_text = np.full(len(order), None, dtype=object)
    for r in np.flatnonzero(reasons.has):
        raw_text[r] = bytes(data[int(starts[firsts[r]]) : int(ends[lasts[r]])]).decode(codec, errors="replace")
    clk.tick("reject text")
    columns["_source"] = pa.repeat(pa.scalar(source, pa.string()), len(order))
    clk.tick("bookkeeping: _source")
    columns["_line"] = pa.array(firsts + first_line, pa.int64())
    columns["_raw"] = pa.array(raw_text, pa.string())
    columns["_reason"] = pa.array(reasons.text, pa.string())
    clk.tick("bookkeeping: _raw, _reason (object arrays -> Arrow)")
    out = pa.table(columns, schema=output_schema(dataset))
    clk.tick("bookkeeping: table")
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("csv")
    p.add_argument("--mb", type=int, default=64)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args()

    import pyarrow as pa
    import pyarrow.parquet as pq

    from include.etl.csvfile import Block, read_block, read_header, survey_block
    from include.etl.reader import DROPPED, REJECT_COLUMNS, parse_block, to_pandas
    from include.pipelines.olympics.datasets import ATHLETES

    header = read_header(args.csv, ATHLETES)
    with open(args.csv, "rb") as f:
        f.seek(header.data_offset)
        head = f.read(args.mb * 2**20)
    length = head.rfind(b"\n") + 1
    naive = Block(header.data_offset, length, header.first_line)
    clk = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            clk.t = time.process_time()
            s = survey_block(args.csv, naive, ATHLETES.format)
            clk.tick("survey (read, line count, quote pre-scan of the tail or the block)")
            block = Block(naive.offset, naive.length, naive.first_line,
                          tuple(o for _, o in s.nonsimple) if s.complete else None)
            data, lookahead = read_block(args.csv, block)
            clk.tick("parse: read bytes")
            nonsimple = None if block.nonsimple is None else [o - block.offset for o in block.nonsimple]
            table = parse_bytes_timed(clk, data, block.first_line, args.csv, header, ATHLETES, None, nonsimple, lookahead)
            frame = to_pandas(table)
            clk.tick("conversion: Arrow -> pandas (ArrowDtype)")
            ok = frame["_reason"].isna()
            dropped = frame["_reason"].fillna("") == DROPPED
            names = [c for c in frame.columns if c not in REJECT_COLUMNS]
            accepted = frame[ok][names]
            rejects = frame[~ok & ~dropped][list(REJECT_COLUMNS)]
            counts = (int(ok.sum()), int((~ok & ~dropped).sum()), int(dropped.sum()))
            clk.tick("write_split: pandas filters + counts")
            acc_t = pa.Table.from_pandas(accepted, schema=pa.schema([pa.field(c, table.schema.field(c).type) for c in names]),
                                         preserve_index=False)
            rej_t = pa.Table.from_pandas(rejects, preserve_index=False)
            clk.tick("conversion: pandas -> Arrow (to_parquet)")
            pq.write_table(acc_t, os.path.join(tmp, "a.parquet"))
            pq.write_table(rej_t, os.path.join(tmp, "r.parquet"))
            clk.tick("write: Parquet (snappy, accepted + rejects)")
            clk.rep()
            if rep == 0:  # the copy is faithful
                ref = parse_block(args.csv, block, header, ATHLETES)
                assert ref.equals(table), "profile copy of parse_bytes differs from reader.parse_bytes"
                clk.t = time.process_time()

    size = os.path.getsize(args.csv) - header.data_offset
    blocks = size / length
    med = {k: statistics.median(v) for k, v in clk.times.items()}
    total = sum(med.values())
    print(f"block {length / 2**20:.1f} MB, {table.num_rows:,} rows, accepted {counts[0]:,}, rejected {counts[1]:,}; "
          f"median CPU s of {args.reps}; file = {blocks:.2f} blocks; load {os.getloadavg()}")
    print(f"{'stage':55s} {'block s':>8s} {'%':>6s} {'file s (est.)':>14s}")
    for k, v in med.items():
        print(f"{k:55s} {v:8.3f} {100 * v / total:5.1f}% {v * blocks:14.2f}")
    print(f"{'total':55s} {total:8.3f} {100.0:5.1f}% {total * blocks:14.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
