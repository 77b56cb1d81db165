"""hubzarr on S3 through a proxy that injects faults between s3fs and moto (``faults.py``).

Four layers retry a failed S3 request: aiohttp (an idempotent request, PUT included, once
when its connection drops), botocore (5xx, throttling, connection errors; unless told not to),
s3fs (dropped connections, SlowDown) and hubzarr (:meth:`hubzarr.storage.FsspecStorage._call`).
Runs named ``botocore-retries`` use s3fs's defaults, as a user would; runs named
``no-botocore-retries`` turn botocore's off (``total_max_attempts=1``), so faults reach s3fs
and hubzarr, and botocore's backoff (up to seconds per retry) does not slow the test.

Every fault is decided by a seeded generator; no test sleeps or polls.
"""

from __future__ import annotations

import http.client
import logging
import threading
import traceback
from typing import Any

import numpy as np
import pytest
from conftest import Backend
from envelopes import unframe
from faults import Proxy, fault_proxy
from zarr.core.sync import sync

import hubzarr
from hubzarr import storage as storage_module
from hubzarr.storage import _causes, open_storage

#: Client settings: s3fs's defaults, or botocore's own retries turned off.
CLIENTS: dict[str, dict[str, Any]] = {
    "botocore-retries": {},
    "no-botocore-retries": {"config_kwargs": {"retries": {"total_max_attempts": 1}}},
}
NAME = "test/faulty"
SECRET = "SECRETSHOULDNOTLEAK"
ACCESS_KEY = "AKIAFAULTPROXYKEY042"  # shown masked: AKIA...Y042


def via(proxy: Proxy, backend: Backend, client: str = "no-botocore-retries") -> dict[str, Any]:
    """``backend``'s storage options with s3fs's endpoint at the proxy."""
    options = dict(backend.options)
    options["client_kwargs"] = {**options["client_kwargs"], "endpoint_url": proxy.url}
    return {**options, **CLIENTS[client]}


def bucket_of(backend: Backend) -> str:
    return backend.root.removeprefix("s3://").split("/", 1)[0]


def moto_requests(backend: Backend) -> list[Any]:
    """What moto received for ``backend``'s bucket so far (faults never reach it)."""
    assert backend.server is not None
    prefix = f"/{bucket_of(backend)}/"
    return [r for r in backend.server.requests if r.path.startswith(prefix)]


def stored_objects(hub: hubzarr.Hub) -> dict[str, bytes]:
    """Every object under the hub root, read without hubzarr: ``{path under the root: bytes}``."""
    fs = hub.storage.fs  # type: ignore[attr-defined]
    base = hub.root.removeprefix("s3://")
    return {p[len(base) + 1 :]: fs.cat_file(p) for p in fs.find(base)}


# -- the proxy itself -----------------------------------------------------------------------

#: moto checks no signature, only that the request names S3 in its credential scope.
_UNSIGNED = {
    "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, "
    "SignedHeaders=host, Signature=0",
    "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
}


def _connect(proxy: Proxy) -> http.client.HTTPConnection:
    host, port = proxy.url.removeprefix("http://").split(":")
    return http.client.HTTPConnection(host, int(port), timeout=30)


def test_the_proxy_relays_faults_and_stops_cleanly(s3_backend: Backend) -> None:
    assert s3_backend.server is not None
    key = f"/{bucket_of(s3_backend)}/proxied"
    threads = set(threading.enumerate())
    with fault_proxy(s3_backend.server.url, seed=1, error_rate=1.0, max_streak=1) as proxy:
        conn = _connect(proxy)  # one keep-alive connection for every request below
        chunks = iter([b"hello ", b"chunked ", b"world"])
        conn.request("PUT", key, body=chunks, headers=_UNSIGNED, encode_chunked=True)
        answer = conn.getresponse()
        assert answer.status in (500, 503)
        assert b"<Code>" in answer.read()  # S3's XML error; the upstream never saw it
        conn.request("PUT", key, body=iter([b"hello ", b"world"]), headers=_UNSIGNED)
        answer = conn.getresponse()
        assert (answer.status, answer.read(), proxy.injected["error"]) == (200, b"", 1)
        conn.request("HEAD", key, headers=_UNSIGNED)
        answer = conn.getresponse()
        assert answer.status in (500, 503)
        assert answer.read() == b""
        conn.request("HEAD", key, headers=_UNSIGNED)
        answer = conn.getresponse()
        assert (answer.status, answer.getheader("Content-Length")) == (200, "11")
        assert answer.read() == b""
        # The connection stays open: the proxy hangs up on it when it stops.
    conn.close()
    assert [(r.method, r.status, r.body) for r in moto_requests(s3_backend)] == [
        ("PUT", 200, b"hello world"),
        ("HEAD", 200, b""),
    ]
    # Every handler thread was joined (moto's are daemons and end on their own).
    assert [t for t in threading.enumerate() if t not in threads and not t.daemon] == []
    with pytest.raises(ConnectionRefusedError):
        _connect(proxy).connect()

    with fault_proxy(s3_backend.server.url, seed=1, drop_rate=1.0, max_streak=1) as proxy:
        conn = _connect(proxy)
        conn.request("GET", key, headers=_UNSIGNED)
        with pytest.raises(http.client.RemoteDisconnected):
            conn.getresponse()
        conn.close()
        conn.request("GET", key, headers=_UNSIGNED)
        assert conn.getresponse().read() == b"hello world"
        conn.close()
    assert proxy.injected == {"drop": 1}
    assert proxy.forwarded == 1


# -- transient faults -----------------------------------------------------------------------


def test_the_story_survives_errors_drops_and_delays(s3_backend: Backend) -> None:
    rng = np.random.default_rng(42)
    first = rng.normal(size=(8, 16))
    second = rng.normal(size=(4, 8))
    expected = np.zeros((8, 16))

    assert s3_backend.server is not None
    with fault_proxy(
        s3_backend.server.url,
        seed=20240607,
        error_rate=0.15,
        drop_rate=0.10,
        delay_rate=0.10,
        max_streak=2,  # hubzarr tries 4 times: every request gets through
    ) as proxy:
        hub = hubzarr.Hub(s3_backend.root, storage_options=via(proxy, s3_backend))
        arr = hub.array((8, 16), name=NAME, dtype="float64", chunks=(4, 8))
        arr[:4] = first[:4]
        arr[4:, :8] = first[4:, :8]
        expected[:4] = first[:4]
        expected[4:, :8] = first[4:, :8]
        np.testing.assert_array_equal(hub.load(NAME)[:], expected)
        tagged = expected.copy()
        version = hub.tag(NAME, "v1")
        arr[2:6, 4:12] = second
        arr[7] = -1.0
        expected[2:6, 4:12] = second
        expected[7] = -1.0
        np.testing.assert_array_equal(hub.load(f"{NAME}:v1")[:], tagged)
        np.testing.assert_array_equal(hub.load(NAME)[:], expected)

    assert proxy.errors == []
    assert proxy.injected["error"] > 0, proxy.injected
    assert proxy.injected["drop"] > 0, proxy.injected
    assert proxy.injected["delay"] > 0, proxy.injected

    # Everything stored is intact, seen through a fault-free connection.
    direct = s3_backend.hub()
    np.testing.assert_array_equal(direct.load(f"{NAME}:v1")[:], tagged)
    np.testing.assert_array_equal(direct.load(NAME)[:], expected)
    log = direct.log(NAME)
    assert [e.refs for e in log] == [("main",), ("tag: v1",)]
    assert log[1].id == version
    by_version = {log[0].id: expected, log[1].id: tagged}
    for entry in log:
        if not entry.sealed:  # the open head's id names no immutable state: refused
            with pytest.raises(hubzarr.InvalidArgumentError, match="open head"):
                direct.load(f"{NAME}:{entry.id}")
            continue
        np.testing.assert_array_equal(direct.load(f"{NAME}:{entry.id}")[:], by_version[entry.id])
    objects = stored_objects(direct)
    data = {p: raw for p, raw in objects.items() if "/data/" in p}
    assert len(data) >= 8  # 3 chunks and .zarray, .zattrs in v1; 4 chunks and more after
    for path, raw in data.items():
        assert unframe(path, raw) is not None, path  # no tombstone was written
    assert not [p for p in objects if p.endswith(".hubzarr-tmp")]


@pytest.mark.parametrize(
    ("fault", "streak"),
    [
        # s3fs makes 5 attempts of a PUT whose connection drops, and aiohttp re-sends each
        # once (PUT is idempotent): the 11th request is hubzarr's second attempt. (A GET would
        # take 50: s3fs's cat_file nests two retry loops of 5.)
        ("drop", 10),
        # s3fs makes 5 attempts on SlowDown.
        ("SlowDown", 5),
        # s3fs passes other 5xx on at once.
        ("InternalError", 1),
        ("ServiceUnavailable", 1),
    ],
)
def test_faults_outlasting_s3fs_are_retried_by_hubzarr(
    s3_backend: Backend, fault: str, streak: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    judged: list[tuple[bool, list[str]]] = []

    def is_transient(exc: BaseException) -> bool:
        verdict = real_is_transient(exc)
        judged.append((verdict, [type(e).__name__ for e in storage_module._causes(exc)]))
        return verdict

    real_is_transient = storage_module._is_transient
    monkeypatch.setattr(storage_module, "_is_transient", is_transient)
    assert s3_backend.server is not None
    with fault_proxy(
        s3_backend.server.url,
        seed=5,
        error_rate=0.0 if fault == "drop" else 1.0,
        drop_rate=1.0 if fault == "drop" else 0.0,
        error_codes=[fault] if fault != "drop" else ["InternalError"],
        max_streak=streak,
    ) as proxy:
        storage = open_storage(s3_backend.root, via(proxy, s3_backend))
        sync(storage.write("object", b"payload"))
    # hubzarr saw one failure, judged it transient, and tried again.
    assert [verdict for verdict, _chain in judged] == [True], judged
    kind = "drop" if fault == "drop" else "error"
    path = f"/{bucket_of(s3_backend)}/hub/object"
    assert proxy.log == [("PUT", path, kind)] * streak + [("PUT", path, "")]
    assert sync(open_storage(s3_backend.root, s3_backend.options).read("object")) == b"payload"


# -- lost acknowledgements of put-if-absent ----------------------------------------------


@pytest.mark.parametrize(
    ("lost_ack_as", "client"),
    [
        # A 500 after the object was stored (real S3 does that too), passed on by botocore
        # (retries off) and s3fs, and retried by hubzarr: its read-back finds its own content.
        ("InternalError", "no-botocore-retries"),
        # The same 500 retried inside botocore (s3fs's default client): hubzarr sees only the
        # retry's 412.
        ("InternalError", "botocore-retries"),
        # A 503 SlowDown after the object was stored, retried inside s3fs.
        ("SlowDown", "no-botocore-retries"),
        # A dropped connection: aiohttp re-sends an idempotent request (PUT is one) once by
        # itself; neither botocore nor s3fs nor hubzarr sees the first attempt fail.
        ("drop", "botocore-retries"),
    ],
    ids=[
        "500-retried-by-hubzarr",
        "500-retried-by-botocore",
        "503-retried-by-s3fs",
        "drop-retried-by-aiohttp",
    ],
)
def test_lost_acknowledgements_of_creates_are_recognised(
    s3_backend: Backend, lost_ack_as: str, client: str
) -> None:
    values = np.arange(32, dtype="int16").reshape(4, 8)
    assert s3_backend.server is not None
    with fault_proxy(
        s3_backend.server.url, seed=7, lost_ack_first=1_000, lost_ack_as=lost_ack_as
    ) as proxy:
        hub = hubzarr.Hub(s3_backend.root, storage_options=via(proxy, s3_backend, client))
        arr = hub.array((4, 8), name=NAME, dtype="int16", chunks=(2, 8))
        arr[:] = values
        v1 = hub.tag(NAME, "v1")
        head = hub.branch(f"{NAME}:v1", "dev")
        dev = hub.load(f"{NAME}:dev")
        dev[0] = -1

    assert proxy.errors == []
    # Every put-if-absent the proxy forwarded was stored, and its answer lost.
    creates = [
        r
        for r in moto_requests(s3_backend)
        if r.method == "PUT" and r.headers.get("if-none-match") == "*"
    ]
    stored = [r for r in creates if r.status == 200]
    # 12 records (repository, versions, seal, manifest, index root, refs and the claims of the
    # names v1 and dev) and 5 data objects (.zarray, .zattrs, two chunks on main, one on dev):
    # chunk objects are created once too.
    assert proxy.injected["lost_ack"] == len(stored) == 17
    # Each object was created exactly once; every other attempt met 412 and changed nothing.
    assert len({r.path for r in stored}) == len(stored)
    assert {r.status for r in creates} <= {200, 412}
    assert {r.path for r in creates} == {r.path for r in stored}

    direct = s3_backend.hub()
    objects = stored_objects(direct)
    base = "/" + s3_backend.root.removeprefix("s3://") + "/"
    # Objects written once hold what their one accepted PUT carried (branch refs move later).
    moved = {
        r.path
        for r in moto_requests(s3_backend)
        if r.method == "PUT" and "if-none-match" not in r.headers
    } & {r.path for r in stored}
    assert all("/refs/branches/" in p for p in moved)
    for request in stored:
        if request.path not in moved:
            assert objects[request.path.removeprefix(base)] == request.body, request.path
    refs = sorted(p.rsplit("/refs/", 1)[1] for p in objects if "/refs/" in p)
    assert refs == [
        "branches/dev.json",
        "branches/main.json",
        "names/dev.json",
        "names/v1.json",
        "tags/v1.json",
    ]
    np.testing.assert_array_equal(direct.load(f"{NAME}:v1")[:], values)
    np.testing.assert_array_equal(direct.load(f"{NAME}:{v1}")[:], values)
    np.testing.assert_array_equal(direct.load(NAME)[:], values)
    changed = values.copy()
    changed[0] = -1
    np.testing.assert_array_equal(direct.load(f"{NAME}:dev")[:], changed)
    assert [(e.id, e.parent) for e in direct.log(f"{NAME}:dev")] == [(head, v1), (v1, None)]


# -- access denied ---------------------------------------------------------------------------

_LOGGERS = ("", "botocore", "aiobotocore", "s3fs", "fsspec", "hubzarr", "urllib3", "aiohttp")


def _texts(exc: BaseException) -> list[str]:
    """What a user could see of ``exc``: its chain's messages, reprs and traceback."""
    texts = ["".join(traceback.format_exception(exc))]
    for e in _causes(exc):
        texts += [str(e), repr(e), repr(e.args)]
    return texts


def test_access_denied_names_the_bucket_and_never_the_secret(
    s3_backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    for name in _LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name or None)
    bucket = bucket_of(s3_backend)
    assert s3_backend.server is not None
    with fault_proxy(s3_backend.server.url, seed=3, denied_buckets=[bucket]) as proxy:
        options = {
            **via(proxy, s3_backend, "botocore-retries"),
            "key": ACCESS_KEY,
            "secret": SECRET,
        }
        hub = hubzarr.Hub(s3_backend.root, storage_options=options)
        errors: list[hubzarr.AccessDeniedError] = []
        for attempt in (
            lambda: hub.array((4,), name=NAME, dtype="int8"),
            lambda: hub.load(NAME),
            hub.ls,
            lambda: hub.store(NAME, mode="w-"),
            lambda: sync(hub.storage.size(f"{NAME}/repo.json")),  # HEAD: a 403 with no body
        ):
            with pytest.raises(hubzarr.AccessDeniedError) as info:
                attempt()
            errors.append(info.value)
    assert proxy.injected["denied"] >= len(errors)
    assert proxy.forwarded == 0

    for exc in errors:
        assert isinstance(exc, PermissionError)
        assert isinstance(exc, hubzarr.StorageError)
        message = str(exc)
        assert f"bucket {bucket!r}" in message, message
        assert "access key AKIA...Y042" in message, message
        assert ACCESS_KEY not in message
        for text in _texts(exc):
            assert SECRET not in text
    for shown in (repr(hub), repr(hub.storage), str(hub.storage.url)):
        assert SECRET not in shown

    # The clients' DEBUG logging (requests, headers, signatures) was captured and searched.
    assert {"botocore", "aiobotocore", "s3fs"} <= {r.name.split(".")[0] for r in caplog.records}
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    for record in caplog.records:
        assert SECRET not in formatter.format(record), record.name
        assert SECRET not in repr(record.args), record.name
    assert SECRET not in caplog.text
    assert moto_requests(s3_backend) == []
