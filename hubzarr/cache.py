"""A local cache of the objects that never change, shared by every process on the machine.

Only objects whose bytes can never change are cached, so nothing ever needs invalidating:
data objects (``<user>/<name>/<incarnation>/data/...``: each path is written once), version
records (``versions/<id>.json``) and manifests (``manifests/<id>.json``). Refs, seals,
``repo.json``, listings, sizes, existence and "not found" always go to storage, so a read at a
branch head sees every write and tag that returned before it, from any process. A data object
may later be *emptied* (a superseded generation, truncated to zero bytes): an empty object is
never cached, sizes and existence are never answered from the cache, and a head read that
finds a cached generation still asks storage whether a newer one exists, exactly as without
the cache (:mod:`hubzarr.session`).

Two tiers, both in :class:`ChunkCache`:

- On disk, a :mod:`diskcache` folder: SQLite (write-ahead log) holds the index and the size
  of every entry; values over 32 KiB lie in their own files. Every process on the machine
  shares the folder and its one size limit (no per-process ledger); concurrent fills of one
  object each write their own file and the index keeps one; a crash leaves the index whole
  (SQLite's journal) and at worst an orphaned file. Entries are evicted least recently
  stored first: eviction by last use would make every read a write transaction, serialising
  the readers of all processes. Each entry carries the CRC-32C of its bytes, checked on every
  read: a torn, truncated or edited cache file is dropped and fetched again, never returned.
- In memory, per process, the most recently used small objects, bounded in bytes.

:class:`CachedStorage` wraps any :class:`~hubzarr.storage.Storage`, so every read path of the
library (stores, bulk reads, readers, copies) benefits without knowing. Keys are the root's
:attr:`~hubzarr.storage.Storage.identity` (its URL and endpoint, never a credential) and the
object's path.

A cache folder that cannot be used (unwritable, not a folder, a full disk) leaves reads
working uncached, with one :class:`CacheWarning` per process.
"""

from __future__ import annotations

import asyncio
import atexit
import builtins
import contextlib
import fcntl
import io
import mmap
import os
import sqlite3
import threading
import time
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast, overload

import crc32c

from hubzarr.config import parse_size, resolve_cache
from hubzarr.errors import HubError, InvalidArgumentError
from hubzarr.storage import (
    NotCachedError,
    Parts,
    Storage,
    open_storage,
    reading_from_cache,
    reading_in_caller,
)

__all__ = [
    "CacheInfo",
    "CacheWarning",
    "CachedStorage",
    "ChunkCache",
    "cacheable",
    "open_cached",
    "shared_cache",
]

T = TypeVar("T")

#: The in-memory tier's default bound, per process.
DEFAULT_MEMORY_LIMIT = 64 * 2**20
#: Bytes of fills queued behind reads beyond which a read waits for its own fill.
_MAX_PENDING = 256 * 2**20
#: Hits and misses are added to the folder's totals at most every this many seconds (a write
#: transaction: every few reads would cost more than the reads) and at exit.
_STATS_EVERY_S = 2.0


class CacheWarning(UserWarning):
    """The cache folder cannot be used: reads go on without it."""


@dataclass(frozen=True, slots=True)
class CacheInfo:
    """The state of a cache folder (:meth:`ChunkCache.info`).

    Attributes
    ----------
    directory : pathlib.Path
        The folder.
    size : int
        Bytes it holds (its index included).
    size_limit : int
        Bytes it may hold.
    entries : int
        Objects it holds.
    hits, misses : int
        Reads it answered, and reads that went to storage, by every process that used it.
    """

    directory: Path
    size: int
    size_limit: int
    entries: int
    hits: int
    misses: int


def cacheable(path: str) -> bool:
    """Whether the object at ``path`` (relative to a hub root) never changes once written:
    a data object, a version record, a manifest, an index root or shard (see
    ``docs/format.md``, section 2)."""
    parts = path.split("/", 5)
    if len(parts) >= 6 and parts[3] == "data":
        return True
    return (
        len(parts) == 5
        and parts[3] in ("versions", "manifests", "index", "shards")
        and parts[4].endswith(".json")
    )


_warned = False
_live: weakref.WeakSet[ChunkCache] = weakref.WeakSet()


def _warn_once(message: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(message, CacheWarning, stacklevel=4)


def _mapped(file: Any) -> memoryview | None:
    """A read-only view of an open cache file mapped into memory (``None`` if empty); the
    file is closed (the mapping keeps what it needs)."""
    with file:
        if os.fstat(file.fileno()).st_size == 0:
            return None
        return memoryview(mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ))


@atexit.register
def _flush_all() -> None:
    for cache in list(_live):
        cache.flush_stats()


def _after_fork() -> None:
    """In a forked child (a DataLoader worker): locks another thread held at the fork would
    never be released, and the queued-write thread does not exist there."""
    global _shared_lock
    _shared_lock = threading.Lock()
    for cache in list(_live):
        cache._lock = threading.Lock()
        cache._writer = None
        cache._pending = 0


os.register_at_fork(after_in_child=_after_fork)


class ChunkCache:
    """A cache folder of immutable objects, shared by every process, and an in-memory tier.

    Parameters
    ----------
    directory : str or os.PathLike, optional
        The folder (made on first use). Default: ``$HUBZARR_CACHE_DIR``, the config file, or
        the platform's user cache folder (``~/.cache/hubzarr`` on Linux).
    size_limit : int or str, optional
        Bytes the folder may hold, across all processes (``"10GB"`` works too); 0 caches
        nothing. Default: ``$HUBZARR_CACHE_SIZE``, the config file, or 10 GiB. The last
        process to open the folder sets the limit for all.
    memory_limit : int
        Bytes this process keeps in memory (objects up to an eighth of it).

    Raises
    ------
    InvalidArgumentError
        If ``size_limit`` or ``memory_limit`` is not a size, or ``$HUBZARR_CACHE_SIZE`` is
        needed and is not one.
    FormatError
        If the config file is needed and malformed.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        size_limit: int | str | None = None,
        memory_limit: int = DEFAULT_MEMORY_LIMIT,
    ) -> None:
        defaults = resolve_cache() if directory is None or size_limit is None else None
        self.directory = (
            Path(os.fspath(directory)).expanduser().absolute()
            if directory is not None
            else defaults.directory  # type: ignore[union-attr]
        )
        self.size_limit = (
            parse_size(size_limit, what="the cache's size limit")
            if size_limit is not None
            else defaults.size_limit  # type: ignore[union-attr]
        )
        if isinstance(memory_limit, bool) or not isinstance(memory_limit, int) or memory_limit < 0:
            raise InvalidArgumentError(f"memory_limit must be bytes >= 0, not {memory_limit!r}")
        self.memory_limit = 0 if self.size_limit == 0 else memory_limit
        self._lock = threading.Lock()
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self._memory_bytes = 0
        self._disk: Any = None
        self._errors: tuple[type[BaseException], ...] = (OSError, sqlite3.Error)
        self._timeout: type[BaseException] = TimeoutError
        self._broken = self.size_limit == 0
        self._problem: str | None = None
        self._hits = 0
        self._misses = 0
        self._flushed = time.monotonic()
        #: Writes to the disk tier queued by :meth:`put_later`, one thread (SQLite serialises
        #: writers anyway), and the bytes they hold.
        self._writer: ThreadPoolExecutor | None = None
        self._pending = 0
        _live.add(self)

    def __repr__(self) -> str:
        return f"ChunkCache({str(self.directory)!r}, size_limit={self.size_limit})"

    def __reduce__(self) -> tuple[Any, ...]:
        # A worker process shares the folder (and opens its own connection to it).
        return (shared_cache, (str(self.directory), self.size_limit, self.memory_limit))

    # -- the disk tier ---------------------------------------------------------------------

    def _open(self) -> Any:
        """The diskcache ``Cache`` (opened on first use), or ``None`` if it cannot be used."""
        if self._disk is not None or self._broken:
            return self._disk
        with self._lock:
            if self._disk is None and not self._broken:
                import diskcache  # only when a cache is used: `hub --help` stays quick

                self._errors = (OSError, sqlite3.Error, diskcache.Timeout)
                self._timeout = diskcache.Timeout
                try:
                    self._disk = diskcache.Cache(
                        str(self.directory),
                        timeout=10,
                        size_limit=self.size_limit,
                        eviction_policy="least-recently-stored",
                        statistics=False,
                    )
                except self._errors as exc:
                    self._fail(exc)
        return self._disk

    def _fail(self, exc: BaseException) -> None:
        """Stop using the folder in this process: reads go on uncached, with one warning (given
        by the caller's thread: a failure of a queued write warns at the next call)."""
        self._broken = True
        disk, self._disk = self._disk, None
        if disk is not None:
            with contextlib.suppress(*self._errors):
                disk.close()
        self._problem = self._problem or (
            f"the hubzarr cache folder {self.directory} cannot be used "
            f"({type(exc).__name__}: {exc}); reading without it. Free space there, or choose "
            "another folder with 'hub configure --cache-dir DIR' or $HUBZARR_CACHE_DIR"
        )

    def _warn(self) -> None:
        if self._problem is not None:
            _warn_once(self._problem)

    # -- reading and filling ---------------------------------------------------------------

    @overload
    def get(self, key: str) -> bytes | None: ...

    @overload
    def get(self, key: str, *, mapped: bool) -> bytes | memoryview | None: ...

    def get(self, key: str, *, mapped: bool = False) -> bytes | memoryview | None:
        """Return the object cached under ``key``, checked, or ``None``.

        An entry whose bytes fail their checksum is dropped (and counts as a miss).
        ``mapped``: an entry in a file of its own (over 32 KiB) may come as a read-only view of
        the file mapped into memory (no copy; the page cache's pages), valid as long as it is
        referenced: files are never rewritten, and eviction only unlinks them.
        """
        with self._lock:
            data: bytes | memoryview | None = self._memory.get(key)
            if data is not None:
                self._memory.move_to_end(key)
        if data is None:
            data = self._get_disk(key, mapped)
            if isinstance(data, bytes):
                self._remember(key, data)
        self._count(data is not None)
        self._warn()
        return data

    def _get_disk(self, key: str, mapped: bool) -> bytes | memoryview | None:
        disk = self._open()
        if disk is None:
            return None
        try:
            value, tag = disk.get(key, default=None, read=mapped, tag=True)
            if value is None:
                return None
            data = _mapped(value) if mapped and not isinstance(value, bytes) else value
            if isinstance(data, bytes | memoryview) and data and tag == crc32c.crc32c(data):
                return data
            disk.delete(key)  # torn, truncated or edited: fetched again
        except self._timeout:
            pass  # the index is busy: a miss, not a failure
        except self._errors as exc:
            self._fail(exc)
        return None

    def put(self, key: str, data: bytes) -> None:
        """Cache ``data`` under ``key`` (never an empty object), evicting the least recently
        stored entries beyond the size limit."""
        if data and not self._broken:
            self._remember(key, data)
            self._put_disk(key, data)
        self._warn()

    def put_later(self, key: str, data: bytes, claim: Claim | None = None) -> Future[None] | None:
        """:meth:`put`, the disk write queued to a thread of the cache's own (the object is in
        the memory tier at once); return the queued write, if any. ``claim`` (of ``key``, see
        :meth:`claim`) is released once the object is on disk."""
        if not data or self._broken:
            if claim is not None:
                claim.release()
            self._warn()
            return None
        self._remember(key, data)
        with self._lock:
            if self._writer is None:
                self._writer = ThreadPoolExecutor(1, thread_name_prefix="hubzarr-cache")
            self._pending += len(data)
            return self._writer.submit(self._put_queued, key, data, claim)

    @property
    def pending(self) -> int:
        """Bytes queued by :meth:`put_later`, not yet on disk."""
        return self._pending

    def _put_queued(self, key: str, data: bytes, claim: Claim | None) -> None:
        try:
            self._put_disk(key, data)
        finally:
            with self._lock:
                self._pending -= len(data)
            if claim is not None:
                claim.release()

    def claim(self, key: str) -> Claim | None:
        """Claim the fetch of ``key`` for this caller, across processes and threads: a held
        :class:`Claim` (release it once the object is cached, or the fetch failed), or
        ``None`` if another holds a claim of it now, who will cache it.

        A claim is an exclusive ``flock`` of one of 65,536 lock files in the folder's
        ``locks/`` (chosen by the key's CRC-32C), so the kernel releases the claims of a
        process that dies. Where the folder takes no lock file, every caller may fetch.
        """
        if self._broken:
            return Claim(None)
        stripe = crc32c.crc32c(key.encode()) & 0xFFFF
        folder = self.directory / "locks"
        try:
            try:
                fd = os.open(folder / f"{stripe:04x}", _LOCK_FLAGS, 0o644)
            except FileNotFoundError:
                folder.mkdir(parents=True, exist_ok=True)
                fd = os.open(folder / f"{stripe:04x}", _LOCK_FLAGS, 0o644)
        except OSError:
            return Claim(None)  # cannot coordinate: fetch
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError:
            os.close(fd)
            return Claim(None)
        return Claim(fd)

    def settle(self) -> None:
        """Wait until the writes :meth:`put_later` queued are on disk (or dropped)."""
        with self._lock:
            writer = self._writer
        if writer is not None:
            writer.submit(lambda: None).result()
        self._warn()

    def _put_disk(self, key: str, data: bytes) -> None:
        disk = self._open()
        if disk is None or len(data) > self.size_limit:
            return
        try:
            tag = crc32c.crc32c(data)
            if len(data) < disk.disk_min_file_size:
                disk.set(key, data, tag=tag)  # into SQLite
            else:
                # As a file: diskcache would write ``bytes`` line by line (an io.BytesIO
                # iterated), about ten times slower than this, read in blocks of 4 MiB.
                disk.set(key, io.BytesIO(data), read=True, tag=tag)
            if disk.volume() > self.size_limit:
                disk.cull()  # diskcache evicts only 10 entries per write
        except self._timeout:
            pass
        except self._errors as exc:
            self._fail(exc)

    def discard(self, key: str) -> None:
        """Drop the entry under ``key``, if any."""
        with self._lock:
            data = self._memory.pop(key, None)
            if data is not None:
                self._memory_bytes -= len(data)
        disk = self._open()
        if disk is None:
            return
        try:
            disk.delete(key)
        except self._timeout:
            pass
        except self._errors as exc:
            self._fail(exc)

    def _remember(self, key: str, data: bytes) -> None:
        if len(data) > self.memory_limit // 8:
            return
        with self._lock:
            old = self._memory.pop(key, None)
            if old is not None:
                self._memory_bytes -= len(old)
            self._memory[key] = data
            self._memory_bytes += len(data)
            while self._memory_bytes > self.memory_limit:
                _, dropped = self._memory.popitem(last=False)
                self._memory_bytes -= len(dropped)

    # -- statistics and maintenance ----------------------------------------------------------

    def _count(self, hit: bool) -> None:
        with self._lock:
            if hit:
                self._hits += 1
            else:
                self._misses += 1
            due = time.monotonic() - self._flushed >= _STATS_EVERY_S
        if due:
            self.flush_stats()

    def flush_stats(self) -> None:
        """Add this process's hits and misses to the folder's totals."""
        with self._lock:
            hits, misses, self._hits, self._misses = self._hits, self._misses, 0, 0
            self._flushed = time.monotonic()
        disk = self._disk  # never opened (nor the folder made) just for this, at exit say
        if disk is None or not (hits or misses):
            return
        try:
            with disk.transact():  # atomic against every other process
                disk.reset("hits", disk.reset("hits") + hits)
                disk.reset("misses", disk.reset("misses") + misses)
        except self._timeout:
            pass
        except self._errors as exc:
            self._fail(exc)

    def info(self) -> CacheInfo:
        """Return the folder's size, limit, entries, hits and misses (of every process); a
        folder that cannot be used reports itself empty (with a :class:`CacheWarning`)."""
        self.settle()
        disk = self._open() if self.directory.is_dir() else None
        if disk is None:
            self._warn()
            return CacheInfo(self.directory, 0, self.size_limit, 0, 0, 0)
        self.flush_stats()
        try:
            hits, misses = disk.reset("hits"), disk.reset("misses")
            return CacheInfo(
                self.directory, disk.volume(), self.size_limit, len(disk), hits, misses
            )
        except self._errors as exc:
            self._fail(exc)
            self._warn()
            return CacheInfo(self.directory, 0, self.size_limit, 0, 0, 0)

    def clear(self, prefix: str | None = None) -> int:
        """Drop every entry (or those whose key starts with ``prefix``); return how many."""
        self.settle()
        with self._lock:
            for key in [k for k in self._memory if prefix is None or k.startswith(prefix)]:
                self._memory_bytes -= len(self._memory.pop(key))
        disk = self._open() if self.directory.is_dir() else None
        if disk is None:
            return 0
        try:
            if prefix is None:
                return int(disk.clear(retry=True))
            doomed = [k for k in disk.iterkeys() if isinstance(k, str) and k.startswith(prefix)]
            return sum(bool(disk.delete(k, retry=True)) for k in doomed)
        except self._errors as exc:
            self._fail(exc)
            self._warn()
            return 0

    def close(self) -> None:
        """Wait for queued writes, flush the statistics and close this process's connection
        to the folder."""
        self.settle()
        self.flush_stats()
        with self._lock:
            disk, self._disk = self._disk, None
        if disk is not None:
            disk.close()


_LOCK_FLAGS = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
#: A read that finds another fetching the same object waits this long at most, then fetches.
CLAIM_WAIT_S = 60.0


class Claim:
    """The right to fetch one object and cache it (:meth:`ChunkCache.claim`): the lock file's
    descriptor, ``None`` where there is nothing to hold."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def release(self) -> None:
        """Let the others waiting for this object look in the cache (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor releases the flock


_shared: dict[tuple[str, int, int], ChunkCache] = {}
_shared_lock = threading.Lock()


def shared_cache(
    directory: str | os.PathLike[str] | None = None,
    size_limit: int | None = None,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
) -> ChunkCache:
    """Return this process's :class:`ChunkCache` of ``directory`` (default: the configured
    one), made on first use: every storage of the process shares its memory tier.

    Raises
    ------
    InvalidArgumentError
        As :class:`ChunkCache`.
    FormatError
        If the config file is needed and malformed.
    """
    settings = resolve_cache() if directory is None or size_limit is None else None
    folder = (
        Path(os.fspath(directory)).expanduser().absolute()
        if directory is not None
        else settings.directory  # type: ignore[union-attr]
    )
    limit = size_limit if size_limit is not None else settings.size_limit  # type: ignore[union-attr]
    key = (str(folder), limit, memory_limit)
    with _shared_lock:
        cache = _shared.get(key)
        if cache is None:
            cache = _shared[key] = ChunkCache(folder, size_limit=limit, memory_limit=memory_limit)
        return cache


def open_cached(
    root: str,
    storage_options: dict[str, Any] | None = None,
    *,
    cache: bool | str | os.PathLike[str] | ChunkCache | None = None,
    storage: Storage | None = None,
) -> Storage:
    """Open the storage of ``root`` (or take ``storage``), behind the cache if one applies.

    Parameters
    ----------
    root : str
        The hub root, resolved.
    storage_options : dict, optional
        Options for its fsspec filesystem.
    cache : bool, str, os.PathLike or ChunkCache, optional
        ``None``: the configured default (on for remote roots, off for local and memory ones,
        unless ``hub configure --cache/--no-cache`` says otherwise). ``True``: the configured
        cache folder; ``False``: none; a folder; or a :class:`ChunkCache`.
    storage : Storage, optional
        The storage to wrap instead of opening one.

    Returns
    -------
    Storage
        A :class:`CachedStorage`, or the plain storage.

    Raises
    ------
    InvalidArgumentError
        If ``cache`` is of another type, or as :func:`hubzarr.storage.open_storage`.
    FormatError
        If the config file is needed and malformed.
    """
    inner = storage if storage is not None else open_storage(root, storage_options)
    if isinstance(inner, CachedStorage) or cache is False:
        return inner
    if isinstance(cache, ChunkCache):
        chosen = cache
    elif cache is None:
        settings = resolve_cache()
        if not settings.applies_to(root):
            return inner
        chosen = shared_cache(settings.directory, settings.size_limit)
    elif cache is True:
        chosen = shared_cache()
    elif isinstance(cache, str | os.PathLike):
        chosen = shared_cache(cache)
    else:
        raise InvalidArgumentError(
            "cache must be True, False, None, a folder or a hubzarr.cache.ChunkCache, not "
            f"{type(cache).__name__}"
        )
    if chosen.size_limit == 0:
        return inner
    return CachedStorage(inner, chosen)


def _whole(_: int, raw: bytes) -> bytes:
    """The object read, as bytes of its own (a local read may reuse its buffer)."""
    return bytes(raw)


class CachedStorage(Storage):
    """A :class:`~hubzarr.storage.Storage` that reads immutable objects through a
    :class:`ChunkCache`; everything else passes straight through.

    Parameters
    ----------
    inner : Storage
        The root's storage.
    cache : ChunkCache
        The cache to read through.
    """

    caches = True

    def __init__(self, inner: Storage, cache: ChunkCache) -> None:
        self.inner = inner
        self.cache = cache
        self.url = inner.url
        self.read_only = inner.read_only
        self.clock_slack_s = inner.clock_slack_s
        self.caller_reads = inner.caller_reads
        self.reclaims_superseded = inner.reclaims_superseded
        self._scope = f"{inner.identity}\n"

    def __repr__(self) -> str:
        return f"CachedStorage({self.inner!r}, {self.cache!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (CachedStorage, (self.inner, self.cache))

    @property
    def identity(self) -> str:
        return self.inner.identity

    def key(self, path: str) -> str:
        """The cache key of the object at ``path``."""
        return self._scope + path

    def repository_prefix(self, repository: str) -> str:
        """The prefix of the cache keys of the repository ``user/name`` (with the slash)."""
        return f"{self._scope}{repository}/"

    # -- cache access, in the caller when the caller reads itself ----------------------------

    @property
    def _behind(self) -> Storage:
        """The storage behind the cache, for a read the cache cannot answer (not inside
        :func:`~hubzarr.storage.reads_from_cache`)."""
        if reading_from_cache():
            raise NotCachedError
        return self.inner

    async def _lookup(self, key: str) -> bytes | None:
        # In this thread: a hit costs less than a hop to a worker thread (the file's bytes
        # are copied from the page cache either way) and a miss is one SQLite lookup.
        return self.cache.get(key)

    async def _lookup_mapped(self, key: str) -> bytes | memoryview | None:
        """:meth:`_lookup`, a large entry as a view of its mapped file: for ``read_first``,
        whose caller only decodes it (a copy of 8 MiB and its page faults cost more than the
        read itself)."""
        return self.cache.get(key, mapped=True)

    async def _claim(self, key: str) -> tuple[Claim | None, bytes | None]:
        """Before fetching ``key``: claim the fetch, or wait while another process (or
        thread) fetches it, then take it from the cache. Return the claim to release once the
        object is cached (``None``: fetch unclaimed), or the object found."""
        if reading_in_caller():
            return None, None  # a local root: fetching costs what coordinating would
        claim = self.cache.claim(key)
        if claim is not None:
            found = self.cache.get(key)  # cached since the first look?
            if found is not None:
                claim.release()
                return None, found
            return claim, None
        delay, waited = 0.001, 0.0
        while claim is None and waited < CLAIM_WAIT_S:
            await asyncio.sleep(delay)  # polled: a lock file wakes no coroutine
            waited += delay
            delay = min(2 * delay, 0.02)
            claim = self.cache.claim(key)
        if claim is not None:
            claim.release()  # the other fetch is over: look, and else fetch unclaimed
        return None, self.cache.get(key)

    async def _fill(self, key: str, data: bytes, claim: Claim | None = None) -> None:
        if reading_in_caller():
            self.cache.put(key, data)
            return
        # Written behind the read (a file and a SQLite commit: longer than a local hop), unless
        # the disk falls behind the network; a claim is released once it is written.
        queued = self.cache.put_later(key, data, claim)
        if queued is not None and self.cache.pending > _MAX_PENDING:
            await asyncio.wrap_future(queued)

    async def settle(self) -> None:
        """Wait until what was read is in the cache's folder (:meth:`ChunkCache.settle`)."""
        await asyncio.to_thread(self.cache.settle)

    # -- reads -------------------------------------------------------------------------------

    async def read(self, path: str) -> bytes | None:
        if not cacheable(path):
            return await self._behind.read(path)
        data = await self._lookup(self.key(path))
        if data is not None:
            return data
        found = await self._read_first([path], 0, 1, _whole, 1)  # claimed, filled
        return None if found is None else found[1]

    async def read_first(
        self, paths: Sequence[str], then: Callable[[int, bytes], T], *, parallel: int = 1
    ) -> tuple[int, T] | None:
        if not paths:
            return None
        # The first cached path; the paths before it may exist in storage, and come first.
        hit, data = len(paths), b""  # or a view of a mapped file, taken as bytes (below)
        for i, path in enumerate(paths):
            if cacheable(path):
                found = cast(bytes | None, await self._lookup_mapped(self.key(path)))
                if found is not None:
                    hit, data = i, found
                    break
        if hit:
            found_first = await self._read_first(paths, 0, hit, then, parallel)
            if found_first is not None or hit == len(paths):
                return found_first
        try:
            return hit, then(hit, data)
        except HubError:
            # Cached damaged (as it was in storage then, or since): fetch it again.
            await self._discard(paths[hit])
        return await self._read_first(paths, hit, len(paths), then, 1)

    async def _read_first(
        self,
        paths: Sequence[str],
        start: int,
        stop: int,
        then: Callable[[int, bytes], T],
        parallel: int,
    ) -> tuple[int, T] | None:
        """``inner.read_first`` of ``paths[start:stop]``, caching what it found (once ``then``
        accepted it)."""
        fetched: dict[int, bytes] = {}

        def keeping(i: int, raw: bytes) -> T:
            result = then(start + i, raw)
            if raw and cacheable(paths[start + i]):
                fetched[start + i] = bytes(raw)  # local reads may reuse their buffer
            return result

        behind, claim = self._behind, None
        if stop - start == 1 and cacheable(paths[start]):  # one object: fetched once
            claim, cached = await self._claim(self.key(paths[start]))
            if cached is not None:
                with contextlib.suppress(HubError):  # damaged as stored: fetched again
                    return start, then(start, cached)
        try:
            found = await behind.read_first(paths[start:stop], keeping, parallel=parallel)
        except BaseException:
            if claim is not None:
                claim.release()
            raise
        for i, raw in fetched.items():
            await self._fill(self.key(paths[i]), raw, claim)  # released once written
        if claim is not None and not fetched:
            claim.release()
        return None if found is None else (start + found[0], found[1])

    async def _discard(self, path: str) -> None:
        if reading_in_caller():
            self.cache.discard(self.key(path))
        else:
            await asyncio.to_thread(self.cache.discard, self.key(path))

    async def size(self, path: str) -> int | None:
        return await self._behind.size(path)

    async def exists(self, path: str) -> bool:
        return await self._behind.exists(path)

    # -- writes pass through; what they make unreachable leaves the cache ---------------------

    async def write(self, path: str, data: Parts, *, durable: bool = False) -> None:
        await self.inner.write(path, data, durable=durable)

    async def create(
        self, path: str, data: Parts, *, durable: bool = True, unique: bool = True
    ) -> None:
        await self.inner.create(path, data, durable=durable, unique=unique)

    async def create_copy(
        self, path: str, source: Storage, source_path: str, check: Callable[[memoryview], Any]
    ) -> int | None:
        return await self.inner.create_copy(path, source, source_path, check)

    async def empty(self, path: str) -> None:
        await self.inner.empty(path)
        if cacheable(path):
            await self._discard(path)

    async def delete(self, path: str) -> None:
        await self.inner.delete(path)
        if cacheable(path):
            await self._discard(path)

    async def delete_prefix(self, prefix: str) -> None:
        await self.inner.delete_prefix(prefix)

    async def list(self, prefix: str) -> dict[str, int]:
        return await self._behind.list(prefix)

    async def list_dir(self, prefix: str) -> builtins.list[str]:
        return await self._behind.list_dir(prefix)

    async def list_detailed(
        self, prefix: str, *, temporaries: bool = False
    ) -> dict[str, tuple[int, float]]:
        return await self._behind.list_detailed(prefix, temporaries=temporaries)
