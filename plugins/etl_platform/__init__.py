"""Airflow adapters of the ETL platform: hooks own the clusters, operators are thin wrappers.

Airflow puts ``plugins/`` on ``sys.path``, so DAGs import ``etl_platform.operators``. Nothing
in this package imports pandas, Dask or PySpark at module level: DAG parsing stays fast.
"""
