"""Reading foreign sources for imports: ``.npy`` and ``.npz`` files, HDF5 files, folders of
images, and plain zarr stores (format 2 or 3).

Every reader describes its source as one uniform tree, a :class:`Source`: its groups
(:class:`SourceGroup`, with their attributes) and its arrays (:class:`SourceArray`: the checked
spec of the hubzarr array each becomes, its attributes, and a reader of its values in blocks of
whole chunks). A :class:`Source` exists only once the whole source has been checked (its
structure, every name as a group key, dtypes, shapes, chunks and attributes), so an import that
would be refused is refused before the repository is created. The values are read while they
are written, a block of whole chunks (about :data:`READ_BYTES`) at a time, in bounded memory.

The rules, by kind:

- ``.npy``: one array; ``.npz``: a group of its arrays. Memory-mapped where the bytes lie
  uncompressed in the file, else streamed a band of rows at a time.
- HDF5 (``.h5``, ``.hdf5``, ``.hdf``, ``.he5``, ``.nc``; h5py, the ``hubzarr[hdf5]`` extra):
  the file's root group becomes the repository's group, its groups subgroups, its datasets
  arrays. Only the members themselves (hard links) are imported: soft and external links are
  never followed (an object a soft link names is imported where it lies, under its own name;
  one hard-linked at two places is imported at both; a group linked inside itself, a cycle,
  is refused).
  Datasets of strings, variable-length values, references, records (compound types), enums
  or opaque bytes, 0-dimensional (scalar) and empty datasets are refused, as ``.npy`` files
  of those are; so are datasets compressed with a filter h5py cannot decode here. An HDF5
  chunk shape is kept, grown by whole HDF5 chunks (first axis first) to at least
  :data:`MIN_CHUNK_BYTES`; contiguous datasets get hubzarr's default chunks. The dataset's
  fill value is kept. Attributes become JSON: numpy numbers and arrays become Python numbers
  and lists, bytes are decoded as UTF-8; an attribute that has no JSON form (a complex
  number, an object reference, a record, bytes that are not UTF-8, an empty value) is left
  out (netCDF-4 files hold such references, ``DIMENSION_LIST``, that mean nothing outside
  HDF5).
- A folder of images (Pillow, the ``hubzarr[images]`` extra): ``folder/<class>/<image>``
  becomes a group holding ``images`` (N, H, W, C) uint8 and ``labels`` (int64 class indices,
  classes sorted by name), with the class names in the group's attribute ``classes``; images
  directly in the folder (no class folders) give ``images`` only. Files are ordered by class,
  then by name; names starting with ``.`` and files that are not images (by suffix:
  :data:`IMAGE_SUFFIXES`) are skipped. Every image must have the size and mode of the first
  (modes compared after palette and 1-bit images are expanded to L, RGB or RGBA), unless
  ``resize=(H, W)`` is given: then every image is resized (bicubic) and converted to the mode
  most images have (C is 1 for L, 2 for LA, 3 for RGB, 4 for RGBA). Of animated images, the
  first frame is taken. 16-bit and float images are refused. A chunk holds whole images,
  about 2 MiB of them (at least one). Images are decoded on a pool of threads, or, from 2,048
  images on, of forked processes, one per core (decoding small PNGs is mostly Python inside
  Pillow: processes decoded 20,000 of them 1.7x faster than one core, threads 1.0x).
- A zarr store (a local folder ending in ``.zarr`` or holding zarr metadata, or any fsspec
  URL but an HDF5 file's): its arrays and groups with their attributes, chunks, dtype and fill
  value. Format 3 arrays become format 2: a single Blosc, Zstd or GZip compressor (or none) is
  kept as its format 2 twin, any other codec chain becomes hubzarr's default compressor (the
  values are decoded and encoded again); sharded arrays keep their inner chunks and are read
  a shard at a time; ``dimension_names`` become the ``_ARRAY_DIMENSIONS`` attribute (as
  xarray writes format 2). Arrays of strings or objects are refused.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import math
import os
import struct
import zipfile
from collections import Counter
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt

from hubzarr.addresses import PathLocation
from hubzarr.errors import HubError, InvalidArgumentError
from hubzarr.groups import check_key
from hubzarr.indexing import chunk_regions
from hubzarr.metadata import array_spec, encode_attributes, group_documents, metadata_documents
from hubzarr.spec import (
    DEFAULT_COMPRESSOR,
    MAX_CHUNK_BYTES,
    UNSAFE_CODECS,
    cast_value,
    check_dtype,
)

__all__ = [
    "HDF5_SUFFIXES",
    "IMAGE_SUFFIXES",
    "Block",
    "NpyFile",
    "Source",
    "SourceArray",
    "SourceGroup",
    "check_resize",
    "open_hdf5",
    "open_images",
    "open_npy",
    "open_npz",
    "open_source",
    "open_zarr",
]

T = TypeVar("T")

#: A block read from a source holds about this many bytes of whole chunks.
READ_BYTES = 16 * 2**20
#: An HDF5 chunk shape is grown (by whole HDF5 chunks) until a chunk holds at least this much.
MIN_CHUNK_BYTES = 2**20
#: Whole images are grouped into chunks of about this many bytes (hubzarr's default target).
IMAGE_CHUNK_BYTES = 2 * 2**20
#: Suffixes of HDF5 files (``.nc``: netCDF-4, which is HDF5).
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5", ".nc")
#: Suffixes of the files a folder of images is read from (case does not matter).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
#: The largest side ``resize`` takes (Pillow's own limit is about this).
MAX_SIDE = 65_535

Region = tuple[slice, ...]


class Block(NamedTuple):
    """The values of a region of whole chunks of an array, read from a source."""

    origin: tuple[int, ...]
    """Where the block's first element lies in the array."""
    values: np.ndarray[Any, Any]
    """The values, of the array's dtype."""


@dataclass(frozen=True, slots=True)
class SourceArray:
    """One array of a checked source, and how to read it."""

    key: str
    """Its key in the repository's group; ``""`` when the repository is this array."""
    label: str
    """How messages name it (the file, and the dataset or member in it)."""
    spec: dict[str, Any]
    """The checked keywords of the array it becomes (:func:`hubzarr.metadata.array_spec`)."""
    attrs: dict[str, Any]
    """Its attributes, JSON."""
    blocks: Callable[[], Generator[Block, None, None]]
    """Reads the values: blocks of whole chunks that cover the array once, in bounded memory."""

    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape."""
        return tuple(self.spec["shape"])

    @property
    def chunks(self) -> tuple[int, ...]:
        """The chunk shape of the array it becomes."""
        return tuple(self.spec["chunks"])

    @property
    def dtype(self) -> np.dtype[Any]:
        """The array's dtype."""
        dtype: np.dtype[Any] = np.dtype(self.spec["dtype"])
        return dtype

    @property
    def nbytes(self) -> int:
        """Bytes of values, uncompressed."""
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def nchunks(self) -> int:
        """Chunks of the array it becomes."""
        return math.prod(-(-n // c) for n, c in zip(self.shape, self.chunks, strict=True))


@dataclass(frozen=True, slots=True)
class SourceGroup:
    """One group of a checked source."""

    key: str
    """Its key in the repository; ``""`` for the root group."""
    attrs: dict[str, Any]
    """Its attributes, JSON."""


def _nothing() -> None:
    return None


@dataclass(frozen=True, slots=True)
class Source:
    """A checked source: the tree an import creates, and readers of its values.

    Use it as a context manager: leaving it closes the files it holds open.
    """

    label: str
    """How messages name the source."""
    groups: tuple[SourceGroup, ...]
    """Its groups, the root group first; empty when the source is one array."""
    arrays: tuple[SourceArray, ...]
    """Its arrays (one, with key ``""``, when the source is one array)."""
    close: Callable[[], None] = _nothing
    """Closes what the readers hold open."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def nbytes(self) -> int:
        """Bytes of values in all arrays, uncompressed."""
        return sum(a.nbytes for a in self.arrays)

    @property
    def nchunks(self) -> int:
        """Chunks of all the arrays it becomes."""
        return sum(a.nchunks for a in self.arrays)

    def documents(self) -> dict[str, bytes]:
        """The metadata objects of the whole tree (``.zgroup``, ``.zarray``, ``.zattrs``) by
        key in the repository: what it holds from its first version on."""
        out: dict[str, bytes] = {}
        nodes: list[tuple[str, dict[str, bytes], dict[str, Any]]] = [
            (g.key, group_documents(), g.attrs) for g in self.groups
        ]
        nodes += [(a.key, metadata_documents(a.spec), a.attrs) for a in self.arrays]
        for key, docs, attrs in nodes:
            docs[".zattrs"] = encode_attributes(attrs)
            out.update((f"{key}/{name}" if key else name, doc) for name, doc in docs.items())
        return out


# -- checking what every reader finds ----------------------------------------------------------


def _bad(label: str, what: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"cannot import {label}: it {what}")


def _refused(label: str, exc: InvalidArgumentError) -> InvalidArgumentError:
    return InvalidArgumentError(f"cannot import {label}: {exc}")


def _missing(path: str | os.PathLike[str]) -> InvalidArgumentError:
    return InvalidArgumentError(f"cannot import {str(path)!r}: no such file or folder")


def _checked_attrs(attrs: dict[str, Any], label: str) -> dict[str, Any]:
    try:
        encode_attributes(attrs)
    except InvalidArgumentError as exc:
        raise _refused(label, exc) from None
    return attrs


def _key(key: str, label: str) -> str:
    if key:
        try:
            check_key(key)
        except InvalidArgumentError as exc:
            raise _refused(label, exc) from None
    return key


def _group(key: str, label: str, attrs: dict[str, Any]) -> SourceGroup:
    return SourceGroup(_key(key, label), _checked_attrs(attrs, label))


def _array(
    key: str,
    label: str,
    shape: tuple[int, ...],
    dtype: np.dtype[Any],
    blocks: Callable[[dict[str, Any]], Generator[Block, None, None]],
    *,
    chunks: tuple[int, ...] | None = None,
    fill_value: Any = 0,
    compressor: Any = DEFAULT_COMPRESSOR,
    attrs: dict[str, Any] | None = None,
) -> SourceArray:
    """A checked :class:`SourceArray`; ``blocks(spec)`` reads it in the spec's chunks."""
    _key(key, label)
    _check_numeric(dtype, label)
    if not shape:
        raise _bad(label, "is 0-dimensional; store a scalar as an attribute, or reshape it to (1,)")
    try:
        spec = array_spec(shape, dtype, chunks, fill_value, compressor)
    except InvalidArgumentError as exc:
        raise _refused(label, exc) from None
    return SourceArray(key, label, spec, _checked_attrs(attrs or {}, label), lambda: blocks(spec))


def _fill_value(value: Any, dtype: np.dtype[Any]) -> Any:
    """The source's fill value if hubzarr can store it in ``dtype``, else 0: the values are
    copied whole either way, only which chunks are left unstored changes."""
    try:
        fill = cast_value(value, check_dtype(dtype))
    except InvalidArgumentError:
        return 0
    return fill.item() if fill.ndim == 0 else 0


def _check_numeric(dtype: np.dtype[Any], label: str) -> None:
    if dtype.hasobject or dtype.fields is not None or dtype.kind in "OSUV":
        raise _bad(
            label,
            f"holds {dtype} values (objects, strings or records); hubzarr stores bool, "
            "integer, float and complex arrays: convert them to one of those first",
        )
    try:
        check_dtype(dtype)
    except InvalidArgumentError as exc:
        raise _refused(label, exc) from None


def _show_region(region: Region) -> str:
    return "[" + ", ".join(f"{s.start}:{s.stop}" for s in region) + "]"


def _random_access(
    read: Callable[[Region], Any], grain: Sequence[int] | None = None
) -> Callable[[dict[str, Any]], Generator[Block, None, None]]:
    """Blocks of a source read by region: about :data:`READ_BYTES` of whole chunks each (of
    whole ``grain``, the source's own storage unit, when that is a multiple of the chunks)."""

    def blocks(spec: dict[str, Any]) -> Generator[Block, None, None]:
        shape, chunks, dtype = spec["shape"], spec["chunks"], np.dtype(spec["dtype"])
        unit = chunks
        if grain is not None and all(g % c == 0 for g, c in zip(grain, chunks, strict=True)):
            unit = grain
        for region in chunk_regions(shape, unit, dtype.itemsize, READ_BYTES):
            values = np.asarray(read(region), dtype=dtype)
            yield Block(tuple(s.start for s in region), values)

    return blocks


# -- optional libraries --------------------------------------------------------------------------


def _optional(module: str, package: str, extra: str, what: str) -> Any:
    """Import ``module`` of an optional dependency (installed by the extra ``extra``)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise InvalidArgumentError(
            f"importing {what} needs {package}, which is not installed: "
            f"pip install 'hubzarr[{extra}]'"
        ) from None


# -- .npy and .npz ------------------------------------------------------------------------------


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

    def source_array(self, key: str) -> SourceArray:
        """This array as a :class:`SourceArray` at ``key``."""
        if self.mapped is not None:
            mapped = self.array()
            return _array(
                key, self.label, self.shape, self.dtype, _random_access(mapped.__getitem__)
            )

        def blocks(spec: dict[str, Any]) -> Generator[Block, None, None]:
            rows = spec["chunks"][0]
            band_rows = rows * max(1, READ_BYTES // max(1, rows * self.nbytes // self.shape[0]))
            for lo, band in self.bands(band_rows):
                yield Block((lo, *(0 for _ in self.shape[1:])), band)

        return _array(key, self.label, self.shape, self.dtype, blocks)


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
    _check_numeric(dtype, label)
    if not shape:
        raise _bad(label, "is 0-dimensional; store a scalar as an attribute, or reshape it to (1,)")
    return tuple(shape), np.dtype(dtype), bool(fortran)


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
        raise _missing(path) from None
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
        raise _missing(path) from None
    except (zipfile.BadZipFile, EOFError) as exc:
        raise _bad(label, f"is not a readable .npz file ({exc})") from None
    except (IsADirectoryError, PermissionError) as exc:
        raise InvalidArgumentError(f"cannot import {label}: {exc.strerror}") from None
    return out


# -- HDF5 ----------------------------------------------------------------------------------------


class _Skip:
    """An attribute value with no JSON form."""


_SKIP = _Skip()


def _json_value(value: Any) -> Any:
    """``value`` (an HDF5 attribute as h5py reads it) as JSON, or :data:`_SKIP`."""
    if isinstance(value, bytes | np.bytes_):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return _SKIP
    if isinstance(value, str | bool | int | float) or value is None:
        return value
    if isinstance(value, np.bool_ | np.integer | np.floating | np.str_):
        return value.item()
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biufU":
            return value.tolist()
        if value.dtype.kind in "OS" and value.dtype.fields is None:
            items = [_json_value(v) for v in value.ravel()]
            if any(v is _SKIP for v in items):
                return _SKIP
            return np.array(items, dtype=object).reshape(value.shape).tolist()
    return _SKIP  # complex numbers, references, records, h5py.Empty


def _hdf5_attrs(node: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in node.attrs:
        try:
            value = _json_value(node.attrs[name])
        except (OSError, TypeError, ValueError):  # a type h5py cannot read
            continue
        if value is not _SKIP:
            out[str(name)] = value
    return out


def _hdf5_chunks(
    chunks: tuple[int, ...] | None, shape: tuple[int, ...], itemsize: int
) -> tuple[int, ...] | None:
    """An HDF5 chunk shape grown, first axis first and by whole HDF5 chunks, until a chunk
    holds at least :data:`MIN_CHUNK_BYTES`; ``None`` (hubzarr's defaults) for a contiguous
    dataset or a chunk larger than hubzarr takes."""
    if chunks is None or len(chunks) != len(shape):
        return None
    grown = [min(c, n) for c, n in zip(chunks, shape, strict=True)]
    for axis, n in enumerate(shape):
        nbytes = math.prod(grown) * itemsize
        if nbytes >= MIN_CHUNK_BYTES:
            break
        grown[axis] = min(n, grown[axis] * -(-MIN_CHUNK_BYTES // nbytes))
    if math.prod(grown) * itemsize > MAX_CHUNK_BYTES:
        return None
    return tuple(grown)


def _hdf5_dataset(h5py: Any, ds: Any, key: str, label: str) -> SourceArray:
    where = f"{label} (dataset '/{key}')"
    dtype = np.dtype(ds.dtype)
    if ds.shape is None:
        raise _bad(where, "holds no data (an empty dataspace)")
    kind = None
    if h5py.check_string_dtype(dtype) is not None:
        kind = "strings"
    elif h5py.check_vlen_dtype(dtype) is not None:
        kind = "variable-length values"
    elif h5py.check_ref_dtype(dtype) is not None:
        kind = "object references"
    elif h5py.check_enum_dtype(dtype) is not None:
        kind = f"enum values ({', '.join(sorted(h5py.check_enum_dtype(dtype)))})"
    elif h5py.check_opaque_dtype(dtype):
        kind = "opaque bytes"
    if kind is not None:
        raise _bad(
            where,
            f"holds {kind}; hubzarr stores bool, integer, float and complex arrays: "
            "convert the dataset to one of those first",
        )
    plist = ds.id.get_create_plist()
    for i in range(plist.get_nfilters()):
        code, _, _, name = plist.get_filter(i)
        if not h5py.h5z.filter_avail(code):
            raise _bad(
                where,
                f"is compressed with HDF5 filter {code} ({name.decode(errors='replace')}), "
                "which h5py cannot decode here; rewrite it with gzip, or install the filter "
                "(pip install hdf5plugin covers Blosc, Zstd, LZ4, Bitshuffle)",
            )
    shape = tuple(int(n) for n in ds.shape)
    chunks = _hdf5_chunks(ds.chunks, shape, dtype.itemsize)

    def read(region: Region) -> Any:
        try:
            return ds[region]
        except (OSError, ValueError, RuntimeError) as exc:  # a corrupt or truncated chunk
            raise _bad(where, f"cannot be read at {_show_region(region)} ({exc})") from None

    return _array(
        key,
        where,
        shape,
        dtype,
        _random_access(read),
        chunks=chunks,
        fill_value=_fill_value(ds.fillvalue, dtype),
        attrs=_hdf5_attrs(ds),
    )


def _hdf5_tree(h5py: Any, file: Any, label: str) -> tuple[list[SourceGroup], list[SourceArray]]:
    groups: list[SourceGroup] = []
    arrays: list[SourceArray] = []
    # Depth first with a stack: however deep the file nests, no recursion limit is reached.
    stack: list[tuple[Any, str, tuple[Any, ...]]] = [(file, "", ())]
    while stack:
        group, key, above = stack.pop()
        where = f"{label} (group '/{key}')"
        groups.append(_group(key, where, _hdf5_attrs(group)))
        for name in group:
            if not isinstance(group.get(name, getlink=True), h5py.HardLink):
                continue  # soft and external links are never followed
            child = group[name]
            child_key = f"{key}/{name}" if key else str(name)
            if isinstance(child, h5py.Group):
                if child == group or child in above:
                    raise _bad(
                        label,
                        f"links group '/{child_key}' back to one that holds it: the tree "
                        "has a cycle",
                    )
                stack.append((child, child_key, (*above, group)))
            elif isinstance(child, h5py.Dataset):
                arrays.append(_hdf5_dataset(h5py, child, child_key, label))
            # Committed datatypes hold no data.
    groups.sort(key=lambda g: g.key)
    return groups, arrays


def open_hdf5(
    path: str | os.PathLike[str], storage_options: dict[str, Any] | None = None
) -> Source:
    """Check an HDF5 file whole and describe it as a :class:`Source` (see the module's rules).

    Parameters
    ----------
    path : str or os.PathLike
        A local path, or an fsspec URL (read through fsspec).
    storage_options : dict, optional
        Options for the URL's filesystem.

    Returns
    -------
    Source
        Holding the file open until closed.

    Raises
    ------
    InvalidArgumentError
        If h5py is not installed, the file is missing, not HDF5, truncated or corrupt, a name
        is not a valid group key, the groups form a cycle, or a dataset is refused (see the
        module's rules).
    """
    h5py = _optional("h5py", "h5py", "hdf5", "HDF5 files")
    text = str(path)
    label = repr(text)
    handle: Any = None
    try:
        if "://" in text:
            import fsspec

            handle = fsspec.open(text, "rb", **(storage_options or {})).open()
            file = h5py.File(handle, "r")
        else:
            file = h5py.File(Path(text).expanduser(), "r")
    except FileNotFoundError:
        raise _missing(text) from None
    except (OSError, ValueError) as exc:
        if handle is not None:
            handle.close()
        hint = ""
        if PathLocation(text).suffix == ".nc":
            hint = "; a netCDF-3 file is not HDF5: convert it with xarray to netCDF-4 or zarr"
        raise _bad(label, f"is not a readable HDF5 file ({exc}){hint}") from None

    def close() -> None:
        file.close()
        if handle is not None:
            handle.close()

    try:
        groups, arrays = _hdf5_tree(h5py, file, label)
    except HubError:
        close()
        raise
    except (OSError, KeyError, RuntimeError, ValueError) as exc:
        close()
        raise _bad(label, f"is not a readable HDF5 file ({exc})") from None
    except BaseException:
        close()
        raise
    return Source(label, tuple(groups), tuple(arrays), close)


# -- folders of images ------------------------------------------------------------------------

#: Each Pillow mode as the mode its pixels are stored in (``P``: RGB, or RGBA if transparent).
_MODES = {
    "1": "L",
    "L": "L",
    "LA": "LA",
    "La": "LA",
    "PA": "RGBA",
    "RGB": "RGB",
    "RGBX": "RGB",
    "YCbCr": "RGB",
    "CMYK": "RGB",
    "RGBA": "RGBA",
    "RGBa": "RGBA",
}
_CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
#: Threads that decode images (Pillow releases the GIL as it decodes, but runs Python around
#: it, which small images spend most of their time in) ...
_DECODERS = (os.cpu_count() or 1) + 1
#: ... or, from this many images on, processes (forked: a user's script need not guard its
#: main module), one per core: 20,000 PNGs of 64 x 64 decoded 1.7x faster than on one core,
#: threads 1.0x.
_PROCESS_FROM = 2048


class _Image(NamedTuple):
    path: Path
    size: tuple[int, int]  # Pillow's (width, height)
    mode: str  # one of _CHANNELS


def check_resize(resize: Any) -> tuple[int, int] | None:
    """Return ``resize`` as ``(height, width)``, or ``None``.

    Raises
    ------
    InvalidArgumentError
        If it is not two positive integers of at most :data:`MAX_SIDE`.
    """
    if resize is None:
        return None
    if (
        not isinstance(resize, tuple | list)
        or len(resize) != 2
        or not all(isinstance(n, int | np.integer) and not isinstance(n, bool) for n in resize)
        or not all(0 < n <= MAX_SIDE for n in resize)
    ):
        raise InvalidArgumentError(
            f"resize must be (height, width), two positive integers of at most {MAX_SIDE}, "
            f"not {resize!r}; on the command line: --resize 224x224"
        )
    return int(resize[0]), int(resize[1])


def _visible(folder: Path) -> list[Path]:
    """The entries of ``folder`` by name, without hidden ones (``.DS_Store``, ``.git``)."""
    return sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def _image_files(folder: Path, label: str) -> tuple[list[str], list[list[Path]]]:
    """Class names (``[]`` for an unlabelled folder) and each class's image files."""
    entries = _visible(folder)
    folders = [p for p in entries if p.is_dir()]
    images = [p for p in entries if _is_image(p)]
    kinds = ", ".join(IMAGE_SUFFIXES)
    if folders and images:
        raise _bad(
            label,
            f"holds both images ({images[0].name}) and folders ({folders[0].name}); put every "
            "image in a class folder (folder/<class>/<image>), or none",
        )
    if not folders:
        if not images:
            held = f"; it holds only {entries[0].name!r}" if entries else ""
            held += f" and {len(entries) - 1} more" if len(entries) > 1 else ""
            raise _bad(label, f"holds no images (files ending {kinds}){held}")
        return [], [images]
    classes, files = [], []
    for sub in folders:
        inside = _visible(sub)
        nested = [p for p in inside if p.is_dir()]
        if nested:
            raise _bad(
                label,
                f"holds a folder in a class folder ({sub.name}/{nested[0].name}); images go "
                "directly in folder/<class>/",
            )
        found = [p for p in inside if _is_image(p)]
        if not found:
            raise _bad(
                label, f"has a class folder without images ({sub.name}): files ending {kinds}"
            )
        classes.append(sub.name)
        files.append(found)
    return classes, files


def _probe(pil: Any, path: Path) -> _Image:
    """An image's size and storage mode, from its header (the pixels are not decoded)."""
    try:
        with pil.open(path) as im:
            mode = _MODES.get(im.mode)
            if im.mode == "P":
                mode = "RGBA" if "transparency" in im.info else "RGB"
            if mode is None:
                raise InvalidArgumentError(
                    f"cannot import image {str(path)!r}: it is a {im.mode} image (16-bit, 32-bit "
                    "or float pixels); hubzarr imports 8-bit images (L, LA, RGB, RGBA, palette)"
                )
            return _Image(path, (int(im.size[0]), int(im.size[1])), mode)
    except HubError:
        raise
    except (OSError, ValueError, SyntaxError, pil.DecompressionBombError) as exc:
        raise InvalidArgumentError(
            f"cannot import image {str(path)!r}: it is not a readable image ({exc})"
        ) from None


def _decode(pil: Any, image: _Image, mode: str, size: tuple[int, int], out: Any) -> None:
    """Decode an image into ``out`` ((H, W, C) uint8) in ``mode``, resized to ``size`` (width,
    height)."""
    try:
        with pil.open(image.path) as opened:
            im = opened
            if im.mode == "P":  # expanded first: a transparent palette must become RGBA
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            if im.mode != mode:
                im = im.convert(mode)
            if im.size != size:
                im = im.resize(size, pil.Resampling.BICUBIC)
            pixels = np.asarray(im)
    except (OSError, ValueError, SyntaxError, pil.DecompressionBombError) as exc:
        raise InvalidArgumentError(
            f"cannot import image {str(image.path)!r}: it cannot be decoded ({exc})"
        ) from None
    pixels = pixels.reshape((size[1], size[0], -1)) if pixels.ndim == 2 else pixels
    if pixels.shape != out.shape or pixels.dtype != np.uint8:
        raise InvalidArgumentError(
            f"cannot import image {str(image.path)!r}: it changed while it was imported"
        )
    out[...] = pixels


def _decode_run(
    module: str, images: Sequence[_Image], mode: str, size: tuple[int, int]
) -> npt.NDArray[np.uint8]:
    """Decode a run of images (in a decoder thread or process) into one array."""
    pil = importlib.import_module(module)
    out = np.empty((len(images), size[1], size[0], _CHANNELS[mode]), np.uint8)
    for image, into in zip(images, out, strict=True):
        _decode(pil, image, mode, size, into)
    return out


def _image_decoders(count: int) -> Executor:
    """Where images are decoded: processes for many (see :data:`_PROCESS_FROM`), else
    threads."""
    import multiprocessing

    if count >= _PROCESS_FROM and "fork" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("fork")
        return ProcessPoolExecutor(os.cpu_count() or 1, mp_context=context)
    return ThreadPoolExecutor(_DECODERS)


def _show(image: _Image) -> str:
    return f"{image.size[1]}x{image.size[0]} {image.mode}"


def open_images(path: str | os.PathLike[str], resize: Any = None) -> Source:
    """Check a folder of images and describe it as a :class:`Source` (see the module's
    rules): every image's header is read, no pixel is decoded.

    Parameters
    ----------
    path : str or os.PathLike
        A local folder: ``folder/<class>/<image>``, or ``folder/<image>`` (unlabelled).
    resize : tuple of int, optional
        ``(height, width)``: resize every image, and convert every one to the mode most have.

    Returns
    -------
    Source
        A group of ``images`` (and ``labels``, with the ``classes`` attribute).

    Raises
    ------
    InvalidArgumentError
        If Pillow is not installed, the folder is missing or holds no images, a class folder
        is empty or holds folders, the folder mixes images and class folders, an image is not
        readable or not 8-bit, or (without ``resize``) the images differ in size or mode: the
        message names the first that differs.
    """
    pil = _optional("PIL.Image", "Pillow", "images", "folders of images")
    size = check_resize(resize)
    folder = Path(path).expanduser()
    label = repr(str(path))
    if not folder.is_dir():
        raise _missing(path) if not folder.exists() else _bad(label, "is not a folder")
    classes, groups = _image_files(folder, label)
    # On this thread: reading headers is Python code holding the GIL; threads made it twice
    # as slow (2,000 small PNGs: 40 ms here, 80-100 ms on three threads), processes no faster.
    images = [_probe(pil, path) for path in itertools.chain(*groups)]
    first = images[0]
    if size is None:
        for image in images:
            if (image.size, image.mode) != (first.size, first.mode):
                raise InvalidArgumentError(
                    f"cannot import {label}: its images differ in size or mode: "
                    f"{str(first.path)!r} is {_show(first)}, {str(image.path)!r} is "
                    f"{_show(image)}; pass resize=(H, W) (hub cp --resize HxW) to resize them "
                    "all and convert them to one mode"
                )
        mode, wh = first.mode, first.size
    else:
        counts = Counter(image.mode for image in images)  # ties: the mode seen first
        mode, wh = max(counts, key=counts.__getitem__), (size[1], size[0])
    shape = (len(images), wh[1], wh[0], _CHANNELS[mode])
    sample = math.prod(shape[1:])
    chunks = (max(1, min(len(images), IMAGE_CHUNK_BYTES // sample)), *shape[1:])

    def read(spec: dict[str, Any]) -> Generator[Block, None, None]:
        with _image_decoders(len(images)) as decoders:
            for region in chunk_regions(spec["shape"], spec["chunks"], 1, READ_BYTES):
                lo, hi = region[0].start, region[0].stop
                step = max(1, -(-(hi - lo) // (2 * _DECODERS)))
                runs = [(i, min(hi, i + step)) for i in range(lo, hi, step)]
                block = np.empty((hi - lo, *shape[1:]), np.uint8)
                decoded = decoders.map(
                    _decode_run,
                    itertools.repeat(pil.__name__),
                    [images[a:b] for a, b in runs],
                    itertools.repeat(mode),
                    itertools.repeat(wh),
                )
                for (a, b), pixels in zip(runs, decoded, strict=True):
                    block[a - lo : b - lo] = pixels
                yield Block((lo, 0, 0, 0), block)

    where = f"{label} (images)"
    arrays = [_array("images", where, shape, np.dtype(np.uint8), read, chunks=chunks)]
    if classes:
        labels = np.repeat(np.arange(len(classes), dtype=np.int64), [len(g) for g in groups])
        reader = _random_access(labels.__getitem__)
        arrays.append(_array("labels", f"{label} (labels)", labels.shape, labels.dtype, reader))
    root = _group("", label, {"classes": classes} if classes else {})
    return Source(label, (root,), tuple(arrays))


# -- zarr stores --------------------------------------------------------------------------------


def _format2_compressor(arr: Any) -> Any:
    """The format 2 compressor that encodes like ``arr``'s codecs, or hubzarr's default."""
    import numcodecs
    from numcodecs.abc import Codec
    from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

    compressors = tuple(arr.compressors)
    if not compressors:
        return None
    if len(compressors) != 1:
        return DEFAULT_COMPRESSOR
    codec = compressors[0]
    if isinstance(codec, Codec):  # format 2: a numcodecs codec already
        return DEFAULT_COMPRESSOR if codec.codec_id in UNSAFE_CODECS else codec
    if isinstance(codec, BloscCodec):
        shuffles = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}
        return numcodecs.Blosc(
            cname=codec.cname.value,
            clevel=codec.clevel,
            shuffle=shuffles[codec.shuffle.value] if codec.shuffle is not None else 1,
            blocksize=codec.blocksize,
        )
    if isinstance(codec, GzipCodec):
        return numcodecs.GZip(level=codec.level)
    if isinstance(codec, ZstdCodec):
        return numcodecs.Zstd(level=codec.level, checksum=codec.checksum)
    return DEFAULT_COMPRESSOR


def _zarr_array(arr: Any, key: str, label: str) -> SourceArray:
    where = f"{label} (array '/{key}')" if key else label
    dtype = arr.dtype
    if not isinstance(dtype, np.dtype):
        raise _bad(where, f"holds {dtype} values; hubzarr stores bool, integer, float and complex")
    shards = getattr(arr, "shards", None)

    def read(region: Region) -> Any:
        try:
            return arr[region]
        except HubError:
            raise
        except Exception as exc:  # zarr lets every codec's and store's own error through
            what = f"{type(exc).__name__}: {exc}"
            raise _bad(where, f"cannot be read at {_show_region(region)} ({what})") from exc

    return _array(
        key,
        where,
        tuple(arr.shape),
        dtype,
        _random_access(read, shards),
        chunks=tuple(arr.chunks),
        fill_value=_fill_value(arr.fill_value, dtype) if arr.fill_value is not None else 0,
        compressor=_format2_compressor(arr),
        attrs=_zarr_attrs(arr),
    )


def _zarr_attrs(arr: Any) -> dict[str, Any]:
    """An array's attributes, with format 3 ``dimension_names`` as xarray's format 2
    ``_ARRAY_DIMENSIONS`` attribute."""
    attrs = dict(arr.attrs.asdict())
    names = getattr(arr.metadata, "dimension_names", None)
    if names and all(isinstance(n, str) for n in names):
        attrs.setdefault("_ARRAY_DIMENSIONS", list(names))
    return attrs


def _is_zarr_folder(folder: Path) -> bool:
    return any((folder / name).is_file() for name in (".zgroup", ".zarray", "zarr.json"))


def open_zarr(
    path: str | os.PathLike[str], storage_options: dict[str, Any] | None = None
) -> Source:
    """Check a plain zarr store (format 2 or 3) and describe it as a :class:`Source` (see the
    module's rules): every metadata document is read, no chunk.

    Parameters
    ----------
    path : str or os.PathLike
        A local folder or an fsspec URL.
    storage_options : dict, optional
        Options for the URL's filesystem.

    Returns
    -------
    Source

    Raises
    ------
    InvalidArgumentError
        If nothing readable as zarr is there, a name is not a valid group key, or an array
        holds strings, objects or records, or is 0-dimensional.
    """
    import zarr
    import zarr.storage

    text = str(path)
    label = repr(text)
    try:
        if "://" in text:
            store: Any = zarr.storage.FsspecStore.from_url(
                text, storage_options=storage_options, read_only=True
            )
        else:
            folder = Path(text).expanduser()
            if not folder.exists():
                raise _missing(text)
            store = zarr.storage.LocalStore(folder, read_only=True)
        node = zarr.open(store=store, mode="r")
        members = [] if isinstance(node, zarr.Array) else list(node.members(max_depth=None))
    except HubError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _bad(label, f"is not a readable zarr store ({type(exc).__name__}: {exc})") from None
    if isinstance(node, zarr.Array):
        return Source(label, (), (_zarr_array(node, "", label),))
    groups = [_group("", label, dict(node.attrs.asdict()))]
    arrays = []
    for key, member in sorted(members, key=lambda m: str(m[0])):
        if isinstance(member, zarr.Array):
            arrays.append(_zarr_array(member, str(key), label))
        else:
            where = f"{label} (group '/{key}')"
            groups.append(_group(str(key), where, dict(member.attrs.asdict())))
    return Source(label, tuple(groups), tuple(arrays))


# -- which reader ------------------------------------------------------------------------------


def open_source(
    path: str, *, resize: Any = None, storage_options: dict[str, Any] | None = None
) -> Source:
    """Check the file, folder or store at ``path`` whole and describe it; nothing is created.

    The kind is read from the path: ``.npy``, ``.npz``, an HDF5 suffix
    (:data:`HDF5_SUFFIXES`), ``.zarr``; any other URL is a zarr store; a local folder holding
    zarr metadata (``.zgroup``, ``.zarray``, ``zarr.json``) is a zarr store, any other folder
    a folder of images.

    Parameters
    ----------
    path : str
        A local path or an fsspec URL.
    resize : tuple of int, optional
        ``(height, width)`` of every image (folders of images only).
    storage_options : dict, optional
        Options for a URL's filesystem.

    Returns
    -------
    Source

    Raises
    ------
    InvalidArgumentError
        If the path is missing or of a kind hubzarr does not import, ``resize`` is given for
        something other than a folder of images, or the source is refused by its reader.
    """
    suffix = PathLocation(path).suffix
    url = "://" in path
    local = Path(path).expanduser()
    images = not url and suffix not in (".npy", ".npz", ".zarr", *HDF5_SUFFIXES)
    images = images and local.is_dir() and not _is_zarr_folder(local)
    if resize is not None and not images:
        raise InvalidArgumentError(
            f"resize applies to folders of images, and {path!r} is not one; leave it out"
        )
    if suffix in (".npy", ".npz"):
        if url:
            raise InvalidArgumentError(
                f"cannot import {path}: .npy and .npz files are imported from local paths"
            )
        if suffix == ".npy":
            return Source(repr(path), (), (open_npy(path).source_array(""),))
        files = open_npz(path)
        label = repr(path)
        return Source(
            label,
            (_group("", label, {}),),
            tuple(npy.source_array(key) for key, npy in files.items()),
        )
    if suffix in HDF5_SUFFIXES:
        return open_hdf5(path, storage_options)
    if images:
        return open_images(path, resize)
    if url or suffix == ".zarr" or local.is_dir():
        return open_zarr(path, storage_options)
    if not local.exists():
        raise _missing(path)
    raise InvalidArgumentError(
        f"cannot import {path}: hubzarr imports .npy and .npz files, HDF5 files "
        f"({', '.join(HDF5_SUFFIXES)}), zarr stores (.zarr folders or URLs) and folders of "
        f"images, not {suffix or 'files without a suffix'}"
    )
