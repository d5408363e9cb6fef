"""The ETL platform's job logic: plain functions, no Airflow imports.

Everything here can be called from a test, a notebook or an Airflow task alike.
"""
