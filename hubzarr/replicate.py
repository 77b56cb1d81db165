"""Copying a repository, with its history, from one hub root to another.

What is copied, and how (``docs/format.md``, section 13, says it for writers of other tools):

- **Sealed versions** are immutable and their ids unique, so they are copied as they are: their
  objects byte for byte (each checksum checked on the way: the binding names the version,
  generation and key, not the root or the repository), their records re-encoded only for the
  checksum of their new place (the destination's incarnation folder is its own).
- **Open heads** are not: a branch's head takes writes at its own root, and two roots writing
  "the same" open version would create different objects under the same names. So a copy
  never shares an open head. A branch whose head holds writes of its own is carried as a
  *snapshot*: a version of the destination, created sealed, holding the head's newest objects
  at their generations (bound again to the snapshot: payloads unchanged) and naming the head
  as its ``origin``. Each copied branch gets a fresh, empty open head at the destination,
  starting from the source head's parent or from the snapshot.
- **Only what the destination lacks** is copied: a version whose manifest is there is complete
  (manifests are written after the objects they name), and a version copied halfway is
  listed, so an interrupted copy resumes. Snapshots of one head get ids derived from it, so
  a resumed copy finds its snapshot again and a repeated copy of an unchanged head finds it
  sealed and equal.
- **A new repository becomes visible only when complete**: everything goes into an
  unpublished incarnation folder whose first object is the source's first version's record
  (that is how a resumed copy finds it); ``repo.json`` is created last.
- **Into a repository that shares history** (the same first version) the new versions are
  added, new tags created, and each branch moved forward when the destination's branch has no
  changes the source lacks: its head wrote nothing and it starts from a version of the
  source's history (or a snapshot of a head of it). Otherwise the copy is refused before it
  writes anything (:class:`DivergedError`). A branch is moved by sealing its head with the new
  head as successor; writes that reached the old head while the copy moved it are applied to
  the new head, so no acknowledged write is lost.
- **A shallow copy** (a ref given) creates a new repository whose first version holds that
  state's objects, bound again to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from hubzarr import frame
from hubzarr.errors import (
    AlreadyExistsError,
    ConflictError,
    CorruptChunkError,
    DivergedError,
    FormatError,
    InvalidArgumentError,
    NotFoundError,
)
from hubzarr.manifests import HeadContents, build
from hubzarr.records import (
    INCARNATION_ID,
    LAYOUT,
    BranchRef,
    Location,
    Manifest,
    NameClaim,
    RepositoryRecord,
    SealRecord,
    TagRef,
    VersionRecord,
    new_version_id,
    split_generation,
)
from hubzarr.versions import Repository, author

__all__ = ["CONCURRENCY", "Copied", "replicate", "shallow_copy"]

#: Objects in flight: object stores are latency-bound, so tens of requests overlap.
CONCURRENCY = 32

#: ``progress(objects done, objects in all, bytes done, bytes in all)``.
Progress = Callable[[int, int, int, int], None]


@dataclass(slots=True)
class Copied:
    """What a copy did (mutable while it runs).

    Attributes
    ----------
    objects, bytes : int
        Objects and bytes written.
    skipped : int
        Objects the destination held already.
    versions : int
        Versions added to the destination (copied, or snapshots made).
    refs : int
        Branches and tags created or moved.
    """

    objects: int = 0
    bytes: int = 0
    skipped: int = 0
    versions: int = 0
    refs: int = 0


@dataclass(frozen=True, slots=True)
class _ObjectCopy:
    """One object to copy: read at ``source`` (bound to ``read_as``), write at ``target`` (bound
    to ``write_as``: the same binding for sealed versions, the snapshot's for a head's)."""

    source: str
    target: str
    size: int
    there: bool
    read_as: bytes
    write_as: bytes
    where: str


@dataclass(frozen=True, slots=True)
class _Head:
    """A source branch: its open head and what the head wrote itself."""

    branch: str
    head: str
    record: VersionRecord
    contents: HeadContents

    @property
    def wrote(self) -> bool:
        return bool(self.contents.written or self.contents.deleted)


@dataclass(slots=True)
class _Source:
    repo: Repository
    heads: dict[str, _Head]
    tags: dict[str, TagRef]
    #: Every sealed version the live refs reach, with its record.
    sealed: dict[str, VersionRecord]
    #: The sealed versions each branch's head starts from (its parent and theirs).
    ancestors: dict[str, set[str]]


@dataclass(slots=True)
class _Move:
    """What becomes of one branch at the destination."""

    branch: str
    #: The version the branch's new head starts from (``None``: the empty first state).
    base: str | None
    #: The destination head the branch leaves (``None``: a new branch).
    old_head: str | None = None
    #: A snapshot to create first (``base`` is its id).
    snapshot: _Head | None = None


@dataclass(slots=True)
class _Plan:
    versions: list[str] = field(default_factory=list)
    objects: list[_ObjectCopy] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    moves: list[_Move] = field(default_factory=list)


# -- reading the source ----------------------------------------------------------------------


async def _read_source(repo: Repository) -> _Source:
    await repo.open()
    if repo.layout < 2:
        raise InvalidArgumentError(
            f"{repo.name} was written with storage layout {repo.layout}; copies carry layout 2 "
            f"and newer repositories: export it (hub cp NAME out.zarr) and import that instead"
        )
    # Each ref file read once, all at once: the tags' whole records, the branches' heads.
    branch_names, tag_names = await asyncio.gather(
        repo.refs.names("branch"), repo.refs.names("tag")
    )
    tag_names = sorted(tag_names)
    tag_records = await asyncio.gather(*(repo.refs.read("tag", t) for t in tag_names))
    tags = {t: r for t, r in zip(tag_names, tag_records, strict=True) if isinstance(r, TagRef)}

    async def head_of(branch: str) -> _Head | None:
        version = await repo.refs.live("branch", branch)
        if version is None:
            return None  # deleted
        try:
            head = await repo.current_head(version)
        except NotFoundError:
            return None  # deleted while we looked
        record, contents = await asyncio.gather(
            repo.read_version(head), repo.manifests.contents(head)
        )
        if record is None:
            raise FormatError(
                f"{repo.name}: the record of branch {branch}'s head {head} is missing"
            )
        return _Head(branch, head, record, contents)

    found = await asyncio.gather(*map(head_of, sorted(branch_names)))
    heads = {h.branch: h for h in found if h is not None}
    sealed: dict[str, VersionRecord] = {}
    ancestors: dict[str, set[str]] = {}
    for name, branch in heads.items():
        ancestors[name] = await _lineage(repo, branch.record.parent, sealed)
    for tag in tags.values():
        await _lineage(repo, tag.version, sealed)
    return _Source(repo, heads, tags, sealed, ancestors)


async def _lineage(
    repo: Repository, start: str | None, known: dict[str, VersionRecord]
) -> set[str]:
    """The sealed versions from ``start`` back to the first, their records added to ``known``."""

    async def read(version: str) -> VersionRecord:
        record = await repo.read_version(version)
        if record is None:
            raise FormatError(f"{repo.name}: the record of version {version} is missing")
        return record

    out: set[str] = set()
    current = start
    while current is not None and current not in out:
        out.add(current)
        record = known.get(current)
        if record is None:
            record = known[current] = await read(current)
            # Its chain names the next ancestors (up to 50): read them at once.
            ahead = [v for v in record.chain if v not in known]
            known.update(zip(ahead, await asyncio.gather(*map(read, ahead)), strict=True))
        current = record.parent
    return out


async def _raw_record(repo: Repository, path: str) -> dict[str, Any] | None:
    def keep(data: dict[str, Any], where: str) -> dict[str, Any]:
        return data

    return await repo.files.read_record(path, keep)


def _snapshot_id(head: str, attempt: int) -> str:
    """The id of the ``attempt``-th snapshot of the open head ``head`` at any destination:
    derived, so a resumed or repeated copy finds the snapshot it made before."""
    digest = hashlib.blake2b(f"snapshot {head} {attempt}".encode(), digest_size=4).hexdigest()
    return f"{head[:12]}{digest}"


# -- the copy --------------------------------------------------------------------------------


class _Copier:
    def __init__(
        self, source: _Source, dst: Repository, progress: Progress | None, *, existing: bool
    ) -> None:
        self.source = source
        self.src = source.repo
        self.dst = dst
        self.progress = progress
        #: Whether ``dst`` existed (else it is being built in an unpublished folder).
        self.existing = existing
        self.copied = Copied()
        self.total = (0, 0)
        self.done = (0, 0)
        #: Index shards the destination holds (layout 3), listed once, then kept up to date.
        self._shards_there: set[str] | None = None
        #: Source versions whose state retention dropped (their records are copied, and
        #: what later versions still name of their objects, with their expiry marks).
        self.expired: set[str] = set()

    # -- objects ---------------------------------------------------------------------------

    async def _listings(self, source: str, target: str) -> tuple[dict[str, int], dict[str, int]]:
        """``{object name: size}`` under ``data/<source>/`` at the source and under
        ``data/<target>/`` at the destination (what it holds already)."""
        src, dst = await asyncio.gather(
            self.src.storage.list(self.src.files.path("data", source)),
            self.dst.storage.list(self.dst.files.path("data", target)),
        )
        return src, dst

    async def version_objects(self, version: str) -> list[_ObjectCopy]:
        """The objects of a sealed source version (those the destination holds marked); of an
        expired one, those gc kept (later versions name them)."""
        sizes, have = await self._listings(version, version)
        if version in self.expired:
            locations: dict[str, Location] = {}
            for name in sizes:
                key, generation = split_generation(name)
                locations[key] = Location(version, generation)
        else:
            locations = (await self.src.read_manifest(version)).locations()
        out = []
        for key, loc in sorted(locations.items()):
            name = loc.object_name(key)
            bound = frame.binding(version, key, loc.generation)
            out.append(
                _ObjectCopy(
                    self.src.files.object_path(loc, key),
                    self.dst.files.object_path(loc, key),
                    sizes.get(name, 0),
                    name in have,
                    bound,
                    bound,
                    f"{self.src.name} version {version} key {key!r}",
                )
            )
        return out

    async def snapshot_objects(self, head: _Head, snapshot: str) -> list[_ObjectCopy]:
        """The newest objects of a source head, to be bound to ``snapshot``."""
        sizes, have = await self._listings(head.head, snapshot)
        newest = {**head.contents.written, **head.contents.deleted}
        out = []
        for key, generation in sorted(newest.items()):
            name = Location(head.head, generation).object_name(key)
            out.append(
                _ObjectCopy(
                    self.src.files.data_path(head.head, key, generation),
                    self.dst.files.data_path(snapshot, key, generation),
                    sizes.get(name, 0),
                    name in have,
                    frame.binding(head.head, key, generation),
                    frame.binding(snapshot, key, generation),
                    f"{self.src.name} branch {head.branch} key {key!r}",
                )
            )
        return out

    async def copy_objects(self, copies: list[_ObjectCopy]) -> None:
        """Copy the objects the destination lacks, many in flight, each checked on the way."""
        todo = [c for c in copies if not c.there]
        self.copied.skipped += len(copies) - len(todo)
        self.total = (len(todo), sum(c.size for c in todo))

        async def one(copy: _ObjectCopy) -> None:
            if copy.read_as == copy.write_as:
                size = await self._copy_as_is(copy)
            else:
                size = await self._copy_bound_again(copy)
            self.copied.objects += 1
            self.copied.bytes += size
            self._tick(1, size)

        self._tick(0, 0)
        await _bounded(functools.partial(one, c) for c in todo)

    def _missing_error(self, copy: _ObjectCopy) -> CorruptChunkError:
        return CorruptChunkError(
            f"{copy.where} is missing from {self.src.storage.url} (removed outside hubzarr?); "
            "nothing new was published at the destination"
        )

    async def _copy_as_is(self, copy: _ObjectCopy) -> int:
        """Copy an object byte for byte, checked (by the destination, which may copy it
        without the bytes passing through here)."""

        def check(raw: memoryview) -> None:
            frame.decode(raw, copy.where, copy.read_as)

        try:
            size = await self.dst.storage.create_copy(
                copy.target, self.src.storage, copy.source, check
            )
        except AlreadyExistsError:  # a twin copy got there first
            return copy.size
        if size is None:
            raise self._missing_error(copy)
        return size

    async def _copy_bound_again(self, copy: _ObjectCopy) -> int:
        """Copy an object bound to another place: same payload, new checksum."""
        raw = await self.src.storage.read(copy.source)
        if raw is None:
            raise self._missing_error(copy)
        if not raw:  # an open head's superseded generation, emptied since it was listed
            raise ConflictError(
                f"{copy.where} was rewritten while the copy ran; run the copy again (it "
                "resumes), or copy a tag of that state"
            )
        payload = frame.decode(raw, copy.where, copy.read_as)
        data: bytes | tuple[bytes, memoryview] = raw
        if payload is not None:
            data = (frame.encode_header(payload, copy.write_as), payload)
        with contextlib.suppress(AlreadyExistsError):  # a twin copy got there first
            await self.dst.storage.create(copy.target, data, durable=False, unique=False)
        return len(raw)

    def _tick(self, objects: int, nbytes: int) -> None:
        self.done = (self.done[0] + objects, self.done[1] + nbytes)
        if self.progress is not None:
            self.progress(self.done[0], self.total[0], self.done[1], self.total[1])

    # -- records ---------------------------------------------------------------------------

    async def copy_record(self, folder: str, version: str, *, required: bool) -> None:
        """Copy ``<folder>/<version>.json`` (a version's record, seal or manifest)."""
        src_path = self.src.files.path(folder, f"{version}.json")
        data = await _raw_record(self.src, src_path)
        if data is None:
            if required:
                raise FormatError(f"{self.src.files.where(src_path)} is missing")
            return
        await self.dst.files.create_or_match(self.dst.files.path(folder, f"{version}.json"), data)

    async def copy_version(self, version: str) -> None:
        """The records of a sealed version, its objects being there: its record first, its
        manifest last (a version is complete once its manifest exists)."""
        await self.copy_record("versions", version, required=True)
        seal_path = self.src.files.seal_path(version)
        seal = await _raw_record(self.src, seal_path)
        if seal is not None:
            successor = SealRecord.parse(seal, self.src.files.where(seal_path), version).successor
            if successor is not None:
                # A record exists before anything names it, even a head the copy does not carry.
                await self.copy_record("versions", successor, required=False)
            await self.dst.files.create_or_match(self.dst.files.seal_path(version), seal)
        if version in self.expired:
            await self.copy_record("expired", version, required=True)
            self.copied.versions += 1
            return
        await self.copy_index(version)
        manifest = await self.src.read_manifest(version)
        await self.dst.files.create_or_match(
            self.dst.files.manifest_path(version), manifest.to_dict()
        )
        self.copied.versions += 1

    async def copy_index(self, version: str) -> None:
        """Copy a sealed version's index root (layout 3 and newer) and the shards it names that
        the destination lacks (a version shares its parent's unchanged shards: most are there
        already), shards first. A version without a root gets one derived at the destination
        when read."""
        if not self.src.sharded:
            return
        root = await self.src.index_root(version)
        if root is None:
            return
        if self._shards_there is None:
            listed = await self.dst.storage.list(self.dst.files.path("shards"))
            self._shards_there = {name.removesuffix(".json") for name in listed}
        there = self._shards_there
        missing = sorted({root.name(i) for i in range(root.shards)} - there)
        limit = asyncio.Semaphore(CONCURRENCY)

        async def copy(name: str) -> None:
            async with limit:
                path = self.src.files.shard_path(name)
                data = await _raw_record(self.src, path)
                if data is None:
                    raise FormatError(f"{self.src.files.where(path)} is missing")
                await self.dst.files.create_or_match(self.dst.files.shard_path(name), data)
                there.add(name)

        await asyncio.gather(*map(copy, missing))
        await self.copy_record("index", version, required=False)

    # -- planning --------------------------------------------------------------------------

    async def plan_versions(self, plan: _Plan) -> None:
        """Every sealed source version the destination lacks, with its missing objects."""
        ids = sorted(self.source.sealed)
        if self.src.sharded:
            self.expired = await self.src.expired_versions() & set(ids)
        present = await asyncio.gather(
            *(
                self.dst.storage.exists(self.dst.files.expiry_path(v))
                if v in self.expired
                else self.dst.manifests.exists(v)
                for v in ids
            )
        )
        plan.versions = [v for v, there in zip(ids, present, strict=True) if not there]
        per_version = await asyncio.gather(*(self.version_objects(v) for v in plan.versions))
        plan.objects = [c for copies in per_version for c in copies]

    async def find_snapshot(self, head: _Head) -> tuple[str, bool]:
        """The snapshot of ``head`` to use at the destination, and whether it is complete
        (sealed there, with the head's current contents)."""
        attempt = 0
        while True:
            snapshot = _snapshot_id(head.head, attempt)
            record = await self.dst.read_version(snapshot)
            if record is None:
                return snapshot, False
            if record.origin != head.head:
                attempt += 1  # an id taken by chance: try the next
                continue
            if not await self.dst.manifests.exists(snapshot):
                return snapshot, False  # begun by an interrupted copy: finish it
            held = await self.dst.manifests.contents(snapshot)
            if held == head.contents:
                return snapshot, True
            attempt += 1

    async def plan_branch(self, head: _Head, plan: _Plan) -> None:
        """How branch ``head.branch`` moves; raises DivergedError if it cannot."""
        base: str | None = head.record.parent
        snapshot: _Head | None = None
        if head.wrote:
            base, complete = await self.find_snapshot(head)
            if not complete:
                snapshot = head
                plan.objects += await self.snapshot_objects(head, base)
        move = _Move(head.branch, base, snapshot=snapshot)
        if self.existing:
            await self.dst.refs.finish_claim(head.branch)  # a killed copy's half-made branch
            found = await self.dst.refs.read("branch", head.branch)
            if found is not None:
                if not isinstance(found, BranchRef):
                    raise DivergedError(
                        f"the branch {head.branch!r} of {self.dst.name} was deleted there, and a "
                        "ref name is never reused; copy to a new name instead"
                    )
                old = await self.dst.current_head(found.head)
                current = await self._branch_base(head, old)
                if current == base:
                    return  # up to date
                move.old_head = old
            elif await self.dst.refs.deleted("tag", head.branch):
                raise DivergedError(
                    f"{self.dst.name} had a tag named {head.branch!r}, so it cannot take the "
                    f"branch {head.branch!r}; copy to a new name instead"
                )
        plan.moves.append(move)

    async def _branch_base(self, head: _Head, old: str) -> str | None:
        """The source-history version the destination branch at ``old`` holds the state of;
        DivergedError if it holds changes the source lacks."""
        record = await self.dst.read_version(old)
        if record is None:
            raise FormatError(f"{self.dst.name}: the record of head {old} is missing")
        if (await self.dst.manifests.contents(old)) != HeadContents({}, {}):
            raise self._diverged(head, old, "its head has writes of its own")
        base = record.parent
        history = self.source.ancestors[head.branch]
        while base is not None and base not in history:
            found = await self.dst.read_version(base)
            if found is None:
                raise FormatError(f"{self.dst.name}: the record of version {base} is missing")
            if found.origin is not None:
                if found.origin == head.head or found.origin in history:
                    return base  # a snapshot of this head, or of one it continues
                raise self._diverged(head, base, "it starts from a snapshot of another head")
            manifest = await self.dst.read_manifest(base)
            if manifest.locations() or (isinstance(manifest, Manifest) and manifest.deleted):
                raise self._diverged(head, base, "it holds a version the source does not have")
            base = found.parent  # an empty version sealed there (a tag): the same state
        return base

    def _diverged(self, head: _Head, version: str, why: str) -> DivergedError:
        return DivergedError(
            f"the branch {head.branch!r} of {self.dst.name} under {self.dst.storage.url} has "
            f"changes that {self.src.name} under {self.src.storage.url} does not have ({why}: "
            f"version {version}); nothing was copied. Copy to a new name, or copy the "
            "destination's changes back to the source first"
        )

    async def plan_tags(self, plan: _Plan) -> None:
        for tag, record in self.source.tags.items():
            if self.existing:
                await self.dst.refs.finish_claim(tag)  # a killed copy's half-made tag
                found = await self.dst.refs.read("tag", tag)
                if isinstance(found, TagRef) and found.version == record.version:
                    continue
                if found is not None or await self.dst.refs.read("branch", tag) is not None:
                    raise DivergedError(
                        f"the tag {tag!r} of {self.src.name} names version {record.version}, "
                        f"but {self.dst.name} under {self.dst.storage.url} has a tag or branch "
                        f"of that name already; nothing was copied. Copy to a new name instead"
                    )
            plan.tags.append(tag)

    # -- carrying it out -------------------------------------------------------------------

    async def move(self, move: _Move) -> None:
        """Give the branch its new head: a snapshot first if it needs one (record, then the new
        head's record, then its seal and manifest), then the branch."""
        if move.snapshot is None:
            base = None if move.base is None else await self.dst.read_version(move.base)
            if move.base is not None and base is None:
                raise FormatError(f"{self.dst.name}: the record of version {move.base} is missing")
        else:
            assert move.base is not None
            head = move.snapshot
            base = VersionRecord(
                move.base, head.record.parent, head.record.chain, time.time(), head.head
            )
            path = self.dst.files.version_path(move.base)
            if await self.dst.read_version(move.base) is None:  # else an interrupted copy's
                await self.dst.files.create_record(path, base.to_dict())
        record = (
            base.child(chained=not self.dst.sharded)
            if base is not None
            else VersionRecord(new_version_id(), None, (), time.time())
        )
        await self.dst.files.create_record(self.dst.files.version_path(record.id), record.to_dict())
        if move.snapshot is not None:
            assert base is not None
            await self.seal_snapshot(move.snapshot, base, record.id)
        if move.old_head is not None:
            await self.replace_head(move.branch, move.old_head, record.id)
        elif not self.existing:
            # A repository being built: nobody else writes there yet.
            path = self.dst.files.ref_path("branch", move.branch)
            ref = BranchRef(record.id, base=record.parent)
            await self.dst.files.write_record(path, ref.to_dict(), durable=True)
            if move.branch != self.dst.files.info.default_branch:
                claim = NameClaim(ref)
                await self.dst.files.write_record(
                    self.dst.files.claim_path(move.branch), claim.to_dict()
                )
        else:
            ref = BranchRef(record.id, nonce=secrets.token_hex(8), base=record.parent)
            await self.dst.refs.publish(move.branch, ref)
        self.copied.refs += 1

    async def seal_snapshot(self, head: _Head, record: VersionRecord, successor: str) -> None:
        """Seal a snapshot whose objects and record are there; ``successor`` exists."""
        seal = SealRecord(
            version=record.id,
            successor=successor,
            branch=head.branch,
            time=time.time(),
            message=f"copied from {self.src.storage.url}::{self.src.name}:{head.branch}",
            author=author(),
        )
        with contextlib.suppress(AlreadyExistsError):  # sealed by an interrupted copy
            await self.dst.files.create_record(self.dst.files.seal_path(record.id), seal.to_dict())
        contents = await self.dst.manifests.contents(record.id)
        if contents != head.contents:
            raise FormatError(
                f"{self.dst.files.where(self.dst.files.path('data', record.id))} holds other "
                "objects than the copy wrote there; run the copy again"
            )
        base = await self.dst.load_index(record.chain) if record.is_checkpoint else None
        with contextlib.suppress(AlreadyExistsError):
            await self.dst.files.create_record(
                self.dst.files.manifest_path(record.id), build(record, contents, base).to_dict()
            )
        self.copied.versions += 1

    async def replace_head(self, branch: str, old: str, new: str) -> None:
        """Move the destination's branch from its head ``old`` (which wrote nothing when the
        plan was made) to ``new``; writes that reached ``old`` since are applied to ``new``."""
        message = f"moved forward by a copy from {self.src.storage.url}::{self.src.name}"
        late = await self.dst.move_head(branch, old, new, message)
        await self.dst.carry(old, new, late)

    async def publish_tag(self, tag: str) -> None:
        record = self.source.tags[tag]
        if self.existing:
            await self.dst.refs.publish(tag, record)
        else:
            claim = NameClaim(record).to_dict()
            await self.dst.files.write_record(self.dst.files.claim_path(tag), claim)
            await self.dst.files.write_record(self.dst.files.ref_path("tag", tag), claim)
        self.copied.refs += 1


async def _bounded(calls: Iterable[Callable[[], Awaitable[None]]]) -> None:
    """Run the calls, :data:`CONCURRENCY` at a time; on the first failure cancel the rest and
    raise it."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def gated(call: Callable[[], Awaitable[None]]) -> None:
        async with gate:
            await call()

    tasks = [asyncio.ensure_future(gated(c)) for c in calls]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _draft(dst: Repository, root_version: str) -> str:
    """The unpublished incarnation folder a killed copy of the same history left at the
    destination (its first object is the record of ``root_version``), or a new id."""
    for entry in await dst.storage.list_dir(dst.base):
        if INCARNATION_ID.fullmatch(entry) and await dst.storage.exists(
            f"{dst.base}/{entry}/versions/{root_version}.json"
        ):
            return entry
    return secrets.token_hex(8)


async def replicate(src: Repository, dst: Repository, progress: Progress | None = None) -> Copied:
    """Copy the repository ``src`` with every version, tag and branch to ``dst``.

    ``dst`` may not exist (it is created, visible only once complete), or share ``src``'s
    history (it is brought up to date). See the module docstring.

    Raises
    ------
    DivergedError
        If a branch or tag of ``dst`` has changes ``src`` lacks (nothing is written).
    AlreadyExistsError
        If ``dst`` exists and is another repository (nothing is written).
    CorruptChunkError
        If a source object fails its checksum (the copy stops; nothing new is published).
    ConflictError
        If a branch was written at either end while the copy ran in a way it cannot carry
        (run it again: it resumes).
    """
    source = await _read_source(src)
    info = src.files.info
    if await dst.exists():
        await dst.open()
        if dst.files.info.root_version != info.root_version:
            raise AlreadyExistsError(
                f"{dst.name} exists under {dst.storage.url} and is not a copy of {src.name} "
                f"under {src.storage.url} (their first versions differ); copy to a new name, "
                f"or delete it first (hub rm {dst.name} --root {dst.storage.url})"
            )
        published = None
    else:
        published = RepositoryRecord(
            id=await _draft(dst, info.root_version),
            layout=info.layout,  # the records copied carry their layout's rules
            default_branch=info.default_branch,
            root_version=info.root_version,
            created=info.created,
        )
        dst.files.info = published
    try:
        copier = _Copier(source, dst, progress, existing=published is None)
        plan = _Plan()
        await copier.plan_versions(plan)
        await copier.plan_tags(plan)
        for head in source.heads.values():
            await copier.plan_branch(head, plan)
        # Planned, and refused if it must be, before the first write.
        if published is not None:
            # The draft's mark: its first object, by which a killed copy is found and resumed.
            await copier.copy_record("versions", info.root_version, required=False)
        await copier.copy_objects(plan.objects)
        await _bounded(functools.partial(copier.copy_version, v) for v in plan.versions)
        for tag in plan.tags:
            await copier.publish_tag(tag)
        default_first = sorted(plan.moves, key=lambda m: m.branch != info.default_branch)
        for move in default_first:
            await copier.move(move)
    finally:
        if published is not None:
            dst.files.info = None
    if published is not None:
        await _publish(dst, published)
    return copier.copied


async def shallow_copy(
    src: Repository, ref: str, dst: Repository, progress: Progress | None = None
) -> Copied:
    """Create ``dst`` holding only the state of ``src`` at ``ref``, as its first version.

    The first version holds every object of that state, bound again to it (payloads
    unchanged, checksums checked on the way) and is sealed; when ``ref`` is a tag, ``dst``
    gets a tag of that name on it. The default branch starts there, empty. Like a full copy,
    the repository is built in an unpublished folder and published by ``repo.json``; a copy
    of a sealed version (a tag, a version id) resumes where a killed one stopped.

    Raises
    ------
    AlreadyExistsError
        If ``dst`` exists.
    NotFoundError
        If ``ref`` does not exist.
    """
    from hubzarr.session import Session

    await src.open()
    if await dst.exists():
        raise AlreadyExistsError(
            f"{dst.name} exists under {dst.storage.url}; a copy of one state ({src.name}:{ref}) "
            "makes a new repository: copy to a new name, or copy the whole repository "
            f"({src.name}) to bring it up to date"
        )
    resolved = await src.resolve(ref)
    # A sealed state never changes, so its first version's id can be derived from it and a
    # killed copy found again; an open head's state changes, so each copy is a new one.
    first = _snapshot_id(resolved.version, 0) if resolved.sealed else new_version_id()
    session = Session(src.storage, src.name.with_ref(ref), read_only=True)
    entries = await session.entries()
    info = RepositoryRecord(
        id=await _draft(dst, first),
        layout=LAYOUT,
        default_branch=src.default_branch,
        root_version=first,
        created=time.time(),
    )
    dst.files.info = info
    try:
        record = VersionRecord(first, None, (), time.time())
        await dst.files.create_or_match(dst.files.version_path(first), record.to_dict())
        have = await dst.storage.list(dst.files.path("data", first))
        copies = [
            _ObjectCopy(
                entry.path,
                dst.files.data_path(first, key),
                entry.size,
                key in have,
                frame.binding(entry.location.version, key, entry.location.generation),
                frame.binding(first, key, 0),
                f"{src.name}:{ref} key {key!r}",
            )
            for key, entry in sorted(entries.items())
        ]
        source = _Source(src, {}, {}, {}, {})
        copier = _Copier(source, dst, progress, existing=False)
        await copier.copy_objects(copies)
        head = record.child(chained=not dst.sharded)
        await dst.files.create_record(dst.files.version_path(head.id), head.to_dict())
        contents = await dst.manifests.contents(first)
        seal = SealRecord(
            version=first,
            successor=head.id,
            branch=info.default_branch,
            time=time.time(),
            message=f"copied from {src.storage.url}::{src.name}:{ref}",
            author=author(),
        )
        with contextlib.suppress(AlreadyExistsError):
            await dst.files.create_record(dst.files.seal_path(first), seal.to_dict())
        with contextlib.suppress(AlreadyExistsError):
            await dst.files.create_record(
                dst.files.manifest_path(first), build(record, contents, None).to_dict()
            )
        path = dst.files.ref_path("branch", info.default_branch)
        await dst.files.write_record(path, BranchRef(head.id, base=first).to_dict(), durable=True)
        copier.copied.versions = 1
        copier.copied.refs = 1
        if resolved.kind == "tag":
            tag = await src.refs.read("tag", resolved.ref)
            assert isinstance(tag, TagRef)
            claim = NameClaim(TagRef(first, tag.time, tag.message)).to_dict()
            await dst.files.write_record(dst.files.claim_path(resolved.ref), claim)
            await dst.files.write_record(dst.files.ref_path("tag", resolved.ref), claim)
            copier.copied.refs += 1
    finally:
        dst.files.info = None
    await _publish(dst, info)
    return copier.copied


async def _publish(dst: Repository, info: RepositoryRecord) -> None:
    """Create ``repo.json``: the built repository becomes visible, whole."""
    try:
        await dst.files.create_record(dst.files.repo_json, info.to_dict())
    except AlreadyExistsError:
        found = await dst.files.read_info()
        if found is None or found.id != info.id:  # else a twin copy published this very folder
            raise AlreadyExistsError(
                f"{dst.name} was created under {dst.storage.url} while the copy ran; what the "
                "copy wrote is left for 'hub gc'"
            ) from None
    dst.files.info = info
