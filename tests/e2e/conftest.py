"""Fixtures shared by the end-to-end modules."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def real_engines(tmp_path_factory):
    """``{"dask": DaskEngine, "spark": SparkEngine}`` on real local clusters, one pair per test process.

    For modules that only read and write through the engines (each test uses lake paths of its
    own). Modules that start, kill or attach clusters keep clusters of their own.
    """
    from tests.e2e.clusters import kill_leftovers, local_engines

    base = tmp_path_factory.mktemp("shared-engines")
    with local_engines(base) as engines:
        yield engines
    assert kill_leftovers(str(base)) == [], "cluster processes left after the shared engines stopped"
