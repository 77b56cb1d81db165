"""Garbage collection: reachable data is never freed, unreachable data and crash orphans are."""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _gcprocs import gc_tagger, gc_writer
from conftest import Backend
from typer.testing import CliRunner
from zarr.core.sync import sync

import hubzarr
import hubzarr.collect
from hubzarr.cli import app
from hubzarr.collect import version_time
from hubzarr.errors import InvalidArgumentError, NotFoundError
from hubzarr.storage import TMP_SUFFIX
from hubzarr.versions import Repository

NAME = "gc/arr"  # a user-qualified name: stored under gc/arr


def _objects(hub: hubzarr.Hub, prefix: str = NAME) -> dict[str, int]:
    listed = sync(hub.storage.list_detailed(prefix, temporaries=True))
    return {p: size for p, (size, _) in listed.items()}


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> None:
    """Collect as if two hours had passed: everything written so far is past any grace."""
    monkeypatch.setattr(hubzarr.collect, "_now", lambda: time.time() + 7200)


def _repo(hub: hubzarr.Hub) -> Repository:
    repo = Repository(hub.storage, hubzarr.names.parse_name(NAME, default_user="library"))
    sync(repo.open())
    return repo


def _make(hub: hubzarr.Hub) -> hubzarr.HubArray:
    arr = hub.array((8, 4), name=NAME, dtype="int32", chunks=(2, 4))
    arr[:] = np.arange(32).reshape(8, 4)
    return arr


def _every_ref_reads(hub: hubzarr.Hub, expected: dict[str, np.ndarray]) -> None:
    for ref, content in expected.items():
        np.testing.assert_array_equal(hub.load(f"{NAME}:{ref}")[:], content, err_msg=ref)
        assert hub.verify(f"{NAME}:{ref}").ok, ref


def test_a_deleted_branch_is_freed_and_everything_reachable_stays(
    hub: hubzarr.Hub, later: None
) -> None:
    arr = _make(hub)
    hub.tag(NAME, "v1")
    hub.branch(f"{NAME}:v1", "dev")
    dev = hub.load(f"{NAME}:dev")
    dev[:] = -1
    hub.tag(f"{NAME}:dev", "d1")
    dev[0] = -2
    arr[1] = 100
    expected = {"main": arr[:], "v1": hub.load(f"{NAME}:v1")[:]}

    assert hub.gc(NAME, grace=0, dry_run=False).objects == 0  # nothing unreachable yet
    _every_ref_reads(hub, {**expected, "dev": dev[:], "d1": hub.load(f"{NAME}:d1")[:]})

    hub.delete_branch(NAME, "dev")
    hub.delete_tag(NAME, "d1")
    before = _objects(hub)
    dry = hub.gc(NAME, grace=0)
    assert (
        dry.dry_run and dry.objects > 0 and dry.versions == 2
    )  # dev's first head (tagged d1), its head after
    assert _objects(hub) == before  # a dry run deletes nothing
    report = hub.gc(NAME, grace=0, dry_run=False)
    assert (report.objects, report.bytes, report.versions) == (dry.objects, dry.bytes, 2)
    after = _objects(hub)
    freed = set(before) - set(after)
    assert len(freed) == report.objects
    assert sum(before[p] for p in freed) == report.bytes
    folders = ("/data/", "/versions/", "/seals/", "/manifests/", "/index/")
    assert all(any(f in p for f in folders) for p in freed), freed
    assert any("/index/" in p for p in freed)  # d1's index root
    _every_ref_reads(hub, expected)
    # The freed versions' marks (a tagger that read a record before it went finds its mark)
    # go one collection later.
    marks = {p for p in _objects(hub) if "/expired/" in p}
    assert len(marks) == 2 and report.versions == 2
    again = hub.gc(NAME, grace=0, dry_run=False)
    assert (again.objects, again.versions) == (2, 0) and not marks & set(_objects(hub))
    assert hub.gc(NAME, grace=0, dry_run=False).objects == 0  # idempotent
    # The deleted names stay taken.
    with pytest.raises(hubzarr.AlreadyExistsError, match="deleted"):
        hub.branch(f"{NAME}:v1", "dev")


def test_gc_goes_through_one_version_folder_at_a_time(tmp_path: Path, later: None) -> None:
    """What gc holds at once is one version's objects and manifest: it never lists the whole
    ``data/`` folder of a repository (10^8 objects over a history would not fit)."""
    from counting import counting_hub

    root = str(tmp_path / "hub")
    hub = hubzarr.Hub(root)
    arr = _make(hub)
    hub.tag(NAME, "v1")
    hub.branch(f"{NAME}:v1", "dev")
    hub.load(f"{NAME}:dev")[0] = 7
    hub.delete_branch(NAME, "dev")
    data = f"{NAME}/{_repo(hub).incarnation}/data"
    folders = {f"{data}/{p.name}" for p in (tmp_path / "hub" / data).iterdir()}
    before = {p for p in _objects(hub) if "/data/" in p}
    counted, counter = counting_hub(root)
    report = counted.gc(NAME, grace=0, dry_run=False)
    listed = [path for op, path in counter.paths if op == "list_detailed" and "/data" in path]
    # Each listing is of one version's folder (heads' folders are listed once more, for the
    # generations a newer one superseded), and every version folder was listed.
    assert all(p.startswith(data + "/") and "/" not in p[len(data) + 1 :] for p in listed)
    assert folders <= set(listed) and len(folders) >= 2  # v1 and dev's head at least
    assert report.versions == 1  # dev's head: its chunk and its records are freed
    freed = before - {p for p in _objects(hub) if "/data/" in p}
    assert len(freed) == 1 and report.objects > 1, freed  # dev's chunk, and dev's records
    np.testing.assert_array_equal(hub.load(f"{NAME}:v1")[:], arr[:])


def test_rewrites_superseded_before_a_tag_are_freed(hub: hubzarr.Hub, later: None) -> None:
    arr = _make(hub)
    for value in range(5):
        arr[0, 0] = value  # five more generations of chunk 0.0 in one head
    hub.tag(NAME, "v1")
    report = hub.gc(NAME, grace=0, dry_run=False)
    assert report.objects == 5  # generations 0-4 of "0.0"; v1 names generation 5
    assert report.versions == 0
    assert hub.load(f"{NAME}:v1")[0, 0] == 4
    _every_ref_reads(hub, {"v1": hub.load(f"{NAME}:v1")[:], "main": arr[:]})


def test_rewrites_in_an_open_head_are_freed_by_sealing_it(hub: hubzarr.Hub, later: None) -> None:
    arr = _make(hub)
    for value in range(4):
        arr[0, 0] = value
    # A fresh reader finds the newest generation by probing from the first one.
    assert hubzarr.Hub(hub.root).load(NAME)[0, 0] == 3
    before = hub.log(NAME)
    dry = hub.gc(NAME, grace=0)
    assert dry.objects == 4 and hub.log(NAME) == before  # generations 0-3 of "0.0"
    report = hub.gc(NAME, grace=0, dry_run=False)
    assert report.objects == 4
    log = hub.log(NAME)
    assert len(log) == len(before) + 1 and log[1].message is not None
    assert "gc" in log[1].message and log[1].id == before[0].id
    expected = np.arange(32).reshape(8, 4)
    expected[0, 0] = 3
    np.testing.assert_array_equal(hub.load(NAME)[:], expected)
    np.testing.assert_array_equal(arr[:], expected)  # the old handle follows the seal
    assert hub.verify(NAME).ok and hub.verify(f"{NAME}:{log[1].id}").ok
    assert hub.gc(NAME, grace=0, dry_run=False).objects == 0  # nothing more to seal


def test_the_grace_period_protects_young_objects(
    hub: hubzarr.Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    _make(hub)
    hub.tag(NAME, "v1")
    hub.branch(f"{NAME}:v1", "dev")
    hub.load(f"{NAME}:dev")[:] = 5
    hub.delete_branch(NAME, "dev")
    assert hub.gc(NAME, grace=60, dry_run=False).objects == 0  # all written just now
    # Five minutes on, data is past a zero grace, but a version younger than RECORD_GRACE_S
    # may be in the hands of an operation in flight (a branch or a tag by id, a revert): it
    # and what it starts from are kept whole.
    monkeypatch.setattr(hubzarr.collect, "_now", lambda: time.time() + 300)
    assert hub.gc(NAME, grace=0).objects == 0
    monkeypatch.setattr(hubzarr.collect, "_now", lambda: time.time() + 660)
    data_and_records = hub.gc(NAME, grace=0)
    assert data_and_records.objects > 0 and data_and_records.versions == 1
    monkeypatch.setattr(hubzarr.collect, "_now", lambda: time.time() + 1800)
    assert hub.gc(NAME, grace=3600, dry_run=False).objects == 0
    monkeypatch.setattr(hubzarr.collect, "_now", lambda: time.time() + 7200)
    report = hub.gc(NAME, grace=3600, dry_run=False)
    assert report.objects == data_and_records.objects and report.versions == 1  # dev's head


def test_orphans_of_a_lost_seal_race_and_a_killed_writer_are_freed(
    local_root: str, later: None
) -> None:
    hub = hubzarr.Hub(local_root)
    _make(hub)
    repo = _repo(hub)

    async def race() -> None:
        # Two sealers of one head: both create a successor record, one seal wins.
        await asyncio.gather(repo.seal("main"), repo.seal("main"))

    sync(race())
    head = sync(repo.branch_head("main"))
    # A writer killed between writing its temporary file and renaming it.
    orphan = Path(local_root) / repo.files.data_path(head, "3.0").replace("/", "/")
    orphan.parent.mkdir(parents=True, exist_ok=True)
    tmp = orphan.with_name(f"3.0.deadbeef{TMP_SUFFIX}")
    tmp.write_bytes(b"half a chunk")
    versions = set(sync(hub.storage.list_dir(repo.path("versions"))))
    report = hub.gc(NAME, grace=0, dry_run=False)
    assert not tmp.exists()
    left = set(sync(hub.storage.list_dir(repo.path("versions"))))
    assert report.versions == len(versions - left) >= 1  # the losing sealer's successor
    assert report.objects >= 2
    np.testing.assert_array_equal(hub.load(NAME)[:], np.arange(32).reshape(8, 4))
    hub.load(NAME)[0] = 1  # the branch still takes writes


def test_a_deleted_incarnation_left_behind_is_freed(hub: hubzarr.Hub, later: None) -> None:
    _make(hub)
    old = _repo(hub)
    # A deletion that stopped after removing repo.json (the first step) leaves the folder.
    sync(hub.storage.delete(f"{old.base}/repo.json"))
    fresh = _make(hub)
    leftovers = {p for p in _objects(hub) if p.startswith(f"{old.incarnation}/")}
    assert leftovers
    report = hub.gc(NAME, grace=0, dry_run=False)
    assert report.objects == len(leftovers)
    assert not {p for p in _objects(hub) if p.startswith(f"{old.incarnation}/")}
    np.testing.assert_array_equal(hub.load(NAME)[:], fresh[:])


# -- gc deletes only what it wrote -------------------------------------------------------------


def _outside(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """A folder outside the hub root with a few files, and what they hold."""
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    for name in ("a.json", "0", "sub/0.0", "repo.json"):
        (outside / name).write_bytes(f"precious {name}".encode())
    return outside, _tree(outside)


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and not p.is_symlink()
    }


def test_gc_never_follows_a_planted_link(tmp_path: Path, later: None) -> None:
    root = tmp_path / "hub"
    hub = hubzarr.Hub(str(root))
    arr = _make(hub)
    hub.tag(NAME, "v1")
    arr[0] = 7
    repo = _repo(hub)
    home = root / repo.path()
    outside, before = _outside(tmp_path)
    deleted_version = "0" * 12 + "deadbeef"
    links = [
        root / repo.base / "0123456789abcdef",  # named like a deleted incarnation
        root / repo.base / "elsewhere",
        home / "data" / deleted_version,  # named like an unreachable version's data
        home / "refs" / "archive",
    ]
    for link in links:
        link.symlink_to(outside, target_is_directory=True)
    file_links = [
        home / "versions" / f"{deleted_version}.json",
        home / "manifests" / f"{deleted_version}.json",
        home / "data" / repo.incarnation / "0.0",
    ]
    head = next(p for p in (home / "data").iterdir() if not p.is_symlink())
    file_links.append(head / "9.0")
    for link in file_links:
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(outside / "a.json")
    expected = {"main": arr[:], "v1": hub.load(f"{NAME}:v1")[:]}

    result = CliRunner().invoke(app, ["gc", NAME, "--yes", "--grace", "0s", "--root", str(root)])
    assert result.exit_code == 0, result.output
    hub.gc(NAME, grace=0, dry_run=False)
    assert _tree(outside) == before
    assert all(link.is_symlink() for link in links + file_links)
    _every_ref_reads(hub, expected)


def test_gc_leaves_a_nested_root_and_unknown_files_alone(tmp_path: Path, later: None) -> None:
    root = tmp_path / "hub"
    outer = hubzarr.Hub(str(root))
    _make(outer)
    repo = _repo(outer)
    nested = {
        name: hubzarr.Hub(str(root / repo.base / name)) for name in ("inner", "0123456789abcdef")
    }
    for inner in nested.values():
        group = inner.group("bob/data")
        group.create_array("images", (4,), dtype="int8", chunks=(2,))[:] = [1, 2, 3, 4]
        inner.tag("bob/data", "v1")
    home = root / repo.path()
    unknown = [
        root / repo.base / "notes.txt",
        home / "README",
        home / "data" / "README",
        home / "data" / "notes" / "0.0",
        home / "versions" / "notes.json",
        home / "versions" / "sub" / f"{'0' * 20}.json",
        home / "seals" / "draft.txt",
        home / "manifests" / "x.json",
    ]
    for path in unknown:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not hubzarr's")

    report = outer.gc(NAME, grace=0, dry_run=False)
    assert report.objects == 0
    assert all(path.read_bytes() == b"not hubzarr's" for path in unknown)
    for inner in nested.values():
        images = inner.load("bob/data:v1")["images"]  # type: ignore[index]
        assert images[:].tolist() == [1, 2, 3, 4]
        assert inner.verify("bob/data:v1").ok
    np.testing.assert_array_equal(outer.load(NAME)[:], np.arange(32).reshape(8, 4))


def test_a_write_that_lands_after_a_seal_changes_nothing_sealed_and_is_freed(
    local_or_s3: Backend, later: None
) -> None:
    hub = local_or_s3.hub()
    arr = _make(hub)
    store = arr.store
    sealed = sync(store.session.resolved()).version
    repo = _repo(hub)

    # The write lands in the head after the sealer listed it: it is repeated in the successor,
    # and its first object, named by no manifest, is garbage.
    entered, gate = asyncio.Event(), asyncio.Event()
    storage = store.storage
    real_create, real_write = storage.create, storage.write

    async def held(path: str) -> None:
        if f"/data/{sealed}/1.0" in path:  # the rewrite, in the head about to be sealed
            entered.set()
            await gate.wait()

    async def late_create(path: str, data: Any, **kwargs: Any) -> None:
        await held(path)
        await real_create(path, data, **kwargs)

    async def late_write(path: str, data: Any, **kwargs: Any) -> None:
        await held(path)
        await real_write(path, data, **kwargs)

    storage.create = late_create  # type: ignore[method-assign]
    storage.write = late_write  # type: ignore[method-assign]

    async def scenario() -> None:
        write = asyncio.ensure_future(store.set("1.0", _buffer(arr, 7)))
        await entered.wait()  # the write passed its seal check and is on its way
        await repo.seal("main")  # seal record, then the listing
        gate.set()
        await write

    sync(scenario())
    assert hub.load(f"{NAME}:{sealed}")[2, 0] == 8  # unchanged in the sealed version
    assert hub.load(NAME)[2, 0] == 7
    report = hub.gc(NAME, grace=0, dry_run=False)
    assert report.objects >= 1
    assert hub.load(NAME)[2, 0] == 7
    assert hub.verify(f"{NAME}:{sealed}").ok


def _buffer(arr: hubzarr.HubArray, value: int) -> Any:
    from zarr.core.buffer import default_buffer_prototype

    chunk = np.full(arr.chunks, value, dtype=arr.dtype)
    encoded = arr.zarr.metadata.compressor.encode(chunk.tobytes())  # type: ignore[union-attr]
    return default_buffer_prototype().buffer.from_bytes(encoded)


def test_gc_checks_its_arguments(hub: hubzarr.Hub) -> None:
    _make(hub)
    with pytest.raises(InvalidArgumentError):
        hub.gc(f"{NAME}:main")
    with pytest.raises(InvalidArgumentError):
        hub.gc(NAME, grace=-1)
    with pytest.raises(NotFoundError):
        hub.gc("gc/nothing")


def test_version_ids_carry_their_creation_time() -> None:
    from hubzarr.records import new_version_id

    before = time.time()
    assert before - 0.01 <= version_time(new_version_id()) <= time.time() + 0.01


def test_hub_gc_is_a_dry_run_unless_yes(hub: hubzarr.Hub, later: None) -> None:
    _make(hub)
    hub.tag(NAME, "v1")
    hub.branch(f"{NAME}:v1", "dev")
    hub.load(f"{NAME}:dev")[:] = 5
    runner = CliRunner()
    assert runner.invoke(app, ["branch", "-d", NAME, "dev", "--root", hub.root]).exit_code == 0
    before = _objects(hub)
    dry = runner.invoke(app, ["gc", NAME, "--grace", "0", "--root", hub.root])
    assert dry.exit_code == 0, dry.output
    assert "would free" in dry.output and "--yes" in dry.output
    assert _objects(hub) == before
    done = runner.invoke(app, ["gc", NAME, "--grace", "0s", "--yes", "--root", hub.root])
    assert done.exit_code == 0, done.output
    assert "freed" in done.output
    assert len(_objects(hub)) < len(before)
    bad = runner.invoke(app, ["gc", NAME, "--grace", "soon", "--root", hub.root])
    assert bad.exit_code == 2 and "duration" in bad.output


# -- gc while others write and tag ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_gc_during_writes_and_tags_frees_nothing_reachable(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    backend = (
        Backend("local", str(tmp_path / "hub"))
        if kind == "local"
        else request.getfixturevalue("s3_backend")
    )
    hub = backend.hub()
    hub.array((16,), name=NAME, dtype="int64", chunks=(4,))
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    rounds = 12
    writer = ctx.Process(
        target=gc_writer, args=(backend.root, backend.options, NAME, rounds, results)
    )
    tagger = ctx.Process(
        target=gc_tagger, args=(backend.root, backend.options, NAME, rounds, results)
    )
    writer.start()
    tagger.start()
    collections = 0
    # Collect with no grace period at all, over and over, while both run.
    freed = 0
    while writer.is_alive() or tagger.is_alive() or collections < 2:
        freed += hub.gc(NAME, grace=0, dry_run=False).objects
        collections += 1
    assert freed > 0, "the collections ran while there was garbage to free"
    writer.join()
    tagger.join()
    assert writer.exitcode == 0 and tagger.exitcode == 0
    reports = [results.get(timeout=60) for _ in range(2)]
    tags: dict[str, str] = next(r for r in reports if r[0] == "tags")[1]
    final: list[int] = next(r for r in reports if r[0] == "writes")[1]
    assert len(tags) == rounds
    hub.gc(NAME, grace=0, dry_run=False)
    for tag, digest in tags.items():
        content = hub.load(f"{NAME}:{tag}")[:]
        assert hashlib.sha256(content.tobytes()).hexdigest() == digest, tag
        assert hub.verify(f"{NAME}:{tag}").ok
    np.testing.assert_array_equal(hub.load(NAME)[:], final)
    assert hub.verify(NAME).ok
    assert collections >= 2
