"""Setup and teardown operators for a run's cluster."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator

from etl_platform.hooks import ClusterHook, get_cluster_hook
from etl_platform.hooks.base import safe_path_part
from etl_platform.operators.links import ClusterDashboardLink
from include.etl.clusters import ClusterHandle


def cluster_workdir(context: Any, backend: str) -> Path:
    """Where a one-off run's own engine keeps its logs: under Airflow's logs, one directory per run."""
    home = Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow"))
    ti = context["ti"]
    return home / "logs" / "clusters" / safe_path_part(ti.dag_id) / safe_path_part(ti.run_id) / backend


def one_off_run(context: Any) -> bool:
    """Is this run a one-off (``airflow dags test``, ``dag.test()``): all its tasks in this one process?

    Such a run gets an engine of its own, in this process, which ends with it.
    """
    dag_run = context.get("dag_run") if hasattr(context, "get") else None
    if getattr(dag_run, "triggering_user_name", None) == "dag_test":  # what dag.test() records
        return True
    return sys.argv[1:3] == ["dags", "test"]


def missing_inputs(inputs: dict[str, Any]) -> list[tuple[str, str]]:
    """The ``(name, path)`` of every local input in ``inputs`` that does not exist (URLs are skipped)."""
    if not isinstance(inputs, dict):
        raise TypeError(f"inputs must be a mapping of name to path, got {inputs!r}")
    missing = []
    for name, path in inputs.items():
        text = str(path or "").strip()
        if "://" in text:
            continue
        if not text or not Path(text).expanduser().exists():
            missing.append((name, text or "(empty)"))
    return missing


class StartClusterOperator(BaseOperator):
    """Attach the run to its cluster and return the cluster's handle.

    :param backend: ``dask`` or ``spark`` (templated; usually ``{{ params.backend }}``).
    :param conn_id: connection naming an existing cluster; defaults to the backend hook's
        ``default_conn_name`` (``dask_default``, ``spark_connect_default``, or a ``dask_gateway``
        connection, through which the run gets a cluster of its own from the gateway). Undefined
        connection: the runtime's engine (``make run``), or for a one-off run (``airflow dags
        test``) an engine of its own in its process, bound to ``ETL_BIND_HOST``.
    :param inputs: the run's input files, by name (templated, e.g. ``{"trade_path":
        "{{ params.trade_path }}"}``). Each local path must exist before any cluster is started;
        a missing one fails the task at once, without retries, naming the file and
        ``ETL_DATA_DIR`` (where the pipelines' default inputs are resolved). URLs
        (``s3://...``) are not checked here.

    The XCom return value is a small :class:`~include.etl.clusters.ClusterHandle` dict.
    Wire the matching :class:`StopClusterOperator` as this task's teardown.
    """

    template_fields: Sequence[str] = ("backend", "conn_id", "inputs")
    template_fields_renderers = {"inputs": "json"}
    operator_extra_links = (ClusterDashboardLink(),)
    ui_color = "#d8f3dc"

    def __init__(self, *, backend: str, conn_id: str | None = None, inputs: dict[str, str] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.backend = backend
        self.conn_id = conn_id
        self.inputs = inputs or {}
        self._hook: ClusterHook | None = None

    def execute(self, context: Any) -> dict[str, Any]:
        self.check_inputs()
        self.check_lake()
        self._hook = get_cluster_hook(self.backend, self.conn_id or None)
        in_process = one_off_run(context)
        if in_process:
            self.log.info("A one-off run (airflow dags test): its engine starts for it alone, in this process, and "
                          "ends with it")
        handle = self._hook.start_or_attach(cluster_workdir(context, self._hook.backend), in_process=in_process)
        ClusterDashboardLink.persist(context, handle.dashboard_url)
        return handle.to_dict()

    def check_lake(self) -> None:
        """Fail at once (no retries, no cluster started) when the lake cannot be reached and written:
        a malformed ETL_LAKE_URI, an unreachable endpoint, a missing bucket or refused keys."""
        from airflow.sdk.exceptions import AirflowFailException

        from include.etl.lake.location import LakeConfigError, LakeLocation, check_lake
        from include.etl.settings import ConfigError, Settings

        try:
            settings = Settings.from_env()
            check_lake(LakeLocation.resolve(settings.lake_uri, settings.lake_conn_id))
        except (LakeConfigError, ConfigError) as exc:
            raise AirflowFailException(f"{exc}. No cluster was started; retries cannot help.") from exc

    def check_inputs(self) -> None:
        """Fail at once (no retries, no cluster started) when a local input file is missing."""
        from airflow.sdk.exceptions import AirflowFailException

        from include.etl.settings import Settings

        missing = missing_inputs(self.inputs)
        if missing:
            data_dir = Settings.from_env().data_dir
            listed = "; ".join(f"{name}={path}" for name, path in missing)
            raise AirflowFailException(
                f"input file(s) do not exist: {listed}. Relative inputs are resolved under the run's data_dir "
                f"(default: ETL_DATA_DIR_<PIPELINE> if set, else ETL_DATA_DIR={data_dir}): set it to the folder "
                "holding the data sets, or give the paths in the trigger form. "
                "No cluster was started; retries cannot help."
            )
        if self.inputs:
            self.log.info("Inputs present: %s", ", ".join(f"{k}={v}" for k, v in self.inputs.items()))

    def on_kill(self) -> None:
        # A start killed half-way cleans up inside start_or_attach (it stops what it spawned).
        if self._hook is not None:
            self._hook.close()


class StopClusterOperator(BaseOperator):
    """Stop what the start task started; leave attached clusters running. Safe to run twice.

    :param cluster: the start task's handle (pass ``start_task.output``).
    """

    template_fields: Sequence[str] = ("cluster",)
    ui_color = "#ffe5d9"

    def __init__(self, *, cluster: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cluster = cluster

    def execute(self, context: Any) -> dict[str, Any]:
        if not self.cluster:
            self.log.info("No cluster handle from the start task: nothing was started, nothing to stop")
            return {"stopped": False}
        handle = ClusterHandle.from_dict(self.cluster)
        hook = get_cluster_hook(handle.backend, handle.conn_id)
        killed = hook.stop(handle)
        return {"stopped": handle.owned, "address": handle.address, "killed": killed}
