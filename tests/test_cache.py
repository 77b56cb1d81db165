"""The local cache of immutable objects (hubzarr/cache.py): what it caches, that it never
serves anything stale or damaged, its one limit across processes, its failures, its CLI."""

from __future__ import annotations

import errno
import json
import multiprocessing
import pickle
import sqlite3
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import test_storage
from _cacheprocs import (
    claim_and_hold,
    fill,
    fill_in_child,
    payload,
    read_tag_after,
    sum_in_child,
    write_and_tag,
)
from conftest import Backend, _memory_root
from counting import CountingStorage
from test_storage import StorageContract
from typer.testing import CliRunner

import hubzarr
from hubzarr import bulk
from hubzarr import cache as cache_module
from hubzarr.cache import CachedStorage, CacheWarning, ChunkCache, cacheable, open_cached
from hubzarr.cli import app
from hubzarr.storage import LocalStorage, Storage, open_storage


@pytest.fixture(autouse=True)
def cache_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the cache work here (conftest turns it off for the other tests), and let each test
    see its own first warning."""
    monkeypatch.delenv("HUBZARR_CACHE_SIZE")
    monkeypatch.setattr(cache_module, "_warned", False)


def _data_reads(counter: CountingStorage) -> list[str]:
    return [p for op, p in counter.paths if op == "read" and "/data/" in p]


def _chunk_reads(counter: CountingStorage) -> list[str]:
    return [p for p in _data_reads(counter) if not p.rsplit("/", 1)[1].startswith(".")]


def _settle(hub: hubzarr.Hub) -> None:
    """Wait until what ``hub`` read is in its cache folder (fills are written behind reads)."""
    storage = hub.storage
    assert isinstance(storage, CachedStorage)
    storage.cache.settle()


def _fresh(directory: Path) -> ChunkCache:
    """The cache folder as another process sees it: nothing in memory."""
    return ChunkCache(directory, size_limit="1GiB", memory_limit=0)


def _tagged(hub: hubzarr.Hub, name: str = "c/arr") -> np.ndarray:
    # Chunks of 40 kB: each lies in a file of its own in the cache folder (over 32 KiB).
    values = np.arange(100 * 500, dtype="float64").reshape(100, 500)
    arr = hub.array((100, 500), name, chunks=(10, 500), dtype="float64", compressor=None)
    arr[:] = values
    hub.tag(name, "v1")
    return values


def test_only_objects_that_never_change_are_cacheable() -> None:
    home = "alice/data/0123456789abcdef"
    for path in (
        f"{home}/data/0123456789abcdef0123/.zarray",
        f"{home}/data/0123456789abcdef0123/images/0.0~3",
        f"{home}/versions/0123456789abcdef0123.json",
        f"{home}/manifests/0123456789abcdef0123.json",
    ):
        assert cacheable(path), path
    for path in (
        "alice/data/repo.json",
        f"{home}/refs/branches/main.json",
        f"{home}/refs/tags/v1.json",
        f"{home}/refs/names/v1.json",
        f"{home}/seals/0123456789abcdef0123.json",
        f"{home}/data",
        ".hubzarr-probe",
    ):
        assert not cacheable(path), path


def test_a_second_read_at_a_tag_reads_no_chunk_from_storage(tmp_path: Path) -> None:
    root = str(tmp_path / "hub")
    values = _tagged(hubzarr.Hub(root))
    first = CountingStorage(open_storage(root))
    hub = hubzarr.Hub(root, storage=first, cache=_fresh(tmp_path / "cache"))
    np.testing.assert_array_equal(hub.load_array("c/arr:v1")[:], values)
    assert len(_data_reads(first)) >= 10  # every chunk, from storage
    _settle(hub)

    second = CountingStorage(open_storage(root))
    again = hubzarr.Hub(root, storage=second, cache=_fresh(tmp_path / "cache"))
    np.testing.assert_array_equal(again.load_array("c/arr:v1")[:], values)
    assert _data_reads(second) == []
    # Refs are read from storage every time: a moved branch or new tag is always seen.
    assert any("/refs/" in p for _, p in second.paths)


def test_reads_at_a_branch_head_see_another_process_s_writes_and_tags(tmp_path: Path) -> None:
    root, cache_dir = str(tmp_path / "hub"), str(tmp_path / "cache")
    hub = hubzarr.Hub(root, cache=cache_dir)
    arr = hub.array((40,), "c/fresh", chunks=(10,), dtype="int64")
    arr[:] = 1
    hub.tag("c/fresh", "v1")
    head = hub.load_array("c/fresh")
    assert (head[:] == 1).all()  # the head's inherited chunks, now cached
    assert (head[:] == 1).all()

    ctx = multiprocessing.get_context("spawn")
    # Writes over inherited chunks, rewrites in one head (generations superseded and emptied
    # while this process holds them cached), each followed by a tag or not.
    steps = ((2, None), (3, "v3"), (4, None), (5, None), (6, "v6"))
    for value, tag in steps:
        writer = ctx.Process(target=write_and_tag, args=(root, cache_dir, value, tag))
        writer.start()
        writer.join(timeout=120)
        assert writer.exitcode == 0
        assert (head[:] == value).all()  # the same handle, the cache on
        assert (head[:] == value).all()
        assert (hub.load_array("c/fresh")[:] == value).all()
        if tag is not None:
            assert (hub.load_array(f"c/fresh:{tag}")[:] == value).all()
    for value, tag in ((1, "v1"), (3, "v3"), (6, "v6")):
        assert (hub.load_array(f"c/fresh:{tag}")[:] == value).all()


def test_writes_in_this_process_are_seen_at_the_head(tmp_path: Path) -> None:
    hub = hubzarr.Hub(str(tmp_path / "hub"), cache=tmp_path / "cache")
    arr = hub.array((30,), "c/mine", chunks=(10,), dtype="int32")
    for value in range(5):
        arr[:] = value
        assert (arr[:] == value).all()
        assert (hub.load_array("c/mine")[:] == value).all()


def _entry_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*/*/*.val"))


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_a_damaged_cache_file_is_dropped_and_fetched_again(tmp_path: Path, damage: str) -> None:
    root, cache_dir = str(tmp_path / "hub"), tmp_path / "cache"
    values = _tagged(hubzarr.Hub(root))
    filler = hubzarr.Hub(root, cache=_fresh(cache_dir))
    filler.load_array("c/arr:v1")[:]
    _settle(filler)
    files = _entry_files(cache_dir)
    assert len(files) == 10
    for file in files:
        data = bytearray(file.read_bytes())
        if damage == "flip":
            data[len(data) // 2] ^= 0x10
        elif damage == "truncate":
            del data[len(data) // 2 :]
        else:
            data.clear()
        file.write_bytes(bytes(data))

    counter = CountingStorage(open_storage(root))
    hub = hubzarr.Hub(root, storage=counter, cache=_fresh(cache_dir))
    np.testing.assert_array_equal(hub.load_array("c/arr:v1")[:], values)
    assert len(_data_reads(counter)) == 10  # each damaged entry fetched again...
    _settle(hub)
    counter.reset()
    np.testing.assert_array_equal(hub.load_array("c/arr:v1")[:], values)
    assert _data_reads(counter) == []  # ... and cached whole again


def test_an_edited_small_entry_is_never_returned(tmp_path: Path) -> None:
    cache = _fresh(tmp_path / "cache")
    cache.put("k", b"small object")  # kept in SQLite itself, not in a file
    assert cache.get("k") == b"small object"
    with sqlite3.connect(tmp_path / "cache" / "cache.db") as db:
        db.execute("UPDATE Cache SET value = ? WHERE key = 'k'", (b"small objecT",))
    assert cache.get("k") is None
    assert cache.info().entries == 0


def test_a_mapped_entry_is_checked_and_outlives_its_eviction(tmp_path: Path) -> None:
    cache = _fresh(tmp_path / "cache")
    big, small = payload("big"), b"small object"  # 48 KiB: a file of its own
    cache.put("big", big)
    cache.put("small", small)
    view = cache.get("big", mapped=True)
    assert isinstance(view, memoryview) and view == big  # a file of its own: mapped
    assert cache.get("small", mapped=True) == small  # in SQLite: bytes
    assert isinstance(cache.get("big"), bytes)
    cache.clear()  # unlinks the file: the mapping still reads it
    assert view == big and cache.get("big", mapped=True) is None
    cache.put("big", big)
    (file,) = _entry_files(tmp_path / "cache")
    damaged = bytearray(file.read_bytes())
    damaged[7] ^= 1
    file.write_bytes(bytes(damaged))
    assert cache.get("big", mapped=True) is None  # checked like any read...
    assert cache.info().entries == 0  # ... and dropped


def test_concurrent_fills_of_the_same_objects_by_processes(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    n, keys = 4, [f"root\nobject/{i}" for i in range(40)]
    barrier, results = ctx.Barrier(n), ctx.Queue()
    args = (str(tmp_path / "cache"), 2**30, keys, barrier, results)
    procs = [ctx.Process(target=fill, args=(*args, i)) for i in range(n)]
    for p in procs:
        p.start()
    outcomes = dict(results.get(timeout=120) for _ in range(n))
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert outcomes == {i: [] for i in range(n)}
    cache = _fresh(tmp_path / "cache")
    assert cache.info().entries == len(keys)
    assert all(cache.get(k) == payload(k) for k in keys)
    # Each object lies in one file: the losers' files were removed.
    assert len(_entry_files(tmp_path / "cache")) == len(keys)


def test_processes_reading_the_same_chunks_cold_fetch_each_once(
    s3_backend: Backend, tmp_path: Path
) -> None:
    server = s3_backend.server
    assert server is not None
    hub = hubzarr.Hub(s3_backend.root, s3_backend.options, cache=False)
    arr = hub.array((60, 2000), "c/shared", chunks=(1, 2000), dtype="float64")
    arr[:] = values = np.arange(60 * 2000, dtype="float64").reshape(60, 2000)
    hub.tag("c/shared", "v1")
    ctx = multiprocessing.get_context("spawn")
    n = 4
    barrier, results = ctx.Barrier(n), ctx.Queue()
    args = (s3_backend.root, s3_backend.options, str(tmp_path / "cache"), "c/shared:v1")
    procs = [ctx.Process(target=read_tag_after, args=(*args, barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    server.reset()  # after the writes; the readers open, then wait for each other
    sums = [results.get(timeout=120) for _ in range(n)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sums == [values.sum()] * n
    gets = [r.path for r in server.requests if r.method == "GET" and "/data/" in r.path]
    # One process fetched each chunk while the others waited for it to be cached (without
    # claims each fetched nearly all): a few more only where two keys share a lock file.
    assert 60 <= len(gets) <= 63


def test_a_claim_excludes_others_until_released_or_its_process_dies(tmp_path: Path) -> None:
    cache = _fresh(tmp_path / "cache")
    mine = cache.claim("root\nk")
    assert mine is not None
    assert cache.claim("root\nk") is None  # another thread of this process waits too
    assert cache.claim("root\nother") is not None
    mine.release()
    mine.release()  # idempotent
    again = cache.claim("root\nk")
    assert again is not None
    again.release()

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    holder = ctx.Process(target=claim_and_hold, args=(str(tmp_path / "cache"), "root\nk", child))
    holder.start()
    assert parent.recv() is True
    assert cache.claim("root\nk") is None  # held by the other process
    holder.kill()
    holder.join(timeout=60)
    taken = cache.claim("root\nk")  # the kernel let go of a dead process's lock
    assert taken is not None
    taken.release()


def test_a_forked_worker_uses_the_parent_s_cache_object(tmp_path: Path) -> None:
    cache = _fresh(tmp_path / "cache")
    cache.put_later("parent", payload("parent"))  # the parent's writer thread exists now
    cache.settle()
    child = multiprocessing.get_context("fork").Process(target=fill_in_child, args=(cache,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert _fresh(tmp_path / "cache").get("child") == payload("child")


def test_the_size_limit_holds_for_processes_filling_together(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    limit, n = 1 * 2**20, 2
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [
        ctx.Process(
            target=fill,
            args=(
                str(tmp_path / "cache"),
                limit,
                [f"root\n{i}/{k}" for k in range(60)],  # 2 x 60 x 48 KiB: 5.6 MiB
                barrier,
                results,
                i,
            ),
        )
        for i in range(n)
    ]
    for p in procs:
        p.start()
    assert dict(results.get(timeout=120) for _ in range(n)) == {0: [], 1: []}
    for p in procs:
        p.join(timeout=60)
    info = ChunkCache(tmp_path / "cache", size_limit=limit).info()
    assert 0 < info.entries < 2 * 60
    assert info.size <= limit
    assert sum(f.stat().st_size for f in _entry_files(tmp_path / "cache")) <= limit


def test_an_unusable_cache_folder_warns_once_and_reads_go_on(tmp_path: Path) -> None:
    root = str(tmp_path / "hub")
    values = _tagged(hubzarr.Hub(root))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    hub = hubzarr.Hub(root, cache=ChunkCache(blocker / "cache"))
    other = hubzarr.Hub(root, cache=ChunkCache(blocker / "other"))

    def read_all() -> list[np.ndarray]:
        return [h.load_array("c/arr:v1")[:] for h in (hub, hub, other)]

    with pytest.warns(CacheWarning, match="cannot be used") as caught:
        read = read_all()
    assert len([w for w in caught if w.category is CacheWarning]) == 1  # once per process
    for got in read:
        np.testing.assert_array_equal(got, values)


def test_a_full_disk_warns_once_and_reads_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import diskcache

    root = str(tmp_path / "hub")
    values = _tagged(hubzarr.Hub(root))

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(diskcache.Disk, "store", full)
    counter = CountingStorage(open_storage(root))
    hub = hubzarr.Hub(root, storage=counter, cache=_fresh(tmp_path / "cache"))

    def read_all() -> list[np.ndarray]:
        read = [hub.load_array("c/arr:v1")[:] for _ in range(3)]
        _settle(hub)  # the queued writes failed: the warning comes here at the latest
        return read

    with pytest.warns(CacheWarning, match="No space left") as caught:
        read = read_all()
    assert len([w for w in caught if w.category is CacheWarning]) == 1
    for got in read:
        np.testing.assert_array_equal(got, values)
    assert len(_chunk_reads(counter)) == 30  # uncached: every read from storage


def test_a_limit_of_zero_caches_nothing(tmp_path: Path) -> None:
    root = str(tmp_path / "hub")
    values = _tagged(hubzarr.Hub(root))
    zero = ChunkCache(tmp_path / "cache", size_limit=0)
    hub = hubzarr.Hub(root, cache=zero)
    assert isinstance(hub.storage, LocalStorage)
    np.testing.assert_array_equal(hub.load_array("c/arr:v1")[:], values)
    zero.put("k", b"data")
    assert zero.get("k") is None
    assert not (tmp_path / "cache").exists()


def test_the_cache_is_on_by_default_for_remote_roots_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUBZARR_CACHE_DIR", str(tmp_path / "env-cache"))
    remote = hubzarr.Hub("s3://bucket/hub", {"anon": True}).storage
    assert isinstance(remote, CachedStorage)
    assert remote.cache.directory == tmp_path / "env-cache"
    assert isinstance(hubzarr.Hub("https://example.com/hub").storage, CachedStorage)
    assert not isinstance(hubzarr.Hub(str(tmp_path / "hub")).storage, CachedStorage)
    assert not isinstance(hubzarr.Hub("memory://c/hub").storage, CachedStorage)
    assert not isinstance(
        hubzarr.Hub("s3://bucket/hub", {"anon": True}, cache=False).storage, CachedStorage
    )
    monkeypatch.setenv("HUBZARR_CACHE_SIZE", "0")
    assert not isinstance(hubzarr.Hub("s3://bucket/hub", {"anon": True}).storage, CachedStorage)
    # The store a hub hands out, and one opened on its own, read through it too.
    monkeypatch.delenv("HUBZARR_CACHE_SIZE")
    store = hubzarr.HubStore("s3://bucket/hub", "a/b", storage_options={"anon": True})
    assert isinstance(store.storage, CachedStorage)
    with pytest.raises(hubzarr.InvalidArgumentError, match="cache must be"):
        hubzarr.Hub(str(tmp_path), cache=3)  # type: ignore[arg-type]


def test_keys_and_pickles_hold_no_credential(s3_backend: Backend, tmp_path: Path) -> None:
    secret = "very/secret+value0123456789"
    options = {**s3_backend.options, "key": "AKIAEXAMPLEKEYID0001", "secret": secret}
    hub = hubzarr.Hub(s3_backend.root, options, cache=_fresh(tmp_path / "cache"))
    _tagged(hub)
    hub.load_array("c/arr:v1")[:]
    _settle(hub)
    storage = hub.storage
    assert isinstance(storage, CachedStorage)
    assert s3_backend.server is not None
    assert storage.identity == f"{s3_backend.root} at {s3_backend.server.url}"
    with sqlite3.connect(tmp_path / "cache" / "cache.db") as db:
        keys = [k for (k,) in db.execute("SELECT key FROM Cache")]
    assert len(keys) > 10
    assert all(k.startswith(storage.identity + "\n") for k in keys)
    assert not any("AKIA" in k or secret in k for k in keys)
    blob = pickle.dumps(hub.load_array("c/arr:v1"))
    assert secret.encode() not in blob and b"AKIAEXAMPLE" not in blob
    restored = pickle.loads(pickle.dumps(storage))
    assert isinstance(restored, CachedStorage)
    assert restored.cache.directory == tmp_path / "cache"


def test_a_second_read_of_a_tag_on_s3_sends_no_get_for_chunks(
    s3_backend: Backend, tmp_path: Path
) -> None:
    server = s3_backend.server
    assert server is not None
    hub = hubzarr.Hub(s3_backend.root, s3_backend.options, cache=_fresh(tmp_path / "cache"))
    values = _tagged(hub)
    server.reset()

    def chunk_gets() -> int:
        return sum(1 for r in server.requests if r.method == "GET" and "/data/" in r.path)

    cold = hubzarr.Hub(s3_backend.root, s3_backend.options, cache=_fresh(tmp_path / "cache"))
    np.testing.assert_array_equal(cold.load_array("c/arr:v1")[:], values)
    assert chunk_gets() >= 10
    _settle(cold)
    server.reset()
    warm = hubzarr.Hub(s3_backend.root, s3_backend.options, cache=_fresh(tmp_path / "cache"))
    np.testing.assert_array_equal(warm.load_array("c/arr:v1")[:], values)
    assert chunk_gets() == 0
    assert server.requests  # refs still asked: a tag deleted meanwhile would be seen


def test_cached_chunks_are_read_by_the_reading_threads_and_only_misses_travel(
    s3_backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = s3_backend.server
    assert server is not None
    hub = hubzarr.Hub(s3_backend.root, s3_backend.options, cache=_fresh(tmp_path / "cache"))
    values = _tagged(hub)
    assert hub.load_array("c/arr:v1").prefetch(np.s_[0:50])  # chunks 0-4 of 10
    _settle(hub)
    sent: list[str] = []
    submit = bulk.submit_coroutine
    monkeypatch.setattr(bulk, "submit_coroutine", lambda c: sent.append(c.__name__) or submit(c))
    server.reset()
    warm = hubzarr.Hub(s3_backend.root, s3_backend.options, cache=_fresh(tmp_path / "cache"))
    np.testing.assert_array_equal(warm.load_array("c/arr:v1")[:], values)
    gets = [r.path for r in server.requests if r.method == "GET" and "/data/" in r.path]
    assert sorted(p.rsplit("/", 1)[1] for p in gets) == [f"{i}.0" for i in range(5, 10)]
    # The five cached chunks never went to the event loop's thread: each reading thread read
    # its own from the cache folder; only the five misses were sent there.
    assert sent.count("read") == 5


def test_a_damaged_entry_read_by_a_reading_thread_is_fetched_again(
    s3_backend: Backend, tmp_path: Path
) -> None:
    server = s3_backend.server
    assert server is not None
    cache_dir = tmp_path / "cache"
    hub = hubzarr.Hub(s3_backend.root, s3_backend.options, cache=_fresh(cache_dir))
    values = _tagged(hub)
    hub.load_array("c/arr:v1")[:]
    _settle(hub)
    files = _entry_files(cache_dir)
    assert len(files) == 10
    for file in files[:3]:
        data = bytearray(file.read_bytes())
        data[100] ^= 1
        file.write_bytes(bytes(data))
    server.reset()
    again = hubzarr.Hub(s3_backend.root, s3_backend.options, cache=_fresh(cache_dir))
    np.testing.assert_array_equal(again.load_array("c/arr:v1")[:], values)
    assert sum(1 for r in server.requests if r.method == "GET" and "/data/" in r.path) == 3


def test_a_cached_head_read_on_s3_sees_a_later_write(s3_backend: Backend, tmp_path: Path) -> None:
    # 20 chunks: the read lists the head once, and reads listed generations from the cache.
    plain = hubzarr.Hub(s3_backend.root, s3_backend.options, cache=False)
    arr = plain.array((20, 100), "c/head", chunks=(1, 100), dtype="int64")
    arr[:] = 1
    hub = hubzarr.Hub(s3_backend.root, s3_backend.options, cache=_fresh(tmp_path / "cache"))
    head = hub.load_array("c/head")
    assert (head[:] == 1).all()
    _settle(hub)
    assert (head[:] == 1).all()  # from the cache
    arr[3:5] = 2
    expected = np.ones((20, 100), dtype="int64")
    expected[3:5] = 2
    np.testing.assert_array_equal(head[:], expected)
    np.testing.assert_array_equal(hub.load_array("c/head")[:], expected)


def test_a_forked_child_reads_in_bulk_after_its_parent_did(tmp_path: Path) -> None:
    root = str(tmp_path / "hub")
    values = np.arange(400 * 5000, dtype="float64").reshape(400, 5000)
    big = hubzarr.Hub(root).array(values.shape, "c/big", chunks=(10, 5000), dtype="float64")
    big[:] = values
    hubzarr.Hub(root).tag("c/big", "v1")
    hub = hubzarr.Hub(root, cache=_fresh(tmp_path / "cache"))
    np.testing.assert_array_equal(hub.load_array("c/big:v1")[:], values)
    assert bulk._pool is not None  # the read ran on the reading threads
    ctx = multiprocessing.get_context("fork")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads: on purpose
        with ctx.Pool(1) as pool:
            total = pool.apply_async(sum_in_child, (root, "c/big:v1")).get(timeout=60)
    assert total == values.sum()


def test_prefetch_fetches_a_selection_s_chunks_ahead(tmp_path: Path) -> None:
    root = str(tmp_path / "hub")
    values = _tagged(hubzarr.Hub(root))
    hub = hubzarr.Hub(root, cache=_fresh(tmp_path / "cache"))
    seen: list[tuple[int, int]] = []
    assert hub.load_array("c/arr:v1").prefetch(np.s_[5:35], progress=lambda *a: seen.append(a))
    assert seen[-1] == (4, 4)  # rows 5..34: chunks 0 to 3

    counter = CountingStorage(open_storage(root))
    later = hubzarr.Hub(root, storage=counter, cache=_fresh(tmp_path / "cache"))
    np.testing.assert_array_equal(later.load_array("c/arr:v1")[0:40], values[0:40])
    assert _data_reads(counter) == []
    np.testing.assert_array_equal(later.load_array("c/arr:v1")[40:50], values[40:50])
    assert len(_data_reads(counter)) == 1


def test_open_cached_keeps_a_given_storage_and_an_explicit_choice(tmp_path: Path) -> None:
    plain = open_storage(str(tmp_path / "hub"))
    assert open_cached(plain.url, storage=plain) is plain  # local: off by default
    wrapped = open_cached(plain.url, storage=plain, cache=tmp_path / "c")
    assert isinstance(wrapped, CachedStorage) and wrapped.inner is plain
    assert open_cached(plain.url, storage=wrapped, cache=True) is wrapped


# -- the command line ---------------------------------------------------------------------


def _cli(*args: str) -> list[str]:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def test_hub_cache_info_warm_and_clear(tmp_path: Path) -> None:
    root, cache_dir = str(tmp_path / "hub"), tmp_path / "cache"
    values = _tagged(hubzarr.Hub(root))
    _tagged(hubzarr.Hub(root), "c/other")
    _cli("configure", "--cache", "--cache-dir", str(cache_dir), "--cache-size", "64MiB")

    info = json.loads("\n".join(_cli("cache", "info", "--json", "--root", root)))
    assert info["directory"] == str(cache_dir)
    assert (info["size_limit"], info["entries"], info["used_for_root"]) == (64 * 2**20, 0, True)

    assert _cli("cache", "warm", "c/arr:v1", "--index", "0:20,:", "--root", root) == [
        f"c/arr:v1: 2 chunks in the cache ({Path(root).as_uri()})"
    ]
    _cli("cache", "warm", "c/other:v1", "--root", root)
    after = json.loads("\n".join(_cli("cache", "info", "--json", "--root", root)))
    assert after["entries"] >= 12 and after["size"] > 0
    assert after["misses"] >= 12

    counter = CountingStorage(open_storage(root))
    hub = hubzarr.Hub(root, storage=counter, cache=_fresh(cache_dir))
    np.testing.assert_array_equal(hub.load_array("c/arr:v1")[0:20], values[0:20])
    assert _data_reads(counter) == []

    (line,) = _cli("cache", "clear", "c/arr", "--root", root)
    assert line.startswith("dropped ") and f"of c/arr from {cache_dir}" in line
    assert int(line.split()[1]) >= 2
    counter.reset()
    hub = hubzarr.Hub(root, storage=counter, cache=_fresh(cache_dir))
    hub.load_array("c/arr:v1")[0:20]
    assert len(_chunk_reads(counter)) == 2
    other = CountingStorage(open_storage(root))
    hubzarr.Hub(root, storage=other, cache=_fresh(cache_dir)).load_array("c/other:v1")[:]
    assert _data_reads(other) == []  # another repository's entries stay

    (line,) = _cli("cache", "clear", "--root", root)
    assert line.startswith("dropped ")
    shown = _cli("cache", "info", "--root", root)
    assert any(row.startswith("entries:") and row.split()[-1] == "0" for row in shown)


def test_hub_cache_warm_refuses_a_root_it_does_not_cache(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["cache", "warm", "c/arr", "--root", str(tmp_path)])
    assert result.exit_code == 1
    assert "the cache is off" in result.stderr


def test_hub_cache_warm_refuses_a_bad_index(tmp_path: Path) -> None:
    root = str(tmp_path / "hub")
    _tagged(hubzarr.Hub(root))
    _cli("configure", "--cache", "--cache-dir", str(tmp_path / "cache"))
    args = ["cache", "warm", "c/arr:v1", "--index", "a:b", "--root", root]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert "--index takes numpy basic indices" in result.stderr


def test_quick_commands_do_not_import_diskcache(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from hubzarr.cli import app\n"
        "for args in (['--help'], ['cache', '--help'], ['ls', '--root', sys.argv[1]]):\n"
        "    try:\n"
        "        app(args)\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code in (0, None), exit.code\n"
        "print('diskcache' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip().splitlines()[-1] == "False"


def test_no_warning_when_the_folder_works(tmp_path: Path) -> None:
    root = str(tmp_path / "hub")
    _tagged(hubzarr.Hub(root))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hubzarr.Hub(root, cache=_fresh(tmp_path / "cache")).load_array("c/arr:v1")[:]


class TestCachedStorage(StorageContract):
    """The wrapper keeps every promise of a storage (over memory, whose contract suite runs
    without a server)."""

    @pytest.fixture
    def root_url(self, tmp_path: Path) -> Iterator[str]:
        self.folder = tmp_path / "cache"
        yield from _memory_root()

    def open(self, url: str) -> Storage:
        return CachedStorage(open_storage(url), ChunkCache(self.folder, size_limit="1GiB"))

    def put_raw(self, storage: Storage, path: str, data: bytes) -> None:
        assert isinstance(storage, CachedStorage)
        test_storage.TestMemoryStorage().put_raw(storage.inner, path, data)

    def raw_names(self, storage: Storage) -> list[str]:
        assert isinstance(storage, CachedStorage)
        return test_storage.TestMemoryStorage().raw_names(storage.inner)


def test_hub_configure_turns_the_cache_off_and_on(tmp_path: Path) -> None:
    remote = ("s3://bucket/hub", {"anon": True})
    _cli("configure", "--no-cache")
    assert not isinstance(hubzarr.Hub(*remote).storage, CachedStorage)
    _cli("configure", "--cache", "--cache-size", "2GB", "--cache-dir", str(tmp_path / "c"))
    local = hubzarr.Hub(str(tmp_path / "hub")).storage  # --cache: every root
    assert isinstance(local, CachedStorage)
    assert (local.cache.directory, local.cache.size_limit) == (tmp_path / "c", 2 * 10**9)
    shown = _cli("configure", "--show")
    assert {"cache:       for every root", f"cache dir:   {tmp_path / 'c'}"} <= set(shown)
    assert "cache size:  1.86 GiB" in shown
    _cli("configure", "--cache-size", "", "--cache-dir", "")  # back to the defaults
    settings = hubzarr.config.resolve_cache()
    assert settings.size_limit == 10 * 2**30
    assert settings.directory == Path.home() / ".cache" / "hubzarr"
    result = CliRunner().invoke(app, ["configure", "--cache-size", "lots"])
    assert result.exit_code == 1
    assert "--cache-size must be a number of bytes" in result.stderr
