"""Garbage collection: free the objects no ref can reach any more.

What is kept (*marked*), from every live branch and tag:

- every object of a branch's open head (all generations: readers find the newest by probing
  forward from generation 0, so the sequence must stay whole);
- for every sealed version on the way back from a ref to the first version, the objects its
  manifest names (a sealed version can be opened by its id, so each one's state is kept);
- the records (version, seal, manifest, index root) of all those versions, and the index
  shards their roots name (layout 3 and newer; a version shares its parent's unchanged shards).

A branch's open head that holds generations superseded by newer ones (a chunk rewritten
several times since the last tag) is sealed first, with a message saying so: the sealed
version's manifest names only the newest generation of each key, which makes the others
collectable (an open head has to keep them all).

What is freed (*swept*), only if older than the grace period: objects under ``data/`` nothing
above names (a deleted ref's versions, generations superseded before a seal, a write that landed
in a head after it was sealed and was repeated in its successor, temporary files of a killed
local writer), records of unreachable versions (the successor record of a sealer that lost a
race), index shards no kept root names, and the folders of deleted incarnations of the
repository.

The sweep of ``data/`` goes one version folder at a time (a listing of it, and that version's
manifest), so gc holds one version's own objects at once, whatever the repository's history.

Concurrent writers and taggers are safe: a version created after ``now - grace`` (its id starts
with its creation time) and an object modified after it are never swept, and every object of a
head that was open when marking began is kept even if the head is sealed meanwhile. A version
created less than :data:`RECORD_GRACE_S` ago counts as reachable whatever the grace, with what
it starts from: an operation in flight (a seal, a branch or tag by id, a revert's new version)
creates a version's record before a ref names it. Before the objects of a version no ref
reaches are freed, it gets a mark (``expired/<version>.json``, ``unreachable``) behind the
same fence as retention's below, so a tag or branch made at it by id is refused, or stops gc
before it deletes anything; the mark stays one collection longer than the version's records.
The grace period must exceed the clock skew between this machine and the storage's servers.

Retention (``expire_before``, ``keep_last``; layout 3 and newer) drops the *state* of old
untagged sealed versions: their records and seals stay, so ``hub log`` still lists them, but a
mark ``expired/<version>.json`` is written for each, and then their manifests and index roots,
the index shards only they named, and the objects under ``data/<version>/`` that no version
kept names are freed. A version stays if a tag names it, if a branch needs it (the version its
open head starts from, and any its ref still passes through), if it was sealed on or after
``expire_before`` or is a branch's newest one sealed before it (so the branch as of any time
from ``expire_before`` on can still be read), if it is among the ``keep_last`` newest sealed
versions of a branch's history, or if it is younger than the grace period. Marks are written
before the refs are listed once more: a tag or branch made from a version id while gc ran is
seen, and its version's mark is taken back (:meth:`~hubzarr.versions.Repository.tag` checks
for a mark before it publishes). What an expired version wrote that later versions still name
is kept: each object is looked up in the indexes of the versions kept.

Only objects whose names the repository layout gives hubzarr's own objects are ever deleted
(:data:`_RECORD`, :data:`_INCARNATION_OBJECT`, ``data/<version id>/...``): a repository's folder
may also hold a second hub root nested in it, a user's notes or a planted link, and those are
left alone. Listings never follow a link (see :class:`hubzarr.storage.LocalStorage`), so a
link in a repository's folder is neither deleted nor entered.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from hubzarr.errors import ConflictError, InvalidArgumentError, NotFoundError
from hubzarr.index import VersionIndex
from hubzarr.names import REF
from hubzarr.records import (
    INCARNATION_ID,
    VERSION_ID,
    ExpiryRecord,
    Location,
    SealRecord,
    VersionRecord,
    split_generation,
)
from hubzarr.storage import TMP_SUFFIX, Storage
from hubzarr.versions import Repository

__all__ = ["DEFAULT_GRACE_S", "GCReport", "Retention", "collect"]

#: Objects younger than this are never collected: writes in flight, seals in progress.
DEFAULT_GRACE_S = 3600.0
#: Version records and temporary files are kept at least this long whatever the grace: an
#: operation in flight (a seal, a branch, a local write) may be about to use them.
RECORD_GRACE_S = 600.0
_BATCH = 64

# -- the names gc may delete -----------------------------------------------------------------
#
# The grammar of the names hubzarr writes inside a repository's folder, in one place: version
# and incarnation ids and ref names come from the modules that make them (versions.py,
# names.py), so a change of either shows here.

_VERSION = VERSION_ID.pattern
#: The temporary file a killed local writer leaves beside ``name``:
#: ``name.<32 hex digits>.hubzarr-tmp`` (see :func:`hubzarr.storage._write_in`).
_TEMPORARY = rf"(?:\.[0-9a-f]{{32}}{re.escape(TMP_SUFFIX)})?"
#: A version's record, seal or manifest, relative to ``versions/``, ``seals/`` or
#: ``manifests/``; group 1 is the version id.
_RECORD = re.compile(rf"({_VERSION})\.json{_TEMPORARY}", re.ASCII)
#: An index shard's name: ``<version>-<number>`` (layout 4), or 32 hex digits, its content's
#: hash (layout 3).
_SHARD_NAME = rf"(?:{_VERSION}-(?:0|[1-9][0-9]{{0,12}})|[0-9a-f]{{32}})"
#: An index shard, relative to ``shards/``; group 1 is its name.
_SHARD = re.compile(rf"({_SHARD_NAME})\.json{_TEMPORARY}", re.ASCII)
#: An object inside an incarnation folder, relative to it.
_INCARNATION_OBJECT = re.compile(
    rf"(?:(?:versions|seals|manifests|index|expired)/{_VERSION}\.json"
    rf"|shards/{_SHARD_NAME}\.json"
    rf"|refs/(?:branches|tags|names)/{REF.pattern}\.json"
    rf"){_TEMPORARY}"
    rf"|data/{_VERSION}/.+",
    re.ASCII,
)


def _now() -> float:
    return time.time()


@dataclass(frozen=True, slots=True)
class GCReport:
    """What a garbage collection freed (or, in a dry run, would free).

    Attributes
    ----------
    objects : int
        Objects deleted (or to delete).
    bytes : int
        Their total size.
    versions : int
        Unreachable versions whose records were deleted.
    kept_objects : int
        Objects left in place: reachable, or younger than the grace period.
    dry_run : bool
        Whether nothing was deleted.
    expired : int
        Versions whose state retention dropped now (or would drop): still listed by
        ``hub log``, no longer readable.
    """

    objects: int
    bytes: int
    versions: int
    kept_objects: int
    dry_run: bool
    expired: int = 0


@dataclass(frozen=True, slots=True)
class Retention:
    """Which old untagged sealed versions gc drops (see the module docstring). A version
    stays if any rule keeps it.

    Attributes
    ----------
    expire_before : datetime.datetime or None
        Drop versions sealed before this time (with a zone), except each branch's newest one
        sealed before it.
    keep_last : int or None
        Keep the newest ``keep_last`` (>= 1) sealed versions of each branch's history; with
        ``expire_before`` too, a version either rule keeps stays.
    """

    expire_before: datetime | None = None
    keep_last: int | None = None

    def check(self) -> None:
        """Refuse rules that name no versions to keep.

        Raises
        ------
        InvalidArgumentError
            If neither rule is given, ``keep_last`` is not an int >= 1, or ``expire_before``
            is not a datetime with a zone.
        """
        if self.expire_before is None and self.keep_last is None:
            raise InvalidArgumentError(
                "retention needs expire_before (a time) or keep_last (a count), or both"
            )
        keep = self.keep_last
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
            raise InvalidArgumentError(
                f"keep_last must be a whole number >= 1 (each branch keeps at least the "
                f"version its head starts from), not {keep!r}"
            )
        when = self.expire_before
        if when is not None and (
            not isinstance(when, datetime) or when.tzinfo is None or when.utcoffset() is None
        ):
            raise InvalidArgumentError(
                f"expire_before must be a datetime with a time zone, not {when!r}: as "
                "datetime(2026, 1, 2, tzinfo=datetime.timezone.utc), or 2026-01-02T00:00Z on "
                "the command line"
            )


def version_time(version: str) -> float:
    """When a version was created, from its id (seconds since the epoch)."""
    return int(version[:12], 16) / 1000


async def _young_records(repo: Repository, record_cutoff: float) -> dict[str, VersionRecord]:
    """The records of the versions created after ``record_cutoff``: operations in flight (a
    branch, a seal, a merge) may be about to name them, so they, and what they start from,
    count as reachable."""
    listed = await repo.storage.list(repo.path("versions"))
    ids = sorted(
        record[1]
        for name in listed
        if (record := _RECORD.fullmatch(name)) is not None and _young(record[1], record_cutoff)
    )
    records = await asyncio.gather(*map(repo.read_version, ids))
    return {v: r for v, r in zip(ids, records, strict=True) if r is not None}


async def _ref_paths(repo: Repository) -> tuple[list[str], list[list[str]]]:
    """The versions the live tags name, and for each live branch the versions from the one
    its ref names to its open head (:meth:`~hubzarr.versions.Repository.successors`, which
    finishes half-done seals on the way)."""
    tags: list[str] = []
    paths: list[list[str]] = []
    for kind, version in (await repo.list_refs()).values():
        if kind == "tag":
            tags.append(version)
            continue
        try:
            paths.append(await repo.successors(version))
        except NotFoundError:
            continue  # deleted while we looked
    return tags, paths


async def _reachable(repo: Repository, record_cutoff: float) -> tuple[set[str], set[str]]:
    """Return (open heads, sealed versions) reachable from the live refs and the versions
    younger than ``record_cutoff``."""
    starts, paths = await _ref_paths(repo)
    heads = {path[-1] for path in paths}
    starts += [v for path in paths for v in path[:-1]]
    young = (await _young_records(repo, record_cutoff)).keys() - heads
    for version, seal in (await _seals(repo, young)).items():
        if seal is None:
            heads.add(version)  # open, or in flight: every object of it is kept
        else:
            starts.append(version)
    sealed: set[str] = set()
    todo = list(starts) + list(heads)
    while todo:
        version = todo.pop()
        record = await repo.read_version(version)
        if record is None or record.parent is None or record.parent in sealed:
            continue
        sealed.add(record.parent)
        todo.append(record.parent)
    sealed.update(starts)
    return heads, sealed - heads


async def _named_objects(repo: Repository, version: str) -> set[str]:
    """Return the names (below ``data/<version>/``) of every object the sealed ``version``'s
    manifest names."""
    manifest = await repo.read_manifest(version)
    return {loc.object_name(key) for key, loc in manifest.locations().items()}


async def _data_garbage(
    repo: Repository,
    version: str,
    heads: set[str],
    named_by: Callable[[Iterable[str]], Awaitable[set[str]]],
    cutoffs: tuple[float, float],
) -> tuple[dict[str, int], int]:
    """``{path: size}`` of the objects in ``data/<version>/`` that nothing keeps and are older
    than the cutoffs (objects, temporary files), and how many objects it keeps. ``named_by``
    gives, of the names listed, those that sealed versions kept name."""
    cutoff, record_cutoff = cutoffs
    listed = await repo.storage.list_detailed(repo.path("data", version), temporaries=True)
    named = await named_by(listed) if version not in heads else set()
    garbage: dict[str, int] = {}
    for name, (size, mtime) in listed.items():
        limit = record_cutoff if name.endswith(TMP_SUFFIX) else cutoff
        old = mtime < limit and not _young(version, limit)
        # An open head keeps everything but a killed writer's temporary files; a sealed
        # version keeps what its manifest names.
        reachable = not name.endswith(TMP_SUFFIX) if version in heads else name in named
        if old and not reachable:
            garbage[repo.path("data", version, name)] = size
    return garbage, len(listed) - len(garbage)


async def _still_named(indexes: list[VersionIndex], version: str, names: Iterable[str]) -> set[str]:
    """Of the objects ``names`` under ``data/<version>/`` (an expired version), those a kept
    version's index names: each one is looked up in the kept indexes (shards they share are
    read once: the process keeps them)."""
    kept: set[str] = set()
    for name in names:
        if name.endswith(TMP_SUFFIX):
            continue
        key, generation = split_generation(name)
        here = Location(version, generation)
        for index in indexes:
            if await index.get(key) == here:
                kept.add(name)
                break
    return kept


async def _seals(repo: Repository, versions: Iterable[str]) -> dict[str, SealRecord | None]:
    """Each version's seal (``None``: not sealed), read so many at a time."""
    ids = sorted(versions)
    seals: dict[str, SealRecord | None] = {}
    for start in range(0, len(ids), _BATCH):
        batch = ids[start : start + _BATCH]
        seals.update(zip(batch, await asyncio.gather(*map(repo.read_seal, batch)), strict=True))
    return seals


async def _seal_times(repo: Repository, versions: Iterable[str]) -> dict[str, float]:
    """When each version was sealed (its creation time where no seal was recorded)."""
    return {
        version: seal.time if seal is not None else version_time(version)
        for version, seal in (await _seals(repo, versions)).items()
    }


async def _needed(repo: Repository, record_cutoff: float) -> tuple[set[str], list[str]]:
    """The sealed versions the refs need as they are (tags' versions, the versions branch refs
    pass through and their heads start from) and those versions younger than
    ``record_cutoff`` start from (a branch in flight); and the open heads."""
    young = await _young_records(repo, record_cutoff)
    needed = {r.parent for r in young.values() if r.parent is not None}
    tags, paths = await _ref_paths(repo)
    needed.update(tags)
    for path in paths:
        needed.update(path[:-1])
        record = await repo.read_version(path[-1])
        if record is not None and record.parent is not None:
            needed.add(record.parent)
    return needed, [path[-1] for path in paths]


async def _expiring(
    repo: Repository, sealed: set[str], retention: Retention, cutoffs: tuple[float, float]
) -> set[str]:
    """The sealed versions ``retention`` drops: not needed by a ref, kept by no rule, and
    sealed before the grace period (``cutoffs``: of objects, of records)."""
    cutoff, record_cutoff = cutoffs
    keep, heads = await _needed(repo, record_cutoff)
    before = None if retention.expire_before is None else retention.expire_before.timestamp()
    for head in heads:
        rank, past = 0, before is None
        async for version, _, seal in repo.history(head):
            if seal is None:
                continue  # the open head
            rank += 1
            last = retention.keep_last is not None and rank <= retention.keep_last
            if last or not past:
                keep.add(version)  # sealed since `before`, or the state as of `before`
            past = past or (before is not None and seal.time < before)
            if past and not last:
                break
    times = await _seal_times(repo, sealed - keep)
    return {
        version
        for version, sealed_at in times.items()
        if sealed_at < cutoff
        and version_time(version) < record_cutoff  # not made by an operation in flight
        and (before is None or sealed_at < before)
    }


async def _drop(
    repo: Repository,
    sealed: set[str],
    live: set[str],
    retention: Retention | None,
    times: tuple[float, float, float],
    *,
    dry_run: bool,
) -> tuple[set[str], set[str], set[str], set[str]]:
    """Return the versions marked (before and now), those expired now, those no ref reaches
    marked now (whose objects go now, and their records unless linked), and those linked (of
    the versions no ref reaches, the heads whose seals lead to a live version: their records
    and seals stay); unless ``dry_run``, the marks are written. ``times``: now, and the
    cutoffs of objects and of records."""
    now, cutoff, record_cutoff = times
    if not repo.sharded:
        return set(), set(), set(), set()
    expired = await repo.expired_versions()
    new: set[str] = set()
    if retention is not None:
        new = await _expiring(repo, sealed - expired, retention, (cutoff, record_cutoff))
        new -= expired
        # Every version kept has its index root (a version sealed by a finisher that
        # stopped has its root derived from its ancestors': before they go).
        for version in sorted(sealed - expired - new):
            await repo.sealed_index(version)
    listed = await repo.storage.list(repo.path("versions"))
    orphans = {
        record[1]
        for name in listed
        if (record := _RECORD.fullmatch(name)) is not None and not _young(record[1], record_cutoff)
    }
    orphans -= live
    linked = await _linked(repo, live, orphans)
    orphans -= expired
    if dry_run:
        return expired | new, new, set(), linked
    # The versions no ref reaches whose objects go now are marked too, behind the same fence:
    # a tag or branch made at one of them by id is refused, or seen.
    new = await _mark_expired(repo, new, orphans, (now, record_cutoff))
    return expired | new, new, orphans, linked


async def _linked(repo: Repository, live: set[str], unreachable: set[str]) -> set[str]:
    """Of ``unreachable``, the heads whose seals lead, successor by successor, to a live
    version (a head a revert, merge or copy moved its branch past): a handle opened at one
    follows that chain to its branch's head."""
    successor = {
        version: seal.successor
        for version, seal in (await _seals(repo, unreachable)).items()
        if seal is not None and seal.successor is not None
    }
    linked: set[str] = set()
    while True:
        more = {v for v, s in successor.items() if v not in linked and (s in live or s in linked)}
        if not more:
            return linked
        linked |= more


async def _mark_expired(
    repo: Repository, versions: set[str], orphans: set[str], times: tuple[float, float]
) -> set[str]:
    """Write the marks of ``versions`` (retention) and ``orphans`` (no ref reaches them: their
    objects are about to be freed), then list the refs once more and take back the marks of
    versions a ref made meanwhile needs; return the versions expired.

    Raises
    ------
    ConflictError
        If a ref made meanwhile needs an orphan (its history is not marked kept: nothing is
        deleted, and gc is to run again).
    """
    now, record_cutoff = times
    marks = [ExpiryRecord(v, now) for v in sorted(versions)]
    marks += [ExpiryRecord(v, now, unreachable=True) for v in sorted(orphans)]
    for start in range(0, len(marks), _BATCH):
        await asyncio.gather(
            *(
                repo.files.create_or_match(repo.files.expiry_path(m.version), m.to_dict())
                for m in marks[start : start + _BATCH]
            )
        )
    needed, _ = await _needed(repo, record_cutoff)
    spared = (versions | orphans) & needed
    if spared & orphans:
        # The ancestors of the orphan a ref now names are marked too: every mark goes back.
        await _delete(repo.storage, dict.fromkeys(map(repo.files.expiry_path, orphans), 0))
        raise ConflictError(
            f"a tag or branch of {repo.name} was made at {', '.join(sorted(spared & orphans))} "
            "while gc ran, which no ref reached when it began; nothing was deleted: run gc again"
        )
    await _delete(repo.storage, dict.fromkeys(map(repo.files.expiry_path, spared), 0))
    return versions - spared


async def _unnamed_shards(repo: Repository, sealed: Iterable[str], cutoff: float) -> dict[str, int]:
    """``{path: size}`` of the index shards older than ``cutoff`` that no root of the sealed
    versions names: those of versions collected, and of a finisher that lost its race. (A
    version whose root was never written names none: its root, when derived, names its
    parent's shards or new ones.)"""
    names: set[str] = set()
    for version in sealed:
        root = await repo.index_root(version)
        if root is not None:
            names.update(root.name(i) for i in range(root.shards))
    listed = await repo.storage.list_detailed(repo.path("shards"), temporaries=True)
    unnamed: dict[str, int] = {}
    for name, (size, mtime) in listed.items():
        shard = _SHARD.fullmatch(name)
        if shard is not None and shard[1] not in names and mtime < cutoff:
            unnamed[repo.path("shards", name)] = size
    return unnamed


_SEAL_MESSAGE = "gc: sealed so that rewrites superseded in this version can be freed"


async def _superseded_in_heads(repo: Repository, cutoff: float) -> list[tuple[str, str, int]]:
    """Return ``(branch, path, size)`` of every generation in a branch's open head that a newer
    one of the same key superseded before ``cutoff``.

    An open head must keep every generation (readers probe the sequence), so these are freed
    by sealing the head: its manifest names only the newest generation of each key.
    """
    found: list[tuple[str, str, int]] = []
    for branch, (kind, version) in sorted((await repo.list_refs()).items()):
        if kind != "branch":
            continue
        try:
            head = await repo.current_head(version)
        except NotFoundError:
            continue  # deleted while we looked
        listed = await repo.storage.list_detailed(repo.path("data", head))
        newest: dict[str, int] = {}
        for name in listed:
            key, generation = split_generation(name)
            newest[key] = max(newest.get(key, 0), generation)
        for name, (size, mtime) in listed.items():
            key, generation = split_generation(name)
            if generation < newest[key] and mtime < cutoff:
                found.append((branch, repo.path("data", head, name), size))
    return found


async def collect(
    repo: Repository, *, grace: float, dry_run: bool, retention: Retention | None = None
) -> GCReport:
    """Collect the garbage of one repository (see the module docstring).

    Parameters
    ----------
    repo : Repository
        The repository (opened or not).
    grace : float
        Seconds: nothing modified, and no version created, more recently is collected.
    dry_run : bool
        Only report what would be freed.
    retention : Retention or None
        Also drop the state of old untagged sealed versions (layout 3 and newer).

    Raises
    ------
    InvalidArgumentError
        If ``retention`` is asked of a layout 2 repository (nothing is deleted).
    """
    await _check_retention(repo, retention)
    sealing: set[str] = set()
    now = _now()
    # Object stores report modification times to the second, from the server's clock.
    slack = repo.storage.clock_slack_s
    cutoff = now - grace - slack
    record_cutoff = now - max(grace, RECORD_GRACE_S) - slack
    storage = repo.storage
    doomed: dict[str, int] = {}
    for branch, path, size in await _superseded_in_heads(repo, cutoff):
        if dry_run:
            doomed[path] = size
        else:
            sealing.add(branch)
    for branch in sorted(sealing):
        await repo.seal(branch, message=_SEAL_MESSAGE)
    heads, sealed = await _reachable(repo, record_cutoff)
    live = heads | sealed
    marked, new, orphans, linked = await _drop(
        repo, sealed, live, retention, (now, cutoff, record_cutoff), dry_run=dry_run
    )
    expired = marked & sealed  # (the others are orphans: no version kept names them)
    kept_sealed = sealed - expired
    kept_indexes: list[VersionIndex] | None = None

    async def named_by(version: str, names: Iterable[str]) -> set[str]:
        nonlocal kept_indexes
        if version in kept_sealed:
            return await _named_objects(repo, version)
        if version not in expired:
            return set()
        if kept_indexes is None:
            kept_indexes = [await repo.sealed_index(v) for v in sorted(kept_sealed)]
        return await _still_named(kept_indexes, version, names)

    # Version folder by version folder: what gc holds at once is one version's own objects
    # and its manifest, whatever the size of the repository and its history.
    kept = 0
    freed = [0, 0]

    async def sweep(paths: dict[str, int]) -> None:
        freed[0] += len(paths)
        freed[1] += sum(paths.values())
        if not dry_run:
            await _delete(storage, paths)

    for version in sorted(await storage.list_dir(repo.path("data"))):
        if not VERSION_ID.fullmatch(version):
            continue  # not a folder hubzarr wrote: never ours to delete
        garbage, kept_here = await _data_garbage(
            repo, version, heads, functools.partial(named_by, version), (cutoff, record_cutoff)
        )
        kept += kept_here
        await sweep(garbage)

    # (The marks of orphans stay until a later gc: a tagger that read an orphan's record
    # before gc deleted it must find its mark.)
    records, versions = await _dead_records(
        repo, (live, linked), (marked, new, orphans), record_cutoff
    )
    doomed.update(records)
    if repo.sharded:
        doomed.update(await _unnamed_shards(repo, kept_sealed, record_cutoff))
    doomed.update(await _old_incarnations(repo, record_cutoff))
    await sweep(doomed)
    return GCReport(
        objects=freed[0],
        bytes=freed[1],
        versions=len(versions),
        kept_objects=kept,
        dry_run=dry_run,
        expired=len(new),
    )


async def _check_retention(repo: Repository, retention: Retention | None) -> None:
    """Open ``repo``; refuse ``retention`` if its rules are malformed or the layout keeps each
    version's state as a chain of manifests."""
    if retention is not None:
        retention.check()
    await repo.open()
    if retention is not None and not repo.sharded:
        raise InvalidArgumentError(
            f"{repo.name} is stored in layout {repo.layout}, where each version's state is "
            "built from its ancestors' manifests, so no old version can be dropped: copy it "
            "to a new name with hub cp NAME:BRANCH NEW (written in the current layout) and "
            "expire versions there"
        )


async def _dead_records(
    repo: Repository,
    kept: tuple[set[str], set[str]],
    marks: tuple[set[str], set[str], set[str]],
    record_cutoff: float,
) -> tuple[dict[str, int], set[str]]:
    """``{path: size}`` of the records of unreachable versions older than the cutoff, and of
    the manifests and index roots of expired ones; and the unreachable versions whose records
    go. ``kept``: the live versions, and the linked ones (whose records, seals and marks
    stay); ``marks``: the versions marked, those expired now, and the orphans marked now
    (whose marks stay)."""
    (live, linked), (expired, new, fresh) = kept, marks
    doomed: dict[str, int] = {}
    versions: set[str] = set()
    for folder in ("versions", "seals", "manifests", "index", "expired"):
        # An expired version keeps its record and seal (the history lists it), not its state.
        keep = live - expired if folder in ("manifests", "index") else live | linked
        listed = await repo.storage.list_detailed(repo.path(folder), temporaries=True)
        for name, (size, mtime) in listed.items():
            record = _RECORD.fullmatch(name)
            if record is None or record[1] in keep:
                continue  # not a record hubzarr wrote, or one kept
            if folder == "expired" and record[1] in fresh:
                continue
            version = record[1]
            # The state of a version expired now was sealed before the grace period began.
            if version not in new and (mtime >= record_cutoff or _young(version, record_cutoff)):
                continue
            doomed[repo.path(folder, name)] = size
            if folder == "versions":
                versions.add(version)
    return doomed, versions


async def _old_incarnations(repo: Repository, record_cutoff: float) -> dict[str, int]:
    """``{path: size}`` of hubzarr's objects in the folders of deleted incarnations (a
    deletion removes repo.json first, then the folder). Only folders named like an
    incarnation, and in them only hubzarr's objects: anything else in the repository's folder
    (a nested hub root, a user's files) is not ours."""
    doomed: dict[str, int] = {}
    for entry in await repo.storage.list_dir(repo.base):
        if entry == repo.incarnation or not INCARNATION_ID.fullmatch(entry):
            continue
        listed = await repo.storage.list_detailed(f"{repo.base}/{entry}", temporaries=True)
        own = {n: found for n, found in listed.items() if _INCARNATION_OBJECT.fullmatch(n)}
        if own and all(mtime < record_cutoff for _, mtime in own.values()):
            doomed.update((f"{repo.base}/{entry}/{n}", size) for n, (size, _) in own.items())
    return doomed


async def _delete(storage: Storage, sizes: dict[str, int]) -> None:
    paths = sorted(sizes)
    for start in range(0, len(paths), _BATCH):
        await asyncio.gather(*(storage.delete(p) for p in paths[start : start + _BATCH]))


def _young(version: str, cutoff: float) -> bool:
    try:
        return version_time(version) >= cutoff
    except ValueError:
        return False
