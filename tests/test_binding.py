"""Every stored object is bound to its place: a chunk moved, swapped, copied over another or
replaced by a deletion marker is corrupt, never silently wrong data; a repository copied byte
for byte to another name or root stays valid; repositories of the earlier layout still read;
an open head's version id does not open a writable array."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import crc32c
import numpy as np
import pytest
from envelopes import place, unframe

import hubzarr
from hubzarr import frame

NAME = "bind/arr"


def _filled(hub: hubzarr.Hub) -> hubzarr.HubArray:
    arr = hub.array((8, 4), name=NAME, dtype="int32", chunks=(2, 4))
    arr[:] = np.arange(32, dtype="int32").reshape(8, 4)
    return arr


def _objects(root: str, key: str) -> list[Path]:
    """The data objects of ``key`` (every version, every generation), oldest version first."""
    found = [p for p in Path(root).rglob("*") if p.is_file() and "/data/" in str(p)]
    return sorted((p for p in found if place(p)[1] == key), key=lambda p: place(p)[::2])


def _data_files(root: str) -> list[Path]:
    return [p for p in Path(root).rglob("*") if p.is_file() and "/data/" in str(p)]


def _expect_corrupt(hub: hubzarr.Hub, ref: str, key: str, row: int) -> None:
    with pytest.raises(hubzarr.CorruptChunkError, match=key.replace(".", r"\.")):
        hub.load(f"{NAME}:{ref}")[row]
    report = hub.verify(f"{NAME}:{ref}")
    assert not report.ok
    assert key in [p.key for p in report.problems]


def test_swapped_chunk_files_are_corrupt(local_root: str) -> None:
    hub = hubzarr.Hub(local_root)
    _filled(hub)
    hub.tag(NAME, "v1")
    [a], [b] = _objects(local_root, "0.0"), _objects(local_root, "1.0")
    raw_a, raw_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(raw_b)
    b.write_bytes(raw_a)
    _expect_corrupt(hub, "v1", "0.0", 0)
    _expect_corrupt(hub, "v1", "1.0", 2)
    _expect_corrupt(hub, "main", "0.0", 0)  # the head inherits both


def test_a_later_versions_chunk_copied_over_a_tags_is_corrupt(local_root: str) -> None:
    hub = hubzarr.Hub(local_root)
    arr = _filled(hub)
    hub.tag(NAME, "v1")
    arr[0:2] = -1
    hub.tag(NAME, "v2")
    tagged, later = _objects(local_root, "0.0")
    assert place(tagged)[0] != place(later)[0]
    shutil.copyfile(later, tagged)
    _expect_corrupt(hub, "v1", "0.0", 0)
    np.testing.assert_array_equal(hub.load(f"{NAME}:v2")[0], [-1] * 4)


def test_a_later_generation_copied_over_an_earlier_one_is_corrupt(local_root: str) -> None:
    hub = hubzarr.Hub(local_root)
    arr = _filled(hub)
    arr[0:2] = 7  # generation 1 of chunk 0.0 in the same head
    hub.tag(NAME, "v1")
    first, second = _objects(local_root, "0.0")
    assert (place(first)[2], place(second)[2]) == (0, 1)
    # The tag names generation 1: put generation 0's bytes there.
    shutil.copyfile(first, second)
    _expect_corrupt(hub, "v1", "0.0", 0)


@pytest.mark.parametrize("ref", ["v1", "main"])
def test_a_deletion_marker_where_a_write_was_recorded_is_corrupt(local_root: str, ref: str) -> None:
    hub = hubzarr.Hub(local_root)
    _filled(hub)
    hub.tag(NAME, "v1")
    [chunk] = _objects(local_root, "2.0")
    chunk.write_bytes(frame.TOMBSTONE)
    _expect_corrupt(hub, ref, "2.0", 4)


def test_an_unbound_object_in_a_new_repository_is_corrupt(local_root: str) -> None:
    hub = hubzarr.Hub(local_root)
    _filled(hub)
    hub.tag(NAME, "v1")
    [chunk] = _objects(local_root, "3.0")
    payload = unframe(chunk, chunk.read_bytes())
    assert payload is not None
    crc = crc32c.crc32c(payload)
    chunk.write_bytes(b"HZ1D" + crc.to_bytes(4, "big") + payload)  # layout 1's envelope
    _expect_corrupt(hub, "v1", "3.0", 6)


def test_a_repository_copied_byte_for_byte_elsewhere_stays_valid(tmp_path: Path) -> None:
    source = str(tmp_path / "one")
    hub = hubzarr.Hub(source)
    arr = _filled(hub)
    hub.tag(NAME, "v1")
    arr[0] = 9
    # To another root, and under another name in it: only the repository folder moves.
    shutil.copytree(Path(source) / "bind" / "arr", tmp_path / "two" / "other" / "copy")
    copy = hubzarr.Hub(str(tmp_path / "two"))
    for ref in ("v1", "main"):
        assert copy.verify(f"other/copy:{ref}").ok
        np.testing.assert_array_equal(
            copy.load(f"other/copy:{ref}")[:], hub.load(f"{NAME}:{ref}")[:]
        )


def _downgrade(root: str) -> None:
    """Turn a repository into what layout 1 wrote: unbound envelopes, records without
    checksums, layout 1 in repo.json."""
    for path in Path(root).rglob("*.json"):
        doc = json.loads(path.read_bytes())
        doc.pop("crc32c")
        if path.name == "repo.json":
            doc["layout"] = 1
        path.write_bytes(json.dumps(doc).encode())
    for path in _data_files(root):
        payload = unframe(path, path.read_bytes())
        if payload is not None:
            crc = crc32c.crc32c(payload)
            path.write_bytes(b"HZ1D" + crc.to_bytes(4, "big") + payload)


def test_a_repository_of_the_earlier_layout_still_reads_and_takes_writes(local_root: str) -> None:
    hub = hubzarr.Hub(local_root)
    arr = _filled(hub)
    hub.tag(NAME, "v1")
    _downgrade(local_root)
    old = hub.load(f"{NAME}:v1")
    np.testing.assert_array_equal(old[:], np.arange(32).reshape(8, 4))
    assert hub.verify(f"{NAME}:v1").ok
    head = hub.load(NAME)
    head[0] = 5  # new objects are bound, old ones still read
    hub.tag(NAME, "v2")
    expected = np.arange(32).reshape(8, 4)
    expected[0] = 5
    np.testing.assert_array_equal(hub.load(f"{NAME}:v2")[:], expected)
    assert hub.verify(f"{NAME}:v2").ok
    assert arr.dtype == np.int32


def test_an_open_heads_version_id_opens_nothing_writable(hub: hubzarr.Hub) -> None:
    arr = _filled(hub)
    head = arr.version
    for opening in (
        lambda: hub.load(f"{NAME}:{head}"),
        lambda: hub.load(f"{NAME}:{head}", mode="r"),
        lambda: hub.store(f"{NAME}:{head}", mode="r+"),
        lambda: hub.verify(f"{NAME}:{head}"),
    ):
        with pytest.raises(hubzarr.InvalidArgumentError, match=r"open head.*branch.*tag"):
            opening()
    sealed = hub.tag(NAME, "v1")
    assert sealed == head
    frozen = hub.load(f"{NAME}:{head}")  # sealed now: an immutable version, read-only
    assert frozen.read_only
    with pytest.raises(hubzarr.ReadOnlyError):
        frozen[0] = 1
    np.testing.assert_array_equal(frozen[:], np.arange(32).reshape(8, 4))


def test_records_are_bound_to_their_place_and_content(local_root: str) -> None:
    hub = hubzarr.Hub(local_root)
    arr = _filled(hub)
    v1 = hub.tag(NAME, "v1")
    arr[0] = 1
    hub.tag(NAME, "v2")
    [tags] = list(Path(local_root).rglob("refs/tags"))
    one, two = (tags / "v1.json").read_bytes(), (tags / "v2.json").read_bytes()
    # Two tags swapped: each would silently name the other's data.
    (tags / "v1.json").write_bytes(two)
    (tags / "v2.json").write_bytes(one)
    with pytest.raises(hubzarr.FormatError, match=r"v1\.json.*checksum"):
        hub.load(f"{NAME}:v1")
    (tags / "v1.json").write_bytes(one)
    (tags / "v2.json").write_bytes(two)
    # An index root whose key was renamed (a bit flip in "0.0"): the chunk would read as fill.
    [root] = list(Path(local_root).rglob(f"index/{v1}.json"))
    assert b'"0.0\\n' in root.read_bytes()
    root.write_bytes(root.read_bytes().replace(b'"0.0\\n', b'"0.1\\n', 1))
    with pytest.raises(hubzarr.FormatError, match=r"index.*checksum"):
        hub.load(f"{NAME}:v1")[0]
    # Without its checksum, in a repository of this layout: refused, not trusted.
    doc = json.loads(root.read_bytes())
    doc.pop("crc32c")
    root.write_bytes(json.dumps(doc).encode())
    with pytest.raises(hubzarr.FormatError, match="crc32c"):
        hub.load(f"{NAME}:v1")[0]
