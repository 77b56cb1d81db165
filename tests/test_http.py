"""Read-only HTTP roots: a repository folder served by a plain HTTP server reads like any other."""

from __future__ import annotations

import functools
import posixpath
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import pytest
from conftest import QuietHandler
from typer.testing import CliRunner
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

import hubzarr
from hubzarr.cli import app
from hubzarr.errors import InvalidArgumentError


class _RecordingHandler(QuietHandler):
    """Serves a folder and records the path of every request it gets."""

    def __init__(self, *args: Any, requests: list[str], **kwargs: Any) -> None:
        self.requests = requests  # set first: the base class handles the request in __init__
        super().__init__(*args, **kwargs)

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        if parsed:
            self.requests.append(self.path)
        return parsed


@dataclass
class Site:
    """A web server serving ``folder``, whose subfolder ``hub`` is a hub root."""

    folder: Path
    url: str  # of the hub root
    requests: list[str]

    def local(self) -> hubzarr.Hub:
        return hubzarr.Hub(str(self.folder / "hub"))

    def outside_requests(self) -> list[str]:
        """Requests for anything outside the hub root, as the server resolves them."""
        resolved = [posixpath.normpath(unquote(r.split("?", 1)[0])) for r in self.requests]
        return [r for r in resolved if not (r == "/hub" or r.startswith("/hub/"))]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """A web server on 127.0.0.1 serving a folder that holds a hub root and, outside it, secrets."""
    folder = tmp_path / "www"
    (folder / "hub").mkdir(parents=True)
    for secret in ("secret", "secret/.zarray", "secret/.zgroup", "pub/secret"):
        path = folder / secret
        if path.suffix or secret == "pub/secret":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text('{"zarr_format": 2, "secret": true}')
        else:
            path.mkdir(parents=True, exist_ok=True)
    requests: list[str] = []
    handler = functools.partial(_RecordingHandler, directory=str(folder), requests=requests)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Site(folder, f"http://127.0.0.1:{httpd.server_address[1]}/hub", requests)
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


# -- keys that the client or server would resolve outside the root -----------------------------

#: Segments that a URL's client or server decodes to '..', '.', a '/' or a '\\'.
_ESCAPES = ["%2e%2e", "%2E%2E", ".%2e", "%2e.", "%252e%252e", "%25252e%25252e", "%2e"]
_ESCAPING_KEYS = [
    *(f"{'/'.join([e] * 8)}/secret" for e in _ESCAPES),
    "..%2f..%2f..%2f..%2f..%2f..%2f..%2f..%2fsecret",
    "..%2F..%2F..%2F..%2F..%2F..%2F..%2F..%2Fsecret",
    "..%5c..%5c..%5c..%5c..%5c..%5c..%5c..%5csecret",
    "%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fsecret",
    "a/%252e%252e%252fsecret",
    "a/%00/secret",
    "a/%/b/%2",  # a stray '%' is a literal character: harmless, allowed below
]


def test_percent_encoded_dot_segments_never_leave_an_http_root(site: Site) -> None:
    local = site.local()
    group = local.group("pub/data")
    group.create_array("images", (4,), dtype="int8", chunks=(2,))[:] = [1, 2, 3, 4]
    local.tag("pub/data", "v1")
    remote = hubzarr.Hub(site.url)
    for ref in ("pub/data", "pub/data:v1"):
        node = remote.load(ref)
        assert isinstance(node, hubzarr.HubGroup)
        store = remote.store(ref)
        for key in _ESCAPING_KEYS[:-1]:
            with pytest.raises(InvalidArgumentError):
                node[key]
            with pytest.raises(InvalidArgumentError):
                sync(store.get(key, default_buffer_prototype()))
            with pytest.raises(InvalidArgumentError):
                sync(remote.storage.read(key))
            with pytest.raises(InvalidArgumentError):
                sync(remote.storage.read(f"pub/{key}"))
        assert node["images"][:].tolist() == [1, 2, 3, 4]
    assert site.requests  # the server was asked, only for what lies inside the hub root
    assert site.outside_requests() == []


async def test_an_http_request_names_the_key_literally(site: Site) -> None:
    storage = hubzarr.Hub(site.url).storage
    odd = site.folder / "hub" / "odd"
    odd.mkdir()
    for name in ("a b", "a b#c", "a b?c", "a+b", "100%", "%41"):
        (odd / name).write_bytes(name.encode())
    (odd / "A").write_bytes(b"not %41")
    (site.folder / "hub" / "a%").mkdir()
    (site.folder / "hub" / "a%" / "b").write_bytes(b"under a%")
    for name in ("a b", "a b#c", "a b?c", "a+b", "100%", "%41"):
        assert await storage.read(f"odd/{name}") == name.encode(), name
        assert await storage.size(f"odd/{name}") == len(name.encode()), name
    assert await storage.read("a%/b") == b"under a%"
    assert sorted(await storage.list_dir("odd")) == sorted(
        ["a b", "a b#c", "a b?c", "a+b", "100%", "%41", "A"]
    )
    assert await storage.list("a%") == {"b": 8}
    assert site.outside_requests() == []


# -- every read-only operation on an HTTP root --------------------------------------------------


def test_a_group_with_a_deleted_member_reads_over_http(site: Site) -> None:
    local = site.local()
    group = local.group("pub/ds")
    group.create_array("images", (4, 3), dtype="float32", chunks=(2, 3))[:] = np.arange(
        12, dtype="float32"
    ).reshape(4, 3)
    group.create_array("train/labels", (4,), dtype="int16", chunks=(2,))[:] = [1, 2, 3, 4]
    group.create_array("extra", (4,), dtype="int8", chunks=(2,))[:] = [9, 9, 9, 9]
    local.tag("pub/ds", "v1")
    del group["extra"]  # tombstones at the head
    group.create_array("later", (2,), dtype="int8")[:] = [5, 6]
    local.tag("pub/ds", "v2")
    group["images"][0] = -1  # type: ignore[index]
    # At the head, a member only its listing shows, and one only its tombstones hide.
    group.create_array("newest", (2,), dtype="int8")[:] = [7, 8]
    del group["later"]
    remote = hubzarr.Hub(site.url)

    assert remote.ls() == local.ls() == ["pub/ds"]
    assert remote.log("pub/ds") == local.log("pub/ds")
    for ref in ("pub/ds", "pub/ds:v1", "pub/ds:v2"):
        mine, theirs = local.load(ref, mode="r"), remote.load(ref)
        assert isinstance(mine, hubzarr.HubGroup) and isinstance(theirs, hubzarr.HubGroup)
        assert theirs.keys() == mine.keys(), ref
        assert [k for k, _ in theirs.arrays()] == [k for k, _ in mine.arrays()], ref
        for (_, a), (_, b) in zip(theirs.arrays(), mine.arrays(), strict=True):
            np.testing.assert_array_equal(a[:], b[:])
        labels = theirs["train"]["labels"]  # type: ignore[index]
        np.testing.assert_array_equal(labels[:], [1, 2, 3, 4])
        report = remote.verify(ref)
        assert report.ok, report.problems
        assert (report.objects, report.bytes) == (
            local.verify(ref).objects,
            local.verify(ref).bytes,
        )
    head = remote.load("pub/ds")
    assert isinstance(head, hubzarr.HubGroup)
    assert head.keys() == ["images", "newest", "train"]
    assert remote.load("pub/ds:v1").keys() == ["extra", "images", "train"]  # type: ignore[union-attr]
    assert remote.load("pub/ds:v2").keys() == ["images", "later", "train"]  # type: ignore[union-attr]
    assert head["images"][0].tolist() == [-1, -1, -1]  # type: ignore[index]
    images = head["images"]
    assert isinstance(images, hubzarr.HubArray)
    assert float(images.dask.sum().compute()) == float(local.load("pub/ds")["images"][:].sum())  # type: ignore[index]
    assert remote.gc("pub/ds", grace=0).dry_run  # a dry run only reads
    runner = CliRunner()
    for args in (["ls"], ["log", "pub/ds"], ["info", "pub/ds"], ["verify", "pub/ds:v1"]):
        mine = runner.invoke(app, [*args, "--root", local.root])
        theirs = runner.invoke(app, [*args, "--root", site.url])
        assert theirs.exit_code == 0, theirs.output
        assert theirs.stdout.replace(site.url, "ROOT") == mine.stdout.replace(local.root, "ROOT")
    assert site.outside_requests() == []
