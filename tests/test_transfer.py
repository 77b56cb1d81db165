"""``hubzarr.copy`` / ``hub cp``: how words are read, imports of .npy and .npz, exports to
plain zarr and .npy; bad input refused before anything is created or written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
import zarr.storage
from servers import Server, make_bucket, s3_options
from typer.testing import CliRunner

import hubzarr
from hubzarr.addresses import PathLocation, RepoLocation, classify
from hubzarr.cli import app
from hubzarr.errors import (
    AlreadyExistsError,
    CorruptChunkError,
    InvalidArgumentError,
    InvalidNameError,
)
from hubzarr.names import Name


@pytest.fixture
def hub(work: Path) -> hubzarr.Hub:
    """A hub root inside the working folder."""
    return hubzarr.Hub(str(work / "hub"))


def data(shape: tuple[int, ...] = (250, 30), dtype: str = "f4") -> np.ndarray:
    return np.arange(np.prod(shape)).reshape(shape).astype(dtype)


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# -- how words are read ----------------------------------------------------------------------


def where(word: str, existing: tuple[str, ...] = ()) -> Any:
    return classify(word, default_user="me", exists=lambda path: path in existing)


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("alice/mnist:v1", RepoLocation(None, Name("alice", "mnist", "v1"))),
        ("mnist", RepoLocation(None, Name("me", "mnist"))),
        (
            "s3://bucket/hub::alice/mnist:v1",
            RepoLocation("s3://bucket/hub", Name("alice", "mnist", "v1")),
        ),
        ("::alice/x.npy", RepoLocation(None, Name("alice", "x.npy"))),
        ("/data/hub::a/b", RepoLocation("/data/hub", Name("a", "b"))),
        ("s3://bucket/out.zarr", PathLocation("s3://bucket/out.zarr")),
        ("./alice/mnist", PathLocation("./alice/mnist")),
        ("../x", PathLocation("../x")),
        ("/abs/alice", PathLocation("/abs/alice")),
        ("~/x", PathLocation("~/x")),
        ("out.zarr", PathLocation("out.zarr")),
        ("alice/train.npy", PathLocation("alice/train.npy")),
        ("dir/data.NPZ", PathLocation("dir/data.NPZ")),
        ("Data/Train", PathLocation("Data/Train")),
        ("a/b/c", PathLocation("a/b/c")),
    ],
)
def test_words_are_read_by_the_documented_rule(word: str, expected: Any) -> None:
    assert where(word) == expected


def test_a_name_that_is_also_an_existing_path_is_ambiguous() -> None:
    with pytest.raises(InvalidArgumentError, match=r"ambiguous.*\./data/train.*::data/train"):
        where("data/train", existing=("data/train",))
    assert where("./data/train", existing=("data/train",)) == PathLocation("./data/train")
    assert where("::data/train", existing=("data/train",)).name == Name("data", "train")


def test_words_that_say_nothing_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="empty"):
        where("  ")
    with pytest.raises(InvalidNameError):
        where("s3://bucket/hub::Alice/../x")


# -- imports -----------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["C", "F"])
def test_npy_imports_as_an_array_and_can_be_tagged(
    hub: hubzarr.Hub, work: Path, order: str
) -> None:
    values = np.asarray(data((300, 7, 3), "i2"), order=order)
    np.save(work / "x.npy", values)
    report = hub.copy("x.npy", "alice/x", tag="v0")
    arr = hub.load_array("alice/x:v0")
    assert arr.dtype == np.int16 and arr.shape == values.shape
    np.testing.assert_array_equal(arr[:], values)
    grid = np.prod([-(-n // c) for n, c in zip(arr.shape, arr.chunks, strict=True)])
    assert (report.objects, report.bytes, report.versions) == (grid, values.nbytes, 1)


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_imports_as_a_group_of_its_arrays(hub: hubzarr.Hub, work: Path, save: Any) -> None:
    images, labels = data((500, 8, 8), "u1"), np.arange(500, dtype="i8") % 10
    save(work / "d.npz", images=images, labels=labels)
    hub.copy("./d.npz", "alice/d")
    group = hub.load_group("alice/d")
    assert sorted(group.keys()) == ["images", "labels"]
    np.testing.assert_array_equal(group["images"][:], images)
    np.testing.assert_array_equal(group["labels"][:], labels)


def test_compressed_npz_is_read_a_band_at_a_time(hub: hubzarr.Hub, work: Path) -> None:
    values = data((1000, 64), "f8")
    np.savez_compressed(work / "d.npz", v=values)
    (npy,) = hubzarr.imports.open_npz(work / "d.npz").values()
    bands = list(npy.bands(100))
    assert [lo for lo, _ in bands] == list(range(0, 1000, 100))
    assert max(b.nbytes for _, b in bands) == 100 * 64 * 8
    hub.copy("d.npz", "alice/d")
    np.testing.assert_array_equal(hub.load_group("alice/d")["v"][:], values)


def truncated(path: Path) -> None:
    np.save(path, data((100, 100)))
    path.write_bytes(path.read_bytes()[:-10])


def not_npy(path: Path) -> None:
    path.write_bytes(b"this is not an array\n" * 10)


def objects(path: Path) -> None:
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)


def strings(path: Path) -> None:
    np.save(path, np.array(["a", "bc"]))


def records(path: Path) -> None:
    np.save(path, np.zeros(3, dtype=[("x", "f4"), ("y", "i4")]))


def scalar(path: Path) -> None:
    np.save(path, np.float32(1))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (truncated, "truncated"),
        (not_npy, "not a readable .npy"),
        (objects, "objects, strings or records"),
        (strings, "objects, strings or records"),
        (records, "objects, strings or records"),
        (scalar, "0-dimensional"),
    ],
)
def test_bad_npy_files_are_refused_before_anything_is_created(
    hub: hubzarr.Hub, work: Path, make: Any, message: str
) -> None:
    make(work / "bad.npy")
    with pytest.raises(InvalidArgumentError, match=message) as info:
        hub.copy("bad.npy", "alice/bad")
    assert "bad.npy" in str(info.value)
    assert hub.ls() == []


def test_bad_npz_files_are_refused_before_anything_is_created(hub: hubzarr.Hub, work: Path) -> None:
    np.savez(work / "ok.npz", a=data())
    raw = (work / "ok.npz").read_bytes()
    (work / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with zipfile.ZipFile(work / "badkey.npz", "w") as zf, zf.open(".zarray.npy", "w") as f:
        np.lib.format.write_array(f, data())
    np.savez(work / "mixed.npz", good=data(), bad=np.array(["x"]))
    for name, message in [
        ("cut.npz", "not a readable .npz"),
        ("badkey.npz", "zarray"),
        ("mixed.npz", "objects, strings or records"),
    ]:
        with pytest.raises(InvalidArgumentError, match=message):
            hub.copy(name, "alice/bad")
    assert hub.ls() == []


def test_missing_files_unknown_kinds_and_existing_repositories(
    hub: hubzarr.Hub, work: Path
) -> None:
    with pytest.raises(InvalidArgumentError, match="no such file"):
        hub.copy("missing.npy", "alice/x")
    (work / "x.txt").write_text("hello")
    with pytest.raises(InvalidArgumentError, match=r"imports \.npy and \.npz files, HDF5"):
        hub.copy("./x.txt", "alice/x")
    np.save(work / "x.npy", data())
    hub.copy("x.npy", "alice/x")
    before = files_under(work / "hub")
    np.save(work / "y.npy", data() + 1)
    with pytest.raises(AlreadyExistsError):
        hub.copy("y.npy", "alice/x")
    with pytest.raises(InvalidArgumentError, match="without a ref"):
        hub.copy("y.npy", "alice/y:v1")
    assert files_under(work / "hub") == before
    with pytest.raises(InvalidArgumentError, match="neither"):
        hub.copy("x.npy", "y.npy")


# -- exports -----------------------------------------------------------------------------------


def make_group(hub: hubzarr.Hub) -> dict[str, np.ndarray]:
    group = hub.group("alice/g")
    values = {"images": data((60, 5, 5), "u1"), "meta/labels": np.arange(60, dtype="i4")}
    for key, v in values.items():
        group.create_array(key, v.shape, dtype=v.dtype, chunks=(16, *v.shape[1:]))[:] = v
    group.attrs["classes"] = ["cat", "dog"]
    hub.tag("alice/g", "v1")
    group["images"][0] = 99  # after the tag: the export of v1 must not see it
    return values


WITHOUT_HUBZARR = """
import json, sys
sys.modules["hubzarr"] = None  # any import of hubzarr now fails
import numpy as np, zarr
group = zarr.open_group(sys.argv[1], mode="r", zarr_format=2)
out = {k: group[k][:].tolist() for k in ("images", "meta/labels")}
print(json.dumps({"attrs": dict(group.attrs), "arrays": out}))
"""


def test_export_is_a_plain_zarr_store_that_opens_without_hubzarr(
    hub: hubzarr.Hub, work: Path
) -> None:
    values = make_group(hub)
    report = hub.copy("alice/g:v1", "out.zarr")
    assert report.objects == len(files_under(work / "out.zarr")) and not report.skipped
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_HUBZARR, str(work / "out.zarr")],
        capture_output=True,
        text=True,
        check=True,
    )
    seen = json.loads(result.stdout)
    assert seen["attrs"] == {"classes": ["cat", "dog"]}
    for key, v in values.items():
        np.testing.assert_array_equal(np.array(seen["arrays"][key]), v)


def test_export_copies_payloads_byte_for_byte(hub: hubzarr.Hub, work: Path) -> None:
    make_group(hub)
    hub.copy("alice/g:v1", "out.zarr")
    session = hub.reader("alice/g:v1")
    exported = files_under(work / "out.zarr")
    for key, payload in exported.items():
        stored = hubzarr.runner.run(session.read(key))
        assert stored is not None and bytes(stored) == payload, key


def test_an_interrupted_export_never_opens_and_resumes(hub: hubzarr.Hub, work: Path) -> None:
    values = make_group(hub)
    out = work / "out.zarr"
    hub.copy("alice/g:v1", "out.zarr")
    complete = files_under(out)
    # What a kill leaves: some chunks, no metadata (metadata goes last, the root's at the end).
    for rel in complete:
        if rel.rsplit("/", 1)[-1].startswith(".z") or rel.endswith("0.0.0"):
            (out / rel).unlink()
    with pytest.raises(FileNotFoundError):
        zarr.open_group(str(out), mode="r", zarr_format=2)
    report = hub.copy("alice/g:v1", "out.zarr")
    assert report.skipped > 0 and report.objects == len(complete) - report.skipped
    assert files_under(out) == complete
    again = zarr.open_group(str(out), mode="r", zarr_format=2)
    np.testing.assert_array_equal(again["images"][:], values["images"])


def test_a_corrupt_source_chunk_leaves_an_export_that_does_not_open(
    hub: hubzarr.Hub, work: Path
) -> None:
    make_group(hub)
    entry = hubzarr.runner.run(hub.reader("alice/g:v1").entries())["images/1.0.0"]
    path = work / "hub" / entry.path
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptChunkError, match=r"images/1\.0\.0"):
        hub.copy("alice/g:v1", "out.zarr")
    assert not (work / "out.zarr" / ".zgroup").exists()


def test_export_refuses_a_destination_it_would_not_own(hub: hubzarr.Hub, work: Path) -> None:
    make_group(hub)
    (work / "mine").mkdir()
    (work / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(AlreadyExistsError, match=r"notes\.txt"):
        hub.copy("alice/g:v1", "./mine")
    assert files_under(work / "mine") == {"notes.txt": b"keep me"}
    hub.copy("alice/g:v1", "out.zarr")
    before = files_under(work / "out.zarr")
    with pytest.raises(AlreadyExistsError, match="holds a zarr store"):
        hub.copy("alice/g", "out.zarr")
    assert files_under(work / "out.zarr") == before


def test_an_export_walks_the_index_a_shard_at_a_time(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No listing of the repository's folders, no map of every key: the version's index is
    read a shard at a time (here shards of 4 keys), each shard once, and every chunk once."""
    from counting import counting_hub

    import hubzarr.index as hindex

    monkeypatch.setattr(hindex, "SHARD_KEYS", 4)
    monkeypatch.setattr(hindex, "INLINE_KEYS", 2)
    hindex.SHARDS.clear()
    root = str(work / "hub")
    values = data((40, 3), "i4")
    hubzarr.Hub(root).array(values.shape, "alice/long", dtype="i4", chunks=(1, 3))[:] = values
    hubzarr.Hub(root).tag("alice/long", "v1")
    hindex.SHARDS.clear()
    counted, counter = counting_hub(root)
    report = counted.copy("alice/long:v1", str(work / "out.zarr"))
    assert report.objects == 42  # 40 chunks, .zarray and .zattrs
    sources = [(op, p) for op, p in counter.paths if p.startswith("alice/")]
    assert not [p for op, p in sources if op.startswith("list")], "listed the repository"
    shards = [p for op, p in sources if "/shards/" in p]
    assert len(shards) == len(set(shards)) == 10  # 40 keys in shards of 4, each read once
    chunks = [p for op, p in sources if op == "read" and "/data/" in p]
    assert len(chunks) == len(set(chunks)) == 42
    np.testing.assert_array_equal(zarr.open_array(str(work / "out.zarr"), mode="r")[:], values)


def test_npy_export_round_trips_and_never_overwrites(hub: hubzarr.Hub, work: Path) -> None:
    values = data((130, 9), "f8")
    hub.array(values.shape, "alice/a", dtype="f8", chunks=(32, 9))[:] = values
    hub.copy("alice/a", "a.npy")
    np.testing.assert_array_equal(np.load(work / "a.npy"), values)
    with pytest.raises(AlreadyExistsError):
        hub.copy("alice/a", "a.npy")
    make_group(hub)
    with pytest.raises(hubzarr.errors.NotFoundError, match="group"):
        hub.copy("alice/g", "g.npy")
    assert not (work / "g.npy").exists()
    assert sorted(p.name for p in work.iterdir()) == ["a.npy", "hub"]


def test_export_from_another_root_to_s3(hub: hubzarr.Hub, work: Path, s3_server: Server) -> None:
    values = make_group(hubzarr.Hub(str(work / "other")))
    make_bucket(s3_server.url, "exports")
    options = s3_options(s3_server.url)
    url = "s3://exports/g.zarr"
    report = hub.copy(f"{work / 'other'}::alice/g:v1", url, storage_options=options)
    store = zarr.storage.FsspecStore.from_url(url, storage_options=options, read_only=True)
    group = zarr.open_group(store, mode="r", zarr_format=2)
    np.testing.assert_array_equal(group["images"][:], values["images"])
    assert report.objects > 0 and hub.ls() == []


# -- the command line --------------------------------------------------------------------------


def test_hub_cp_imports_and_exports(work: Path) -> None:
    runner = CliRunner()
    root = ["--root", str(work / "hub")]
    np.save(work / "x.npy", data())
    result = runner.invoke(app, ["cp", "x.npy", "alice/x", "--tag", "v0", *root])
    assert result.exit_code == 0, result.output
    assert "x.npy -> alice/x" in result.output
    result = runner.invoke(app, ["cp", "alice/x:v0", "x.zarr", *root])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(zarr.open_array(str(work / "x.zarr"), mode="r")[:], data())
    os.makedirs(work / "alice" / "x")
    result = runner.invoke(app, ["cp", "alice/x", "y.zarr", *root])
    assert result.exit_code == 1
    assert "ambiguous" in result.output and "::alice/x" in result.output
    result = runner.invoke(app, ["cp", "::alice/x", "y.zarr", *root])
    assert result.exit_code == 0, result.output
