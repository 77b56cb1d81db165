"""The branch-head protocol on its own (hubzarr.session): no zarr, keys and bytes only.

Reads and writes at a branch, tombstones, write-once generations and what a seal keeps, the
write fence across sealers, compare-and-swap, atomic put-if-absent (also across processes),
emptied superseded generations, and the reader of a version (entries, raw objects).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import _procs
import numpy as np
import pytest
from conftest import Backend
from zarr.core.sync import sync

import hubzarr
from hubzarr import frame
from hubzarr.names import Name, parse_name
from hubzarr.records import Location, split_generation
from hubzarr.session import Session, conditional_writes
from hubzarr.versions import Repository

REPO = "test/keys"


def _name(ref: str | None = None) -> Name:
    name = parse_name(REPO, default_user="library")
    return name.with_ref(ref)


def _session(hub: hubzarr.Hub, ref: str | None = None, **kwargs: bool) -> Session:
    return Session(hub.storage, _name(ref), **kwargs)


@pytest.fixture
def keys(hub: hubzarr.Hub) -> hubzarr.Hub:
    """An empty repository (no zarr metadata at all) on each backend without a server."""
    hub.store(REPO, mode="w-")
    return hub


def _objects(hub: hubzarr.Hub, session: Session) -> dict[str, int]:
    """``{object name: size}`` under the folder of the session's version."""
    version = sync(session.resolved()).version
    repo = Repository(hub.storage, _name())
    sync(repo.open())
    return sync(hub.storage.list(repo.path("data", version)))


def test_writes_reads_and_deletions_by_key(keys: hubzarr.Hub) -> None:
    s = _session(keys)
    sync(s.write("a", b"one"))
    sync(s.write("dir/b", b"two"))
    assert bytes(sync(s.read("a")) or b"") == b"one"
    assert sync(s.keys()) == {"a", "dir/b"}
    assert sync(s.size("dir/b")) == 3
    sync(s.delete("a"))
    assert sync(s.read("a")) is None
    assert not sync(s.exists("a"))
    assert sync(s.keys()) == {"dir/b"}
    # Another session of the same branch, opened afterwards, sees the same state.
    other = _session(keys)
    assert sync(other.read("a")) is None
    assert bytes(sync(other.read("dir/b")) or b"") == b"two"


def test_a_deletion_hides_what_an_ancestor_holds(keys: hubzarr.Hub) -> None:
    s = _session(keys)
    sync(s.write("a", b"old"))
    keys.tag(REPO, "v1")
    sync(s.delete("a"))
    assert sync(s.read("a")) is None
    assert bytes(sync(_session(keys, "v1").read("a")) or b"") == b"old"


def test_every_rewrite_is_a_new_generation_and_a_tag_keeps_its_own(keys: hubzarr.Hub) -> None:
    s = _session(keys)
    for value in (b"g0", b"g1", b"g2"):
        sync(s.write("k", value))
    names = _objects(keys, s)
    assert {split_generation(n) for n in names} == {("k", 0), ("k", 1), ("k", 2)}
    keys.tag(REPO, "v1")
    sync(s.write("k", b"after"))  # lands in the head that took over
    tag = _session(keys, "v1")
    assert bytes(sync(tag.read("k")) or b"") == b"g2"
    entry = sync(tag.entries())["k"]
    assert entry.location.generation == 2
    assert bytes(sync(s.read("k")) or b"") == b"after"


def test_superseded_generations_are_emptied_where_storage_gains(keys: hubzarr.Hub) -> None:
    s = _session(keys)
    for value in (b"first value", b"second value", b"third value"):
        sync(s.write("k", value))
    sizes = {split_generation(n)[1]: size for n, size in _objects(keys, s).items()}
    newest = frame.HEADER_SIZE + len(b"third value")
    if keys.storage.reclaims_superseded:  # a local folder
        assert sizes == {0: 0, 1: 0, 2: newest}
    else:  # memory: every generation kept whole until gc
        assert sizes[2] == newest and sizes[0] > 0 and sizes[1] > 0
    assert bytes(sync(s.read("k")) or b"") == b"third value"


def test_a_held_snapshot_keeps_superseded_generations(local_root: str) -> None:
    hub = hubzarr.Hub(local_root)
    hub.store(REPO, mode="w-")
    s = _session(hub)
    sync(s.write("k", b"before"))
    snapshot = sync(s.snapshot())
    clone = pickle.loads(pickle.dumps(s))  # a copy made meanwhile keeps them too
    sync(clone.write("k", b"during"))
    sync(s.write("k", b"during again"))
    assert all(size > 0 for size in _objects(hub, s).values())
    assert sync(s.restore(snapshot, [""])) == 1
    assert bytes(sync(s.read("k")) or b"") == b"before"
    sync(s.write("k", b"later"))  # released: superseded generations are emptied again
    assert sorted(_objects(hub, s).values())[0] == 0


def test_a_reader_moves_past_a_generation_emptied_under_it(local_root: str) -> None:
    hub = hubzarr.Hub(local_root)
    hub.store(REPO, mode="w-")
    reader, writer = _session(hub), _session(hub)
    sync(writer.write("k", b"one"))
    assert bytes(sync(reader.read("k")) or b"") == b"one"  # the reader knows generation 0
    sync(writer.write("k", b"two"))
    sync(writer.write("k", b"three"))  # generations 0 and 1 now emptied
    assert bytes(sync(reader.read("k")) or b"") == b"three"
    assert sync(reader.size("k")) == len(b"three")
    assert sync(reader.read_object("k")) == sync(hub.storage.read(sync(writer.entries())["k"].path))


def test_an_empty_newest_generation_is_damage(local_root: str) -> None:
    hub = hubzarr.Hub(local_root)
    hub.store(REPO, mode="w-")
    s = _session(hub)
    sync(s.write("k", b"value"))
    path = Path(local_root) / sync(s.entries())["k"].path
    path.write_bytes(b"")
    with pytest.raises(hubzarr.CorruptChunkError, match="0 bytes"):
        sync(_session(hub).read("k"))
    with pytest.raises(hubzarr.CorruptChunkError, match="empty"):
        sync(_session(hub).size("k"))


def test_a_stale_session_writes_into_the_head_that_took_over(keys: hubzarr.Hub) -> None:
    stale = _session(keys)
    sync(stale.write("k", b"before the tag"))
    keys.tag(REPO, "v1")  # seals the head the stale session still points at
    sync(stale.write("k", b"after the tag"))
    assert bytes(sync(_session(keys, "v1").read("k")) or b"") == b"before the tag"
    assert bytes(sync(_session(keys).read("k")) or b"") == b"after the tag"
    assert sync(stale.resolved()).version == sync(_session(keys).resolved()).version


def test_a_conditional_write_fails_if_another_writer_got_there_first(keys: hubzarr.Hub) -> None:
    mine, theirs = _session(keys), _session(keys)
    sync(mine.write("k", b"base"))

    async def read_modify_write() -> None:
        with conditional_writes():
            base = bytes(await mine.read("k") or b"")
            await theirs.write("k", b"theirs")  # lands between our read and our write
            await mine.write("k", base + b"+mine")

    with pytest.raises(hubzarr.ConflictError):
        sync(read_modify_write())
    assert bytes(sync(_session(keys).read("k")) or b"") == b"theirs"


def test_after_a_lost_race_an_operation_writes_nothing_more(keys: hubzarr.Hub) -> None:
    """The conflict is raised when the operation ends, not by the write that met it, so that
    writes running beside it (zarr's, of other chunks) finish first; later ones are skipped."""
    mine, theirs = _session(keys), _session(keys)
    sync(mine.write("a", b"base"))

    async def operation() -> None:
        with conditional_writes():
            await mine.read("a")
            await theirs.write("a", b"theirs")
            await mine.write("a", b"mine")  # lost: nothing written, nothing raised yet
            await mine.write("b", b"after")  # skipped: the operation is repeated anyway

    with pytest.raises(hubzarr.ConflictError):
        sync(operation())
    fresh = _session(keys)
    assert bytes(sync(fresh.read("a")) or b"") == b"theirs"
    assert sync(fresh.read("b")) is None


def test_a_seal_between_read_and_conditional_write_is_a_conflict(keys: hubzarr.Hub) -> None:
    s = _session(keys)
    sync(s.write("k", b"base"))

    async def read_modify_write() -> None:
        with conditional_writes():
            await s.read("k")
            await Repository(keys.storage, _name()).tag(None, "v1")  # seals the head
            await s.write("k", b"changed")

    with pytest.raises(hubzarr.ConflictError):
        sync(read_modify_write())
    assert bytes(sync(_session(keys, "v1").read("k")) or b"") == b"base"


def test_put_if_absent_never_replaces_a_value(keys: hubzarr.Hub) -> None:
    s = _session(keys)
    assert sync(s.put_if_absent("k", b"first"))
    assert not sync(s.put_if_absent("k", b"second"))
    assert bytes(sync(s.read("k")) or b"") == b"first"
    keys.tag(REPO, "v1")
    assert not sync(s.put_if_absent("k", b"third"))  # inherited from the tag: a value
    sync(s.delete("k"))
    assert sync(s.put_if_absent("k", b"fourth"))  # deleted: absent again


def test_set_if_not_exists_has_one_winner_across_processes(local_or_s3: Backend) -> None:
    """Processes released together by a barrier all try each key: one value is stored, and
    every process reads that value back; the key has one object, never a rewrite."""
    hub = local_or_s3.hub()
    hub.store("race/keys", mode="w-")
    n, keys = 4, 12
    outcomes = _procs.race(_procs.put_if_absent, (hub.root, local_or_s3.options, keys), n)
    assert len(outcomes) == n
    for i, seen in outcomes.items():
        assert isinstance(seen, list), f"process {i} failed:\n{seen}"
    store = hub.store("race/keys")
    entries = sync(store.session.entries())
    for k in range(keys):
        reads = {outcomes[i][k] for i in range(n)}  # type: ignore[index]
        assert len(reads) == 1, f"k{k}: processes read different values {reads}"
        assert entries[f"k{k}"].location.generation == 0, f"k{k} was rewritten"
        stored = bytes(sync(store.session.read(f"k{k}")) or b"").decode()
        assert reads == {stored}


def test_entries_name_each_objects_location_path_and_size(keys: hubzarr.Hub) -> None:
    s = _session(keys)
    sync(s.write("a", b"A" * 10))
    version = keys.tag(REPO, "v1")
    sync(s.write("b", b"B" * 20))
    sync(s.write("b", b"B" * 21))
    entries = sync(s.entries())
    assert entries["a"].location == Location(version, 0)
    assert entries["b"].location.generation == 1
    assert entries["b"].size == frame.HEADER_SIZE + 21
    for key, entry in entries.items():
        raw = sync(keys.storage.read(entry.path))
        assert raw == sync(s.read_object(key))
        assert raw is not None and len(raw) == entry.size


def test_writes_are_refused_at_a_tag_and_when_read_only(keys: hubzarr.Hub) -> None:
    sync(_session(keys).write("k", b"v"))
    keys.tag(REPO, "v1")
    for s in (_session(keys, "v1"), _session(keys, read_only=True)):
        with pytest.raises(hubzarr.ReadOnlyError):
            sync(s.write("k", b"w"))
        with pytest.raises(hubzarr.ReadOnlyError):
            sync(s.delete("k"))
    assert bytes(sync(_session(keys).read("k")) or b"") == b"v"


def test_keys_that_could_alias_or_escape_are_refused(keys: hubzarr.Hub) -> None:
    s = _session(keys)
    for key in ("k~1", "../x", "a//b", "%2e%2e/x", ""):
        with pytest.raises(hubzarr.InvalidArgumentError):
            sync(s.write(key, b"v"))
        with pytest.raises(hubzarr.InvalidArgumentError):
            sync(s.read(key))


def test_a_pickled_session_reads_the_version_it_resolved(keys: hubzarr.Hub) -> None:
    s = _session(keys, "main")
    sync(s.write("k", b"one"))
    keys.tag(REPO, "v1")
    tag = _session(keys, "v1")
    sync(tag.resolved())
    clone = pickle.loads(pickle.dumps(tag))
    assert clone.pinned == tag.pinned
    assert bytes(sync(clone.read("k")) or b"") == b"one"


def test_a_reader_decodes_chunks_with_the_arrays_layout(hub: hubzarr.Hub) -> None:
    arr = hub.array((5, 4), "test/chunks", dtype="float32", chunks=(2, 4), fill_value=-1.0)
    arr[0:2] = 7.5
    hub.tag("test/chunks", "v1")
    reader = hub.reader("test/chunks:v1")
    layout = hub.load_array("test/chunks:v1").layout
    np.testing.assert_array_equal(sync(reader.read_chunk(layout, (0, 0))), np.full((2, 4), 7.5))
    np.testing.assert_array_equal(sync(reader.read_chunk(layout, (2, 0))), np.full((2, 4), -1.0))


def test_reads_begun_while_a_head_is_resolved_answer_as_reads_after_it(
    keys: hubzarr.Hub,
) -> None:
    """Opening a branch reads the keys it expects where they most often lie, while the head's
    seal is looked for (one round trip less); each answers what a read after opening would."""
    s = _session(keys)
    sync(s.write("base", b"in v1"))
    sync(s.write("deep", b"in v0"))
    keys.tag(REPO, "v0")
    sync(s.write("base", b"in v1"))
    sync(s.write("gone", b"there"))
    keys.tag(REPO, "v1")
    for value in (b"g0", b"g1", b"g2"):
        sync(s.write("many", value))  # generations 0 to 2 in the head
    sync(s.write("once", b"g0"))
    sync(s.delete("gone"))  # a tombstone in the head
    expected = {
        "base": b"in v1",  # the version the head started from wrote it
        "deep": b"in v0",  # an older one did
        "many": b"g2",
        "once": b"g0",
        "gone": None,
        "never": None,
    }
    fresh = _session(keys)
    sync(fresh.open_expecting(list(expected)))
    state = fresh._state
    assert state is not None and set(state.early_head) == set(expected)
    for key, value in expected.items():
        got = sync(fresh.read(key))
        assert (None if got is None else bytes(got)) == value, key
    assert not state.early_head  # each taken once
    # A write after opening is what a later read sees, whatever was read at opening.
    again = _session(keys)
    sync(again.open_expecting(["once"]))
    sync(again.write("once", b"g1"))
    assert bytes(sync(again.read("once")) or b"") == b"g1"
    # So is another writer's, once the opener is done with what it read at opening.
    late = _session(keys)
    sync(late.open_expecting(["late"]))
    late.done_expecting()
    sync(_session(keys).write("late", b"written since"))
    assert bytes(sync(late.read("late")) or b"") == b"written since"


def test_reads_at_a_head_the_branch_file_no_longer_names_are_dropped(
    keys: hubzarr.Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A head sealed by a sealer that died before moving the branch: what was read at it
    while opening is not the branch's state, which lies in the head that took over (the
    opener finishes the seal, and reads there; the objects' bindings to their version would
    refuse them too)."""

    class CrashError(Exception):
        pass

    async def crash(self: Repository, version: str, seal: object) -> None:
        raise CrashError  # every sealer stops right after publishing the seal record

    s = _session(keys)
    sync(s.write("k", b"old"))
    head = sync(s.resolved()).version
    with monkeypatch.context() as patch:
        patch.setattr(Repository, "_finish_seal", crash)
        with pytest.raises(CrashError):
            keys.tag(REPO, "v1")
    repo = Repository(keys.storage, _name())
    sync(repo.open())
    seal = sync(repo.read_seal(head))
    successor = seal.successor if seal is not None else None
    assert successor is not None
    # A writer of the head that took over, as one would write there (bypassing the sealer,
    # which would finish the seal and move the branch file).
    payload = b"new"
    bound = frame.encode_header(payload, frame.binding(successor, "k", 0))
    sync(keys.storage.write(repo.files.data_path(successor, "k", 0), bound + payload))
    fresh = _session(keys)
    sync(fresh.open_expecting(["k"]))
    assert bytes(sync(fresh.read("k")) or b"") == b"new"
