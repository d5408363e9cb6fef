"""The platform (plugins/etl_platform/, include/etl/) is generic: it imports nothing from
include/pipelines/ and names no pipeline, not even in a comment or a default."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import DATA_ROOT, ROOT

PLATFORM = (ROOT / "plugins" / "etl_platform", ROOT / "include" / "etl")
PIPELINES = ROOT / "include" / "pipelines"
# Pipelines that exist or are planned, their data sets, and words only one of them would use.
KNOWN = {"olympics", "olympic", "nz_trade", "nztrade", "retail", "athlete", "athletes", "medal", "noc_regions",
         "host_city", "covid"}
TEXT_SUFFIXES = {".py", ".md", ".txt", ".html", ".css", ".js", ".json", ".yaml", ".yml", ".toml", ".cfg", ".ini", ""}


def platform_files() -> list[Path]:
    files = []
    for base in PLATFORM:
        for path in base.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix in TEXT_SUFFIXES:
                files.append(path)
    assert files, "no platform files found"
    return files


def pipeline_names() -> set[str]:
    names = set(KNOWN)
    names |= {p.name.lower() for p in PIPELINES.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    if DATA_ROOT.is_dir():
        names |= {p.name.lower() for p in DATA_ROOT.iterdir() if p.is_dir()}
    return names


def test_platform_imports_nothing_from_pipelines():
    offenders = []
    for path in platform_files():
        if path.suffix != ".py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            modules = []
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            for module in modules:
                if module == "include.pipelines" or module.startswith("include.pipelines."):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {module}")
    assert offenders == []


def test_platform_names_no_pipeline():
    pattern = re.compile("|".join(sorted(map(re.escape, pipeline_names()), key=len, reverse=True)), re.IGNORECASE)
    offenders = []
    for path in platform_files():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            found = pattern.search(line)
            if found:
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {found.group(0)!r} in {line.strip()[:120]}")
    assert offenders == [], "the platform names a pipeline:\n" + "\n".join(offenders)


def test_every_pipeline_package_is_importable_light_and_registers_itself():
    import subprocess
    import sys

    for package in sorted(p for p in PIPELINES.iterdir() if (p / "__init__.py").exists()):
        code = (f"import sys; import include.pipelines.{package.name} as p; from include.etl.jobs import PIPELINES; "
                f"assert {package.name!r} in PIPELINES, 'does not call register_pipeline'; "
                "print(','.join(m for m in ('pandas', 'dask', 'pyspark', 'pyarrow', 'narwhals', 'numpy') if m in sys.modules))")
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.strip() == "", f"importing include.pipelines.{package.name} imported {out.stdout.strip()}"


def test_airflow_imports_only_the_plugin_entry_points_as_top_level_modules():
    """Airflow imports every .py under plugins/ as a top-level module named after its file: a
    hooks/dask.py once hid the real dask package from every Airflow process (plugins/.airflowignore)."""
    import subprocess
    import sys

    code = ("import sys; from airflow import plugins_manager; plugins_manager._get_plugins(); "
            "import distributed, dask.dataframe; "
            "print(sorted(n for n, m in list(sys.modules.items()) if '.' not in n "
            "and '/plugins/' in (getattr(m, '__file__', '') or '')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins")})
    assert out.returncode == 0, out.stderr[-3000:]
    # the entry point, and the package it imports (as a package: etl_platform.hooks..., never a bare hooks file)
    assert out.stdout.strip().splitlines()[-1] == "['etl_platform', 'lake_browser_plugin']", out.stdout[-2000:]
