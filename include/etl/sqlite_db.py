"""Connection arguments for Airflow's SQLite metadata DB (the embedded default).

Python's ``sqlite3`` waits 5 s for a lock by default. The scheduler, the api-server, the
dag-processor, the triggerer and every task process write to the one file; a large write
(``POST /api/v2/backfills`` for a year creates 365 runs in one transaction) on a loaded
2-core machine held the lock longer than that, and the scheduler died of
``sqlite3.OperationalError: database is locked``. ``bin/env.sh`` points
``AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS`` here whenever the metadata DB is SQLite, so
every Airflow process waits up to a minute instead. Nothing of this applies to PostgreSQL.
"""

CONNECT_ARGS = {"timeout": 60.0}
