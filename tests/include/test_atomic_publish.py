"""A reader never sees a partial partition, even when the writer is SIGKILLed in the middle of writing
or of committing: the Delta table stays at its previous version, with the same rows."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from include.etl.lake import Lake

ROOT = Path(__file__).resolve().parents[2]
FILES, ROWS = 4, 20_000
DS = "2024-07-07"

# Publishes versions 2, 3, ... of one partition, each written file by file into a staged directory
# (slowly, so that a kill lands mid-write) then committed, as a job does. With ``slow-commit``, each
# commit says so once the staged files are checked and the table is opened, just before its log
# entry is written, and from the writer's second commit on waits there, so that a kill lands mid-commit.
WRITER = """
import sys, time
from pathlib import Path
import pyarrow as pa, pyarrow.parquet as pq
from deltalake import DeltaTable
from include.etl.lake import Lake
root, files, rows, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
commits = 0
if mode == "slow-commit":
    original = DeltaTable.create_write_transaction
    def slow(self, *args, **kwargs):
        global commits
        commits += 1
        print(f"committing {commits}", flush=True)
        if commits >= 2:
            time.sleep(60)
        return original(self, *args, **kwargs)
    DeltaTable.create_write_transaction = slow
lake = Lake(root, "demo")
version = 2
while True:
    staged = lake.stage("t", "2024-07-07")
    path = Path(lake.engine_path(staged)); path.mkdir(parents=True)
    for i in range(files):
        pq.write_table(pa.table({"version": [version] * rows, "i": list(range(rows))}), path / f"part-{i}.parquet")
        print(f"wrote {version} {i}", flush=True)
        time.sleep(0.3 if mode == "slow-write" else 0)
    committed = lake.commit("t", "2024-07-07", staged)
    print(f"published {version} {committed['version']}", flush=True)
    version += 1
"""


def _read(lake: Lake) -> tuple[set, int]:
    """The partition as of the table's latest version: which writer versions it holds, and its rows."""
    table = lake.read_arrow("t", DS)
    return set(table.column("version").to_pylist()), table.num_rows


def _first_version(lake: Lake) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    staged = lake.stage("t", DS)
    path = Path(lake.engine_path(staged))
    path.mkdir(parents=True)
    for i in range(FILES):
        pq.write_table(pa.table({"version": [1] * ROWS, "i": list(range(ROWS))}), path / f"part-{i}.parquet")
    assert lake.commit("t", DS, staged)["version"] == 1  # 0 created the table


def _writer(tmp_path: Path, mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(FILES), str(ROWS), mode],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin"})


def _kill_when(writer: subprocess.Popen, lake: Lake, kill_at, after: int = 2) -> tuple[int, int, set, int]:
    """Read the partition after every step of the writer; SIGKILL it at the first line ``kill_at`` accepts
    once it has published ``after`` times. Returns (its last writer version, the table version of that commit,
    the versions seen, the number of reads)."""
    seen, reads, published, last, last_table_version = set(), 0, 0, 1, 1
    try:
        for line in writer.stdout:
            versions, rows = _read(lake)
            assert len(versions) == 1 and rows == FILES * ROWS, f"partial or mixed partition: {versions}, {rows} rows"
            seen |= versions
            reads += 1
            if line.startswith("published"):
                published += 1
                last, last_table_version = int(line.split()[1]), int(line.split()[2])
            elif published >= after and kill_at(line):
                writer.send_signal(signal.SIGKILL)
                break
    finally:
        writer.kill()
        writer.wait()
    assert writer.returncode == -signal.SIGKILL
    return last, last_table_version, seen, reads


def _retry_replaces_it(lake: Lake, before: int) -> None:
    """The next commit of the partition is exactly one new version holding only its own rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    retry = lake.stage("t", DS)
    path = Path(lake.engine_path(retry))
    path.mkdir(parents=True)
    pq.write_table(pa.table({"version": [99] * ROWS, "i": list(range(ROWS))}), path / "part-0.parquet")
    assert lake.commit("t", DS, retry)["version"] == before + 1
    assert _read(lake) == ({99}, ROWS)
    assert [lake.engine_path(f) for f in lake.files("t", DS)] == [f"{lake.engine_path(retry)}/part-0.parquet"]


@pytest.mark.timeout(180)
def test_reader_sees_whole_versions_only_while_the_writer_is_killed_mid_write(tmp_path):
    lake = Lake(tmp_path, "demo")
    _first_version(lake)
    writer = _writer(tmp_path, "slow-write")
    # killed after the second of four files of a version
    last, version, seen, reads = _kill_when(writer, lake, lambda line: line.startswith("wrote") and line.split()[2] == "1")
    assert len(seen) >= 2 and reads > 5, (seen, reads)
    # After the kill: the table is at the version of the last commit, with that commit's rows, whole ...
    assert lake.delta("t").version() == version >= 3
    assert _read(lake) == ({last}, FILES * ROWS) and lake.row_count("t", DS) == FILES * ROWS
    # ... the killed try's staged files (two of four) are on disk but in no version (vacuum removes them) ...
    referenced = {Path(lake.engine_path(f)) for f in lake.files("t", DS)}
    killed = [d for d in (tmp_path / "demo" / "t" / f"ds={DS}").glob("w-*") if len(list(d.glob("*.parquet"))) == 2]
    assert len(referenced) == FILES and len(killed) == 1 and not set(killed[0].glob("*.parquet")) & referenced
    # ... and the next commit of that partition replaces it, in exactly one new version.
    _retry_replaces_it(lake, version)


@pytest.mark.timeout(180)
def test_a_writer_killed_mid_commit_leaves_the_table_at_its_previous_version(tmp_path):
    lake = Lake(tmp_path, "demo")
    _first_version(lake)
    writer = _writer(tmp_path, "slow-commit")
    # the writer's first commit goes through; its second is killed once its files are staged and checked
    # and the table opened, before its log entry is written
    last, version, seen, _ = _kill_when(writer, lake, lambda line: line.startswith("committing 2"), after=1)
    assert (last, version, seen) == (2, 2, {1, 2})
    assert lake.delta("t").version() == 2 and [h["version"] for h in lake.history("t")] == [2, 1, 0]
    assert _read(lake) == ({2}, FILES * ROWS) and lake.row_count("t", DS) == FILES * ROWS
    staged = list((tmp_path / "demo" / "t" / f"ds={DS}").glob("w-*/*.parquet"))
    assert len(staged) == 3 * FILES  # versions 1 and 2, and the killed commit's files, which no version references
    _retry_replaces_it(lake, version)
