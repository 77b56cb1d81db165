"""The in-process S3 and GCS test servers start, serve s3fs and gcsfs, and record requests."""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from urllib.parse import urlsplit

import fsspec
import gcsfs.core
import pytest
import s3fs

from tests.servers import (
    Server,
    accepts,
    ensure_plain_gcsfs,
    gcs_emulator,
    gcs_object_name,
    gcs_options,
    make_bucket,
    make_gcs_bucket,
    moto_server,
    s3_options,
)

# `fsspec.registry` is the read-only mapping; the module behind it holds the writable dict.
_fsspec_registry = importlib.import_module("fsspec.registry")


def _bucket() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def s3(s3_server: Server) -> tuple[Server, s3fs.S3FileSystem, str]:
    bucket = _bucket()
    make_bucket(s3_server.url, bucket)
    s3_server.reset()
    return s3_server, s3fs.S3FileSystem(**s3_options(s3_server.url)), bucket


@pytest.fixture
def gcs(gcs_server: Server) -> tuple[Server, gcsfs.core.GCSFileSystem, str]:
    bucket = _bucket()
    make_gcs_bucket(gcs_server.url, bucket)
    gcs_server.reset()
    return gcs_server, gcsfs.core.GCSFileSystem(**gcs_options(gcs_server.url)), bucket


@pytest.mark.parametrize("start", [moto_server, gcs_emulator])
def test_server_listens_on_loopback_and_stops(
    start: Callable[[], AbstractContextManager[Server]],
) -> None:
    with start() as server:
        parts = urlsplit(server.url)
        assert parts.scheme == "http"
        assert parts.hostname == "127.0.0.1"
        assert parts.port
        assert accepts(server.url)
    assert not accepts(server.url)


def test_s3_put_get_one_request_each(s3: tuple[Server, s3fs.S3FileSystem, str]) -> None:
    server, fs, bucket = s3
    fs.pipe_file(f"{bucket}/pre/fix/key", b"hello")
    assert fs.cat_file(f"{bucket}/pre/fix/key") == b"hello"
    assert [(r.method, r.path, r.status) for r in server.requests] == [
        ("PUT", f"/{bucket}/pre/fix/key", 200),
        ("GET", f"/{bucket}/pre/fix/key", 200),  # max_concurrency=1: no HEAD first
    ]
    assert server.requests[0].body == b"hello"
    server.reset()
    assert server.requests == []


def test_s3_create_sends_if_none_match_and_moto_enforces_it(
    s3: tuple[Server, s3fs.S3FileSystem, str],
) -> None:
    server, fs, bucket = s3
    fs.pipe_file(f"{bucket}/k", b"first", mode="create")
    with pytest.raises(FileExistsError):
        fs.pipe_file(f"{bucket}/k", b"second", mode="create")
    assert [(r.method, r.headers.get("if-none-match"), r.status) for r in server.requests] == [
        ("PUT", "*", 200),
        ("PUT", "*", 412),
    ]
    assert fs.cat_file(f"{bucket}/k") == b"first"


def test_moto_state_is_dropped_on_exit() -> None:
    bucket = _bucket()
    with moto_server() as server:
        make_bucket(server.url, bucket)
    with moto_server() as server:
        fs = s3fs.S3FileSystem(**s3_options(server.url), skip_instance_cache=True)
        assert not fs.exists(bucket)


def test_gcs_put_get_recorded(gcs: tuple[Server, gcsfs.core.GCSFileSystem, str]) -> None:
    server, fs, bucket = gcs
    fs.pipe_file(f"{bucket}/pre/a b%/key", b"hello")
    assert fs.cat_file(f"{bucket}/pre/a b%/key") == b"hello"
    assert [(r.method, r.path, r.status) for r in server.requests] == [
        ("POST", f"/upload/storage/v1/b/{bucket}/o", 200),
        ("GET", f"/download/storage/v1/b/{bucket}/o/pre/a b%/key", 200),
    ]
    assert [gcs_object_name(r) for r in server.requests] == ["pre/a b%/key"] * 2


def test_gcs_create_sends_precondition_which_the_emulator_ignores(
    gcs: tuple[Server, gcsfs.core.GCSFileSystem, str],
) -> None:
    server, fs, bucket = gcs
    fs.pipe_file(f"{bucket}/k", b"first", mode="create")
    fs.pipe_file(f"{bucket}/k", b"second", mode="create")  # real GCS: 412, FileExistsError
    assert [(r.query.get("ifGenerationMatch"), r.status) for r in server.requests] == [
        ("0", 200),
        ("0", 200),
    ]
    assert [gcs_object_name(r) for r in server.requests] == ["k", "k"]
    assert fs.cat_file(f"{bucket}/k") == b"second"


def test_ensure_plain_gcsfs_serves_gs_urls_without_the_extended_class(
    gcs: tuple[Server, gcsfs.core.GCSFileSystem, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _, bucket = gcs
    for protocol in ("gs", "gcs"):  # let monkeypatch undo the registration afterwards
        monkeypatch.setitem(_fsspec_registry._registry, protocol, None)
    ensure_plain_gcsfs()
    fs = fsspec.filesystem("gs", **gcs_options(server.url))
    assert type(fs) is gcsfs.core.GCSFileSystem
    fs.pipe_file(f"{bucket}/k", b"v")
    assert fs.cat_file(f"gs://{bucket}/k") == b"v"
