"""Shared fixtures: an isolated home and config for every test, and hub roots on every backend:
local folders, memory, S3 (a moto server) and GCS (the PyPI emulator), the servers started here
on 127.0.0.1 and stopped at the end of the session."""

from __future__ import annotations

import os

# gcsfs picks its filesystem class when first imported; the "extended" one stalls ~60 s per
# bucket against an emulator. Set before anything imports gcsfs (spawned workers inherit it).
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import functools
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import fsspec
import pytest
from servers import (
    Server,
    gcs_emulator,
    gcs_options,
    make_bucket,
    make_gcs_bucket,
    moto_server,
    s3_options,
)

import hubzarr


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Give each test its own HOME and config, so no test reads or writes the user's."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    for var in ("HUBZARR_ROOT", "HUBZARR_NAMESPACE", "HUBZARR_CONFIG", "HUBZARR_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    # The local cache (on by default for object stores) would answer a test's second read of
    # an object it damaged in the bucket: off, unless a test turns it on (tests/test_cache.py).
    monkeypatch.setenv("HUBZARR_CACHE_SIZE", "0")
    # No credentials but the ones a test passes, and never a look-up of a cloud metadata
    # address (botocore asks one when it finds no credentials).
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / ".aws" / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / ".aws" / "config"))
    return home


def _memory_root() -> Iterator[str]:
    path = f"/hubzarr-test-{uuid.uuid4().hex}"
    yield f"memory://{path}"
    # fsspec's recursive rm is quadratic in the number of files; drop the keys directly.
    fs = fsspec.filesystem("memory")
    for key in [k for k in fs.store if k == path or k.startswith(path + "/")]:
        del fs.store[key]
    fs.pseudo_dirs[:] = [d for d in fs.pseudo_dirs if not (d == path or d.startswith(path + "/"))]


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder, made the current directory (relative paths of files to import)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def memory_root() -> Iterator[str]:
    """A fresh ``memory://`` hub root, removed afterwards."""
    yield from _memory_root()


@pytest.fixture
def local_root(tmp_path: Path) -> str:
    """A fresh local-folder hub root."""
    return str(tmp_path / "hub")


@pytest.fixture(params=["local", "memory"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh hub root on each backend that needs no server."""
    if request.param == "local":
        yield str(tmp_path / "hub")
    else:
        yield from _memory_root()


@pytest.fixture
def hub(root: str) -> hubzarr.Hub:
    """A :class:`hubzarr.Hub` on each backend."""
    return hubzarr.Hub(root)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[Server]:
    """A moto S3 server for the whole session."""
    with moto_server() as server:
        yield server


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[Server]:
    """A GCS emulator for the whole session."""
    with gcs_emulator() as server:
        yield server


@dataclass(frozen=True)
class Backend:
    """A hub root and the storage options to reach it."""

    kind: str
    root: str
    options: dict[str, Any] = field(default_factory=dict)
    server: Server | None = None

    def hub(self) -> hubzarr.Hub:
        return hubzarr.Hub(self.root, storage_options=self.options)


def _bucket() -> str:
    return f"test-{uuid.uuid4().hex[:20]}"


@pytest.fixture
def s3_backend(s3_server: Server) -> Backend:
    """A fresh bucket on the moto server."""
    bucket = _bucket()
    make_bucket(s3_server.url, bucket)
    return Backend("s3", f"s3://{bucket}/hub", s3_options(s3_server.url), s3_server)


@pytest.fixture
def gcs_backend(gcs_server: Server) -> Backend:
    """A fresh bucket on the GCS emulator."""
    bucket = _bucket()
    make_gcs_bucket(gcs_server.url, bucket)
    return Backend("gcs", f"gs://{bucket}/hub", gcs_options(gcs_server.url), gcs_server)


@pytest.fixture(params=["local", "memory", "s3", "gcs"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A fresh hub root on every backend, servers included."""
    if request.param == "local":
        yield Backend("local", str(tmp_path / "hub"))
    elif request.param == "memory":
        for url in _memory_root():
            yield Backend("memory", url)
    else:
        yield request.getfixturevalue(f"{request.param}_backend")


@pytest.fixture(params=["local", "s3"])
def local_or_s3(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """A fresh hub root on the backends with enforced put-if-absent: a local folder and S3."""
    if request.param == "local":
        return Backend("local", str(tmp_path / "hub"))
    backend: Backend = request.getfixturevalue("s3_backend")
    return backend


#: Tests that take minutes, started first: with ``pytest -n 2`` one worker runs each from the
#: start while the other works through the rest, instead of one starting near the end and
#: running on alone.
_LONGEST_FIRST = ("test_state_machine.py::test_versions_follow_the_model_on_s3",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move the longest tests to the front (the order is otherwise unchanged)."""
    items.sort(key=lambda item: not item.nodeid.endswith(_LONGEST_FIRST))


class QuietHandler(SimpleHTTPRequestHandler):
    """Serves a folder without logging each request."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[hubzarr.Hub, str]]:
    """A local hub root, and the URL of an HTTP server on 127.0.0.1 serving that folder."""
    folder = tmp_path / "hub"
    folder.mkdir()
    handler = functools.partial(QuietHandler, directory=str(folder))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield hubzarr.Hub(str(folder)), f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        thread.join()
        httpd.server_close()
