"""zarr's own Store conformance suite against HubStore, plus the hub-specific store contract."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest
import zarr
from conftest import Backend
from envelopes import framed, unframe
from zarr.core.buffer import cpu, default_buffer_prototype
from zarr.core.sync import collect_aiterator, sync
from zarr.testing.store import StoreTests

import hubzarr
from hubzarr.stores import HubStore
from hubzarr.versions import Repository

NAME = "test/conformance:main"


async def _head_path(store: HubStore, key: str) -> tuple[Repository, str]:
    repo = Repository(store.storage, store.name)
    await repo.open()
    head = await repo.branch_head(str(store.name.ref))
    return repo, repo.files.data_path(head, key)


class TestHubStore(StoreTests[HubStore, cpu.Buffer]):  # type: ignore[misc]
    store_cls = HubStore
    buffer_cls = cpu.Buffer

    @pytest.fixture
    def store_kwargs(self, root: str) -> dict[str, Any]:
        hubzarr.Hub(root).store(NAME, mode="w-")
        return {"root": root, "name": NAME}

    async def set(self, store: HubStore, key: str, value: cpu.Buffer) -> None:
        # Bypass the store: put a framed object straight into the branch head's prefix.
        _, path = await _head_path(store, key)
        payload = value.as_numpy_array().data
        await store.storage.write(path, framed(path, bytes(payload)))

    async def get(self, store: HubStore, key: str) -> cpu.Buffer:
        _, path = await _head_path(store, key)
        raw = await store.storage.read(path)
        assert raw is not None, f"{key} was not written to the head's prefix"
        payload = unframe(path, raw)
        assert payload is not None
        return self.buffer_cls.from_bytes(payload)

    def test_store_repr(self, store: HubStore) -> None:
        assert repr(store) == f"HubStore({store.root!r}, {NAME!r})"

    def test_store_supports_writes(self, store: HubStore) -> None:
        assert store.supports_writes

    def test_store_supports_listing(self, store: HubStore) -> None:
        assert store.supports_listing


def _buf(data: bytes) -> cpu.Buffer:
    return cpu.Buffer.from_bytes(data)


@pytest.fixture
def tagged(hub: hubzarr.Hub) -> tuple[HubStore, HubStore]:
    """A branch store and a tag store of one repository; the tag holds a=old, b=old."""
    head = hub.store("test/cow", mode="w-")
    head.set_sync("a", _buf(b"old-a"))
    head.set_sync("b", _buf(b"old-b"))
    hub.tag("test/cow", "v1")
    return head, hub.store("test/cow:v1")


def test_every_key_method_reads_and_writes_through_versions(
    tagged: tuple[HubStore, HubStore],
) -> None:
    head, tag = tagged
    proto = default_buffer_prototype()
    head.set_sync("a", _buf(b"new-a"))
    head.delete_sync("b")
    sync(head.set("c", _buf(b"new-c")))

    # The head sees its own writes and deletions through every read path ...
    assert head.get_sync("a").to_bytes() == b"new-a"  # type: ignore[union-attr]
    assert head.get_sync("b") is None
    assert head._get_bytes_sync("c", prototype=proto) == b"new-c"
    assert sync(head.exists("c")) and not sync(head.exists("b"))
    assert sync(head.getsize("a")) == len(b"new-a")
    with pytest.raises(FileNotFoundError):
        sync(head.getsize("b"))
    assert collect_aiterator(head.list()) == ("a", "c")

    # ... and the tag sees none of them.
    assert tag.get_sync("a").to_bytes() == b"old-a"  # type: ignore[union-attr]
    assert tag._get_bytes_sync("b", prototype=proto) == b"old-b"
    assert tag.get_sync("c") is None
    assert sync(tag.exists("b")) and not sync(tag.exists("c"))
    assert collect_aiterator(tag.list()) == ("a", "b")


def test_tag_store_refuses_writes_with_a_branch_hint(tagged: tuple[HubStore, HubStore]) -> None:
    _, tag = tagged
    for write in (lambda: tag.set_sync("a", _buf(b"x")), lambda: tag.delete_sync("a")):
        with pytest.raises(hubzarr.ReadOnlyError, match=r"hubzarr\.branch\(") as info:
            write()
        assert isinstance(info.value, PermissionError)
    assert tag.get_sync("a").to_bytes() == b"old-a"  # type: ignore[union-attr]


def test_tag_store_is_read_only_even_if_asked_writable(
    hub: hubzarr.Hub, tagged: tuple[HubStore, HubStore]
) -> None:
    writable = hub.store("test/cow:v1", mode="r+")
    assert writable.read_only
    with pytest.raises(hubzarr.ReadOnlyError):
        writable.set_sync("a", _buf(b"x"))


def test_deleting_an_inherited_key_leaves_a_tombstone_not_a_fallthrough(
    tagged: tuple[HubStore, HubStore],
) -> None:
    head, _ = tagged
    head.delete_sync("a")
    head.set_sync("a", _buf(b"again"))
    head.delete_sync("a")
    assert head.get_sync("a") is None
    assert not sync(head.exists("a"))


def test_stale_store_never_writes_into_a_sealed_head(
    hub: hubzarr.Hub, tagged: tuple[HubStore, HubStore]
) -> None:
    head, _ = tagged  # still holds the head that existed before the next tag
    other = hub.store("test/cow", mode="r+")
    other.set_sync("a", _buf(b"v2-a"))
    hub.tag("test/cow", "v2")
    head.set_sync("a", _buf(b"late"))  # the fence must move this write to the new head
    assert hub.store("test/cow:v2").get_sync("a").to_bytes() == b"v2-a"  # type: ignore[union-attr]
    assert hub.store("test/cow").get_sync("a").to_bytes() == b"late"  # type: ignore[union-attr]


def test_pickle_keeps_the_resolved_version(
    hub: hubzarr.Hub, tagged: tuple[HubStore, HubStore]
) -> None:
    head, _ = tagged
    head.set_sync("a", _buf(b"before"))
    clone = pickle.loads(pickle.dumps(head))
    assert clone == head
    assert clone.session.pinned == head.session.pinned
    assert clone.get_sync("a").to_bytes() == b"before"  # type: ignore[union-attr]


def test_pickle_and_repr_hold_no_credentials(memory_root: str) -> None:
    hubzarr.Hub(memory_root).store("test/secret", mode="w-")
    store = HubStore(
        memory_root,
        "test/secret",
        storage_options={"key": "AKIDLEAK", "secret": "s3cr3tLEAK", "anon": False},
    )
    blob = pickle.dumps(store)
    assert b"LEAK" not in blob
    assert "LEAK" not in repr(store) and "LEAK" not in str(store)
    assert pickle.loads(blob)._storage_options == {"anon": False}


@pytest.mark.parametrize("key", ["../escape", "a/../../b", "/abs", "a//b", "a\\b", "c/./d"])
def test_keys_cannot_leave_the_version_prefix(tagged: tuple[HubStore, HubStore], key: str) -> None:
    head, _ = tagged
    with pytest.raises(ValueError, match="refusing storage key"):
        head.set_sync(key, _buf(b"x"))
    with pytest.raises(ValueError, match="refusing storage key"):
        head.get_sync(key)


def test_zarr_and_numpy_roundtrip_through_the_store(hub: hubzarr.Hub) -> None:
    store = hub.store("test/direct", mode="w-")
    z = zarr.create_array(store, shape=(6, 4), chunks=(2, 2), dtype="int16", zarr_format=2)
    z[:] = np.arange(24).reshape(6, 4)
    again = zarr.open_array(hub.store("test/direct"), mode="r", zarr_format=2)
    np.testing.assert_array_equal(again[:], np.arange(24).reshape(6, 4))


def test_a_rewrite_equal_to_an_older_generation_is_not_taken_for_its_own(
    local_or_s3: Backend,
) -> None:
    # A put-if-absent that finds its generation taken by equal bytes could be our own write
    # whose acknowledgement was lost; but another writer may have written the same value, and
    # newer generations may follow it. Found by a fuzzer on S3: the write below was lost.
    hub = local_or_s3.hub()
    hub.array((4,), name="gens/arr", dtype="int32", chunks=(1,))  # whole-chunk writes
    a, b, c = (local_or_s3.hub().load("gens/arr") for _ in range(3))
    a[0] = 5  # generation 0
    b[0] = 7  # generation 1
    c[0] = 9  # generation 2
    a[0] = 7  # a knows generation 0 only: generation 1 is taken, by the same bytes
    assert local_or_s3.hub().load("gens/arr")[0] == 7
    assert a[0] == b[0] == c[0] == 7
