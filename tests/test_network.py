"""The latency proxy (``faults.latency_proxy``) relays S3 unchanged over a simulated network:
each request waits the latency, response bodies share a capped link, concurrent requests overlap
on kept-alive connections; moto and the proxy also run in processes of their own.

Times are only ever bounded from below (the proxy sleeps at least that long, whatever the load
on the machine); that requests overlap is read from the proxy's own count, never from a clock.
"""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest
import s3fs
from counting import CountingStorage
from faults import latency_proxy, proxy_process
from servers import Server, accepts, make_bucket, moto_server_process, s3_options

import hubzarr
from hubzarr import bulk
from hubzarr.storage import open_storage

LATENCY_S = 0.05
MIB = 2**20


def _fs(url: str, **options: object) -> s3fs.S3FileSystem:
    """A client of its own (fsspec's instance cache would share one between tests)."""
    return s3fs.S3FileSystem(**s3_options(url), skip_instance_cache=True, **options)


@pytest.fixture
def bucket(s3_server: Server) -> str:
    """A fresh bucket on the session's moto server, its requests forgotten."""
    name = f"net-{uuid.uuid4().hex[:12]}"
    make_bucket(s3_server.url, name)
    s3_server.reset()
    return name


def test_s3_requests_and_answers_pass_through_unchanged(s3_server: Server, bucket: str) -> None:
    payload = bytes(range(256)) * 1000
    with latency_proxy(s3_server.url, latency_s=0.001) as proxy:
        fs = _fs(proxy.url)
        fs.pipe_file(f"{bucket}/a/b", b"hello")
        fs.pipe_file(f"{bucket}/a/c", payload)
        assert fs.cat_file(f"{bucket}/a/b") == b"hello"
        assert fs.cat_file(f"{bucket}/a/c", start=10, end=20) == payload[10:20]
        assert sorted(fs.ls(f"{bucket}/a", detail=False)) == [f"{bucket}/a/b", f"{bucket}/a/c"]
        assert fs.info(f"{bucket}/a/c")["size"] == len(payload)
        with pytest.raises(FileNotFoundError):
            fs.cat_file(f"{bucket}/missing")
        with pytest.raises(FileExistsError):  # If-None-Match relayed, 412 relayed back
            fs.pipe_file(f"{bucket}/a/b", b"x", mode="create")
        assert fs.cat_file(f"{bucket}/a/b") == b"hello"
        exchanges, _ = proxy.take()
    relayed = [(e.method, e.path, e.status) for e in exchanges]
    assert relayed == [(r.method, r.path, r.status) for r in s3_server.requests]
    assert {404, 412} <= {e.status for e in exchanges}
    assert proxy.errors == []
    assert proxy.forwarded == len(exchanges)


def test_every_request_waits_at_least_the_latency(s3_server: Server, bucket: str) -> None:
    with latency_proxy(s3_server.url, latency_s=LATENCY_S) as proxy:
        fs = _fs(proxy.url)
        fs.pipe_file(f"{bucket}/k", b"x")
        for _ in range(3):
            start = time.perf_counter()
            assert fs.cat_file(f"{bucket}/k") == b"x"
            assert time.perf_counter() - start >= LATENCY_S
    assert [e.delay_s for e in proxy.exchanges] == [LATENCY_S] * 4


def test_jitter_adds_a_seeded_draw_to_the_latency(s3_server: Server, bucket: str) -> None:
    def delays(seed: int) -> list[float]:
        with latency_proxy(s3_server.url, latency_s=0.01, jitter_s=0.02, seed=seed) as proxy:
            fs = _fs(proxy.url)
            for _ in range(8):
                with pytest.raises(FileNotFoundError):
                    fs.cat_file(f"{bucket}/missing")
        return [e.delay_s for e in proxy.exchanges]

    first = delays(1)
    assert len(first) == 8
    assert all(0.01 <= d <= 0.03 for d in first)
    assert len(set(first)) > 1
    assert delays(1) == first
    assert delays(2) != first


def test_a_large_body_takes_at_least_its_size_over_the_bandwidth(
    s3_server: Server, bucket: str
) -> None:
    bandwidth = 8 * MIB
    direct = _fs(s3_server.url)
    bodies = {f"{bucket}/big{i}": bytes([i]) * (2 * MIB) for i in range(2)}
    for path, body in bodies.items():
        direct.pipe_file(path, body)  # uploads are not capped: put them beside the proxy
    with latency_proxy(s3_server.url, latency_s=0.0, bandwidth=bandwidth) as proxy:
        fs = _fs(proxy.url)
        start = time.perf_counter()
        assert fs.cat_file(f"{bucket}/big0") == bodies[f"{bucket}/big0"]
        assert time.perf_counter() - start >= 2 * MIB / bandwidth
        # Two bodies asked for at once share the one link: together they take twice as long.
        start = time.perf_counter()
        assert fs.cat(list(bodies)) == bodies
        assert time.perf_counter() - start >= 4 * MIB / bandwidth
    assert proxy.errors == []


def test_concurrent_requests_overlap_on_kept_alive_connections(
    s3_server: Server, bucket: str
) -> None:
    direct = _fs(s3_server.url)
    paths = [f"{bucket}/k{i}" for i in range(64)]
    for path in paths:
        direct.pipe_file(path, path.encode())
    with latency_proxy(s3_server.url, latency_s=LATENCY_S) as proxy:
        # A connection pool of 64, so that the client may hold them all open at once.
        fs = _fs(proxy.url, config_kwargs={"max_pool_connections": 64})
        assert fs.cat(paths) == {p: p.encode() for p in paths}
        exchanges, most = proxy.take()
        assert len(exchanges) == 64
        assert most > 1
        assert proxy.connections <= 64
        before = proxy.connections
        for path in paths[:8]:  # one after another: the connections opened are reused
            assert fs.cat_file(path) == path.encode()
        assert proxy.connections == before
    assert proxy.errors == []


def test_moto_and_the_proxy_run_in_processes_of_their_own() -> None:
    with moto_server_process() as moto_url:
        make_bucket(moto_url, "bucket")
        with proxy_process(moto_url, latency_s=0.01) as proxy:
            fs = _fs(proxy.url)
            fs.pipe_file("bucket/k", b"x")
            assert fs.cat_file("bucket/k") == b"x"
            exchanges, most = proxy.take()
            assert [(e.method, e.path, e.status) for e in exchanges] == [
                ("PUT", "/bucket/k", 200),
                ("GET", "/bucket/k", 200),
            ]
            assert [e.delay_s for e in exchanges] == [0.01, 0.01]
            assert most == 1
            assert proxy.take() == ([], 0)
        assert not accepts(proxy.url)
    assert not accepts(moto_url)


def test_hubzarr_keeps_tens_of_requests_in_flight(s3_server: Server, bucket: str) -> None:
    """A numpy read of many chunks over a slow network: far more than the 10 requests in
    flight an S3 client's default connection pool allows."""
    root = f"s3://{bucket}/hub"
    writer = hubzarr.Hub(root, storage_options=s3_options(s3_server.url))
    arr = writer.array((128, 16), "net/a", chunks=(1, 16), dtype="float32")
    arr[:] = np.arange(128 * 16, dtype="float32").reshape(128, 16)
    writer.tag("net/a", "v1")
    with latency_proxy(s3_server.url, latency_s=LATENCY_S) as proxy:
        reader = hubzarr.Hub(root, storage_options=s3_options(proxy.url))
        tagged = reader.load_array("net/a:v1")
        proxy.take()
        np.testing.assert_array_equal(tagged[:], np.arange(128 * 16).reshape(128, 16))
        exchanges, most = proxy.take()
    assert len([e for e in exchanges if "/data/" in e.path]) == 128  # one GET per chunk
    assert 10 < most <= bulk.IN_FLIGHT  # one window of reads for the whole selection


def test_opening_costs_few_sequential_round_trips(s3_server: Server, bucket: str) -> None:
    root, options = f"s3://{bucket}/hub", s3_options(s3_server.url)
    writer = hubzarr.Hub(root, storage_options=options, cache=False)
    writer.array((8, 8), "net/tagged", chunks=(4, 4), dtype="float32")[:] = 1
    writer.tag("net/tagged", "v1")
    writer.array((8, 8), "net/fresh", chunks=(4, 4), dtype="float32")[:] = 2
    counter = CountingStorage(open_storage(root, options))
    rounds = {}
    for name in ("net/tagged:v1", "net/fresh", "net/tagged"):
        hub = hubzarr.Hub(root, storage_options=options, storage=counter, cache=False)
        counter.reset()
        hub.load_array(name, mode="r")
        rounds[name] = counter.rounds
    # At a tag: repo.json; the tag (and a branch of that name); the version's index root
    # with its metadata where it most often lies. A head: its seal looked for while its
    # record is read, the index root of the version the branch file says it started from,
    # and its metadata where it most often lies (the head's first two generations, and that
    # version's own objects).
    assert rounds == {"net/tagged:v1": 3, "net/fresh": 3, "net/tagged": 3}
