"""verify and hub verify: every object of a version read and checked; ref deletion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from envelopes import framed
from typer.testing import CliRunner
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

import hubzarr
import hubzarr.versions
from hubzarr.cli import app
from hubzarr.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError

NAME = "check/arr"


def _make(hub: hubzarr.Hub) -> hubzarr.HubArray:
    arr = hub.array((8, 4), name=NAME, dtype="float32", chunks=(2, 4))
    arr[:] = np.arange(32, dtype="float32").reshape(8, 4) + 1
    return arr


def _chunk_file(local_root: str, key: str) -> Path:
    [path] = [p for p in Path(local_root).rglob(key) if "/data/" in str(p)]
    return path


def test_a_sound_version_verifies(hub: hubzarr.Hub) -> None:
    _make(hub)
    hub.tag(NAME, "v1")
    seen: list[tuple[int, int]] = []
    report = hub.verify(f"{NAME}:v1", progress=lambda done, total: seen.append((done, total)))
    assert report.ok and report.problems == ()
    assert report.objects == 6  # .zarray, .zattrs, four chunks
    assert report.bytes > 0
    assert [d for d, _ in seen] == list(range(1, 7)) and {t for _, t in seen} == {6}
    assert hub.verify(NAME).ok  # the head, inheriting everything


@pytest.mark.parametrize("damage", ["bit flip", "truncated", "empty"])
def test_a_damaged_chunk_is_reported_by_key(local_root: str, damage: str) -> None:
    hub = hubzarr.Hub(local_root)
    _make(hub)
    hub.tag(NAME, "v1")
    path = _chunk_file(local_root, "2.0")
    raw = bytearray(path.read_bytes())
    if damage == "bit flip":
        raw[-3] ^= 0x10
    elif damage == "truncated":
        raw = raw[: len(raw) // 2]
    else:
        raw = bytearray()
    path.write_bytes(bytes(raw))
    report = hub.verify(f"{NAME}:v1")
    assert not report.ok
    assert [p.key for p in report.problems] == ["2.0"]
    assert "2.0" in report.problems[0].message and report.version in report.problems[0].message
    with pytest.raises(hubzarr.CorruptChunkError, match=r"2\.0"):
        hub.load(f"{NAME}:v1")[4]


def test_a_chunk_with_a_right_checksum_but_no_chunk_inside_is_reported(local_root: str) -> None:
    hub = hubzarr.Hub(local_root)
    _make(hub)
    path = _chunk_file(local_root, "1.0")
    junk = b"not blosc at all, but framed with a valid checksum"
    path.write_bytes(framed(path, junk))
    report = hub.verify(NAME)
    assert [p.key for p in report.problems] == ["1.0"]
    assert "decompress" in report.problems[0].message


def test_damaged_metadata_is_reported(local_root: str) -> None:
    hub = hubzarr.Hub(local_root)
    _make(hub)
    path = _chunk_file(local_root, ".zarray")
    payload = b'{"zarr_format": 2, "shape": [-8, 4]'
    path.write_bytes(framed(path, payload))
    report = hub.verify(NAME)
    assert [p.key for p in report.problems] == [".zarray"]
    assert ".zarray" in report.problems[0].message


def test_hub_verify_exits_non_zero_and_lists_problems(local_root: str) -> None:
    hub = hubzarr.Hub(local_root)
    _make(hub)
    runner = CliRunner()
    ok = runner.invoke(app, ["verify", NAME, "--root", local_root])
    assert ok.exit_code == 0, ok.output
    assert "6 objects" in ok.stdout and "OK" in ok.stdout
    path = _chunk_file(local_root, "3.0")
    raw = bytearray(path.read_bytes())
    raw[10] ^= 1
    path.write_bytes(bytes(raw))
    bad = runner.invoke(app, ["verify", NAME, "--root", local_root])
    assert bad.exit_code == 1
    assert "1 problem\n" in bad.stdout
    assert "3.0" in bad.stderr and "checksum" in bad.stderr
    missing = runner.invoke(app, ["verify", "check/none", "--root", local_root])
    assert missing.exit_code == 1 and "error:" in missing.stderr


# -- deleting refs ---------------------------------------------------------------------------


def test_deleted_refs_are_gone_and_their_names_are_never_reused(hub: hubzarr.Hub) -> None:
    arr = _make(hub)
    v1 = hub.tag(NAME, "v1")
    hub.branch(f"{NAME}:v1", "dev")
    assert hub.delete_tag(NAME, "v1") == v1
    hub.delete_branch(NAME, "dev")
    for ref in ("v1", "dev"):
        with pytest.raises(NotFoundError, match="deleted"):
            hub.load(f"{NAME}:{ref}")
        for create in (lambda r: hub.tag(NAME, r), lambda r: hub.branch(NAME, r)):
            with pytest.raises(AlreadyExistsError, match="never reused"):
                create(ref)
        with pytest.raises(NotFoundError):
            hub.delete_tag(NAME, ref) if ref == "v1" else hub.delete_branch(NAME, ref)
    # The version itself stays readable by id until gc, and the branch is untouched.
    np.testing.assert_array_equal(hub.load(f"{NAME}:{v1}")[:], arr[:])
    refs = {r for entry in hub.log(NAME) for r in entry.refs}
    assert refs == {"main"}


def test_refs_that_cannot_be_deleted(hub: hubzarr.Hub) -> None:
    _make(hub)
    with pytest.raises(InvalidArgumentError, match="default branch"):
        hub.delete_branch(NAME, "main")
    with pytest.raises(NotFoundError):
        hub.delete_tag(NAME, "nope")
    with pytest.raises(InvalidArgumentError):
        hub.delete_tag(f"{NAME}:main", "v1")
    with pytest.raises(hubzarr.InvalidNameError):
        hub.delete_tag(NAME, "../x")
    np.testing.assert_array_equal(hub.load(NAME)[0], [1, 2, 3, 4])


def test_a_deleted_branch_takes_no_more_writes_from_stale_handles(hub: hubzarr.Hub) -> None:
    _make(hub)
    hub.tag(NAME, "v1")
    hub.branch(f"{NAME}:v1", "dev")
    dev = hub.load(f"{NAME}:dev")
    dev[0] = 5
    last = hub.delete_branch(NAME, "dev")
    # Its head was sealed with no successor: a handle still open there cannot write data that
    # gc would then free, nor read the branch as if it lived.
    with pytest.raises(NotFoundError, match="was deleted"):
        dev[1] = 6
    with pytest.raises(NotFoundError, match="was deleted"):
        dev[:]
    hub.tag(f"{NAME}:main", "v2")  # other branches move on
    with pytest.raises(NotFoundError):
        hub.load(f"{NAME}:dev")
    expected = np.arange(32, dtype="float32").reshape(8, 4) + 1
    expected[0] = 5
    np.testing.assert_array_equal(hub.load(f"{NAME}:{last}")[:], expected)  # by id, until gc
    assert hub.log(f"{NAME}:{last}")[0].message == "branch dev deleted"


def test_hub_tag_and_branch_delete(local_root: str) -> None:
    hub = hubzarr.Hub(local_root)
    _make(hub)
    hub.tag(NAME, "v1")
    hub.branch(f"{NAME}:v1", "dev")
    runner = CliRunner()
    out = runner.invoke(app, ["tag", "-d", NAME, "v1", "--root", local_root])
    assert out.exit_code == 0, out.output
    assert "deleted tag v1" in out.stdout and "hub gc" in out.stdout
    out = runner.invoke(app, ["branch", "--delete", NAME, "dev", "--root", local_root])
    assert out.exit_code == 0 and "deleted branch dev" in out.stdout
    again = runner.invoke(app, ["tag", "-d", NAME, "v1", "--root", local_root])
    assert again.exit_code == 1 and "deleted" in again.stderr
    main = runner.invoke(app, ["branch", "-d", NAME, "main", "--root", local_root])
    assert main.exit_code == 1 and "default branch" in main.stderr


def test_keys_that_look_like_generations_are_refused(hub: hubzarr.Hub) -> None:
    store = hub.store(f"{NAME}:main", mode="w-")
    value = default_buffer_prototype().buffer.from_bytes(b"x")
    with pytest.raises(InvalidArgumentError, match="~"):
        sync(store.set("a/0.0~1", value))
    sync(store.set("a/0.0~x", value))  # not a generation: fine
    assert sync(store.exists("a/0.0~x"))


@pytest.mark.parametrize(
    "manifest",
    [
        b"{",
        b"[]",
        b'{"written": "0.0", "deleted": []}',
        b'{"written": [], "deleted": [1]}',
        b'{"written": [], "deleted": [], "generations": {"0.0": "x"}}',
        b'{"checkpoint": true, "index": ["0.0"]}',
    ],
    ids=[
        "truncated",
        "list",
        "written-not-list",
        "deleted-not-strings",
        "bad-generation",
        "bad-checkpoint",
    ],
)
@pytest.mark.parametrize("layout", [2, 4])
def test_a_damaged_manifest_is_a_format_error_naming_it(
    local_root: str, manifest: bytes, layout: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hubzarr.versions, "LAYOUT", layout)
    hub = hubzarr.Hub(local_root)
    _make(hub)
    version = hub.tag(NAME, "v1")
    [path] = Path(local_root).rglob(f"manifests/{version}.json")
    path.write_bytes(manifest)
    # Layout 3 reads a version's manifest where its index root is missing: derived again.
    for root in Path(local_root).rglob(f"index/{version}.json"):
        root.unlink()
    with pytest.raises(hubzarr.FormatError, match=f"manifests/{version}.json"):
        hub.load(f"{NAME}:v1")[:]
