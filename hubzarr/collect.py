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
head that was open when marking began is kept even if the head is sealed meanwhile. Records and
temporary files are kept at least :data:`RECORD_GRACE_S`, whatever the grace: a seal or a branch
in flight creates its new version's record before publishing it. The grace period must exceed
the clock skew between this machine and the storage's servers.

Only objects whose names the repository layout gives hubzarr's own objects are ever deleted
(:data:`_RECORD`, :data:`_INCARNATION_OBJECT`, ``data/<version id>/...``): a repository's folder
may also hold a second hub root nested in it, a user's notes or a planted link, and those are
left alone. Listings never follow a link (see :class:`hubzarr.storage.LocalStorage`), so a
link in a repository's folder is neither deleted nor entered.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

from hubzarr.errors import NotFoundError
from hubzarr.names import REF
from hubzarr.records import INCARNATION_ID, VERSION_ID, split_generation
from hubzarr.storage import TMP_SUFFIX, Storage
from hubzarr.versions import Repository

__all__ = ["DEFAULT_GRACE_S", "GCReport", "collect"]

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
    rf"(?:(?:versions|seals|manifests|index)/{_VERSION}\.json"
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
    """

    objects: int
    bytes: int
    versions: int
    kept_objects: int
    dry_run: bool


def version_time(version: str) -> float:
    """When a version was created, from its id (seconds since the epoch)."""
    return int(version[:12], 16) / 1000


async def _reachable(repo: Repository) -> tuple[set[str], set[str]]:
    """Return (open heads, sealed versions) reachable from the live refs."""
    refs = await repo.list_refs()
    heads: set[str] = set()
    starts: list[str] = []
    for kind, version in refs.values():
        if kind == "branch":
            try:
                path = await repo.successors(version)  # finishes half-done seals on the way
            except NotFoundError:
                continue  # deleted while we looked
            heads.add(path[-1])
            starts += path[:-1]
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
    sealed: set[str],
    cutoffs: tuple[float, float],
) -> tuple[dict[str, int], int]:
    """``{path: size}`` of the objects in ``data/<version>/`` that nothing keeps and are older
    than the cutoffs (objects, temporary files), and how many objects it keeps."""
    cutoff, record_cutoff = cutoffs
    listed = await repo.storage.list_detailed(repo.path("data", version), temporaries=True)
    named = await _named_objects(repo, version) if version in sealed else set()
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


async def collect(repo: Repository, *, grace: float, dry_run: bool) -> GCReport:
    """Collect the garbage of one repository (see the module docstring).

    Parameters
    ----------
    repo : Repository
        The repository (opened or not).
    grace : float
        Seconds: nothing modified, and no version created, more recently is collected.
    dry_run : bool
        Only report what would be freed.
    """
    await repo.open()
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
    heads, sealed = await _reachable(repo)
    live = heads | sealed

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
            repo, version, heads, sealed, (cutoff, record_cutoff)
        )
        kept += kept_here
        await sweep(garbage)

    versions: set[str] = set()
    for folder in ("versions", "seals", "manifests", "index"):
        listed = await storage.list_detailed(repo.path(folder), temporaries=True)
        for name, (size, mtime) in listed.items():
            record = _RECORD.fullmatch(name)
            if record is None:
                continue  # not a record hubzarr wrote
            version = record[1]
            if version in live or mtime >= record_cutoff or _young(version, record_cutoff):
                continue
            doomed[repo.path(folder, name)] = size
            versions.add(version)

    if repo.sharded:
        doomed.update(await _unnamed_shards(repo, sealed, record_cutoff))

    # Folders of deleted incarnations: a deletion removes repo.json first, then the folder.
    # Only folders named like an incarnation, and in them only hubzarr's objects: anything
    # else in the repository's folder (a nested hub root, a user's files) is not ours.
    for entry in await storage.list_dir(repo.base):
        if entry == repo.incarnation or not INCARNATION_ID.fullmatch(entry):
            continue
        listed = await storage.list_detailed(f"{repo.base}/{entry}", temporaries=True)
        own = {n: found for n, found in listed.items() if _INCARNATION_OBJECT.fullmatch(n)}
        if own and all(mtime < record_cutoff for _, mtime in own.values()):
            doomed.update((f"{repo.base}/{entry}/{n}", size) for n, (size, _) in own.items())

    await sweep(doomed)
    return GCReport(
        objects=freed[0],
        bytes=freed[1],
        versions=len(versions),
        kept_objects=kept,
        dry_run=dry_run,
    )


async def _delete(storage: Storage, sizes: dict[str, int]) -> None:
    paths = sorted(sizes)
    for start in range(0, len(paths), _BATCH):
        await asyncio.gather(*(storage.delete(p) for p in paths[start : start + _BATCH]))


def _young(version: str, cutoff: float) -> bool:
    try:
        return version_time(version) >= cutoff
    except ValueError:
        return False
