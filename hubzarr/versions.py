"""Repositories and their versions: creating, resolving refs, the seal protocol, history.

Layout of one repository under the hub root (``docs/format.md`` specifies every file)::

    <user>/<name>/repo.json                       identity: incarnation id, default branch
    <user>/<name>/<incarnation>/refs/branches/<b>.json   {"head": <version id>}
    <user>/<name>/<incarnation>/refs/tags/<t>.json       {"version": <version id>}, created once
    <user>/<name>/<incarnation>/refs/names/<ref>.json    the claim of a ref name, created once
    <user>/<name>/<incarnation>/versions/<id>.json       parent and manifest chain, created once
    <user>/<name>/<incarnation>/seals/<id>.json          the fence: <id> takes no more writes
    <user>/<name>/<incarnation>/manifests/<id>.json      what <id> wrote and deleted, created once
    <user>/<name>/<incarnation>/index/<id>.json          layout 3: the index root of sealed <id>
    <user>/<name>/<incarnation>/shards/<hash>.json       layout 3: a shard of index roots
    <user>/<name>/<incarnation>/data/<id>/<zarr key>     objects written while <id> was open

Every repository file but a branch ref is created once (put-if-absent) and never changed. A
deleted repository loses its ``repo.json`` first, so re-creating the name starts a new
incarnation folder that no debris of the old one can leak into.

**Copy-on-write by key prefix.** A branch points at one *open* version, its head; writes go to
``data/<head>/`` (:mod:`hubzarr.session`). Sealing a head (for a tag or a branch) creates its
successor's record, then the seal record (the fence), then the manifest listing
``data/<head>/``, then moves the branch. No chunk is ever copied: the new head starts empty and
reads fall through to its ancestors, through the index (:mod:`hubzarr.index`; layout 2:
:mod:`hubzarr.manifests`).

**Crashes.** Each step is idempotent and the seal record holds all a finisher needs, so a
sealer that dies halfway is finished by the next actor that opens the branch or the version.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import difflib
import getpass
import heapq
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from hubzarr import frame
from hubzarr.errors import (
    AlreadyExistsError,
    ConflictError,
    FormatError,
    InvalidArgumentError,
    NotFoundError,
    ReadOnlyError,
    StorageError,
)
from hubzarr.files import RepoFiles
from hubzarr.index import (
    SHARDS,
    DictIndex,
    IndexRoot,
    Shard,
    ShardedIndex,
    VersionIndex,
    derive_root,
)
from hubzarr.manifests import Index, Manifests, apply, build, merge
from hubzarr.names import Name, check_ref
from hubzarr.records import (
    LAYOUT,
    VERSION_ID,
    BranchRef,
    Checkpoint,
    DeletedRef,
    ExpiryRecord,
    Location,
    Manifest,
    RefKind,
    RepositoryRecord,
    SealRecord,
    TagRef,
    VersionRecord,
    check_message,
    new_version_id,
)
from hubzarr.refs import Refs
from hubzarr.storage import Storage

__all__ = ["LogEntry", "Repository", "Resolved", "author", "list_repositories"]

_ADVICE = "the repository is damaged: restore that file from a copy"
#: Objects a revert or merge copies at once.
_COPIES = 32
#: Version records one repository object keeps (a few hundred bytes each).
_RECORDS_KEPT = 4096
#: Index roots one repository object keeps (up to about 2 MB each, at 10^8 chunks).
_ROOTS_KEPT = 64
#: A new repository's first objects are created this many at a time.
_CREATING = 64


def author() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@dataclass(frozen=True, slots=True)
class Resolved:
    """What a ref resolved to.

    Attributes
    ----------
    kind : {"branch", "tag", "version"}
        What the ref named.
    ref : str
        The ref itself.
    version : str
        The version id: the open head for a branch, a sealed version otherwise.
    sealed : bool
        Whether the version is sealed (immutable).
    """

    kind: Literal["branch", "tag", "version"]
    ref: str
    version: str
    sealed: bool


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One version in a repository's history.

    Attributes
    ----------
    id : str
        The version id.
    parent : str or None
        The version it started from.
    time : datetime.datetime
        When it was sealed (or opened, for an open head), in UTC.
    message : str or None
        The message given when it was sealed.
    refs : tuple of str
        The branches and tags pointing at it (``"tag: v1"``-style for tags).
    sealed : bool
        False for a branch's open head.
    merged : tuple of str
        For a merge, the version merged in (its second parent).
    expired : bool
        Whether retention (``hub gc --expire-before/--keep-last``) dropped its state: it is
        listed, but can no longer be read.
    """

    id: str
    parent: str | None
    time: datetime
    message: str | None
    refs: tuple[str, ...]
    sealed: bool
    merged: tuple[str, ...] = ()
    expired: bool = False


class Repository:
    """One repository's version history on a storage.

    Parameters
    ----------
    storage : Storage
        The hub root's storage.
    name : Name
        The repository's name; its ref is ignored.
    """

    def __init__(self, storage: Storage, name: Name) -> None:
        self.files = RepoFiles(storage, name)
        #: Its branches and tags.
        self.refs = Refs(self.files)
        #: Its manifests.
        self.manifests = Manifests(self.files)
        #: Whether it is a draft: created, not published (see :meth:`create`).
        self._draft = False
        #: Version records read (by path): written once, never changed.
        self._records: dict[str, VersionRecord] = {}
        #: Index roots read or derived (layout 3), by version: written once, never changed.
        self._roots: dict[str, IndexRoot] = {}

    @property
    def storage(self) -> Storage:
        """The hub root's storage."""
        return self.files.storage

    @property
    def name(self) -> Name:
        """The repository's name (without a ref)."""
        return self.files.name

    @property
    def base(self) -> str:
        """The repository's folder under the root, ``<user>/<name>``."""
        return self.files.base

    @property
    def incarnation(self) -> str:
        """The id of the repository's current incarnation folder."""
        return self.files.info.id

    @property
    def layout(self) -> int:
        """The storage format version the repository was written with."""
        return self.files.info.layout

    @property
    def scope(self) -> str:
        """Where the names of its index shards are unique: its incarnation folder."""
        return f"{self.storage.url}/{self.files.home}"

    @property
    def default_branch(self) -> str:
        """The branch a name without a ref means."""
        return self.files.info.default_branch

    def path(self, *parts: str) -> str:
        """Return the storage path of ``parts`` inside the repository's incarnation folder."""
        return self.files.path(*parts)

    # -- identity ------------------------------------------------------------------------

    async def exists(self) -> bool:
        """Return whether the repository exists."""
        return await self.storage.exists(self.files.repo_json)

    async def open(self) -> None:
        """Read the repository's identity.

        Raises
        ------
        NotFoundError
            If there is no such repository; the message names close matches.
        FormatError
            If ``repo.json`` is damaged or of a newer layout.
        """
        if self.files.is_open:
            return
        info = await self.files.read_info()
        if info is None:
            names = [n for n in await list_repositories(self.storage) if n != str(self.name)]
            close = difflib.get_close_matches(str(self.name), names, n=3, cutoff=0.75)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise NotFoundError(
                f"no repository {self.name} under {self.storage.url}{hint} "
                "(create one with hubzarr.array(...); list them with 'hub ls')"
            )
        self.files.info = info

    async def create(
        self, branch: str, initial: dict[str, bytes] | None = None, *, publish: bool = True
    ) -> str:
        """Create the repository with one branch; return the branch's head.

        Parameters
        ----------
        branch : str
            The first (default) branch.
        initial : dict, optional
            Objects the first version holds from the start (``{zarr key: payload}``, such as
            an array's ``.zarray``): written before the repository is published, so a creator
            killed halfway leaves no repository rather than one without its array.
        publish : bool
            ``False``: leave the repository a *draft*, which this object (and a
            :class:`~hubzarr.session.Session` given it) reads and writes like any other but
            nobody else sees, until :meth:`publish` (or :meth:`discard`). An import fills its
            repository so: one killed halfway leaves nothing visible.

        Raises
        ------
        AlreadyExistsError
            If the repository exists (exactly one of several concurrent creators succeeds).
        """
        check_ref(branch, what="branch")
        if await self.exists():
            raise self._exists_error()
        root = new_version_id()
        info = RepositoryRecord(
            id=secrets.token_hex(8),
            layout=LAYOUT,
            default_branch=branch,
            root_version=root,
            created=time.time(),
        )
        # Everything goes into a fresh incarnation folder no reader looks at until repo.json
        # names it: repo.json, created last, decides the winner among concurrent creators and
        # publishes the lot at once. A loser's folder, or a killed creator's, is left for gc.
        self.files.info = info
        try:

            async def put(key: str, payload: bytes) -> None:
                bound = frame.binding(root, key, 0)
                await self.storage.create(
                    self.files.data_path(root, key), (frame.encode_header(payload, bound), payload)
                )

            objects = list((initial or {}).items())
            for start in range(0, len(objects), _CREATING):
                await asyncio.gather(*(put(k, v) for k, v in objects[start : start + _CREATING]))
            await self.refs.recover_default_branch()
        except BaseException:
            self.files.info = None
            raise
        self._draft = True
        if publish:
            await self.publish()
        return root

    async def publish(self) -> None:
        """Make a draft (:meth:`create` with ``publish=False``) the repository of its name.

        Raises
        ------
        AlreadyExistsError
            If a repository of that name was created meanwhile (the draft is deleted).
        """
        assert self._draft, "only a draft is published"
        info = self.files.info
        try:
            await self.files.create_record(self.files.repo_json, info.to_dict())
        except AlreadyExistsError:
            # Another creator won: our folder was never published, and nobody else knows it.
            await self.discard()
            raise self._exists_error() from None
        self._draft = False
        await self.refs.recover_default_branch()

    async def discard(self) -> None:
        """Delete a draft's folder (what a killed creator would leave for gc); nothing if this
        is no draft (published, or discarded already)."""
        if not self._draft:
            return
        home = self.files.home
        self.files.info = None
        self._draft = False
        await self.storage.delete_prefix(home)

    def _exists_error(self) -> AlreadyExistsError:
        return AlreadyExistsError(
            f"repository {self.name} already exists under {self.storage.url}; open it with "
            "hubzarr.load(...), choose another name, or delete it first ('hub rm'); "
            "hubzarr.array(..., overwrite=True) replaces an array's head contents"
        )

    async def check_live(self) -> None:
        """Check that the repository still exists as the incarnation this object opened.

        Raises
        ------
        NotFoundError
            If it was deleted (or deleted and created again) since it was opened: a handle
            opened before a deletion must neither read nor write.
        """
        if self._draft:
            return  # only its creator knows it, and nobody else can delete it
        if not await self.files.still_open():
            raise self.files.gone()

    async def delete(self) -> None:
        """Delete the repository with all its versions."""
        await self.open()
        home = self.files.home
        await self.storage.delete(self.files.repo_json)
        self.files.info = None
        await self.storage.delete_prefix(home)

    # -- refs ----------------------------------------------------------------------------

    async def list_refs(self) -> dict[str, tuple[RefKind, str]]:
        """Return ``{ref: (kind, version)}`` for every branch (its head) and tag."""
        await self.open()

        async def live(kind: RefKind) -> list[tuple[str, tuple[RefKind, str]]]:
            names = await self.refs.names(kind)
            versions = await asyncio.gather(*(self.refs.live(kind, n) for n in names))
            return [(n, (kind, v)) for n, v in zip(names, versions, strict=True) if v is not None]

        # Both kinds at once: two round trips to an object store instead of four.
        branches, tags = await asyncio.gather(live("branch"), live("tag"))
        return dict(branches + tags)

    async def delete_ref(self, kind: RefKind, ref: str) -> str:
        """Delete a tag or branch; return the version it pointed at.

        The ref's record stays behind, marked deleted, so its name is never reused (a name
        saved in a notebook cannot come to mean other data). The versions it kept alive are
        left for :func:`hubzarr.collect.collect`.

        Raises
        ------
        NotFoundError
            If there is no such tag or branch.
        InvalidArgumentError
            For the default branch.
        """
        check_ref(ref, what=kind)
        await self.open()
        if kind == "branch" and ref == self.default_branch:
            raise InvalidArgumentError(
                f"{ref!r} is the default branch of {self.name} and cannot be deleted; delete "
                "the repository instead"
            )
        current = await self.refs.read(kind, ref)
        if current is None or isinstance(current, DeletedRef):
            gone = " (it was deleted)" if current is not None else ""
            raise NotFoundError(f"{self.name} has no {kind} named {ref!r}{gone}")
        await self.refs.mark_deleted(kind, ref, current.version)
        if kind == "branch":
            await self._seal_deleted(ref, current.version)
        return current.version

    async def _seal_deleted(self, branch: str, head: str) -> None:
        """Seal a deleted branch's head with no successor, so a store still writing there
        gets NotFoundError at its next seal check instead of writing what gc will free."""
        tried: set[str] = set()
        while True:
            try:
                head = (await self.successors(head))[-1]
            except NotFoundError:
                return  # sealed as deleted already
            if head in tried:
                # Its seal exists (creating it failed) yet successors() ends there: storage that
                # contradicts itself, which retrying would never resolve.
                raise FormatError(
                    f"{self.files.where(self.files.seal_path(head))} exists but cannot be read "
                    f"back as the seal of that version; {_ADVICE}"
                )
            tried.add(head)
            seal = SealRecord(
                version=head,
                successor=None,
                branch=branch,
                time=time.time(),
                message=f"branch {branch} deleted",
                author=author(),
            )
            try:
                await self.files.create_record(self.files.seal_path(head), seal.to_dict())
            except AlreadyExistsError:
                continue  # a tag sealed it meanwhile: seal the head that took over
            await self._finish_seal(head, seal)
            return

    async def resolve(
        self,
        ref: str | None,
        ahead: Callable[[str, str | None], Awaitable[None]] | None = None,
    ) -> Resolved:
        """Resolve a branch, tag or version id (``None``: the default branch).

        ``ahead(head, base)``: at a branch, run while the head's seal is looked for, with the
        head the branch file names and the version it says the head started from: reads that
        opening the head would do next (valid if the head found is that head).

        Raises
        ------
        NotFoundError
            If nothing of that name exists; the message lists close matches.
        """
        await self.open()
        ref = ref or self.default_branch
        # Both files at once: one round trip (a tag's name is not a branch's).
        branch, tag = await asyncio.gather(
            self.refs.live_record("branch", ref), self.refs.live("tag", ref)
        )
        if isinstance(branch, BranchRef):
            head = branch.head
            # The head's record is read while its seal is looked for (most heads are not
            # sealed), and the index root of the version the ref says it started from:
            # opening the head then needs no round trip for either.
            base = branch.base if self.sharded else None
            current, *_ = await asyncio.gather(
                self.current_head(head),
                self.read_version(head),
                self._root_hint(base),
                ahead(head, base) if ahead is not None else asyncio.sleep(0),
            )
            return Resolved("branch", ref, current, sealed=False)
        if tag is not None:
            return Resolved("tag", ref, tag, sealed=True)
        if VERSION_ID.fullmatch(ref) and await self.read_version(ref) is not None:
            return Resolved("version", ref, ref, sealed=await self._is_sealed(ref))
        kinds: tuple[RefKind, ...] = ("tag", "branch")
        for kind in kinds:
            if await self.refs.deleted(kind, ref):
                raise NotFoundError(f"the {kind} {ref!r} of {self.name} was deleted")
        known = sorted(await self.list_refs())
        close = difflib.get_close_matches(ref, known, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise NotFoundError(
            f"{self.name} has no branch, tag or version {ref!r}; {hint}"
            f"its refs are: {', '.join(known) or '(none)'}"
        )

    async def branch_head(self, branch: str) -> str:
        """Return the open head of ``branch``, finishing any half-done seal of it first.

        Raises
        ------
        NotFoundError
            If there is no such branch.
        """
        await self.open()
        head = await self.refs.live("branch", branch)
        if head is None:
            raise NotFoundError(f"{self.name} has no branch {branch!r}")
        return await self.current_head(head)

    async def current_head(self, version: str) -> str:
        """Follow ``version``'s seals to the open head that took over its writes."""
        return (await self.successors(version))[-1]

    async def successors(self, version: str) -> list[str]:
        """Return ``version`` and the heads that took over from it, oldest first.

        All but the last are sealed. A seal found on the way is finished first (manifest
        written, branch moved), so a sealer that died halfway is completed by whoever comes next.
        """
        path = [version]
        while await self.storage.exists(self.files.seal_path(path[-1])):
            seal = await self.read_seal(path[-1])
            if seal is None:
                raise FormatError(
                    f"{self.files.where(self.files.seal_path(path[-1]))} vanished while it was "
                    f"read (seal records are never deleted); {_ADVICE}"
                )
            await self._finish_seal(path[-1], seal)
            if seal.successor is None:
                # Sealed by the deletion of its branch: nothing takes over its writes.
                raise NotFoundError(
                    f"the branch {seal.branch!r} of {self.name} was deleted (its last "
                    f"version, {path[-1]}, can still be read by id until garbage collection)"
                )
            if seal.successor in path:
                # Each seal names a new version, so a successor met before is damage; without
                # this check every operation on the branch would loop forever.
                cycle = path[path.index(seal.successor) :]
                files = ", ".join(self.files.where(self.files.seal_path(v)) for v in cycle)
                raise FormatError(
                    f"the seals of {self.name} form a cycle: {files} lead back to "
                    f"{seal.successor}; the repository is damaged: restore those files from a "
                    "copy"
                )
            path.append(seal.successor)
        return path

    # -- versions ------------------------------------------------------------------------

    async def read_version(self, version: str) -> VersionRecord | None:
        """Return a version's record, or ``None`` if there is none.

        Records never change once written: each is read once by this object.
        """
        path = self.files.version_path(version)
        known = self._records.get(path)
        if known is not None:
            return known

        def parse(data: dict[str, Any], where: str) -> VersionRecord:
            return VersionRecord.parse(data, where, version)

        record = await self.files.read_record(path, parse)
        if record is not None:
            if len(self._records) >= _RECORDS_KEPT:
                self._records.clear()
            self._records[path] = record
        return record

    async def _require_version(self, version: str) -> VersionRecord:
        record = await self.read_version(version)
        if record is None:
            raise FormatError(
                f"{self.name} refers to version {version}, whose record is missing; the "
                "repository is damaged"
            )
        return record

    async def read_seal(self, version: str) -> SealRecord | None:
        """Return a version's seal, or ``None`` if it is not sealed."""

        def parse(data: dict[str, Any], where: str) -> SealRecord:
            return SealRecord.parse(data, where, version)

        return await self.files.read_record(self.files.seal_path(version), parse)

    async def expiry(self, version: str) -> ExpiryRecord | None:
        """Return the mark retention left on ``version`` (its state was dropped), or ``None``."""

        def parse(data: dict[str, Any], where: str) -> ExpiryRecord:
            return ExpiryRecord.parse(data, where, version)

        return await self.files.read_record(self.files.expiry_path(version), parse)

    async def expired_versions(self) -> set[str]:
        """The versions retention dropped (one listing)."""
        listed = await self.storage.list(self.files.path("expired"))
        return {
            name.removesuffix(".json")
            for name in listed
            if VERSION_ID.fullmatch(name.removesuffix(".json"))
        }

    async def check_not_expired(self, version: str) -> None:
        """Refuse a version whose state retention dropped.

        Raises
        ------
        NotFoundError
            If ``version`` was expired; the message says when.
        """
        mark = await self.expiry(version)
        if mark is not None:
            raise self._expired_error(mark)

    async def check_kept(self, version: str) -> None:
        """Refuse a version whose objects gc may have freed: expired by retention, or
        collected because no branch or tag reached it any more.

        Raises
        ------
        NotFoundError
            If so; the message says which.
        """
        # (One after the other: this runs where reads fail, in threads with no event loop
        # of their own, which a gather would need.)
        await self.check_not_expired(version)
        if not await self.storage.exists(self.files.version_path(version)):
            raise NotFoundError(
                f"version {version} of {self.name} was freed by gc: no branch or tag reached "
                "it any more"
            )

    def _expired_error(self, mark: ExpiryRecord) -> NotFoundError:
        when = datetime.fromtimestamp(mark.time, UTC).isoformat(timespec="seconds")
        if mark.unreachable:
            return NotFoundError(
                f"version {mark.version} of {self.name} was freed by gc at "
                f"{when.replace('+00:00', 'Z')}: no branch or tag reached it any more"
            )
        return NotFoundError(
            f"version {mark.version} of {self.name} was expired by gc at "
            f"{when.replace('+00:00', 'Z')} (retention): it is still listed by hub log, but "
            "its state is gone; read a later version or a tag"
        )

    async def _is_sealed(self, version: str) -> bool:
        if await self.manifests.exists(version):
            return True
        seal = await self.read_seal(version)
        if seal is None:
            return False
        await self._finish_seal(version, seal)
        return True

    async def read_manifest(self, version: str) -> Manifest | Checkpoint:
        """Return a sealed version's manifest, parsed and checked (finishing its seal first if
        needed).

        Raises
        ------
        FormatError
            If the manifest is malformed, or the version was never sealed.
        """
        manifest = await self.manifests.read(version)
        if manifest is not None:
            return manifest
        seal = await self.read_seal(version)
        await self.check_not_expired(version)
        if seal is None:
            raise FormatError(
                f"{self.name}: sealed version {version} has no manifest; the repository is damaged"
            )
        await self._finish_seal(version, seal)
        manifest = await self.manifests.read(version)
        if manifest is None:  # a read-only root: the finisher could not write it
            path = self.files.manifest_path(version)
            raise FormatError(
                f"{self.name}: version {version} was sealed by a sealer that stopped before "
                f"writing {self.files.where(path)}; open the repository once on a writable root "
                "to finish the seal"
            )
        return manifest

    async def load_index(self, chain: tuple[str, ...]) -> Index:
        """Merge the manifests of ``chain`` (newest first) into the index they lead to (layout
        2: a version's starting state)."""
        return merge(reversed(await self._manifests(chain)))

    async def _manifests(self, versions: tuple[str, ...]) -> list[Manifest | Checkpoint]:
        return list(await asyncio.gather(*(self.read_manifest(v) for v in versions)))

    @property
    def sharded(self) -> bool:
        """Whether sealed versions have index roots and shards (layout 3 and newer)."""
        return self.layout >= 3

    async def advance_index(self, index: VersionIndex, path: list[str]) -> VersionIndex:
        """Return the starting index of ``path[-1]``, given ``index``, that of ``path[0]``.

        ``path`` is a head and the heads that took over from it (:meth:`successors`). A
        successor that continues its sealed predecessor starts from the predecessor's sealed
        state: its manifest is applied to ``index``, without reloading the whole chain (layout
        2), or the predecessor's index root is read (layout 3). A successor that a copy moved
        elsewhere (its parent is another version, :mod:`hubzarr.replicate`) starts from its
        own parent's state.
        """
        if self.sharded:
            return await self.version_index(path[-1], sealed=False)
        assert isinstance(index, DictIndex)
        state = dict(index.index)
        records = await asyncio.gather(*(self._require_version(v) for v in path[1:]))
        for sealed, record in zip(path[:-1], records, strict=True):
            if record.parent == sealed:
                apply(state, await self.read_manifest(sealed))
            else:
                state = await self.load_index(record.chain)
        return DictIndex(state)

    async def version_index(self, version: str, *, sealed: bool) -> VersionIndex:
        """Return the index a reader of ``version`` resolves keys with.

        For a sealed version, the whole state; for an open head, its starting state (the head's
        own objects are looked up under its prefix first).
        """
        if self.sharded:
            if sealed:
                return await self.sealed_index(version)
            parent = (await self._require_version(version)).parent
            return DictIndex({}) if parent is None else await self.sealed_index(parent)
        if not sealed:
            return DictIndex(await self.load_index((await self._require_version(version)).chain))
        # The version's own manifest is read with its record: one round trip less.
        record, own = await asyncio.gather(
            self._require_version(version), self.read_manifest(version)
        )
        if isinstance(own, Checkpoint):
            return DictIndex(merge([own]))
        return DictIndex(merge([*reversed(await self._manifests(record.chain)), own]))

    # -- the sharded index (layout 3) ---------------------------------------------------

    async def sealed_index(self, version: str) -> VersionIndex:
        """The index of the sealed ``version`` (layout 3): its root, read (or derived from its
        ancestors' and its manifest where no root was written yet); shards are read on use.

        Raises
        ------
        FormatError
            If the version is not sealed, or its root, a shard or a manifest is damaged.
        """
        root = await self.index_root(version)
        if root is None:
            await self.check_not_expired(version)
            return await self._derive(version)
        return ShardedIndex(root, self)

    async def _root_hint(self, version: str | None) -> None:
        """Read the index root of ``version`` ahead, as a branch ref hints (a wrong or
        damaged hint is ignored here: the reader that needs the root reads it again)."""
        if version is not None:
            with contextlib.suppress(StorageError):
                await self.index_root(version)

    async def index_root(self, version: str) -> IndexRoot | None:
        """The index root of ``version`` (layout 3) as stored; ``None`` if none was written."""
        known = self._roots.get(version)
        if known is not None:
            return known

        def parse(data: dict[str, Any], where: str) -> IndexRoot:
            return IndexRoot.parse(data, where, version)

        root = await self.files.read_record(self.files.index_path(version), parse)
        if root is not None:
            self._remember(version, root)
        return root

    def _remember(self, version: str, root: IndexRoot) -> None:
        if len(self._roots) >= _ROOTS_KEPT:
            self._roots.clear()
        self._roots[version] = root

    async def read_shard(self, name: str) -> Shard:
        """Read and check the index shard ``name`` (:class:`~hubzarr.index.ShardedIndex` calls
        this on a shard's first use in the process).

        Raises
        ------
        FormatError
            If the shard is missing or damaged.
        """
        path = self.files.shard_path(name)
        shard = await self.files.read_record(path, Shard.parse)
        if shard is None:
            await self.check_live()
            raise FormatError(
                f"{self.files.where(path)}, a shard of the index of {self.name}, is missing; "
                f"{_ADVICE}"
            )
        return shard

    async def _derive(self, version: str) -> VersionIndex:
        """The index of a sealed version that has no root yet: from the nearest ancestor that
        has one (or the first version), each version's root in turn is derived from its
        parent's and its own manifest, and written (on a read-only root, the state is built in
        memory instead)."""
        path = [version]
        base: VersionIndex | None = None
        while True:
            parent = (await self._require_version(path[-1])).parent
            if parent is None:
                break
            root = await self.index_root(parent)
            if root is not None:
                base = ShardedIndex(root, self)
                break
            if parent in path:
                raise FormatError(
                    f"the versions of {self.name} form a cycle: {parent} is its own ancestor; "
                    f"{_ADVICE}"
                )
            path.append(parent)
        if self.storage.read_only:
            state = {} if base is None else await base.mapping()
            for v in reversed(path):
                apply(state, await self.read_manifest(v))
            return DictIndex(state)

        async def write_shard(name: str, shard: Shard) -> None:
            # Every finisher derives the same shards: one written first holds the same content.
            with contextlib.suppress(AlreadyExistsError):
                await self.files.create_record(self.files.shard_path(name), shard.to_dict())
            SHARDS.put((self.scope, name), shard)

        for v in reversed(path):
            manifest = await self.read_manifest(v)
            assert isinstance(manifest, Manifest), "layout 3 writes no checkpoints"
            changes: dict[str, Any] = dict(manifest.locations())
            changes.update(dict.fromkeys(manifest.deleted))
            root = await derive_root(v, base, changes, write_shard, by_writer=self.layout >= 4)
            # Every finisher derives the same root; the first one written is kept.
            with contextlib.suppress(AlreadyExistsError):
                await self.files.create_record(self.files.index_path(v), root.to_dict())
            self._remember(v, root)
            base = ShardedIndex(root, self)
        assert base is not None
        return base

    # -- the seal protocol ---------------------------------------------------------------

    async def _finish_seal(self, version: str, seal: SealRecord) -> None:
        missing = not await self.manifests.exists(version)
        if missing and await self.expiry(version) is not None:
            return  # its state was dropped by retention: nothing to finish or rebuild
        if not self.storage.read_only and missing:
            record = await self._require_version(version)
            # The listing names the newest generation of each key at this moment. Objects are
            # written once, so a writer that lands later creates a newer generation, which no
            # manifest names: the sealed version cannot change under its readers.
            contents = await self.manifests.contents(version)
            base = await self.load_index(record.chain) if record.is_checkpoint else None
            manifest = build(record, contents, base)
            # Another finisher may have published it first; manifests are write-once.
            with contextlib.suppress(AlreadyExistsError):
                await self.files.create_record(
                    self.files.manifest_path(version), manifest.to_dict()
                )
        if self.sharded and not self.storage.read_only:
            await self.sealed_index(version)  # its root, derived once
        if seal.successor is not None:
            await self.refs.move_branch(seal.branch, version, seal.successor)

    async def seal(self, branch: str, message: str | None = None) -> str:
        """Seal the head of ``branch`` and give the branch a new empty head.

        Returns
        -------
        str
            The id of the sealed version.

        Raises
        ------
        InvalidArgumentError
            If ``message`` is neither a string nor ``None`` (nothing is written).
        """
        check_message(message)
        head = await self.branch_head(branch)
        record = await self._require_version(head)
        successor = record.child(chained=not self.sharded)
        await self.files.create_record(self.files.version_path(successor.id), successor.to_dict())
        seal = SealRecord(
            version=head,
            successor=successor.id,
            branch=branch,
            time=time.time(),
            message=message,
            author=author(),
        )
        try:
            await self.files.create_record(self.files.seal_path(head), seal.to_dict())
        except AlreadyExistsError:
            # A concurrent sealer won; its seal is as good as ours (our successor record is
            # left for garbage collection).
            won = await self.read_seal(head)
            if won is None:
                raise FormatError(
                    f"{self.files.where(self.files.seal_path(head))} exists but cannot be read "
                    f"back; {_ADVICE}"
                ) from None
            seal = won
        await self._finish_seal(head, seal)
        return head

    async def move_head(
        self, branch: str, old: str, new: str, message: str
    ) -> Manifest | Checkpoint:
        """Seal the head ``old`` of ``branch`` with ``new``, a head whose record starts from
        another state, as its successor (a copy moving the branch forward,
        :mod:`hubzarr.replicate`); return ``old``'s manifest: what it wrote before the seal
        fenced it.

        The caller checked that ``old`` had written nothing; what the manifest holds are writes
        that landed since, which it applies to ``new`` so that none is lost.

        Raises
        ------
        ConflictError
            If ``old`` was sealed by someone else meanwhile (nothing is changed).
        """
        seal = SealRecord(
            version=old,
            successor=new,
            branch=branch,
            time=time.time(),
            message=message,
            author=author(),
        )
        try:
            await self.files.create_record(self.files.seal_path(old), seal.to_dict())
        except AlreadyExistsError:
            raise ConflictError(
                f"the branch {branch!r} of {self.name} changed meanwhile (its head {old} was "
                "sealed by another writer); run the copy again"
            ) from None
        await self._finish_seal(old, seal)
        return await self.read_manifest(old)

    async def carry(self, old: str, new: str, late: Manifest | Checkpoint) -> None:
        """Write into the head ``new`` what the sealed head ``old`` wrote before its seal
        fenced it (``late``, its manifest), where ``new`` holds nothing of that key yet: a
        writer that repeated its write in ``new``, or wrote there since, wins."""
        deleted = late.deleted if isinstance(late, Manifest) else ()
        writes: dict[str, Location | None] = {**late.locations(), **dict.fromkeys(deleted)}
        for key, loc in sorted(writes.items()):
            data: bytes | tuple[bytes, memoryview] = frame.TOMBSTONE
            if loc is not None:
                raw = await self.storage.read(self.files.object_path(loc, key))
                where = f"{self.name} version {old} key {key!r}"
                bound = frame.binding(old, key, loc.generation)
                payload = None if raw is None else frame.decode(raw, where, bound)
                if payload is not None:
                    data = (frame.encode_header(payload, frame.binding(new, key, 0)), payload)
            with contextlib.suppress(AlreadyExistsError):  # the writer repeated it there
                await self.storage.create(self.files.data_path(new, key), data)

    async def publish_state(
        self,
        branch: str,
        base: str,
        writes: Mapping[str, Location | None],
        message: str,
        merged: tuple[str, ...] = (),
        *,
        strict: bool = True,
    ) -> str:
        """Make the branch's state ``base`` (its state when ``writes`` were worked out,
        sealed) with ``writes`` applied (key -> an object of this repository to take, ``None``
        to delete), as one version, in one step a reader sees whole: what a revert and a merge
        publish. Return that version.

        The branch's head is committed first; with ``strict``, its state must still be
        ``base`` (a merge: writes since could conflict); else writes that reached it since are
        kept where ``writes`` do not replace them (a revert: they are ordered before it). The
        new version ``P`` is built where no ref names it: its objects (payloads taken from the
        locations given, checked, bound again to ``P``), its record (parent: the base; ``merged``),
        its seal and manifest. Then the branch's head is sealed with a successor that starts
        from ``P`` (:meth:`move_head`), and what reached the head before that seal is written
        again into the successor. A crash before that seal leaves the branch as it was (``P``
        is left for gc); after it, whoever opens the branch next finishes the move.

        Raises
        ------
        ConflictError
            If the branch moved on meanwhile (a write, another seal): nothing is published.
        """
        current = await self.sealed_state(branch)
        head = await self.branch_head(branch)
        if (strict and current != base) or (await self._require_version(head)).parent != current:
            raise ConflictError(
                f"the branch {branch!r} of {self.name} moved on meanwhile; run it again"
            )
        base_record = await self._require_version(current)
        built = dataclasses.replace(base_record.child(chained=not self.sharded), merged=merged)
        await self.files.create_record(self.files.version_path(built.id), built.to_dict())
        limit = asyncio.Semaphore(_COPIES)

        async def take(key: str, loc: Location | None) -> None:
            data: bytes | tuple[bytes, memoryview] = frame.TOMBSTONE
            if loc is not None:
                async with limit:
                    raw = await self.storage.read(self.files.object_path(loc, key))
                where = f"{self.name} version {loc.version} key {key!r}"
                bound = frame.binding(loc.version, key, loc.generation)
                payload = None if raw is None else frame.decode(raw, where, bound)
                if payload is None:
                    raise FormatError(f"{where} is missing or deleted; {_ADVICE}")
                data = (frame.encode_header(payload, frame.binding(built.id, key, 0)), payload)
            async with limit:
                await self.storage.create(self.files.data_path(built.id, key), data)

        await asyncio.gather(*(take(k, loc) for k, loc in sorted(writes.items())))
        # Its manifest before its seal: no one writes into it, and a crash before the seal
        # leaves an open version no branch names (gc's), never a seal nobody would finish.
        contents = await self.manifests.contents(built.id)
        base_index = await self.load_index(built.chain) if built.is_checkpoint else None
        manifest = build(built, contents, base_index)
        await self.files.create_record(self.files.manifest_path(built.id), manifest.to_dict())
        successor = built.child(chained=not self.sharded)
        await self.files.create_record(self.files.version_path(successor.id), successor.to_dict())
        seal = SealRecord(
            version=built.id,
            successor=successor.id,
            branch=branch,
            time=time.time(),
            message=message,
            author=author(),
        )
        await self.files.create_record(self.files.seal_path(built.id), seal.to_dict())
        await self._finish_seal(built.id, seal)  # its manifest and root; the branch is elsewhere
        late = await self.move_head(branch, head, successor.id, message)
        await self.carry(head, successor.id, late)
        return built.id

    async def _sealed_version(
        self, ref: str | None, action: str, message: str | None = None
    ) -> str:
        resolved = await self.resolve(ref)
        if resolved.kind == "branch":
            return await self.seal(resolved.ref, message)
        if resolved.kind == "version":
            # Retention writes its marks before it lists the refs that keep versions: a ref
            # made here after this check is seen by it (and the mark taken back).
            await self.check_not_expired(resolved.version)
        return self._sealed(resolved, action)

    def _sealed(self, resolved: Resolved, action: str) -> str:
        """The version a tag or version id resolved to, refused if it is an open head."""
        if not resolved.sealed:
            raise InvalidArgumentError(
                f"version {resolved.version} of {self.name} is an open head; {action} its "
                "branch instead"
            )
        return resolved.version

    async def sealed_state(self, ref: str | None, message: str | None = None) -> str:
        """Return a sealed version holding the state ``ref`` has now: its own version at a tag
        or version id; at a branch, the head's parent if the head holds no write of its own
        (one listing), else the head, sealed now as a tag seals it (``message`` in its seal),
        without a name.

        Raises
        ------
        NotFoundError
            If the repository or ref does not exist.
        ReadOnlyError
            If a head holding writes must be sealed on a read-only root.
        """
        resolved = await self.resolve(ref)
        if resolved.kind != "branch":
            if resolved.kind == "version":
                await self.check_not_expired(resolved.version)
            return self._sealed(resolved, "pin")
        if self.storage.read_only:
            raise ReadOnlyError(
                f"{self.name} is read at its branch {resolved.ref!r}, whose head may change, "
                f"and {self.storage.url} is read-only (its head can be neither listed nor "
                "sealed): read one of its tags instead"
            )
        record, contents = await asyncio.gather(
            self._require_version(resolved.version), self.manifests.contents(resolved.version)
        )
        if record.parent is not None and not contents.written and not contents.deleted:
            return record.parent
        return await self.seal(resolved.ref, message)

    async def commit(self, ref: str | None, message: str | None = None) -> tuple[str, bool]:
        """Seal the head of the branch ``ref`` as an unnamed version of its history, with
        ``message`` in its seal (a tag without a name); return the sealed version and whether
        it is new (``False``: the head held no write of its own, and its parent is returned).

        Raises
        ------
        InvalidArgumentError
            If ``ref`` is a tag or version id (only a branch takes commits), or ``message`` is
            neither a string nor ``None`` (nothing is read or written).
        NotFoundError
            If the repository or branch does not exist.
        ReadOnlyError
            On a read-only root.
        """
        check_message(message)
        resolved = await self.resolve(ref)
        if resolved.kind != "branch":
            raise InvalidArgumentError(
                f"{self.name}:{resolved.ref} is a {resolved.kind}, which never changes: commit "
                f"the branch it was taken from (hub commit {self.name.repository}:<branch>)"
            )
        version = await self.sealed_state(resolved.ref, message)
        return version, version == resolved.version

    async def tag(self, ref: str | None, tag: str, message: str | None = None) -> str:
        """Create an immutable tag at ``ref`` (sealing a branch's head); return the version id.

        Raises
        ------
        AlreadyExistsError
            If a tag or branch of that name exists (exactly one concurrent creator wins).
        InvalidNameError
            If ``tag`` breaks the name grammar (nothing is read or written).
        InvalidArgumentError
            If ``message`` is neither a string nor ``None`` (nothing is read or written).
        """
        check_ref(tag, what="tag")
        check_message(message)
        await self.open()
        await self.refs.check_free(tag, "tag")
        version = await self._sealed_version(ref, "tag", message)
        # The nonce makes the record unique to this writer, so a retried put-if-absent whose
        # first acknowledgement was lost recognises its own record.
        record = TagRef(version, time.time(), message, nonce=secrets.token_hex(8))
        await self.refs.publish(tag, record)
        return version

    async def branch(self, ref: str | None, new_branch: str) -> str:
        """Create a branch starting at ``ref``; return its (empty, open) head.

        Raises
        ------
        AlreadyExistsError
            If a tag or branch of that name exists (exactly one concurrent creator wins).
        """
        check_ref(new_branch, what="branch")
        await self.open()
        await self.refs.check_free(new_branch, "branch")
        base = await self._require_version(await self._sealed_version(ref, "branch from"))
        head = base.child(chained=not self.sharded)
        await self.files.create_record(self.files.version_path(head.id), head.to_dict())
        await self.refs.publish(
            new_branch, BranchRef(head.id, nonce=secrets.token_hex(8), base=base.id)
        )
        return head.id

    async def log(
        self, ref: str | None, limit: int | None = None, *, graph: bool = False
    ) -> list[LogEntry]:
        """Return the history leading to ``ref``, newest first (at most ``limit`` entries):
        through first parents, or with ``graph``, through merged versions too (each version
        after every version of the history that descends from it)."""
        resolved = await self.resolve(ref)
        by_version: dict[str, list[str]] = {}
        for name, (kind, version) in sorted((await self.list_refs()).items()):
            by_version.setdefault(version, []).append(name if kind == "branch" else f"tag: {name}")
        entries: list[LogEntry] = []
        walk = self.ancestry(resolved.version) if graph else self.history(resolved.version)
        async for current, record, seal in walk:
            if limit is not None and len(entries) >= limit:
                break
            entries.append(
                LogEntry(
                    id=current,
                    parent=record.parent,
                    time=datetime.fromtimestamp(seal.time if seal else record.created, UTC),
                    message=seal.message if seal else None,
                    refs=tuple(by_version.get(current, ())),
                    sealed=seal is not None,
                    merged=record.merged,
                )
            )
        if entries and self.sharded:
            try:
                gone = await self.expired_versions()
            except StorageError:  # a root that cannot list (HTTP): each version's mark
                marks = await asyncio.gather(*(self.expiry(e.id) for e in entries))
                gone = {mark.version for mark in marks if mark is not None}
            entries = [dataclasses.replace(e, expired=e.id in gone) for e in entries]
        return entries

    async def same_bytes(self, key: str, a: Location, b: Location) -> bool:
        """Whether the objects of ``key`` at ``a`` and ``b`` hold the same payload (each
        checked as any read is)."""
        raws = await asyncio.gather(
            *(self.storage.read(self.files.object_path(loc, key)) for loc in (a, b))
        )
        payloads = [
            None
            if raw is None
            else frame.decode(
                raw,
                f"{self.name} version {loc.version} key {key!r}",
                frame.binding(loc.version, key, loc.generation),
            )
            for raw, loc in zip(raws, (a, b), strict=True)
        ]
        return (
            payloads[0] is not None
            and payloads[1] is not None
            and (bytes(payloads[0]) == bytes(payloads[1]))
        )

    async def common_ancestor(self, a: str, b: str) -> str | None:
        """The nearest version both ``a`` and ``b`` descend from (through parents and merged
        versions), ``None`` if none: the base of a three-way merge."""

        async def parents(version: str) -> tuple[str, ...]:
            record = await self.read_version(version)
            if record is None:
                return ()  # collected: history stops here
            return _parents(record)

        above_a: set[str] = {a}
        frontier = [a]
        while frontier:
            found = await asyncio.gather(*map(parents, frontier))
            frontier = [p for ps in found for p in ps if p not in above_a]
            above_a.update(frontier)
        seen, frontier = {b}, [b]
        while frontier:
            hit = sorted(v for v in frontier if v in above_a)
            if hit:
                return hit[-1]  # the newest, by id (ids start with their creation time)
            found = await asyncio.gather(*map(parents, frontier))
            frontier = [p for ps in found for p in ps if p not in seen]
            seen.update(frontier)
        return None

    async def sealed_at(self, ref: str | None, when: datetime) -> str:
        """Return the state of the branch ``ref`` at ``when`` (a time with a zone): the newest
        version of its history sealed at or before then, to the microsecond (as
        :meth:`log` gives seal times).

        Raises
        ------
        InvalidArgumentError
            If ``ref`` is a tag or version id (its state never changes).
        NotFoundError
            If the repository or branch does not exist, or no version of its history was
            sealed by then (the message says when the first one was).
        """
        resolved = await self.resolve(ref)
        if resolved.kind != "branch":
            raise InvalidArgumentError(
                f"{self.name}:{resolved.ref} is a {resolved.kind}, whose state never changes: "
                "read it without as_of (as_of reads a branch as it was)"
            )
        first: tuple[str, datetime] | None = None
        async for current, _, seal in self.history(resolved.version):
            if seal is None:
                continue  # the open head
            sealed = datetime.fromtimestamp(seal.time, UTC)
            if sealed <= when:
                return current
            first = (current, sealed)
        moment = when.astimezone(UTC).isoformat().replace("+00:00", "Z")
        if first is None:
            raise NotFoundError(
                f"{self.name}:{resolved.ref} has no sealed version yet, so no state as of "
                f"{moment}: commit or tag it first"
            )
        start = first[1].isoformat().replace("+00:00", "Z")
        raise NotFoundError(
            f"{self.name}:{resolved.ref} has no state as of {moment}: its history starts at "
            f"{start} (version {first[0]})"
        )

    async def ancestry(
        self, start: str
    ) -> AsyncIterator[tuple[str, VersionRecord, SealRecord | None]]:
        """Each version ``start`` descends from, through parents and merged versions, with its
        record and seal, newest first and each after every one of them that descends from it
        (a round trip per generation of ancestors; a version gc collected ends its line)."""
        found: dict[str, tuple[VersionRecord, SealRecord | None]] = {}
        frontier = [start]
        while frontier:
            read = await asyncio.gather(
                *(asyncio.gather(self.read_version(v), self.read_seal(v)) for v in frontier)
            )
            following: set[str] = set()
            for version, (record, seal) in zip(frontier, read, strict=True):
                if record is None:
                    continue
                found[version] = (record, seal)
                following.update(_parents(record))
            frontier = sorted(following - found.keys())
        waiting = dict.fromkeys(found, 0)  # children not yet given, per version
        for record, _ in found.values():
            for parent in _parents(record):
                if parent in waiting:
                    waiting[parent] += 1
        ready = [(-int(v, 16), v) for v, n in waiting.items() if n == 0]
        heapq.heapify(ready)
        while ready:
            _, version = heapq.heappop(ready)
            record, seal = found[version]
            yield version, record, seal
            for parent in _parents(record):
                if parent in waiting:
                    waiting[parent] -= 1
                    if waiting[parent] == 0:
                        heapq.heappush(ready, (-int(parent, 16), parent))

    async def history(
        self, start: str
    ) -> AsyncIterator[tuple[str, VersionRecord, SealRecord | None]]:
        """Each version from ``start`` back to the first, with its record and seal (``None``
        for an open head), one round trip each.

        Raises
        ------
        FormatError
            If the records' parents form a cycle.
        """
        seen: list[str] = []
        met: set[str] = set()
        current: str | None = start
        while current is not None:
            if current in met:
                # Each version's record is created before its children's, so a parent met
                # before is damage; without this check the walk would never end.
                cycle = seen[seen.index(current) :]
                files = ", ".join(self.files.where(self.files.version_path(v)) for v in cycle)
                raise FormatError(
                    f"the version records of {self.name} form a cycle: {files} lead back to "
                    f"{current}; the repository is damaged: restore those files from a copy"
                )
            seen.append(current)
            met.add(current)
            record, seal = await asyncio.gather(
                self._require_version(current), self.read_seal(current)
            )
            yield current, record, seal
            current = record.parent


def _parents(record: VersionRecord) -> tuple[str, ...]:
    return ((record.parent,) if record.parent else ()) + record.merged


async def list_repositories(storage: Storage, prefix: str = "") -> list[str]:
    """Return the names (``user/name``) of the repositories under a root, sorted.

    Parameters
    ----------
    storage : Storage
        The hub root.
    prefix : str
        Keep only names starting with this.
    """
    users = [u for u in await storage.list_dir("") if not u.startswith(".")]
    users = [u for u in users if u.startswith(prefix.split("/", 1)[0])]
    names_per_user = await asyncio.gather(*(storage.list_dir(u) for u in users))
    candidates = [f"{u}/{n}" for u, names in zip(users, names_per_user, strict=True) for n in names]
    candidates = [c for c in candidates if c.startswith(prefix)]
    found = await asyncio.gather(*(storage.exists(f"{c}/repo.json") for c in candidates))
    return sorted(c for c, present in zip(candidates, found, strict=True) if present)
