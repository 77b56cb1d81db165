"""Groups: repositories holding several arrays and subgroups by key; versions of all at once,
refused input that changes nothing, malformed group metadata, verify of every array, hub info."""

from __future__ import annotations

import json
import pickle
import threading
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr
from conftest import Backend
from envelopes import framed
from typer.testing import CliRunner
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

import hubzarr
from hubzarr.cli import app
from hubzarr.errors import (
    AlreadyExistsError,
    FormatError,
    InvalidArgumentError,
    NotFoundError,
    ReadOnlyError,
    UnsafeCastError,
)
from hubzarr.storage import TMP_SUFFIX

NAME = "team/ds"


def _snapshot(hub: hubzarr.Hub) -> dict[str, bytes]:
    """Every object under the hub root, with its bytes."""
    return {p: sync(hub.storage.read(p)) or b"" for p in sync(hub.storage.list(""))}


def _filled(hub: hubzarr.Hub, name: str = NAME) -> hubzarr.HubGroup:
    """A group with an array ``images`` and an array ``train/labels``, both written."""
    group = hub.group(name)
    group.create_array("images", (4, 3), dtype="float32", chunks=(2, 3))[:] = np.arange(
        12, dtype="float32"
    ).reshape(4, 3)
    group.create_array("train/labels", (4,), dtype="int16", chunks=(2,))[:] = [1, 2, 3, 4]
    return group


def _array(node: hubzarr.HubArray | hubzarr.HubGroup) -> hubzarr.HubArray:
    assert isinstance(node, hubzarr.HubArray)
    return node


def _group(node: hubzarr.HubArray | hubzarr.HubGroup) -> hubzarr.HubGroup:
    assert isinstance(node, hubzarr.HubGroup)
    return node


# -- members ---------------------------------------------------------------------------------


def test_a_group_holds_arrays_and_subgroups_by_key(hub: hubzarr.Hub) -> None:
    group = _filled(hub)
    assert isinstance(group, hubzarr.HubGroup)
    assert group.name == f"{NAME}:main" and group.path == "" and not group.read_only
    assert group.keys() == ["images", "train"] == list(group)
    assert len(group) == 2
    assert "images" in group and "train/labels" in group
    assert "labels" not in group and "../x" not in group and 3 not in group
    assert [(k, a.path) for k, a in group.arrays()] == [("images", "images")]
    [(key, train)] = group.groups()
    assert key == "train" and train.path == "train" and train.keys() == ["labels"]
    labels = _array(group["train/labels"])
    assert labels.path == "train/labels" and labels.shape == (4,) and labels.dtype == "int16"
    np.testing.assert_array_equal(labels[:], [1, 2, 3, 4])
    np.testing.assert_array_equal(_array(_group(group["train"])["labels"])[:], [1, 2, 3, 4])
    np.testing.assert_array_equal(_array(group["images"])[1], [3, 4, 5])
    assert "path='train/labels'" in repr(labels) and "path='train'" in repr(train)
    assert repr(group).startswith(f"<HubGroup {NAME}:main version=")
    # Each array's chunks lie under its own key, where zarr looks for them.
    opened = zarr.open_group(hubzarr.store(NAME, root=hub.root), mode="r", zarr_format=2)
    np.testing.assert_array_equal(opened["train/labels"][:], [1, 2, 3, 4])
    np.testing.assert_array_equal(opened["images"][:], _array(group["images"])[:])


def test_load_returns_a_group_and_arrays_as_before(hub: hubzarr.Hub) -> None:
    _filled(hub)
    hub.array((3,), "team/single", dtype="int8")[:] = 7
    loaded = hub.load(NAME)
    assert isinstance(loaded, hubzarr.HubGroup) and loaded.keys() == ["images", "train"]
    assert isinstance(hubzarr.load(NAME, mode="r", root=hub.root), hubzarr.HubGroup)
    assert _group(hub.load(NAME, mode="r")).read_only
    single = hub.load("team/single")
    assert isinstance(single, hubzarr.HubArray) and single.path == ""
    np.testing.assert_array_equal(single[:], [7, 7, 7])


def test_group_opens_an_existing_group_and_refuses_an_array(hub: hubzarr.Hub) -> None:
    _filled(hub)
    again = hub.group(NAME)
    assert again.keys() == ["images", "train"]
    assert hubzarr.group(NAME, root=hub.root).keys() == ["images", "train"]
    hub.array((2,), "team/arr")
    before = _snapshot(hub)
    with pytest.raises(AlreadyExistsError, match=r"holds an array, not a group.*hubzarr\.load"):
        hub.group("team/arr")
    assert _snapshot(hub) == before


def test_group_makes_an_empty_repository_a_group_at_a_branch_only(hub: hubzarr.Hub) -> None:
    hub.store("team/empty", mode="w-")
    hub.tag("team/empty", "v1")
    with pytest.raises(NotFoundError, match="holds no array"):
        hub.group("team/empty:v1")
    group = hub.group("team/empty")
    group.create_array("x", (2,), dtype="int8")
    assert _group(hub.load("team/empty")).keys() == ["x"]


def test_a_new_group_starts_on_the_named_branch(hub: hubzarr.Hub) -> None:
    group = hub.group("team/dev:dev")
    assert group.name == "team/dev:dev"
    assert [e.refs for e in hub.log("team/dev")] == [("dev",)]


# -- versions --------------------------------------------------------------------------------


def test_a_tag_snapshots_every_array_of_the_group(hub: hubzarr.Hub) -> None:
    group = _filled(hub)
    version = hub.tag(NAME, "v1")
    _array(group["images"])[:] = -1
    _array(group["train/labels"])[0] = 100
    group.create_array("new", (2,), dtype="uint8")[:] = 5
    del group["train"]
    head = _group(hub.load(NAME))
    assert head.keys() == ["images", "new"]
    np.testing.assert_array_equal(_array(head["images"])[:], -np.ones((4, 3)))
    for ref in ("v1", version):
        old = _group(hub.load(f"{NAME}:{ref}"))
        assert old.read_only and old.version == version
        assert old.keys() == ["images", "train"]
        np.testing.assert_array_equal(_array(old["train/labels"])[:], [1, 2, 3, 4])
        np.testing.assert_array_equal(_array(old["images"])[0], [0, 1, 2])


def test_a_branch_of_a_group_is_writable_and_independent(hub: hubzarr.Hub) -> None:
    _filled(hub)
    hub.tag(NAME, "v1")
    hub.branch(f"{NAME}:v1", "dev")
    dev = hub.group(f"{NAME}:dev")
    _array(dev["images"])[0] = 50
    dev.create_array("extra", (1,), dtype="int8")
    assert _group(hub.load(NAME)).keys() == ["images", "train"]
    np.testing.assert_array_equal(_array(_group(hub.load(NAME))["images"])[0], [0, 1, 2])
    assert _group(hub.load(f"{NAME}:dev")).keys() == ["extra", "images", "train"]


def test_writing_at_a_tag_or_version_is_refused_and_changes_nothing(hub: hubzarr.Hub) -> None:
    _filled(hub)
    version = hub.tag(NAME, "v1")
    before = _snapshot(hub)
    for ref in ("v1", version):
        group = hub.group(f"{NAME}:{ref}")
        assert group.read_only
        with pytest.raises(ReadOnlyError, match="Branch from it"):
            group.create_array("x", (2,))
        with pytest.raises(ReadOnlyError):
            group.create_group("sub")
        with pytest.raises(ReadOnlyError):
            del group["images"]
        with pytest.raises(ReadOnlyError):
            group.attrs["title"] = "x"
        with pytest.raises(ReadOnlyError):
            _array(group["images"])[0] = 1
    with pytest.raises(ReadOnlyError, match="mode='r\\+'"):
        _group(hub.load(NAME, mode="r")).create_array("x", (2,))
    assert _snapshot(hub) == before


def test_a_stale_group_handle_follows_a_tag_taken_elsewhere(hub: hubzarr.Hub) -> None:
    group = _filled(hub)
    images = _array(group["images"])
    assert images[0, 0] == 0  # the handle has resolved the head
    hubzarr.Hub(hub.root).tag(NAME, "v1")  # another handle seals that head
    images[0] = 9
    group.create_array("after", (2,), dtype="int8")[:] = 3
    group.attrs["note"] = "after the tag"
    head = _group(hub.load(NAME))
    assert head.keys() == ["after", "images", "train"] and head.attrs["note"] == "after the tag"
    np.testing.assert_array_equal(_array(head["images"])[0], [9, 9, 9])
    tagged = _group(hub.load(f"{NAME}:v1"))
    assert tagged.keys() == ["images", "train"] and dict(tagged.attrs) == {}
    np.testing.assert_array_equal(_array(tagged["images"])[0], [0, 1, 2])


# -- bad input -------------------------------------------------------------------------------

BAD_KEYS = [
    "",
    "/images",
    "images/",
    "train//labels",
    ".",
    "..",
    "train/../images",
    "./images",
    "images~1",
    "train/labels~0",
    ".zarray",
    "train/.zgroup",
    ".zmetadata",
    "a\\b",
    "a\x00b",
    "a\nb",
    f"images{TMP_SUFFIX}",
]


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
def test_malformed_keys_are_refused_and_change_nothing(hub: hubzarr.Hub, key: str) -> None:
    group = _filled(hub)
    before = _snapshot(hub)
    calls = [
        lambda: group[key],
        lambda: group.create_array(key, (2,)),
        lambda: group.create_group(key),
        lambda: group.__delitem__(key),
    ]
    for call in calls:
        with pytest.raises(InvalidArgumentError, match="invalid group key") as info:
            call()
        assert isinstance(info.value, ValueError)
    assert key not in group
    assert _snapshot(hub) == before


def test_a_key_that_is_not_a_string_is_refused(hub: hubzarr.Hub) -> None:
    group = hub.group(NAME)
    with pytest.raises(InvalidArgumentError, match="is a string"):
        group[0]  # type: ignore[index]


def test_a_missing_key_names_the_keys_that_exist(hub: hubzarr.Hub) -> None:
    group = _filled(hub)
    with pytest.raises(NotFoundError, match=r"'imgaes'.*holds 'images', 'train'") as info:
        group["imgaes"]
    assert isinstance(info.value, LookupError)
    with pytest.raises(NotFoundError, match=r"'train/label'.*'train' of it holds 'labels'"):
        group["train/label"]
    with pytest.raises(NotFoundError, match=r"'nothing/here'.*holds nothing"):
        group["nothing/here"]
    with pytest.raises(NotFoundError, match="'gone'"):
        del group["gone"]


def test_creating_over_an_existing_key_is_refused_without_overwrite(hub: hubzarr.Hub) -> None:
    group = _filled(hub)
    before = _snapshot(hub)
    with pytest.raises(AlreadyExistsError, match=r"'images' already exists.*an? array") as info:
        group.create_array("images", (2,))
    assert isinstance(info.value, FileExistsError)
    with pytest.raises(AlreadyExistsError, match=r"'train' already exists.*a group"):
        group.create_array("train", (2,))
    with pytest.raises(AlreadyExistsError, match="overwrite=True"):
        group.create_group("images")
    with pytest.raises(InvalidArgumentError, match="'images' is an array"):
        group.create_array("images/inner", (2,))
    assert _snapshot(hub) == before


def test_overwrite_replaces_a_member_and_none_of_its_chunks_survive(hub: hubzarr.Hub) -> None:
    group = _filled(hub)
    hub.tag(NAME, "v1")
    fresh = group.create_array("images", (4, 3), dtype="float32", chunks=(2, 3), overwrite=True)
    np.testing.assert_array_equal(fresh[:], np.zeros((4, 3)))  # fill, not the old chunks
    sub = group.create_group("train", overwrite=True)
    assert sub.keys() == [] and _group(group["train"]).keys() == []
    np.testing.assert_array_equal(_array(_group(hub.load(f"{NAME}:v1"))["images"])[3], [9, 10, 11])


def test_a_deleted_member_does_not_come_back_through_a_new_one(hub: hubzarr.Hub) -> None:
    group = _filled(hub)
    hub.tag(NAME, "v1")  # the chunks now belong to a sealed ancestor
    del group["train"]
    assert group.keys() == ["images"] and "train/labels" not in group
    with pytest.raises(NotFoundError):
        group["train/labels"]
    again = group.create_array("train/labels", (4,), dtype="int16", chunks=(2,))
    np.testing.assert_array_equal(again[:], [0, 0, 0, 0])  # tombstones, not v1's chunks
    np.testing.assert_array_equal(
        _array(_group(hub.load(f"{NAME}:v1"))["train/labels"])[:], [1, 2, 3, 4]
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"shape": (-1,)}, InvalidArgumentError, "dimension 0 is -1"),
        ({"shape": (2.0,)}, InvalidArgumentError, "must be an integer"),
        ({"shape": (4,), "chunks": (0,)}, InvalidArgumentError, "chunk length"),
        ({"shape": (4,), "dtype": object}, InvalidArgumentError, "not supported"),
        ({"shape": (4,), "fill_value": None}, InvalidArgumentError, "fill_value=None"),
        ({"shape": (4,), "dtype": "int32", "fill_value": 1.7}, UnsafeCastError, "whole"),
        ({"shape": (4,), "compressor": numcodecs.Pickle()}, InvalidArgumentError, "pickle"),
    ],
)
def test_create_array_checks_what_hub_array_checks(
    hub: hubzarr.Hub, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    group = hub.group(NAME)
    before = _snapshot(hub)
    with pytest.raises(error, match=match):
        group.create_array("x", **kwargs)
    with pytest.raises(error, match=match):
        hub.array(name="team/single", **kwargs)
    assert _snapshot(hub) == before


def test_create_array_writes_what_hub_array_writes(hub: hubzarr.Hub) -> None:
    member = hub.group(NAME).create_array("x", (1000, 512, 512), dtype="uint8")
    single = hub.array((1000, 512, 512), "team/single", dtype="uint8")
    assert member.zarr.metadata.to_dict() == single.zarr.metadata.to_dict()
    assert member.chunks == (1, 512, 512)
    assert member.zarr.metadata.to_dict()["compressor"]["cname"] == "lz4"


def test_malformed_group_metadata_is_a_format_error_naming_file_and_version(
    hub: hubzarr.Hub,
) -> None:
    group = _filled(hub)
    store = hubzarr.store(NAME, mode="r+", root=hub.root)
    prototype = default_buffer_prototype()
    for payload, why in [
        (b'{"zarr_format": 3}', "zarr_format 3"),
        (b"[2]", "not an object"),
        (b"{}", "lacks 'zarr_format'"),
        (b'{"zarr_format": tru', "not valid JSON"),
    ]:
        store.set_sync("train/.zgroup", prototype.buffer.from_bytes(payload))
        version = group.version
        with pytest.raises(FormatError, match=why) as info:
            group["train"]
        assert "train/.zgroup" in str(info.value) and version in str(info.value)
        report = hub.verify(NAME)
        assert [p.key for p in report.problems] == ["train/.zgroup"]
    store.set_sync(".zgroup", prototype.buffer.from_bytes(b'{"zarr_format": "2"}'))
    with pytest.raises(FormatError, match=r"group metadata file \.zgroup"):
        hub.load(NAME)


def test_malformed_group_attributes_are_a_format_error(hub: hubzarr.Hub) -> None:
    group = _filled(hub)
    store = hubzarr.store(NAME, mode="r+", root=hub.root)
    store.set_sync(".zattrs", default_buffer_prototype().buffer.from_bytes(b"[1, 2]"))
    with pytest.raises(FormatError, match=r"\.zattrs .*not an object"):
        _ = group.attrs


# -- attributes ------------------------------------------------------------------------------


def test_attributes_are_stored_at_once_and_versioned(hub: hubzarr.Hub) -> None:
    group = _filled(hub)
    assert dict(group.attrs) == {}
    group.attrs["title"] = "mnist"
    group.attrs.update(source="lab", year=2024)
    assert _group(hub.load(NAME)).attrs.asdict() == {
        "title": "mnist",
        "source": "lab",
        "year": 2024,
    }
    hub.tag(NAME, "v1")
    attrs = group.attrs
    del attrs["source"]
    assert dict(attrs) == {"title": "mnist", "year": 2024}
    sub = _group(group["train"])
    sub.attrs = {"split": "train"}
    assert dict(_group(hub.load(NAME)).attrs) == {"title": "mnist", "year": 2024}
    assert dict(_group(_group(hub.load(NAME))["train"]).attrs) == {"split": "train"}
    assert _group(hub.load(f"{NAME}:v1")).attrs["source"] == "lab"
    with pytest.raises(KeyError):
        del group.attrs["missing"]


def test_attributes_that_are_not_json_are_refused_and_change_nothing(hub: hubzarr.Hub) -> None:
    group = _filled(hub)
    group.attrs["ok"] = 1
    before = _snapshot(hub)
    with pytest.raises(InvalidArgumentError, match="JSON"):
        group.attrs["bad"] = np.float32(1.5)
    with pytest.raises(InvalidArgumentError, match="JSON"):
        group.attrs.update(bad={1, 2})
    with pytest.raises(InvalidArgumentError, match="strings"):
        group.attrs.put({1: "x"})  # type: ignore[dict-item]
    assert _snapshot(hub) == before
    assert dict(group.attrs) == {"ok": 1}


def test_concurrent_attribute_updates_lose_none(local_root: str) -> None:
    group = hubzarr.Hub(local_root).group(NAME)
    handles = [hubzarr.Hub(local_root).group(NAME) for _ in range(8)]
    start = threading.Barrier(len(handles))

    def write(i: int) -> None:
        start.wait()
        handles[i].attrs[f"writer{i}"] = i

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(handles))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert dict(group.attrs) == {f"writer{i}": i for i in range(len(handles))}


def test_of_concurrent_creators_of_one_key_exactly_one_wins(local_or_s3: Backend) -> None:
    local_or_s3.hub().group(NAME)
    handles = [local_or_s3.hub().group(NAME) for _ in range(6)]
    start = threading.Barrier(len(handles))
    outcomes: list[str] = []

    def create(i: int) -> None:
        start.wait()
        try:
            handles[i].create_array("x", (4,), dtype="int8", fill_value=i)
            outcomes.append("created")
        except AlreadyExistsError:
            outcomes.append("exists")

    threads = [threading.Thread(target=create, args=(i,)) for i in range(len(handles))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["created"] + ["exists"] * (len(handles) - 1)


# -- on S3, pickled, verified, shown ---------------------------------------------------------


def test_groups_on_local_and_s3(local_or_s3: Backend) -> None:
    hub = local_or_s3.hub()
    group = _filled(hub)
    hub.tag(NAME, "v1")
    _array(group["train/labels"])[:] = 0
    tagged = _group(hub.load(f"{NAME}:v1"))
    assert tagged.keys() == ["images", "train"]
    np.testing.assert_array_equal(_array(tagged["train/labels"])[:], [1, 2, 3, 4])
    np.testing.assert_array_equal(_array(_group(hub.load(NAME))["train/labels"])[:], 0)
    assert hub.verify(f"{NAME}:v1").ok and hub.verify(NAME).ok


def test_a_group_pickles_and_reads_the_same_version(hub: hubzarr.Hub) -> None:
    _filled(hub)
    hub.tag(NAME, "v1")
    group = _group(hub.load(f"{NAME}:v1"))
    clone = pickle.loads(pickle.dumps(group))
    assert clone.version == group.version and clone.keys() == ["images", "train"]
    np.testing.assert_array_equal(_array(clone["train/labels"])[:], [1, 2, 3, 4])


def _stored(local_root: str, key: str) -> Path:
    [path] = [p for p in Path(local_root).rglob(Path(key).name) if str(p).endswith(key)]
    return path


def test_verify_checks_the_chunks_of_every_array_of_a_group(local_root: str) -> None:
    hub = hubzarr.Hub(local_root)
    group = _filled(hub)
    nested = group.create_group("deep/er")
    # '/'-separated chunk keys: the chunk of "deep/er/slash" at (1, 0) is deep/er/slash/1/0.
    slash = zarr.create_array(
        hubzarr.store(NAME, mode="r+", root=local_root),
        name="deep/er/slash",
        shape=(4, 2),
        chunks=(2, 2),
        dtype="int32",
        fill_value=0,
        zarr_format=2,
        chunk_key_encoding={"name": "v2", "separator": "/"},
    )
    slash[:] = 1
    assert nested.keys() == ["slash"]
    assert hub.verify(NAME).ok
    junk = b"framed, with a valid checksum, but no chunk inside"
    for key in ("train/labels/1", "deep/er/slash/1/0"):
        stored = _stored(local_root, key)
        stored.write_bytes(framed(stored, junk))
    raw = bytearray(_stored(local_root, "images/0.0").read_bytes())
    raw[-2] ^= 0x01
    _stored(local_root, "images/0.0").write_bytes(bytes(raw))
    report = hub.verify(NAME)
    assert [p.key for p in report.problems] == ["deep/er/slash/1/0", "images/0.0", "train/labels/1"]
    assert "decompress" in report.problems[0].message
    assert "decompress" in report.problems[2].message


def test_verify_reports_malformed_nested_array_metadata(local_root: str) -> None:
    hub = hubzarr.Hub(local_root)
    group = _filled(hub)
    doc = json.loads(
        _array(group["train/labels"])
        .zarr.metadata.to_buffer_dict(default_buffer_prototype())[".zarray"]
        .to_bytes()
    )
    doc["chunks"] = [0]
    payload = json.dumps(doc).encode()
    stored = _stored(local_root, "train/labels/.zarray")
    stored.write_bytes(framed(stored, payload))
    report = hub.verify(NAME)
    assert [p.key for p in report.problems] == ["train/labels/.zarray"]
    assert "chunks" in report.problems[0].message


def test_hub_info_lists_the_arrays_of_a_group(hub: hubzarr.Hub) -> None:
    _filled(hub)
    hub.tag(NAME, "v1")
    result = CliRunner().invoke(app, ["info", f"{NAME}:v1", "--root", hub.root])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"name:        {NAME}:v1"
    assert lines[1] == "ref:         v1 (tag)"
    assert lines[3] == "group:       2 arrays, 56 B"
    assert lines[4].split() == [
        "images",
        "shape=(4,",
        "3)",
        "dtype=float32",
        "chunks=(2,",
        "3)",
        "size=48",
        "B",
    ]
    assert lines[5].split()[0] == "train/labels"
    assert "dtype=int16" in lines[5]
