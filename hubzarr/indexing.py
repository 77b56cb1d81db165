"""Indexing and chunk planning: which chunks a selection touches, and how to cut it into tasks.

Pure functions over shapes and indices, no I/O. A numpy basic index is normalised once
(:func:`normalize_index`) into a :class:`BasicSelection`; a selection is one :data:`Axis` per
dimension (a ``range`` with any step, or one integer), which composes with Python's own range
slicing (:func:`compose`), so a selection of a selection is again a plain selection. Each axis is
cut at chunk edges into :class:`AxisPiece` records (as zarr's ``ChunkDimProjection``), and the
pieces of all axes combine into one :class:`ChunkPiece` per chunk touched. Dask blocks and
reduction tasks are made of whole runs of pieces (:func:`block_counts`, :func:`task_groups`).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise, product
from typing import Any, NamedTuple, TypeVar

import numpy as np

from hubzarr.errors import InvalidIndexError

__all__ = [
    "Axis",
    "AxisPiece",
    "BasicSelection",
    "ChunkPiece",
    "Shaped",
    "aligned_chunks",
    "axis_pieces",
    "block_counts",
    "chunk_regions",
    "combine_pieces",
    "compose",
    "plan",
    "split_runs",
    "task_groups",
]

T = TypeVar("T")

#: One axis of a selection: a range of indices (any step), or one index (the axis is dropped).
Axis = range | int


class BasicSelection(NamedTuple):
    """A numpy basic index, normalised against an array's shape (:func:`normalize_index`)."""

    #: One non-negative integer or increasing slice (``slice(start, stop, step)`` with
    #: ``step > 0``, or ``slice(0, 0)`` when empty) per dimension: what zarr is given.
    selection: tuple[int | slice, ...]
    #: The shape of the result (integer-indexed axes dropped).
    shape: tuple[int, ...]
    #: Axes of the result to reverse afterwards: those the index took with a negative step.
    flips: tuple[int, ...]


class AxisPiece(NamedTuple):
    """The part of one axis of a selection that falls in one chunk along that axis."""

    #: The chunk's index along the axis.
    chunk: int
    #: What the selection takes inside the chunk: an increasing slice, or one index.
    inner: slice | int
    #: Where it goes in the (unflipped) result along this axis; ``None`` for an integer index,
    #: whose axis the result drops.
    outer: slice | None
    #: Whether the selection takes the whole chunk along this axis, in order.
    whole: bool

    @property
    def extent(self) -> int:
        """How many elements of the result this piece fills along the axis (0 for an index)."""
        return 0 if self.outer is None else self.outer.stop - self.outer.start


@dataclass(frozen=True, slots=True)
class ChunkPiece:
    """The part of one chunk a selection takes, and where it goes in the result."""

    #: The chunk's position in the chunk grid.
    coords: tuple[int, ...]
    #: What the selection takes inside the chunk.
    inner: tuple[slice | int, ...]
    #: Where it goes in the (unflipped) result.
    outer: tuple[slice, ...]
    #: The selection takes the whole chunk, in order, and the chunk lies inside the array.
    whole: bool


def normalize_index(key: Any, shape: tuple[int, ...]) -> BasicSelection:
    """Normalise a basic numpy index (integers, slices with any step, one ``...``).

    Raises
    ------
    InvalidIndexError
        For more indices than dimensions, several Ellipses, booleans, anything but integers,
        slices and Ellipsis, an integer out of bounds, or a slice with a zero or non-integer
        step or bound.
    """
    items = key if isinstance(key, tuple) else (key,)
    ellipses = [i for i, k in enumerate(items) if k is Ellipsis]
    if len(ellipses) > 1:
        raise InvalidIndexError("an index can only have a single Ellipsis ('...')")
    if ellipses:
        at = ellipses[0]
        fill = len(shape) - (len(items) - 1)
        items = (*items[:at], *(slice(None),) * max(fill, 0), *items[at + 1 :])
    if len(items) > len(shape):
        raise InvalidIndexError(
            f"too many indices: the array has {len(shape)} dimensions but {len(items)} were given"
        )
    items = items + (slice(None),) * (len(shape) - len(items))
    selection: list[int | slice] = []
    out_shape: list[int] = []
    flips: list[int] = []
    for axis, (item, size) in enumerate(zip(items, shape, strict=True)):
        if isinstance(item, slice):
            try:
                start, stop, step = item.indices(size)
            except (TypeError, ValueError) as exc:
                raise InvalidIndexError(
                    f"invalid slice {item} for axis {axis}: {exc}; slice bounds and steps "
                    "must be integers and the step non-zero"
                ) from exc
            span = range(start, stop, step)
            if step < 0 and span:
                flips.append(len(out_shape))
                span = span[::-1]
            selection.append(slice(span.start, span.stop, span.step) if len(span) else slice(0, 0))
            out_shape.append(len(span))
            continue
        if isinstance(item, bool | np.bool_):
            raise InvalidIndexError("boolean indices are not supported; use slices or integers")
        try:
            i = operator.index(item)
        except TypeError:
            raise InvalidIndexError(
                f"unsupported index {item!r} for axis {axis}: only integers, slices and "
                "Ellipsis are supported"
            ) from None
        if not -size <= i < size:
            raise InvalidIndexError(f"index {i} is out of bounds for axis {axis} with size {size}")
        selection.append(i % size)
    return BasicSelection(tuple(selection), tuple(out_shape), tuple(flips))


def compose(axes: Sequence[Axis], key: Any) -> tuple[Axis, ...]:
    """The selection that ``key`` (any basic index) takes of the selection ``axes``.

    ``key`` indexes the selection's own shape (its ranges; integer axes are gone), and the
    result is again one range or integer per dimension of the underlying array.

    Raises
    ------
    InvalidIndexError
        If ``key`` is not a valid basic index of the selection (see :func:`normalize_index`).
    """
    shape = tuple(len(a) for a in axes if isinstance(a, range))
    selection, _, flips = normalize_index(key, shape)
    picked = iter(selection)  # one item per range of the selection
    out: list[Axis] = []
    out_axis = 0
    for axis in axes:
        if isinstance(axis, int):
            out.append(axis)
            continue
        item = next(picked)
        if isinstance(item, int):
            out.append(axis[item])
            continue
        taken = axis[item]
        out.append(taken[::-1] if out_axis in flips else taken)
        out_axis += 1
    return tuple(out)


def axis_pieces(axis: Axis, chunk: int) -> list[AxisPiece]:
    """Cut one axis of a selection at the chunk edges.

    A decreasing range is cut as its increasing twin (the result is flipped afterwards).
    """
    if isinstance(axis, int):
        return [AxisPiece(axis // chunk, axis % chunk, None, False)]
    rng = axis if axis.step > 0 else axis[::-1]
    start, step, n = rng.start, rng.step, len(rng)
    pieces: list[AxisPiece] = []
    k = 0
    while k < n:
        i = start + step * k
        j, low = divmod(i, chunk)
        end = min(n, -(-((j + 1) * chunk - start) // step))  # first k past this chunk
        count = end - k
        inner = slice(low, low + step * (count - 1) + 1, step)
        pieces.append(AxisPiece(j, inner, slice(k, end), step == 1 and count == chunk))
        k = end
    return pieces


def plan(
    axes: Sequence[Axis], chunks: Sequence[int]
) -> tuple[list[list[AxisPiece]], tuple[int, ...]]:
    """Cut every axis of a selection at the chunk edges; return the pieces per axis and the
    axes of the result to flip (those taken with a negative step)."""
    per_axis = [axis_pieces(a, c) for a, c in zip(axes, chunks, strict=True)]
    flips = []
    out_axis = 0
    for axis in axes:
        if isinstance(axis, range):
            if axis.step < 0:
                flips.append(out_axis)
            out_axis += 1
    return per_axis, tuple(flips)


def combine_pieces(
    parts: Sequence[AxisPiece], chunks: Sequence[int], shape: Sequence[int]
) -> ChunkPiece:
    """One piece per axis (of one chunk each) as the piece of the chunk where they meet."""
    coords = tuple(p.chunk for p in parts)
    inner = tuple(p.inner for p in parts)
    outer = tuple(p.outer for p in parts if p.outer is not None)
    # A chunk at the array's far edge is stored whole but only partly inside the array.
    inside = all((j + 1) * c <= n for j, c, n in zip(coords, chunks, shape, strict=True))
    return ChunkPiece(coords, inner, outer, inside and all(p.whole for p in parts))


def task_groups(
    pieces: Sequence[T], chunk_nbytes: int, *, task_bytes: int, min_tasks: int
) -> list[list[T]]:
    """Split pieces into runs of about ``task_bytes`` of chunks, and at least ``min_tasks``
    runs when there are enough pieces (parallelism)."""
    per_task = max(1, task_bytes // max(chunk_nbytes, 1))
    per_task = max(1, min(per_task, -(-len(pieces) // min_tasks)))
    return [list(pieces[i : i + per_task]) for i in range(0, len(pieces), per_task)]


def block_counts(
    lengths: Sequence[Sequence[int] | None], itemsize: int, target: int
) -> list[list[int]]:
    """Merge consecutive pieces of each axis into blocks of about ``target`` bytes; return,
    per axis, how many pieces each block takes.

    ``lengths`` gives each axis's piece lengths (chunks, or parts of chunks at a selection's
    edges), or ``None`` for an axis indexed by an integer (one piece, no extent). Trailing axes
    are merged whole first (a block's rows stay contiguous, so whole chunks decode in place),
    then as many pieces of the next axis as fit; leading axes take one piece per block.
    """
    counts: list[list[int]] = [[1] * len(axis or (0,)) for axis in lengths]
    inner = itemsize
    for a in reversed(range(len(lengths))):
        axis = lengths[a]
        if axis is None:
            continue
        total = sum(axis)
        if inner * total <= target:
            counts[a] = [len(axis)]
            inner *= total
            continue
        per_block = max(1, target // max(inner * max(axis), 1))
        counts[a] = [min(per_block, len(axis) - i) for i in range(0, len(axis), per_block)]
        break  # the axes before this one take one piece per block
    return counts


def split_runs(items: Sequence[T], counts: Sequence[int]) -> list[list[T]]:
    """``items`` cut into consecutive runs of the given lengths."""
    out, start = [], 0
    for n in counts:
        out.append(list(items[start : start + n]))
        start += n
    return out


def aligned_chunks(
    region: Sequence[slice], chunks: Sequence[int], itemsize: int, target: int
) -> tuple[tuple[int, ...], ...]:
    """Dask chunks for a region whose block edges fall on the array's chunk edges.

    The first block of each axis runs to the first chunk edge inside the region; the others
    hold whole chunks, merged (trailing axes first) up to about ``target`` bytes.
    """
    per_axis: list[list[int]] = []
    for s, c in zip(region, chunks, strict=True):
        edges = [s.start, *range((s.start // c + 1) * c, s.stop, c), s.stop]
        per_axis.append([b - a for a, b in pairwise(edges) if b > a])
    counts = block_counts(per_axis, itemsize, target)
    return tuple(
        tuple(sum(run) for run in split_runs(lengths, n))
        for lengths, n in zip(per_axis, counts, strict=True)
    )


def chunk_regions(
    shape: Sequence[int], chunks: Sequence[int], itemsize: int, target: int
) -> Iterator[tuple[slice, ...]]:
    """Regions of whole chunks, of about ``target`` bytes (at least one chunk), that cover an
    array of ``shape`` once, in C order.

    A region takes as many chunks of the last axis as fit, then (if it took the whole axis)
    as many of the one before, and so on: its rows stay contiguous when the trailing axes fit.
    """
    block = list(chunks)
    size = itemsize * math.prod(chunks)
    for a in reversed(range(len(shape))):
        count = min(-(-shape[a] // chunks[a]), max(1, target // size))
        block[a] = count * chunks[a]
        size *= count
        if block[a] < shape[a]:
            break
    starts = [range(0, n, b) for n, b in zip(shape, block, strict=True)]
    for corner in product(*starts):
        yield tuple(
            slice(lo, min(lo + b, n)) for lo, b, n in zip(corner, block, shape, strict=True)
        )


class Shaped:
    """``ndim``, ``size``, ``nbytes`` and ``len()``, from the ``shape`` and ``dtype`` of an
    array-like (:class:`hubzarr.arrays.HubArray`, :class:`hubzarr.bulk.LazyArray`)."""

    @property
    def shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    @property
    def dtype(self) -> np.dtype[Any]:
        raise NotImplementedError

    @property
    def ndim(self) -> int:
        """The number of dimensions."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """The number of elements."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """The size in bytes, uncompressed."""
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d array")
        return self.shape[0]
