"""Moving data out of a hub: exports of one version to a plain zarr store or a ``.npy`` file
(imports read their sources through :mod:`hubzarr.imports`).

Exports copy stored objects byte for byte, without decoding: each object's payload (its
envelope's checksum verified) becomes the file zarr itself would have written at that key. The
store's metadata documents are written last, the root's at the very end, so an export that is
killed never leaves a store that opens; running it again skips the objects already there (each
was written whole: every backend replaces objects atomically) and finishes the job.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hubzarr.errors import AlreadyExistsError

if TYPE_CHECKING:
    from hubzarr.session import Session
    from hubzarr.storage import Storage

__all__ = ["CopyReport", "Progress", "export_zarr"]

#: ``progress(objects done, objects in all, bytes done, bytes in all)`` (bytes in all: ``0``
#: where it is not known ahead, as in an export).
Progress = Callable[[int, int, int, int], None]

#: Objects in flight on object stores (latency-bound); local writes are bound by the disk.
CONCURRENCY = 32


@dataclass(frozen=True, slots=True)
class CopyReport:
    """What a copy, import or export did.

    Attributes
    ----------
    source, destination : str
        As given.
    objects : int
        Objects written: chunks and metadata documents (an import: the arrays' chunks).
    bytes : int
        Bytes written (an import: the bytes of array data read from the file).
    skipped : int
        Objects the destination already held (a resumed copy).
    versions : int
        Versions created or copied.
    refs : int
        Branches and tags created or moved.
    seconds : float
        Wall time.
    """

    source: str
    destination: str
    objects: int
    bytes: int
    skipped: int
    versions: int
    refs: int
    seconds: float

    def __str__(self) -> str:
        if not (self.objects or self.versions or self.refs):
            held = f"all {self.skipped} objects" if self.skipped else "everything"
            return f"{self.destination} already holds {held}: nothing copied"
        done = f"{_count(self.objects, 'object')}, {_count(self.bytes, 'byte')}"
        if self.versions or self.refs:
            done += f", {_count(self.versions, 'version')}, {_count(self.refs, 'ref')}"
        done += f" in {self.seconds:.2f} s"
        if self.skipped:
            done += f" ({self.skipped} already there)"
        return f"{self.source} -> {self.destination}: {done}"


def _count(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


async def export_zarr(
    session: Session, dest: Storage, progress: Progress | None = None
) -> tuple[int, int, int]:
    """Write the version ``session`` reads as a plain zarr (format 2) store at ``dest``.

    The version's keys are walked a shard of its index at a time, in bounded memory whatever
    the number of chunks; progress reports ``0`` bytes in all (not known ahead). Resuming into
    a folder that already holds part of the export holds that folder's listing, and checks
    each object there by its size.

    Returns
    -------
    tuple of int
        Objects written, bytes written, objects skipped (already at ``dest``).

    Raises
    ------
    AlreadyExistsError
        If ``dest`` holds a zarr store already, or anything that is not part of this export
        (checked before anything is written).
    CorruptChunkError
        If a source object fails its checksum (the store's root metadata is then never
        written, so nothing opens).
    """
    from hubzarr.stores import is_metadata

    present = await dest.list("")
    if any(k in present for k in (".zarray", ".zgroup")):
        raise _not_empty(dest, "holds a zarr store, which")
    if present:
        # What is there must all be this export's: checked whole before the first write.
        foreign = set(present)
        _, batches = await session.key_batches()
        async for keys in batches:
            foreign.difference_update(keys)
        if foreign:
            raise _not_empty(dest, f"holds {min(foreign)!r}, which")
    total, batches = await session.key_batches()
    done = [0, 0, 0]  # objects, bytes, skipped

    async def copy(key: str) -> None:
        if key in present and present[key] == await session.size(key):
            done[2] += 1
            return
        payload = await session.read(key)
        if payload is None:  # deleted at a branch head since the listing
            return
        await dest.write(key, payload)
        done[0] += 1
        done[1] += len(payload)
        if progress is not None:
            progress(done[0], total - done[2], done[1], 0)

    limit = asyncio.Semaphore(CONCURRENCY)

    async def bounded(key: str) -> None:
        async with limit:
            await copy(key)

    metadata: list[str] = []
    async for keys in batches:
        metadata += filter(is_metadata, keys)
        await asyncio.gather(*(bounded(k) for k in keys if not is_metadata(k)))
    # Metadata after every chunk, deepest first, the root's last: a store opens only complete.
    for key in sorted(metadata, key=lambda k: (-k.count("/"), k)):
        await copy(key)
    return done[0], done[1], done[2]


def _not_empty(dest: Storage, what: str) -> AlreadyExistsError:
    return AlreadyExistsError(
        f"{dest.url} {what} this export would not write; export into a new or empty "
        "folder, or delete it first"
    )
