"""Pictures of arrays: montages of samples (``hub show``, ``HubArray.show``) and what a notebook
shows of an array or a group (``_repr_html_``). Pillow (the ``hubzarr[images]`` extra) is
imported only when a picture is drawn.

How an array's shape is read, the first rule that fits (``C`` is a channel count: 1 grey,
3 RGB, 4 RGBA)::

    ()  and  (N,)                        refused: no picture
    (H, W)                               one grayscale image
    (H, W, C), C in 3, 4, C < H, C < W   one RGB or RGBA image
    (N, H, W)                            N grayscale images; a volume (D, H, W) is the
                                         same thing: its D slices along the first axis
    (N, H, W, C), C in 1, 3, 4           N images, channels last
    (N, C, H, W), C in 1, 3, 4           N images, channels first
    (N, D, H, W)                         N volumes: each sample a row of up to 8 slices
                                         along D, evenly spaced
    5 axes or more                       refused

The first axis holds the samples that an index selects (an int, a slice, a list of ints; by
default the first 16, or 4 volumes); one image is the one sample ``0``. Values: ``uint8`` as
stored, ``bool`` as 0 and 255, any other integer or float stretched per tile (all its channels
together) from its smallest finite value (0) to its largest (255), NaN and -inf as 0, +inf as
255, a constant tile as 0. Complex, string and time dtypes are refused.

Tiles are scaled to one size: images whose longer side is under 96 px are enlarged by a whole
factor, nearest neighbour (a 28 x 28 digit becomes 112 x 112), and those over 256 px reduced to
256 px. They lie on a white sheet in a near-square grid (one row per volume), 4 px apart, each
with a caption beneath: the sample's index (and slice ``z``), and with labels the label and,
when class names are known, the class name (``12: cat (3)``).
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from hubzarr.errors import InvalidArgumentError, InvalidIndexError

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "IMAGE_KEYS",
    "LABEL_KEYS",
    "Arrangement",
    "Described",
    "Labelled",
    "Pictured",
    "arrangement",
    "array_html",
    "class_names",
    "group_html",
    "parse_index",
    "render",
    "save",
    "thumbnail",
]

#: Samples shown when no index is given (volumes: ``DEFAULT_VOLUMES``, a row each).
DEFAULT_SAMPLES = 16
DEFAULT_VOLUMES = 4
#: Slices shown of each volume.
VOLUME_SLICES = 8
#: The most tiles one picture holds.
MAX_TILES = 256
#: Tiles whose longer side is shorter are enlarged (by a whole factor), longer ones reduced.
MIN_TILE = 96
MAX_TILE = 256
#: Pixels between tiles and around the sheet.
GAP = 4
#: The most bytes of chunks a picture decodes, and a notebook's thumbnail.
MAX_READ = 256 * 2**20
THUMBNAIL_READ = 16 * 2**20
#: Samples in a notebook's thumbnail.
THUMBNAIL_SAMPLES = 8
#: Where :meth:`hubzarr.groups.HubGroup.show` looks for images and labels, in this order.
IMAGE_KEYS = ("images", "image", "x")
LABEL_KEYS = ("labels", "label", "y")
#: The attributes that name the classes (of the labels array, else of the group).
CLASS_ATTRIBUTES = ("class_names", "classes")

_INSTALL = 'pip install "hubzarr[images]"'
_SHAPES = "(H, W), (H, W, 3|4), (N, H, W), (N, H, W, 1|3|4), (N, 1|3|4, H, W) or (N, D, H, W)"

Index = int | slice | Sequence[int] | None


class Shaped(Protocol):
    """An array's layout: shape, dtype, chunks."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> np.dtype[Any]: ...

    @property
    def chunks(self) -> tuple[int, ...]: ...


class Pictured(Shaped, Protocol):
    """What a picture is drawn from: a :class:`~hubzarr.arrays.HubArray` (or anything with a
    shape, dtype, chunks and numpy basic indexing)."""

    def __getitem__(self, key: Any) -> npt.NDArray[Any]: ...


class Described(Shaped, Protocol):
    """What a notebook's table says of an array: shape, dtype, chunks, size."""

    @property
    def nbytes(self) -> int: ...


class Labelled(Protocol):
    """Labels: a 1-d :class:`~hubzarr.arrays.HubArray` or numpy array, one value a sample."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __getitem__(self, key: Any) -> Any: ...


class Arrangement(NamedTuple):
    """How an array's axes are read as pictures (the rules are in the module docstring)."""

    #: ``"image"`` (the whole array is one), ``"images"`` or ``"volumes"`` (along axis 0).
    kind: Literal["image", "images", "volumes"]
    #: How many samples an index chooses from (1 for one image).
    samples: int
    #: Whether the channels precede the rows, ``(N, C, H, W)``.
    channels_first: bool = False


def arrangement(shape: tuple[int, ...], dtype: np.dtype[Any]) -> Arrangement:
    """Read ``shape`` as pictures, by the rules of the module docstring.

    Parameters
    ----------
    shape : tuple of int
        The array's shape.
    dtype : numpy.dtype
        The array's dtype.

    Returns
    -------
    Arrangement
        The kind of picture and the number of samples.

    Raises
    ------
    InvalidArgumentError
        If the dtype is not boolean, integer or float, the shape fits no rule, or the images
        would have no pixels.
    """
    if dtype.kind not in "biuf":
        raise InvalidArgumentError(
            f"cannot draw an array of dtype {dtype}: pictures are of booleans, integers or floats"
        )
    described = f"an array of shape {shape}"
    if len(shape) < 2 or len(shape) > 4:
        what = "one value" if not shape else f"{len(shape)}-d"
        raise InvalidArgumentError(
            f"cannot draw {described} ({what}): pictures are drawn of shapes {_SHAPES}"
        )
    pixels: tuple[int, ...] = shape
    if len(shape) == 2:
        found = Arrangement("image", 1)
    elif len(shape) == 3 and shape[2] in (3, 4) and shape[2] < min(shape[0], shape[1]):
        found, pixels = Arrangement("image", 1), shape[:2]
    elif len(shape) == 3:
        found, pixels = Arrangement("images", shape[0]), shape[1:]
    elif shape[3] in (1, 3, 4):
        found, pixels = Arrangement("images", shape[0]), shape[1:3]
    elif shape[1] in (1, 3, 4):
        found, pixels = Arrangement("images", shape[0], channels_first=True), shape[2:]
    else:
        found, pixels = Arrangement("volumes", shape[0]), shape[2:]
    if 0 in pixels or (found.kind == "volumes" and shape[1] == 0):
        raise InvalidArgumentError(f"cannot draw {described}: its images have no pixels")
    return found


def parse_index(text: str) -> int | slice | list[int]:
    """Read the samples that ``hub show``'s INDEX names: ``5``, ``-1``, ``0:16``, ``::100``,
    ``3,7,9``.

    Raises
    ------
    InvalidArgumentError
        If ``text`` is none of these.
    """
    try:
        if "," in text:
            return [int(part) for part in text.split(",")]
        if ":" in text:
            bounds = text.split(":")
            if len(bounds) > 3:
                raise ValueError(text)
            return slice(*(int(b) if b.strip() else None for b in bounds))
        return int(text)
    except ValueError:
        raise InvalidArgumentError(
            f"INDEX selects samples along the first axis: an integer (5, -1), a slice "
            f"(0:16, ::100) or integers separated by commas (3,7,9), not {text!r}"
        ) from None


def _picks(index: Index, count: int, default: int) -> Sequence[int]:
    """The samples (non-negative, in order given) that ``index`` selects of ``count``; the
    first ``default`` if it is ``None``. Slices stay ranges: ``::1`` of 10**9 lists nothing."""
    if count == 0:
        raise InvalidIndexError("the array holds no samples (its first axis has length 0)")
    if index is None:
        return range(min(count, default))
    if isinstance(index, slice):
        run = range(*index.indices(count))
        if not run:
            raise InvalidIndexError(
                f"the slice {_slice_text(index)} selects none of the {count} samples"
            )
        return run
    items = [index] if isinstance(index, int | np.integer) else index
    if isinstance(items, str | bytes) or not isinstance(items, Sequence) or not items:
        raise InvalidArgumentError(
            f"samples are selected by an int, a slice or a list of ints, not {index!r}"
        )
    picked: list[int] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int | np.integer):
            raise InvalidArgumentError(f"a sample index is an integer, not {item!r}")
        if not -count <= item < count:
            raise InvalidIndexError(
                f"sample {item} is out of range: the array holds {count} "
                f"(indices 0 to {count - 1}, or -{count} to -1)"
            )
        picked.append(int(item) % count)
    return picked


def _slice_text(index: slice) -> str:
    parts = ["" if p is None else str(p) for p in (index.start, index.stop, index.step)]
    return ":".join(parts).removesuffix(":") if index.step is None else ":".join(parts)


class _Tile(NamedTuple):
    """Where one tile's pixels are read: the sample, and for a volume the slice."""

    sample: int
    z: int | None


def _tiles(array: Pictured, found: Arrangement, index: Index) -> list[_Tile]:
    if found.kind == "image":
        _picks(index, 1, 1)
        return [_Tile(0, None)]
    zs: list[int | None] = [None]
    if found.kind == "volumes":
        depth = array.shape[1]
        zs = sorted({round(z) for z in np.linspace(0, depth - 1, min(depth, VOLUME_SLICES))})
    default = DEFAULT_SAMPLES if found.kind == "images" else DEFAULT_VOLUMES
    samples = _picks(index, found.samples, default)
    if len(samples) * len(zs) > MAX_TILES:
        raise InvalidArgumentError(
            f"the selection makes {len(samples) * len(zs)} tiles; a picture holds at most "
            f"{MAX_TILES}: select fewer samples, or every k-th (::k)"
        )
    return [_Tile(i, z) for i in samples for z in zs]


def _bytes_read(array: Pictured, found: Arrangement, tiles: list[_Tile]) -> int:
    """The bytes of the chunks that reading ``tiles`` decodes: whole chunks along the sample
    axes (and the slice axis of volumes), every chunk along the others."""
    if found.kind == "image":
        return int(np.prod(array.shape)) * array.dtype.itemsize
    lead = 2 if found.kind == "volumes" else 1
    chunks = {
        (t.sample // array.chunks[0], 0 if t.z is None else t.z // array.chunks[1]) for t in tiles
    }
    per_chunk = math.prod(array.chunks[:lead]) * math.prod(array.shape[lead:])
    return len(chunks) * per_chunk * array.dtype.itemsize


def _read(array: Pictured, found: Arrangement, tiles: list[_Tile]) -> list[npt.NDArray[Any]]:
    """Each tile's values as ``(H, W)`` or ``(H, W, C)``."""
    if found.kind == "image":
        return [np.asarray(array[...])]
    if found.kind == "volumes":
        return [np.asarray(array[t.sample, t.z]) for t in tiles]
    samples = [t.sample for t in tiles]
    step = samples[1] - samples[0] if len(samples) > 1 else 1
    if step > 0 and samples == list(range(samples[0], samples[-1] + 1, step)):
        # One read of an evenly spaced run: its chunks are fetched concurrently.
        block = np.asarray(array[samples[0] : samples[-1] + 1 : step])
        values = list(block)
    else:
        values = [np.asarray(array[i]) for i in samples]
    if found.channels_first:
        values = [np.moveaxis(v, 0, -1) for v in values]
    return values


def _to_uint8(values: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """One tile's values as 8-bit pixels, by the rules of the module docstring."""
    if values.ndim == 3 and values.shape[2] == 1:
        values = values[:, :, 0]
    if values.dtype == np.uint8:
        return values
    if values.dtype == np.bool_:
        return values.astype(np.uint8) * np.uint8(255)
    data = values.astype(np.float64)
    finite = np.isfinite(data)
    if not finite.any():
        low = high = 0.0
    else:
        low, high = float(data[finite].min()), float(data[finite].max())
    scaled = np.zeros(data.shape, dtype=np.float64)
    if high > low:
        scaled = (np.where(finite, data, low) - low) * (255.0 / (high - low))
    scaled[np.isposinf(data)] = 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def class_names(*attributes: dict[str, Any]) -> list[str] | None:
    """The class names of the first attributes holding ``class_names`` or ``classes`` as a
    list of strings (anything else under those names is not class names, and skipped).

    Parameters
    ----------
    *attributes : dict
        Attributes to look in, in order (a labels array's, then its group's).

    Returns
    -------
    list of str or None
        The names, label ``i`` being ``names[i]``; ``None`` if none are found.
    """
    for attrs in attributes:
        for key in CLASS_ATTRIBUTES:
            names = attrs.get(key)
            if isinstance(names, list) and all(isinstance(n, str) for n in names):
                return names
    return None


def _captions(
    tiles: list[_Tile],
    found: Arrangement,
    labels: Labelled | None,
    names: Sequence[str] | None,
) -> list[str]:
    if found.kind == "image":
        return [""]
    captions = [str(t.sample) if t.z is None else f"{t.sample} z={t.z}" for t in tiles]
    if labels is None:
        return captions
    if len(labels.shape) != 1 or labels.shape[0] != found.samples:
        raise InvalidArgumentError(
            f"labels must hold one value a sample: shape ({found.samples},), not {labels.shape}"
        )
    for n, tile in enumerate(tiles):
        value = np.asarray(labels[tile.sample]).item()
        text = f"{value:g}" if isinstance(value, float) else str(value)
        if names is not None and isinstance(value, int) and 0 <= value < len(names):
            text = f"{names[value]} ({text})"
        captions[n] += f": {text}"
    return captions


def render(
    array: Pictured,
    index: Index = None,
    *,
    labels: Labelled | None = None,
    class_names: Sequence[str] | None = None,
    max_bytes: int = MAX_READ,
) -> Image.Image:
    """Draw samples of ``array`` as one picture (the rules are in the module docstring).

    Parameters
    ----------
    array : HubArray
        The array (anything with ``shape``, ``dtype``, ``chunks`` and basic indexing).
    index : int, slice or sequence of int, optional
        The samples along the first axis; default the first 16 (4 volumes).
    labels : HubArray or numpy.ndarray, optional
        One label a sample, written in each caption.
    class_names : sequence of str, optional
        The name of each class: label ``i`` is ``class_names[i]``.
    max_bytes : int
        Refuse to decode more than this many bytes of chunks.

    Returns
    -------
    PIL.Image.Image
        The picture: mode ``L``, ``RGB`` or ``RGBA`` as the samples are.

    Raises
    ------
    InvalidArgumentError
        If Pillow is not installed, the array has no image-like shape or dtype, the index is
        of the wrong kind, ``labels`` do not hold one value a sample, or the selection holds
        more than 256 tiles or would decode more than ``max_bytes``.
    InvalidIndexError
        If a sample is out of range or the selection is empty.
    """
    found = arrangement(array.shape, array.dtype)
    tiles = _tiles(array, found, index)
    needed = _bytes_read(array, found, tiles)
    if needed > max_bytes:
        raise InvalidArgumentError(
            f"drawing the selection would decode {_size(needed)} of chunks, more than "
            f"{_size(max_bytes)}: select fewer samples"
        )
    captions = _captions(tiles, found, labels, class_names)
    pixels = [_to_uint8(values) for values in _read(array, found, tiles)]
    if found.kind == "volumes":
        columns = len(tiles) // len({t.sample for t in tiles})
    else:
        columns = math.ceil(math.sqrt(len(tiles)))
    return _montage(pixels, captions, columns)


def _montage(pixels: list[npt.NDArray[np.uint8]], captions: list[str], columns: int) -> Image.Image:
    """Lay ``pixels`` (tiles of one shape) out in ``columns``, captions beneath."""
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:
        raise InvalidArgumentError(
            f"drawing pictures needs Pillow, which is not installed: {_INSTALL}"
        ) from None

    channels = max(p.shape[2] if p.ndim == 3 else 1 for p in pixels)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
    height, width = pixels[0].shape[:2]
    longest = max(height, width)
    if longest < MIN_TILE:
        factor = math.ceil(MIN_TILE / longest)
        size = (width * factor, height * factor)
        resample = Image.Resampling.NEAREST
    else:
        shrink = min(1.0, MAX_TILE / longest)
        size = (max(1, round(width * shrink)), max(1, round(height * shrink)))
        resample = Image.Resampling.BOX
    font = ImageFont.load_default()
    line = int(font.getbbox("Ag(0)")[3]) + 2 if any(captions) else 0
    rows = math.ceil(len(pixels) / columns)
    cell_w, cell_h = size[0] + GAP, size[1] + line + GAP
    sheet = Image.new(mode, (columns * cell_w + GAP, rows * cell_h + GAP), "white")
    draw = ImageDraw.Draw(sheet)
    draw.fontmode = "1"  # black text only: no grey edges that could pass for data
    for n, (values, caption) in enumerate(zip(pixels, captions, strict=True)):
        tile = Image.fromarray(values).convert(mode)
        if tile.size != size:
            tile = tile.resize(size, resample)
        x, y = GAP + (n % columns) * cell_w, GAP + (n // columns) * cell_h
        sheet.paste(tile, (x, y))
        text = caption
        while text and font.getlength(text) > size[0]:
            text = text[:-1]
        if text:
            draw.text((x, y + size[1] + 1), text, fill="black", font=font)
    return sheet


def save(image: Image.Image, path: str) -> None:
    """Write ``image`` to the file ``path``, in the format its extension names (``.png``).

    Raises
    ------
    InvalidArgumentError
        If the extension names no format Pillow writes, the format cannot hold the picture's
        mode (RGBA as JPEG), or the file cannot be written.
    """
    try:
        image.save(path)
    except (ValueError, KeyError, OSError) as exc:
        raise InvalidArgumentError(
            f"cannot write the picture to {path!r} ({exc}); write a .png file"
        ) from None


def thumbnail(array: Pictured) -> bytes | None:
    """A PNG of the first few samples of ``array`` (up to 8, or one volume), decoding at
    most 16 MiB of chunks; ``None`` if the array has no image-like shape, even one sample is
    larger, or Pillow is not installed.

    Raises
    ------
    StorageError
        If a chunk cannot be read (:class:`~hubzarr.errors.CorruptChunkError`: it does not
        decode).
    """
    try:
        found = arrangement(array.shape, array.dtype)
    except InvalidArgumentError:
        return None
    if found.samples == 0:
        return None
    wanted = 1 if found.kind == "volumes" else THUMBNAIL_SAMPLES
    for count in (wanted, 4, 2, 1):
        index = slice(0, min(count, found.samples)) if found.kind != "image" else None
        if _bytes_read(array, found, _tiles(array, found, index)) <= THUMBNAIL_READ:
            break
    else:
        return None
    try:
        image = render(array, index, max_bytes=THUMBNAIL_READ)
    except InvalidArgumentError:  # Pillow is not installed
        return None
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _size(nbytes: int) -> str:
    for unit, scale in (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if nbytes >= scale * 0.9:
            return f"{nbytes / scale:.2f} {unit}"
    return f"{nbytes / 2**10:.2f} kiB" if nbytes >= 922 else f"{nbytes} B"


def _table(rows: Sequence[tuple[str, ...]], header: tuple[str, ...] = ()) -> str:
    """An HTML table of ``rows`` (the first cell of each a heading), every text escaped."""
    cells = []
    if header:
        cells.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        head, *rest = (html.escape(cell) for cell in row)
        cells.append(
            f'<tr><th style="text-align:left">{head}</th>'
            + "".join(f'<td style="text-align:left">{c}</td>' for c in rest)
            + "</tr>"
        )
    return "<table>" + "".join(cells) + "</table>"


def array_html(
    name: str, path: str, version: str, array: Described, *, picture: bytes | None
) -> str:
    """The HTML a notebook shows of an array: a table (name, key in its group, version,
    shape, dtype, chunks, size) and ``picture``, a PNG, inline.

    Parameters
    ----------
    name, path, version : str
        The repository's name at its ref, the array's key in its group (``""`` for none),
        and the version id.
    array : HubArray
        The array.
    picture : bytes, optional
        A PNG (:func:`thumbnail`) to show beneath the table.

    Returns
    -------
    str
        HTML in which every text is escaped.
    """
    rows = [("name", name)] + ([("key", path)] if path else [])
    rows += [
        ("version", version),
        ("shape", str(array.shape)),
        ("dtype", str(array.dtype)),
        ("chunks", str(array.chunks)),
        ("size", _size(array.nbytes)),
    ]
    parts = ['<div class="hubzarr-array">', "<strong>HubArray</strong>", _table(rows)]
    if picture is not None:
        encoded = base64.b64encode(picture).decode("ascii")
        alt = html.escape(f"the first samples of {name}", quote=True)
        parts.append(f'<img src="data:image/png;base64,{encoded}" alt="{alt}">')
    return "\n".join([*parts, "</div>"])


def group_html(name: str, path: str, version: str, members: Sequence[tuple[str, Described]]) -> str:
    """The HTML a notebook shows of a group: its name, key and version, and a table of its
    arrays (those of subgroups too) with shape, dtype, chunks and size.

    Parameters
    ----------
    name, path, version : str
        The repository's name at its ref, the group's key (``""`` for the root), the version.
    members : list of (str, array)
        Each array's key and the array.

    Returns
    -------
    str
        HTML in which every text is escaped.
    """
    about = [("name", name)] + ([("key", path)] if path else []) + [("version", version)]
    arrays = [
        (
            key,
            str(a.shape),
            str(a.dtype),
            str(a.chunks),
            _size(a.nbytes),
        )
        for key, a in members
    ]
    parts = ['<div class="hubzarr-group">', "<strong>HubGroup</strong>", _table(about)]
    if arrays:
        parts.append(_table(arrays, ("array", "shape", "dtype", "chunks", "size")))
    else:
        parts.append("<p>no arrays</p>")
    return "\n".join([*parts, "</div>"])
