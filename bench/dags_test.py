"""A one-off run's cost: `bin/airflow dags test olympics_etl` against a do-nothing DAG of the same shape.

    .venv/bin/python bench/dags_test.py [--backends dask,spark] [--repeat 1]

Issue 22's target: on the default inputs, `dags test olympics_etl` within 1.5x (Dask) and 2.5x
(Spark) of Airflow's own `dags test` of a DAG of the same seven tasks doing nothing (setup,
three ingests, enrich, aggregate, teardown). Both run on one migrated AIRFLOW_HOME (a copy per
run, so no run pays the migration), one after the other, in this run; prints the wall times, the
ratios and the machine's load.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOOP_DAG = '''
"""Seven tasks doing nothing, the shape of olympics_etl (bench/dags_test.py)."""
import pendulum
from airflow.sdk import DAG, setup, task, teardown

with DAG("noop_seven", schedule=None, start_date=pendulum.datetime(2024, 7, 1, tz="UTC")):
    @setup
    def start_cluster():
        return {}

    @task
    def step(name):
        return name

    @teardown
    def stop_cluster():
        return None

    start = start_cluster()
    ingests = [step.override(task_id=f"ingest_{n}")(n) for n in ("athletes", "regions", "venues")]
    enrich = step.override(task_id="enrich")("enrich")
    aggregate = step.override(task_id="aggregate")("aggregate")
    start >> ingests >> enrich >> aggregate >> stop_cluster().as_teardown(setups=start)
'''


def dags_test(template: Path, dags: Path, dag_id: str, conf: str, extra: dict[str, str] | None = None) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-dags-test-") as tmp:
        home = Path(tmp) / "airflow"
        shutil.copytree(template, home, ignore=shutil.ignore_patterns("airflow.cfg", "logs"))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ETL_"))}
        env.update(AIRFLOW_HOME=str(home), ETL_LAKE_ROOT=str(home / "lake"), AIRFLOW__CORE__DAGS_FOLDER=str(dags),
                   **(extra or {}))
        t0 = time.perf_counter()
        out = subprocess.run([str(ROOT / "bin" / "airflow"), "dags", "test", dag_id, "2024-07-07", "-c", conf],
                             env=env, capture_output=True, text=True, cwd=ROOT)
        elapsed = time.perf_counter() - t0
        if out.returncode != 0 or "state=success" not in out.stdout + out.stderr:
            raise SystemExit(f"dags test {dag_id} failed:\n{(out.stdout + out.stderr)[-3000:]}")
        return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="dask,spark")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the olympics_etl runs (e.g. ETL_SPARK_JAVA_OPTIONS=...), repeatable")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.env)
    with tempfile.TemporaryDirectory(prefix="bench-dags-") as tmp:
        base = Path(tmp)
        dags = base / "dags"
        dags.mkdir()
        (dags / "noop_seven.py").write_text(NOOP_DAG)
        (dags / "olympics_etl.py").symlink_to(ROOT / "dags" / "olympics_etl.py")
        template = base / "template"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ETL_"))}
        subprocess.run([str(ROOT / "bin" / "airflow"), "version"], env={**env, "AIRFLOW_HOME": str(template)},
                       check=True, capture_output=True, cwd=ROOT)
        print(f"load before: {os.getloadavg()[0]:.2f}")
        for _ in range(args.repeat):
            noop = dags_test(template, dags, "noop_seven", "{}")
            print(f"dags test noop_seven (7 tasks doing nothing): {noop:.1f} s")
            for backend in args.backends.split(","):
                real = dags_test(template, dags, "olympics_etl", f'{{"backend": "{backend}"}}', extra)
                print(f"dags test olympics_etl on {backend}: {real:.1f} s = {real / noop:.2f}x the do-nothing DAG "
                      f"(load {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
