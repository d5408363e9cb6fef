"""docs/pipelines.md, followed as written, for a new pipeline whose files live outside ETL_DATA_DIR.

In a scratch copy of the project (its code, not its lake or Airflow home; the same venv), the
test writes the files of steps 2 to 6 from the guide's own code blocks, with ``<name>`` replaced
by ``shop``, generates ``shop/orders.csv`` in a temporary folder named by ``ETL_DATA_DIR_SHOP``
(step 1, "Files somewhere else"), and runs step 8's commands from the copy's root. A snippet
that no longer works as written fails here.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.e2e.airflow_env import project_env

pytestmark = pytest.mark.slow

NAME, DS = "shop", "2024-07-07"
KEEP = {"bin", "dags", "include", "plugins", "pyproject.toml", "requirements.txt"}  # the project's code
GUIDE = ROOT / "docs" / "pipelines.md"
# The python blocks of each step, in the guide's order, and where each goes.
FILES = {"2.": ["include/pipelines/shop/datasets.py", "include/pipelines/shop/__init__.py"],
         "3.": ["include/pipelines/shop/transforms.py"], "4.": ["include/pipelines/shop/quality.py"],
         "5.": ["include/pipelines/shop/jobs.py"], "6.": ["dags/shop_etl.py"]}


def steps(text: str) -> dict[str, str]:
    """The guide's sections before the worked example, by number (``"2."``) or title (``"Testing a pipeline"``)."""
    body = text.split("## Worked example", 1)[0]
    return {m.group(1) or m.group(2): m.group(3)
            for m in re.finditer(r"^## (?:(\d+\.) [^\n]*|([^\n]+))\n(.*?)(?=^## |\Z)", body, re.M | re.S)}


def blocks(section: str, lang: str) -> list[str]:
    return [b.replace("<name>", NAME).replace("<Name>", NAME.title())
            for b in re.findall(rf"^```{lang}\n(.*?)^```", section, re.M | re.S)]


def orders(folder: Path) -> dict[dt.date, float]:
    """``folder/shop/orders.csv``: 200 orders over 5 days and one bad row; returns the amount per day."""
    path = folder / NAME / "orders.csv"
    path.parent.mkdir(parents=True)
    rows, totals = ["Id,Date,Status,Amount"], {}
    for i in range(200):
        day, amount = dt.date(2024, 7, 1 + i % 5), round(1.25 * i, 2)
        rows.append(f"{i},{day:%d/%m/%Y},{'open' if i % 3 else 'shipped'},{amount}")
        totals[day] = totals.get(day, 0.0) + amount
    rows.append("200,01/07/2024,lost,5")  # Status not in open/shipped: rejected, within the 1 % limit
    path.write_text("\n".join(rows) + "\n")
    return totals


@pytest.fixture
def project(tmp_path) -> Path:
    """A scratch copy of the project's code, with the guide's files written into it."""
    copy = tmp_path / "project"
    shutil.copytree(ROOT, copy, symlinks=True, ignore=lambda folder, names: [
        n for n in names if n == "__pycache__" or (Path(folder) == ROOT and n not in KEEP)])
    (copy / ".venv").symlink_to(ROOT / ".venv")
    found = steps(GUIDE.read_text())
    for step, files in FILES.items():
        code = blocks(found[step], "python")
        assert len(code) >= len(files), f"step {step} of {GUIDE.name} has {len(code)} python blocks, expected {len(files)}"
        for rel, text in zip(files, code, strict=False):
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            (copy / rel).write_text(text)
    return copy


def test_the_guide_builds_and_runs_a_pipeline_with_its_files_elsewhere(project, airflow_home, tmp_path):
    totals = orders(tmp_path / "drops")  # nothing under ETL_DATA_DIR (left at its default)
    env = project_env(airflow_home, ETL_DATA_DIR_SHOP=str(tmp_path / "drops"), ETL_LAKE_ROOT=str(project / "lake"))
    (commands,) = blocks(steps(GUIDE.read_text())["8."], "bash")[:1]
    outputs = []
    for line in [ln for ln in commands.splitlines() if ln.strip()]:
        out = subprocess.run(["bash", "-c", line], cwd=project, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, f"step 8 `{line}` failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        outputs.append(out.stdout)
    tables = outputs[1]
    for table in ("shop.orders", "shop.daily_totals", "shop._rejects_orders"):
        assert table in tables, f"{table} not listed by step 8: {tables}"
    assert "amount: double" in outputs[2]  # the pyarrow Table step 8 prints

    from include.etl.lake import Lake

    lake = Lake(project / "lake", NAME)
    got = {r["Date"]: r["amount"] for r in lake.read_arrow("daily_totals", DS).to_pylist()}
    assert got.keys() == totals.keys()
    assert all(abs(got[d] - totals[d]) < 1e-6 for d in totals), (got, totals)
    assert lake.row_count("orders", DS) == 200
    (reject,) = lake.read_arrow("_rejects/orders", DS).to_pylist()
    assert reject["_line"] == 202 and reject["_reason"] == "Status not in open/shipped"


def test_the_guides_contract_test_passes_on_the_new_pipeline(project, tmp_path):
    """"Testing a pipeline": the contract test of the guide, run on the guide's pipeline."""
    code = blocks(steps(GUIDE.read_text())["Testing a pipeline"], "python")[0]
    (project / "test_contract.py").write_text(code)
    run = f"import pathlib, test_contract; test_contract.test_orders_contract(pathlib.Path({str(tmp_path)!r}))"
    out = subprocess.run([str(project / ".venv" / "bin" / "python"), "-c", run], cwd=project, capture_output=True,
                         text=True, timeout=120, env=project_env(tmp_path, PYTHONPATH=str(project)))
    assert out.returncode == 0, out.stderr[-3000:]
