"""Array and group metadata: built from checked arguments, and checked again when read.

A ``.zarray`` is plain JSON that anyone with write access to the root can edit, and zarr trusts
it: a chunk length of 0 surfaces later as a ``ZeroDivisionError``, a shape of ``[true]`` or a
fill value of ``2`` for a bool array is taken silently, and a ``pickle`` compressor would be
instantiated and run on every chunk read. :func:`open_zarr_array` reads both files once,
validates them, and builds the ``zarr.Array`` from the very document it validated (zarr does not
read the metadata again, so a file replaced in between cannot slip through). Any problem is one
:class:`~hubzarr.errors.FormatError` naming the file, the repository and the version.

Groups (``.zgroup``) are checked the same way by :func:`open_node`, and
:func:`open_zarr_group` builds a whole ``zarr.Group`` for xarray from the group's consolidated
metadata (``.zmetadata``, which :class:`~hubzarr.stores.HubStore` synthesises), after checking
every document in it. New arrays get their metadata from :func:`array_spec` (which refuses what
zarr would let through) and :func:`metadata_documents`.
"""

from __future__ import annotations

import asyncio
import json
import math
import reprlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Literal

import numcodecs
import numpy as np
import zarr
from numcodecs.abc import Codec
from numcodecs.registry import codec_registry, entries
from zarr.core.buffer import default_buffer_prototype
from zarr.core.dtype import get_data_type_from_native_dtype
from zarr.core.group import GroupMetadata
from zarr.core.sync import sync
from zarr.storage import StorePath

from hubzarr.chunks import Layout
from hubzarr.errors import FormatError, HubError, InvalidArgumentError, NotFoundError
from hubzarr.spec import (
    DEFAULT_COMPRESSOR,
    MAX_CHUNK_BYTES,
    UNSAFE_CODECS,
    cast_value,
    check_chunks,
    check_compressor,
    check_dtype,
    check_shape,
    default_chunks,
)
from hubzarr.stores import HubStore

__all__ = [
    "MAX_ATTRIBUTE_DEPTH",
    "GroupInfo",
    "array_codecs",
    "array_spec",
    "check_stored_metadata",
    "chunk_layout",
    "encode_attributes",
    "group_documents",
    "metadata_documents",
    "node_key",
    "node_kind",
    "open_node",
    "open_node_async",
    "open_zarr_array",
    "open_zarr_group",
    "read_attributes",
]

#: Codec ids refused in stored metadata: those :func:`hubzarr.spec.check_compressor` refuses
#: on creation, and ``categorize``, which decodes to Python objects (its labels).
_REFUSED_CODECS = UNSAFE_CODECS | {"categorize"}
#: Codecs allowed in a dataset's string variables (xarray writes str as ``|O`` with
#: ``vlen-utf8``): they decode to ``str`` or ``bytes`` and nothing else.
_STRING_CODECS = frozenset({"vlen-utf8", "vlen-bytes"})
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
_GROUP_ADVICE = (
    "the file was edited or damaged outside hubzarr: restore it from a copy, or recreate the group"
)
_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}
#: How deep lists and dicts may nest in attributes hubzarr writes. JSON's decoder gives up near
#: Python's recursion limit (lower in a deep call stack), so a deeper value, once stored, could
#: not be read back.
MAX_ATTRIBUTE_DEPTH = 100
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


def _check_dtype(spec: Any, where: str, *, strings: bool = False) -> np.dtype[Any]:
    try:
        dtype: np.dtype[Any] = np.dtype(_dtype_spec(spec))
    except (TypeError, ValueError, RecursionError) as exc:
        raise FormatError(
            f"{where} has dtype {_show(spec)}, which is not a numpy dtype ({_why(exc)}); {_ADVICE}"
        ) from exc
    # With ``strings``, a plain object dtype passes: _check_zarray then requires a string codec.
    if dtype.hasobject and not (strings and dtype == np.dtype(object)):
        raise FormatError(
            f"{where} has dtype {_show(spec)}, which holds Python objects that hubzarr never "
            f"decodes; {_ADVICE}"
        )
    if not dtype.hasobject:
        try:
            get_data_type_from_native_dtype(dtype)
        except (TypeError, ValueError) as exc:
            raise FormatError(
                f"{where} has dtype {_show(spec)}, which zarr format 2 cannot store "
                f"({_why(exc)}); {_ADVICE}"
            ) from exc
    return dtype


def _names_object_dtype(value: Any) -> bool:
    """Whether a codec's argument is a dtype (``"|O"``, ``[["a", "O"]]``) holding objects."""
    if not isinstance(value, str | list):
        return False
    try:
        return bool(np.dtype(_dtype_spec(value)).hasobject)
    except (TypeError, ValueError, RecursionError):
        return False  # not a dtype at all: the codec's constructor judges it


def _check_codec(config: Any, what: str, where: str, allowed: frozenset[str] = frozenset()) -> str:
    codec_id = config.get("id") if isinstance(config, dict) else None
    if not isinstance(codec_id, str):
        raise FormatError(
            f"{where} has {what} {_show(config)}: expected an object with a string 'id'; {_ADVICE}"
        )
    # Refused by id, before numcodecs could instantiate (or import) anything.
    if codec_id in _REFUSED_CODECS - allowed:
        raise FormatError(
            f"{where} names the codec {codec_id!r} as {what}; it (de)serialises Python objects "
            f"and hubzarr never runs it; {_ADVICE}"
        )
    if codec_id not in codec_registry and codec_id not in entries:
        raise FormatError(
            f"{where} names the codec {_show(codec_id)} as {what}, which no installed numcodecs "
            "codec provides; install the package that provides it, or restore the file"
        )
    # An astype or delta to "|O" turns numbers into Python objects, whatever the codec's id.
    for name, value in config.items():
        if name != "id" and _names_object_dtype(value):
            raise FormatError(
                f"{where} gives the {what} {codec_id!r} the dtype {_show(value)} as {name!r}, "
                f"which holds Python objects that hubzarr never decodes; {_ADVICE}"
            )
    return codec_id


def _codec(config: Any, what: str, where: str, allowed: frozenset[str] = frozenset()) -> Codec:
    """Instantiate a codec from stored metadata, once :func:`_check_codec` found it safe."""
    _check_codec(config, what, where, allowed)
    return _build(config, what, where)


def _build(config: dict[str, Any], what: str, where: str) -> Codec:
    """Instantiate a codec whose configuration :func:`_check_codec` accepted."""
    try:
        codec: Codec = numcodecs.get_codec(dict(config))
    except Exception as exc:
        # A codec's constructor raises what it likes (TypeError for an unknown argument,
        # ValueError for a bad level): all of it is damage to the file.
        raise FormatError(
            f"{where} has {what} {_show(config)}, which numcodecs cannot build "
            f"({type(exc).__name__}: {_why(exc)}); {_ADVICE}"
        ) from exc
    return codec


def array_codecs(doc: dict[str, Any], where: str) -> tuple[Codec | None, tuple[Codec, ...]]:
    """Build the compressor and filters of a ``.zarray`` document that :func:`_check_zarray`
    accepted: the one place where codecs named by stored metadata are instantiated.

    Parameters
    ----------
    doc : dict
        The checked document.
    where : str
        How to name the file in an error.

    Returns
    -------
    (compressor, filters)
        The compressor (``None`` if there is none) and the filters, in the document's order.

    Raises
    ------
    FormatError
        If a codec is refused, not installed, or cannot be built from its arguments.
    """
    allowed = _STRING_CODECS if np.dtype(_dtype_spec(doc["dtype"])).hasobject else frozenset()
    compressor = doc.get("compressor")
    filters = doc.get("filters") or ()
    return (
        None if compressor is None else _codec(compressor, "compressor", where),
        tuple(_codec(f, f"filter {i}", where, allowed) for i, f in enumerate(filters)),
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


def _check_zarray(doc: Any, where: str, *, strings: bool = False) -> dict[str, Any]:
    """Validate a decoded ``.zarray`` document.

    Parameters
    ----------
    doc : Any
        The decoded JSON.
    where : str
        How to name the file in an error.
    strings : bool
        Also accept an object dtype decoded by one ``vlen-utf8`` or ``vlen-bytes`` filter (how
        xarray stores ``str`` variables): such a chunk decodes to strings or bytes only.

    Returns
    -------
    dict
        The document, with an empty ``filters`` list replaced by ``null`` (zarr warns on one).

    Raises
    ------
    FormatError
        If the document is not a zarr format 2 array of a safe dtype, with safe, installed
        codecs, non-negative integer shape, positive chunks of the same rank at most
        :data:`hubzarr.spec.MAX_CHUNK_BYTES` each, and a fill value that fits the dtype.
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
    dtype = _check_dtype(doc["dtype"], where, strings=strings)
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
    # Each codec is built here, as zarr will build it, so that arguments its constructor
    # refuses are found now (numcodecs imports and runs only codecs whose id passed).
    # String codecs (allowed only for xarray's string variables) are built by what decodes
    # strings, not to open an array of numbers, which refuses them.
    compressor = doc.get("compressor")
    if compressor is not None:
        _codec(compressor, "compressor", where)
    filters = doc.get("filters")
    ids: list[str] = []
    if filters is not None:
        if not isinstance(filters, list):
            raise FormatError(
                f"{where} has filters {_show(filters)}, not a list or null; {_ADVICE}"
            )
        allowed = _STRING_CODECS if dtype.hasobject else frozenset()
        for i, config in enumerate(filters):
            ids.append(_check_codec(config, f"filter {i}", where, allowed))
            if ids[-1] not in _STRING_CODECS:
                _build(config, f"filter {i}", where)
    if dtype.hasobject and (len(ids) != 1 or ids[0] not in _STRING_CODECS):
        raise FormatError(
            f"{where} has an object dtype with filters {_show(filters)}; hubzarr decodes Python "
            f"objects only as strings, through one 'vlen-utf8' or 'vlen-bytes' filter; {_ADVICE}"
        )
    fill = doc["fill_value"]
    if fill is not None and not _fill_fits(fill, dtype):
        raise FormatError(
            f"{where} has fill_value {_show(fill)}, not a value of its dtype {dtype}; {_ADVICE}"
        )
    return {**doc, "filters": filters or None}


def chunk_layout(doc: dict[str, Any], path: str, where: str) -> Layout:
    """The chunk :class:`~hubzarr.chunks.Layout` of the array at ``path`` whose ``.zarray``
    document :func:`_check_zarray` accepted (string variables included).

    Raises
    ------
    FormatError
        If a codec is refused, not installed, or cannot be built from its arguments.
    """
    dtype = _check_dtype(doc["dtype"], where, strings=True)
    compressor, filters = array_codecs(doc, where)
    return Layout(
        path=path,
        shape=tuple(doc["shape"]),
        chunks=tuple(doc["chunks"]),
        dtype=dtype,
        fill_value=_fill_value(doc["fill_value"], dtype),
        order=doc["order"],
        separator=doc.get("dimension_separator", "."),
        compressor=compressor,
        filters=filters,
    )


def _fill_value(value: Any, dtype: np.dtype[Any]) -> Any:
    """A checked ``.zarray`` fill value as a scalar of ``dtype`` (``None`` if it has none)."""
    if value is None or dtype.hasobject:
        return None

    def number(v: Any) -> Any:
        return float(v) if isinstance(v, str) else v  # "NaN", "Infinity", "-Infinity"

    if dtype.kind == "c":
        value = complex(number(value[0]), number(value[1]))
    return np.asarray(number(value), dtype=dtype)[()]


def check_stored_metadata(key: str, raw: bytes, where: str) -> Layout | None:
    """Validate one stored metadata object (a ``.zarray``, ``.zgroup`` or ``.zattrs``) as
    opening its array or group does; return the chunk layout for a ``.zarray``.

    Parameters
    ----------
    key : str
        Its key in the repository (``".zarray"``, ``"images/.zattrs"``).
    raw : bytes
        Its payload.
    where : str
        How to name it in an error (key, repository, version).

    Raises
    ------
    FormatError
        If it is malformed (see :func:`open_zarr_array`).
    """
    node, _, leaf = key.rpartition("/")
    if leaf == ".zarray":
        where = f"the array metadata file {where}"
        return chunk_layout(_check_zarray(_decode(raw, where), where, strings=True), node, where)
    if leaf == ".zgroup":
        where = f"the group metadata file {where}"
        _check_zgroup(_decode(raw, where), where)
        return None
    _check_attrs(raw, f"the attributes file {where}")
    return None


def node_key(path: str, name: str) -> str:
    """The key of ``name`` (a metadata file or a child) in the node at ``path``."""
    return f"{path}/{name}" if path else name


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """A zarr group found by :func:`open_node`, its metadata checked.

    Attributes
    ----------
    attributes : dict
        The group's ``.zattrs`` (empty if it has none).
    """

    attributes: dict[str, Any]


async def _get(store: HubStore, key: str) -> bytes | None:
    buffer = await store.get(key, default_buffer_prototype())
    return None if buffer is None else buffer.to_bytes()


async def read_attributes(store: HubStore, path: str) -> dict[str, Any]:
    """Read and check the attributes (``.zattrs``) of the node at ``path``; ``{}`` if none.

    Raises
    ------
    FormatError
        If the file is not a UTF-8 JSON object.
    """
    key = node_key(path, ".zattrs")
    return _check_attrs(await _get(store, key), f"the attributes file {key} of {store.name}")


async def node_kind(store: HubStore, path: str) -> Literal["array", "group"] | None:
    """What lies at ``path``: an array, a group, or nothing. Reads its ``.zarray`` and
    ``.zgroup`` (so a conditional write of either later fails if another writer changed it
    meanwhile, see :func:`hubzarr.session.conditional_writes`)."""
    zarray, zgroup = await asyncio.gather(
        _get(store, node_key(path, ".zarray")), _get(store, node_key(path, ".zgroup"))
    )
    if zarray is not None:
        return "array"
    return "group" if zgroup is not None else None


def _describe(store: HubStore, path: str) -> str:
    return f"{store.name}" if not path else f"key {path!r} of {store.name}"


def _check_zgroup(doc: Any, where: str) -> None:
    """Validate a decoded ``.zgroup`` document (extra members, such as the
    ``consolidated_metadata`` zarr-python writes into subgroups, are ignored).

    Raises
    ------
    FormatError
        If the document is not a JSON object saying ``"zarr_format": 2``.
    """
    if not isinstance(doc, dict):
        raise FormatError(f"{where} is a JSON {_json_type(doc)}, not an object; {_GROUP_ADVICE}")
    if "zarr_format" not in doc:
        raise FormatError(f"{where} lacks 'zarr_format'; {_GROUP_ADVICE}")
    if not _is_int(doc["zarr_format"]) or doc["zarr_format"] != 2:
        raise FormatError(
            f"{where} says zarr_format {_show(doc['zarr_format'])}; hubzarr reads zarr format 2 "
            f"groups only; {_GROUP_ADVICE}"
        )


def _check_attrs(raw: bytes | None, where: str) -> dict[str, Any]:
    attrs = {} if raw is None else _decode(raw, where)
    if not isinstance(attrs, dict):
        raise FormatError(f"{where} is a JSON {_json_type(attrs)}, not an object; {_ADVICE}")
    return attrs


def _nests_deeper(value: Any, limit: int) -> bool:
    """Whether lists and dicts nest more than ``limit`` deep in ``value``.

    Depth first and without recursion, so a value nested a million deep (or one that contains
    itself) is judged after ``limit`` steps down, whatever the stack depth.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, list | tuple | dict):
            if depth >= limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def encode_attributes(attrs: dict[str, Any]) -> bytes:
    """Encode the attributes of a group or array as hubzarr stores them (``.zattrs``).

    Parameters
    ----------
    attrs : dict
        JSON values by name: strings, numbers, booleans, ``None``, and lists and dicts of
        them, nested at most :data:`MAX_ATTRIBUTE_DEPTH` deep.

    Returns
    -------
    bytes
        Indented JSON with sorted keys.

    Raises
    ------
    InvalidArgumentError
        If a value is not JSON, or nests deeper than :data:`MAX_ATTRIBUTE_DEPTH` (it could not
        be read back).
    """
    if _nests_deeper(attrs, MAX_ATTRIBUTE_DEPTH):
        raise InvalidArgumentError(
            f"attributes nest lists or dicts more than {MAX_ATTRIBUTE_DEPTH} deep (or contain "
            "themselves); flatten them, or store such data in an array"
        )
    try:
        return json.dumps(attrs, indent=2, sort_keys=True).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidArgumentError(
            f"attributes must be JSON: strings, numbers, booleans, None, and lists and dicts of "
            f"them ({exc}); convert numpy values with .item() or .tolist()"
        ) from exc


def _is_strings(doc: dict[str, Any]) -> bool:
    """Whether a ``.zarray`` (valid with ``strings=True``) is a string variable of xarray's."""
    return bool(np.dtype(_dtype_spec(doc["dtype"])).hasobject)


async def open_node_async(
    store: HubStore, path: str, *, skip_strings: bool = False
) -> zarr.Array[Any] | GroupInfo | None:
    """:func:`open_node`, on the event loop; with ``skip_strings``, ``None`` for xarray's
    string variables instead of an error (a group lists them but holds no HubArray of them)."""
    keys = node_key(path, ".zarray"), node_key(path, ".zattrs")
    version = (await store.session.open_expecting(keys)).version
    try:
        zarray, zattrs = await asyncio.gather(
            _get(store, node_key(path, ".zarray")), _get(store, node_key(path, ".zattrs"))
        )
    finally:
        store.session.done_expecting()
    attrs_where = (
        f"the attributes file {node_key(path, '.zattrs')} of {store.name} (version {version})"
    )
    if zarray is None:
        zgroup = await _get(store, node_key(path, ".zgroup"))
        if zgroup is None:
            if path:
                raise NotFoundError(
                    f"{store.name} has no array or group at key {path!r} (version {version})"
                )
            raise NotFoundError(
                f"{store.name} holds no array: version {version} has no .zarray; create one "
                "with hubzarr.array(..., overwrite=True)"
            )
        where = (
            f"the group metadata file {node_key(path, '.zgroup')} of {store.name} "
            f"(version {version})"
        )
        _check_zgroup(_decode(zgroup, where), where)
        return GroupInfo(_check_attrs(zattrs, attrs_where))
    where = (
        f"the array metadata file {node_key(path, '.zarray')} of {store.name} (version {version})"
    )
    doc = _check_zarray(_decode(zarray, where), where, strings=True)
    if _is_strings(doc):
        if skip_strings:
            return None
        raise FormatError(
            f"{where} describes strings stored as Python objects (an object dtype with a "
            f"{doc['filters'][0]['id']} filter, as xarray stores str variables); a HubArray "
            "holds numbers: read it with "
            f"hubzarr.open_dataset({str(store.name)!r}) or xarray"
        )
    attrs = _check_attrs(zattrs, attrs_where)
    store_path = await StorePath.open(store, path=path, mode="r" if store.read_only else "r+")
    try:
        opened = zarr.AsyncArray.from_dict(store_path, {**doc, "attributes": attrs})
    except HubError:
        raise
    except Exception as exc:
        # What zarr still refuses (a dtype or fill value it cannot decode, codec arguments the
        # codec does not take) is the same kind of damage.
        raise FormatError(f"{where} is not usable by zarr: {_why(exc)}; {_ADVICE}") from exc
    return zarr.Array(opened)


def open_node(store: HubStore, path: str = "") -> zarr.Array[Any] | GroupInfo:
    """Open what lies at ``path`` of a repository: an array, or a group, its metadata checked.

    Reads ``.zarray`` and ``.zattrs`` (and, if there is no ``.zarray``, ``.zgroup``), so an
    array costs what :func:`open_zarr_array` costs.

    Parameters
    ----------
    store : HubStore
        The repository at a branch, tag or version.
    path : str
        The node's key in the repository's group; ``""`` for the repository's root.

    Returns
    -------
    zarr.Array or GroupInfo
        The array, as :func:`open_zarr_array` returns it, or the group's checked attributes.

    Raises
    ------
    NotFoundError
        If the repository or ref does not exist, or nothing lies at ``path``.
    FormatError
        If the metadata is malformed (see :func:`open_zarr_array`; a ``.zgroup`` must be a JSON
        object with ``"zarr_format": 2``).
    """
    result: zarr.Array[Any] | GroupInfo | None = sync(open_node_async(store, path))
    assert result is not None
    return result


def open_zarr_array(store: HubStore, path: str = "") -> zarr.Array[Any]:
    """Open the zarr (format 2) array of a repository at a ref, after validating its metadata.

    ``.zarray`` and ``.zattrs`` are read once, through ``store``, checked, and handed to zarr as
    checked; no codec is instantiated before its id has been found safe and installed. The array
    is writable unless ``store`` is read-only (a tag, a sealed version, ``mode="r"``).

    Parameters
    ----------
    store : HubStore
        The repository at a branch, tag or version.
    path : str
        The array's key in the repository's group; ``""`` for a repository that is one array.

    Returns
    -------
    zarr.Array
        The array on ``store``.

    Raises
    ------
    NotFoundError
        If the repository or ref does not exist, or the version holds no array at ``path`` (the
        message says whether it holds a zarr group instead).
    FormatError
        If ``.zarray`` or ``.zattrs`` is not UTF-8 JSON, not an object, not a zarr format 2
        array, has a shape that is not non-negative integers, chunks that are not positive
        integers of the shape's rank or exceed :data:`hubzarr.spec.MAX_CHUNK_BYTES`, a dtype
        numpy does not know or one holding Python objects, an unknown codec or one that
        (de)serialises Python objects (pickle, JSON, msgpack, vlen, categorize), an order other
        than ``"C"``/``"F"``, a dimension separator other than ``"."``/``"/"``, or a fill value
        that is not a value of the dtype. The message names the file and version.
    CorruptChunkError
        If a stored metadata object fails its checksum.
    StorageError
        If the storage backend fails.
    """
    node = open_node(store, path)
    if isinstance(node, GroupInfo):
        name = str(store.name)
        raise NotFoundError(
            f"{_describe(store, path)} holds a group, not an array (it has a .zgroup and no "
            f".zarray); open it with hubzarr.load({name!r}), which returns the group"
        )
    return node


# -- xarray's view: a whole group from its consolidated metadata ----------------------------


async def _open_group(store: HubStore, path: str) -> zarr.Group:
    version = (await store.session.resolved()).version
    key = node_key(path, ".zmetadata")
    raw = await _get(store, key)
    if raw is None:
        await open_node_async(store, path)  # NotFoundError if nothing is there
        raise NotFoundError(
            f"{_describe(store, path)} holds an array, not a group of variables; open it with "
            f"hubzarr.load({str(store.name)!r})"
        )
    where = f"the consolidated metadata {key} of {store.name} (version {version})"
    document = _decode(raw, where)
    entries = document.get("metadata") if isinstance(document, dict) else None
    if not isinstance(entries, dict) or ".zgroup" not in entries:
        raise FormatError(f"{where} is not consolidated metadata of a group; {_GROUP_ADVICE}")
    # The store builds this document from the files themselves; each is checked as the file.
    nodes: defaultdict[str, dict[str, Any]] = defaultdict(dict)
    for name, doc in entries.items():
        node, _, leaf = name.rpartition("/")
        where = f"{node_key(path, name)} of {store.name} (version {version})"
        if leaf == ".zarray":
            nodes[node].update(_check_zarray(doc, f"the array metadata file {where}", strings=True))
        elif leaf == ".zgroup":
            _check_zgroup(doc, f"the group metadata file {where}")
            nodes[node]["zarr_format"] = 2
        elif leaf == ".zattrs" and isinstance(doc, dict):
            nodes[node]["attributes"] = doc
        else:
            raise FormatError(f"the metadata file {where} is not a JSON object; {_ADVICE}")
    root = nodes.pop("")
    metadata = {
        "zarr_format": 2,
        "attributes": root.get("attributes", {}),
        "consolidated_metadata": {
            "metadata": dict(nodes),
            "kind": "inline",
            "must_understand": False,
        },
    }
    store_path = await StorePath.open(store, path=path, mode="r")
    try:
        group = zarr.AsyncGroup(GroupMetadata.from_dict(metadata), store_path)
    except HubError:
        raise
    except Exception as exc:
        where = f"the consolidated metadata {key} of {store.name} (version {version})"
        raise FormatError(f"{where} is not usable by zarr: {_why(exc)}; {_ADVICE}") from exc
    return zarr.Group(group)


def open_zarr_group(store: HubStore, path: str = "") -> zarr.Group:
    """Open a repository's group at ``path`` as a ``zarr.Group`` holding all its metadata.

    The group's consolidated metadata (``.zmetadata``, synthesised by the store from the
    ``.zgroup``, ``.zarray`` and ``.zattrs`` files at the store's version) is read once, every
    document in it is checked as :func:`open_zarr_array` checks an array's (except that string
    variables stored by xarray, an object dtype with one ``vlen-utf8`` or ``vlen-bytes`` filter,
    pass), and zarr builds the group and its arrays from the checked documents without reading
    the metadata again.

    Parameters
    ----------
    store : HubStore
        The repository at a branch, tag or version.
    path : str
        The group's key; ``""`` for the repository's root group.

    Returns
    -------
    zarr.Group
        The group, read-only.

    Raises
    ------
    NotFoundError
        If the repository or ref does not exist, or no group lies at ``path``.
    FormatError
        If any metadata file of the group is malformed (the message names it).
    """
    result: zarr.Group = sync(_open_group(store, path))
    return result


# -- new nodes -------------------------------------------------------------------------------


def array_spec(
    shape: Any,
    dtype: Any = "float32",
    chunks: Any = None,
    fill_value: Any = 0,
    compressor: Any = DEFAULT_COMPRESSOR,
) -> dict[str, Any]:
    """Check the arguments of a new array; return the keywords of ``zarr.create_array``.

    Parameters
    ----------
    shape : int or tuple of int
        Positive dimensions.
    dtype : numpy dtype-like
        A bool, integer, float or complex dtype.
    chunks : tuple of int, optional
        Chunk shape; default: :func:`hubzarr.spec.default_chunks`.
    fill_value : scalar
        The value of never-written elements; must fit ``dtype`` exactly.
    compressor : numcodecs codec or None
        Default: :data:`hubzarr.spec.DEFAULT_COMPRESSOR`.

    Returns
    -------
    dict
        Format 2 keywords for ``zarr.create_array`` (no ``store``).

    Raises
    ------
    InvalidArgumentError
        If shape, chunks, dtype, fill value or compressor are unusable.
    UnsafeCastError
        If ``fill_value`` does not fit ``dtype``.
    """
    shape = check_shape(shape)
    dtype = check_dtype(dtype)
    chunks = default_chunks(shape, dtype) if chunks is None else check_chunks(chunks, shape, dtype)
    if fill_value is None:
        raise InvalidArgumentError(
            "fill_value=None is not allowed: never-written chunks would read as "
            "uninitialised memory; pass a value such as 0"
        )
    fill = cast_value(fill_value, dtype)
    if fill.ndim != 0:
        raise InvalidArgumentError(f"fill_value must be a scalar, not shape {fill.shape}")
    codec: Codec | None = check_compressor(compressor)
    return {
        "shape": shape,
        "chunks": chunks,
        "dtype": dtype,
        "fill_value": fill.item(),
        "zarr_format": 2,
        "compressors": codec,
        "filters": None,
        "order": "C",
    }


async def _documents(scratch: zarr.storage.MemoryStore) -> dict[str, bytes]:
    prototype = default_buffer_prototype()
    out: dict[str, bytes] = {}
    async for key in scratch.list():
        value = await scratch.get(key, prototype)
        assert value is not None
        out[key] = value.to_bytes()
    return out


def metadata_documents(spec: dict[str, Any]) -> dict[str, bytes]:
    """The metadata objects zarr writes for an array of ``spec`` (see :func:`array_spec`), as
    ``{key: bytes}`` relative to the array (``.zarray``, ``.zattrs``)."""
    scratch = zarr.storage.MemoryStore()
    zarr.create_array(scratch, **spec)
    result: dict[str, bytes] = sync(_documents(scratch))
    return result


def group_documents() -> dict[str, bytes]:
    """The metadata objects zarr writes for an empty format 2 group (``.zgroup``, ``.zattrs``)."""
    scratch = zarr.storage.MemoryStore()
    zarr.create_group(scratch, zarr_format=2)
    result: dict[str, bytes] = sync(_documents(scratch))
    return result
