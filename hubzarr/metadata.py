"""Opening a stored array: its zarr metadata (``.zarray``, ``.zattrs``) is checked before zarr
sees it.

A ``.zarray`` is plain JSON that anyone with write access to the root can edit, and zarr trusts
it: a chunk length of 0 surfaces later as a ``ZeroDivisionError``, a shape of ``[true]`` or a
fill value of ``2`` for a bool array is taken silently, and a ``pickle`` compressor would be
instantiated and run on every chunk read. :func:`open_zarr_array` reads both files once,
validates them, and builds the ``zarr.Array`` from the very document it validated (zarr does not
read the metadata again, so a file replaced in between cannot slip through). Any problem is one
:class:`~hubzarr.errors.FormatError` naming the file, the repository and the version.
"""

from __future__ import annotations

import asyncio
import json
import math
import reprlib
from typing import Any

import numpy as np
import zarr
from numcodecs.registry import codec_registry, entries
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import StorePath

from hubzarr.array import _UNSAFE_CODECS, MAX_CHUNK_BYTES
from hubzarr.errors import FormatError, HubError, NotFoundError
from hubzarr.store import HubStore

__all__ = ["open_zarr_array"]

#: Codec ids refused in stored metadata: those :func:`hubzarr.array.check_compressor` refuses
#: on creation, and ``categorize``, which decodes to Python objects (its labels).
_REFUSED_CODECS = _UNSAFE_CODECS | {"categorize"}
#: numpy's limit on the number of dimensions.
_MAX_RANK = 64
#: The largest length numpy can index.
_MAX_LENGTH = 2**63 - 1
#: What zarr needs in a ``.zarray`` (``compressor``, ``filters`` and ``dimension_separator``
#: have defaults).
_REQUIRED = ("zarr_format", "shape", "chunks", "dtype", "fill_value", "order")
_ADVICE = (
    "the file was edited or damaged outside hubzarr: restore it from a copy, or recreate the "
    "array with hubzarr.array(..., overwrite=True)"
)
_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}
# Values quoted in messages come from the file: keep a megabyte-long list out of the message.
_shortened = reprlib.Repr()
_shortened.maxlist = _shortened.maxdict = 8
_shortened.maxstring = _shortened.maxother = 60


def _show(value: Any) -> str:
    return _shortened.repr(value)


def _why(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:200] + "..."


def _json_type(value: Any) -> str:
    return "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)


def _is_int(value: Any) -> bool:
    # JSON true/false arrive as bool, a subclass of int.
    return isinstance(value, int) and not isinstance(value, bool)


def _decode(raw: bytes, where: str) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise FormatError(f"{where} is not UTF-8 text ({_why(exc)}); {_ADVICE}") from exc
    except (ValueError, RecursionError) as exc:
        why = "is empty" if not raw.strip() else f"is not valid JSON ({_why(exc)})"
        raise FormatError(f"{where} {why}; {_ADVICE}") from exc


def _dims(value: Any, what: str, where: str, *, least: int) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise FormatError(f"{where} has {what} {_show(value)}, not a list of integers; {_ADVICE}")
    if len(value) > _MAX_RANK:
        raise FormatError(
            f"{where} has {what} of {len(value)} dimensions, more than numpy's {_MAX_RANK}; "
            f"{_ADVICE}"
        )
    for i, d in enumerate(value):
        if not _is_int(d) or not least <= d <= _MAX_LENGTH:
            raise FormatError(
                f"{where} has {what} {_show(value)}: dimension {i} is {_show(d)}, not an "
                f"integer from {least} to 2**63 - 1; {_ADVICE}"
            )
    return tuple(value)


def _dtype_spec(spec: Any) -> Any:
    """Turn a zarr v2 dtype (a string, or a list of ``[name, dtype(, shape)]`` fields) into what
    ``numpy.dtype`` takes; refuse anything else (``numpy.dtype(None)`` is float64)."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, list) and spec:
        fields = []
        for field in spec:
            if not (
                isinstance(field, list)
                and len(field) in (2, 3)
                and isinstance(field[0], str)
                and (len(field) == 2 or isinstance(field[2], list))
            ):
                raise ValueError(
                    f"field {_show(field)} is not [name, dtype] or [name, dtype, shape]"
                )
            fields.append((field[0], _dtype_spec(field[1]), *map(tuple, field[2:])))
        return fields
    raise ValueError("expected a string such as '<f4' or a list of fields")


def _check_dtype(spec: Any, where: str) -> np.dtype[Any]:
    try:
        dtype: np.dtype[Any] = np.dtype(_dtype_spec(spec))
    except (TypeError, ValueError, RecursionError) as exc:
        raise FormatError(
            f"{where} has dtype {_show(spec)}, which is not a numpy dtype ({_why(exc)}); {_ADVICE}"
        ) from exc
    if dtype.hasobject:
        raise FormatError(
            f"{where} has dtype {_show(spec)}, which holds Python objects that hubzarr never "
            f"decodes; {_ADVICE}"
        )
    return dtype


def _check_codec(config: Any, what: str, where: str) -> None:
    codec_id = config.get("id") if isinstance(config, dict) else None
    if not isinstance(codec_id, str):
        raise FormatError(
            f"{where} has {what} {_show(config)}: expected an object with a string 'id'; {_ADVICE}"
        )
    # Refused by id, before numcodecs could instantiate (or import) anything.
    if codec_id in _REFUSED_CODECS:
        raise FormatError(
            f"{where} names the codec {codec_id!r} as {what}; it (de)serialises Python objects "
            f"and hubzarr never runs it; {_ADVICE}"
        )
    if codec_id not in codec_registry and codec_id not in entries:
        raise FormatError(
            f"{where} names the codec {_show(codec_id)} as {what}, which no installed numcodecs "
            "codec provides; install the package that provides it, or restore the file"
        )


def _fits_float(value: Any, dtype: np.dtype[Any]) -> bool:
    if isinstance(value, str):
        return value in ("NaN", "Infinity", "-Infinity")
    if not (_is_int(value) or isinstance(value, float)):
        return False
    try:
        number = float(value)
    except OverflowError:
        return False
    return not math.isfinite(number) or abs(number) <= float(np.finfo(dtype).max)


def _fill_fits(value: Any, dtype: np.dtype[Any]) -> bool:
    """Whether a JSON fill value of a bool or numeric dtype is that dtype's without change."""
    kind = dtype.kind
    if kind == "b":
        return isinstance(value, bool) or (_is_int(value) and value in (0, 1))
    if kind in "iu":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        info = np.iinfo(dtype)
        return _is_int(value) and info.min <= value <= info.max
    if kind == "f":
        return _fits_float(value, dtype)
    if kind == "c":
        part = np.dtype(f"f{dtype.itemsize // 2}")
        return (
            isinstance(value, list) and len(value) == 2 and all(_fits_float(v, part) for v in value)
        )
    return True  # strings, bytes, dates, structs: zarr's own decoding checks them


def _check_zarray(doc: Any, where: str) -> dict[str, Any]:
    """Validate a decoded ``.zarray`` document.

    Parameters
    ----------
    doc : Any
        The decoded JSON.
    where : str
        How to name the file in an error.

    Returns
    -------
    dict
        The document, with an empty ``filters`` list replaced by ``null`` (zarr warns on one).

    Raises
    ------
    FormatError
        If the document is not a zarr format 2 array of a safe dtype, with safe, installed
        codecs, non-negative integer shape, positive chunks of the same rank at most
        :data:`hubzarr.array.MAX_CHUNK_BYTES` each, and a fill value that fits the dtype.
    """
    if not isinstance(doc, dict):
        raise FormatError(f"{where} is a JSON {_json_type(doc)}, not an object; {_ADVICE}")
    missing = [key for key in _REQUIRED if key not in doc]
    if missing:
        raise FormatError(f"{where} lacks {', '.join(map(repr, missing))}; {_ADVICE}")
    if not _is_int(doc["zarr_format"]) or doc["zarr_format"] != 2:
        raise FormatError(
            f"{where} says zarr_format {_show(doc['zarr_format'])}; hubzarr reads zarr format 2 "
            f"arrays only; {_ADVICE}"
        )
    shape = _dims(doc["shape"], "shape", where, least=0)
    chunks = _dims(doc["chunks"], "chunks", where, least=1)
    if len(chunks) != len(shape):
        raise FormatError(
            f"{where} has chunks {list(chunks)} of rank {len(chunks)} for shape {list(shape)} "
            f"of rank {len(shape)}; {_ADVICE}"
        )
    dtype = _check_dtype(doc["dtype"], where)
    # zarr decodes whole chunks, edge chunks included: this is what one read allocates.
    nbytes = math.prod(chunks) * dtype.itemsize
    if nbytes > MAX_CHUNK_BYTES:
        raise FormatError(
            f"{where} has chunks {list(chunks)} of {dtype}, {nbytes / 2**20:.0f} MiB each, over "
            f"the {MAX_CHUNK_BYTES // 2**20} MiB limit; {_ADVICE}"
        )
    if doc["order"] not in ("C", "F"):
        raise FormatError(f"{where} has order {_show(doc['order'])}, not 'C' or 'F'; {_ADVICE}")
    separator = doc.get("dimension_separator", ".")
    if separator not in (".", "/"):
        raise FormatError(
            f"{where} has dimension_separator {_show(separator)}, not '.' or '/'; {_ADVICE}"
        )
    compressor = doc.get("compressor")
    if compressor is not None:
        _check_codec(compressor, "compressor", where)
    filters = doc.get("filters")
    if filters is not None:
        if not isinstance(filters, list):
            raise FormatError(
                f"{where} has filters {_show(filters)}, not a list or null; {_ADVICE}"
            )
        for i, config in enumerate(filters):
            _check_codec(config, f"filter {i}", where)
    fill = doc["fill_value"]
    if fill is not None and not _fill_fits(fill, dtype):
        raise FormatError(
            f"{where} has fill_value {_show(fill)}, not a value of its dtype {dtype}; {_ADVICE}"
        )
    return {**doc, "filters": filters or None}


async def _get(store: HubStore, key: str) -> bytes | None:
    buffer = await store.get(key, default_buffer_prototype())
    return None if buffer is None else buffer.to_bytes()


async def _open(store: HubStore) -> zarr.Array[Any]:
    version = (await store.resolved()).version
    zarray, zattrs = await asyncio.gather(_get(store, ".zarray"), _get(store, ".zattrs"))
    if zarray is None:
        if await _get(store, ".zgroup") is not None:
            raise NotFoundError(
                f"{store.name} holds a group, not an array (version {version} has a .zgroup "
                f"and no .zarray); open it with zarr.open_group(hubzarr.store({str(store.name)!r}))"
            )
        raise NotFoundError(
            f"{store.name} holds no array: version {version} has no .zarray; create one with "
            "hubzarr.array(..., overwrite=True)"
        )
    where = f"the array metadata file .zarray of {store.name} (version {version})"
    doc = _check_zarray(_decode(zarray, where), where)
    attrs_where = f"the attributes file .zattrs of {store.name} (version {version})"
    attrs = {} if zattrs is None else _decode(zattrs, attrs_where)
    if not isinstance(attrs, dict):
        raise FormatError(f"{attrs_where} is a JSON {_json_type(attrs)}, not an object; {_ADVICE}")
    store_path = await StorePath.open(store, path="", mode="r" if store.read_only else "r+")
    try:
        opened = zarr.AsyncArray.from_dict(store_path, {**doc, "attributes": attrs})
    except HubError:
        raise
    except Exception as exc:
        # What zarr still refuses (a dtype or fill value it cannot decode, codec arguments the
        # codec does not take) is the same kind of damage.
        raise FormatError(f"{where} is not usable by zarr: {_why(exc)}; {_ADVICE}") from exc
    return zarr.Array(opened)


def open_zarr_array(store: HubStore) -> zarr.Array[Any]:
    """Open the zarr (format 2) array of a repository at a ref, after validating its metadata.

    ``.zarray`` and ``.zattrs`` are read once, through ``store``, checked, and handed to zarr as
    checked; no codec is instantiated before its id has been found safe and installed. The array
    is writable unless ``store`` is read-only (a tag, a sealed version, ``mode="r"``).

    Parameters
    ----------
    store : HubStore
        The repository at a branch, tag or version.

    Returns
    -------
    zarr.Array
        The array on ``store``.

    Raises
    ------
    NotFoundError
        If the repository or ref does not exist, or the version holds no array (the message
        says whether it holds a zarr group instead).
    FormatError
        If ``.zarray`` or ``.zattrs`` is not UTF-8 JSON, not an object, not a zarr format 2
        array, has a shape that is not non-negative integers, chunks that are not positive
        integers of the shape's rank or exceed :data:`hubzarr.array.MAX_CHUNK_BYTES`, a dtype
        numpy does not know or one holding Python objects, an unknown codec or one that
        (de)serialises Python objects (pickle, JSON, msgpack, vlen, categorize), an order other
        than ``"C"``/``"F"``, a dimension separator other than ``"."``/``"/"``, or a fill value
        that is not a value of the dtype. The message names the file and version.
    CorruptChunkError
        If a stored metadata object fails its checksum.
    StorageError
        If the storage backend fails.
    """
    result: zarr.Array[Any] = sync(_open(store))
    return result
