"""The zarr Store of one repository at one ref: copy-on-write by key prefix.

A :class:`HubStore` opened at a branch writes every key to ``data/<head>/<key>`` and reads a key
from there first, then from the ancestor that last wrote it, found in the index loaded once at
open (:meth:`hubzarr.versions.Repository.version_index`). Deleting a key an ancestor holds
writes a tombstone, so the read does not fall through. A store at a tag or a sealed version
reads each key with exactly one storage read and refuses writes.

Each group's consolidated metadata, ``<group>/.zmetadata``, is virtual: built on read from the
``.zgroup``, ``.zarray`` and ``.zattrs`` keys at the store's version, so it can never go stale
(xarray and ``zarr.open_consolidated`` read it; writes of it are accepted and dropped). At a
sealed version the keys are in the index in memory and the document is built once per store; at
a branch's head it takes the same listing :meth:`HubStore.list` does.

Every write is fenced: the store checks that its head is not sealed before writing and again
after; a head sealed meanwhile (a tag or branch taken by this or another process) is followed
to its successor and the write is repeated there, so a sealed version never takes a write and a
write that returned is in the branch's head.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import threading
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    Sequence,
)
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype
from zarr.core.sync import sync

from hubzarr import frame
from hubzarr.config import resolve_namespace, resolve_root, resolve_storage_options
from hubzarr.errors import (
    AlreadyExistsError,
    ConflictError,
    CorruptChunkError,
    FormatError,
    InvalidArgumentError,
    NotFoundError,
    ReadOnlyError,
)
from hubzarr.names import Name, parse_name
from hubzarr.storage import (
    Parts,
    Storage,
    as_bytes,
    check_path,
    check_root,
    open_storage,
    public_options,
    reads_in_caller,
)
from hubzarr.versions import Repository, Resolved, split_generation, split_location

__all__ = ["HeadSnapshot", "HubStore", "KeySetListing", "check_key", "conditional_writes"]

_READ_ONLY = "store was opened in read-only mode and does not support writing"
#: More rewrites of one key in one head than any writer makes: probing beyond is damage.
_MAX_GENERATION = 2**40
#: zarr format 2's consolidated metadata key, served virtually (see the module docstring).
_ZMETADATA = ".zmetadata"
_METADATA_FILES = frozenset({".zgroup", ".zarray", ".zattrs"})
#: Deletions in flight at once in :meth:`HubStore.delete_dir`, and metadata reads in flight
#: while a ``.zmetadata`` is built.
_DELETE_CONCURRENCY = _METADATA_CONCURRENCY = 32


def check_key(key: str) -> str:
    """Refuse a key no :class:`HubStore` stores; return it unchanged otherwise.

    Every check a store makes of a key before any I/O, in one place, so that anything that
    rehearses a write (:mod:`hubzarr.xarray`) refuses exactly what the store would.

    Raises
    ------
    InvalidArgumentError
        If the key could leave its folder (:func:`hubzarr.storage.check_path`), or ends with
        ``~`` and a number (hubzarr's names for rewrites of a key).
    """
    check_path(key)
    if split_generation(key)[1]:
        raise InvalidArgumentError(
            f"refusing key {key!r}: hubzarr stores rewrites of a key as '<key>~<n>', so "
            "a key may not itself end with '~' and a number"
        )
    return key


def _consolidated_group(key: str) -> str | None:
    """The prefix (``""`` or ``"a/b/"``) of the group whose ``.zmetadata`` ``key`` is, if any."""
    if key == _ZMETADATA:
        return ""
    if key.endswith("/" + _ZMETADATA):
        return key[: -len(_ZMETADATA)]
    return None


@dataclass(frozen=True, slots=True)
class _State:
    repo: Repository
    resolved: Resolved
    index: dict[str, str]
    #: The newest generation of each key this store has seen in its open head.
    generations: dict[str, int] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return self.resolved.version


@dataclass(frozen=True, slots=True)
class _Payload:
    """What a write stores at a key, checksummed once however many generations it tries."""

    data: bytes | memoryview
    #: :func:`hubzarr.frame.checksum` of ``data``.
    checksum: int

    def framed(self, version: str, key: str, generation: int) -> Parts:
        """The object to store as ``generation`` of ``key`` in ``version``."""
        return (frame.header(self.checksum, frame.binding(version, key, generation)), self.data)


@dataclass(frozen=True, slots=True)
class HeadSnapshot:
    """A branch head's state at one moment (:meth:`HubStore.snapshot`).

    Attributes
    ----------
    version : str
        The head then.
    written : dict
        ``{key: newest generation}`` of the keys the head held a value for.
    deleted : frozenset of str
        The keys whose newest generation in the head was a tombstone.
    index : dict
        The head's starting index (what it inherited).
    """

    version: str
    written: dict[str, int]
    deleted: frozenset[str]
    index: dict[str, str]


#: Set in :meth:`HubStore.restore`: its writes pass a gate closed by ``stop_writes``.
_restoring: ContextVar[bool] = ContextVar("hubzarr_restoring", default=False)


class _WriteGate:
    """Counts the writes in flight through one store object; once closed, refuses new ones
    (but those of :meth:`HubStore.restore`) and lets the closer wait for the rest to return."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._in_flight = 0
        self._closed = False

    @contextlib.contextmanager
    def passing(self, name: Name) -> Iterator[None]:
        with self._changed:
            if self._closed and not _restoring.get():
                raise ReadOnlyError(
                    f"{_READ_ONLY}: writes to {name} through this handle were stopped, because "
                    "the operation they belonged to failed"
                )
            self._in_flight += 1
        try:
            yield
        finally:
            with self._changed:
                self._in_flight -= 1
                self._changed.notify_all()

    def close(self, timeout: float) -> None:
        with self._changed:
            self._closed = True
            if not self._changed.wait_for(lambda: self._in_flight == 0, timeout):
                raise ConflictError(
                    f"writes still running {timeout:.0f} s after their operation failed"
                )


#: The objects read by the current conditional operation: ``{(store id, key): (head version,
#: generation read, -1 when the head had none)}``. While set, a write of a key read in the same
#: operation succeeds only if that key's generation is still the one read.
_observed: ContextVar[dict[tuple[int, str], tuple[str, int]] | None] = ContextVar(
    "hubzarr_observed", default=None
)


@contextlib.contextmanager
def conditional_writes() -> Iterator[None]:
    """Make the writes in this block conditional on what the block read (compare-and-swap).

    A read-modify-write of a chunk (zarr reads a chunk before writing part of it) then writes
    only if no other writer created a newer generation of the chunk meanwhile; otherwise
    :class:`ConflictError` is raised and the caller repeats the whole operation.
    """
    token = _observed.set({})
    try:
        yield
    finally:
        _observed.reset(token)


def _slice(payload: memoryview, byte_range: ByteRequest | None) -> memoryview:
    if byte_range is None:
        return payload
    if isinstance(byte_range, RangeByteRequest):
        return payload[byte_range.start : byte_range.end]
    if isinstance(byte_range, OffsetByteRequest):
        return payload[byte_range.offset :]
    if isinstance(byte_range, SuffixByteRequest):
        return payload[max(0, len(payload) - byte_range.suffix) :]
    raise TypeError(f"Unexpected byte_range, got {byte_range}.")


class KeySetListing:
    """zarr's three listings (``list``, ``list_prefix``, ``list_dir``), derived from one set
    of keys that a store returns from ``_listed``. Put it before ``Store`` in the bases."""

    async def _listed(self) -> builtins.set[str]:
        raise NotImplementedError

    async def list(self) -> AsyncIterator[str]:
        """Yield every key."""
        for key in sorted(await self._listed()):
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        """Yield every key starting with ``prefix``."""
        for key in sorted(await self._listed()):
            if key.startswith(prefix):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        """Yield the immediate children of the folder ``prefix``."""
        base = prefix.rstrip("/")
        base = base + "/" if base else ""
        children = {
            k[len(base) :].split("/", 1)[0] for k in await self._listed() if k.startswith(base)
        }
        for child in sorted(children):
            yield child


class HubStore(KeySetListing, Store):
    """A zarr ``Store`` over one hubzarr repository at one branch, tag or version.

    Parameters
    ----------
    root : str, optional
        The hub root (default: ``HUBZARR_ROOT``, the config file, or ``~/.hubzarr``).
    name : str
        ``user/name[:ref]``; without a ref, the repository's default branch.
    storage_options : dict, optional
        Options for the fsspec filesystem of ``root``.
    read_only : bool
        Refuse writes even at a branch.

    Raises
    ------
    InvalidNameError
        If ``name`` breaks the name grammar (checked before any I/O).

    Notes
    -----
    The store is opened lazily. Pickling it keeps the version it resolved, so every dask worker
    reads the same version, and drops credentials from ``storage_options``: workers resolve
    them from their own environment.
    """

    supports_writes: bool = True
    supports_deletes: bool = True
    supports_listing: bool = True

    def __init__(
        self,
        root: str | None = None,
        name: str = "",
        *,
        storage_options: dict[str, Any] | None = None,
        read_only: bool = False,
    ) -> None:
        super().__init__(read_only=read_only)
        self.root = check_root(resolve_root(root))
        self.name: Name = parse_name(name, default_user=resolve_namespace())
        self._storage_options = resolve_storage_options(self.root, storage_options)
        self._reset()

    def _reset(self) -> None:
        self._pinned: Resolved | None = None
        self._state: _State | None = None
        self._storage: Storage | None = None
        # Seal checks shared by concurrent writes (see _checked_state).
        self._check: asyncio.Future[_State] | None = None
        self._check_number = 0
        self._checks_started = 0
        # Consolidated metadata built at sealed versions: {(version, group prefix): document}.
        self._zmetadata: dict[tuple[str, str], bytes | None] = {}
        self._gate = _WriteGate()

    # -- identity, pickling --------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HubStore) and (self.root, str(self.name), self._read_only) == (
            other.root,
            str(other.name),
            other._read_only,
        )

    def __hash__(self) -> int:
        return hash((HubStore, self.root, str(self.name), self._read_only))

    def __repr__(self) -> str:
        mode = ", read_only=True" if self._read_only else ""
        return f"HubStore({self.root!r}, {str(self.name)!r}{mode})"

    def __str__(self) -> str:
        return f"hub://{self.name}"

    def __getstate__(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "name": self.name,
            "read_only": self._read_only,
            "storage_options": public_options(self._storage_options),
            "pinned": self.pinned_state(),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__init__(read_only=state["read_only"])
        self.root = state["root"]
        self.name = state["name"]
        self._storage_options = resolve_storage_options(self.root, state["storage_options"])
        self._reset()
        self._pinned = state["pinned"]

    def with_read_only(self, read_only: bool = False) -> HubStore:
        """Return a new, unopened store at the same ref with another ``read_only`` setting."""
        clone = HubStore(
            self.root, str(self.name), storage_options=self._storage_options, read_only=read_only
        )
        clone._pinned = self._pinned
        return clone

    # -- opening -------------------------------------------------------------------------

    @property
    def storage(self) -> Storage:
        """The storage of the hub root."""
        if self._storage is None:
            self._storage = open_storage(self.root, self._storage_options)
        return self._storage

    async def _open(self) -> None:
        await super()._open()
        await self._load()

    async def _load(self) -> _State:
        if self._state is None:
            repo = Repository(self.storage, self.name)
            await repo.open()
            resolved = self._pinned or await repo.resolve(self.name.ref)
            if resolved.kind == "version" and not resolved.sealed:
                raise InvalidArgumentError(
                    f"version {resolved.version} of {repo.name} is the open head of a branch: "
                    "it still takes writes, and a version id names an immutable state. Open "
                    "the branch to read or write it (see hubzarr.log for its name), or tag it "
                    "for a version that never changes: "
                    f"hubzarr.tag({repo.name.repository!r} + ':<branch>', 'my-tag')"
                )
            index = await repo.version_index(resolved.version, sealed=resolved.sealed)
            self._state = _State(repo, resolved, index)
        return self._state

    async def resolved(self) -> Resolved:
        """Return what this store's ref resolved to (opening the store if needed)."""
        return (await self._load()).resolved

    async def refresh(self) -> None:
        """At a branch, catch up with the branch: if this store's head has been sealed since it
        was opened (a tag or branch taken, here or elsewhere), move to the head that took over.
        """
        if not (await self._load()).resolved.sealed:
            await self._checked_state()

    def follow_head(self) -> None:
        """:meth:`refresh`, from synchronous code, for a store already opened at a branch.

        Arrays and groups call it before each operation; a store not opened yet opens at the
        current head anyway, and one at a sealed version never moves, so neither costs I/O.
        """
        state = self.pinned_state()
        if state is not None and not state.sealed:
            sync(self.refresh())

    @property
    def read_only(self) -> bool:
        """Whether writes are refused: opened read-only, at a sealed version, or on a read-only
        root (HTTP)."""
        resolved = self.pinned_state()
        return (
            self._read_only or self.storage.read_only or (resolved is not None and resolved.sealed)
        )

    def _check_writable(self) -> None:
        if self._state is not None and self._state.resolved.sealed:
            raise self._sealed_error(self._state)
        if self._read_only:
            raise ReadOnlyError(
                f"{_READ_ONLY}: {self.name} was opened read-only; open it with mode='r+' to write"
            )
        if self.storage.read_only:
            raise ReadOnlyError(
                f"{_READ_ONLY}: the hub root {self.root} is read-only (HTTP); copy the "
                "repository to a writable root to change it"
            )

    def check_writable(self) -> None:
        """Raise :class:`ReadOnlyError` if this store refuses writes.

        Raises
        ------
        ReadOnlyError
            If the store was opened read-only or is at a tag or sealed version.
        """
        self._check_writable()

    def pinned_state(self) -> Resolved | None:
        """Return what the ref resolved to, if the store has resolved it yet."""
        return self._state.resolved if self._state is not None else self._pinned

    def _sealed_error(self, state: _State) -> ReadOnlyError:
        what = f"tag {state.resolved.ref!r}" if state.resolved.kind == "tag" else "a sealed version"
        return ReadOnlyError(
            f"{_READ_ONLY}: {self.name} is {what} (version {state.version}), and versions "
            f"never change. Branch from it and write there: "
            f"hubzarr.branch({str(self.name)!r}, 'my-branch')"
        )

    async def _ensure_writable(self) -> None:
        await self._load()
        self._check_writable()

    async def _advance(self) -> _State:
        """Move to the head that took over if this store's head has been sealed.

        Also checks, in the same round trip, that the repository was not deleted since the
        store opened it (:meth:`Repository.check_live`): a handle opened before a deletion
        must neither read nor write.
        """
        state = await self._load()
        path, _ = await asyncio.gather(
            state.repo.successors(state.version), state.repo.check_live()
        )
        if len(path) == 1:
            return state
        index = dict(state.index)
        await state.repo.extend_index(index, path[:-1])
        resolved = Resolved(state.resolved.kind, state.resolved.ref, path[-1], sealed=False)
        self._state = _State(state.repo, resolved, index)
        return self._state

    async def _checked_state(self) -> _State:
        """Return the state after a seal check that began after this call.

        Concurrent writes share checks: a write needs a check that started after the write
        returned (a seal begun later lists the write), and one check started after several
        writes returned serves them all, so a burst of chunk writes costs a few checks, not two
        per chunk.
        """
        need = self._checks_started + 1
        while True:
            check = self._check
            if check is not None and self._check_number >= need:
                return check.result() if check.done() else await asyncio.shield(check)
            if check is None or check.done():
                self._checks_started += 1
                self._check_number = self._checks_started
                self._check = asyncio.ensure_future(self._advance())
                continue
            await asyncio.wait([check])

    def _where(self, state: _State, key: str) -> str:
        return f"key {key!r} of {self.name} (version {state.version})"

    # -- reading -------------------------------------------------------------------------

    def _check_key(self, key: str) -> None:
        check_key(key)

    def _decoder(
        self, state: _State, key: str, places: Sequence[tuple[str, int, bool]]
    ) -> Callable[[int, bytes], tuple[memoryview | None]]:
        """What :meth:`Storage.read_first` checks the object found at ``places[i]`` with: each
        place is (version, generation, whether a tombstone may lie there).

        A tombstone may lie only in the open head: where an index (a manifest) records a write,
        a tombstone is damage, as is an object bound to another place.
        """
        where = self._where(state, key)
        unbound = state.repo.layout == 1

        def decode(i: int, raw: bytes) -> tuple[memoryview | None]:
            version, generation, tombstone_ok = places[i]
            payload = frame.decode(
                raw, where, frame.binding(version, key, generation), unbound=unbound
            )
            if payload is None and not tombstone_ok:
                raise CorruptChunkError(
                    f"{where} is corrupt: version {version} recorded a value there, but a "
                    "deletion marker lies in its place; restore it from a copy or rewrite that "
                    "region"
                )
            # A 1-tuple, so that a tombstone (None inside) differs from "no object" (None).
            return (payload,)

        return decode

    async def _newest(self, state: _State, key: str, known: int) -> int:
        """Return the newest generation of ``key`` in the head, given that ``known`` exists.

        Generations are created one after another, so probing forward finds the newest:
        doubling steps, then bisection (a few requests even after many rewrites).
        """
        repo, head = state.repo, state.version
        low, step = known, 1
        while await self.storage.exists(repo.data_path(head, key, low + step)):
            low += step
            step *= 2
            if step > _MAX_GENERATION:
                # No writer makes 2**40 rewrites of a key: storage that answers "exists" for
                # everything is damaged (or not a hubzarr root), and probing would never end.
                raise FormatError(
                    f"{self._where(state, key)}: storage claims more than {_MAX_GENERATION} "
                    f"generations under {repo.data_path(head, key)}; the repository is damaged"
                )
        high = low + step  # absent
        while high - low > 1:
            middle = (low + high) // 2
            if await self.storage.exists(repo.data_path(head, key, middle)):
                low = middle
            else:
                high = middle
        return low

    async def _read(self, state: _State, key: str) -> memoryview | None:
        self._check_key(key)
        repo = state.repo
        owner = state.index.get(key)
        if state.resolved.sealed:
            if owner is None:
                return None
            version, generation = split_location(owner)
            decode = self._decoder(state, key, [(version, generation, False)])
            found = await self.storage.read_first([repo.object_path(owner, key)], decode)
        else:
            found, observed = await self._read_head(state, key, owner)
            session = _observed.get()
            if session is not None:
                session[(id(self), key)] = (state.version, observed)
        if found is not None:
            return found[1][0]
        if owner is not None:
            # A handle opened before the repository was deleted finds its objects gone.
            await repo.check_live()
            raise CorruptChunkError(
                f"{self._where(state, key)} is missing from storage although version "
                f"{split_location(owner)[0]} recorded it; the repository is damaged"
            )
        return None

    async def _read_head(
        self, state: _State, key: str, owner: str | None
    ) -> tuple[tuple[int, tuple[memoryview | None]] | None, int]:
        """Read ``key`` at the open head: its newest generation there, else the ancestor the
        index names. Return what read_first found and the generation read (-1: none in the
        head)."""
        repo, version = state.repo, state.version
        known = state.generations.get(key)
        inherited = [] if owner is None else [(*split_location(owner), False)]
        if known is None and owner is not None:
            # Inherited, and not seen in this head yet: most such keys were not rewritten here,
            # so ask for generation 0 and then the ancestor (generation 1 cannot exist without
            # generation 0).
            places = [(version, 0, True), *inherited]
            paths = [repo.data_path(version, key, 0), repo.object_path(owner, key)]
            found = await self.storage.read_first(paths, self._decoder(state, key, places))
            if found is None or found[0] == 1:
                return found, -1
            start, first = 0, found
        else:
            # The newest generation known and the next, concurrently on object stores (one
            # round trip); then the ancestor.
            start = known or 0
            places = [(version, start + 1, True), (version, start, True), *inherited]
            paths = [repo.data_path(version, key, start + 1), repo.data_path(version, key, start)]
            if owner is not None:
                paths.append(repo.object_path(owner, key))
            decode = self._decoder(state, key, places)
            found = await self.storage.read_first(paths, decode, parallel=2)
            if found is None or found[0] == 2:
                return found, -1
            if found[0] == 1:
                state.generations[key] = start
                return found, start
            start, first = start + 1, found
        newest = await self._newest(state, key, start)
        state.generations[key] = newest
        if newest == start:
            return first, newest
        decode = self._decoder(state, key, [(version, newest, True)])
        found = await self.storage.read_first([repo.data_path(version, key, newest)], decode)
        if found is None:
            raise CorruptChunkError(
                f"{self._where(state, key)}: generation {newest} vanished while read; is a "
                "garbage collection with a too-short grace period running?"
            )
        return found, newest

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        """Return the value of ``key`` at this store's version, or ``None`` if absent."""
        state = await self._load()
        group = _consolidated_group(key)
        if group is not None:
            self._check_key(key)
            document = await self._consolidated(state, group)
            payload: memoryview | None = None if document is None else memoryview(document)
        else:
            payload = await self._read(state, key)
        if payload is None:
            return None
        return prototype.buffer.from_bytes(_slice(payload, byte_range))

    async def read_payload(self, key: str) -> memoryview | None:
        """Return the checked bytes stored at ``key`` (what zarr stored), or ``None`` if absent.

        The same read as :meth:`get`, without wrapping the bytes in a zarr buffer: hubzarr's
        own dask graphs decode them straight into their output.
        """
        return await self._read(await self._load(), key)

    def read_payload_here(self, key: str) -> memoryview | None:
        """:meth:`read_payload` run to the end by the calling thread, with no event loop.

        Storage that reads in the caller (local folders) is read from this thread, so that
        threads decoding chunks also read them, without hops. Elsewhere (object stores, whose
        reads are asynchronous I/O), the read runs on zarr's event loop as usual.
        """
        state = self._state
        if state is None or not self.storage.caller_reads:
            result: memoryview | None = sync(self.read_payload(key))
            return result
        with reads_in_caller():
            reading = self._read(state, key)
            try:
                reading.send(None)
            except StopIteration as done:
                payload: memoryview | None = done.value
                return payload
            reading.close()
        raise RuntimeError(f"a read of {key!r} from {self.storage.url} suspended in the caller")

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        """Return byte ranges of several keys."""
        return list(await asyncio.gather(*(self.get(k, prototype, r) for k, r in key_ranges)))

    async def _get_many(
        self, requests: Iterable[tuple[str, BufferPrototype, ByteRequest | None]]
    ) -> AsyncGenerator[tuple[str, Buffer | None], None]:
        requests = list(requests)
        values = await asyncio.gather(*(self.get(*r) for r in requests))
        for (key, _, _), value in zip(requests, values, strict=True):
            yield key, value

    async def _head_generation(self, state: _State, key: str) -> int | None:
        """Return the newest generation of ``key`` in the open head, ``None`` if it has none."""
        repo, known = state.repo, state.generations.get(key)
        if known is None:
            if not await self.storage.exists(repo.data_path(state.version, key)):
                return None
            known = 0
        newest = await self._newest(state, key, known)
        state.generations[key] = newest
        return newest

    async def _size(self, state: _State, key: str) -> int | None:
        self._check_key(key)
        repo = state.repo
        if not state.resolved.sealed:
            generation = await self._head_generation(state, key)
            if generation is not None:
                size = await self.storage.size(repo.data_path(state.version, key, generation))
                if size is not None:
                    return None if size == len(frame.TOMBSTONE) else size - frame.HEADER_SIZE
        owner = state.index.get(key)
        if owner is None:
            return None
        size = await self.storage.size(repo.object_path(owner, key))
        return None if size is None else size - frame.HEADER_SIZE

    async def exists(self, key: str) -> bool:
        """Return whether ``key`` has a value at this store's version."""
        state = await self._load()
        group = _consolidated_group(key)
        if group is not None:
            self._check_key(key)
            return await self.exists(group + ".zgroup")
        if state.resolved.sealed:
            self._check_key(key)
            return key in state.index
        return await self._size(state, key) is not None

    async def getsize(self, key: str) -> int:
        """Return the size of ``key``'s value in bytes.

        Raises
        ------
        FileNotFoundError
            If ``key`` has no value.
        """
        state = await self._load()
        group = _consolidated_group(key)
        if group is not None:
            self._check_key(key)
            document = await self._consolidated(state, group)
            size = None if document is None else len(document)
        else:
            size = await self._size(state, key)
        if size is None:
            raise FileNotFoundError(key)
        return size

    # -- writing -------------------------------------------------------------------------

    async def set(self, key: str, value: Buffer) -> None:
        """Store ``value`` at ``key`` in the branch's head (a ``.zmetadata`` is dropped: the
        store builds it from the metadata files on every read)."""
        if _consolidated_group(key) is not None:
            self._check_key(key)
            await self._ensure_writable()
            return
        await self.write_payload(key, value.as_numpy_array().data)

    async def write_payload(self, key: str, payload: bytes | memoryview) -> None:
        """Store ``payload`` (encoded chunk bytes) at ``key`` in the branch's head.

        What :meth:`set` does with zarr's buffer; hubzarr's bulk writers call it with the chunks
        they encode themselves.
        """
        self._check_key(key)
        await self._fenced_write(key, _Payload(payload, frame.checksum(payload)))

    async def _put(
        self, state: _State, key: str, payload: _Payload | None, expected: int | None
    ) -> None:
        """Create the next generation of ``key`` in the head (``payload`` ``None``: a
        tombstone).

        ``expected`` is the generation a read-modify-write started from (-1: none in the
        head); the write then fails with :class:`ConflictError` if another writer got there
        first. Otherwise (a whole-object write) a newer generation found on the way is simply
        superseded.
        """
        repo, head = state.repo, state.version
        if expected is not None:
            generation = expected + 1
        else:
            known = state.generations.get(key)
            generation = 0 if known is None else known + 1
        while True:
            path = repo.data_path(head, key, generation)
            data = frame.TOMBSTONE if payload is None else payload.framed(head, key, generation)
            try:
                await self.storage.create(path, data, durable=False, unique=False)
            except AlreadyExistsError:
                if await self._already_ours(state, key, generation, data):
                    state.generations[key] = generation
                    return
                if expected is not None:
                    raise ConflictError(self._where(state, key)) from None
                generation = await self._newest(state, key, generation) + 1
                continue
            state.generations[key] = generation
            return

    async def _already_ours(self, state: _State, key: str, generation: int, data: Parts) -> bool:
        """Whether a generation found taken holds what we meant to write and is the newest.

        A create whose acknowledgement was lost and retried finds its own object, so "already
        exists" is not always a conflict. But another writer may have written the same bytes
        (the same value twice), so equal bytes alone prove nothing; equal bytes in the newest
        generation do mean the head now holds exactly our write, which is all a caller needs.
        """
        repo, head = state.repo, state.version
        raw = await self.storage.read(repo.data_path(head, key, generation))
        if raw is None or raw != as_bytes(data):
            return False
        return not await self.storage.exists(repo.data_path(head, key, generation + 1))

    async def _fenced_write(self, key: str, data: _Payload | None) -> None:
        """Write ``data`` (``None``: a deletion) as the next generation of ``key`` in the head,
        between two seal checks; if the head was sealed meanwhile, repeat the write in the head
        that took over, so it is never lost (a conditional write raises ConflictError instead,
        and its caller starts over from a fresh read)."""
        await self._ensure_writable()
        with self._gate.passing(self.name):
            await self._fenced_write_through(key, data)

    async def _fenced_write_through(self, key: str, data: _Payload | None) -> None:
        session = _observed.get()
        seen = session.get((id(self), key)) if session is not None else None
        state = await self._checked_state()
        while True:
            expected = None
            if seen is not None:
                if seen[0] != state.version:
                    raise ConflictError(self._where(state, key))
                expected = seen[1]
            try:
                if data is not None:
                    await self._put(state, key, data, expected)
                elif not await self._remove(state, key, expected):
                    return
                after = await self._checked_state()
            except NotFoundError:
                await self._clean_up_if_deleted(state)
                raise
            if after.version == state.version:
                return
            if seen is not None:
                raise ConflictError(self._where(state, key))
            state = after

    async def _remove(self, state: _State, key: str, expected: int | None) -> bool:
        """Write a tombstone as the next generation of ``key`` if it has a value; return
        whether anything was written."""
        if expected is None:
            generation = await self._head_generation(state, key)
            if generation is None and key not in state.index:
                return False
            if generation is not None:
                raw = await self.storage.read(state.repo.data_path(state.version, key, generation))
                if raw == frame.TOMBSTONE:
                    return False
        await self._put(state, key, None, expected)
        return True

    async def _clean_up_if_deleted(self, state: _State) -> None:
        """After a write found the repository deleted, remove what it may have recreated.

        A write that began before the deletion and landed after it recreated part of the
        deleted incarnation's folder; nothing can ever read it, so it goes, and no folder of
        a deleted repository comes back.
        """
        try:
            await state.repo.check_live()
        except NotFoundError:
            await self.storage.delete_prefix(state.repo.path())

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        """Store ``value`` at ``key`` unless ``key`` already has a value."""
        if not await self.exists(key):
            await self.set(key, value)

    async def delete(self, key: str) -> None:
        """Remove ``key`` from the branch's head: a tombstone, so that a read does not fall
        through to an ancestor's object. A ``.zmetadata`` is virtual: nothing to delete."""
        self._check_key(key)
        if _consolidated_group(key) is not None:
            await self._ensure_writable()
            return
        await self._fenced_write(key, None)

    async def delete_dir(self, prefix: str) -> None:
        """Delete every key under ``prefix`` (tombstones), many at once: chunks first, then the
        metadata files, deepest first, so an interrupted deletion (or overwrite) leaves every
        array and group it had not finished still described, and repeating it finishes it."""
        self._check_writable()
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        phases: dict[int, builtins.list[str]] = {}
        for key in await self._keys():
            if key.startswith(prefix):
                # Chunks before any metadata file; metadata files by depth, deepest first.
                metadata = key.rpartition("/")[2] in _METADATA_FILES
                phases.setdefault(-key.count("/") if metadata else -(2**31), []).append(key)
        limit = asyncio.Semaphore(_DELETE_CONCURRENCY)

        async def delete(key: str) -> None:
            async with limit:
                await self.delete(key)

        for phase in sorted(phases):
            await asyncio.gather(*(delete(key) for key in phases[phase]))

    # -- putting keys back ---------------------------------------------------------------

    def stop_writes(self, timeout: float = 600.0) -> None:
        """Refuse every further write through this store object, and wait (in this thread,
        not on an event loop) for the writes in flight to return.

        For an operation that failed: dask's threads may still be running tasks that write
        after the failure was raised; once this returns, none of them can land any more, and
        :meth:`restore` puts back what they changed. Copies of the store (pickled to a
        dask.distributed worker) are not stopped.
        """
        self._gate.close(timeout)

    async def snapshot(self) -> HeadSnapshot:
        """Record the state of this store's branch head, to put keys back later
        (:meth:`restore`). Costs one listing of the head.

        Raises
        ------
        ReadOnlyError
            If the store is not at a branch, or refuses writes.
        """
        await self._ensure_writable()
        state = await self._checked_state()
        written, deleted = await state.repo.list_written(state.version)
        return HeadSnapshot(state.version, written, frozenset(deleted), state.index)

    async def restore(self, snapshot: HeadSnapshot, prefixes: Iterable[str]) -> int:
        """Put every key under ``prefixes`` back as it was when ``snapshot`` was taken.

        For an operation that failed halfway (:func:`hubzarr.xarray.to_hub`): each key whose
        object differs from the one it had then gets that object's payload again as its next
        generation (or a tombstone, if it had none). Sealed versions are never touched, and
        keys outside ``prefixes`` (other writers' work) are left alone. Objects are written
        once, so every one the snapshot named is still there. Returns the keys put back.
        """
        state = await self._checked_state()
        written, deleted = await state.repo.list_written(state.version)
        scope = tuple(prefixes)
        candidates = {
            k
            for keys in (snapshot.written, snapshot.deleted, snapshot.index, written, deleted)
            for k in keys
            if k.startswith(scope)
        }
        candidates |= {k for k in state.index if k.startswith(scope)}

        def then(key: str) -> tuple[str, int] | None:
            if key in snapshot.written:
                return snapshot.version, snapshot.written[key]
            owner = None if key in snapshot.deleted else snapshot.index.get(key)
            return None if owner is None else split_location(owner)

        def now(key: str) -> tuple[str, int] | None:
            if key in written:
                return state.version, written[key]
            owner = None if key in deleted else state.index.get(key)
            return None if owner is None else split_location(owner)

        changed = sorted(k for k in candidates if then(k) != now(k))
        limit = asyncio.Semaphore(_DELETE_CONCURRENCY)
        _restoring.set(True)  # this task and its children pass a stopped store's gate

        async def put_back(key: str) -> None:
            async with limit:
                place = then(key)
                if place is None:
                    await self.delete(key)
                    return
                version, generation = place
                decode = self._decoder(state, key, [(version, generation, False)])
                path = state.repo.data_path(version, key, generation)
                found = await self.storage.read_first([path], decode)
                if found is None or found[1][0] is None:
                    raise CorruptChunkError(
                        f"{self._where(state, key)}: cannot put it back, {path} is gone"
                    )
                await self.write_payload(key, bytes(found[1][0]))

        # Chunks before metadata files, as delete_dir does: interrupted, every array is
        # still described.
        metadata = [k for k in changed if k.rpartition("/")[2] in _METADATA_FILES]
        await asyncio.gather(*(put_back(k) for k in changed if k not in metadata))
        await asyncio.gather(*(put_back(k) for k in metadata))
        return len(changed)

    # -- listing -------------------------------------------------------------------------

    async def _keys(self) -> builtins.set[str]:
        state = await self._load()
        if state.resolved.sealed:
            return set(state.index)
        written, deleted = await state.repo.list_written(state.version)
        return (set(state.index) - set(deleted)) | set(written)

    async def _listed(self) -> builtins.set[str]:
        """The stored keys and, for each group, its virtual ``.zmetadata``."""
        keys = await self._keys()
        groups = {k[: -len(".zgroup")] for k in keys if k.rpartition("/")[2] == ".zgroup"}
        return keys | {group + _ZMETADATA for group in groups}

    async def _consolidated(self, state: _State, group: str) -> bytes | None:
        """Build the consolidated metadata of the group at prefix ``group`` (``""``, ``"a/"``):
        every ``.zgroup``, ``.zarray`` and ``.zattrs`` under it at this version, read
        concurrently; ``None`` if there is no group there."""
        cached = (state.version, group)
        if state.resolved.sealed and cached in self._zmetadata:
            return self._zmetadata[cached]
        keys = await self._keys()
        document = None
        if group + ".zgroup" in keys:
            names = sorted(
                k for k in keys if k.startswith(group) and k.rpartition("/")[2] in _METADATA_FILES
            )
            limit = asyncio.Semaphore(_METADATA_CONCURRENCY)

            async def read(key: str) -> memoryview | None:
                async with limit:
                    return await self._read(state, key)

            payloads = await asyncio.gather(*(read(k) for k in names))
            metadata: dict[str, Any] = {}
            for key, payload in zip(names, payloads, strict=True):
                if payload is None:
                    continue
                try:
                    doc = json.loads(bytes(payload))
                except (UnicodeDecodeError, ValueError, RecursionError) as exc:
                    raise FormatError(
                        f"{self._where(state, key)} is not valid JSON metadata ({exc}); restore "
                        "it from a copy, or recreate the array or group it describes"
                    ) from exc
                if isinstance(doc, dict) and key.endswith(".zgroup"):
                    # zarr-python embeds a snapshot of a subgroup's members here; stale by now.
                    doc.pop("consolidated_metadata", None)
                metadata[key[len(group) :]] = doc
            document = json.dumps({"metadata": metadata, "zarr_consolidated_format": 1}).encode()
        if state.resolved.sealed:
            self._zmetadata[cached] = document
        return document

    # -- synchronous variants (zarr's SupportsSyncStore protocol) -------------------------

    def get_sync(
        self,
        key: str,
        *,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        """Synchronous :meth:`get`."""
        result: Buffer | None = sync(
            self.get(key, prototype or default_buffer_prototype(), byte_range)
        )
        return result

    def set_sync(self, key: str, value: Buffer) -> None:
        """Synchronous :meth:`set`."""
        sync(self.set(key, value))

    def delete_sync(self, key: str) -> None:
        """Synchronous :meth:`delete`."""
        sync(self.delete(key))

    def close(self) -> None:
        """Close the store; it reopens (and re-resolves its ref) on next use."""
        super().close()
        self._state = None
