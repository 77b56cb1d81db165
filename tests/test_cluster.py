"""The same reads, reductions and bulk writes on a dask.distributed LocalCluster of worker
processes, on a local folder and on S3 (moto), with credentials the workers find themselves."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import dask.array as da
import numpy as np
import pytest
from distributed import Client, LocalCluster, get_task_stream
from servers import S3_KEY, S3_SECRET, Server, make_bucket, s3_options

import hubzarr


@pytest.fixture(scope="module")
def client(s3_server: Server) -> Iterator[Client]:
    """Two single-threaded worker processes; they get S3 credentials from their environment,
    as workers on a real cluster would (never from the pickled graph)."""
    env = {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET}
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address="127.0.0.1:0",  # a free port: two test workers may start one each
            host="127.0.0.1",
            env=env,
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c


@pytest.fixture(params=["local", "s3"])
def cluster_hub(
    request: pytest.FixtureRequest, tmp_path: Any, s3_server: Server, client: Client
) -> hubzarr.Hub:
    if request.param == "local":
        return hubzarr.Hub(str(tmp_path / "hub"))
    bucket = f"cluster-{os.urandom(6).hex()}"
    make_bucket(s3_server.url, bucket)
    return hubzarr.Hub(f"s3://{bucket}/hub", storage_options=s3_options(s3_server.url))


def _worker_pids(client: Client) -> set[int]:
    return set(client.run(os.getpid).values())


def test_reductions_and_reads_run_on_the_workers(cluster_hub: hubzarr.Hub, client: Client) -> None:
    data = np.random.default_rng(2).normal(5, 2, size=(60, 33)).astype("float32")
    arr = cluster_hub.array((60, 33), "cl/a", dtype="float32", chunks=(8, 11))
    arr[:] = data
    with get_task_stream(client) as stream:
        assert arr.mean() == pytest.approx(data.mean(dtype="float64"), rel=1e-12)
        assert arr.std() == pytest.approx(data.astype("float64").std(), rel=1e-10)
        assert arr.lazy[5:50:2, ::-3].max() == data[5:50:2, ::-3].max()
        counts, _ = arr.histogram(6, range=(0.0, 12.0))
        np.testing.assert_array_equal(counts, np.histogram(data, 6, range=(0.0, 12.0))[0])
        np.testing.assert_array_equal(arr.dask.compute(), data)
    workers = {task["worker"] for task in stream.data if "hubzarr" in task["key"][0]}
    assert len(workers) == 2  # both worker processes read chunks
    assert os.getpid() not in _worker_pids(client)


def test_bulk_writes_from_the_workers(cluster_hub: hubzarr.Hub, client: Client) -> None:
    values = da.random.default_rng(4).normal(size=(50, 21), chunks=(9, 7)).astype("float32")
    expected = values.compute()
    arr = cluster_hub.from_dask(values, "cl/b", chunks=(10, 7))
    np.testing.assert_array_equal(arr[:], expected)
    cluster_hub.tag("cl/b", "v1")
    arr[3:47, 2:20] = da.full((44, 18), 2.5, dtype="float32", chunks=(11, 5))
    expected_head = expected.copy()
    expected_head[3:47, 2:20] = 2.5
    np.testing.assert_array_equal(cluster_hub.load("cl/b")[:], expected_head)
    np.testing.assert_array_equal(cluster_hub.load("cl/b:v1")[:], expected)
    assert cluster_hub.verify("cl/b").ok
