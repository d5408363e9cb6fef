"""Job drivers on a Dask worker (include/etl/clusters/dask_jobs.py): one at a time per worker process.

On Python < 3.12 two drivers planning dask-expr graphs in one process can deadlock in
``functools.cached_property`` (seen in a year's backfill: two ``marts`` jobs on one worker,
blocked for good). Two jobs sent to a one-worker cluster at once must therefore run one after
the other, the second saying that it waited, and both must succeed.
"""

from __future__ import annotations

import sys

import pytest

from include.etl.clusters import dask_jobs


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, \
            Client(cluster, set_as_default=False) as c:
        yield c


def _submit(client, name: str, seconds: float = 1.0):
    return client.submit(dask_jobs.run_job_on_worker, "tests.fixtures.jobs:sleep_on_cluster", {"seconds": seconds},
                         "2024-07-01", lake_root="/nonexistent", max_reject_ratio=0.0, block_bytes=1 << 20,
                         client_name=name, key=name, pure=False)


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="Python 3.12+ has no cached_property lock to avoid")
def test_two_drivers_on_one_worker_take_turns_and_both_succeed(client):
    results = client.gather([_submit(client, "job-a"), _submit(client, "job-b")])
    assert [r.get("error") for r in results] == [None, None], [r.get("traceback") for r in results]
    assert [r["summary"] for r in results] == [{"slept": 1.0}] * 2
    waited = [r for r in results if any("waited" in m for *_, m in r["logs"])]
    assert len(waited) == 1, [r["logs"] for r in results]
    # the one that waited ran for its own second plus (most of) the other's
    assert waited[0]["elapsed_s"] >= 1.5, results


def test_a_lone_driver_does_not_wait(client):
    result = client.submit(dask_jobs.run_job_on_worker, "noop", {}, "2024-07-01", lake_root="/nonexistent",
                           max_reject_ratio=0.0, block_bytes=1 << 20, client_name="job-c", key="job-c",
                           pure=False).result()
    assert result["summary"] == {"job": "noop"}
    assert not any("waited" in m for *_, m in result["logs"]), result["logs"]
