"""``hubzarr.copy`` / ``hub cp`` imports of HDF5 files, folders of images and zarr stores:
values, attributes, groups, chunks and labels kept; bad sources refused before the repository
is created (the root left as it was); sources that fail while read leave no repository."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import h5py
import numcodecs
import numpy as np
import pytest
import zarr
import zarr.codecs
from _copyprocs import kill_copy
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

import hubzarr
from hubzarr import imports
from hubzarr.cli import app
from hubzarr.errors import InvalidArgumentError
from hubzarr.indexing import chunk_regions
from hubzarr.runner import run
from hubzarr.spec import default_chunks


@pytest.fixture
def hub(work: Path) -> hubzarr.Hub:
    """A hub root inside the working folder."""
    return hubzarr.Hub(str(work / "hub"))


def listing(folder: Path) -> dict[str, bytes | None]:
    """Every file (with its bytes) and folder under ``folder``."""
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
        for p in folder.rglob("*")
    }


def refused(hub: hubzarr.Hub, src: str, match: str, **kwargs: Any) -> str:
    """Import ``src``, which must be refused with nothing created; return the message."""
    root = Path(hub.root)
    before = listing(root)
    with pytest.raises(InvalidArgumentError, match=match) as info:
        hub.copy(src, "alice/x", **kwargs)
    assert listing(root) == before
    return str(info.value)


def stored_zarray(hub: hubzarr.Hub, name: str, key: str) -> dict[str, Any]:
    payload = run(hub.reader(name).read(f"{key}/.zarray" if key else ".zarray"))
    assert payload is not None
    loaded: dict[str, Any] = json.loads(bytes(payload))
    return loaded


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 40), st.integers(1, 12)), min_size=1, max_size=4),
    st.integers(1, 5000),
)
def test_blocks_are_whole_chunks_that_cover_the_array_once(
    dims: list[tuple[int, int]], target: int
) -> None:
    shape = tuple(n for n, _ in dims)
    chunks = tuple(min(c, n) for n, c in dims)
    seen = np.zeros(shape, dtype=int)
    for region in chunk_regions(shape, chunks, 2, target):
        for s, c, n in zip(region, chunks, shape, strict=True):
            assert s.start % c == 0 and (s.stop % c == 0 or s.stop == n)
        size = 2 * np.prod([s.stop - s.start for s in region])
        assert size <= max(target, 2 * np.prod(chunks))
        seen[region] += 1
    assert (seen == 1).all()


# -- HDF5 ------------------------------------------------------------------------------------

MATRIX = np.arange(1000 * 1000, dtype="f8").reshape(1000, 1000) / 7


def make_h5(path: Path) -> None:
    with h5py.File(path, "w") as f:
        f.attrs["title"] = "survey"
        f.attrs["count"] = np.int64(3)
        f.attrs["scale"] = np.float32(0.5)
        f.attrs["ok"] = np.bool_(True)
        f.attrs["axes"] = np.arange(3)
        f.attrs["raw"] = b"bytes"
        f.attrs["names"] = np.array([b"x", b"y"])
        f.attrs["words"] = ["u", "v"]  # variable-length strings
        f.attrs["complex"] = 1j  # no JSON form: left out
        f.attrs["latin1"] = np.bytes_(b"\xe9t\xe9")  # not UTF-8: left out
        f.attrs["empty"] = h5py.Empty("f4")  # left out
        f.create_dataset("matrix", data=MATRIX, chunks=(10, 100), compression="gzip")
        f.create_dataset("small", data=np.arange(50, dtype=">i4").reshape(5, 10))
        f.create_dataset("lzf", data=np.arange(4000, dtype="u2"), chunks=(100,), compression="lzf")
        f["matrix"].attrs["units"] = "m"
        f["matrix"].attrs["ref"] = f.ref  # an object reference: left out
        deeper = f.create_group("sensors/deeper")
        deeper.attrs["where"] = "lab"
        deeper["flags"] = np.array([True, False, True])
        deeper["z"] = np.array([1 + 2j, 3j], dtype="c8")
        f["alias"] = h5py.SoftLink("/sensors/deeper/flags")  # not followed: no key 'alias'


def test_hdf5_imports_as_a_group_of_its_groups_and_datasets(hub: hubzarr.Hub, work: Path) -> None:
    make_h5(work / "d.h5")
    calls: list[tuple[int, int, int, int]] = []
    report = hub.copy("d.h5", "alice/d", tag="v0", progress=lambda *a: calls.append(a))
    group = hub.load_group("alice/d:v0")
    assert group.keys() == ["lzf", "matrix", "sensors", "small"]
    np.testing.assert_array_equal(group["matrix"][:], MATRIX)
    np.testing.assert_array_equal(group["small"][:], np.arange(50).reshape(5, 10))
    assert group["small"].dtype == np.dtype(">i4")
    np.testing.assert_array_equal(group["lzf"][:], np.arange(4000))
    np.testing.assert_array_equal(group["sensors/deeper/flags"][:], [True, False, True])
    np.testing.assert_array_equal(group["sensors/deeper/z"][:], [1 + 2j, 3j])
    assert dict(group.attrs) == {
        "title": "survey",
        "count": 3,
        "scale": 0.5,
        "ok": True,
        "axes": [0, 1, 2],
        "raw": "bytes",
        "names": ["x", "y"],
        "words": ["u", "v"],
    }
    sensors = group["sensors"]
    assert isinstance(sensors, hubzarr.HubGroup)
    assert dict(sensors["deeper"].attrs) == {"where": "lab"}
    assert stored_zarray(hub, "alice/d:v0", "matrix")["zarr_format"] == 2
    zattrs = run(hub.reader("alice/d:v0").read("matrix/.zattrs"))
    assert zattrs is not None and json.loads(bytes(zattrs)) == {"units": "m"}
    # HDF5 chunks (10, 100) of 8 kB grown by whole HDF5 chunks, axis 0 first, to >= 1 MiB;
    # a contiguous dataset gets hubzarr's default chunks.
    assert group["matrix"].chunks == (1000, 200)
    assert group["small"].chunks == default_chunks((5, 10), np.dtype(">i4"))
    nbytes = MATRIX.nbytes + 50 * 4 + 4000 * 2 + 3 + 2 * 8
    assert (report.bytes, report.versions) == (nbytes, 1)
    assert calls[-1] == (report.objects, report.objects, nbytes, nbytes)
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)


def test_hdf5_is_read_in_blocks_of_whole_chunks(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_h5(work / "d.h5")
    monkeypatch.setattr(imports, "READ_BYTES", 2**20)
    with imports.open_source("d.h5") as source:
        (matrix,) = (a for a in source.arrays if a.key == "matrix")
        blocks = list(matrix.blocks())
    assert [b.origin for b in blocks] == [(0, lo) for lo in range(0, 1000, 200)]
    assert max(b.values.nbytes for b in blocks) == 1000 * 200 * 8
    np.testing.assert_array_equal(np.concatenate([b.values for b in blocks], axis=1), MATRIX)


def test_links_are_never_followed(hub: hubzarr.Hub, work: Path) -> None:
    with h5py.File(work / "outside.h5", "w") as f:
        f["secret"] = np.arange(5)
    with h5py.File(work / "d.h5", "w") as f:
        f["data"] = np.arange(3)
        f["ext"] = h5py.ExternalLink(str(work / "outside.h5"), "/secret")
        f["soft"] = h5py.SoftLink("/data")
        f["dangling"] = h5py.SoftLink("/nowhere")
    hub.copy("d.h5", "alice/d")
    assert hub.load_group("alice/d").keys() == ["data"]


def strings(f: h5py.File) -> None:
    f["bad"] = np.array([b"ab", b"c"])


def vlen_strings(f: h5py.File) -> None:
    f.create_dataset("bad", data=["a", "bc"], dtype=h5py.string_dtype())


def vlen_ints(f: h5py.File) -> None:
    f.create_dataset("bad", (2,), dtype=h5py.vlen_dtype(np.int32))


def records(f: h5py.File) -> None:
    f["bad"] = np.zeros(3, dtype=[("x", "f4"), ("y", "i4")])


def enums(f: h5py.File) -> None:
    f.create_dataset("bad", data=[0, 1], dtype=h5py.enum_dtype({"RED": 0, "GREEN": 1}, "i1"))


def references(f: h5py.File) -> None:
    f.create_dataset("bad", (1,), dtype=h5py.ref_dtype)


def scalar(f: h5py.File) -> None:
    f["bad"] = 3.0


def empty(f: h5py.File) -> None:
    f.create_dataset("bad", data=h5py.Empty("f4"))


def zero_length(f: h5py.File) -> None:
    f.create_dataset("bad", (0, 3), dtype="f4")


def metadata_name(f: h5py.File) -> None:
    f.create_group("g")[".zarray"] = np.arange(3)


def generation_name(f: h5py.File) -> None:
    f["x~1"] = np.arange(3)


def cycle(f: h5py.File) -> None:
    f.create_group("a/b")
    f["a/b/up"] = f["a"]


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (strings, r"dataset '/bad'\): it holds strings"),
        (vlen_strings, r"'/bad'\): it holds strings"),
        (vlen_ints, r"'/bad'\): it holds variable-length values"),
        (records, r"'/bad'\): it holds .* records"),
        (enums, r"'/bad'\): it holds enum values \(GREEN, RED\)"),
        (references, r"'/bad'\): it holds object references"),
        (scalar, r"'/bad'\): it is 0-dimensional"),
        (empty, r"'/bad'\): it holds no data"),
        (zero_length, r"'/bad'\): shape"),
        (metadata_name, r"invalid group key 'g/.zarray'"),
        (generation_name, r"invalid group key 'x~1'"),
        (cycle, r"links group '/a/b/up' back to one that holds it"),
    ],
)
def test_hdf5_datasets_hubzarr_cannot_store_are_refused_before_anything_is_created(
    hub: hubzarr.Hub, work: Path, make: Any, match: str
) -> None:
    np.save(work / "first.npy", np.arange(3))
    hub.copy("first.npy", "alice/first")  # the root holds something to compare
    with h5py.File(work / "bad.h5", "w") as f:
        f["fine"] = np.arange(10)
        make(f)
    message = refused(hub, "bad.h5", match)
    assert message.startswith("cannot import 'bad.h5'")
    assert hub.ls() == ["alice/first"]


def test_unreadable_hdf5_files_are_refused(hub: hubzarr.Hub, work: Path) -> None:
    make_h5(work / "d.h5")
    raw = (work / "d.h5").read_bytes()
    (work / "cut.h5").write_bytes(raw[: len(raw) // 2])
    (work / "junk.hdf5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    (work / "old.nc").write_bytes(b"CDF\x01" + b"\x00" * 100)  # netCDF-3: not HDF5
    refused(hub, "cut.h5", r"'cut.h5': it is not a readable HDF5 file \(.*truncated")
    refused(hub, "junk.hdf5", "not a readable HDF5 file")
    refused(hub, "old.nc", "netCDF-3 file is not HDF5")
    refused(hub, "missing.h5", "no such file")


def test_a_corrupt_chunk_found_while_reading_leaves_no_repository(
    hub: hubzarr.Hub, work: Path
) -> None:
    np.save(work / "first.npy", np.arange(3))
    hub.copy("first.npy", "alice/first")
    values = np.random.default_rng(0).random((200, 1000))
    with h5py.File(work / "d.h5", "w") as f:
        f.create_dataset("a", data=values, chunks=(20, 1000), compression="gzip")
        info = f["a"].id.get_chunk_info(5)
    raw = bytearray((work / "d.h5").read_bytes())
    raw[info.byte_offset + 100 : info.byte_offset + 200] = bytes(100)
    (work / "d.h5").write_bytes(bytes(raw))
    before = {k: v for k, v in listing(work / "hub").items() if v is not None}
    with pytest.raises(InvalidArgumentError, match=r"dataset '/a'\): it cannot be read at \["):
        hub.copy("d.h5", "alice/d")
    assert hub.ls() == ["alice/first"]
    # Every file is as it was (the deleted repository leaves its empty folder, as hub delete).
    assert {k: v for k, v in listing(work / "hub").items() if v is not None} == before


def test_missing_extras_are_named(
    hub: hubzarr.Hub, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_h5(work / "d.h5")
    (work / "photos").mkdir()
    monkeypatch.setitem(sys.modules, "h5py", None)
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    refused(hub, "d.h5", r"needs h5py, which is not installed: pip install 'hubzarr\[hdf5\]'")
    refused(
        hub, "./photos", r"needs Pillow, which is not installed: pip install 'hubzarr\[images\]'"
    )


# -- folders of images -----------------------------------------------------------------------


def picture(seed: int, size: tuple[int, int] = (12, 10), channels: int = 3) -> np.ndarray:
    """A (height, width, channels) uint8 image."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (*size, channels), dtype=np.uint8)


def save(path: Path, pixels: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    (image.convert(mode) if mode else image).save(path)


@pytest.fixture(params=["threads", "processes"])
def decoders(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Images read and decoded on threads, or (as many are) in processes."""
    if request.param == "processes":
        monkeypatch.setattr(imports, "_PROCESS_FROM", 1)
    return str(request.param)


def test_a_folder_of_class_folders_becomes_images_labels_and_classes(
    hub: hubzarr.Hub, work: Path, decoders: str
) -> None:
    expected = []
    for cls, n in [("dog", 3), ("cat", 2), ("emu", 1)]:
        for i in range(n):
            expected.append((cls, i, picture(len(expected) * 7)))
    for cls, i, pixels in expected:
        suffix = ".bmp" if cls == "emu" else ".png"
        save(work / "photos" / cls / f"{i:02d}{suffix}", pixels)
    (work / "photos" / "cat" / "notes.txt").write_text("not an image")
    (work / "photos" / ".hidden").mkdir()
    (work / "photos" / "dog" / ".DS_Store").write_bytes(b"\x00")
    report = hub.copy("./photos", "alice/pets", tag="v0")
    group = hub.load_group("alice/pets:v0")
    assert group.keys() == ["images", "labels"]
    assert dict(group.attrs) == {"classes": ["cat", "dog", "emu"]}
    order = sorted(expected, key=lambda e: (e[0], e[1]))  # by class, then by file name
    np.testing.assert_array_equal(group["images"][:], np.stack([e[2] for e in order]))
    np.testing.assert_array_equal(group["labels"][:], [0, 0, 1, 1, 1, 2])
    assert group["images"].dtype == np.uint8 and group["labels"].dtype == np.int64
    assert group["images"].chunks == (6, 12, 10, 3)  # whole images
    assert report.bytes == 6 * 12 * 10 * 3 + 6 * 8


def test_an_unlabelled_folder_gives_images_only_and_grayscale_has_one_channel(
    hub: hubzarr.Hub, work: Path
) -> None:
    pixels = [picture(i, channels=1) for i in range(4)]
    for i, p in enumerate(pixels):
        save(work / "scans" / f"{i}.png", p)
    hub.copy("./scans", "alice/scans")
    group = hub.load_group("alice/scans")
    assert group.keys() == ["images"] and dict(group.attrs) == {}
    assert group["images"].shape == (4, 12, 10, 1)
    np.testing.assert_array_equal(group["images"][:], np.stack(pixels))


def test_palette_images_are_expanded_to_rgb(hub: hubzarr.Hub, work: Path) -> None:
    rgb = picture(1)
    save(work / "p" / "a.png", rgb)
    save(work / "p" / "b.gif", rgb, mode="P")
    hub.copy("./p", "alice/p")
    images = hub.load_group("alice/p")["images"]
    assert images.shape == (2, 12, 10, 3)
    with Image.open(work / "p" / "b.gif") as gif:
        expected = np.asarray(gif.convert("RGB"))
    np.testing.assert_array_equal(images[1], expected)


def test_images_are_read_in_blocks_of_whole_chunks(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(40):
        save(work / "f" / f"{i:02d}.png", picture(i, (64, 64)))
    monkeypatch.setattr(imports, "IMAGE_CHUNK_BYTES", 64 * 64 * 3 * 4)
    monkeypatch.setattr(imports, "READ_BYTES", 64 * 64 * 3 * 8)
    with imports.open_source("./f") as source:
        (images,) = source.arrays
        assert images.chunks == (4, 64, 64, 3)
        origins = [b.origin[0] for b in images.blocks()]
    assert origins == list(range(0, 40, 8))


def test_images_of_several_sizes_are_refused_naming_the_first_that_differs(
    hub: hubzarr.Hub, work: Path
) -> None:
    np.save(work / "first.npy", np.arange(3))
    hub.copy("first.npy", "alice/first")
    save(work / "f" / "a" / "1.png", picture(0))
    save(work / "f" / "a" / "2.png", picture(1))
    save(work / "f" / "b" / "3.png", picture(2, (12, 11)))
    save(work / "f" / "b" / "4.png", picture(3, (9, 9)))
    message = refused(hub, "./f", "differ in size or mode")
    assert "'f/a/1.png' is 12x10 RGB, 'f/b/3.png' is 12x11 RGB" in message
    assert "resize=(H, W) (hub cp --resize HxW)" in message
    save(work / "g" / "1.png", picture(0))
    save(work / "g" / "2.png", picture(1, channels=1))
    assert "'g/2.png' is 12x10 L" in refused(hub, "./g", "differ in size or mode")


def test_resize_makes_one_size_and_the_mode_most_images_have(hub: hubzarr.Hub, work: Path) -> None:
    sources = [picture(0, (20, 30)), picture(1, (8, 8)), picture(2, (8, 8), channels=1)]
    for i, pixels in enumerate(sources):
        save(work / "f" / f"{i}.png", pixels)
    hub.copy("./f", "alice/f", resize=(6, 5))
    images = hub.load_group("alice/f")["images"]
    assert images.shape == (3, 6, 5, 3)
    for i in range(3):
        with Image.open(work / "f" / f"{i}.png") as image:
            expected = image.convert("RGB").resize((5, 6), Image.Resampling.BICUBIC)
        np.testing.assert_array_equal(images[i], np.asarray(expected))


@pytest.mark.parametrize("resize", [(0, 5), (5,), "5x5", (5, 5.0), (True, 5)])
def test_bad_resize_values_are_refused(hub: hubzarr.Hub, work: Path, resize: Any) -> None:
    save(work / "f" / "1.png", picture(0))
    refused(hub, "./f", "resize must be", resize=resize)


def test_resize_is_for_folders_of_images_only(hub: hubzarr.Hub, work: Path) -> None:
    np.save(work / "x.npy", np.arange(3))
    refused(hub, "x.npy", "resize applies to folders of images", resize=(2, 2))
    hub.copy("x.npy", "alice/y")
    with pytest.raises(InvalidArgumentError, match="resize= applies"):
        hub.copy("alice/y", "out.zarr", resize=(2, 2))


def test_folders_without_usable_images_are_refused(hub: hubzarr.Hub, work: Path) -> None:
    (work / "empty").mkdir()
    refused(hub, "./empty", r"'./empty': it holds no images \(files ending .png")
    (work / "docs").mkdir()
    (work / "docs" / "a.txt").write_text("x")
    (work / "docs" / "b.csv").write_text("x")
    refused(hub, "./docs", r"holds no images .*; it holds only 'a.txt' and 1 more")
    save(work / "c" / "cat" / "1.png", picture(0))
    (work / "c" / "dog").mkdir()
    refused(hub, "./c", r"class folder without images \(dog\)")
    save(work / "m" / "1.png", picture(0))
    save(work / "m" / "cls" / "2.png", picture(1))
    refused(hub, "./m", r"holds both images \(1.png\) and folders \(cls\)")
    save(work / "n" / "cls" / "sub" / "2.png", picture(1))
    refused(hub, "./n", r"a folder in a class folder \(cls/sub\)")
    save(work / "deep" / "1.png", picture(0, channels=3).astype(np.uint8))
    Image.fromarray(np.zeros((4, 4), np.uint16)).save(work / "deep" / "2.png")
    refused(hub, "./deep", r"'deep/2.png': it is a I;16 image")


def test_unreadable_images_are_refused_naming_the_file(
    hub: hubzarr.Hub, work: Path, decoders: str
) -> None:
    np.save(work / "first.npy", np.arange(3))
    hub.copy("first.npy", "alice/first")
    save(work / "f" / "1.png", picture(0))
    (work / "f" / "2.png").write_bytes(b"not a png at all")
    refused(hub, "./f", r"image 'f/2.png': it is not a readable image")
    # A header that reads but pixels that do not: found while decoding, after the repository
    # was created, which is then deleted again.
    save(work / "t" / "1.png", picture(0, (64, 64)))
    raw = (work / "t" / "1.png").read_bytes()
    (work / "t" / "2.png").write_bytes(raw[: len(raw) // 2])
    before = {k: v for k, v in listing(work / "hub").items() if v is not None}
    with pytest.raises(InvalidArgumentError, match=r"image 't/2.png': it cannot be decoded"):
        hub.copy("./t", "alice/t")
    assert hub.ls() == ["alice/first"]
    assert {k: v for k, v in listing(work / "hub").items() if v is not None} == before


def test_a_bare_word_that_is_a_folder_is_ambiguous(hub: hubzarr.Hub, work: Path) -> None:
    save(work / "photos" / "1.png", picture(0))
    with pytest.raises(InvalidArgumentError, match="ambiguous"):
        hub.copy("photos", "alice/photos")
    hub.copy(str(work / "photos"), "alice/photos")
    assert hub.load_group("alice/photos")["images"].shape == (1, 12, 10, 3)


# -- zarr stores -----------------------------------------------------------------------------


def make_v3(path: Path) -> dict[str, np.ndarray]:
    group = zarr.open_group(path, mode="w", zarr_format=3)
    group.attrs["title"] = "v3"
    values = {
        "blosc": np.arange(2000, dtype="f4").reshape(100, 20),
        "nested/gzip": np.arange(300, dtype="i2"),
        "nested/deeper/zstd": np.linspace(0, 1, 64).reshape(8, 8),
        "raw": np.arange(10, dtype="u1"),
        "sharded": np.arange(400, dtype="i8"),
        "two": np.arange(50, dtype="f8"),
    }
    compressors: dict[str, Any] = {
        "blosc": zarr.codecs.BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"),
        "nested/gzip": zarr.codecs.GzipCodec(level=4),
        "nested/deeper/zstd": zarr.codecs.ZstdCodec(level=2),
        "raw": None,
        "sharded": zarr.codecs.ZstdCodec(level=1),
        "two": [zarr.codecs.ZstdCodec(level=1), zarr.codecs.GzipCodec(level=1)],
    }
    for key, v in values.items():
        arr = group.create_array(
            key,
            shape=v.shape,
            dtype=v.dtype,
            chunks=(10, 10) if v.ndim == 2 else (25,),
            shards=(100,) if key == "sharded" else None,
            compressors=compressors[key],
            fill_value=7 if key == "raw" else 0,
            dimension_names=("t", "x") if key == "blosc" else None,
        )
        arr[...] = v
        arr.attrs["key"] = key
    group["nested"].attrs["level"] = 1
    return values


def test_a_format_3_store_imports_as_format_2(hub: hubzarr.Hub, work: Path) -> None:
    values = make_v3(work / "d.zarr")
    report = hub.copy("d.zarr", "alice/d", tag="v0")
    group = hub.load_group("alice/d:v0")
    assert group.keys() == ["blosc", "nested", "raw", "sharded", "two"]
    assert dict(group.attrs) == {"title": "v3"}
    nested = group["nested"]
    assert isinstance(nested, hubzarr.HubGroup) and dict(nested.attrs) == {"level": 1}
    for key, v in values.items():
        np.testing.assert_array_equal(group[key][:], v)
        zarray = stored_zarray(hub, "alice/d:v0", key)
        assert zarray["zarr_format"] == 2 and zarray["dtype"] == v.dtype.str
        zattrs = run(hub.reader("alice/d:v0").read(f"{key}/.zattrs"))
        dims = {"_ARRAY_DIMENSIONS": ["t", "x"]} if key == "blosc" else {}
        assert zattrs is not None and json.loads(bytes(zattrs)) == {"key": key, **dims}
    compressors = {key: stored_zarray(hub, "alice/d", key)["compressor"] for key in values}
    assert compressors["blosc"] == numcodecs.Blosc("zstd", 3, 2).get_config()
    assert compressors["nested/gzip"] == {"id": "gzip", "level": 4}
    assert compressors["nested/deeper/zstd"]["id"] == "zstd"
    assert compressors["nested/deeper/zstd"]["level"] == 2
    assert compressors["raw"] is None
    assert compressors["two"]["id"] == "blosc"  # no format 2 twin: hubzarr's default
    assert stored_zarray(hub, "alice/d", "raw")["fill_value"] == 7
    assert group["blosc"].chunks == (10, 10) and group["sharded"].chunks == (25,)
    assert report.bytes == sum(v.nbytes for v in values.values())


def test_a_format_2_store_and_a_hubzarr_export_import_again(hub: hubzarr.Hub, work: Path) -> None:
    group = zarr.open_group(work / "v2.zarr", mode="w", zarr_format=2)
    arr = group.create_array("x", shape=(30, 4), chunks=(7, 4), dtype="f8", fill_value=None)
    arr[...] = np.arange(120).reshape(30, 4)
    group.attrs["a"] = [1, 2]
    hub.copy("v2.zarr", "alice/v2")
    back = hub.load_group("alice/v2")
    np.testing.assert_array_equal(back["x"][:], np.arange(120).reshape(30, 4))
    assert back["x"].chunks == (7, 4) and dict(back.attrs) == {"a": [1, 2]}
    hub.copy("alice/v2", "out.zarr")
    hub.copy(f"file://{work / 'out.zarr'}", "alice/again")  # a URL: a zarr store
    np.testing.assert_array_equal(hub.load_group("alice/again")["x"][:], back["x"][:])


def test_a_single_array_store_imports_as_an_array(hub: hubzarr.Hub, work: Path) -> None:
    arr = zarr.create_array(work / "a.zarr", shape=(12,), chunks=(5,), dtype="i4", zarr_format=3)
    arr[...] = np.arange(12)
    hub.copy("a.zarr", "alice/a")
    np.testing.assert_array_equal(hub.load_array("alice/a")[:], np.arange(12))


def test_zarr_stores_hubzarr_cannot_store_are_refused(hub: hubzarr.Hub, work: Path) -> None:
    group = zarr.open_group(work / "s.zarr", mode="w", zarr_format=3)
    group.create_array("ok", shape=(3,), dtype="i4")
    group.create_array("names", shape=(3,), dtype=str)
    refused(hub, "s.zarr", r"'s.zarr' \(array '/names'\): it holds")
    (work / "nothing.zarr").mkdir()
    refused(hub, "nothing.zarr", "not a readable zarr store")
    refused(hub, "missing.zarr", "no such file")


# -- the command line --------------------------------------------------------------------------


def test_hub_cp_imports_a_folder_with_a_tag_and_resizes(work: Path) -> None:
    save(work / "folder" / "a" / "1.png", picture(0))
    save(work / "folder" / "b" / "2.png", picture(1, (5, 5)))
    runner = CliRunner()
    root = ["--root", str(work / "hub")]
    result = runner.invoke(app, ["cp", "./folder", "alice/imgs", "--tag", "v0", *root])
    assert result.exit_code == 1
    assert "differ in size or mode" in result.output and "--resize HxW" in result.output
    result = runner.invoke(app, ["cp", "./folder", "alice/imgs", "--resize", "8by8", *root])
    assert result.exit_code == 1 and "--resize takes HEIGHTxWIDTH" in result.output
    args = ["cp", "./folder", "alice/imgs", "--tag", "v0", "--resize", "8x6", *root]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "./folder -> alice/imgs: 2 objects" in result.output
    group = hubzarr.Hub(str(work / "hub")).load_group("alice/imgs:v0")
    assert group["images"].shape == (2, 8, 6, 3)
    np.testing.assert_array_equal(group["labels"][:], [0, 1])
    assert os.listdir(work / "hub") == ["alice"]


# -- killed imports --------------------------------------------------------------------------


def test_a_killed_import_leaves_no_repository(work: Path) -> None:
    """An import fills (and tags) a draft and publishes it last: killed at any write, it leaves
    nothing that `hub ls` shows; the next import makes it whole."""
    values = np.arange(64 * 50, dtype="f8").reshape(64, 50)
    np.save(work / "x.npy", values)
    root = str(work / "hub")
    counted = kill_copy(
        "x.npy", "alice/x", str(work / "probe"), "before", 10**9, work / "log", "v0"
    )
    assert counted is not None
    writes = [e for e in counted if e.startswith(("create", "write "))]
    published = writes.index("create alice/x/repo.json") + 1  # the n-th write publishes
    assert published > 3
    hub = hubzarr.Hub(root)
    for at in sorted({1, 2, published // 2, published - 1, published, len(writes)}):
        for when in ("before", "after"):
            log = work / f"log-{at}-{when}"
            assert kill_copy("x.npy", "alice/x", root, when, at, log, "v0") is None
            if at > published or (at, when) == (published, "after"):
                np.testing.assert_array_equal(hub.load_array("alice/x:v0")[:], values)
                hub.delete("alice/x")
            assert hub.ls() == [], (at, when)
            hub.copy("x.npy", "alice/x", tag="v0")
            np.testing.assert_array_equal(hub.load_array("alice/x:v0")[:], values)
            hub.delete("alice/x")
