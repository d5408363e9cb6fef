"""The clusters of running and recent runs, with their dashboards (Dask dashboard, Spark UI).

**Where it is read from: Airflow's metadata DB**, by the api-server that serves the lake browser.
Every run's ``StartClusterOperator`` task returns the run's cluster handle as its XCom
(``include.etl.clusters.ClusterHandle``: backend, address, ``dashboard_url``, whether the platform
started it, ``extra.runtime`` for the runtime's engine, pids and work directory of a local
cluster). That one record exists for every kind of cluster (a one-off run's own, a gateway's,
the runtime's engine, one attached through a connection, spark-submit), on every deployment (also
where the workers are other machines, as under the CeleryExecutor of the production stack), and
says which run uses it. The runtime's engine files (``$ETL_RUNTIME_DIR/<backend>.json``) are read
for what the DB cannot know: whether the runtime's engine still runs, and where.

**Status** of a run's cluster:

* a cluster the run started (``own``): ``running`` while its core processes run (checked on
  this host: pid, the backend's command-line marker and the ``ETL_CLUSTER_WORKDIR`` it inherited,
  so a reused pid does not count), else ``stopped``. On a host where its work directory does not
  exist (workers elsewhere), from Airflow's states: ``stopped`` once its teardown succeeded,
  ``running`` while the run runs, else ``unknown``;
* the runtime's engine (``runtime``): the one its owner records as running now (runs follow a
  replaced engine, so that is the one to look at), else ``stopped``;
* an attached cluster or a spark-submit master (``attached``): ``attached``: it is not the
  platform's to start or stop; its dashboard is the connection's ``dashboard_url``, if any;
* no handle yet: ``starting`` while the start task may still succeed, else ``not started``.

A dashboard is linked only for ``running`` and ``attached`` clusters (and ``unknown``): a stopped
cluster's address is dead. Reading costs two small queries and, per local cluster, a few pids
looked up with psutil; nothing is cached.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

START_OPERATOR = "StartClusterOperator"  # TaskInstance.operator of a run's cluster setup
STOP_OPERATOR = "StopClusterOperator"
RETURN_KEY = "return_value"
ACTIVE_RUN_STATES = ("queued", "running")
# A start task in one of these states may still produce a handle.
PENDING_TI_STATES = (None, "none", "scheduled", "queued", "running", "up_for_retry", "up_for_reschedule",
                     "deferred", "restarting")
MARKERS = {"dask": "dask", "spark": "SparkConnectServer"}  # as the hooks' markers
CORE_PROCESSES = {"dask": 0, "spark": 1}  # leading pids the cluster cannot work without (0: all)
DASHBOARD_NAMES = {"dask": "Dask dashboard", "spark": "Spark UI"}
DEFAULT_LIMIT = 25


@dataclass
class RunRecord:
    """What Airflow recorded of one run's cluster setup task (the raw input of :func:`describe`)."""

    dag_id: str
    run_id: str
    run_state: str | None
    run_start: dt.datetime | None
    task_id: str
    map_index: int = -1
    start_state: str | None = None
    handle: dict | None = None  # the start task's XCom: a ClusterHandle as a dict
    teardown_states: list[str | None] = field(default_factory=list)


@dataclass
class RunCluster:
    """One row of the clusters page."""

    dag_id: str
    run_id: str
    run_state: str | None
    run_start: str | None  # ISO 8601, UTC
    task_id: str
    backend: str | None
    address: str | None
    mode: str  # own | runtime | attached | "" (no handle)
    status: str  # running | starting | stopped | not started | attached | unknown
    dashboard_url: str | None  # linked only when the cluster can be reached
    dashboard_name: str
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def live(self) -> bool:
        return self.status in ("running", "attached", "unknown") and bool(self.dashboard_url)


# -- reading Airflow's DB ------------------------------------------------------------------------


def _decode(value: Any) -> dict | None:
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, dict) and "backend" in value and "address" in value else None


def airflow_runs(*, limit: int = DEFAULT_LIMIT, dag_id: str | None = None, run_id: str | None = None) -> list[RunRecord]:
    """The cluster setup tasks of the newest runs (active runs first) from Airflow's metadata DB."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance as TI
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import and_, case, select

    query = (
        select(TI.dag_id, TI.run_id, TI.task_id, TI.map_index, TI.state, DagRun.id, DagRun.state, DagRun.start_date,
               XComModel.value)
        .join(DagRun, and_(DagRun.dag_id == TI.dag_id, DagRun.run_id == TI.run_id))
        .outerjoin(XComModel, and_(XComModel.dag_run_id == DagRun.id, XComModel.task_id == TI.task_id,
                                   XComModel.map_index == TI.map_index, XComModel.key == RETURN_KEY))
        .where(TI.operator == START_OPERATOR)
        .order_by(case((DagRun.state.in_(ACTIVE_RUN_STATES), 0), else_=1), DagRun.id.desc(), TI.task_id)
        .limit(limit)
    )
    if dag_id is not None:
        query = query.where(TI.dag_id == dag_id)
    if run_id is not None:
        query = query.where(TI.run_id == run_id)
    with create_session() as session:
        rows = session.execute(query).all()
        teardowns: dict[int, list[str | None]] = {}
        if rows:
            stops = session.execute(
                select(DagRun.id, TI.state)
                .join(DagRun, and_(DagRun.dag_id == TI.dag_id, DagRun.run_id == TI.run_id))
                .where(TI.operator == STOP_OPERATOR, DagRun.id.in_({r[5] for r in rows}))
            ).all()
            for run_pk, state in stops:
                teardowns.setdefault(run_pk, []).append(_state(state))
    return [
        RunRecord(dag_id=d, run_id=r, run_state=_state(rs), run_start=started, task_id=t, map_index=m,
                  start_state=_state(ts), handle=_decode(value), teardown_states=teardowns.get(pk, []))
        for d, r, t, m, ts, pk, rs, started, value in rows
    ]


def _state(state: Any) -> str | None:
    return None if state is None else str(getattr(state, "value", state))


# -- is a local cluster still there? ---------------------------------------------------------------


def _runs_here(pid: int, marker: str, workdir: str) -> bool:
    """``pid`` runs, is the backend's process (``marker``) and belongs to the cluster of ``workdir``."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if marker and marker not in " ".join(proc.cmdline()):
            return False
        return proc.environ().get("ETL_CLUSTER_WORKDIR") == workdir
    except psutil.Error:
        return False


def local_cluster_runs(handle: dict) -> bool | None:
    """True/False for a cluster started on this host (its work directory is here), None otherwise."""
    workdir, pids = handle.get("workdir"), list(handle.get("pids") or [])
    if not workdir or not pids or not Path(workdir).is_dir():
        return None
    backend = handle.get("backend", "")
    core = CORE_PROCESSES.get(backend, 0)
    return all(_runs_here(p, MARKERS.get(backend, ""), workdir) for p in (pids[:core] if core else pids))


def runtime_engine(backend: str, root: str | None = None) -> dict | None | bool:
    """The handle of the runtime's running engine of ``backend``; None when none runs; False when
    this host has no runtime directory (the engines run elsewhere)."""
    from include.etl.clusters.runtime import current, runtime_dir

    where = Path(root) if root else runtime_dir()
    if where is None or not where.is_dir():
        return False
    engine = current(backend, where)
    return None if engine is None else engine.to_dict()


# -- the rows --------------------------------------------------------------------------------------


def _web_url(url: Any) -> str | None:
    """``url`` if it is an http(s) address (a handle is data: nothing else becomes a link)."""
    return url if isinstance(url, str) and url.lower().startswith(("http://", "https://")) else None


def _runtime(row: RunCluster, handle: dict, engine: Callable[..., dict | None | bool]) -> None:
    current = engine(row.backend or "", (handle.get("extra") or {}).get("runtime"))
    if current is False:  # no runtime directory on this host: the handle is all there is
        row.status, row.dashboard_url = "unknown", _web_url(handle.get("dashboard_url"))
        row.note = "the runtime's engine; its runtime directory is not on this host"
    elif current is None:
        row.status = "stopped"
        row.note = "the runtime's engine is not running (make run stopped)"
    else:  # the runs' job tasks follow a replaced engine: show the one running now
        row.status, row.dashboard_url = "running", _web_url(current.get("dashboard_url"))
        row.note = "the runtime's engine, shared by the runs of this deployment"
        if current.get("address") != handle.get("address"):
            row.address = current.get("address")
            row.note += f"; replaced since this run started (it had {handle.get('address')})"


def _own(row: RunCluster, record: RunRecord, local: Callable[[dict], bool | None]) -> None:
    alive = local(record.handle or {})
    if alive is None:  # started on another host: Airflow's states
        if "success" in record.teardown_states:
            row.status = "stopped"
        else:
            row.status = "running" if record.run_state in ACTIVE_RUN_STATES else "unknown"
        in_process = ((record.handle or {}).get("extra") or {}).get("in_process")
        row.note = "inside a one-off run's process (airflow dags test)" if in_process else "started on another host"
    else:
        row.status = "running" if alive else "stopped"
    if row.status != "stopped":
        row.dashboard_url = _web_url((record.handle or {}).get("dashboard_url"))


def describe(record: RunRecord, engine: Callable[..., dict | None | bool] = runtime_engine,
             local: Callable[[dict], bool | None] = local_cluster_runs) -> RunCluster:
    """The row of one run's cluster: its status and the dashboard to link (see the module's doc)."""
    handle = record.handle
    start = record.run_start.astimezone(dt.UTC).isoformat(timespec="seconds") if record.run_start else None
    row = RunCluster(dag_id=record.dag_id, run_id=record.run_id, run_state=record.run_state, run_start=start,
                     task_id=record.task_id if record.map_index in (-1, None) else f"{record.task_id}[{record.map_index}]",
                     backend=None, address=None, mode="", status="", dashboard_url=None, dashboard_name="dashboard")
    if handle is None:
        if record.run_state in ACTIVE_RUN_STATES and record.start_state in PENDING_TI_STATES:
            row.status, row.note = "starting", f"{record.task_id} is {record.start_state or 'not started yet'}"
        else:
            row.status, row.note = "not started", f"{record.task_id} ended {record.start_state or 'without a handle'}"
        return row
    row.backend, row.address = str(handle.get("backend") or ""), handle.get("address")
    row.dashboard_name = DASHBOARD_NAMES.get(row.backend, "dashboard")
    if (handle.get("extra") or {}).get("runtime"):
        row.mode = "runtime"
        _runtime(row, handle, engine)
    elif handle.get("owned"):
        row.mode = "own"
        _own(row, record, local)
    else:
        row.mode, row.status, row.dashboard_url = "attached", "attached", _web_url(handle.get("dashboard_url"))
        via = handle.get("conn_id")
        row.note = f"not started by the platform (connection {via})" if via else "not started by the platform"
    if row.dashboard_url is None and row.status != "stopped":
        row.note = "; ".join(filter(None, [row.note, "no http(s) dashboard address recorded"]))
    return row


def clusters(records: Iterable[RunRecord], **kwargs: Any) -> list[RunCluster]:
    return [describe(r, **kwargs) for r in records]
