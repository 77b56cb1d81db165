"""What ``hub ls -l`` shows of a repository: its size, versions, refs and last change.

A summary costs one listing of the repository's folder (sizes and modification times: the
bytes stored, the version records, the newest change) and, beside it, the reads of its refs;
repositories are summarised concurrently, a bounded number at a time, so a root on an object
store holding many repositories is summarised in a few round trips per repository, none per
stored object beyond what the listing pages cost.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from hubzarr.errors import NotFoundError
from hubzarr.records import VERSION_ID
from hubzarr.versions import Repository

__all__ = ["RepoSummary", "summarize", "summarize_all"]

#: Repositories summarised at once: enough to hide an object store's latency, few enough not
#: to open a connection per repository on a root holding thousands.
_CONCURRENCY = 16


@dataclass(frozen=True, slots=True)
class RepoSummary:
    """A repository at a glance.

    Attributes
    ----------
    name : str
        ``user/name``.
    nbytes : int
        Bytes stored under the repository's folder: every version's data and records, and
        what garbage collection has yet to free (``hub gc``).
    objects : int
        Objects stored under the repository's folder.
    versions : int
        Versions: the sealed ones and each branch's open head (and, until garbage collection,
        those no ref reaches any more).
    branches : tuple of str
        The live branches, sorted.
    tags : tuple of str
        The live tags, sorted.
    last_change : datetime.datetime or None
        When the newest object of the repository (a write, a version, a seal, a ref) was
        stored, in UTC, as the storage reports it; ``None`` where the storage reports no
        modification times (some web servers).
    """

    name: str
    nbytes: int
    objects: int
    versions: int
    branches: tuple[str, ...]
    tags: tuple[str, ...]
    last_change: datetime | None


async def summarize(repo: Repository) -> RepoSummary:
    """Summarise one repository.

    Raises
    ------
    NotFoundError
        If the repository does not exist.
    FormatError
        If its ``repo.json`` or a ref's record is damaged.
    """
    listing, refs = await asyncio.gather(repo.storage.list_detailed(repo.base), repo.list_refs())
    home = f"{repo.incarnation}/"
    versions = 0
    newest = -math.inf
    for path, (_, mtime) in listing.items():
        # Only the live incarnation (and repo.json, which names it) says when the repository
        # changed; a deleted incarnation's leftovers still take space until gc frees them.
        if not (path.startswith(home) or path == "repo.json"):
            continue
        if mtime != math.inf:
            newest = max(newest, mtime)
        folder, _, record = path[len(home) :].partition("/")
        if folder == "versions" and record.endswith(".json") and VERSION_ID.fullmatch(record[:-5]):
            versions += 1
    return RepoSummary(
        name=str(repo.name),
        nbytes=sum(size for size, _ in listing.values()),
        objects=len(listing),
        versions=versions,
        branches=tuple(sorted(n for n, (kind, _) in refs.items() if kind == "branch")),
        tags=tuple(sorted(n for n, (kind, _) in refs.items() if kind == "tag")),
        last_change=datetime.fromtimestamp(newest, UTC) if newest > -math.inf else None,
    )


async def summarize_all(repos: Iterable[Repository]) -> list[RepoSummary]:
    """Summarise repositories concurrently, in the order given.

    A repository deleted meanwhile (after it was listed) is left out.

    Raises
    ------
    FormatError
        If a repository's ``repo.json`` or a ref's record is damaged.
    """
    limit = asyncio.Semaphore(_CONCURRENCY)

    async def one(repo: Repository) -> RepoSummary | None:
        async with limit:
            try:
                return await summarize(repo)
            except NotFoundError:
                return None

    found = await asyncio.gather(*(one(repo) for repo in repos))
    return [summary for summary in found if summary is not None]
