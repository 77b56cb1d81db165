"""Read-only HTTP roots: a repository folder served by a plain HTTP server reads like any other."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import hubzarr


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[hubzarr.Hub, str]]:
    """A local hub root, and the URL of an HTTP server on 127.0.0.1 serving that folder."""
    folder = tmp_path / "hub"
    folder.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(folder))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield hubzarr.Hub(str(folder)), f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        thread.join()
        httpd.server_close()


def test_an_http_root_reads_every_ref(served: tuple[hubzarr.Hub, str]) -> None:
    local, url = served
    arr = local.array((6, 4), name="pub/data:main", dtype="int16", chunks=(2, 4))
    arr[:] = np.arange(24).reshape(6, 4)
    local.tag("pub/data", "v1")
    arr[0] = -1
    remote = hubzarr.Hub(url)
    assert remote.ls() == ["pub/data"]
    np.testing.assert_array_equal(remote.load("pub/data:v1")[:], np.arange(24).reshape(6, 4))
    head = remote.load("pub/data")
    assert head[0].tolist() == [-1] * 4
    assert head.read_only
    assert [e.refs for e in remote.log("pub/data")] == [("main",), ("tag: v1",)]


def test_writing_to_an_http_root_is_refused(served: tuple[hubzarr.Hub, str]) -> None:
    local, url = served
    arr = local.array((4,), name="pub/data", dtype="int8")
    arr[:] = 5
    remote = hubzarr.Hub(url)
    head = remote.load("pub/data")
    with pytest.raises(hubzarr.ReadOnlyError, match="read-only"):
        head[0] = 1
    with pytest.raises(hubzarr.ReadOnlyError):
        remote.tag("pub/data", "v1")
    with pytest.raises(hubzarr.ReadOnlyError):
        remote.array((2,), name="pub/other")
    assert local.load("pub/data")[:].tolist() == [5] * 4
    assert local.ls() == ["pub/data"]
