"""The job registry (include/etl/jobs/__init__.py) and the generic steps (include/etl/jobs/steps.py),
with a fake engine: no cluster, no JVM."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

import include.etl.jobs as jobs
import include.pipelines
from include.etl.contract import Column, Dataset
from include.etl.errors import DataError, InputFileError, QualityCheckFailed, RejectThresholdExceeded
from include.etl.jobs import Job, JobContext, Pipeline, get_job, job, register_pipeline, resolve_job, steps
from include.etl.lake import Lake
from tests.lake import part, published, read_partition, rejects

DS = "2024-07-07"
ORDERS = Dataset("orders", (Column("id", "integer", required=True), Column("amount", "float")))


class FakeEngine:
    """Stands in for DaskEngine/SparkEngine: ``read_csv`` returns a pandas frame with ``_reason``."""

    name = "fake"

    def __init__(self, rejected: int = 0, rows: int = 4) -> None:
        self.rejected, self.rows, self.calls = rejected, rows, []

    def read_csv(self, path, dataset, *, ds, block_bytes):
        self.calls.append({"path": path, "dataset": dataset.name, "ds": ds, "block_bytes": block_bytes})
        reasons = ["bad"] * self.rejected + [None] * (self.rows - self.rejected)
        return pd.DataFrame({"id": range(self.rows), "_reason": reasons})

    def write_split(self, parsed, accepted_dir, rejects_dir, filesystem=None):
        assert filesystem is None, "a local lake: the engines use their own filesystem"
        ok = parsed["_reason"].isna()
        for frame, where in ((parsed[ok], accepted_dir), (parsed[~ok], rejects_dir)):
            Path(where).mkdir(parents=True)
            frame.to_parquet(Path(where) / "part.0.parquet", index=False)
        return int(ok.sum()), int((~ok).sum())

    def read_parquet(self, files, schema, filesystem=None):
        assert filesystem is None
        if not files:
            return schema.empty_table().to_pandas()
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)

    def read_parquets(self, files, schema, filesystem=None):
        frame = self.read_parquet(files, schema, filesystem)
        return frame[list(schema.names)]

    def write_parquet(self, frame, path, filesystem=None):
        assert filesystem is None
        Path(path).mkdir(parents=True)
        frame.to_parquet(Path(path) / "part.0.parquet", index=False)
        return len(frame)

    def write_parquets(self, frames, filesystem=None):
        return {path: self.write_parquet(frame, path, filesystem) for path, frame in frames.items()}

    def align(self, frames):
        return list(frames)

    def run_noop(self):
        self.calls.append("noop")


@pytest.fixture
def registry(monkeypatch):
    """Isolated JOBS/PIPELINES: what a test registers disappears afterwards."""
    monkeypatch.setattr(jobs, "JOBS", dict(jobs.JOBS))
    monkeypatch.setattr(jobs, "PIPELINES", dict(jobs.PIPELINES))
    return jobs


@pytest.fixture
def csv_file(tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text("id,amount,note\n1,2.5,x\n2,3.0,y\n")
    return path


def ctx_for(tmp_path, engine, **kwargs) -> JobContext:
    return JobContext(engine=engine, lake=Lake(tmp_path / "lake", "demo"), ds=DS, **kwargs)


def uri(path: Path) -> str:
    """A local lake path as the summaries name it (``file:///...``)."""
    return "file://" + str(path.resolve())


def test_registered_olympics_jobs_resolve_with_their_pipeline():
    for name in ("olympics.ingest", "olympics.enrich", "olympics.aggregate"):
        registered = get_job(name)
        assert isinstance(registered, Job) and registered.pipeline == "olympics"
    assert get_job("noop").pipeline is None
    ctx = get_job("olympics.enrich").context(engine=None, lake_root="/lake", ds=DS, block_bytes=1024)
    assert ctx.lake == Lake(Path("/lake"), "olympics") and ctx.block_bytes == 1024


def test_a_pipeline_package_is_imported_on_first_use(registry, tmp_path, monkeypatch):
    pkg = tmp_path / "pipes" / "demo_pipe"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        from include.etl.contract import Column, Dataset
        from include.etl.jobs import register_pipeline

        PIPELINE = register_pipeline("demo_pipe", datasets=[Dataset("t", (Column("a"),))], inputs={"t": "demo/t.csv"})

        @PIPELINE.job("hello")
        def hello(ctx):
            return {"lake": ctx.lake.table_uri("t")}
    """))
    monkeypatch.setattr(include.pipelines, "__path__", [*include.pipelines.__path__, str(tmp_path / "pipes")])
    monkeypatch.delitem(sys.modules, "include.pipelines.demo_pipe", raising=False)
    assert "demo_pipe.hello" not in registry.JOBS
    hello = resolve_job("demo_pipe.hello")
    assert hello.pipeline == "demo_pipe" and set(registry.JOBS) >= {"demo_pipe.hello", "demo_pipe.ingest"}
    ctx = hello.context(engine=None, lake_root=tmp_path, ds=DS)
    assert hello(ctx) == {"lake": uri(tmp_path / "demo_pipe" / "t")}
    assert registry.get_pipeline("demo_pipe").default_inputs("/data") == {"t": "/data/demo/t.csv"}
    monkeypatch.delitem(sys.modules, "include.pipelines.demo_pipe", raising=False)


def test_unknown_jobs_and_pipelines_fail_clearly(registry):
    with pytest.raises(KeyError, match=r"unknown job 'nowhere.x'.*include.pipelines.<pipeline>"):
        get_job("nowhere.x")
    with pytest.raises(KeyError, match="unknown job 'plain'"):
        get_job("plain")
    with pytest.raises(KeyError, match="unknown pipeline 'nowhere'"):
        registry.get_pipeline("nowhere")
    with pytest.raises(KeyError, match="declares no dataset 'nope'; declared: athletes, regions, venues"):
        registry.get_pipeline("olympics").dataset("nope")


def test_module_function_jobs_still_work_and_get_a_lake_only_inside_a_pipeline():
    fixture = get_job("tests.fixtures.jobs:sleep_on_cluster")
    assert fixture.pipeline is None and fixture.context(engine=None, lake_root="/l", ds=DS).lake is None
    inside = get_job("include.pipelines.olympics.jobs:enrich")
    assert inside.pipeline == "olympics"
    with pytest.raises(RuntimeError, match="this job has no lake"):
        fixture.context(engine=None, lake_root="/l", ds=DS).pipeline_lake  # noqa: B018


def test_registration_rules(registry):
    with pytest.raises(ValueError, match="must be '<pipeline>.<job>'"):
        job("nodot")
    p = register_pipeline("demo", datasets={"orders": ORDERS}, inputs={"orders": "demo/orders.csv"})
    assert register_pipeline("demo", datasets={"orders": ORDERS}, inputs={"orders": "demo/orders.csv"}) == p

    @p.job("one")
    def one(ctx):
        return {}

    def other(ctx):
        return {}

    with pytest.raises(ValueError, match="already registered"):
        job("demo.one")(other)
    with pytest.raises(ValueError, match="default inputs for undeclared datasets"):
        Pipeline("demo2", datasets={}, inputs={"x": "x.csv"})
    with pytest.raises(ValueError, match="must be an identifier"):
        Pipeline("no-dash")
    with pytest.raises(ValueError, match="max_reject_ratio"):
        JobContext(engine=None, lake=None, ds=DS, max_reject_ratio=2)
    with pytest.raises(ValueError, match="is not a date"):
        JobContext(engine=None, lake=None, ds="yesterday")


def test_noop_is_generic():
    engine = FakeEngine()
    assert resolve_job("noop")(JobContext(engine=engine, lake=None, ds=DS)) == {"job": "noop"}
    assert engine.calls == ["noop"]


def test_ingest_publishes_both_partitions_and_reports_extra_columns(tmp_path, csv_file, caplog):
    engine = FakeEngine(rejected=1, rows=200)
    ctx = ctx_for(tmp_path, engine, max_reject_ratio=0.01, block_bytes=4096)
    summary = steps.ingest(ctx, ORDERS, str(csv_file))
    lake = tmp_path / "lake" / "demo"
    assert summary == {
        "table": "orders", "source": str(csv_file), "path": uri(lake / "orders"), "version": 1,  # 0 created it
        "rows_in": 200, "rows_accepted": 199, "rows_rejected": 1, "duplicates_dropped": 0,
        "rejects_path": uri(lake / "_rejects" / "orders"), "extra_columns": ["note"],
        "asset_events": {"orders": {"ds": DS, "source": str(csv_file), "rows_in": 200, "rows_accepted": 199,
                                    "rows_rejected": 1, "duplicates_dropped": 0}},
    }
    assert engine.calls == [{"path": str(csv_file), "dataset": "orders", "ds": DS, "block_bytes": 4096}]
    assert "columns the contract does not declare, left out: ['note']" in caplog.text
    assert read_partition(part(tmp_path / "lake", "demo", "orders", DS)).column("id").to_pylist() == list(range(1, 200))
    assert read_partition(rejects(tmp_path / "lake", "demo", "orders", DS)).column("_reason").to_pylist() == ["bad"]
    assert Lake(tmp_path / "lake", "demo").history("orders")[0]["ds"] == DS


def test_ingest_over_the_threshold_publishes_nothing_and_keeps_staged_rejects(tmp_path, csv_file):
    ctx = ctx_for(tmp_path, FakeEngine(rejected=3, rows=4), max_reject_ratio=0.01)
    with pytest.raises(RejectThresholdExceeded, match=rf"orders input {csv_file}: 3 of 4 rows rejected \(75.00%\)") as exc:
        steps.ingest(ctx, ORDERS, str(csv_file))
    lake = tmp_path / "lake" / "demo"
    # Nothing committed: neither table exists, and the accepted rows' staged files are gone ...
    assert not published(part(tmp_path / "lake", "demo", "orders", DS))
    assert not ctx.lake.exists("orders") and not ctx.lake.exists(ctx.lake.rejects("orders"))
    assert not list((lake / "orders").rglob("*.parquet"))
    # ... while the staged rejects, which the error names, are kept for inspection.
    staged = str(exc.value).rsplit("staged rejects at ", 1)[1]
    assert staged.startswith(uri(lake / "_rejects" / "orders" / f"ds={DS}") + "/")
    kept = pd.read_parquet(ctx.lake.engine_path(staged))
    assert kept["_reason"].tolist() == ["bad"] * 3


def test_ingest_of_an_unusable_file_is_a_data_error(tmp_path):
    ctx = ctx_for(tmp_path, FakeEngine(rows=0))
    with pytest.raises(InputFileError, match=rf"orders input {tmp_path / 'nope.csv'}: file does not exist"):
        steps.ingest(ctx, ORDERS, str(tmp_path / "nope.csv"))
    empty = tmp_path / "header_only.csv"
    empty.write_text("id,amount\n")
    with pytest.raises(InputFileError, match="no data rows after the header"):
        steps.ingest(ctx, ORDERS, str(empty))


def test_engine_data_errors_keep_their_class_and_get_the_file_named(tmp_path, csv_file):
    class Broken(FakeEngine):
        def write_split(self, parsed, accepted_dir, rejects_dir, filesystem=None):
            raise InputFileError("truncated block")

    with pytest.raises(InputFileError, match=rf"^orders input {csv_file}: truncated block$"):
        steps.ingest(ctx_for(tmp_path, Broken()), ORDERS, str(csv_file))


def test_run_transform_and_publish_checked(tmp_path):
    engine = FakeEngine()
    ctx = ctx_for(tmp_path, engine)
    steps.write_table(ctx, pd.DataFrame({"x": [1, 2, 3]}), "base")

    def double(frame):
        import narwhals as nw

        return frame.with_columns(y=nw.col("x") * 2)

    out = steps.run_transform(ctx, "doubled", double, ["base"])
    lake = tmp_path / "lake"
    assert out == {"table": "doubled", "path": uri(lake / "demo" / "doubled"), "rows_out": 3, "version": 1}
    assert read_partition(part(lake, "demo", "doubled", DS)).column("y").to_pylist() == [2, 4, 6]

    def no_big_values(tables):
        return [f"{name}: value above 5" for name, t in tables.items() if (t["y"] > 5).any()]

    frame = steps.read_table(ctx, "doubled")
    with pytest.raises(QualityCheckFailed, match=rf"ds={DS}, nothing published .*: mart: value above 5"):
        steps.publish_checked(ctx, {"mart": frame}, no_big_values)
    mart = tmp_path / "lake" / "demo" / "mart"
    assert not ctx.lake.exists("mart") and not published(part(lake, "demo", "mart", DS))  # nothing published
    assert not list(mart.rglob("*.parquet"))  # staging discarded
    import narwhals as nw

    small = frame.filter(nw.col("y") < 5)
    summary = steps.publish_checked(ctx, {"mart": small}, no_big_values)
    assert summary == {"mart": {"table": "mart", "path": uri(mart), "rows_out": 2, "version": 1}}
    assert read_partition(part(lake, "demo", "mart", DS)).column("y").to_pylist() == [2, 4]
    # A re-run replaces the partition in one new version, never appends to it.
    again = steps.publish_checked(ctx, {"mart": small}, no_big_values)
    assert again["mart"]["version"] == 2 and ctx.lake.row_count("mart", DS) == 2
    assert read_partition(part(lake, "demo", "mart", DS)).column("y").to_pylist() == [2, 4]
    assert issubclass(QualityCheckFailed, DataError)
