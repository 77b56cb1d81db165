"""Moving data in and out of a hub: exports of one version to a plain zarr store or a ``.npy``
file, and imports of ``.npy`` and ``.npz`` files.

Exports copy stored objects byte for byte, without decoding: each object's payload (its
envelope's checksum verified) becomes the file zarr itself would have written at that key. The
store's metadata documents are written last, the root's at the very end, so an export that is
killed never leaves a store that opens; running it again skips the objects already there (each
was written whole: every backend replaces objects atomically) and finishes the job.

Imports check the whole file (header, dtype, size) before the repository is created, and read
it in bounded memory: ``.npy`` files and uncompressed ``.npz`` members are memory-mapped,
compressed members streamed a band of chunks at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import numpy as np

from hubzarr.errors import AlreadyExistsError, InvalidArgumentError
from hubzarr.spec import check_dtype

if TYPE_CHECKING:
    from hubzarr.session import Session
    from hubzarr.storage import Storage

__all__ = ["CopyReport", "NpyFile", "Progress", "export_zarr", "open_npy", "open_npz"]

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


@dataclass(frozen=True, slots=True)
class NpyFile:
    """One array of a ``.npy`` file or ``.npz`` member, checked and ready to read."""

    label: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    fortran_order: bool
    #: The path and offset of the raw data, when it can be memory-mapped.
    mapped: tuple[str, int] | None
    #: Opens a stream positioned at the raw data, when it cannot be memory-mapped.
    stream: Callable[[], AbstractContextManager[IO[bytes]]] | None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def array(self) -> np.ndarray[Any, Any]:
        """The whole array, memory-mapped (read lazily; only for :attr:`mapped` files)."""
        assert self.mapped is not None
        path, offset = self.mapped
        if self.nbytes == 0:
            return np.empty(self.shape, self.dtype)
        order: Literal["C", "F"] = "F" if self.fortran_order else "C"
        return np.memmap(path, self.dtype, "r", offset=offset, shape=self.shape, order=order)

    def bands(self, rows: int) -> Iterator[tuple[int, np.ndarray[Any, Any]]]:
        """``(first row, rows)`` along axis 0, ``rows`` at a time, read from the stream."""
        assert self.stream is not None
        row_bytes = self.nbytes // self.shape[0] if self.shape[0] else 0
        with self.stream() as f:
            for lo in range(0, self.shape[0], rows):
                n = min(rows, self.shape[0] - lo)
                raw = f.read(n * row_bytes)
                if len(raw) != n * row_bytes:
                    raise _bad(self.label, "is truncated: it ends before its last row")
                band = np.frombuffer(raw, self.dtype).reshape((n, *self.shape[1:]))
                yield lo, band


def _bad(label: str, what: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"cannot import {label}: it {what}")


def _read_header(f: IO[bytes], label: str) -> tuple[tuple[int, ...], np.dtype[Any], bool]:
    """The shape, dtype and order of the ``.npy`` data at ``f``'s position, which this leaves
    at the first byte of the data."""
    try:
        major, _ = np.lib.format.read_magic(f)
        if major == 1:
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif major in (2, 3):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unknown .npy format version {major}")
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        raise _bad(label, f"is not a readable .npy array ({exc})") from None
    if dtype.hasobject or dtype.fields is not None or dtype.kind in "SUV":
        raise _bad(
            label,
            f"holds {dtype} values (objects, strings or records); hubzarr stores bool, "
            "integer, float and complex arrays: convert them to one of those first",
        )
    try:
        dtype = check_dtype(dtype)
    except InvalidArgumentError as exc:
        raise _bad(label, str(exc)) from None
    if not shape:
        raise _bad(label, "is 0-dimensional; store a scalar as an attribute, or reshape it to (1,)")
    return tuple(shape), dtype, bool(fortran)


def _missing(path: Path) -> InvalidArgumentError:
    return InvalidArgumentError(f"cannot import {str(path)!r}: no such file")


def open_npy(path: str | os.PathLike[str]) -> NpyFile:
    """Check a ``.npy`` file and describe its array (nothing is read but the header).

    Raises
    ------
    InvalidArgumentError
        If the file is missing, unreadable, not a ``.npy`` array, truncated, 0-dimensional,
        or holds objects, strings or records.
    """
    file = Path(path).expanduser()
    label = repr(str(path))
    try:
        with file.open("rb") as f:
            shape, dtype, fortran = _read_header(f, label)
            offset = f.tell()
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise _missing(file) from None
    except (IsADirectoryError, PermissionError) as exc:
        raise InvalidArgumentError(f"cannot import {label}: {exc.strerror}") from None
    npy = NpyFile(label, shape, dtype, fortran, (str(file), offset), None)
    if size < offset + npy.nbytes:
        raise _bad(label, f"is truncated: {size - offset} bytes of data for {npy.nbytes}")
    return npy


def _member_offset(f: IO[bytes], info: zipfile.ZipInfo) -> int:
    """Where a stored (uncompressed) member's bytes start: after its local file header."""
    f.seek(info.header_offset)
    header = f.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile("a bad local file header")
    name_len, extra_len = (int(n) for n in struct.unpack("<HH", header[26:30]))
    return int(info.header_offset) + 30 + name_len + extra_len


def open_npz(path: str | os.PathLike[str]) -> dict[str, NpyFile]:
    """Check a ``.npz`` file and describe each array in it, by name.

    Raises
    ------
    InvalidArgumentError
        If the file is missing or not a zip of ``.npy`` arrays, or any array is as
        :func:`open_npy` refuses.
    """
    file = Path(path).expanduser()
    label = repr(str(path))
    out: dict[str, NpyFile] = {}
    try:
        with zipfile.ZipFile(file) as zf, file.open("rb") as raw:
            members = zf.infolist()
            if not members:
                raise _bad(label, "holds no arrays")
            for info in members:
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                what = f"{label} (array {name!r})"
                with zf.open(info) as f:
                    shape, dtype, fortran = _read_header(f, what)
                    header_size = f.tell()
                npy_nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                if info.file_size < header_size + npy_nbytes:
                    raise _bad(what, "is truncated")
                if info.compress_type == zipfile.ZIP_STORED:
                    start = _member_offset(raw, info) + header_size
                    out[name] = NpyFile(what, shape, dtype, fortran, (str(file), start), None)
                    continue
                if fortran and len(shape) > 1:
                    raise _bad(
                        what,
                        "is compressed and in Fortran order, which cannot be read in "
                        "pieces; save it with np.savez (uncompressed) or in C order",
                    )

                @contextlib.contextmanager
                def stream(
                    info: zipfile.ZipInfo = info, skip: int = header_size
                ) -> Iterator[IO[bytes]]:
                    with zipfile.ZipFile(file) as again, again.open(info) as f:
                        f.read(skip)
                        yield f

                out[name] = NpyFile(what, shape, dtype, fortran, None, stream)
    except FileNotFoundError:
        raise _missing(file) from None
    except (zipfile.BadZipFile, EOFError) as exc:
        raise _bad(label, f"is not a readable .npz file ({exc})") from None
    except (IsADirectoryError, PermissionError) as exc:
        raise InvalidArgumentError(f"cannot import {label}: {exc.strerror}") from None
    return out
