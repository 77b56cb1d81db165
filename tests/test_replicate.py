"""Copies of a repository between roots (``hubzarr.copy`` / ``hub cp`` from repository to
repository): every version, tag and branch, byte for byte; only what is missing; a new
repository visible only when complete; branches moved forward, never over changes the
destination has; shallow copies of one state."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
from _copyprocs import kill_copy
from conftest import Backend
from servers import gcs_options, make_bucket, make_gcs_bucket, s3_options
from typer.testing import CliRunner

import hubzarr
from hubzarr.cli import app
from hubzarr.errors import (
    AccessDeniedError,
    AlreadyExistsError,
    CorruptChunkError,
    DivergedError,
    InvalidArgumentError,
    NotFoundError,
    ReadOnlyError,
)
from hubzarr.names import Name
from hubzarr.session import Session
from hubzarr.storage import Storage

KINDS = ("local", "memory", "s3", "gcs")


def _backend(kind: str, request: pytest.FixtureRequest, folder: Path) -> Iterator[Backend]:
    if kind == "local":
        yield Backend("local", str(folder / "hub"))
    elif kind == "memory":
        path = f"/hubzarr-test-{uuid.uuid4().hex}"
        yield Backend("memory", f"memory://{path}")
        fs = fsspec.filesystem("memory")
        for key in [k for k in fs.store if k.startswith(path + "/")]:
            del fs.store[key]
    elif kind == "s3":
        server = request.getfixturevalue("s3_server")
        bucket = f"copy-{uuid.uuid4().hex[:16]}"
        make_bucket(server.url, bucket)
        yield Backend("s3", f"s3://{bucket}/hub", s3_options(server.url), server)
    else:
        server = request.getfixturevalue("gcs_server")
        bucket = f"copy-{uuid.uuid4().hex[:16]}"
        make_gcs_bucket(server.url, bucket)
        yield Backend("gcs", f"gs://{bucket}/hub", gcs_options(server.url), server)


@pytest.fixture(params=KINDS)
def source(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    yield from _backend(request.param, request, tmp_path / "source")


@pytest.fixture(params=KINDS)
def destination(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    yield from _backend(request.param, request, tmp_path / "destination")


@pytest.fixture
def a(tmp_path: Path) -> hubzarr.Hub:
    return hubzarr.Hub(str(tmp_path / "a"))


@pytest.fixture
def b(tmp_path: Path) -> hubzarr.Hub:
    return hubzarr.Hub(str(tmp_path / "b"))


def history(hub: hubzarr.Hub, name: str = "alice/m") -> None:
    """A repository with tags, a second branch, and writes in both branches' open heads."""
    arr = hub.array((60, 40), name, chunks=(10, 10), dtype="i4")
    arr[:] = np.arange(2400).reshape(60, 40)
    hub.tag(name, "v1", message="first")
    arr[:10] = -1
    arr[50:] = 0  # the fill value: chunks deleted (tombstones)
    hub.tag(name, "v2")
    hub.branch(name, "dev")
    dev = hub.load_array(f"{name}:dev")
    dev[20:30] = 7
    arr[0, 0] = 42  # main's open head holds a write of its own
    arr.zarr.attrs["note"] = "open"


def refs_of(hub: hubzarr.Hub, name: str = "alice/m") -> list[str]:
    return sorted(
        {r for e in hub.log(name) for r in e.refs}
        | {r for e in hub.log(f"{name}:dev") for r in e.refs}
    )


def same_state(
    x: hubzarr.Hub, y: hubzarr.Hub, refs: tuple[str, ...], name: str = "alice/m"
) -> None:
    for ref in refs:
        left, right = (
            x.load_array(f"{name}:{ref}", mode="r"),
            y.load_array(f"{name}:{ref}", mode="r"),
        )
        np.testing.assert_array_equal(left[:], right[:])
        assert dict(left.zarr.attrs) == dict(right.zarr.attrs)


REFS = ("main", "dev", "v1", "v2")


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# -- between every pair of roots -------------------------------------------------------------


def test_a_copy_carries_every_version_tag_and_branch(source: Backend, destination: Backend) -> None:
    src, dst = source.hub(), destination.hub()
    history(src)
    report = src.copy("alice/m", "alice/m", to_root=dst)
    same_state(src, dst, REFS)
    assert dst.ls() == ["alice/m"]
    # Sealed versions keep their ids: the tags name the same versions at both roots.
    for tag in ("v1", "v2"):
        assert src.log(f"alice/m:{tag}")[0].id == dst.log(f"alice/m:{tag}")[0].id
    assert dst.log("alice/m:v1")[0].message == "first"
    assert report.refs == 4 and report.versions >= 3 and report.objects > 0
    again = src.copy("alice/m", "alice/m", to_root=dst)
    assert (again.objects, again.versions, again.refs) == (0, 0, 0)
    assert "nothing copied" in str(again)
    # The copy's branches take writes of their own, at their own root only.
    arr = dst.load_array("alice/m")
    arr[5] = 5
    assert src.load_array("alice/m")[5, 0] != 5


def test_sealed_objects_are_copied_byte_for_byte(
    a: hubzarr.Hub, b: hubzarr.Hub, tmp_path: Path
) -> None:
    history(a)
    a.copy("alice/m", "alice/m", to_root=b)
    source = {k: v for k, v in files(tmp_path / "a" / "alice" / "m").items() if "/data/" in k}
    copied = {k: v for k, v in files(tmp_path / "b" / "alice" / "m").items() if "/data/" in k}
    strip = lambda k: k.split("/", 1)[1]  # noqa: E731 (the incarnation folders differ)
    sealed = {strip(k): v for k, v in source.items() if strip(k) in {strip(c) for c in copied}}
    assert sealed  # every sealed object copied is identical, bytes and name
    assert all(
        v == next(c for ck, c in copied.items() if strip(ck) == k) for k, v in sealed.items()
    )


def test_a_second_copy_brings_only_what_is_new(a: hubzarr.Hub, b: hubzarr.Hub) -> None:
    history(a)
    first = a.copy("alice/m", "alice/m", to_root=b)
    arr = a.load_array("alice/m")
    arr[30:40] = 3  # 4 chunks
    a.tag("alice/m", "v3")
    second = a.copy("alice/m", "alice/m", to_root=b)
    same_state(a, b, (*REFS, "v3"))
    assert 0 < second.objects < first.objects
    assert second.refs == 2  # v3, and main moved forward (dev is unchanged)
    arr[0] = 1  # the open head again
    third = a.copy("alice/m", "alice/m", to_root=b)
    same_state(a, b, ("main",))
    assert third.versions == 1 and third.refs == 1


def test_a_destination_handle_follows_its_branch_moved_by_a_copy(
    a: hubzarr.Hub, b: hubzarr.Hub
) -> None:
    history(a)
    a.copy("alice/m", "alice/m", to_root=b)
    held = b.load_array("alice/m")  # open before the copy moves main
    a.load_array("alice/m")[40:50] = 9
    a.copy("alice/m", "alice/m", to_root=b)
    held[0, 1] = 11  # follows the seal to the new head, whose state starts elsewhere
    expected = a.load_array("alice/m")[:]
    expected[0, 1] = 11
    np.testing.assert_array_equal(b.load_array("alice/m")[:], expected)
    np.testing.assert_array_equal(held[:], expected)


def test_a_diverged_branch_is_refused_and_nothing_changes(
    a: hubzarr.Hub, b: hubzarr.Hub, tmp_path: Path
) -> None:
    history(a)
    a.copy("alice/m", "alice/m", to_root=b)
    b.load_array("alice/m:dev")[0] = 100  # a change the source does not have
    a.load_array("alice/m")[1] = 1
    a.tag("alice/m", "v3")
    before = files(tmp_path / "b")
    with pytest.raises(DivergedError, match="'dev'") as err:
        a.copy("alice/m", "alice/m", to_root=b)
    assert "new name" in str(err.value)
    assert files(tmp_path / "b") == before
    # A tag of the same name on other data is divergence too.
    b.delete_branch("alice/m", "dev")
    a.delete_branch("alice/m", "dev")
    b.tag("alice/m", "v3")
    before = files(tmp_path / "b")
    with pytest.raises(DivergedError, match="'v3'"):
        a.copy("alice/m", "alice/m", to_root=b)
    assert files(tmp_path / "b") == before


def test_tags_made_at_the_destination_without_writes_do_not_diverge(
    a: hubzarr.Hub, b: hubzarr.Hub
) -> None:
    history(a)
    a.copy("alice/m", "alice/m", to_root=b)
    b.tag("alice/m", "mirror-1")  # seals main's empty head there: the same state
    a.load_array("alice/m")[2] = 2
    a.copy("alice/m", "alice/m", to_root=b)
    same_state(a, b, ("main",))


def test_another_repository_of_the_same_name_is_refused(
    a: hubzarr.Hub, b: hubzarr.Hub, tmp_path: Path
) -> None:
    history(a)
    b.array((3,), "alice/m", dtype="i4")[:] = 1
    before = files(tmp_path / "b")
    with pytest.raises(AlreadyExistsError, match="not a copy"):
        a.copy("alice/m", "alice/m", to_root=b)
    assert files(tmp_path / "b") == before


def test_bad_requests_are_refused_before_anything_is_written(
    a: hubzarr.Hub, b: hubzarr.Hub, tmp_path: Path
) -> None:
    history(a)
    with pytest.raises(InvalidArgumentError, match="same repository"):
        a.copy("alice/m", "alice/m")
    with pytest.raises(InvalidArgumentError, match="without a ref"):
        a.copy("alice/m", "alice/n:v1")
    with pytest.raises(InvalidArgumentError, match="given twice"):
        a.copy("alice/m", f"{tmp_path / 'b'}::alice/m", to_root=b)
    with pytest.raises(InvalidArgumentError, match="tag="):
        a.copy("alice/m", "alice/n", tag="x")
    with pytest.raises(NotFoundError):
        a.copy("alice/none", "alice/m", to_root=b)
    with pytest.raises(NotFoundError):
        a.copy("alice/m:nope", "alice/m", to_root=b)
    assert b.ls() == [] and a.ls() == ["alice/m"]


def test_a_corrupt_source_object_publishes_nothing(
    a: hubzarr.Hub, b: hubzarr.Hub, tmp_path: Path
) -> None:
    history(a)
    entry = asyncio.run(a.reader("alice/m:v1").entries())["3.2"]
    path = tmp_path / "a" / entry.path
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptChunkError, match=r"'3\.2'"):
        a.copy("alice/m", "alice/m", to_root=b)
    assert b.ls() == []


def test_a_copy_within_one_root_makes_a_second_name(a: hubzarr.Hub) -> None:
    history(a)
    a.copy("alice/m", "bob/m")
    same_state(a, a, REFS)
    for ref in REFS:
        np.testing.assert_array_equal(
            a.load_array(f"alice/m:{ref}")[:], a.load_array(f"bob/m:{ref}")[:]
        )


# -- writes that race a copy's move ----------------------------------------------------------


class _WriteBeforeSeal(Storage):
    """Destination storage that lets a writer write into the branch's head just before the
    copy seals it: the write lands after the copy checked the head was empty."""

    def __init__(self, inner: Storage) -> None:
        self._inner = inner
        self.url = inner.url
        self.read_only = inner.read_only
        self.armed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def read(self, path: str) -> bytes | None:
        return await self._inner.read(path)

    async def size(self, path: str) -> int | None:
        return await self._inner.size(path)

    async def write(self, path: str, data: Any, *, durable: bool = False) -> None:
        await self._inner.write(path, data, durable=durable)

    async def create(
        self, path: str, data: Any, *, durable: bool = True, unique: bool = True
    ) -> None:
        if self.armed and "/seals/" in path:
            self.armed = False
            writer = Session(self._inner, Name("alice", "m", "main"))
            await writer.write(".zattrs", b'{"late": true}')
        await self._inner.create(path, data, durable=durable, unique=unique)

    async def delete(self, path: str) -> None:
        await self._inner.delete(path)

    async def delete_prefix(self, prefix: str) -> None:
        await self._inner.delete_prefix(prefix)

    async def list(self, prefix: str) -> dict[str, int]:
        return await self._inner.list(prefix)

    async def list_dir(self, prefix: str) -> list[str]:
        return await self._inner.list_dir(prefix)

    async def list_detailed(
        self, prefix: str, *, temporaries: bool = False
    ) -> dict[str, tuple[int, float]]:
        return await self._inner.list_detailed(prefix, temporaries=temporaries)


def test_a_write_racing_the_move_of_its_branch_is_kept(a: hubzarr.Hub, tmp_path: Path) -> None:
    history(a)
    plain = hubzarr.Hub(str(tmp_path / "b"))
    a.copy("alice/m", "alice/m", to_root=plain)
    racing = _WriteBeforeSeal(plain.storage)
    b = hubzarr.Hub(str(tmp_path / "b"), storage=racing)
    a.load_array("alice/m")[45] = 45
    racing.armed = True
    a.copy("alice/m", "alice/m", to_root=b)
    assert not racing.armed  # the write happened, after the plan, before the seal
    moved = plain.load_array("alice/m")
    np.testing.assert_array_equal(moved[:], a.load_array("alice/m")[:])
    assert moved.zarr.attrs["late"] is True


# -- shallow copies --------------------------------------------------------------------------


def test_a_shallow_copy_holds_one_state_as_its_first_version(
    a: hubzarr.Hub, b: hubzarr.Hub
) -> None:
    history(a)
    report = a.copy("alice/m:v2", "alice/v2", to_root=b)
    np.testing.assert_array_equal(b.load_array("alice/v2")[:], a.load_array("alice/m:v2")[:])
    np.testing.assert_array_equal(b.load_array("alice/v2:v2")[:], a.load_array("alice/m:v2")[:])
    log = b.log("alice/v2")
    assert len(log) == 2 and log[1].parent is None and "tag: v2" in log[1].refs
    state = asyncio.run(a.reader("alice/m:v2").entries())
    assert report.objects == len(state) and report.versions == 1
    a.copy("alice/m:dev", "alice/dev", to_root=b)
    np.testing.assert_array_equal(b.load_array("alice/dev")[:], a.load_array("alice/m:dev")[:])
    with pytest.raises(AlreadyExistsError, match="new repository"):
        a.copy("alice/m:v1", "alice/v2", to_root=b)


# -- from a read-only web root ---------------------------------------------------------------


def test_a_copy_from_an_http_root(served: tuple[hubzarr.Hub, str], b: hubzarr.Hub) -> None:
    local, url = served
    history(local)
    web = hubzarr.Hub(url)
    web.copy("alice/m", "alice/m", to_root=b)
    same_state(local, b, REFS)
    with pytest.raises(ReadOnlyError, match="read-only"):
        b.copy("alice/m", "bob/m", to_root=web)


# -- killed copies ---------------------------------------------------------------------------


@pytest.mark.parametrize("update", [False, True], ids=["new", "update"])
def test_a_killed_copy_leaves_no_half_copy_and_the_next_one_finishes(
    a: hubzarr.Hub, tmp_path: Path, update: bool
) -> None:
    history(a)
    folder = tmp_path / "b"
    b = hubzarr.Hub(str(folder))
    if update:
        a.copy("alice/m", "alice/m", to_root=b)
        a.load_array("alice/m")[30:40] = 3
        a.tag("alice/m", "v3")
        a.load_array("alice/m:dev")[0] = 8
    else:
        folder.mkdir()
    old = {ref: b.load_array(f"alice/m:{ref}", mode="r")[:] for ref in REFS} if update else {}
    pristine = tmp_path / "pristine"
    shutil.copytree(folder, pristine)
    # What a whole copy does: its objects (in this process), its writes (in a child).
    shutil.copytree(pristine, tmp_path / "probe")
    full = a.copy("alice/m", "alice/m", to_root=str(tmp_path / "probe"))
    shutil.copytree(pristine, tmp_path / "probe2")
    root = str(tmp_path / "a")
    counted = kill_copy(
        "alice/m", f"{tmp_path / 'probe2'}::alice/m", root, "before", 10**9, tmp_path / "log"
    )
    assert counted is not None
    writes = len([e for e in counted if e.startswith(("create", "write "))])
    assert writes > full.objects
    for at in sorted({1, writes // 4, writes // 2, writes * 3 // 4, writes}):
        for when in ("before", "after"):
            shutil.rmtree(folder)
            shutil.copytree(pristine, folder)
            log = tmp_path / f"log-{at}-{when}"
            assert kill_copy("alice/m", f"{folder}::alice/m", root, when, at, log) is None
            # Every ref reads whole, the old state or the new, never half of one.
            assert b.ls() == ([] if not update and (at, when) != (writes, "after") else ["alice/m"])
            for ref in (*REFS, "v3") if b.ls() else ():
                try:
                    values = b.load_array(f"alice/m:{ref}", mode="r")[:]
                except NotFoundError:
                    assert ref == "v3" or not update
                    continue
                new = a.load_array(f"alice/m:{ref}", mode="r")[:]
                assert np.array_equal(values, new) or np.array_equal(values, old[ref])
            report = a.copy("alice/m", "alice/m", to_root=b)
            same_state(a, b, (*REFS, "v3") if update else REFS)
            if at > writes // 2:  # the objects were copied: the next copy resumes
                assert report.objects < full.objects


# -- the command line ------------------------------------------------------------------------


def test_hub_cp_copies_between_roots(tmp_path: Path, a: hubzarr.Hub, b: hubzarr.Hub) -> None:
    history(a)
    runner = CliRunner()
    roots = ["--root", str(tmp_path / "a")]
    result = runner.invoke(app, ["cp", "alice/m", f"{tmp_path / 'b'}::alice/m", *roots])
    assert result.exit_code == 0, result.output
    assert "versions" in result.output and "refs" in result.output
    same_state(a, b, REFS)
    result = runner.invoke(
        app, ["cp", "alice/m", "alice/m", "--to-root", str(tmp_path / "b"), *roots]
    )
    assert result.exit_code == 0, result.output
    assert "nothing copied" in result.output
    b.load_array("alice/m")[0] = 0
    a.load_array("alice/m")[0] = 1
    result = runner.invoke(
        app, ["cp", "alice/m", "alice/m", "--to-root", str(tmp_path / "b"), *roots]
    )
    assert result.exit_code == 1
    assert "'main'" in result.output and "new name" in result.output


def test_missing_credentials_at_either_end_are_named(
    a: hubzarr.Hub, b: hubzarr.Hub, s3_server: Any
) -> None:
    history(a)
    make_bucket(s3_server.url, "nokeys")
    options = {k: v for k, v in s3_options(s3_server.url).items() if k not in ("key", "secret")}
    bucket = hubzarr.Hub("s3://nokeys/hub", storage_options=options)
    with pytest.raises(AccessDeniedError, match="no credentials were found for s3://nokeys/hub"):
        a.copy("alice/m", "alice/m", to_root=bucket)
    with pytest.raises(AccessDeniedError, match="no credentials"):
        bucket.copy("alice/m", "alice/m", to_root=b)
    assert b.ls() == []
