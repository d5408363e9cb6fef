"""Cluster hooks, one class per way of running a job, and the choice among them (:func:`get_cluster_hook`).

* :class:`~etl_platform.hooks.dask_cluster.DaskClusterHook`: a Dask scheduler (connection ``dask_default``,
  the runtime's engine, or a one-off run's in-process cluster);
* :class:`~etl_platform.hooks.gateway.DaskGatewayHook`: a run's own Dask cluster from dask-gateway;
* :class:`~etl_platform.hooks.spark.SparkClusterHook`: a Spark Connect server (connection
  ``spark_connect_default``, the runtime's engine, or a one-off run's own server);
* :class:`~etl_platform.hooks.spark_submit.SparkSubmitClusterHook`: a Spark standalone master
  (the provider's ``spark_default``), one ``spark-submit`` per job.

All share :class:`~etl_platform.hooks.base.ClusterHook`; none imports another but the base.
"""

from __future__ import annotations

from etl_platform.hooks.base import ClusterHook
from include.etl.settings import Settings, check_backend

__all__ = ["ClusterHook", "get_cluster_hook"]


def get_cluster_hook(backend: str, conn_id: str | None = None, settings: Settings | None = None) -> ClusterHook:
    """The hook for ``backend`` ("dask" or "spark") and, when given, the connection a handle names."""
    backend = check_backend(backend)
    if backend == "dask":
        from etl_platform.hooks.dask_cluster import DaskClusterHook
        from etl_platform.hooks.gateway import gateway_hook_for

        return gateway_hook_for(conn_id, settings) or DaskClusterHook(conn_id, settings)
    from etl_platform.hooks.spark import SparkClusterHook
    from etl_platform.hooks.spark_submit import SUBMIT_CONN_ID, SparkSubmitClusterHook, submit_connection

    if conn_id == SUBMIT_CONN_ID:
        return SparkSubmitClusterHook(conn_id, settings)
    hook = SparkClusterHook(conn_id, settings)
    if conn_id is None and hook.configured_address() is None and submit_connection() is not None:
        return SparkSubmitClusterHook(None, settings)  # no Spark Connect server configured, a master is
    return hook
