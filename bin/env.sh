# Sourced by bin/airflow and the Makefile: the project's Airflow environment.
# Every value can be overridden from the calling environment or from ./.env.
ROOT="${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
if [ -f "$ROOT/.env" ]; then set -a; . "$ROOT/.env"; set +a; fi

export AIRFLOW_HOME="${AIRFLOW_HOME:-$ROOT/.airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="${AIRFLOW__CORE__DAGS_FOLDER:-$ROOT/dags}"
export AIRFLOW__CORE__PLUGINS_FOLDER="${AIRFLOW__CORE__PLUGINS_FOLDER:-$ROOT/plugins}"
export AIRFLOW__CORE__LOAD_EXAMPLES="${AIRFLOW__CORE__LOAD_EXAMPLES:-False}"
export AIRFLOW__CORE__EXECUTOR="${AIRFLOW__CORE__EXECUTOR:-LocalExecutor}"
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="${AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION:-True}"
export AIRFLOW__API__HOST="${AIRFLOW__API__HOST:-127.0.0.1}"
export AIRFLOW__API__PORT="${AIRFLOW__API__PORT:-8080}"
export AIRFLOW__API__BASE_URL="${AIRFLOW__API__BASE_URL:-http://127.0.0.1:$AIRFLOW__API__PORT}"
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="${AIRFLOW__CORE__EXECUTION_API_SERVER_URL:-http://127.0.0.1:$AIRFLOW__API__PORT/execution/}"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:-admin:admin}"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-$AIRFLOW_HOME/simple_auth_manager_passwords.json}"
export PATH="$ROOT/.venv/bin:$PATH"  # airflow standalone starts its components as `airflow ...`
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# Quiet logs: libraries' own deprecation notices that say nothing about the user's data or
# settings (Airflow's optional graphviz, pathspec's renamed pattern, starlette's httpx test
# client, narwhals' coming narwhals-dask split). Anything else still shows.
ETL_QUIET_WARNINGS="ignore:Could not import graphviz:UserWarning,ignore:GitWildMatchPattern:DeprecationWarning,ignore:Using \`httpx\` with \`starlette.testclient\` is deprecated:Warning,ignore:Dask support is moving out of Narwhals:FutureWarning"
export PYTHONWARNINGS="${PYTHONWARNINGS:+$PYTHONWARNINGS,}$ETL_QUIET_WARNINGS"
# distributed logs a traceback (at info, "Batched Comm Closed ... CommClosedError") for each
# connection a normal cluster stop closes: quiet that one logger (distributed's other defaults stay).
ETL_DASK_LOGGING="{'distributed.batched': 'warning'}"
export DASK_LOGGING="${DASK_LOGGING:-$ETL_DASK_LOGGING}"
export ETL_LAKE_ROOT="${ETL_LAKE_ROOT:-$ROOT/lake}"
# On SQLite (the embedded default) every Airflow process waits up to 60 s for the DB's lock,
# not sqlite3's 5 s: a year's backfill created under load crashed the scheduler otherwise.
case "${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-sqlite}" in
  sqlite*) export AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS="${AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS:-include.etl.sqlite_db.CONNECT_ARGS}" ;;
esac

# Defaults of the embedded runtime (`make run` / bin/run only, see docs/runtime.md): sized for a
# small machine. Not applied to plain bin/airflow commands (tests start their own components
# with Airflow's defaults). Each can be overridden from the environment or ./.env.
embedded_runtime_defaults() {
  local cores
  cores="$(nproc 2>/dev/null || echo 2)"
  # LocalExecutor forks `parallelism` workers at start (fork start method) and runs at most
  # that many tasks at once; a task here mostly waits on its cluster, so 2 per core, at least 4.
  export AIRFLOW__CORE__PARALLELISM="${AIRFLOW__CORE__PARALLELISM:-$(( cores * 2 > 4 ? cores * 2 : 4 ))}"
  # The scheduler sleeps this long only when a loop found nothing to do (default 1 s).
  export AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME="${AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME:-0.5}"
  # New DAG files in dags/ are found within 30 s instead of 5 min (existing files are
  # re-parsed every [dag_processor] min_file_process_interval = 30 s either way).
  export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="${AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL:-30}"
  # After a crash or a kill, the tasks the old scheduler held (queued, running) are reset by the
  # next one at its first orphan check after the old one's heartbeat is 30 s old
  # (scheduler_health_check_threshold): Airflow checks every 300 s, so a quick restart of
  # `make run` left them stuck for up to 5 min; here every 15 s.
  export AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL="${AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL:-15}"
  # One api-server worker (Airflow's default, pinned): the UI of one user.
  export AIRFLOW__API__WORKERS="${AIRFLOW__API__WORKERS:-1}"
  # Should anyone enable the scheduler's health-check server, it binds to loopback, not 0.0.0.0.
  export AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST="${AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST:-127.0.0.1}"
  # The runtime owns one engine per backend (bin/supervise.py); runs attach through the files
  # it writes there. `dags test` never uses them: a one-off run's engine lives in its process.
  export ETL_RUNTIME_DIR="${ETL_RUNTIME_DIR:-$AIRFLOW_HOME/runtime}"
}
