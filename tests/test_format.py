"""docs/format.md is enough to implement the format: tests/spec_reader.py, written from it alone
(it imports nothing from hubzarr), reads every ref and version id of repositories with long
histories and gets exactly what hubzarr reads: the same keys, the same payloads, the same
arrays."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import spec_reader
from zarr.core.sync import sync

import hubzarr
import hubzarr.index
import hubzarr.versions
from hubzarr import records


def _history(hub: hubzarr.Hub) -> None:
    """An array repository past a checkpoint, with rewrites, deletions, branches, a merge, a
    revert and deleted refs; a group repository with nested arrays, deleted members and
    attributes."""
    arr = hub.array((12, 6), "spec/arr", dtype="int32", chunks=(2, 3), fill_value=-1)
    rng = np.random.default_rng(7)
    for i in range(records.CHECKPOINT_EVERY + 7):
        row = int(rng.integers(0, 12))
        arr[row] = i  # a partial chunk: read, merged, written as the next generation
        if i % 5 == 0:
            arr[row : row + 2] = i + 1  # rewritten in the same version
        if i % 11 == 0:
            arr[0:2, 0:3] = -1  # the fill value over a whole chunk: a tombstone
        hub.tag("spec/arr", f"t{i}", message=f"step {i}")
        if i == 20:
            hub.branch("spec/arr:t10", "side")
            side = hub.load_array("spec/arr:side")
            side[5:9] = 99
            hub.tag("spec/arr:side", "side-1")
            side[6] = -1
        if i == 25:
            hub.merge("spec/arr", "side", strategy="theirs")  # a second parent; copies
        if i == 27:
            hub.revert("spec/arr", "t12")  # an older state, as a new version
        if i == 30:
            hub.delete_tag("spec/arr", "t3")
            hub.branch("spec/arr", "gone")
            hub.load_array("spec/arr:gone")[0] = 5
            hub.delete_branch("spec/arr", "gone")
    arr[11] = 123  # the open head holds rewrites of its own

    g = hub.group("spec/grp")
    images = g.create_array("images", (5, 4, 4), dtype="uint8", chunks=(1, 4, 4))
    labels = g.create_array("train/labels", (5,), dtype="float64", chunks=(2,))
    images[:] = np.arange(80, dtype="uint8").reshape(5, 4, 4)
    labels[:] = [0.5, np.nan, 2.0, 3.0, 4.0]
    g.attrs["source"] = "test"
    hub.tag("spec/grp", "v1")
    del g["images"]
    g.create_array("images", (3,), dtype="int16", chunks=(2,))[:] = [1, 2, 3]
    g.create_group("empty")
    hub.tag("spec/grp", "v2")
    labels[0] = 9.0


def _refs_and_versions(hub: hubzarr.Hub, name: str) -> list[str]:
    """Every branch, tag and sealed version id of a repository."""
    repo = spec_reader.Repository(hub.root, name)
    refs = [*repo.refs("branches"), *repo.refs("tags")]
    versions = {e.id for ref in refs for e in hub.log(f"{name}:{ref}") if e.sealed}
    return [*refs, *sorted(versions)]


def _arrays(state: dict[str, bytes]) -> list[str]:
    return sorted(k[: -len(".zarray")].rstrip("/") for k in state if k.endswith(".zarray"))


def _reads_alike(hub: hubzarr.Hub, name: str, ref: str) -> dict[str, bytes]:
    """What the spec's reader reads at ``name:ref``, checked against hubzarr."""
    state = spec_reader.Repository(hub.root, name).state(ref)
    session = hub.reader(f"{name}:{ref}")
    assert sorted(state) == sorted(sync(session.keys())), ref
    for key, payload in state.items():
        assert payload == bytes(sync(session.read(key)) or b""), (ref, key)
    for path in _arrays(state):
        node: Any = hub.load(f"{name}:{ref}", mode="r")
        expected = node[path][:] if path else node[:]
        got = spec_reader.array(state, path)
        np.testing.assert_array_equal(got, expected, err_msg=f"{ref} {path}")
    return state


@pytest.fixture
def small_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    """Indexes (layouts 3 and 4) cut into shards of 4 keys, so that small histories have
    many."""
    monkeypatch.setattr(hubzarr.index, "SHARD_KEYS", 4)
    monkeypatch.setattr(hubzarr.index, "INLINE_KEYS", 2)
    hubzarr.index.SHARDS.clear()


@pytest.fixture(params=[2, 3, 4])
def layout(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, small_shards: None
) -> int:
    """New repositories in each layout hubzarr writes."""
    monkeypatch.setattr(hubzarr.versions, "LAYOUT", request.param)
    return int(request.param)


def test_a_reader_written_from_the_spec_reads_what_hubzarr_reads(
    local_root: str, layout: int
) -> None:
    root = local_root
    hub = hubzarr.Hub(root)
    _history(hub)
    checked = 0
    for name in ("spec/arr", "spec/grp"):
        repo = spec_reader.Repository(root, name)
        assert repo.layout == layout
        targets = _refs_and_versions(hub, name)
        assert len(targets) > (records.CHECKPOINT_EVERY if name == "spec/arr" else 3)
        for ref in targets:
            _reads_alike(hub, name, ref)
            checked += 1
        sealed = [t for t in targets if spec_reader.VERSION.fullmatch(t)]
        checkpoints = [v for v in sealed if repo.manifest(v)["checkpoint"]]
        if layout == 2:
            assert checkpoints if name == "spec/arr" else not checkpoints
            continue
        # Layouts 3 and 4: no checkpoint; a root for every sealed version, cut into shards,
        # named by content (3) or by the version that wrote them (4).
        assert not checkpoints
        roots = [repo.inner(f"index/{v}.json") for v in sealed]
        member = "writers" if layout == 4 else "shards"
        assert all(roots) and any(member in r for r in roots if r)
    assert checked > records.CHECKPOINT_EVERY


def test_the_reader_derives_missing_roots(local_root: str, small_shards: None) -> None:
    """A root is a stored copy of a state the manifests define: without it, both read the same."""
    hub = hubzarr.Hub(local_root)
    _history(hub)
    reader = spec_reader.Repository(local_root, "spec/arr")
    expected = {ref: reader.state(ref) for ref in ("t40", "t56", "side-1")}
    for root in Path(local_root).glob("spec/arr/*/index/*.json"):
        root.unlink()
    hubzarr.index.SHARDS.clear()
    for ref, state in expected.items():
        assert spec_reader.Repository(local_root, "spec/arr").state(ref) == state
        assert _reads_alike(hubzarr.Hub(local_root), "spec/arr", ref) == state


def test_the_reader_reads_copies_as_hubzarr_does(local_root: str, tmp_path: Path) -> None:
    """Section 13: snapshots of open heads, and branches moved to another state."""
    hub, copy = hubzarr.Hub(local_root), hubzarr.Hub(str(tmp_path / "copy"))
    _history(hub)
    for name in ("spec/arr", "spec/grp"):
        hub.copy(name, name, to_root=copy)
    hub.load_array("spec/arr")[3] = 33  # the open head again: a second snapshot
    hub.tag("spec/arr", "after")
    hub.load_array("spec/arr")[4] = 44
    hub.copy("spec/arr", "spec/arr", to_root=copy)  # main moved forward
    for name in ("spec/arr", "spec/grp"):
        for ref in _refs_and_versions(copy, name):
            copied = _reads_alike(copy, name, ref)
            if not spec_reader.VERSION.fullmatch(ref):
                assert copied == spec_reader.Repository(local_root, name).state(ref), ref


def test_the_reader_refuses_a_newer_layout(local_root: str) -> None:
    hub = hubzarr.Hub(local_root)
    hub.array((2,), "spec/new")
    repo_json = Path(local_root) / "spec" / "new" / "repo.json"
    info = json.loads(repo_json.read_text())
    info.pop("crc32c")
    info["layout"] = records.LAYOUT + 1
    repo_json.write_text(json.dumps(info))
    with pytest.raises(spec_reader.DamagedError, match="upgrade"):
        spec_reader.Repository(local_root, "spec/new")
    with pytest.raises(hubzarr.FormatError, match="upgrade hubzarr"):
        hub.load("spec/new")


def test_the_reader_detects_what_hubzarr_detects(local_root: str) -> None:
    """A record edited, and a chunk copied to another chunk's place: both readers refuse."""
    hub = hubzarr.Hub(local_root)
    arr = hub.array((4,), "spec/bad", dtype="int8", chunks=(2,))
    arr[:] = [1, 2, 3, 4]
    hub.tag("spec/bad", "v1")
    repo = spec_reader.Repository(local_root, "spec/bad")
    version, _ = repo.resolve("v1")
    folder = Path(local_root) / "spec" / "bad" / repo.home / "data" / version
    (folder / "0").write_bytes((folder / "1").read_bytes())
    with pytest.raises(spec_reader.DamagedError, match="checksum"):
        repo.state("v1")
    with pytest.raises(hubzarr.CorruptChunkError):
        hub.load_array("spec/bad:v1")[:]
    tag = Path(local_root) / "spec" / "bad" / repo.home / "refs" / "tags" / "v1.json"
    tag.write_text(tag.read_text().replace('"time":', '"time":1'))
    with pytest.raises(spec_reader.DamagedError, match="checksum"):
        repo.resolve("v1")
    with pytest.raises(hubzarr.FormatError):
        hub.load("spec/bad:v1")
