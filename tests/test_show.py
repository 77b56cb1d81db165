"""Pictures of arrays: ``show()``, ``hub show`` and the notebook views, checked on the pixels of
the decoded PNG (tiles found by their values, so the layout's constants are not restated)."""

from __future__ import annotations

import base64
import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import hubzarr
from hubzarr import show
from hubzarr.cli import app
from hubzarr.errors import InvalidArgumentError, InvalidIndexError, NotFoundError


@pytest.fixture
def hub(local_root: str) -> hubzarr.Hub:
    return hubzarr.Hub(local_root)


def pixels(image: Image.Image) -> np.ndarray:
    """The picture as a PNG file would give it back."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())))


def box(px: np.ndarray, value: object) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of the pixels equal to ``value``, which must fill it."""
    match = np.all(px == value, axis=-1) if px.ndim == 3 else px == value
    rows, cols = np.nonzero(match)
    assert rows.size, f"no pixel is {value}"
    top, left = rows.min(), cols.min()
    height, width = rows.max() - top + 1, cols.max() - left + 1
    assert match.sum() == height * width, f"the pixels of {value} are not one rectangle"
    return int(top), int(left), int(height), int(width)


def ink(px: np.ndarray, top: int, left: int, height: int, width: int) -> int:
    """Black pixels (caption text) in a region of a grayscale picture."""
    return int((px[top : top + height, left : left + width] == 0).sum())


def stack(values: list[int], shape: tuple[int, ...]) -> np.ndarray:
    """Samples of ``shape``, sample ``i`` filled with ``values[i]``."""
    return np.stack([np.full(shape, v, dtype=np.uint8) for v in values])


# -- images ----------------------------------------------------------------------------------


def test_grayscale_tiles_hold_the_stored_values_in_a_near_square_grid(hub: hubzarr.Hub) -> None:
    arr = hub.array((5, 28, 28), "alice/digits", dtype="uint8")
    arr[:] = stack([10, 20, 30, 40, 50], (28, 28))
    image = arr.show()
    assert image.mode == "L"
    px = pixels(image)
    tiles = [box(px, v) for v in (10, 20, 30, 40, 50)]
    # 28 x 28 enlarged by a whole factor to at least 96 px, nearest neighbour: 112 x 112.
    assert {t[2:] for t in tiles} == {(112, 112)}
    # Five tiles: three columns, two rows, in order.
    (t0, l0, _, _), (t1, l1, _, _), (t2, l2, _, _), (t3, l3, _, _), (t4, l4, _, _) = tiles
    assert t0 == t1 == t2 < t3 == t4
    assert l0 < l1 < l2 and l3 == l0 and l4 == l1
    assert image.width < 4 * 112 and image.width > 3 * 112
    assert image.height > 2 * 112


@pytest.mark.parametrize(
    ("shape", "channels_first"),
    [((3, 10, 12, 3), False), ((3, 3, 10, 12), True)],
)
def test_rgb_tiles_hold_the_stored_colours(
    hub: hubzarr.Hub, shape: tuple[int, ...], channels_first: bool
) -> None:
    colours = [(200, 10, 30), (5, 180, 60), (70, 80, 250)]
    data = np.stack([np.full((10, 12, 3), c, dtype=np.uint8) for c in colours])
    arr = hub.array(shape, "alice/rgb", dtype="uint8")
    arr[:] = np.moveaxis(data, -1, 1) if channels_first else data
    image = arr.show()
    assert image.mode == "RGB"
    px = pixels(image)
    for colour in colours:
        top, left, height, width = box(px, colour)
        assert (height, width) == (80, 96)  # 10 x 12 enlarged 8 times
        assert tuple(px[top + height // 2, left + width // 2]) == colour


def test_rgba_keeps_the_alpha_channel(hub: hubzarr.Hub) -> None:
    arr = hub.array((2, 8, 8, 4), "alice/rgba", dtype="uint8")
    arr[0], arr[1] = (10, 20, 30, 128), (40, 50, 60, 255)
    image = arr.show()
    assert image.mode == "RGBA"
    px = pixels(image)
    assert box(px, (10, 20, 30, 128))[2:] == (96, 96)
    assert box(px, (40, 50, 60, 255))[2:] == (96, 96)
    assert tuple(px[0, 0]) == (255, 255, 255, 255)  # the sheet is opaque white


def test_one_image_is_one_tile_without_a_caption(hub: hubzarr.Hub) -> None:
    arr = hub.array((20, 30, 3), "alice/photo", dtype="uint8")
    arr[:] = (1, 2, 3)
    px = pixels(arr.show())
    top, left, height, width = box(px, (1, 2, 3))
    assert (height, width) == (80, 120)  # enlarged 4 times
    assert px.shape[:2] == (top + height + top, left + width + left)  # no caption row


def test_large_images_are_reduced(hub: hubzarr.Hub) -> None:
    arr = hub.array((1, 600, 300), "alice/big", dtype="uint8")
    arr[:] = 77
    assert box(pixels(arr.show()), 77)[2:] == (256, 128)


# -- values ----------------------------------------------------------------------------------


def test_floats_are_stretched_from_min_to_max_nan_black(hub: hubzarr.Hub) -> None:
    sample = np.zeros((9, 9), dtype=np.float32)
    sample[:, 0:3], sample[:, 3:6], sample[:, 6:9] = -1.0, 0.2, 2.0
    sample[0, 0] = np.nan
    arr = hub.array((1, 9, 9), "alice/floats", dtype="float32")
    arr[0] = sample
    px = pixels(arr.show())
    top, left, height, width = box(px, 102)  # (0.2 + 1) / 3 * 255
    assert width == height // 3  # the middle third
    row = px[top + height // 2]
    assert row[left - 1] == 0 and row[left + width] == 255  # min -> 0, max -> 255
    assert px[top, left - width] == 0  # NaN


def test_integers_are_stretched_per_tile_and_booleans_are_black_and_white(
    hub: hubzarr.Hub,
) -> None:
    ints = hub.array((2, 3, 3), "alice/ints", dtype="int16")
    ints[0] = np.array([[-500] * 3, [250] * 3, [1000] * 3])
    ints[1] = 7
    px = pixels(ints.show())
    top, left, height, width = box(px, 128)  # the middle row: 127.5, rounded
    assert (height, width) == (32, 96)
    assert px[top - 1, left] == 0 and px[top + height, left] == 255  # min -> 0, max -> 255
    beside = left + width + show.GAP  # the constant tile, to the right: black
    assert (px[top - 32 : top + 64, beside : beside + 96] == 0).all()

    flags = hub.array((1, 2, 2), "alice/flags", dtype="bool")
    flags[0] = [[True, False], [False, True]]
    px = pixels(flags.show())
    assert set(np.unique(px[4:100, 4:100])) == {0, 255}
    assert px[4, 4] == 255 and px[4, 99] == 0


def test_complex_arrays_are_refused(hub: hubzarr.Hub) -> None:
    arr = hub.array((2, 4, 4), "alice/complex", dtype="complex64")
    with pytest.raises(InvalidArgumentError, match="booleans, integers or floats"):
        arr.show()


# -- volumes ---------------------------------------------------------------------------------


def test_volumes_show_rows_of_evenly_spaced_slices(hub: hubzarr.Hub) -> None:
    arr = hub.array((2, 15, 12, 12), "alice/scans", dtype="uint8")
    for z in range(15):
        arr[0, z] = 10 + z
        arr[1, z] = 100 + z
    px = pixels(arr.show())
    zs = [0, 2, 4, 6, 8, 10, 12, 14]  # 8 slices of 15, evenly spaced
    first = [box(px, 10 + z) for z in zs]
    second = [box(px, 100 + z) for z in zs]
    assert len({t[0] for t in first}) == 1 and len({t[0] for t in second}) == 1
    assert first[0][0] < second[0][0]  # one row a volume
    assert [t[1] for t in first] == sorted(t[1] for t in first)
    assert [t[1] for t in first] == [t[1] for t in second]
    for z in set(range(15)) - set(zs):
        assert not (px == 10 + z).any()


# -- selecting samples -----------------------------------------------------------------------


def test_index_selects_samples(hub: hubzarr.Hub) -> None:
    arr = hub.array((20, 4, 4), "alice/many", dtype="uint8")
    arr[:] = stack(list(range(1, 21)), (4, 4))
    present = lambda image: {v for v in range(1, 21) if (pixels(image) == v).any()}  # noqa: E731
    assert present(arr.show()) == set(range(1, 17))  # the first 16
    assert present(arr.show(slice(None, None, 5))) == {1, 6, 11, 16}
    assert present(arr.show(-1)) == {20}
    list_picture = pixels(arr.show([3, 1]))
    assert box(list_picture, 4)[1] < box(list_picture, 2)[1]  # in the order given
    with pytest.raises(InvalidIndexError, match="sample 20 is out of range"):
        arr.show(20)
    with pytest.raises(InvalidIndexError, match="selects none"):
        arr.show(slice(5, 5))
    with pytest.raises(InvalidArgumentError, match="an int, a slice or a list"):
        arr.show("3")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="at most 256"):
        hub.array((300, 2, 2), "alice/lots", dtype="uint8").show(slice(None))


@pytest.mark.parametrize(
    ("text", "index"),
    [("5", 5), ("-1", -1), ("0:16", slice(0, 16)), ("::100", slice(None, None, 100)),
     ("3,7,9", [3, 7, 9])],
)  # fmt: skip
def test_parse_index(text: str, index: object) -> None:
    assert show.parse_index(text) == index


@pytest.mark.parametrize("text", ["x", "1:2:3:4", "1,,2", "1.5", ""])
def test_parse_index_refuses(text: str) -> None:
    with pytest.raises(InvalidArgumentError, match="INDEX selects samples"):
        show.parse_index(text)


@pytest.mark.parametrize(
    ("shape", "message"),
    [((), r"shape \(\) \(one value\)"), ((5,), r"shape \(5,\) \(1-d\)"),
     ((2, 2, 2, 2, 2), "5-d")],
)  # fmt: skip
def test_shapes_without_pictures_are_refused(
    hub: hubzarr.Hub, shape: tuple[int, ...], message: str
) -> None:
    arr = hub.array(shape, "alice/odd", dtype="uint8")
    with pytest.raises(InvalidArgumentError, match=message):
        arr.show()


def test_images_without_pixels_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="no pixels"):
        show.arrangement((3, 0, 4), np.dtype("uint8"))


def test_a_billion_samples_are_selected_without_listing_them(hub: hubzarr.Hub) -> None:
    arr = hub.array((10**9, 2, 2), "alice/endless", dtype="uint8")
    assert arr.show().width == 4 * (96 + show.GAP) + show.GAP  # the first 16: 4 x 4 tiles
    with pytest.raises(InvalidArgumentError, match="makes 1000000000 tiles"):
        arr.show(slice(None))


def test_reads_are_bounded(hub: hubzarr.Hub) -> None:
    arr = hub.array((10, 1000, 1000), "alice/wide", dtype="uint8")
    with pytest.raises(InvalidArgumentError, match="would decode"):
        show.render(arr, max_bytes=2**20)


# -- captions --------------------------------------------------------------------------------


@pytest.fixture
def mnist(hub: hubzarr.Hub) -> hubzarr.HubGroup:
    group = hub.group("alice/mnist")
    images = group.create_array("images", (6, 28, 28), dtype="uint8")
    images[:] = stack([10, 20, 30, 40, 50, 60], (28, 28))
    labels = group.create_array("labels", (6,), dtype="int64")
    labels[:] = [2, 0, 1, 2, 0, 1]
    group.attrs["classes"] = ["airplane", "automobile", "bird"]
    hubzarr.tag("alice/mnist", "v1", root=hub.root)
    return group


def caption_ink(px: np.ndarray, value: int) -> int:
    top, left, height, width = box(px, value)
    return ink(px, top + height, left, 20, width)


def test_captions_hold_index_label_and_class_name(mnist: hubzarr.HubGroup) -> None:
    images = mnist["images"]
    assert isinstance(images, hubzarr.HubArray)
    bare = pixels(images.show())
    labelled = pixels(mnist.show())
    for value in (10, 20, 30):
        assert caption_ink(bare, value) > 0  # the index
        assert caption_ink(labelled, value) > 2 * caption_ink(bare, value)
    # The same tiles, taller sheet rows are not needed: the captions fit one line.
    assert bare.shape == labelled.shape
    # Labels alone, without class names, make shorter captions than with them.
    labels = mnist["labels"]
    numbers = pixels(images.show(labels=labels))
    named = pixels(images.show(labels=labels, class_names=["airplane", "automobile", "bird"]))
    assert caption_ink(bare, 10) < caption_ink(numbers, 10) < caption_ink(named, 10)
    assert np.array_equal(named, labelled)


def test_labels_must_hold_one_value_a_sample(mnist: hubzarr.HubGroup) -> None:
    images = mnist["images"]
    assert isinstance(images, hubzarr.HubArray)
    with pytest.raises(InvalidArgumentError, match=r"shape \(6,\), not \(5,\)"):
        images.show(labels=np.arange(5))


def test_group_picks_images_and_labels_by_name_or_key(hub: hubzarr.Hub) -> None:
    group = hub.group("bob/set")
    x = group.create_array("x", (2, 4, 4), dtype="uint8")
    x[:] = stack([11, 22], (4, 4))
    other = group.create_array("scans", (2, 4, 4), dtype="uint8")
    other[:] = stack([33, 44], (4, 4))
    y = group.create_array("y", (2,), dtype="int64")
    y[:] = [1, 0]
    y.zarr.attrs["class_names"] = ["zero", "one"]
    group.attrs["classes"] = ["not", "these"]
    px = pixels(group.show())
    assert (px == 11).any() and not (px == 33).any()
    assert np.array_equal(px, pixels(x.show(labels=y, class_names=["zero", "one"])))
    by_key = pixels(group.show(key="scans", labels="y"))
    assert (by_key == 33).any()
    del group["x"]
    with pytest.raises(InvalidArgumentError, match=r"holds 'scans', 'y' and none is named"):
        group.show()
    group.create_group("sub")
    with pytest.raises(InvalidArgumentError, match="'sub' of the group bob/set:main is a group"):
        group.show(key="sub")
    with pytest.raises(NotFoundError):
        group.show(key="missing")


def test_show_writes_the_file(mnist: hubzarr.HubGroup, tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    image = mnist.show([0, 1], path=str(target))
    assert np.array_equal(np.asarray(Image.open(target)), np.asarray(image))
    with pytest.raises(InvalidArgumentError, match="cannot write the picture"):
        mnist.show(path=str(tmp_path / "out.unknown"))


def test_missing_pillow_is_named(mnist: hubzarr.HubGroup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(InvalidArgumentError, match=r'pip install "hubzarr\[images\]"'):
        mnist.show()
    images = mnist["images"]
    assert isinstance(images, hubzarr.HubArray)
    assert "<img" not in images._repr_html_()  # the table still shows


# -- notebooks -------------------------------------------------------------------------------


def embedded_png(page: str) -> np.ndarray:
    found = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(found) == 1, page
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(found[0]))))


def test_array_html_has_the_fields_and_a_thumbnail(mnist: hubzarr.HubGroup) -> None:
    images = hubzarr.load_group("alice/mnist:v1", root=mnist.store.root)["images"]
    assert isinstance(images, hubzarr.HubArray)
    page = images._repr_html_()
    for field, value in [
        ("name", "alice/mnist:v1"),
        ("key", "images"),
        ("version", images.version),
        ("shape", "(6, 28, 28)"),
        ("dtype", "uint8"),
        ("chunks", str(images.chunks)),
        ("size", "4.59 kiB"),
    ]:
        assert re.search(rf"<th[^>]*>{field}</th><td[^>]*>{re.escape(value)}</td>", page), field
    thumb = embedded_png(page)
    for value in (10, 20, 30, 40, 50, 60):  # all six samples (up to 8)
        assert box(thumb, value)[2:] == (112, 112)


def test_html_of_pictureless_and_huge_arrays_has_no_thumbnail(hub: hubzarr.Hub) -> None:
    line = hub.array((5,), "alice/line", dtype="uint8")
    assert "<img" not in line._repr_html_()
    # One sample is 17 MiB: more than a thumbnail reads.
    huge = hub.array((4, 4200, 4200), "alice/huge", dtype="uint8")
    page = huge._repr_html_()
    assert "(4, 4200, 4200)" in page and "<img" not in page


def test_html_escapes_keys(hub: hubzarr.Hub) -> None:
    group = hub.group("alice/hostile")
    key = "<script>alert(1)</script>"
    group.create_array(key, (2, 4, 4), dtype="uint8")
    for page in (group._repr_html_(), group[key]._repr_html_()):
        assert "<script>" not in page
        assert "&lt;script&gt;alert(1)&lt;" in page
    assert "(2, 4, 4)" in group._repr_html_()


# -- hub show --------------------------------------------------------------------------------


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_cli_writes_the_picture(
    runner: CliRunner, mnist: hubzarr.HubGroup, hub: hubzarr.Hub, work: Path
) -> None:
    result = runner.invoke(app, ["show", "alice/mnist:v1", "0:4", "-o", "four.png", "--root",
                                 hub.root])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    written = np.asarray(Image.open(work / "four.png"))
    assert result.stdout == f"wrote four.png ({written.shape[1]}x{written.shape[0]} px, L)\n"
    assert np.array_equal(written, pixels(mnist.show(slice(0, 4))))
    # Without -o: NAME with '/' and ':' as '-', in the current folder; an index after '--'.
    result = runner.invoke(app, ["show", "--root", hub.root, "alice/mnist:v1", "--", "-1"])
    assert result.exit_code == 0, result.output
    assert (pixels(Image.open(work / "alice-mnist-v1.png")) == 60).any()
    result = runner.invoke(app, ["show", "alice/mnist", "--key", "images", "--labels",
                                 "labels", "--root", hub.root])  # fmt: skip
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["alice/mnist", "6"], "sample 6 is out of range: the array holds 6"),
        (["alice/mnist", "1:x"], "INDEX selects samples along the first axis"),
        (["alice/mnist", "--key", "labels"], r"cannot draw an array of shape \(6,\) \(1-d\)"),
        (["alice/zero"], r"cannot draw an array of shape \(\) \(one value\)"),
        (["alice/nothing"], "no repository alice/nothing"),
        (["alice/zero", "--key", "x"], "alice/zero is an array: --key and --labels"),
    ],
)
def test_cli_errors(
    runner: CliRunner,
    mnist: hubzarr.HubGroup,
    hub: hubzarr.Hub,
    work: Path,
    args: list[str],
    message: str,
) -> None:
    hub.array((), "alice/zero", dtype="uint8")
    result = runner.invoke(app, ["show", *args, "--root", hub.root])
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert re.match(rf"error: {message}", result.stderr), result.stderr
    assert list(work.glob("*.png")) == []


def test_help_does_not_import_pillow() -> None:
    script = (
        "import sys\n"
        "from hubzarr.cli import app\n"
        "for args in (['--help'], ['show', '--help']):\n"
        "    try:\n"
        "        app(args)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('PIL' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines()[-1] == "False"


def test_help_lists_show(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "show" in result.stdout
    result = runner.invoke(app, ["show", "--help"])
    assert result.exit_code == 0 and "3,7,9" in result.stdout
