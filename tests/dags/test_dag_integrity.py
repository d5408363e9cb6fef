"""Every DAG in dags/ imports cleanly and follows the platform's rules."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from airflow.dag_processing.dagbag import DagBag

from tests.conftest import ROOT

HEAVY = ("pandas", "dask", "distributed", "pyspark", "pyarrow", "narwhals", "polars")


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return DagBag(dag_folder=str(ROOT / "dags"))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert dagbag.dags, "no DAG found in dags/"


def test_every_dag_file_defines_a_dag(dagbag):
    files = {str(p) for p in (ROOT / "dags").glob("*.py") if not p.name.startswith("_")}
    assert files <= {dag.fileloc for dag in dagbag.dags.values()}, "a file in dags/ defines no DAG"


def test_every_dag_has_tags_owner_retries_and_docs(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md, f"{dag_id} has no doc_md (module docstring)"
        for task in dag.tasks:
            assert task.owner and task.owner != "airflow", f"{dag_id}.{task.task_id} has no owner"
            assert task.retries >= 2, f"{dag_id}.{task.task_id} has retries={task.retries}"


def test_no_cycles(dagbag):
    from airflow.sdk.definitions.dag import DAG

    for dag in dagbag.dags.values():
        assert isinstance(dag, DAG)
        order = dag.topological_sort()  # raises on a cycle
        assert len(order) == len(dag.tasks)


def test_cluster_setup_and_teardown_wiring(dagbag):
    from etl_platform.operators import SparkJobOperator, StartClusterOperator, StopClusterOperator

    for dag_id, dag in dagbag.dags.items():
        starts = [t for t in dag.tasks if isinstance(t, StartClusterOperator)]
        stops = [t for t in dag.tasks if isinstance(t, StopClusterOperator)]
        jobs = [t for t in dag.tasks if isinstance(t, SparkJobOperator)]
        if not jobs:
            continue
        assert len(starts) == 1 and len(stops) == 1, f"{dag_id}: one start and one stop cluster task expected"
        start, stop = starts[0], stops[0]
        assert start.is_setup, f"{dag_id}: {start.task_id} is not a setup task"
        assert stop.is_teardown, f"{dag_id}: {stop.task_id} is not a teardown task"
        assert start.task_id in stop.upstream_task_ids
        for job in jobs:
            assert start.task_id in job.get_flat_relative_ids(upstream=True), f"{job.task_id} does not follow the start"
            assert stop.task_id in job.get_flat_relative_ids(upstream=False), f"{job.task_id} is not before the stop"


def test_olympics_shape(dagbag):
    dag = dagbag.dags["olympics_etl"]
    ingests = {"ingest_athletes", "ingest_regions", "ingest_venues"}
    # fan-in (the cluster handle also makes every job depend on start_cluster)
    assert dag.get_task("enrich_athletes").upstream_task_ids == ingests | {"start_cluster"}
    for task_id in ingests:
        assert dag.get_task(task_id).upstream_task_ids == {"start_cluster"}
    assert dag.get_task("aggregate").upstream_task_ids == {"enrich_athletes", "start_cluster"}
    assert set(dag.params.keys()) == {"backend", "data_dir", "athletes_path", "regions_path", "venues_path"}
    assert dag.params.get_param("backend").schema["enum"] == ["dask", "spark"]
    assert dag.catchup is False and dag.start_date is not None
    # Write, audit, publish: the marts' events come from the run's publish step, after every job.
    assert dag.get_task("aggregate").outlets == []
    assert dag.get_task("publish").upstream_task_ids == {"aggregate"}
    assert {a.uri for a in dag.get_task("publish").outlets} == {
        "lake://olympics/avg_age_by_year",
        "lake://olympics/medals_by_region",
    }
    from include.etl.settings import Settings

    assert dag.params["data_dir"] == str(Settings.from_env().pipeline_data_dir("olympics"))
    assert dag.params["athletes_path"] == "olympics/athlete_events_head.csv"  # under data_dir
    assert dag.params["regions_path"] == "olympics/noc_regions.csv"
    assert dag.params["venues_path"] == "olympics/host_city_locations.csv"
    assert dag.get_task("start_cluster").inputs == {
        f"{t}_path": f"{{{{ data_path(params.data_dir, params.{t}_path) }}}}" for t in ("athletes", "regions", "venues")
    }


def test_a_publish_step_follows_every_job_of_its_pipeline(dagbag):
    """Where a DAG publishes per run, every job task of the run is upstream of the publish step (none
    could publish after it, or be left out of it), no job task emits asset events of its own (the
    events would announce tables not visible yet), and the step publishes the jobs' pipeline."""
    from etl_platform.operators import LakePublishOperator, SparkJobOperator

    publishing = 0
    for dag_id, dag in dagbag.dags.items():
        publishes = [t for t in dag.tasks if isinstance(t, LakePublishOperator)]
        if not publishes:
            continue
        publishing += 1
        (publish,) = publishes
        upstream = publish.get_flat_relative_ids(upstream=True)
        for task in dag.tasks:
            if isinstance(task, SparkJobOperator):
                assert task.task_id in upstream, f"{dag_id}: {task.task_id} is not upstream of {publish.task_id}"
                assert task.outlets == [], f"{dag_id}: {task.task_id} emits events before the run is published"
                assert task.job.split(".")[0] == publish.pipeline, f"{dag_id}: {publish.task_id} publishes another lake"
    assert publishing >= 3, "olympics_etl, nz_trade_etl and retail_daily publish per run"


def test_every_job_task_names_a_registered_job(dagbag):
    from etl_platform.operators import SparkJobOperator
    from include.etl.jobs import get_job

    for dag in dagbag.dags.values():
        for task in dag.tasks:
            if isinstance(task, SparkJobOperator):
                get_job(task.job)  # raises KeyError naming the job


def test_every_pipeline_has_its_dags_and_every_dag_one_pipeline(dagbag):
    """A pipeline package is run by DAGs in dags/ (retail has a daily and a monthly one); a DAG runs one pipeline."""
    from etl_platform.operators import SparkJobOperator

    packages = sorted(p.name for p in (ROOT / "include" / "pipelines").iterdir() if (p / "__init__.py").exists())
    assert packages, "no pipeline package in include/pipelines/"
    for name in packages:
        dags = {dag_id for dag_id, dag in dagbag.dags.items()
                if any(isinstance(t, SparkJobOperator) and t.job.startswith(f"{name}.") for t in dag.tasks)}
        assert dags, f"pipeline {name!r} is run by no DAG in dags/"
    for dag_id, dag in dagbag.dags.items():
        pipelines = {t.job.split(".")[0] for t in dag.tasks if isinstance(t, SparkJobOperator) and "." in t.job}
        assert len(pipelines) <= 1, f"{dag_id} runs jobs of several pipelines: {sorted(pipelines)}"


def test_input_params_are_checked_by_the_start_task(dagbag):
    """Every ``*_path`` param is an input the start task checks, so a missing file fails before any cluster."""
    from etl_platform.operators import StartClusterOperator

    for dag_id, dag in dagbag.dags.items():
        paths = {k for k in dag.params if k.endswith("_path")}
        starts = [t for t in dag.tasks if isinstance(t, StartClusterOperator)]
        if not paths or not starts:
            continue
        (start,) = starts
        assert set(start.inputs) == paths, f"{dag_id}: start_cluster checks {sorted(start.inputs)}, params {sorted(paths)}"
        for name in paths:
            assert start.inputs[name] == f"{{{{ data_path(params.data_dir, params.{name}) }}}}"


def test_every_input_is_read_where_the_start_task_checks_it(dagbag):
    """The ingest jobs read exactly the paths the start task checks (the same templates), so a
    per-run data_dir or *_path moves both."""
    from etl_platform.operators import SparkJobOperator, StartClusterOperator

    for dag_id, dag in dagbag.dags.items():
        starts = [t for t in dag.tasks if isinstance(t, StartClusterOperator) and t.inputs]
        if not starts:
            continue
        sources = {t.job_kwargs["source"] for t in dag.tasks
                   if isinstance(t, SparkJobOperator) and "source" in (t.job_kwargs or {})}
        assert sources == set(starts[0].inputs.values()), f"{dag_id}: jobs read {sources}, start checks {starts[0].inputs}"


def test_each_pipeline_reads_under_its_own_data_dir(tmp_path):
    """ETL_DATA_DIR_<PIPELINE> moves one pipeline's data root; the others keep ETL_DATA_DIR. Parsed
    in a subprocess (DAG files read the environment once, at import)."""
    code = textwrap.dedent(
        f"""
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(ROOT / "dags")!r})
        assert not bag.import_errors, bag.import_errors
        print("DIRS=" + repr({{d.dag_id: d.params["data_dir"] for d in bag.dags.values() if "data_dir" in d.params}}))
        """
    )
    env = dict(os.environ, ETL_DATA_DIR=str(tmp_path / "shared"), ETL_DATA_DIR_NZ_TRADE=str(tmp_path / "trade"),
               PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "plugins")]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    (line,) = [ln for ln in out.stdout.splitlines() if ln.startswith("DIRS=")]
    dirs = eval(line[5:])  # noqa: S307 - our own repr
    assert dirs["nz_trade_etl"] == str(tmp_path / "trade")
    assert dirs["olympics_etl"] == dirs["retail_daily"] == str(tmp_path / "shared")


def test_a_run_renders_its_inputs_under_its_data_dir(dagbag):
    """The trigger form's data_dir moves every relative *_path; an absolute *_path is kept."""
    dag = dagbag.dags["olympics_etl"]
    env = dag.get_template_env()  # the DAG's macros (data_path) included
    start = dag.get_task("start_cluster")
    params = {**{k: dag.params[k] for k in dag.params}, "data_dir": "/elsewhere", "venues_path": "/abs/venues.csv"}
    rendered = {k: env.from_string(v).render(params=params) for k, v in start.inputs.items()}
    assert rendered == {"athletes_path": "/elsewhere/olympics/athlete_events_head.csv",
                        "regions_path": "/elsewhere/olympics/noc_regions.csv", "venues_path": "/abs/venues.csv"}


def test_dags_parse_when_inputs_are_missing(tmp_path):
    """No data at all: every DAG still parses (a run fails at its start task, naming the missing file)."""
    code = textwrap.dedent(
        f"""
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(ROOT / "dags")!r})
        assert not bag.import_errors, bag.import_errors
        print("PARAMS=" + repr(sorted(str(d.params[k]) for d in bag.dags.values() for k in d.params if k == "data_dir")))
        """
    )
    env = dict(os.environ, ETL_DATA_DIR=str(tmp_path / "empty"),
               PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "plugins")]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    (line,) = [ln for ln in out.stdout.splitlines() if ln.startswith("PARAMS=")]
    defaults = eval(line[7:])  # noqa: S307 - our own repr
    assert defaults and all(d.startswith(str(tmp_path / "empty")) for d in defaults), defaults


def test_parsing_imports_no_heavy_module():
    code = textwrap.dedent(
        f"""
        import sys
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(ROOT / "dags")!r})
        assert not bag.import_errors, bag.import_errors
        print("HEAVY=" + ",".join(m for m in {HEAVY!r} if m in sys.modules))
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "plugins")]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    (line,) = [ln for ln in out.stdout.splitlines() if ln.startswith("HEAVY=")]
    assert line == "HEAVY=", f"parsing dags/ imported heavy modules: {line[6:]}"


def test_bad_default_backend_is_a_clear_import_error(monkeypatch):
    monkeypatch.setenv("ETL_DEFAULT_BACKEND", "flink")
    bag = DagBag(dag_folder=str(ROOT / "dags" / "olympics_etl.py"))
    (err,) = bag.import_errors.values()
    assert "ETL_DEFAULT_BACKEND='flink' is not a known backend" in err
