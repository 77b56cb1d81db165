"""One repository at one ref: reading a version, and writing a branch's head safely.

A :class:`Session` knows nothing of zarr: it reads and writes objects by key (what zarr calls
keys; :class:`hubzarr.stores.HubStore` adapts it to zarr's ``Store``, as icechunk's store wraps a
session). It is also the public reader of a version: its keys with their objects' locations
and sizes (:meth:`Session.entries`), one key's stored object as it lies in storage
(:meth:`Session.read_object`) or its checked payload (:meth:`Session.read`).

**Reading.** At a sealed version (a tag, a version id) each key resolves through the index,
loaded once (:meth:`hubzarr.versions.Repository.version_index`), to exactly one object: one
storage read per key, no listing, no walk of ancestors. At a branch the session reads the
head's newest generation of the key (:ref:`generations <generations>`), then the ancestor the
head's starting index names.

.. _generations:

**Writing: the branch-head protocol.** Every write creates the key's next *generation* in the
open head, ``data/<head>/<key>`` then ``<key>~1``, ``<key>~2``..., each with put-if-absent, so
an object a sealed version may name is never overwritten. A deletion is a tombstone generation.
Every write is *fenced*: the session checks that its head is not sealed before the write and
again after it returned; a head sealed meanwhile (a tag or branch taken by this or another
process) is followed to its successor and the write repeated there, so a sealed version never
takes a write and a write that returned is in the branch's head. Concurrent writes share seal
checks, so a burst of chunk writes costs a few checks, not two per chunk.

**Compare-and-swap.** Under :func:`conditional_writes`, each read records the generation it saw,
and a write of the same key creates exactly the next generation, or fails with
:class:`~hubzarr.errors.ConflictError` if another writer (or a seal) got there first: a
read-modify-write then loses no one's update (:func:`hubzarr.retry.compare_and_swap`).

**Superseded generations.** Once a write of generation ``n`` returned and its fence check saw
the head still open, no seal can ever name generation ``n - 1`` (a seal lists the head only
after its fence record exists, and the check would have seen it). On storage that keeps data
in a local page cache (:attr:`hubzarr.storage.Storage.reclaims_superseded`), the writer then
empties generation ``n - 1`` (truncates it to zero bytes, keeping its name so that probing
still finds the sequence whole): a rewrite no longer costs the disk write-back of every
superseded chunk, nor its space until garbage collection. A reader that meets an emptied or
half-emptied generation that has a successor moves on to the newest.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import (
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from zarr.core.sync import sync

from hubzarr import frame
from hubzarr.chunks import Layout
from hubzarr.errors import (
    AlreadyExistsError,
    ConflictError,
    CorruptChunkError,
    FormatError,
    InvalidArgumentError,
    NotFoundError,
    ReadOnlyError,
    StorageError,
)
from hubzarr.index import UNKNOWN, VersionIndex, is_metadata
from hubzarr.manifests import HeadContents
from hubzarr.names import Name
from hubzarr.records import Location, split_generation
from hubzarr.retry import compare_and_swap
from hubzarr.storage import (
    NotCachedError,
    Parts,
    Storage,
    as_bytes,
    check_path,
    reads_from_cache,
    reads_in_caller,
)
from hubzarr.versions import Repository, Resolved

__all__ = [
    "HeadSnapshot",
    "ObjectEntry",
    "Session",
    "check_key",
    "conditional_writes",
]

READ_ONLY = "store was opened in read-only mode and does not support writing"
#: More rewrites of one key in one head than any writer makes: probing beyond is damage.
_MAX_GENERATION = 2**40
#: Listings of version folders in flight at once in :meth:`Session.entries`, and puts in
#: flight in :meth:`Session.restore`.
_CONCURRENCY = 32


def check_key(key: str) -> str:
    """Refuse a key no session stores; return it unchanged otherwise.

    Every check made of a key before any I/O, in one place, so that anything that rehearses a
    write (:mod:`hubzarr.xarray`) refuses exactly what a session would.

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


@dataclass(frozen=True, slots=True)
class ObjectEntry:
    """The object a key resolves to at a version (:meth:`Session.entries`).

    Attributes
    ----------
    location : Location
        The version that wrote it and which generation.
    path : str
        Its storage path, relative to the hub root.
    size : int
        Its size in storage, envelope included.
    """

    location: Location
    path: str
    size: int


#: zarr's metadata keys (the last segment of a key).
_METADATA = frozenset({".zarray", ".zattrs", ".zgroup", ".zmetadata"})


@dataclass(frozen=True, slots=True)
class _EarlyHead:
    """A key's objects read while an open head was resolved (:meth:`Session.open_expecting`)."""

    head: str
    first: bytes | None
    second: bytes | None
    base: str | None
    inherited: bytes | None


@dataclass(slots=True)
class _State:
    """What an opened session reads and writes with."""

    repo: Repository
    resolved: Resolved
    #: The version's index (a sealed version's whole state; a head's starting state).
    index: VersionIndex
    #: The newest generation of each key this session has seen in its open head.
    generations: dict[str, int] = field(default_factory=dict)
    #: At a sealed version, objects read while it was opened, where keys expected to be read
    #: first (:meth:`Session.open_expecting`) most often lie: key -> the stored object at the
    #: version's own generation 0 (``None``: none there). Each is taken once, and checked as
    #: any read is.
    early: dict[str, bytes | None] = field(default_factory=dict)
    #: At a branch, the same for the open head: key -> what its head held at generations 0
    #: and 1, and the object the key has at generation 0 of the version the head started
    #: from, with that version's id (read while the head's seal was looked for).
    early_head: dict[str, _EarlyHead] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return self.resolved.version


class _Payload:
    """What a write stores at a key, checksummed once however many generations it tries, and
    where the write runs (a worker thread, for local storage: the CRC of a large chunk stays
    off the event loop)."""

    __slots__ = ("_checksum", "data")

    def __init__(self, data: bytes | memoryview) -> None:
        self.data = data
        self._checksum: int | None = None

    def checksum(self) -> int:
        """:func:`hubzarr.frame.checksum` of the data (two threads may both compute it)."""
        if self._checksum is None:
            self._checksum = frame.checksum(self.data)
        return self._checksum

    def framed(self, version: str, key: str, generation: int) -> Parts:
        """The object to store as ``generation`` of ``key`` in ``version``."""
        bound = frame.binding(version, key, generation)
        return lambda: (frame.header(self.checksum(), bound), self.data)


@dataclass(frozen=True, slots=True)
class HeadSnapshot:
    """A branch head's state at one moment (:meth:`Session.snapshot`).

    Attributes
    ----------
    version : str
        The head then.
    contents : HeadContents
        The newest generation of each key the head held then.
    index : VersionIndex
        The head's starting index (what it inherited).
    """

    version: str
    contents: HeadContents
    index: VersionIndex


@dataclass(frozen=True, slots=True)
class _Superseded:
    """What a head read found at a generation that was emptied (or is being emptied) because a
    newer one superseded it; ``error`` is what to raise if it turns out to have no successor."""

    error: CorruptChunkError


#: Found at one place of a read: the checked payload (``None``: a tombstone), in a 1-tuple so
#: that a tombstone differs from "no object"; or a superseded generation.
_Found = tuple[memoryview | None] | _Superseded

#: Set in :meth:`Session.restore`: its writes pass a gate closed by ``stop_writes``.
_restoring: ContextVar[bool] = ContextVar("hubzarr_restoring", default=False)


class _Operation:
    """One conditional operation (:func:`conditional_writes`): what it read, and the first
    conflict one of its writes met."""

    __slots__ = ("conflict", "reads")

    def __init__(self) -> None:
        #: ``{(session id, key): (head version, generation read, -1 when the head had none)}``.
        self.reads: dict[tuple[int, str], tuple[str, int]] = {}
        self.conflict: ConflictError | None = None


#: The conditional operation under way in this context (zarr's tasks inherit it).
_operation: ContextVar[_Operation | None] = ContextVar("hubzarr_operation", default=None)


@contextlib.contextmanager
def conditional_writes() -> Iterator[None]:
    """Make the writes in this block conditional on what the block read (compare-and-swap).

    A read-modify-write of a key (zarr reads a chunk before writing part of it) then writes
    only if no other writer created a newer generation of the key meanwhile. Once one write of
    the block finds that another writer (or a seal) got there first, the block's later writes
    are skipped, and leaving the block raises :class:`~hubzarr.errors.ConflictError`, so the
    caller repeats the whole operation from fresh reads
    (:func:`hubzarr.retry.compare_and_swap`). The conflict is raised only then, not by the
    write that met it: zarr writes the chunks of one assignment concurrently, and an error
    raised by one would leave the others running, to land after the repetition (or even
    after the assignment returned) with values the repetition replaced.
    """
    operation = _Operation()
    token = _operation.set(operation)
    try:
        yield
    finally:
        _operation.reset(token)
    if operation.conflict is not None:
        raise operation.conflict


class _WriteGate:
    """Counts the writes in flight through one session; once closed, refuses new ones (but
    those of :meth:`Session.restore`) and lets the closer wait for the rest to return."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._in_flight = 0
        self._closed = False

    @contextlib.contextmanager
    def passing(self, name: Name) -> Iterator[None]:
        with self._changed:
            if self._closed and not _restoring.get():
                raise ReadOnlyError(
                    f"{READ_ONLY}: writes to {name} through this handle were stopped, because "
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


class Session:
    """One repository at one branch, tag or version id, opened on first use.

    Parameters
    ----------
    storage : Storage
        The hub root.
    name : Name
        The repository and ref (no ref: the default branch).
    read_only : bool
        Refuse writes even at a branch.
    pinned : Resolved, optional
        What the ref resolved to already (a pickled session keeps reading that version).
    keep_superseded : bool
        Never empty superseded generations (see the module docstring), so that a
        :class:`HeadSnapshot` can be restored; set while a snapshot is held, and kept by
        pickled copies made meanwhile.
    repository : Repository, optional
        The repository, opened already: a draft being filled before it is published
        (:meth:`Repository.create` with ``publish=False``), which only this object knows.
    """

    def __init__(
        self,
        storage: Storage,
        name: Name,
        *,
        read_only: bool = False,
        pinned: Resolved | None = None,
        keep_superseded: bool = False,
        repository: Repository | None = None,
    ) -> None:
        self.storage = storage
        self.name = name
        self._repository = repository
        self._read_only = read_only
        self._pinned = pinned
        self._keep_superseded = keep_superseded
        self._state: _State | None = None
        # Seal checks shared by concurrent writes (see _checked_state).
        self._check: asyncio.Future[_State] | None = None
        self._check_number = 0
        self._checks_started = 0
        self._gate = _WriteGate()

    def __reduce__(self) -> tuple[Any, ...]:
        # The storage pickles without credentials; the receiver opens the same version.
        return (
            _unpickle_session,
            (self.storage, self.name, self._read_only, self.pinned, self._keep_superseded),
        )

    def __repr__(self) -> str:
        return f"Session({self.storage.url!r}, {str(self.name)!r})"

    # -- opening -------------------------------------------------------------------------

    @property
    def pinned(self) -> Resolved | None:
        """What the ref resolved to, if the session has resolved it yet."""
        return self._state.resolved if self._state is not None else self._pinned

    @property
    def keeps_superseded(self) -> bool:
        """Whether superseded generations are kept (while a :meth:`snapshot` is held)."""
        return self._keep_superseded

    def forget(self) -> None:
        """Drop what was opened: the next use opens the ref again (and re-resolves it)."""
        self._state = None

    async def open_expecting(self, keys: Sequence[str]) -> Resolved:
        """Open the session (as :meth:`resolved`), reading ``keys`` meanwhile where they most
        likely lie (a sealed version's own objects; at a branch, the head's first generations
        and the version it started from), so that reading them next costs no round trip of
        its own: the metadata an array or group is opened with. Read them at once, then call
        :meth:`done_expecting`.
        """
        return (await self._open(keys)).resolved

    def done_expecting(self) -> None:
        """Drop what :meth:`open_expecting` read and no read took: at a branch it is the head
        as it was at opening, which a later read must not answer with."""
        state = self._state
        if state is not None:
            state.early.clear()
            state.early_head.clear()

    async def _open(self, expected: Sequence[str] = ()) -> _State:
        if self._state is None:
            repo = self._repository or Repository(self.storage, self.name)
            await repo.open()
            early_head: dict[str, _EarlyHead] = {}

            async def ahead(head: str, base: str | None) -> None:
                # The expected keys at the head (generations 0 and 1: the next is probed only
                # if 1 exists) and in the version it started from: one round trip fewer.
                files = repo.files
                paths = [
                    path
                    for key in map(check_key, expected)
                    for path in (
                        files.data_path(head, key, 0),
                        files.data_path(head, key, 1),
                        files.data_path(base, key, 0) if base is not None else None,
                    )
                ]
                found = await asyncio.gather(
                    *(self.storage.read(p) if p else asyncio.sleep(0) for p in paths)
                )
                for i, key in enumerate(expected):
                    first, second, inherited = (
                        None if raw is None else bytes(raw) for raw in found[3 * i : 3 * i + 3]
                    )
                    early_head[key] = _EarlyHead(head, first, second, base, inherited)

            speculate = ahead if expected and not self.storage.read_only else None
            resolved = self._pinned or await repo.resolve(self.name.ref, speculate)
            if resolved.kind == "version" and not resolved.sealed:
                raise InvalidArgumentError(
                    f"version {resolved.version} of {repo.name} is the open head of a branch: "
                    "it still takes writes, and a version id names an immutable state. Open "
                    "the branch to read or write it (see hubzarr.log for its name), or tag it "
                    "for a version that never changes: "
                    f"hubzarr.tag({repo.name.repository!r} + ':<branch>', 'my-tag')"
                )
            early: dict[str, bytes | None] = {}
            if resolved.sealed and expected:
                files, here = repo.files, Location(resolved.version, 0)
                reads = [self.storage.read(files.object_path(here, check_key(k))) for k in expected]
                index, found = await asyncio.gather(
                    repo.version_index(resolved.version, sealed=True), asyncio.gather(*reads)
                )
                early = {
                    k: None if raw is None else bytes(raw)
                    for k, raw in zip(expected, found, strict=True)
                }
            else:
                index = await repo.version_index(resolved.version, sealed=resolved.sealed)
            if self._state is None:
                # Read at the head the branch file named: of no use if another took over.
                early_head = {k: e for k, e in early_head.items() if e.head == resolved.version}
                self._state = _State(repo, resolved, index, early=early, early_head=early_head)
        return self._state

    async def resolved(self) -> Resolved:
        """Return what the session's ref resolved to (opening it if needed).

        Raises
        ------
        NotFoundError
            If the repository or ref does not exist.
        """
        return (await self._open()).resolved

    async def refresh(self) -> None:
        """At a branch, catch up with the branch: if the session's head has been sealed since
        it was opened (a tag or branch taken, here or elsewhere), move to the head that took
        over."""
        if not (await self._open()).resolved.sealed:
            await self._checked_state()

    def follow_head(self) -> None:
        """:meth:`refresh`, from synchronous code, for a session already opened at a branch.

        Arrays and groups call it before each operation; a session not opened yet opens at the
        current head anyway, and one at a sealed version never moves, so neither costs I/O.
        """
        state = self.pinned
        if state is not None and not state.sealed:
            sync(self.refresh())

    @property
    def read_only(self) -> bool:
        """Whether writes are refused: opened read-only, at a sealed version, or on a read-only
        root (HTTP)."""
        resolved = self.pinned
        return (
            self._read_only or self.storage.read_only or (resolved is not None and resolved.sealed)
        )

    def check_writable(self) -> None:
        """Raise :class:`~hubzarr.errors.ReadOnlyError` if the session refuses writes.

        Raises
        ------
        ReadOnlyError
            If it was opened read-only, is at a tag or sealed version, or the root is read-only.
        """
        if self._state is not None and self._state.resolved.sealed:
            raise self._sealed_error(self._state)
        if self._read_only:
            raise ReadOnlyError(
                f"{READ_ONLY}: {self.name} was opened read-only; open it with mode='r+' to write"
            )
        if self.storage.read_only:
            raise ReadOnlyError(
                f"{READ_ONLY}: the hub root {self.storage.url} is read-only (HTTP); copy the "
                "repository to a writable root to change it"
            )

    def _sealed_error(self, state: _State) -> ReadOnlyError:
        what = f"tag {state.resolved.ref!r}" if state.resolved.kind == "tag" else "a sealed version"
        return ReadOnlyError(
            f"{READ_ONLY}: {self.name} is {what} (version {state.version}), and versions "
            f"never change. Branch from it and write there: "
            f"hubzarr.branch({str(self.name)!r}, 'my-branch')"
        )

    async def ensure_writable(self) -> None:
        """Open the session and :meth:`check_writable`."""
        await self._open()
        self.check_writable()

    async def _advance(self) -> _State:
        """Move to the head that took over if the session's head has been sealed.

        Also checks, in the same round trip, that the repository was not deleted since the
        session opened it (:meth:`Repository.check_live`): a handle opened before a deletion
        must neither read nor write.
        """
        state = await self._open()
        path, _ = await asyncio.gather(
            state.repo.successors(state.version), state.repo.check_live()
        )
        if len(path) == 1:
            return state
        return await self._take_over(state, path)

    async def _take_over(self, state: _State, path: list[str]) -> _State:
        """Move to ``path[-1]``, the head that took over from the session's head
        (``path``: :meth:`Repository.successors` of it)."""
        index = await state.repo.advance_index(state.index, path)
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

    async def _recent_state(self) -> _State:
        """Return the state after the seal check under way, or after a new one.

        Before a write, so as not to write into a head sealed earlier (a stale handle): a head
        sealed while the check was under way may still take the write, harmlessly, as the
        check after the write (:meth:`_checked_state`) then repeats it in the head that took
        over. So the writes of a burst share the checks before them as well as those after.
        """
        check = self._check
        if check is not None and not check.done():
            with contextlib.suppress(Exception):  # a failed check says nothing: check again
                return await asyncio.shield(check)
        return await self._checked_state()

    def _where(self, state: _State, key: str) -> str:
        return f"key {key!r} of {self.name} (version {state.version})"

    # -- reading -------------------------------------------------------------------------

    def _decoder(
        self, state: _State, key: str, places: Sequence[tuple[Location, bool]]
    ) -> Callable[[int, bytes], _Found]:
        """What :meth:`Storage.read_first` checks the object found at ``places[i]`` with: each
        place is a location and whether it is in the open head.

        A tombstone may lie only in the open head: where an index (a manifest) records a write,
        a tombstone is damage, as is an object bound to another place. In the open head, an
        object that fails its check may be a superseded generation being emptied: the reader
        decides, by looking for a successor.
        """
        where = self._where(state, key)
        unbound = state.repo.layout == 1

        def decode(i: int, raw: bytes) -> _Found:
            location, in_head = places[i]
            try:
                payload = frame.decode(
                    raw,
                    where,
                    frame.binding(location.version, key, location.generation),
                    unbound=unbound,
                )
            except CorruptChunkError as error:
                if in_head:
                    return _Superseded(error)
                raise
            if payload is None and not in_head:
                raise CorruptChunkError(
                    f"{where} is corrupt: version {location.version} recorded a value there, "
                    "but a deletion marker lies in its place; restore it from a copy or "
                    "rewrite that region"
                )
            return (payload,)

        return decode

    async def _newest(self, state: _State, key: str, known: int) -> int:
        """Return the newest generation of ``key`` in the head, given that ``known`` exists.

        Generations are created one after another, so probing forward finds the newest:
        doubling steps, then bisection (a few requests even after many rewrites).
        """
        files, head = state.repo.files, state.version
        low, step = known, 1
        while await self.storage.exists(files.data_path(head, key, low + step)):
            low += step
            step *= 2
            if step > _MAX_GENERATION:
                # No writer makes 2**40 rewrites of a key: storage that answers "exists" for
                # everything is damaged (or not a hubzarr root), and probing would never end.
                raise FormatError(
                    f"{self._where(state, key)}: storage claims more than {_MAX_GENERATION} "
                    f"generations under {files.data_path(head, key)}; the repository is damaged"
                )
        high = low + step  # absent
        while high - low > 1:
            middle = (low + high) // 2
            if await self.storage.exists(files.data_path(head, key, middle)):
                low = middle
            else:
                high = middle
        return low

    async def _read(
        self, state: _State, key: str, listed: Mapping[str, int] | None = None
    ) -> memoryview | None:
        check_key(key)
        owner = state.index.known(key)
        if owner is UNKNOWN:
            owner = await state.index.get(key)
        if state.resolved.sealed:
            if owner is None:
                return None
            decode = self._decoder(state, key, [(owner, False)])
            early = state.early.pop(key, None) if state.early else None
            if early is not None and owner == Location(state.version, 0):
                checked = decode(0, early)
                assert not isinstance(checked, _Superseded)  # only a head's objects are
                return checked[0]
            path = state.repo.files.object_path(owner, key)
            found = await self.storage.read_first([path], decode)
        else:
            found, observed = await self._read_head(state, key, owner, listed)
            operation = _operation.get()
            if operation is not None:
                operation.reads[(id(self), key)] = (state.version, observed)
        if found is not None:
            value = found[1]
            assert not isinstance(value, _Superseded)  # _read_head settles those
            return value[0]
        if owner is not None:
            # A handle opened before the repository was deleted, or before gc dropped its
            # version, finds its objects gone.
            await state.repo.check_live()
            if not state.resolved.sealed:
                # A branch's head sealed since, whose ancestors' objects gc then freed
                # (retention): the head that took over holds what to read. (One call after
                # the other: reads may run in a thread with no event loop for a gather.)
                heads = await state.repo.successors(state.version)
                if len(heads) > 1:
                    return await self._read(await self._take_over(state, heads), key)
            await state.repo.check_kept(state.resolved.version)
            raise CorruptChunkError(
                f"{self._where(state, key)} is missing from storage although version "
                f"{owner.version} recorded it; the repository is damaged"
            )
        return None

    async def _read_head(
        self, state: _State, key: str, owner: Location | None, listed: Mapping[str, int] | None
    ) -> tuple[tuple[int, _Found] | None, int]:
        """Read ``key`` at the open head: its newest generation there, else the ancestor the
        index names. Return what read_first found and the generation read (-1: none in the
        head). ``listed``: the head's newest generations from a listing begun after this read
        was asked for (:meth:`head_listing`), so one request reads the key."""
        files, version = state.repo.files, state.version
        early = state.early_head.pop(key, None) if state.early_head else None
        if early is not None and listed is None:
            settled = self._settle_early(state, key, owner, early)
            if settled is not None:
                return settled
        known = state.generations.get(key)
        inherited = [] if owner is None else [(owner, False)]
        inherited_paths = [] if owner is None else [files.object_path(owner, key)]
        if listed is not None and key not in listed:  # not in the head when listed
            if owner is None:
                return None, -1
            found = await self.storage.read_first(
                inherited_paths, self._decoder(state, key, inherited)
            )
            return found, -1
        if listed is not None:
            generation, probe = listed[key], False
            decode = self._decoder(state, key, [(Location(version, generation), True)])
            found = await self.storage.read_first(
                [files.data_path(version, key, generation)], decode
            )
            if found is None:
                raise CorruptChunkError(
                    f"{self._where(state, key)}: generation {generation} vanished while read; "
                    "is a garbage collection with a too-short grace period running?"
                )
        elif known is None and owner is not None:
            # Inherited, and not seen in this head yet: most such keys were not rewritten here,
            # so ask for generation 0 and then the ancestor (generation 1 cannot exist without
            # generation 0).
            places = [(Location(version, 0), True), *inherited]
            paths = [files.data_path(version, key, 0), *inherited_paths]
            # Metadata (a few hundred bytes) is asked of both at once: one round trip to open.
            both = 2 if key.rpartition("/")[2] in _METADATA else 1
            decode = self._decoder(state, key, places)
            found = await self.storage.read_first(paths, decode, parallel=both)
            if found is None or found[0] == 1:
                return found, -1
            generation, probe = 0, True
        else:
            # The newest generation known and the next, concurrently on object stores (one
            # round trip); then the ancestor.
            start = known or 0
            places = [
                (Location(version, start + 1), True),
                (Location(version, start), True),
                *inherited,
            ]
            paths = [
                files.data_path(version, key, start + 1),
                files.data_path(version, key, start),
                *inherited_paths,
            ]
            found = await self.storage.read_first(
                paths, self._decoder(state, key, places), parallel=2
            )
            if found is None or found[0] == 2:
                return found, -1
            # Found at `start` (and `start + 1` was absent then): the newest, unless it was
            # superseded since.
            generation, probe = (start, False) if found[0] == 1 else (start + 1, True)
        while True:
            if probe or isinstance(found[1], _Superseded):
                newest = await self._newest(state, key, generation)
                if newest == generation and isinstance(found[1], _Superseded):
                    raise found[1].error  # no successor: the newest object is damaged
            else:
                newest = generation
            if newest != generation:
                decode = self._decoder(state, key, [(Location(version, newest), True)])
                path = files.data_path(version, key, newest)
                again = await self.storage.read_first([path], decode)
                if again is None:
                    raise CorruptChunkError(
                        f"{self._where(state, key)}: generation {newest} vanished while read; "
                        "is a garbage collection with a too-short grace period running?"
                    )
                found, generation, probe = (0, again[1]), newest, False
                continue
            state.generations[key] = newest
            return found, newest

    def _settle_early(
        self, state: _State, key: str, owner: Location | None, early: _EarlyHead
    ) -> tuple[tuple[int, _Found] | None, int] | None:
        """:meth:`_read_head`'s answer from what was read while the head was resolved, if
        that is enough (as reading them now: generation 0 in the head and no generation 1, or
        neither and the object the index names at the base); ``None`` to read as usual."""
        if early.second is not None:
            return None  # rewritten in the head: the newest generation is probed as usual
        if early.first is not None:
            checked = self._decoder(state, key, [(Location(state.version, 0), True)])(
                0, early.first
            )
            if isinstance(checked, _Superseded):
                return None  # being emptied (a newer generation came after the read)
            state.generations[key] = 0
            return (0, checked), 0
        if owner is None:
            return None, -1
        if early.inherited is not None and owner == Location(early.base or "", 0):
            return (0, self._decoder(state, key, [(owner, False)])(0, early.inherited)), -1
        return None

    async def read(self, key: str, *, listed: Mapping[str, int] | None = None) -> memoryview | None:
        """Return the checked payload stored at ``key`` (what zarr stored), or ``None`` if the
        key has no value at this version.

        ``listed``: at a branch, a :meth:`head_listing` covering ``key``, taken after this read
        was asked for: the read is then one request.

        Raises
        ------
        InvalidArgumentError
            If ``key`` is not a key a session stores (see :func:`check_key`).
        CorruptChunkError
            If the object fails its checksum, is bound to another place, or is missing though
            an index names it.
        NotFoundError
            If the repository or ref does not exist (or was deleted since opened).
        """
        return await self._read(await self._open(), key, listed)

    async def head_listing(self, prefix: str = "") -> dict[str, int] | None:
        """At a branch, the newest generation of each key under ``prefix`` (``"images/"``, or
        ``""`` for all) in the open head, from one listing; ``None`` at a sealed version.

        Given to :meth:`read` for keys under ``prefix``, it lets each read be one request, and
        still see every write that returned before this call began.
        """
        state = await self._open()
        if state.resolved.sealed:
            return None
        folder = state.repo.files.path("data", state.version)
        found = await self.storage.list(f"{folder}/{prefix}".rstrip("/"))
        contents = HeadContents.from_listing({prefix + k: n for k, n in found.items()})
        return {**contents.written, **contents.deleted}

    async def fresh_head_listing(self, prefix: str = "") -> dict[str, int] | None:
        """:meth:`refresh`, then :meth:`head_listing` of the head it finds: run at once, one
        round trip when the head has not moved (else the new head is listed after)."""
        state = await self._open()
        if state.resolved.sealed:
            return None
        _, listed = await asyncio.gather(self.refresh(), self.head_listing(prefix))
        if (await self._open()).version != state.version:
            listed = await self.head_listing(prefix)
        return listed

    def read_here(self, key: str) -> memoryview | None:
        """:meth:`read` run to the end by the calling thread, with no event loop.

        Storage that reads in the caller (local folders) is read from this thread, so that
        threads decoding chunks also read them, without hops; the payload is then valid only
        until this thread's next such read. Elsewhere (object stores, whose reads are
        asynchronous I/O), the read runs on zarr's event loop as usual.
        """
        state = self._state
        if state is None or not self.storage.caller_reads:
            result: memoryview | None = sync(self.read(key))
            return result
        with reads_in_caller():
            return self._run_here(self._read(state, key), key)

    def read_cached(
        self, key: str, listed: Mapping[str, int] | None = None
    ) -> tuple[memoryview | None] | None:
        """:meth:`read` from the local cache alone, run to the end by the calling thread:
        ``(payload,)``, or ``None`` where the read needs storage (not cached, not opened yet,
        no cache, or a head read that must ask storage what it holds).

        The bulk readers' threads read cached chunks this way, as they read local files, and
        send only the rest over the network. Raises as :meth:`read`.
        """
        state = self._state
        if state is None or not self.storage.caches:
            return None
        with reads_from_cache():
            try:
                return (self._run_here(self._read(state, key, listed), key),)
            except NotCachedError:
                return None

    def _run_here(
        self, reading: Coroutine[Any, Any, memoryview | None], key: str
    ) -> memoryview | None:
        """Run a read coroutine that never suspends to its end in this thread, with no event
        loop (inside :func:`~hubzarr.storage.reads_in_caller`)."""
        try:
            reading.send(None)
        except StopIteration as done:
            payload: memoryview | None = done.value
            return payload
        reading.close()
        raise RuntimeError(f"a read of {key!r} from {self.storage.url} suspended in the caller")

    async def _head_generation(self, state: _State, key: str) -> int | None:
        """Return the newest generation of ``key`` in the open head, ``None`` if it has none."""
        files, known = state.repo.files, state.generations.get(key)
        if known is None:
            if not await self.storage.exists(files.data_path(state.version, key)):
                return None
            known = 0
        newest = await self._newest(state, key, known)
        state.generations[key] = newest
        return newest

    async def _stored(self, state: _State, key: str) -> tuple[Location, str, int] | None:
        """The object ``key`` resolves to: location, path and stored size (a head's tombstone
        included); ``None`` if there is none."""
        check_key(key)
        files = state.repo.files
        if not state.resolved.sealed:
            generation = await self._head_generation(state, key)
            while generation is not None:
                location = Location(state.version, generation)
                path = files.object_path(location, key)
                size = await self.storage.size(path)
                if size is None:
                    break  # vanished (a gc with a too-short grace): fall back to the ancestor
                if size:
                    return location, path, size
                # 0 bytes: emptied, because a newer generation superseded it
                newest = await self._newest(state, key, generation)
                if newest == generation:
                    raise CorruptChunkError(
                        f"{self._where(state, key)} is corrupt: its newest object, {path}, "
                        "is empty; restore it from a copy or rewrite that region"
                    )
                generation = state.generations[key] = newest
        owner = await state.index.get(key)
        if owner is None:
            return None
        path = files.object_path(owner, key)
        size = await self.storage.size(path)
        return None if size is None else (owner, path, size)

    async def size(self, key: str) -> int | None:
        """Return the size of the payload at ``key``, ``None`` if it has no value."""
        stored = await self._stored(await self._open(), key)
        if stored is None or stored[2] == len(frame.TOMBSTONE):
            return None
        return stored[2] - frame.HEADER_SIZE

    async def exists(self, key: str) -> bool:
        """Return whether ``key`` has a value at this version."""
        state = await self._open()
        if state.resolved.sealed:
            check_key(key)
            return await state.index.get(key) is not None
        return await self.size(key) is not None

    async def read_object(self, key: str) -> bytes | None:
        """Return the object ``key`` resolves to exactly as it lies in storage (envelope and
        checksum included: what a byte-for-byte copy moves), or ``None`` if the key has no
        value. Not checked: :meth:`read` checks."""
        state = await self._open()
        while True:
            stored = await self._stored(state, key)
            if stored is None:
                return None
            raw = await self.storage.read(stored[1])
            if raw == frame.TOMBSTONE:
                return None
            if raw:  # empty: superseded between the sizing and the read
                return raw

    async def read_chunk(self, layout: Layout, coords: tuple[int, ...]) -> npt.NDArray[Any]:
        """Return the chunk at grid position ``coords`` of the array ``layout`` describes
        (:attr:`hubzarr.arrays.HubArray.layout`), decoded: a new array of the chunk's shape,
        the fill value where the chunk was never written.

        Raises
        ------
        InvalidArgumentError
            For an array of strings (xarray's ``str`` variables: read them with xarray).
        CorruptChunkError
            If the object fails its checksum or does not decode to a chunk.
        """
        if layout.strings:
            raise InvalidArgumentError(
                f"{layout.path!r} holds strings as Python objects; read it with "
                "hubzarr.open_dataset (xarray)"
            )
        payload = await self.read(layout.key(coords))
        if payload is None:
            return np.full(layout.chunks, layout.fill_value, dtype=layout.dtype)
        return layout.decode(payload, coords, np.empty(layout.chunk_nbytes, dtype=np.uint8))

    async def _keys(self, state: _State, prefix: str = "", *, metadata: bool = False) -> set[str]:
        if metadata:
            keys = await state.index.metadata(prefix)
        else:
            keys = await state.index.keys(prefix)
        if state.resolved.sealed:
            return keys
        contents = await state.repo.manifests.contents(state.version)

        def wanted(key: str) -> bool:
            return key.startswith(prefix) and (not metadata or is_metadata(key))

        return (keys - set(contents.deleted)) | {k for k in contents.written if wanted(k)}

    async def keys(self, prefix: str = "") -> set[str]:
        """Return every key with a value at this version (starting with ``prefix``): the
        index's keys, read a shard at a time, and at a branch a listing of the head."""
        return await self._keys(await self._open(), prefix)

    async def key_batches(self) -> tuple[int, AsyncIterator[list[str]]]:
        """Return how many keys have a value at this version, and an iterator over them in
        batches (a shard of the index each, then the head's own new keys at a branch): what
        walks every key in bounded memory (:func:`hubzarr.integrity.verify_store`)."""
        state = await self._open()
        index = state.index
        deleted: set[str] = set()
        added: list[str] = []
        total = index.count
        if not state.resolved.sealed:
            contents = await state.repo.manifests.contents(state.version)
            changed = [*contents.deleted, *contents.written]
            held = await asyncio.gather(*(index.get(k) for k in changed))
            present = {k for k, location in zip(changed, held, strict=True) if location}
            deleted = set(contents.deleted)
            added = sorted(k for k in contents.written if k not in present)
            total += len(added) - len(deleted & present)

        async def batches() -> AsyncIterator[list[str]]:
            async for items in index.walk():
                keys = [k for k, _ in items if k not in deleted]
                if keys:
                    yield keys
            if added:
                yield added

        return total, batches()

    async def state(self) -> tuple[VersionIndex, dict[str, Location | None]]:
        """Return the version's index and, at a branch, what its open head changed over it
        (key -> the newest object, ``None`` for a deletion; one listing of the head): what
        compares two states without reading either whole (:mod:`hubzarr.history`)."""
        state = await self._open()
        if state.resolved.sealed:
            return state.index, {}
        contents = await state.repo.manifests.contents(state.version)
        changes: dict[str, Location | None] = dict.fromkeys(contents.deleted)
        changes.update((k, Location(state.version, g)) for k, g in contents.written.items())
        return state.index, changes

    async def metadata_keys(self, prefix: str = "") -> set[str]:
        """Return every metadata key (``.zarray``, ``.zattrs``, ``.zgroup``) with a value at
        this version, starting with ``prefix``: at a sealed version, from the index root alone,
        whatever the number of chunks."""
        return await self._keys(await self._open(), prefix, metadata=True)

    async def entries(self) -> dict[str, ObjectEntry]:
        """Return, for every key with a value at this version, the object it resolves to:
        its location, storage path and stored size.

        Costs a listing of each version folder the objects lie in (one for a version that
        wrote everything itself).
        """
        state = await self._open()
        files = state.repo.files
        resolved: dict[str, Location] = await state.index.mapping()
        if not state.resolved.sealed:
            contents = await state.repo.manifests.contents(state.version)
            for key in contents.deleted:
                resolved.pop(key, None)
            resolved.update((k, Location(state.version, g)) for k, g in contents.written.items())
        versions = sorted({loc.version for loc in resolved.values()})
        limit = asyncio.Semaphore(_CONCURRENCY)

        async def listing(version: str) -> dict[str, int]:
            async with limit:
                return await self.storage.list(f"{files.home}/data/{version}")

        sizes = dict(zip(versions, await asyncio.gather(*map(listing, versions)), strict=True))
        out: dict[str, ObjectEntry] = {}
        for key, location in sorted(resolved.items()):
            size = sizes[location.version].get(location.object_name(key))
            if size is None:
                await state.repo.check_kept(state.resolved.version)
                raise CorruptChunkError(
                    f"{self._where(state, key)} is missing from storage although version "
                    f"{location.version} recorded it; the repository is damaged"
                )
            out[key] = ObjectEntry(location, files.object_path(location, key), size)
        return out

    # -- writing -------------------------------------------------------------------------

    async def write(self, key: str, payload: bytes | memoryview) -> None:
        """Store ``payload`` at ``key`` in the branch's head, as its next generation.

        Raises
        ------
        ReadOnlyError
            At a tag or sealed version, when opened read-only, or on a read-only root.
        ConflictError
            Under :func:`conditional_writes`, if another writer created a newer generation of
            ``key`` since this operation read it, or the head was sealed in between.
        NotFoundError
            If the repository or branch was deleted.
        """
        check_key(key)
        await self._fenced_write(key, _Payload(payload))

    async def delete(self, key: str) -> None:
        """Delete ``key`` from the branch's head: a tombstone, so that a read does not fall
        through to an ancestor's object (nothing is written if the key has no value).

        Raises
        ------
        ReadOnlyError, ConflictError, NotFoundError
            As :meth:`write`.
        """
        check_key(key)
        await self._fenced_write(key, None)

    async def put_if_absent(self, key: str, payload: bytes | memoryview) -> bool:
        """Store ``payload`` at ``key`` unless ``key`` has a value; return whether it did.

        Atomic: of concurrent callers (in any process) exactly one stores its value when the
        key had none, and a value never replaces another.

        Raises
        ------
        ReadOnlyError, NotFoundError
            As :meth:`write`.
        """

        # A read then a conditional write: the write creates exactly the generation after the
        # one read, which only one writer can, and a seal in between is a conflict too.
        async def attempt() -> bool:
            with conditional_writes():
                if await self.read(key) is not None:
                    return False
                await self.write(key, payload)
                return True

        def exhausted() -> ConflictError:
            return ConflictError(f"other writers kept changing {key!r} of {self.name}; try again")

        return await compare_and_swap(attempt, before_retry=self.refresh, exhausted=exhausted)

    async def _put(
        self, state: _State, key: str, payload: _Payload | None, expected: int | None
    ) -> int:
        """Create the next generation of ``key`` in the head (``payload`` ``None``: a
        tombstone); return it.

        ``expected`` is the generation a read-modify-write started from (-1: none in the
        head); the write then fails with :class:`ConflictError` if another writer got there
        first. Otherwise (a whole-object write) a newer generation found on the way is simply
        superseded.
        """
        files, head = state.repo.files, state.version
        state.early_head.pop(key, None)  # read before this write: no longer the head's
        if expected is not None:
            generation = expected + 1
        else:
            known = state.generations.get(key)
            generation = 0 if known is None else known + 1
        while True:
            path = files.data_path(head, key, generation)
            data = frame.TOMBSTONE if payload is None else payload.framed(head, key, generation)
            try:
                await self.storage.create(path, data, durable=False, unique=False)
            except AlreadyExistsError:
                if await self._already_ours(state, key, generation, data):
                    state.generations[key] = generation
                    return generation
                if expected is not None:
                    raise ConflictError(self._where(state, key)) from None
                generation = await self._newest(state, key, generation) + 1
                continue
            state.generations[key] = generation
            return generation

    async def _already_ours(self, state: _State, key: str, generation: int, data: Parts) -> bool:
        """Whether a generation found taken holds what we meant to write and is the newest.

        A create whose acknowledgement was lost and retried finds its own object, so "already
        exists" is not always a conflict. But another writer may have written the same bytes
        (the same value twice), so equal bytes alone prove nothing; equal bytes in the newest
        generation do mean the head now holds exactly our write, which is all a caller needs.
        """
        files, head = state.repo.files, state.version
        raw = await self.storage.read(files.data_path(head, key, generation))
        if raw is None or raw != as_bytes(data):
            return False
        return not await self.storage.exists(files.data_path(head, key, generation + 1))

    async def _fenced_write(self, key: str, data: _Payload | None) -> None:
        """Write ``data`` (``None``: a deletion) as the next generation of ``key`` in the head,
        between two seal checks; if the head was sealed meanwhile, repeat the write in the head
        that took over, so it is never lost (a conditional write raises ConflictError instead,
        and its caller starts over from a fresh read)."""
        await self.ensure_writable()
        with self._gate.passing(self.name):
            await self._fenced_write_through(key, data)

    async def _fenced_write_through(self, key: str, data: _Payload | None) -> None:
        operation = _operation.get()
        if operation is not None and operation.conflict is not None:
            return None  # the operation lost a race already: it will be repeated from fresh reads
        seen = operation.reads.get((id(self), key)) if operation is not None else None
        state = await self._recent_state()
        while True:
            expected = None
            if seen is not None:
                if seen[0] != state.version:
                    return self._conflict(operation, state, key)
                expected = seen[1]
            try:
                if data is not None:
                    generation: int | None = await self._put(state, key, data, expected)
                else:
                    generation = await self._remove(state, key, expected)
                    if generation is None:
                        return None
                after = await self._checked_state()
            except ConflictError:
                return self._conflict(operation, state, key)
            except NotFoundError:
                await self._clean_up_if_deleted(state)
                raise
            if after.version == state.version:
                if generation:
                    await self._reclaim(state, key, generation - 1)
                return None
            if seen is not None:
                return self._conflict(operation, state, key)
            state = after

    def _conflict(self, operation: _Operation | None, state: _State, key: str) -> None:
        """Record that a conditional write of ``key`` lost its race (see
        :func:`conditional_writes`)."""
        assert operation is not None  # only writes of keys an operation read are conditional
        if operation.conflict is None:
            operation.conflict = ConflictError(self._where(state, key))

    async def _reclaim(self, state: _State, key: str, generation: int) -> None:
        """Empty a generation that the write of the next one superseded, after that write's
        fence check saw the head open: no seal can name it any more (see the module
        docstring). Only where the storage gains from it, and never while a snapshot that may
        need it is held."""
        if self._keep_superseded or not self.storage.reclaims_superseded:
            return
        with contextlib.suppress(StorageError):  # space is all that is lost: gc frees it
            await self.storage.empty(state.repo.files.data_path(state.version, key, generation))

    async def _remove(self, state: _State, key: str, expected: int | None) -> int | None:
        """Write a tombstone as the next generation of ``key`` if it has a value; return that
        generation, or ``None`` if nothing was written."""
        if expected is None:
            stored = await self._stored(state, key)
            in_head = stored is not None and stored[0].version == state.version
            if in_head and stored is not None and stored[2] == len(frame.TOMBSTONE):
                return None  # deleted in this head already
            if not in_head and await state.index.get(key) is None:
                return None  # no value anywhere
        return await self._put(state, key, None, expected)

    async def _clean_up_if_deleted(self, state: _State) -> None:
        """After a write found the repository deleted, remove what it may have recreated.

        A write that began before the deletion and landed after it recreated part of the
        deleted incarnation's folder; nothing can ever read it, so it goes, and no folder of
        a deleted repository comes back.
        """
        try:
            await state.repo.check_live()
        except NotFoundError:
            await self.storage.delete_prefix(state.repo.files.home)

    # -- putting keys back ---------------------------------------------------------------

    def stop_writes(self, timeout: float = 600.0) -> None:
        """Refuse every further write through this session, and wait (in this thread, not on
        an event loop) for the writes in flight to return.

        For an operation that failed: dask's threads may still be running tasks that write
        after the failure was raised; once this returns, none of them can land any more, and
        :meth:`restore` puts back what they changed. Copies of the session (pickled to a
        dask.distributed worker) are not stopped.
        """
        self._gate.close(timeout)

    async def snapshot(self) -> HeadSnapshot:
        """Record the state of the session's branch head, to put keys back later
        (:meth:`restore`); until then, superseded generations are kept (by this session and
        copies of it pickled meanwhile). Costs one listing of the head.

        Raises
        ------
        ReadOnlyError
            If the session is not at a branch, or refuses writes.
        """
        await self.ensure_writable()
        self._keep_superseded = True
        state = await self._checked_state()
        contents = await state.repo.manifests.contents(state.version)
        return HeadSnapshot(state.version, contents, state.index)

    def release(self) -> None:
        """Stop keeping superseded generations for a :meth:`snapshot` no longer needed."""
        self._keep_superseded = False

    async def restore(
        self,
        snapshot: HeadSnapshot,
        prefixes: Iterable[str],
        *,
        last: Callable[[str], bool] = lambda key: False,
    ) -> int:
        """Put every key under ``prefixes`` back as it was when ``snapshot`` was taken.

        For an operation that failed halfway (:func:`hubzarr.xarray.to_hub`): each key whose
        object differs from the one it had then gets that object's payload again as its next
        generation (or a tombstone, if it had none). Sealed versions are never touched, and
        keys outside ``prefixes`` (other writers' work) are left alone. Keys for which
        ``last(key)`` holds are put back after the others (zarr's metadata files: interrupted,
        every array is still described). Returns the keys put back.

        Raises
        ------
        ConflictError
            If another writer (another process) rewrote a key meanwhile, so the object it had
            then is gone.
        """
        state = await self._checked_state()
        now_contents = await state.repo.manifests.contents(state.version)
        scope = tuple(prefixes)
        then_contents = snapshot.contents
        # The indexes' keys in scope, read a shard at a time.
        then_index: dict[str, Location] = {}
        now_index: dict[str, Location] = {}
        for prefix in scope:
            then_index.update(await snapshot.index.mapping(prefix))
        if state.index is snapshot.index:  # the head has not moved since: the same index
            now_index = then_index
        else:
            for prefix in scope:
                now_index.update(await state.index.mapping(prefix))
        candidates = {
            k
            for keys in (
                then_contents.written,
                then_contents.deleted,
                then_index,
                now_contents.written,
                now_contents.deleted,
                now_index,
            )
            for k in keys
            if k.startswith(scope)
        }

        def then(key: str) -> Location | None:
            if key in then_contents.written:
                return Location(snapshot.version, then_contents.written[key])
            return None if key in then_contents.deleted else then_index.get(key)

        def now(key: str) -> Location | None:
            if key in now_contents.written:
                return Location(state.version, now_contents.written[key])
            return None if key in now_contents.deleted else now_index.get(key)

        changed = sorted(k for k in candidates if then(k) != now(k))
        limit = asyncio.Semaphore(_CONCURRENCY)
        _restoring.set(True)  # this task and its children pass a stopped session's gate

        async def put_back(key: str) -> None:
            async with limit:
                place = then(key)
                if place is None:
                    await self.delete(key)
                    return
                in_head = place.version == state.version
                decode = self._decoder(state, key, [(place, in_head)])
                path = state.repo.files.object_path(place, key)
                found = await self.storage.read_first([path], decode)
                if found is None or isinstance(found[1], _Superseded):
                    raise ConflictError(
                        f"{self._where(state, key)}: cannot put it back, {path} is gone (another "
                        "writer rewrote it meanwhile)"
                    )
                if found[1][0] is None:
                    await self.delete(key)
                    return
                await self.write(key, bytes(found[1][0]))

        try:
            await asyncio.gather(*(put_back(k) for k in changed if not last(k)))
            await asyncio.gather(*(put_back(k) for k in changed if last(k)))
        finally:
            self.release()
        return len(changed)


def _unpickle_session(
    storage: Storage, name: Name, read_only: bool, pinned: Resolved | None, keep: bool
) -> Session:
    return Session(storage, name, read_only=read_only, pinned=pinned, keep_superseded=keep)
