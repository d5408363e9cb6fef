from __future__ import annotations

from etl_platform.operators.cluster import StartClusterOperator, StopClusterOperator
from etl_platform.operators.job import SparkJobOperator

__all__ = ["SparkJobOperator", "StartClusterOperator", "StopClusterOperator"]
