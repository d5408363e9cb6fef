"""A reader never sees a partial partition, even when the writer is SIGKILLed in the middle of writing."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from include.etl.lake import STAGING_PREFIX, Lake, publish

ROOT = Path(__file__).resolve().parents[2]
FILES, ROWS = 4, 20_000

# Publishes versions 1, 2, 3, ... of one partition, each written file by file into staging
# (slowly, so that a kill lands mid-write), as a job does.
WRITER = """
import sys, time
import pyarrow as pa, pyarrow.parquet as pq
from include.etl.lake import Lake, publish
lake = Lake(sys.argv[1], "demo"); target = lake.partition("t", "2024-07-07")
files, rows = int(sys.argv[2]), int(sys.argv[3])
version = 2
while True:
    staging = lake.staging(target); staging.mkdir()
    for i in range(files):
        pq.write_table(pa.table({"version": [version] * rows, "i": list(range(rows))}), staging / f"part-{i}.parquet")
        print(f"wrote {version} {i}", flush=True)
        time.sleep(0.3)
    publish(staging, target)
    print(f"published {version}", flush=True)
    version += 1
"""


def _read(target: Path) -> tuple[set, int]:
    import pyarrow.parquet as pq

    table = pq.read_table(target, partitioning=None)
    return set(table.column("version").to_pylist()), table.num_rows


def test_reader_sees_whole_versions_only_while_the_writer_is_killed_mid_write(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    lake = Lake(tmp_path, "demo")
    target = lake.partition("t", "2024-07-07")
    first = lake.staging(target)
    first.mkdir()
    for i in range(FILES):
        pq.write_table(pa.table({"version": [1] * ROWS, "i": list(range(ROWS))}), first / f"part-{i}.parquet")
    publish(first, target)

    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(FILES), str(ROWS)],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin"})
    seen, reads = set(), 0
    try:
        published, last = 0, 1
        for line in writer.stdout:  # read the partition after every step of the writer
            versions, rows = _read(target)
            assert len(versions) == 1 and rows == FILES * ROWS, f"partial or mixed partition: {versions}, {rows} rows"
            seen |= versions
            reads += 1
            if line.startswith("published"):
                published += 1
                last = int(line.split()[1])
            elif published >= 2 and line.startswith("wrote") and line.split()[2] == "1":  # mid-write of a version
                writer.send_signal(signal.SIGKILL)
                break
    finally:
        writer.kill()
        writer.wait()
    assert writer.returncode == -signal.SIGKILL
    assert len(seen) >= 2 and reads > 5, (seen, reads)
    # After the kill: the last published version, whole; the killed try's staging is left over...
    versions, rows = _read(target)
    assert (versions, rows) == ({last}, FILES * ROWS)
    stale = [p for p in target.parent.iterdir() if p.name.startswith(STAGING_PREFIX)]
    assert len(stale) == 1 and len(list(stale[0].iterdir())) == 2  # two of four files written
    # ... and the next successful publish of that partition removes it.
    retry = lake.staging(target)
    retry.mkdir()
    pq.write_table(pa.table({"version": [99] * ROWS, "i": list(range(ROWS))}), retry / "part-0.parquet")
    publish(retry, target)
    assert [p.name for p in target.parent.iterdir()] == [target.name]
    assert _read(target) == ({99}, ROWS)

