"""Sort py-spy raw stacks (``py-spy record --format raw``) into the stages of issue 19.

    .venv/bin/python bench/pyspy_breakdown.py /tmp/h19/spy-dask/0-ingest_athletes-*.raw [--top 15]

Each sample goes to the first specific stage whose pattern matches, scanning the stack from the
leaf up (so a pandas->Arrow conversion inside a Parquet write counts as conversion); a sample no
specific pattern matches goes to the first generic one (Dask, pandas, pyarrow, numpy, job code). Idle samples (a
thread waiting on a lock, a socket, a queue) are counted apart and left out of the percentages.
Prints samples and % of busy samples per stage, and the top leaf functions of the busy ones.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys

IDLE = re.compile(r"^([\w<>]+\.)*(wait|select|poll|_poll|_recv|recv|recv_bytes|_recv_bytes|get|sleep|acquire|"
                  r"_wait_for_tstate_lock|accept|read|readinto|readline|join|epoll|do_handshake|serve_forever) "
                  r"\((threading|selectors|queue|multiprocessing/|socket|ssl|asyncio/|concurrent/|subprocess|"
                  r"tornado/|socketserver)")

# (stage, regex on one frame "function (file:line)"), tried from the leaf frame upwards, first match wins.
RULES = [
    ("imports (module loading)", r"^_find_and_load|^_call_with_frames_removed"),
    ("survey: quote pre-scan (nonsimple_lines)", r"^nonsimple_lines \(.*csvfile"),
    ("survey/parse: line spans (record boundaries)", r"^(line_spans|_finish_spans) \(.*csvfile"),
    ("parse: UTF-8 check + odd-line scan (csv module)", r"^(scan_record|_slow_records|_encoding_ok) "),
    ("CSV parse: pyarrow read_csv", r"^_read_fields \(.*reader"),
    ("typing and checks (convert)", r"\(.*include/etl/convert\.py"),
    ("conversion: pandas -> Arrow", r"^(from_pandas|dataframe_to_arrays|convert_column|_table_from_pandas|"
                                    r"pandas_to_arrow|_to_arrow|__arrow_array__)|table_from_pandas"),
    ("conversion: Arrow -> pandas", r"^(to_pandas|table_to_dataframe|_table_to_blocks|arrow_table_to_pandas|"
                                    r"_arrow_table_to_pandas|_reconstruct_block)|pyarrow/pandas_compat"),
    ("Spark: Arrow batches <-> JVM (serializers)", r"pyspark/sql/pandas/serializers|pyspark/serializers|"
                                                   r"^(dump_stream|load_stream|_create_batch|arrow_to_pandas)"),
    ("parse: reject bookkeeping (parse_bytes itself)", r"^parse_bytes \(.*reader"),
    ("Parquet write", r"^(write_table|write_partition|write|_write_table|ParquetWriter|write_batch|to_parquet)"
                      r" \(.*(pyarrow/parquet|dask/dataframe/io/parquet|engines/(dask|spark))"),
    ("Parquet read", r"^(read_table|read_partition|_read_table|read_parquet|_read_fragment|read_row_groups|"
                     r"_read_and_process_chunk|to_table)"),
    ("shuffle / join (merge, hash split, concat)", r"^(merge|hash_join|_merge|shuffle|partitioning_index|"
                                                   r"shuffle_group|_concat|concat|merge_chunk|_split_partition|"
                                                   r"group_split)|dask/dataframe/(multi|shuffle|dask_expr/_merge)"
                                                   r"|distributed/shuffle"),
    ("group-by / aggregation", r"^(_groupby|groupby|agg|_agg|chunk|aggregate|_groupby_aggregate)|core/groupby"),
    ("Delta commit / lake (deltalake, metadata)", r"deltalake|include/etl/lake"),
    ("Dask: (de)serialisation, comms", r"distributed/protocol|distributed/comm|^(dumps|loads|serialize|"
                                       r"deserialize|pickle)"),
    ("Dask: graph building, scheduling, worker bookkeeping", r"dask/dataframe/dask_expr|dask/_expr|distributed/"
                                                             r"(worker|scheduler|client|utils)|dask/(base|core|"
                                                             r"local|highlevelgraph|delayed|tokenize)"),
    ("Spark: Python worker (daemon, UDF plumbing)", r"pyspark/"),
    ("planner (plan_blocks, boundaries)", r"^(plan_blocks|_move_boundaries|naive_blocks|_next_line_start) "),
    ("job code (steps, transforms, narwhals)", r"include/etl/jobs|include/pipelines|narwhals/"),
    ("pandas (other)", r"pandas/"),
    ("pyarrow (other)", r"pyarrow/"),
    ("numpy (other)", r"numpy/"),
]
GENERIC = ("Dask: graph building, scheduling, worker bookkeeping", "Spark: Python worker (daemon, UDF plumbing)",
           "job code (steps, transforms, narwhals)", "pandas (other)", "pyarrow (other)", "numpy (other)")
COMPILED = [(name, re.compile(rx)) for name, rx in RULES if name not in GENERIC]
COMPILED_GENERIC = [(name, re.compile(rx)) for name, rx in RULES if name in GENERIC]


def classify(frames: list[str]) -> str:
    """The first specific stage from the leaf up; else the first generic one (a library, the job code)."""
    for rules in (COMPILED, COMPILED_GENERIC):
        for frame in reversed(frames):
            func, _, where = frame.partition(" (")
            bare = f"{func.rsplit('.', 1)[-1]} ({where}"  # "ParquetWriter.write_table (...)" -> "write_table (...)"
            for name, rx in rules:
                if rx.search(frame) or rx.search(bare):
                    return name
    return "other"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("files", nargs="+")
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--process", help="only samples whose innermost 'process ...' frame contains this text")
    args = p.parse_args()
    stages, leaves = collections.Counter(), collections.Counter()
    idle = 0
    for path in args.files:
        with open(path) as f:
            for line in f:
                stack, _, n = line.rstrip("\n").rpartition(" ")
                if not n.isdigit():
                    continue
                parts = stack.split(";")
                if args.process and args.process not in ([fr for fr in parts if fr.startswith("process ")] or [""])[-1]:
                    continue
                frames = [fr for fr in parts if not fr.startswith(("process ", "thread "))]
                if not frames:
                    continue
                if IDLE.search(frames[-1]):
                    idle += int(n)
                    continue
                stages[classify(frames)] += int(n)
                leaves[frames[-1]] += int(n)
    busy = sum(stages.values())
    print(f"{busy} busy samples, {idle} idle samples left out ({len(args.files)} file(s))")
    for name, n in stages.most_common():
        print(f"  {name:55s} {n:7d} {100 * n / max(busy, 1):5.1f}%")
    print("top leaf functions:")
    for name, n in leaves.most_common(args.top):
        print(f"  {n:7d} {100 * n / max(busy, 1):5.1f}%  {name[:140]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
