"""Checking every object of a version: checksums, metadata, and that chunks decompress.

:func:`verify` reads each object a version holds through its store, so each read checks the
object's CRC-32C (a truncated, emptied or bit-flipped object is a :class:`CorruptChunkError`).
Array metadata (``.zarray``) is validated as :func:`hubzarr.metadata.open_zarr_array` does, and
each chunk of a valid array is decompressed with the array's codecs and its length compared with
the chunk's, which catches an object whose checksum is right but whose content is not a chunk
(written by another tool, say).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numcodecs
import numpy as np

from hubzarr.errors import HubError
from hubzarr.metadata import _check_dtype, _check_zarray, _decode
from hubzarr.store import HubStore

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


@dataclass(frozen=True, slots=True)
class _Layout:
    """What a chunk of one array decodes with, and to how many bytes."""

    codecs: tuple[Any, ...]
    compressor: Any
    nbytes: int


def _layout(doc: dict[str, Any], where: str) -> _Layout:
    dtype = _check_dtype(doc["dtype"], where)
    filters = tuple(numcodecs.get_codec(dict(f)) for f in doc.get("filters") or ())
    compressor = numcodecs.get_codec(dict(doc["compressor"])) if doc.get("compressor") else None
    return _Layout(filters, compressor, math.prod(doc["chunks"]) * dtype.itemsize)


def _check_chunk(layout: _Layout, payload: memoryview) -> str | None:
    try:
        data: Any = payload
        if layout.compressor is not None:
            data = layout.compressor.decode(data)
        if layout.codecs:
            return None  # filters change the length; decompressing was the check
        size = np.frombuffer(data, dtype="u1").nbytes
    except Exception as exc:
        return f"does not decompress ({type(exc).__name__}: {exc})"
    if size != layout.nbytes:
        return f"decompresses to {size} bytes, not the chunk's {layout.nbytes}"
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
    state = await store._load()
    keys = sorted(await store._keys())
    problems: list[Problem] = []
    sizes: dict[str, int] = {}
    layouts: dict[str, _Layout] = {}
    done = 0
    limit = asyncio.Semaphore(_CONCURRENCY)

    async def read(key: str) -> memoryview | None:
        nonlocal done
        async with limit:
            try:
                payload = await store._read(state, key)
            except HubError as exc:
                problems.append(Problem(key, str(exc)))
                payload = None
            if payload is not None:
                sizes[key] = payload.nbytes
                layout = layouts.get(key.rsplit("/", 1)[0] if "/" in key else "")
                if layout is not None and not key.rsplit("/", 1)[-1].startswith(".z"):
                    why = await asyncio.to_thread(_check_chunk, layout, payload)
                    if why is not None:
                        problems.append(Problem(key, f"{_where(store, state.version, key)} {why}"))
            done += 1
            if progress is not None:
                progress(done, len(keys))
            return payload

    # Array metadata first: it says how the chunks beside it decode.
    metadata = [k for k in keys if k.rsplit("/", 1)[-1] == ".zarray"]
    for key, raw in zip(metadata, await asyncio.gather(*(read(k) for k in metadata)), strict=True):
        if raw is None:
            continue
        where = f"the array metadata file {key} of {store.name} (version {state.version})"
        try:
            layouts[key.rsplit("/", 1)[0] if "/" in key else ""] = _layout(
                _check_zarray(_decode(bytes(raw), where), where), where
            )
        except HubError as exc:
            problems.append(Problem(key, str(exc)))
    rest = set(keys) - set(metadata)
    await asyncio.gather(*(read(k) for k in sorted(rest)))
    return VerifyReport(
        name=str(store.name),
        version=state.version,
        objects=len(keys),
        bytes=sum(sizes.values()),
        problems=tuple(sorted(problems, key=lambda p: p.key)),
    )


def _where(store: HubStore, version: str, key: str) -> str:
    return f"key {key!r} of {store.name} (version {version})"
