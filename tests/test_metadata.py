"""Hand-edited or damaged array metadata (``.zarray``, ``.zattrs``): one ``FormatError`` naming
the file and version, at a branch, at a tag and when a pickled array reopens; nothing is
written; codecs that (de)serialise Python objects are never instantiated."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import zarr
from envelopes import framed, unframe
from numcodecs.registry import codec_registry
from zarr.core.sync import sync

import hubzarr
from hubzarr.errors import CorruptChunkError, FormatError, NotFoundError
from hubzarr.metadata import open_zarr_array
from hubzarr.spec import MAX_CHUNK_BYTES
from hubzarr.stores import HubStore

NAME = "u/a"
Edit = Callable[[bytes], bytes]


def _set(**changes: Any) -> Edit:
    """An edit of the stored document: keys set (or, given ``...``, removed)."""

    def edit(payload: bytes) -> bytes:
        doc = json.loads(payload)
        for key, value in changes.items():
            if value is ...:
                del doc[key]
            else:
                doc[key] = value
        return json.dumps(doc).encode()

    return edit


def _raw(data: bytes) -> Edit:
    return lambda _: data


# One test case per kind of damage: (file, edit of its payload).
BAD: dict[str, tuple[str, Edit]] = {
    "truncated JSON": (".zarray", lambda p: p[: len(p) // 2]),
    "empty": (".zarray", _raw(b"")),
    "blank": (".zarray", _raw(b"  \n")),
    "not UTF-8": (".zarray", lambda p: b"\xff\xfe" + p),
    "nested too deep": (".zarray", _raw(b"[" * 100_000)),
    "list, not object": (".zarray", _raw(b"[1, 2]")),
    "string, not object": (".zarray", _raw(b'"shape"')),
    "no dtype": (".zarray", _set(dtype=...)),
    "no shape": (".zarray", _set(shape=...)),
    "zarr_format 3": (".zarray", _set(zarr_format=3)),
    "zarr_format '2'": (".zarray", _set(zarr_format="2")),
    "zarr_format true": (".zarray", _set(zarr_format=True)),
    "negative shape": (".zarray", _set(shape=[-1, 10])),
    "float shape": (".zarray", _set(shape=[10.0, 10])),
    "bool shape": (".zarray", _set(shape=[True, 10])),
    "shape not a list": (".zarray", _set(shape=10)),
    "shape past numpy": (".zarray", _set(shape=[2**64, 10])),
    "rank past numpy": (".zarray", _set(shape=[1] * 65, chunks=[1] * 65)),
    "zero chunks": (".zarray", _set(chunks=[0, 5])),
    "bool chunks": (".zarray", _set(chunks=[True, 5])),
    "chunk rank mismatch": (".zarray", _set(chunks=[5])),
    "huge chunk": (".zarray", _set(chunks=[2**14, 2**14])),  # 1 GiB of float32
    "object dtype": (".zarray", _set(dtype="|O")),
    "object field": (".zarray", _set(dtype=[["a", "<f4"], ["b", "|O"]])),
    "unknown dtype": (".zarray", _set(dtype="<q9")),
    "null dtype": (".zarray", _set(dtype=None)),  # numpy.dtype(None) would be float64
    "dtype zarr refuses": (".zarray", _set(dtype="float32")),  # numpy's name, not zarr's
    "unknown codec id": (".zarray", _set(compressor={"id": "no-such-codec"})),
    "codec without id": (".zarray", _set(compressor={"level": 1})),
    "codec as a string": (".zarray", _set(compressor="zstd")),
    "codec bad arguments": (".zarray", _set(compressor={"id": "zstd", "bogus": 1})),
    "pickle compressor": (".zarray", _set(compressor={"id": "pickle", "protocol": 5})),
    "pickle filter": (".zarray", _set(filters=[{"id": "pickle"}])),
    "JSON filter": (".zarray", _set(filters=[{"id": "json2"}])),
    "MsgPack filter": (".zarray", _set(filters=[{"id": "msgpack2"}])),
    "VLenUTF8 filter": (".zarray", _set(filters=[{"id": "vlen-utf8"}])),
    "VLenArray filter": (".zarray", _set(filters=[{"id": "vlen-array", "dtype": "<f4"}])),
    "Categorize filter": (
        ".zarray",
        _set(filters=[{"id": "categorize", "labels": ["a"], "dtype": "<U1"}]),
    ),
    "filters not a list": (".zarray", _set(filters={"id": "zstd"})),
    "bad order": (".zarray", _set(order="X")),
    "bad separator": (".zarray", _set(dimension_separator="-")),
    "fill value a string": (".zarray", _set(fill_value="abc")),
    "fill value a bool": (".zarray", _set(fill_value=True)),
    "fill value overflows": (".zarray", _set(fill_value=1e39)),
    "fill value a list": (".zarray", _set(fill_value=[1, 2])),
    ".zattrs a list": (".zattrs", _raw(b"[1]")),
    ".zattrs truncated": (".zattrs", _raw(b'{"a": ')),
    ".zattrs not UTF-8": (".zattrs", _raw(b'{"\xff": 1}')),
}


def _path(hub: hubzarr.Hub, key: str) -> str:
    """The storage path of ``key`` (the only object of that name: one version wrote it)."""
    (found,) = [p for p in sync(hub.storage.list(NAME)) if p.rsplit("/", 1)[-1] == key]
    return f"{NAME}/{found}"


def _payload(hub: hubzarr.Hub, path: str) -> bytes:
    raw = sync(hub.storage.read(path))
    assert raw is not None
    payload = unframe(path, raw)
    assert payload is not None
    return payload


def _write(hub: hubzarr.Hub, path: str, payload: bytes) -> None:
    """Replace a stored object's payload as an outside editor would: with a valid checksum."""
    sync(hub.storage.write(path, framed(path, payload)))


def _snapshot(hub: hubzarr.Hub) -> dict[str, bytes]:
    """Every object under the hub root, with its bytes."""
    paths = sync(hub.storage.list(""))
    return {p: sync(hub.storage.read(p)) or b"" for p in paths}


def _version(hub: hubzarr.Hub, name: str) -> str:
    return sync(hub.store(name).session.resolved()).version


def _damaged(hub: hubzarr.Hub, key: str, edit: Edit) -> tuple[hubzarr.HubArray, str]:
    """Create the array, write to it, edit ``key``'s payload, then tag the edited version.

    Returns the array as opened before the edit, and the tagged version.
    """
    arr = hub.array((10, 10), name=NAME, dtype="float32", chunks=(5, 5))
    arr[:6, :3] = 1
    path = _path(hub, key)
    _write(hub, path, edit(_payload(hub, path)))
    return arr, hub.tag(NAME, "t")


@pytest.mark.parametrize(("key", "edit"), BAD.values(), ids=BAD.keys())
def test_damaged_metadata_is_one_format_error(hub: hubzarr.Hub, key: str, edit: Edit) -> None:
    arr, tagged = _damaged(hub, key, edit)
    head = _version(hub, NAME)
    before = _snapshot(hub)
    for name, version, mode in (
        (NAME, head, "r+"),
        (NAME, head, "r"),
        (f"{NAME}:t", tagged, "r"),
        (f"{NAME}:{tagged}", tagged, "r"),
    ):
        with pytest.raises(FormatError) as info:
            hub.load(name, mode=mode)
        assert type(info.value) is FormatError
        message = str(info.value)
        assert key in message, message
        assert version in message, message
        assert NAME in message, message
    # A pickled array (what a dask worker gets) opens its zarr array again on first use.
    reopened = pickle.loads(pickle.dumps(arr))
    with pytest.raises(FormatError) as info:
        _ = reopened.shape
    assert key in str(info.value)
    assert tagged in str(info.value)
    assert _snapshot(hub) == before  # nothing was written


@pytest.mark.parametrize("key", [".zarray", ".zattrs"])
def test_a_failed_checksum_is_a_corrupt_chunk_not_a_format_error(
    hub: hubzarr.Hub, key: str
) -> None:
    arr = hub.array((10, 10), name=NAME, dtype="float32", chunks=(5, 5))
    path = _path(hub, key)
    payload = _payload(hub, path)
    # The payload changed but the stored checksum is the old one: bit rot, not an edit.
    header = framed(path, payload)[: -len(payload)]
    sync(hub.storage.write(path, header + payload.replace(b"}", b"]")))
    tagged = hub.tag(NAME, "t")
    for name in (NAME, f"{NAME}:t"):
        with pytest.raises(CorruptChunkError, match=rf"'\{key}'") as info:
            hub.load(name)
        assert not isinstance(info.value, FormatError)
    with pytest.raises(CorruptChunkError, match=tagged):
        _ = pickle.loads(pickle.dumps(arr)).shape


#: Codecs that (de)serialise Python objects, as numcodecs registers them.
OBJECT_CODECS = [
    "pickle",
    "json2",
    "msgpack2",
    "vlen-utf8",
    "vlen-bytes",
    "vlen-array",
    "categorize",
]


@pytest.mark.parametrize(
    "edit",
    [
        _set(compressor={"id": "pickle"}),
        _set(filters=[{"id": "pickle", "protocol": 5}]),
        _set(dtype="|O", compressor=None, filters=[{"id": "pickle"}]),
        # zarr itself accepts these two and would instantiate the codec:
        _set(dtype="|O", compressor=None, filters=[{"id": "vlen-utf8"}]),
        _set(filters=[{"id": "categorize", "labels": ["a"], "dtype": "<U1"}]),
        _set(dtype="|O", filters=[{"id": "json2"}]),
    ],
    ids=[
        "pickle compressor",
        "pickle filter",
        "pickle, object dtype",
        "vlen-utf8, object dtype",
        "categorize",
        "json2, object dtype",
    ],
)
def test_object_codecs_are_never_instantiated(
    hub: hubzarr.Hub, monkeypatch: pytest.MonkeyPatch, edit: Edit
) -> None:
    calls: list[str] = []

    def tripwire(codec: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(type(codec).__name__)
        raise AssertionError(f"{type(codec).__name__} was used on stored metadata")

    arr, _ = _damaged(hub, ".zarray", edit)
    # After the array was created: numcodecs.get_codec and direct construction both trip.
    for codec_id in OBJECT_CODECS:
        cls = codec_registry.get(codec_id)
        if cls is not None:
            monkeypatch.setattr(cls, "__init__", tripwire)
            monkeypatch.setattr(cls, "decode", tripwire)
    for name in (NAME, f"{NAME}:t"):
        with pytest.raises(FormatError, match="Python objects"):
            hub.load(name)[:]
    with pytest.raises(FormatError, match="Python objects"):
        pickle.loads(pickle.dumps(arr))[:]
    assert calls == []


def test_edits_within_the_format_still_load(hub: hubzarr.Hub) -> None:
    """Validation refuses damage, not what zarr format 2 allows."""
    edit = _set(
        fill_value="NaN", filters=[], compressor={"id": "zstd", "level": 3}, note="extra key"
    )
    arr, _ = _damaged(hub, ".zarray", edit)
    for name in (NAME, f"{NAME}:t"):
        loaded = hub.load(name)
        assert loaded.shape == (10, 10)
        assert np.isnan(loaded[9, 9])  # never written: the new fill value
    assert np.isnan(pickle.loads(pickle.dumps(arr))[9, 9])


def test_a_null_fill_value_reads_as_zero(hub: hubzarr.Hub) -> None:
    _damaged(hub, ".zarray", _set(fill_value=None))
    assert hub.load(f"{NAME}:t")[9, 9] == 0


def test_missing_zattrs_is_no_attributes(hub: hubzarr.Hub) -> None:
    hub.array((10, 10), name=NAME, dtype="float32", chunks=(5, 5))
    sync(hub.storage.delete(_path(hub, ".zattrs")))
    assert dict(hub.load(NAME).zarr.attrs) == {}


def test_a_group_is_not_an_array(hub: hubzarr.Hub) -> None:
    zarr.create_group(hub.store(NAME, mode="w-"), zarr_format=2)
    hub.tag(NAME, "t")
    for name in (NAME, f"{NAME}:t"):
        # load returns the group; opening it as an array says what it is.
        assert isinstance(hub.load(name), hubzarr.HubGroup)
        with pytest.raises(NotFoundError, match="holds a group, not an array"):
            open_zarr_array(hub.store(name))


def test_an_empty_repository_holds_no_array(hub: hubzarr.Hub) -> None:
    hub.store(NAME, mode="w-")
    with pytest.raises(NotFoundError, match="holds no array") as info:
        hub.load(NAME)
    assert _version(hub, NAME) in str(info.value)


def test_the_chunk_limit_is_the_creation_limit(hub: hubzarr.Hub) -> None:
    """A chunk exactly at the limit loads; one element more is refused."""
    side = 2**13  # 8192 x 8192 float64 chunks: 512 MiB
    assert side * side * 8 == MAX_CHUNK_BYTES
    hub.array((side, side), name=NAME, dtype="float64", chunks=(side, side))
    assert hub.load(NAME).chunks == (side, side)
    path = _path(hub, ".zarray")
    _write(hub, path, _set(chunks=[side, side + 1])(_payload(hub, path)))
    with pytest.raises(FormatError, match="512 MiB limit"):
        hub.load(NAME)


def test_the_metadata_zarr_uses_is_the_metadata_checked(
    hub: hubzarr.Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each file is read once: zarr gets the checked document, not a second read that a
    concurrent edit could have replaced."""
    hub.array((10, 10), name=NAME, dtype="float32", chunks=(5, 5))
    hub.tag(NAME, "t")
    keys: list[str] = []
    get = HubStore.get

    async def counted(self: HubStore, key: str, *args: Any, **kwargs: Any) -> Any:
        keys.append(key)
        return await get(self, key, *args, **kwargs)

    monkeypatch.setattr(HubStore, "get", counted)
    for name in (NAME, f"{NAME}:t"):
        keys.clear()
        assert hub.load(name).shape == (10, 10)
        assert sorted(keys) == [".zarray", ".zattrs"]
