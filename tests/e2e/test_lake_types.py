"""One set of Arrow types for every published table, the same on both engines.

Every DAG in ``dags/`` that runs jobs is replayed on small samples of its default inputs, on the
shared real Dask cluster and Spark Connect server (``real_engines``), each engine into a lake of
its own: its job tasks run in order, in this process, with their templates rendered as Airflow
would (params, the DAG's macros, earlier tasks' results). Daily partitioned DAGs run every day of
one month (days without a sampled landing file take their empty-day branch), DAGs scheduled on
assets run after them for that month. Nothing here names a pipeline: a new pipeline's DAG is
replayed too, and a pipeline package that lands no table fails the test.

Then every table of each lake (rejects included) must have the same schema on both engines, and
only the lake's types (``include.etl.lake.is_lake_type``, docs/lake.md "Types").
"""

from __future__ import annotations

import calendar
import copy
import csv
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("shared_data")]

MONTH = "2011-03"  # the month replayed (the retail data set has landing files for it)
SAMPLE_DAYS = ("2011-03-01",)  # landing files sampled; the month's other days have none
SAMPLE_RECORDS = 300
WHOLE_FILE_BYTES = 64 * 1024  # reference files this small are taken whole (keys, lookups)


def sample(src: Path, dest: Path) -> None:
    """The header and the first records of ``src``, cut at a record boundary (quoted line breaks kept)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.stat().st_size <= WHOLE_FILE_BYTES:
        dest.write_bytes(src.read_bytes())
        return
    with src.open("rb") as f:
        lines = []
        reader = csv.reader(line.decode("latin-1") for line in _collect(f, lines))
        for _ in zip(range(SAMPLE_RECORDS + 1), reader, strict=False):
            pass
        dest.write_bytes(b"".join(lines[: reader.line_num]))


def _collect(f, lines: list[bytes]):
    for line in f:
        lines.append(line)
        yield line


def sampled_params(dag, out: Path) -> dict[str, Any]:
    """The DAG's defaults with its data root moved to ``out``, holding samples of its inputs."""
    params = {k: dag.params[k] for k in dag.params}
    if "data_dir" not in params:
        return params
    source = Path(params["data_dir"])
    for name, value in params.items():
        if name == "data_dir" or not isinstance(value, str) or not value or Path(value).is_absolute():
            continue
        if (source / value).is_file():
            sample(source / value, out / value)
        elif (source / value).is_dir():
            (out / value).mkdir(parents=True, exist_ok=True)
            for day in SAMPLE_DAYS:
                for file in (source / value).glob(f"{day}*"):
                    sample(file, out / value / file.name)
    return {**params, "data_dir": str(out)}


class _TI:
    """``ti.xcom_pull`` over the results of the tasks run so far."""

    def __init__(self, results: dict[str, Any]):
        self.results = results

    def xcom_pull(self, task_ids: str, key: str = "return_value") -> Any:
        return self.results.get((task_ids, key), self.results.get((task_ids, "return_value")))


def render(env, value: Any, context: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return env.from_string(value).render(**context)
    if isinstance(value, dict):
        return {k: render(env, v, context) for k, v in value.items()}
    return value


def replay(dag, engine: Any, lake: Path, params: dict[str, Any], day: str, key: str | None) -> None:
    """Run the DAG's job tasks for one run, in order, on ``engine`` (sensors decide from the files)."""
    from etl_platform.operators import SparkJobOperator
    from etl_platform.operators.partitioned import LocalJobOperator
    from etl_platform.sensors import LandingFileSensor
    from include.etl.jobs import get_job

    env, results, skipped = dag.get_template_env(), {}, set()
    context = {"params": params, "ds": day, "partition_key": key, "ti": _TI(results),
               "logical_date": dt.datetime.fromisoformat(day)}
    for task in dag.topological_sort():
        if task.task_id in skipped:
            skipped |= task.get_flat_relative_ids(upstream=False)
            continue
        if isinstance(task, LandingFileSensor):
            sensor = copy.copy(task)
            for name in task.template_fields:
                setattr(sensor, name, render(env, getattr(task, name), context))
            _, path, deadline = sensor._target({"partition_key": key, "logical_date": context["logical_date"]})
            present = Path(path).is_file()
            results[(task.task_id, task.xcom_key)] = {"path": path, "present": present, "deadline": deadline.isoformat(),
                                                      "decided": "replayed by the test"}
            skipped.add(task.if_absent if present else task.if_present)
        elif isinstance(task, (SparkJobOperator, LocalJobOperator)):
            job = get_job(task.job)
            run_day = render(env, getattr(task, "ds", None), context) or day
            ctx = job.context(engine=engine if isinstance(task, SparkJobOperator) else None, lake_root=lake,
                              ds=run_day, max_reject_ratio=0.5)
            results[(task.task_id, "return_value")] = job(ctx, **render(env, task.job_kwargs or {}, context))


def month_days() -> list[str]:
    year, month = map(int, MONTH.split("-"))
    return [dt.date(year, month, d).isoformat() for d in range(1, calendar.monthrange(year, month)[1] + 1)]


def replay_all(engine: Any, lake: Path, samples: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import CronPartitionTimetable, PartitionedAssetTimetable

    from etl_platform.operators import SparkJobOperator

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not bag.import_errors, bag.import_errors
    dags = [d for d in bag.dags.values() if any(isinstance(t, SparkJobOperator) for t in d.tasks)]
    on_assets = [d for d in dags if isinstance(d.timetable, PartitionedAssetTimetable)]
    for dag in [d for d in dags if d not in on_assets]:
        params = sampled_params(dag, samples / dag.dag_id)
        partitioned = isinstance(dag.timetable, CronPartitionTimetable)
        for day in month_days() if partitioned else [SAMPLE_DAYS[0]]:
            replay(dag, engine, lake, params, day, day if partitioned else None)
    for dag in on_assets:
        replay(dag, engine, lake, sampled_params(dag, samples / dag.dag_id), f"{MONTH}-01", MONTH)


@pytest.fixture(scope="module")
def lakes(real_engines, tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("lake-types")
    out = {}
    for backend, engine in real_engines.items():
        out[backend] = base / backend / "lake"
        replay_all(engine, out[backend], base / backend / "samples")
    return out


def schemas(lake: Path) -> dict[str, Any]:
    from include.etl.lake import Lake, list_tables

    return {f"{p}.{t}": Lake(lake, p).schema(t) for p, t in list_tables(lake)}


def test_every_table_has_one_schema_on_both_engines_from_the_lake_types(lakes):
    from include.etl.lake import TYPES, is_lake_type

    found = {backend: schemas(lake) for backend, lake in lakes.items()}
    dask, spark = found["dask"], found["spark"]
    packages = {p.name for p in (ROOT / "include" / "pipelines").iterdir() if (p / "__init__.py").is_file()}
    problems = [f"pipeline {p!r} landed no table: no DAG in dags/ replayed it"
                for p in sorted(packages - {name.split(".")[0] for name in dask})]
    problems += [f"{t}: only on {'Dask' if t in dask else 'Spark'}" for t in sorted(set(dask) ^ set(spark))]
    problems += [f"{t}: Dask {dask[t]} but Spark {spark[t]}".replace("\n", ", ")
                 for t in sorted(set(dask) & set(spark)) if not dask[t].equals(spark[t])]
    problems += [f"{backend} {t}.{f.name}: {f.type} is not a lake type ({sorted(TYPES)}, decimal128, lists, structs)"
                 for backend, tables in found.items() for t, schema in sorted(tables.items()) for f in schema
                 if not is_lake_type(f.type)]
    assert not problems, "\n".join(problems)
