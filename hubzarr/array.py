"""The numpy-like array facade: validation of array specs, casting rules, basic indexing.

:class:`HubArray` wraps a ``zarr.Array`` opened on a :class:`hubzarr.store.HubStore`. It adds
what zarr lets through: it refuses shapes and chunks that are not positive integers, a missing
fill value, unsafe casts (``1.7`` into ``int32``, ``2**40`` into ``int32``) and
unsupported indices, each with an error from :mod:`hubzarr.errors`.
"""

from __future__ import annotations

import math
import operator
import random
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numcodecs
import numpy as np
import numpy.typing as npt
import zarr
from numcodecs.abc import Codec
from zarr.core.dtype import get_data_type_from_native_dtype
from zarr.core.sync import sync

from hubzarr.errors import (
    ConflictError,
    HubError,
    InvalidArgumentError,
    InvalidIndexError,
    UnsafeCastError,
)
from hubzarr.store import HubStore, conditional_writes

if TYPE_CHECKING:
    from hubzarr.bulk import LazyArray

__all__ = [
    "DEFAULT_COMPRESSOR",
    "MAX_CHUNK_BYTES",
    "HubArray",
    "cast_value",
    "check_chunks",
    "check_compressor",
    "check_ddof",
    "check_dtype",
    "check_flag",
    "check_shape",
    "default_chunks",
]

#: Blosc with lz4 and byte shuffle: fast enough to stay below disk and network speed.
DEFAULT_COMPRESSOR: Codec = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
#: Upper bound on one chunk's uncompressed size (blosc's own limit is 2 GiB).
MAX_CHUNK_BYTES = 512 * 2**20
#: How often a partial-chunk write that lost its compare-and-swap race is repeated, and the
#: longest pause (seconds, jittered) between attempts.
_WRITE_ATTEMPTS = 64
_BACKOFF_CAP_S = 0.25
#: Default chunks aim at this many bytes ...
_TARGET_CHUNK_BYTES = 2 * 2**20
#: ... but a sample this large gets a chunk of its own along the first axis.
_SAMPLE_CHUNK_BYTES = 256 * 2**10
#: Codecs that execute or deserialise arbitrary objects; never accepted.
_UNSAFE_CODECS = frozenset({"pickle", "json2", "msgpack2", "vlen-utf8", "vlen-bytes", "vlen-array"})
_DTYPE_KINDS = "biufc"


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise InvalidArgumentError(
            f"{what} must be an integer, not {value!r} ({type(value).__name__})"
        )
    return int(value)


def _as_tuple(value: Any, what: str) -> tuple[Any, ...]:
    if isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_):
        return (value,)
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return tuple(value)
    raise InvalidArgumentError(f"{what} must be a tuple of positive integers, not {value!r}")


def check_shape(shape: Any) -> tuple[int, ...]:
    """Return ``shape`` as a tuple of positive ints.

    Raises
    ------
    InvalidArgumentError
        If a dimension is not an integer or is not positive.
    """
    dims = _as_tuple(shape, "shape")
    out = tuple(_as_int(d, f"shape dimension {i}") for i, d in enumerate(dims))
    for i, d in enumerate(out):
        if d <= 0:
            raise InvalidArgumentError(
                f"shape {out} is invalid: dimension {i} is {d}; every dimension must be a "
                "positive integer"
            )
    return out


def check_dtype(dtype: Any) -> np.dtype[Any]:
    """Return ``dtype`` as a numpy dtype of a supported kind (bool, int, uint, float, complex).

    Raises
    ------
    InvalidArgumentError
        If numpy does not understand ``dtype``, it is not numeric, or zarr format 2 cannot
        store it (``float128``, ``complex256``: numpy's extended precision, whose bytes differ
        between machines).
    """
    try:
        out: np.dtype[Any] = np.dtype(dtype)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"dtype {dtype!r} is not a numpy dtype: {exc}") from exc
    if out.kind not in _DTYPE_KINDS or out.fields is not None:
        raise InvalidArgumentError(
            f"dtype {out} is not supported; use a bool, integer, float or complex dtype"
        )
    try:
        get_data_type_from_native_dtype(out)
    except ValueError:
        # zarr's own list of the dtypes it stores, rather than ours: they cannot drift apart.
        raise InvalidArgumentError(
            f"dtype {out} cannot be stored in a zarr (format 2) array; use float64 or "
            "complex128 for the widest floats"
        ) from None
    return out


def check_flag(value: Any, what: str) -> bool:
    """Return ``value`` if it is a bool (``numpy.bool_`` too).

    A flag is not taken by truth value: ``dry_run="no"`` would mean yes.

    Raises
    ------
    InvalidArgumentError
        For anything else.
    """
    if not isinstance(value, bool | np.bool_):
        raise InvalidArgumentError(
            f"{what} must be True or False, not {value!r} ({type(value).__name__})"
        )
    return bool(value)


def check_ddof(ddof: Any) -> int:
    """Return ``ddof`` (delta degrees of freedom) if it is a non-negative integer.

    Raises
    ------
    InvalidArgumentError
        For a bool, a float, a negative integer or anything else.
    """
    if isinstance(ddof, bool | np.bool_) or not isinstance(ddof, int | np.integer) or ddof < 0:
        raise InvalidArgumentError(
            f"ddof must be a non-negative integer, not {ddof!r} ({type(ddof).__name__})"
        )
    return int(ddof)


def check_chunks(chunks: Any, shape: tuple[int, ...], dtype: np.dtype[Any]) -> tuple[int, ...]:
    """Return ``chunks`` as a tuple of positive ints of the same rank as ``shape``.

    Raises
    ------
    InvalidArgumentError
        If a chunk dimension is not a positive integer, the rank differs from the shape's, or a
        chunk would exceed :data:`MAX_CHUNK_BYTES`.
    """
    dims = _as_tuple(chunks, "chunks")
    out = tuple(_as_int(c, f"chunks dimension {i}") for i, c in enumerate(dims))
    if len(out) != len(shape):
        raise InvalidArgumentError(
            f"chunks {out} have {len(out)} dimensions but the shape {shape} has {len(shape)}; "
            "give one chunk length per dimension"
        )
    for i, c in enumerate(out):
        if c <= 0:
            raise InvalidArgumentError(
                f"chunks {out} are invalid: dimension {i} is {c}; every chunk length must be "
                "a positive integer"
            )
    # zarr allocates and encodes whole chunks, also where they overhang the array's edge.
    nbytes = math.prod(out) * dtype.itemsize
    if nbytes > MAX_CHUNK_BYTES:
        raise InvalidArgumentError(
            f"chunks {out} of {dtype} hold {nbytes / 2**20:.0f} MiB each, over the "
            f"{MAX_CHUNK_BYTES // 2**20} MiB limit; use smaller chunks (a few MiB is best)"
        )
    return out


def default_chunks(shape: tuple[int, ...], dtype: np.dtype[Any]) -> tuple[int, ...]:
    """Choose MB-scale chunks so that one sample along the first axis is cheap to touch.

    A sample (``array[i]``) of at least 256 KiB gets a chunk of its own, split along its
    largest dimensions until it is at most 2 MiB; smaller samples are grouped until a chunk
    holds about 2 MiB.
    """
    if not shape:
        return ()
    sample = math.prod(shape[1:]) * dtype.itemsize
    if sample < _SAMPLE_CHUNK_BYTES:
        return (max(1, min(shape[0], _TARGET_CHUNK_BYTES // max(sample, 1))), *shape[1:])
    rest = list(shape[1:])
    while math.prod(rest) * dtype.itemsize > _TARGET_CHUNK_BYTES:
        i = max(range(len(rest)), key=rest.__getitem__)
        rest[i] = -(-rest[i] // 2)
    return (1, *rest)


def check_compressor(compressor: Any) -> Codec | None:
    """Accept ``None`` or a safe numcodecs codec.

    Raises
    ------
    InvalidArgumentError
        If ``compressor`` is not a numcodecs codec, or one that (de)serialises objects.
    """
    if compressor is None:
        return None
    if not isinstance(compressor, Codec):
        raise InvalidArgumentError(
            f"compressor must be a numcodecs codec such as numcodecs.Blosc() or None, not "
            f"{compressor!r}"
        )
    if compressor.codec_id in _UNSAFE_CODECS:
        raise InvalidArgumentError(
            f"compressor {compressor.codec_id!r} (de)serialises Python objects and is not "
            "allowed; use numcodecs.Blosc, Zstd or GZip"
        )
    return compressor


def cast_value(value: Any, dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    """Convert ``value`` to ``dtype`` only if no value changes (beyond float rounding).

    Integers must fit the target's range; floats stored into an integer dtype must be whole;
    nothing but bools goes into bool; complex goes only into complex.

    Raises
    ------
    UnsafeCastError
        If a value would be truncated, wrapped or otherwise changed.
    """
    try:
        arr = np.asarray(value)
    except (OverflowError, ValueError, TypeError) as exc:
        raise UnsafeCastError(f"cannot store {value!r} in an array of {dtype}: {exc}") from exc
    if arr.dtype == dtype:
        return arr
    if arr.dtype.kind not in _DTYPE_KINDS:
        raise UnsafeCastError(
            f"cannot store values of type {arr.dtype} in an array of {dtype}; pass numbers"
        )
    if np.can_cast(arr.dtype, dtype, "safe"):
        return arr.astype(dtype)

    def refuse(why: str) -> UnsafeCastError:
        return UnsafeCastError(
            f"refusing to store {arr.dtype} values in an array of {dtype}: {why}; convert "
            "them explicitly (for example with numpy's round and astype) if that is intended"
        )

    src, dst = arr.dtype.kind, dtype.kind
    if src == "c" and dst != "c":
        raise refuse("complex values would lose their imaginary part")
    if dst == "b":
        if src not in "iu" or (arr.size and not bool(np.all((arr == 0) | (arr == 1)))):
            raise refuse("only booleans, or the integers 0 and 1, go into a bool array")
    elif dst in "iu":
        if src == "f" and arr.size and not bool(np.all(np.isfinite(arr) & (arr == np.trunc(arr)))):
            raise refuse("some values are not whole numbers (or are NaN or infinite)")
        info = np.iinfo(dtype)
        # Compare floats against exact powers of two: float(info.max) rounds up past the range.
        low, high = (info.min, info.max + 1) if src in "iu" else (float(info.min), 2.0**info.bits)
        if dst == "i" and src == "f":
            high = 2.0 ** (info.bits - 1)
        if arr.size and (arr.min() < low or arr.max() >= high):
            raise refuse(f"some values are outside [{info.min}, {info.max}]")
    elif arr.size:  # a float or complex target: finite values must stay finite
        parts = (arr.real, arr.imag) if src == "c" else (arr,)
        largest = np.finfo(dtype).max
        for part in parts:
            finite = part[np.isfinite(part)] if part.dtype.kind == "f" else part
            if finite.size and np.max(np.abs(finite)) > largest:
                raise refuse(f"some values exceed the largest {dtype} ({largest})")
    return arr.astype(dtype)


def _normalize_index(
    key: Any, shape: tuple[int, ...]
) -> tuple[tuple[int | slice, ...], tuple[int, ...], tuple[int, ...]]:
    """Turn a basic numpy index into (zarr selection, result shape, result axes to flip)."""
    items = key if isinstance(key, tuple) else (key,)
    ellipses = [i for i, k in enumerate(items) if k is Ellipsis]
    if len(ellipses) > 1:
        raise InvalidIndexError("an index can only have a single Ellipsis ('...')")
    if ellipses:
        at = ellipses[0]
        fill = len(shape) - (len(items) - 1)
        items = (*items[:at], *(slice(None),) * max(fill, 0), *items[at + 1 :])
    if len(items) > len(shape):
        raise InvalidIndexError(
            f"too many indices: the array has {len(shape)} dimensions but {len(items)} were given"
        )
    items = items + (slice(None),) * (len(shape) - len(items))
    selection: list[int | slice] = []
    out_shape: list[int] = []
    flips: list[int] = []
    for axis, (item, size) in enumerate(zip(items, shape, strict=True)):
        if isinstance(item, slice):
            try:
                start, stop, step = item.indices(size)
            except (TypeError, ValueError) as exc:
                raise InvalidIndexError(
                    f"invalid slice {item} for axis {axis}: {exc}; slice bounds and steps "
                    "must be integers and the step non-zero"
                ) from exc
            span = range(start, stop, step)
            if step < 0 and span:
                flips.append(len(out_shape))
                span = span[::-1]
            selection.append(slice(span.start, span.stop, span.step) if len(span) else slice(0, 0))
            out_shape.append(len(span))
            continue
        if isinstance(item, bool | np.bool_):
            raise InvalidIndexError("boolean indices are not supported; use slices or integers")
        try:
            i = operator.index(item)
        except TypeError:
            raise InvalidIndexError(
                f"unsupported index {item!r} for axis {axis}: only integers, slices and "
                "Ellipsis are supported"
            ) from None
        if not -size <= i < size:
            raise InvalidIndexError(f"index {i} is out of bounds for axis {axis} with size {size}")
        selection.append(i % size)
    return tuple(selection), tuple(out_shape), tuple(flips)


class Shaped:
    """``ndim``, ``size``, ``nbytes`` and ``len()``, from the ``shape`` and ``dtype`` of an
    array-like (:class:`HubArray`, :class:`hubzarr.bulk.LazyArray`)."""

    @property
    def shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    @property
    def dtype(self) -> np.dtype[Any]:
        raise NotImplementedError

    @property
    def ndim(self) -> int:
        """The number of dimensions."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """The number of elements."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """The size in bytes, uncompressed."""
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d array")
        return self.shape[0]


class HubArray(Shaped):
    """A numpy-like array stored in a hubzarr repository.

    Create one with :func:`hubzarr.array` or open one with :func:`hubzarr.load`. Reads return
    numpy arrays and touch only the chunks they need; writes are stored when the assignment
    returns.

    Parameters
    ----------
    store : HubStore
        The repository at a ref.
    zarray : zarr.Array, optional
        The zarr array on ``store``, if already open.
    path : str
        Where the array lies in the repository: ``""`` for a repository that is one array,
        else its key in the group (``"images"``, ``"train/labels"``).
    """

    def __init__(
        self, store: HubStore, zarray: zarr.Array[Any] | None = None, path: str = ""
    ) -> None:
        self._store = store
        self._zarray = zarray
        self._path = path

    def __getstate__(self) -> dict[str, Any]:
        return {"store": self._store, "path": self._path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._store = state["store"]
        self._path = state.get("path", "")
        self._zarray = None

    # -- what it is ----------------------------------------------------------------------

    @property
    def zarr(self) -> zarr.Array[Any]:
        """The underlying ``zarr.Array`` (format 2) on the hub store."""
        if self._zarray is None:
            # Not at the top: hubzarr.metadata builds on this module's limits.
            from hubzarr.metadata import open_zarr_array

            self._zarray = open_zarr_array(self._store, self._path)
        return self._zarray

    @property
    def store(self) -> HubStore:
        """The zarr store this array lives in."""
        return self._store

    @property
    def path(self) -> str:
        """The array's key in its repository's group; ``""`` for a repository that is one array."""
        return self._path

    @property
    def name(self) -> str:
        """The name this array was opened by, ``user/name[:ref]``."""
        return str(self._store.name)

    @property
    def version(self) -> str:
        """The version id read (and, at a branch, written): the head for a branch."""
        self._store.follow_head()
        return sync(self._store.resolved()).version

    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape."""
        return tuple(self.zarr.shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        """The array's numpy dtype."""
        return np.dtype(self.zarr.dtype)

    @property
    def chunks(self) -> tuple[int, ...]:
        """The chunk shape."""
        return tuple(self.zarr.chunks)

    @property
    def read_only(self) -> bool:
        """Whether writes are refused (a tag, a sealed version, or mode='r')."""
        return self._store.read_only

    def __repr__(self) -> str:
        mode = " read-only" if self.read_only else ""
        path = f" path={self._path!r}" if self._path else ""
        return (
            f"<HubArray {self.name}{path} version={self.version}{mode} shape={self.shape} "
            f"dtype={self.dtype} chunks={self.chunks}>"
        )

    # -- reading and writing -------------------------------------------------------------

    def __getitem__(self, key: Any) -> npt.NDArray[Any]:
        self._store.follow_head()
        return self._read(key)

    def _read(self, key: Any) -> npt.NDArray[Any]:
        selection, _, flips = _normalize_index(key, self.shape)
        target = self.zarr
        try:
            out = np.asarray(target[selection])
        except HubError:
            raise
        except Exception as exc:
            self._name_the_broken_chunk(selection, exc)
            raise
        return np.flip(out, axis=flips) if flips else out

    def _name_the_broken_chunk(self, selection: tuple[int | slice, ...], exc: Exception) -> None:
        """Raise :class:`CorruptChunkError` naming the chunk of ``selection`` that does not
        decode, if one does not: zarr runs the codecs itself and lets their errors through
        as they are (a RuntimeError from Blosc, a ValueError from a reshape), naming no key.

        Only on that failure path: each chunk the selection touches is read again and decoded
        as the bulk readers decode (with the same checks), so the cost of the read is paid
        twice, once.
        """
        from hubzarr.bulk import check_chunks_decode

        check_chunks_decode(self, selection, exc)

    def __setitem__(self, key: Any, value: Any) -> None:
        target = self.zarr
        self._store.check_writable()
        if _is_dask(value):
            from hubzarr.bulk import assign

            assign(self, key, value)
            return
        selection, out_shape, flips = _normalize_index(key, self.shape)
        data = cast_value(value, self.dtype)
        try:
            data = np.broadcast_to(data, out_shape)
        except ValueError:
            raise InvalidArgumentError(
                f"cannot assign a value of shape {data.shape} to a selection of shape "
                f"{out_shape}; the shapes must broadcast"
            ) from None
        if flips:
            data = np.flip(data, axis=flips)
        # zarr reads a chunk the selection covers only in part, merges, and writes it back.
        # Under conditional_writes each such write succeeds only if the chunk is still the
        # one read (compare-and-swap on write-once generations); otherwise another writer or a
        # seal got there first and the whole assignment is repeated from fresh reads. Writing
        # the same values again is harmless, so no update of anyone is ever lost.
        for attempt in range(_WRITE_ATTEMPTS):
            try:
                with conditional_writes():
                    target[selection] = data
            except ConflictError:
                time.sleep(random.uniform(0, min(_BACKOFF_CAP_S, 0.002 * 2**attempt)))
                self._store.follow_head()
                continue
            except HubError:
                raise
            except Exception as exc:
                # A chunk written in part is read and decoded first, by zarr's codecs.
                self._name_the_broken_chunk(selection, exc)
                raise
            return
        raise ConflictError(
            f"{self.name}: other writers kept changing the chunks of {key!r} during "
            f"{_WRITE_ATTEMPTS} attempts to write part of them; some chunks may already hold "
            "the new values and the assignment is safe to repeat: try it again"
        )

    # -- bulk computation ----------------------------------------------------------------

    @property
    def lazy(self) -> _LazyIndexer:
        """Lazy selections: ``array.lazy[0:10, 100:200].mean()`` reads only what it needs.

        ``array.lazy[index]`` takes any basic index (integers, slices with steps, Ellipsis)
        and returns a :class:`hubzarr.bulk.LazyArray` with ``.dask``, reductions and
        ``.compute()``; nothing is read until then.
        """
        return _LazyIndexer(self)

    def _whole(self) -> LazyArray:
        from hubzarr.bulk import LazyArray

        return LazyArray.whole(self)

    @property
    def dask(self) -> Any:
        """A ``dask.array.Array`` over this array, built by hubzarr (see
        :attr:`hubzarr.bulk.LazyArray.dask`): blocks of whole chunks, fetched concurrently and
        decoded in place. It reads the version the array is at when the graph is built.
        """
        return self._whole().dask

    def sum(self, *, progress: bool = False) -> Any:
        """Sum of all values, in one parallel pass: exact for integers, float64 for floats.

        ``progress=True`` shows a progress bar (on stderr, or dask.distributed's).

        Raises
        ------
        InvalidArgumentError
            If ``progress`` is not a bool (checked before anything is read).
        CorruptChunkError
            If a chunk is corrupt or does not decode.
        """
        check_flag(progress, "progress")
        return self._whole().sum(progress=progress)

    def mean(self, *, progress: bool = False) -> Any:
        """Mean of all values, in one parallel pass, accumulated in float64.

        Raises
        ------
        InvalidArgumentError
            If ``progress`` is not a bool (checked before anything is read).
        CorruptChunkError
            If a chunk is corrupt or does not decode.
        """
        check_flag(progress, "progress")
        return self._whole().mean(progress=progress)

    def var(self, *, ddof: int = 0, progress: bool = False) -> Any:
        """Variance of all values, in one parallel pass (parallel moments, float64).

        Raises
        ------
        InvalidArgumentError
            If ``ddof`` is not a non-negative integer or ``progress`` not a bool (checked
            before anything is read).
        CorruptChunkError
            If a chunk is corrupt or does not decode.
        """
        check_ddof(ddof)
        check_flag(progress, "progress")
        return self._whole().var(ddof=ddof, progress=progress)

    def std(self, *, ddof: int = 0, progress: bool = False) -> Any:
        """Standard deviation of all values, in one parallel pass (parallel moments, float64).

        Raises
        ------
        InvalidArgumentError
            If ``ddof`` is not a non-negative integer or ``progress`` not a bool (checked
            before anything is read).
        CorruptChunkError
            If a chunk is corrupt or does not decode.
        """
        check_ddof(ddof)
        check_flag(progress, "progress")
        return self._whole().std(ddof=ddof, progress=progress)

    def min(self, *, progress: bool = False) -> Any:
        """Smallest value, in one parallel pass.

        Raises
        ------
        InvalidArgumentError
            If ``progress`` is not a bool (checked before anything is read), or the array
            is complex.
        CorruptChunkError
            If a chunk is corrupt or does not decode.
        """
        check_flag(progress, "progress")
        return self._whole().min(progress=progress)

    def max(self, *, progress: bool = False) -> Any:
        """Largest value, in one parallel pass.

        Raises
        ------
        InvalidArgumentError
            If ``progress`` is not a bool (checked before anything is read), or the array
            is complex.
        CorruptChunkError
            If a chunk is corrupt or does not decode.
        """
        check_flag(progress, "progress")
        return self._whole().max(progress=progress)

    def histogram(
        self,
        bins: Any = 10,
        range: tuple[float, float] | None = None,
        *,
        progress: bool = False,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[Any]]:
        """Histogram of all values, as :func:`numpy.histogram` (see
        :meth:`hubzarr.bulk.LazyArray.histogram`).

        Raises
        ------
        InvalidArgumentError
            If ``bins``, ``range`` or ``progress`` are unusable (checked before anything is
            read), or the array is complex.
        CorruptChunkError
            If a chunk is corrupt or does not decode.
        """
        from hubzarr.bulk import check_histogram

        check_histogram(bins, range, progress)
        return self._whole().histogram(bins, range, progress=progress)


def _is_dask(value: Any) -> bool:
    return hasattr(value, "__dask_graph__") and hasattr(value, "dtype") and hasattr(value, "shape")


class _LazyIndexer:
    """``array.lazy[index]``."""

    def __init__(self, array: HubArray) -> None:
        self._array = array

    def __getitem__(self, key: Any) -> LazyArray:
        return self._array._whole()[key]
