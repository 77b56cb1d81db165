"""Checking every object of a version: checksums, metadata, and that chunks decompress.

:func:`verify` reads each object a version holds through its store, so each read checks the
object's CRC-32C (a truncated, emptied or bit-flipped object is a :class:`CorruptChunkError`).
The metadata of every array and group, at any depth of a group, is validated as
:func:`hubzarr.metadata.open_node` does (``.zarray``, ``.zgroup``, ``.zattrs``), and each chunk
of a valid array is decompressed with that array's codecs and its length compared with the
chunk's, which catches an object whose checksum is right but whose content is not a chunk
(written by another tool, say). A chunk belongs to the array whose key is the longest prefix of
its own, so chunks of nested arrays and ``/``-separated chunk keys are checked too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from hubzarr.chunks import Layout
from hubzarr.errors import HubError
from hubzarr.metadata import check_stored_metadata
from hubzarr.stores import HubStore, is_metadata

__all__ = ["Problem", "VerifyReport", "verify_store"]

#: How many objects are read at once.
_CONCURRENCY = 16


@dataclass(frozen=True, slots=True)
class Problem:
    """One object that failed verification.

    Attributes
    ----------
    key : str
        The zarr key.
    message : str
        What is wrong, and what to do.
    """

    key: str
    message: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of :func:`hubzarr.verify`.

    Attributes
    ----------
    name : str
        The repository and ref verified.
    version : str
        The version id verified.
    objects : int
        Objects read.
    bytes : int
        Their total stored size.
    problems : tuple of Problem
        Every object that failed, sorted by key.
    """

    name: str
    version: str
    objects: int
    bytes: int
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        """Whether every object passed."""
        return not self.problems


def _array_of(key: str, layouts: dict[str, Layout]) -> Layout | None:
    """The layout of the array ``key`` is a chunk of (the longest array path prefixing it)."""
    parts = key.split("/")
    if parts[-1].startswith(".z"):
        return None  # metadata, not a chunk
    for end in range(len(parts) - 1, -1, -1):
        layout = layouts.get("/".join(parts[:end]))
        if layout is not None:
            return layout
    return None


async def verify_store(
    store: HubStore, progress: Callable[[int, int], None] | None = None
) -> VerifyReport:
    """Verify every object ``store`` holds at its version (see the module docstring).

    Parameters
    ----------
    store : HubStore
        The repository at a ref.
    progress : callable, optional
        Called as ``progress(done, total)`` after each object.
    """
    session = store.session
    version = (await session.resolved()).version
    total, batches = await session.key_batches()
    problems: list[Problem] = []
    nbytes = 0
    layouts: dict[str, Layout] = {}
    done = 0
    limit = asyncio.Semaphore(_CONCURRENCY)

    async def read(key: str) -> memoryview | None:
        nonlocal done, nbytes
        async with limit:
            try:
                payload = await session.read(key)
            except HubError as exc:
                problems.append(Problem(key, str(exc)))
                payload = None
            if payload is not None:
                nbytes += payload.nbytes
                layout = _array_of(key, layouts)
                if layout is not None:
                    why = await asyncio.to_thread(layout.problem, payload)
                    if why is not None:
                        problems.append(Problem(key, f"{_where(store, version, key)} {why}"))
            done += 1
            if progress is not None:
                progress(done, total)
            return payload

    # Metadata first: an array's says how the chunks under it decode.
    metadata = sorted(k for k in await session.metadata_keys() if is_metadata(k))
    for key, raw in zip(metadata, await asyncio.gather(*(read(k) for k in metadata)), strict=True):
        if raw is None:
            continue
        try:
            layout = check_stored_metadata(
                key, bytes(raw), f"{key} of {store.name} (version {version})"
            )
        except HubError as exc:
            problems.append(Problem(key, str(exc)))
            continue
        if layout is not None:
            layouts[layout.path] = layout
    # Then the chunks, a shard of the index at a time: memory stays bounded at any size.
    async for batch in batches:
        await asyncio.gather(*(read(k) for k in batch if not is_metadata(k)))
    return VerifyReport(
        name=str(store.name),
        version=version,
        objects=done,
        bytes=nbytes,
        problems=tuple(sorted(problems, key=lambda p: p.key)),
    )


def _where(store: HubStore, version: str, key: str) -> str:
    return f"key {key!r} of {store.name} (version {version})"
