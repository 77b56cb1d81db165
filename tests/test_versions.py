"""Versions: sealed states never change, snapshots copy nothing, sealed reads cost one read."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from _procs import race
from counting import counting_hub
from zarr.core.sync import sync

import hubzarr
import hubzarr.versions
from hubzarr import records
from hubzarr.errors import InvalidArgumentError
from hubzarr.versions import Repository


def _make(hub: hubzarr.Hub, name: str = "test/arr:main", n: int = 8) -> hubzarr.HubArray:
    arr = hub.array((n, 4), name=name, dtype="int32", chunks=(2, 4))
    arr[:] = np.arange(n * 4).reshape(n, 4) + 1
    return arr


def test_a_tag_never_changes_whatever_is_written_later(hub: hubzarr.Hub) -> None:
    arr = _make(hub)
    frozen = arr[:]
    hub.tag("test/arr", "v1")
    arr[0] = -5  # a chunk rewritten
    arr[2:4] = 0  # a chunk equal to the fill value: zarr deletes it
    arr[7, 3] = 99
    hub.tag("test/arr", "v2")
    arr[:] = 7
    np.testing.assert_array_equal(hub.load("test/arr:v1")[:], frozen)
    expected_v2 = frozen.copy()
    expected_v2[0] = -5
    expected_v2[2:4] = 0
    expected_v2[7, 3] = 99
    np.testing.assert_array_equal(hub.load("test/arr:v2")[:], expected_v2)
    np.testing.assert_array_equal(hub.load("test/arr")[:], np.full((8, 4), 7))


def test_a_chunk_deleted_at_the_head_does_not_fall_through_to_an_ancestor(
    hub: hubzarr.Hub,
) -> None:
    arr = _make(hub)
    hub.tag("test/arr", "v1")
    arr[0:2] = 0  # the chunk now equals the fill value and is deleted
    np.testing.assert_array_equal(hub.load("test/arr")[0:2], 0)
    hub.tag("test/arr", "v2")
    np.testing.assert_array_equal(hub.load("test/arr:v2")[0:2], 0)
    np.testing.assert_array_equal(hub.load("test/arr:v1")[0:2], [[1, 2, 3, 4], [5, 6, 7, 8]])


def test_branches_are_independent(hub: hubzarr.Hub) -> None:
    arr = _make(hub)
    base = arr[:]
    hub.tag("test/arr", "v1")
    hub.branch("test/arr:v1", "exp")
    hub.branch("test/arr", "live")  # from a branch: seals main's head first
    exp = hub.load("test/arr:exp")
    exp[0] = 100
    arr[1] = 200
    np.testing.assert_array_equal(hub.load("test/arr:exp")[0], 100)
    np.testing.assert_array_equal(hub.load("test/arr:exp")[1], base[1])
    np.testing.assert_array_equal(hub.load("test/arr:main")[1], 200)
    np.testing.assert_array_equal(hub.load("test/arr:main")[0], base[0])
    np.testing.assert_array_equal(hub.load("test/arr:live")[:], base)
    np.testing.assert_array_equal(hub.load("test/arr:v1")[:], base)


def test_a_version_id_is_a_ref(hub: hubzarr.Hub) -> None:
    arr = _make(hub)
    version = hub.tag("test/arr", "v1")
    arr[:] = 3
    by_id = hub.load(f"test/arr:{version}")
    assert by_id.read_only and by_id.version == version
    np.testing.assert_array_equal(by_id[:], hub.load("test/arr:v1")[:])


def test_reader_at_a_branch_follows_a_tag_taken_elsewhere(hub: hubzarr.Hub) -> None:
    writer = _make(hub)
    reader = hubzarr.Hub(hub.root).load("test/arr")
    old_version = reader.version
    hub.tag("test/arr", "v1")
    writer[0] = 42
    assert reader[0].tolist() == [42] * 4
    assert reader.version != old_version


def test_log_lists_versions_newest_first_with_refs_and_messages(hub: hubzarr.Hub) -> None:
    _make(hub)
    v1 = hub.tag("test/arr", "v1", message="first")
    v2 = hub.tag("test/arr", "v2", message="second")
    entries = hub.log("test/arr")
    assert [e.id for e in entries[1:]] == [v2, v1]
    head = entries[0]
    assert not head.sealed and head.refs == ("main",) and head.parent == v2
    assert entries[1].message == "second" and entries[1].refs == ("tag: v2",)
    assert entries[2].message == "first" and entries[2].parent is None
    assert [e.time for e in entries[1:]] == sorted((e.time for e in entries[1:]), reverse=True)
    assert [e.id for e in hub.log("test/arr:v1")] == [v1]


def test_ref_names_are_unique_across_branches_and_tags(hub: hubzarr.Hub) -> None:
    _make(hub)
    hub.tag("test/arr", "v1")
    with pytest.raises(hubzarr.AlreadyExistsError, match="tag named 'v1'"):
        hub.tag("test/arr", "v1")
    with pytest.raises(hubzarr.AlreadyExistsError, match="branch named 'main'"):
        hub.tag("test/arr", "main")
    with pytest.raises(hubzarr.AlreadyExistsError, match="tag named 'v1'"):
        hub.branch("test/arr", "v1")
    assert [e.refs for e in hub.log("test/arr:v1")] == [("tag: v1",)]


def test_missing_refs_name_close_matches(hub: hubzarr.Hub) -> None:
    _make(hub)
    hub.tag("test/arr", "release-1")
    with pytest.raises(hubzarr.NotFoundError, match="did you mean release-1"):
        hub.load("test/arr:release-2")
    with pytest.raises(hubzarr.NotFoundError, match="did you mean test/arr"):
        hub.load("test/ar")


def test_sealed_reads_cost_one_storage_read_per_chunk(hub: hubzarr.Hub) -> None:
    arr = _make(hub, n=16)  # 8 chunks
    for i in range(10):
        arr[i % 16] = i
        hub.tag("test/arr", f"v{i}")
    counted, counter = counting_hub(hub.root)
    deep = counted.load("test/arr:v9")
    counter.reset()
    data = deep[:]
    assert counter.calls == {"read": 8}, counter.calls
    assert len({p for _, p in counter.paths}) == 8
    assert data[9].tolist() == [9] * 4


def _tag_cost(hub: hubzarr.Hub, name: str, chunks: int) -> tuple[dict[str, int], int]:
    arr = hub.array((chunks,), name=name, dtype="uint8", chunks=(1,))
    arr[:] = 1
    hub.tag(name, "base")
    arr[0] = 2
    counted, counter = counting_hub(hub.root)
    counted.tag(name, "next")
    listed = sum(1 for op, _ in counter.paths if op == "list")
    return dict(counter.calls), listed


def test_tag_cost_does_not_grow_with_the_array(root: str) -> None:
    # 1,000 chunks: past the few a root holds itself, so both versions' indexes are sharded.
    small_calls, _ = _tag_cost(hubzarr.Hub(root), "test/small", 1_000)
    large_calls, _ = _tag_cost(hubzarr.Hub(root), "test/large", 10_000)
    assert small_calls == large_calls


def test_tag_copies_no_chunk(hub: hubzarr.Hub) -> None:
    arr = _make(hub)
    arr[0] = 9
    counted, counter = counting_hub(hub.root)
    counted.tag("test/arr", "v1")
    touched = [p for op, p in counter.paths if op in ("write", "create")]
    assert touched and not any("/data/" in p for p in touched), touched


def test_checkpoints_bound_the_manifests_read_on_open(
    hub: hubzarr.Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hubzarr.versions, "LAYOUT", 2)  # layout 3 opens by the index root
    monkeypatch.setattr(records, "CHECKPOINT_EVERY", 3)
    arr = _make(hub, n=16)
    expected = {}
    for i in range(11):
        arr[i] = -i
        if i % 4 == 3:
            arr[i - 1 : i + 1] = 0  # a whole chunk deleted, carried through checkpoints
        expected[f"v{i}"] = arr[:]
        hub.tag("test/arr", f"v{i}")
    for tag, data in expected.items():
        np.testing.assert_array_equal(hub.load(f"test/arr:{tag}")[:], data)
    counted, counter = counting_hub(hub.root)
    store = counted.store("test/arr")
    assert store.session.pinned is not None  # opened, which reads the chain's manifests
    manifests = [p for op, p in counter.paths if "/manifests/" in p]
    assert 0 < len(manifests) <= 3


def test_a_seal_interrupted_halfway_is_finished_by_the_next_reader(
    hub: hubzarr.Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    arr = _make(hub)
    expected = arr[:]

    class CrashError(Exception):
        pass

    async def crash(self: Repository, version: str, seal: dict[str, Any]) -> None:
        raise CrashError  # the sealer stops right after publishing the seal record

    with monkeypatch.context() as patch:
        patch.setattr(Repository, "_finish_seal", crash)
        with pytest.raises(CrashError):
            hub.tag("test/arr", "v1")
    assert "v1" not in {r for e in hub.log("test/arr") for r in e.refs}
    again = hubzarr.Hub(hub.root).load("test/arr")
    np.testing.assert_array_equal(again[:], expected)
    again[0] = 5
    hub.tag("test/arr", "v1")
    sealed = [e for e in hub.log("test/arr") if e.sealed]
    assert len(sealed) == 2  # the interrupted seal was completed, then v1 sealed the next head
    np.testing.assert_array_equal(hub.load(f"test/arr:{sealed[1].id}")[:], expected)
    assert hub.load("test/arr:v1")[0].tolist() == [5] * 4


def test_corrupt_chunks_are_detected(local_root: str) -> None:
    hub = hubzarr.Hub(local_root)
    arr = _make(hub)
    hub.tag("test/arr", "v1")
    chunk_files = sorted(
        p
        for p in (hub.storage.root / "test" / "arr").rglob("data/*/1.0")  # type: ignore[attr-defined]
    )
    assert len(chunk_files) == 1
    blob = bytearray(chunk_files[0].read_bytes())
    blob[-1] ^= 0x01
    chunk_files[0].write_bytes(bytes(blob))
    with pytest.raises(hubzarr.CorruptChunkError, match=r"'1\.0' of test/arr:v1"):
        hub.load("test/arr:v1")[2]
    chunk_files[0].write_bytes(b"")
    with pytest.raises(hubzarr.CorruptChunkError, match="no valid hubzarr header"):
        hub.load("test/arr:v1")[2]
    np.testing.assert_array_equal(hub.load("test/arr:v1")[0], [1, 2, 3, 4])
    assert arr.shape == (8, 4)


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'{"layout": 1}'])
def test_malformed_repository_metadata_is_a_format_error(local_root: str, content: bytes) -> None:
    hub = hubzarr.Hub(local_root)
    _make(hub)
    repo_json = hub.storage.root / "test" / "arr" / "repo.json"  # type: ignore[attr-defined]
    repo_json.write_bytes(content)
    with pytest.raises(hubzarr.FormatError, match=r"repo\.json"):
        hub.load("test/arr")


def test_a_repository_from_a_newer_layout_is_refused(local_root: str) -> None:
    hub = hubzarr.Hub(local_root)
    _make(hub)
    repo_json = hub.storage.root / "test" / "arr" / "repo.json"  # type: ignore[attr-defined]
    info = json.loads(repo_json.read_text())
    repo_json.write_text(json.dumps({**info, "layout": records.LAYOUT + 1}))
    with pytest.raises(hubzarr.FormatError, match="upgrade hubzarr"):
        hub.load("test/arr")


def test_deleted_repository_leaves_nothing_behind_for_its_successor(hub: hubzarr.Hub) -> None:
    _make(hub)
    hub.tag("test/arr", "v1")
    hub.delete("test/arr")
    assert hub.ls() == []
    with pytest.raises(hubzarr.NotFoundError):
        hub.load("test/arr")
    fresh = hub.array((3,), name="test/arr", dtype="int8")
    assert fresh[:].tolist() == [0, 0, 0]
    with pytest.raises(hubzarr.NotFoundError):
        hub.load("test/arr:v1")


# -- exactly one of several concurrent creators wins (real processes) --------------------


def _race(root: str, action: str, barrier: Any, results: Any, i: int) -> None:
    hub = hubzarr.Hub(root)
    barrier.wait()
    try:
        if action == "repo":
            hub.array((4,), name="race/arr", dtype="int8", fill_value=i)
        elif action == "tag":
            hub.tag("race/arr", "v1", message=str(i))
        else:
            hub.branch("race/arr", "b1")
        results.put((i, "won"))
    except hubzarr.AlreadyExistsError:
        results.put((i, "exists"))
    except Exception as exc:  # reported to the parent, which fails the test
        results.put((i, f"{type(exc).__name__}: {exc}"))


@pytest.mark.parametrize("action", ["repo", "tag", "branch"])
def test_exactly_one_concurrent_creator_wins(local_root: str, action: str) -> None:
    hub = hubzarr.Hub(local_root)
    if action != "repo":
        _make(hub, "race/arr")
    n = 6
    outcomes = race(_race, (local_root, action), n)
    assert sorted(outcomes.values()) == ["exists"] * (n - 1) + ["won"], outcomes
    winner = next(i for i, o in outcomes.items() if o == "won")
    if action == "repo":
        assert hub.load("race/arr").zarr.fill_value == winner
    elif action == "tag":
        assert "tag: v1" in {r for e in hub.log("race/arr") for r in e.refs}
        np.testing.assert_array_equal(hub.load("race/arr:v1")[:], hub.load("race/arr")[:])
    else:
        np.testing.assert_array_equal(hub.load("race/arr:b1")[:], hub.load("race/arr")[:])


# -- bad arguments are refused before anything is read or written -------------------------


def _snapshot(hub: hubzarr.Hub) -> dict[str, bytes]:
    """Every object under the hub root, with its bytes."""
    return {p: sync(hub.storage.read(p)) or b"" for p in sync(hub.storage.list(""))}


def _with_garbage(hub: hubzarr.Hub) -> None:
    """A repository where gc has something to free: what a deleted branch wrote."""
    _make(hub)
    hub.tag("test/arr", "v1")
    hub.branch("test/arr:v1", "scratch")
    scratch = hub.load("test/arr:scratch")
    assert isinstance(scratch, hubzarr.HubArray)
    scratch[:] = 5
    hub.delete_branch("test/arr", "scratch")


BAD_CALLS: dict[str, tuple[Any, type[Exception]]] = {
    "tag message a number": (lambda h: h.tag("test/arr", "t", message=5), InvalidArgumentError),
    "tag message an object": (
        lambda h: h.tag("test/arr", "t", message=object()),
        InvalidArgumentError,
    ),
    "tag message bytes": (lambda h: h.tag("test/arr", "t", message=b"x"), InvalidArgumentError),
    "tag of a tag, message a list": (
        lambda h: h.tag("test/arr:v1", "t", message=["x"]),
        InvalidArgumentError,
    ),
    "module tag message": (
        lambda h: hubzarr.tag("test/arr", "t", message=1.5, root=h.root),
        InvalidArgumentError,
    ),
    "tag name a number": (lambda h: h.tag("test/arr", 5), hubzarr.InvalidNameError),
    "tag name bad": (lambda h: h.tag("test/arr", "a b"), hubzarr.InvalidNameError),
    "branch name None": (lambda h: h.branch("test/arr", None), hubzarr.InvalidNameError),
    "delete_tag name a number": (lambda h: h.delete_tag("test/arr", 5), hubzarr.InvalidNameError),
    "delete_branch name bad": (
        lambda h: h.delete_branch("test/arr", "../x"),
        hubzarr.InvalidNameError,
    ),
    "gc dry_run a string": (
        lambda h: h.gc("test/arr", grace=0, dry_run="no"),
        InvalidArgumentError,
    ),
    "gc dry_run 0": (lambda h: h.gc("test/arr", grace=0, dry_run=0), InvalidArgumentError),
    "gc dry_run None": (lambda h: h.gc("test/arr", grace=0, dry_run=None), InvalidArgumentError),
    "module gc dry_run 0": (
        lambda h: hubzarr.gc("test/arr", grace=0, dry_run=0, root=h.root),
        InvalidArgumentError,
    ),
    "gc grace a string": (
        lambda h: h.gc("test/arr", grace="0", dry_run=False),
        InvalidArgumentError,
    ),
    "gc grace infinite": (
        lambda h: h.gc("test/arr", grace=float("inf"), dry_run=False),
        InvalidArgumentError,
    ),
    "gc grace NaN": (lambda h: h.gc("test/arr", grace=float("nan")), InvalidArgumentError),
    "verify progress a string": (
        lambda h: h.verify("test/arr", progress="x"),
        InvalidArgumentError,
    ),
    "ls prefix a number": (lambda h: h.ls(5), InvalidArgumentError),
    "load mode a number": (lambda h: h.load("test/arr", mode=5), InvalidArgumentError),
    "overwrite a string": (
        lambda h: h.array((8, 4), name="test/arr", dtype="int32", overwrite="no"),
        InvalidArgumentError,
    ),
    "overwrite 1": (
        lambda h: h.array((8, 4), name="test/arr", dtype="int32", overwrite=1),
        InvalidArgumentError,
    ),
    "overwrite of a new array": (
        lambda h: h.array((8, 4), name="test/new", dtype="int32", overwrite="no"),
        InvalidArgumentError,
    ),
}


@pytest.mark.parametrize(("call", "error"), BAD_CALLS.values(), ids=BAD_CALLS.keys())
def test_a_bad_argument_is_refused_and_changes_nothing(
    hub: hubzarr.Hub, call: Any, error: type[Exception]
) -> None:
    _with_garbage(hub)
    before = _snapshot(hub)
    log = hub.log("test/arr")
    with pytest.raises(error) as info:
        call(hub)
    assert isinstance(info.value, ValueError)
    assert _snapshot(hub) == before
    assert hub.log("test/arr") == log


def test_valid_messages_and_flags_still_work(hub: hubzarr.Hub) -> None:
    _with_garbage(hub)
    hub.tag("test/arr", "t1", message=None)
    hub.tag("test/arr", "t2", message="")
    assert {e.message for e in hub.log("test/arr") if e.sealed} >= {None, ""}
    assert hub.gc("test/arr", grace=0, dry_run=np.True_).dry_run is True
    assert hub.gc("test/arr", grace=0, dry_run=False).dry_run is False
