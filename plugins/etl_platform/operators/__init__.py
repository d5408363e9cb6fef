from __future__ import annotations

from etl_platform.operators.cluster import StartClusterOperator, StopClusterOperator
from etl_platform.operators.job import SparkJobOperator
from etl_platform.operators.lake import LakePublishOperator

__all__ = ["LakePublishOperator", "SparkJobOperator", "StartClusterOperator", "StopClusterOperator"]
