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

#: ``progress(objects done, objects in all, bytes done, bytes in all)``.
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
        done = f"{self.objects} objects, {self.bytes} bytes"
        if self.versions or self.refs:
            done += f", {self.versions} versions, {self.refs} refs"
        done += f" in {self.seconds:.2f} s"
        if self.skipped:
            done += f" ({self.skipped} already there)"
        return f"{self.source} -> {self.destination}: {done}"


async def export_zarr(
    session: Session, dest: Storage, progress: Progress | None = None
) -> tuple[int, int, int]:
    """Write the version ``session`` reads as a plain zarr (format 2) store at ``dest``.

    Returns
    -------
    tuple of int
        Objects written, bytes written, objects skipped (already at ``dest``).

    Raises
    ------
    AlreadyExistsError
        If ``dest`` holds a zarr store already, or anything that is not part of this export.
    CorruptChunkError
        If a source object fails its checksum (the store's root metadata is then never
        written, so nothing opens).
    """
    from hubzarr.frame import HEADER_SIZE
    from hubzarr.stores import is_metadata

    entries = await session.entries()
    present = await dest.list("")
    foreign = sorted(set(present) - set(entries))
    if foreign or any(k in present for k in (".zarray", ".zgroup")):
        what = f"holds {foreign[0]!r}, which" if foreign else "holds a zarr store, which"
        raise AlreadyExistsError(
            f"{dest.url} {what} this export would not write; export into a new or empty "
            "folder, or delete it first"
        )
    sizes = {key: entry.size - HEADER_SIZE for key, entry in entries.items()}
    todo = [key for key in entries if present.get(key) != sizes[key]]
    skipped = len(entries) - len(todo)
    total_bytes = sum(sizes[key] for key in todo)
    done = [0, 0]

    async def copy(key: str) -> None:
        payload = await session.read(key)
        if payload is None:  # deleted at a branch head since the listing
            return
        await dest.write(key, payload)
        done[0] += 1
        done[1] += len(payload)
        if progress is not None:
            progress(done[0], len(todo), done[1], total_bytes)

    limit = asyncio.Semaphore(CONCURRENCY)

    async def bounded(key: str) -> None:
        async with limit:
            await copy(key)

    chunks = [k for k in todo if not is_metadata(k)]
    await asyncio.gather(*(bounded(k) for k in chunks))
    # Metadata after every chunk, deepest first, the root's last: a store opens only complete.
    metadata = sorted((k for k in todo if is_metadata(k)), key=lambda k: (-k.count("/"), k))
    for key in metadata:
        await copy(key)
    return done[0], done[1], skipped
