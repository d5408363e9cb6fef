from __future__ import annotations

from etl_platform.hooks.cluster import ClusterHook, DaskClusterHook, get_cluster_hook

__all__ = ["ClusterHook", "DaskClusterHook", "get_cluster_hook"]
