"""The rules an array's spec obeys: shapes, chunks, dtypes, codecs, flags and safe casts.

Pure functions, no I/O: what :func:`hubzarr.array` and ``group.create_array`` check before
anything is written, what :mod:`hubzarr.metadata` checks again when a ``.zarray`` is read, and
the casting rule every assignment obeys (no value may change on its way into the array).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numcodecs
import numpy as np
import numpy.typing as npt
from numcodecs.abc import Codec
from zarr.core.dtype import get_data_type_from_native_dtype

from hubzarr.errors import InvalidArgumentError, UnsafeCastError

__all__ = [
    "DEFAULT_COMPRESSOR",
    "DTYPE_KINDS",
    "MAX_CHUNK_BYTES",
    "UNSAFE_CODECS",
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
#: Default chunks aim at this many bytes ...
_TARGET_CHUNK_BYTES = 2 * 2**20
#: ... but a sample this large gets a chunk of its own along the first axis.
_SAMPLE_CHUNK_BYTES = 256 * 2**10
#: Codecs that execute or deserialise arbitrary objects; never accepted.
UNSAFE_CODECS = frozenset({"pickle", "json2", "msgpack2", "vlen-utf8", "vlen-bytes", "vlen-array"})
#: numpy kinds of the dtypes hubzarr stores: bool, signed and unsigned integer, float, complex.
DTYPE_KINDS = "biufc"


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
    if out.kind not in DTYPE_KINDS or out.fields is not None:
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
    if compressor.codec_id in UNSAFE_CODECS:
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
    if arr.dtype.kind not in DTYPE_KINDS:
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
