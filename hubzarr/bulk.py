"""Bulk computation: hubzarr's own dask graphs that read, reduce and write whole arrays.

zarr's ``da.from_zarr`` reads each dask block through zarr's indexing machinery, which costs
about as much as decoding the data. These graphs instead fetch the chunk objects of a block
through the :class:`~hubzarr.stores.HubStore` (concurrently, ahead of the decoding) and decode
each one with numcodecs straight into the block's memory. Reductions never build blocks at
all: a task decodes one chunk at a time into a buffer its thread reuses and folds it into
running moments while it is still in the CPU cache, so a mean runs near the speed at which the
machine can read and decompress, in memory proportional to the number of threads.

Everything a task needs travels in a :class:`Layout` (shapes, codecs) and a :class:`_Reader`
or :class:`_Writer` (the store, which pickles without credentials), each a single graph key, so
that a dask.distributed worker receives it once and opens the repository once.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from itertools import product
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt
from zarr.core.sync import sync

from hubzarr.chunks import Layout, scratch_buffer
from hubzarr.errors import CorruptChunkError, InvalidArgumentError
from hubzarr.indexing import (
    Axis,
    ChunkPiece,
    Shaped,
    aligned_chunks,
    block_counts,
    combine_pieces,
    compose,
    normalize_index,
    plan,
    split_runs,
    task_groups,
)
from hubzarr.runner import submit as submit_coroutine
from hubzarr.spec import check_ddof, check_flag
from hubzarr.storage import OBJECT_STORE_CONNECTIONS
from hubzarr.stores import HubStore

if TYPE_CHECKING:
    from hubzarr.arrays import HubArray

__all__ = ["Layout", "LazyArray", "Stats", "check_chunks_decode", "check_histogram"]

T = TypeVar("T")

#: A dask block of :attr:`LazyArray.dask` holds about this many bytes (whole chunks merged).
BLOCK_BYTES = 64 * 2**20
#: A reduction task decodes about this many bytes of chunks ...
TASK_BYTES = 32 * 2**20
#: ... and a graph has at least this many tasks when there are enough chunks (parallelism).
MIN_TASKS = 16
#: Chunk reads in flight ahead of the decoding, per task (dask's tasks run many at once) ...
READ_AHEAD = 8
#: ... and per numpy read of an object store, for all its threads (one a core, decoding):
#: chunk reads started and not yet decoded, at most, and the bytes of chunks they may hold.
IN_FLIGHT = OBJECT_STORE_CONNECTIONS
WINDOW_BYTES = 512 * 2**20
#: A task reading at least this many chunks of an object store at a branch lists the array's
#: objects in the head first: one request for up to 1,000, where probing costs one per chunk.
LIST_FROM = 16
#: Partial results combined per reduction task.
FAN_IN = 16
#: Deviations from a chunk's mean are taken in float64 in pieces of this many elements.
_DEV_RUN = 65536


# -- reading -------------------------------------------------------------------------------


@dataclass(eq=False)
class _Reader:
    """Fetches chunk payloads of one array at one version, ahead of their decoding.

    Every task carries its reader (a few hundred bytes: no data, no credentials), so that
    dask.distributed places tasks freely; a worker process unpickling readers of the same
    array at the same version gets one shared instance, which opened the repository once.
    """

    store: HubStore
    layout: Layout

    def __reduce__(self) -> tuple[Any, ...]:
        return (_shared_reader, (self.store, self.layout))

    def listing(self, *, follow: bool = False) -> dict[str, int] | None:
        """At a branch of an object store, the array's objects in the head, from one listing
        (:meth:`Session.head_listing`); ``follow``: after following the branch to its current
        head, the check and the listing run at once. ``None`` where reads do not list."""
        session, storage = self.store.session, self.store.storage
        # Local files: probing a generation is a system call, not a request. Read-only (web)
        # roots: a listing is an HTML page that may say less than the root holds.
        pinned = session.pinned
        if storage.caller_reads or storage.read_only or (pinned is not None and pinned.sealed):
            if follow:
                session.follow_head()
            return None
        prefix = f"{self.layout.path}/" if self.layout.path else ""
        work = session.fresh_head_listing(prefix) if follow else session.head_listing(prefix)
        listed: dict[str, int] | None = submit_coroutine(work).result()
        return listed

    def start(
        self, coords: tuple[int, ...], listed: Mapping[str, int] | None
    ) -> Future[memoryview | None]:
        """Start reading one chunk of an object store: its payload, as a future.

        What the local cache holds is read at once, in this thread, as a local file would be;
        the rest is read on hubzarr's event loop thread.
        """
        session, key = self.store.session, self.layout.key(coords)
        hit = session.read_cached(key, listed) if self.store.storage.caches else None
        if hit is None:
            reading: Future[memoryview | None] = submit_coroutine(session.read(key, listed=listed))
            return reading
        done: Future[memoryview | None] = Future()
        done.set_result(hit[0])
        return done

    def fetch(
        self,
        coords: Sequence[tuple[int, ...]],
        listed: Mapping[str, int] | None = None,
    ) -> Iterator[memoryview | None]:
        """Yield the payload (``None``: never written) of each chunk, in order.

        Up to :data:`READ_AHEAD` reads run on hubzarr's event loop thread while the caller
        decodes (reads create nothing tied to a loop, see :mod:`hubzarr.runner`). ``listed``
        (:meth:`listing`, taken after the read was asked for) makes each read one request; a
        fetch of many chunks takes one itself.
        """
        store = self.store
        if store.storage.caller_reads:
            # Local files: reading is a copy from the page cache, cheapest in this thread.
            for c in coords:
                yield store.session.read_here(self.layout.key(c))
            return
        pending: deque[Future[memoryview | None]] = deque()
        todo = iter(coords)
        if listed is None and len(coords) >= LIST_FROM:
            listed = self.listing()

        def submit() -> None:
            for c in todo:
                pending.append(self.start(c, listed))
                if len(pending) >= READ_AHEAD:
                    return

        submit()
        try:
            while pending:
                payload = pending.popleft().result()
                submit()
                yield payload
        finally:
            for future in pending:
                future.cancel()


_readers: dict[tuple[Any, ...], _Reader] = {}
_readers_lock = threading.Lock()
#: Readers a worker process keeps (each holds one version's index of chunk locations).
_MAX_READERS = 32


def _shared_reader(store: HubStore, layout: Layout) -> _Reader:
    """The reader of this process for ``store``'s version of ``layout``'s array."""
    resolved = store.session.pinned
    version = resolved.version if resolved is not None else None
    key = (store.root, str(store.name), version, store.read_only, repr(layout))
    with _readers_lock:
        reader = _readers.get(key)
        if reader is None:
            if len(_readers) >= _MAX_READERS:
                _readers.pop(next(iter(_readers)))
            reader = _readers[key] = _Reader(store, layout)
        return reader


def read_block(
    reader: _Reader, pieces: Sequence[ChunkPiece], shape: tuple[int, ...], flips: tuple[int, ...]
) -> npt.NDArray[Any]:
    """Assemble one block of a selection from its chunk pieces (a dask task)."""
    out = np.empty(shape, dtype=reader.layout.dtype)
    read_into(reader, pieces, out)
    return np.flip(out, axis=flips) if flips else out


def read_into(
    reader: _Reader,
    pieces: Sequence[ChunkPiece],
    out: npt.NDArray[Any],
    listed: Mapping[str, int] | None = None,
    payloads: Iterable[memoryview | None] | None = None,
) -> None:
    """Fill ``out`` (a block of a selection, unflipped) from its chunk pieces, whole chunks
    decoded straight into place: their ``payloads`` in order, or fetched ahead by this task
    (``listed``: see :meth:`_Reader.fetch`)."""
    layout = reader.layout
    if payloads is None:
        payloads = reader.fetch([p.coords for p in pieces], listed)
    for piece, payload in zip(pieces, payloads, strict=True):
        target = out[(*piece.outer, Ellipsis)]  # type: ignore[arg-type]  # a view, even 0-d
        if payload is None:
            target[...] = layout.fill_value
        elif (
            piece.whole
            and target.flags.c_contiguous
            and layout.decode_into(payload, target, piece.coords)
        ):
            continue
        else:
            scratch = scratch_buffer(layout.chunk_nbytes)
            target[...] = layout.decode(payload, piece.coords, scratch)[piece.inner]


@dataclass(frozen=True, slots=True)
class _Block:
    """One block of a selection: whole chunks (merged), where it lies in the result."""

    #: Its position in the grid of blocks of the (flipped) result.
    index: tuple[int, ...]
    #: Its chunk pieces, ``outer`` relative to the block.
    pieces: list[ChunkPiece]
    #: Its shape.
    shape: tuple[int, ...]
    #: Where it lies in the unflipped result.
    region: tuple[slice, ...]


class _Blocks:
    """A selection cut into blocks of whole chunks merged up to about ``target`` bytes: the
    tasks of a dask graph, or of a numpy read."""

    def __init__(self, axes: Sequence[Axis], layout: Layout, target: int) -> None:
        self.layout = layout
        per_axis, self.flips = plan(axes, layout.chunks)
        self.extents: list[list[int] | None] = [
            None if isinstance(axis, int) else [p.extent for p in pieces]
            for axis, pieces in zip(axes, per_axis, strict=True)
        ]
        self.counts = block_counts(self.extents, layout.dtype.itemsize, target)
        self.groups = [split_runs(p, c) for p, c in zip(per_axis, self.counts, strict=True)]
        self.out_axes = [a for a, axis in enumerate(axes) if isinstance(axis, range)]

    def dask_chunks(self) -> tuple[tuple[int, ...], ...]:
        """The blocks' lengths along each axis of the (flipped) result."""
        chunks: list[tuple[int, ...]] = []
        for out, a in enumerate(self.out_axes):
            runs = split_runs(self.extents[a] or [], self.counts[a])
            lengths = tuple(sum(run) for run in runs)
            chunks.append(lengths[::-1] if out in self.flips else lengths)
        return tuple(chunks)

    def __iter__(self) -> Iterator[_Block]:
        layout, groups, out_axes = self.layout, self.groups, self.out_axes
        for block in product(*(range(len(g)) for g in groups)):
            chosen = [groups[a][b] for a, b in enumerate(block)]
            starts = [g[0].outer.start if g[0].outer is not None else 0 for g in chosen]
            pieces = []
            for parts in product(*chosen):
                piece = combine_pieces(parts, layout.chunks, layout.shape)
                outer = tuple(
                    slice(s.start - starts[a], s.stop - starts[a])
                    for a, s in zip(out_axes, piece.outer, strict=True)
                )
                pieces.append(ChunkPiece(piece.coords, piece.inner, outer, piece.whole))
            shape = tuple(sum(p.extent for p in chosen[a]) for a in out_axes)
            index = tuple(
                len(groups[a]) - 1 - block[a] if out in self.flips else block[a]
                for out, a in enumerate(out_axes)
            )
            region = tuple(
                slice(starts[a], starts[a] + n) for a, n in zip(out_axes, shape, strict=True)
            )
            yield _Block(index, pieces, shape, region)


def read_selection(
    array: HubArray, axes: Sequence[Axis], *, follow: bool = False
) -> npt.NDArray[Any]:
    """Read a selection (one ``range`` or ``int`` per dimension) into a new numpy array.

    hubzarr's own read path, as the dask graphs read: blocks of whole chunks are filled on a
    pool of threads, each fetching its chunks' bytes concurrently (checksums checked) and
    decoding whole chunks straight into the result; never-written chunks are filled without a
    read. ``follow``: at a branch, follow it to its current head first.

    Raises
    ------
    CorruptChunkError
        Naming the chunk, if one fails its checksum or does not decode.
    """
    layout = array.layout
    shape = tuple(len(a) for a in axes if isinstance(a, range))
    out = np.empty(shape, dtype=layout.dtype)
    if out.size == 0:
        return out
    reader = _Reader(array.store, layout)
    workers = os.cpu_count() or 1
    target = min(BLOCK_BYTES, max(layout.chunk_nbytes, out.nbytes // (2 * workers)))
    blocks = _Blocks(axes, layout, target)
    tasks = [(block.pieces, out[block.region]) for block in blocks]
    if sum(len(pieces) for pieces, _ in tasks) >= LIST_FROM:
        listed = reader.listing(follow=follow)  # one for the whole read
    else:
        listed = None
        if follow:
            array.store.session.follow_head()
    if array.store.storage.caller_reads:  # each thread reads its own
        _run_on_pool(read_into, [(reader, *task, listed) for task in tasks])
        return np.flip(out, axis=blocks.flips) if blocks.flips else out
    # An object store: one window of reads ahead for the whole selection, in the order the
    # threads (one a core) decode.
    window = _Window(reader, [p.coords for pieces, _ in tasks for p in pieces], listed, layout)
    calls: list[tuple[Any, ...]] = []
    start = 0
    for pieces, region in tasks:
        calls.append((reader, pieces, region, listed, window.payloads(start, len(pieces))))
        start += len(pieces)
    try:
        _run_on_pool(read_into, calls)
    finally:
        window.close()
    return np.flip(out, axis=blocks.flips) if blocks.flips else out


class _Window:
    """The chunk reads of one numpy read of an object store: started in the order its tasks
    decode, at most ``IN_FLIGHT`` (and ``WINDOW_BYTES`` of chunks) started and not yet taken,
    whichever thread takes them."""

    def __init__(
        self,
        reader: _Reader,
        coords: Sequence[tuple[int, ...]],
        listed: Mapping[str, int] | None,
        layout: Layout,
    ) -> None:
        self._reader, self._coords, self._listed = reader, coords, listed
        self._size = max(2, min(IN_FLIGHT, WINDOW_BYTES // max(layout.chunk_nbytes, 1)))
        self._slots: list[Future[memoryview | None] | None] = [None] * len(coords)
        #: The reads started and not taken, by chunk (a taken one lets go of its payload).
        self._reads: dict[int, Future[memoryview | None]] = {}
        self._started = self._taken = 0
        self._lock = threading.Lock()

    def payloads(self, start: int, count: int) -> Iterator[memoryview | None]:
        """The payloads of chunks ``start`` to ``start + count`` (in the order given)."""
        for i in range(start, start + count):
            yield self._take(i)

    def _take(self, i: int) -> memoryview | None:
        self._start(upto=i)
        slot = self._slots[i]
        assert slot is not None
        payload = slot.result()
        self._slots[i] = None
        self._reads.pop(i, None)
        with self._lock:
            self._taken += 1
        self._start()
        return payload

    def _start(self, upto: int = -1) -> None:
        """Start reads in order until the window is full (and chunk ``upto`` is started)."""
        while True:
            with self._lock:
                i = self._started
                if i >= len(self._coords) or (i > upto and i - self._taken >= self._size):
                    return
                self._started += 1
                slot = self._slots[i] = Future()
            # Outside the lock: a cached chunk is read here, by the thread that starts it.
            try:
                read = self._reader.start(self._coords[i], self._listed)
            except BaseException as exc:
                slot.set_exception(exc)
                raise
            self._reads[i] = read
            read.add_done_callback(partial(_settle, slot))

    def close(self) -> None:
        """Cancel the reads started and not done (after an error)."""
        for read in list(self._reads.values()):
            read.cancel()


def _settle(slot: Future[T], read: Future[T]) -> None:
    """Give ``slot`` the outcome of ``read``."""
    if read.cancelled():
        slot.cancel()
    elif (error := read.exception()) is not None:
        slot.set_exception(error)
    else:
        slot.set_result(read.result())


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _forget_pool() -> None:
    global _pool
    _pool = None  # a forked child has none of the parent's threads


os.register_at_fork(after_in_child=_forget_pool)


def _run_on_pool(fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]]) -> None:
    """Run ``fn(*call)`` for each call on the process's pool of reading threads, one a core
    (a single call in this thread); wait for all, and raise the first error.

    The threads last: what each keeps per thread (the cache's SQLite connection, decoders'
    scratch buffers) is made once, not once a read.
    """
    global _pool
    if len(calls) == 1:  # no hand-over to another thread for one
        fn(*calls[0])
        return
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="hubzarr-read")
        pool = _pool
    futures = [pool.submit(fn, *call) for call in calls]
    try:
        for future in futures:
            future.result()
    finally:
        for future in futures:
            future.cancel()
        wait(futures)  # after an error too: nothing of this read runs on


def check_chunks_decode(
    array: HubArray, selection: Sequence[int | slice], cause: BaseException
) -> None:
    """Raise :class:`CorruptChunkError` for the first chunk of ``selection`` that does not
    decode to a chunk of ``array``; return if every one does.

    For naming the chunk behind an error that zarr's codec pipeline raised (``cause``), which
    names none: each chunk the selection touches is read again and decoded as the bulk readers
    decode.

    Parameters
    ----------
    array : HubArray
        The array read.
    selection : sequence of int or slice
        One index or slice (non-negative bounds, positive step) per dimension.
    cause : BaseException
        The error being explained; the raised one is chained to it.

    Raises
    ------
    CorruptChunkError
        Naming the chunk's key, if one does not decode.
    """
    layout = array.layout
    axes: list[Axis] = [
        item if isinstance(item, int) else range(*item.indices(n))
        for item, n in zip(selection, layout.shape, strict=True)
    ]
    per_axis, _ = plan(axes, layout.chunks)
    coords = list(dict.fromkeys(tuple(p.chunk for p in parts) for parts in product(*per_axis)))
    scratch = scratch_buffer(layout.chunk_nbytes)
    for c, payload in zip(coords, _Reader(array.store, layout).fetch(coords), strict=True):
        if payload is not None:
            try:
                layout.decode(payload, c, scratch)
            except CorruptChunkError as error:
                raise error from cause


# -- one-pass statistics -------------------------------------------------------------------


@dataclass(slots=True)
class Stats:
    """Running statistics of many values, mergeable in any order (Chan et al.'s parallel
    moments): count, sum, mean, sum of squared deviations (``m2``), min, max, histogram."""

    count: int = 0
    total: Any = 0
    mean: float = 0.0
    m2: float = 0.0
    low: Any = None
    high: Any = None
    hist: npt.NDArray[np.int64] | None = None

    def merge(self, other: Stats) -> Stats:
        """Fold ``other`` into this one; return self."""
        if other.count == 0:
            return self
        if self.count == 0:
            self.count, self.total, self.mean, self.m2 = (
                other.count,
                other.total,
                other.mean,
                other.m2,
            )
            self.low, self.high, self.hist = other.low, other.high, other.hist
            return self
        n = self.count + other.count
        delta = other.mean - self.mean
        square = (delta * delta.conjugate()).real  # |delta|^2, for complex means too
        self.m2 = self.m2 + other.m2 + square * self.count * other.count / n
        self.mean = self.mean + delta * other.count / n
        self.count = n
        self.total = self.total + other.total
        if other.low is not None:
            self.low = other.low if self.low is None else min(self.low, other.low)
            self.high = other.high if self.high is None else max(self.high, other.high)
        if other.hist is not None:
            self.hist = other.hist if self.hist is None else self.hist + other.hist
        return self

    def repeated(self, n: int) -> Stats:
        """Turn the statistics of one value into those of ``n`` copies of it; return self."""
        self.count = n
        self.total = self.total * n
        self.m2 = 0.0
        if self.hist is not None:
            self.hist = self.hist * n
        return self

    def hist_or(self, bins: int) -> npt.NDArray[np.int64]:
        """The histogram's counts (zeros if no value was seen)."""
        return self.hist if self.hist is not None else np.zeros(bins, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class _Want:
    """Which statistics a reduction needs (the rest are skipped)."""

    sum: bool = False
    moments: bool = False
    extremes: bool = False
    #: Histogram bins, as numpy.histogram takes them: a count (with ``range``) or the edges.
    bins: int | tuple[float, ...] | None = None
    range: tuple[Any, Any] | None = None  # numpy scalars when taken from the data


def _int_sum(data: npt.NDArray[Any]) -> int:
    """The exact sum of integers (no wrap-around, whatever the count and size)."""
    wide = np.uint64 if data.dtype.kind == "u" else np.int64
    if data.dtype.itemsize < 8 and data.size < 2**31:
        return int(data.sum(dtype=wide))  # each term < 2**32: no int64 overflow
    low, high = int(data.min()), int(data.max())
    if max(abs(low), abs(high)) * data.size < 2**63:
        return int(data.sum(dtype=wide))
    # Sum the high and low 32-bit halves apart: neither can overflow below 2**31 terms.
    values = data.astype(wide, copy=False)
    return (int((values >> 32).sum(dtype=wide)) << 32) + int((values & 0xFFFFFFFF).sum(dtype=wide))


def _data_stats(data: npt.NDArray[Any], want: _Want) -> Stats:
    """Statistics of the values of ``data``."""
    n = data.size
    stats = Stats(count=n)
    if n == 0:
        return stats
    kind = data.dtype.kind
    if want.moments:
        stats.mean, stats.m2 = _moments(data)
        stats.total = stats.mean * n
    elif want.sum:
        if kind in "biu":
            total: Any = _int_sum(data)
        elif kind == "c":
            total = complex(data.sum(dtype=np.complex128))
        else:
            # Accumulated in float64; einsum converts and adds in one loop, faster than sum.
            axes = "abcdefghijklmnopqrstuvwxyz"[: data.ndim] if data.ndim <= 26 else None
            if axes is None:
                total = float(data.sum(dtype=np.float64))
            else:
                total = float(np.einsum(f"{axes}->", data, dtype=np.float64))
        stats.total = total
        stats.mean = total / n
    if want.extremes:
        stats.low, stats.high = data.min(), data.max()
    if want.bins is not None:
        stats.hist = np.histogram(data, bins=want.bins, range=want.range)[0].astype(np.int64)
    return stats


_deviations = threading.local()


def _deviation_buffer(n: int) -> npt.NDArray[np.float64]:
    """A float64 buffer of ``n`` elements that this thread reuses."""
    buf: npt.NDArray[np.float64] | None = getattr(_deviations, "buf", None)
    if buf is None or buf.size < n:
        buf = np.empty(max(n, _DEV_RUN), dtype=np.float64)
        _deviations.buf = buf
    return buf[:n]


def _moments(data: npt.NDArray[Any]) -> tuple[Any, float]:
    """Mean and sum of squared deviations from it, both float64-accurate.

    A rough center first (the dtype's own pairwise sum, fast), then the deviations from it
    in float64, in pieces that stay in the CPU cache: their sum corrects the center, their
    squares give the spread, with no cancellation however far the values are from zero.
    """
    if data.dtype.kind == "c":
        mean_re, m2_re = _moments(data.real)
        mean_im, m2_im = _moments(data.imag)
        return complex(mean_re, mean_im), m2_re + m2_im
    flat = data.reshape(-1) if data.flags.c_contiguous else np.ascontiguousarray(data).reshape(-1)
    n = flat.size
    if data.dtype.kind in "biu":
        center = _int_sum(flat) / n
    else:
        center = float(flat.sum()) / n
        if not np.isfinite(center):  # overflow in the dtype, or NaN / inf among the values
            center = float(flat.sum(dtype=np.float64)) / n
            if not np.isfinite(center):
                return center, float("nan")
    buf = _deviation_buffer(min(n, _DEV_RUN))
    s1 = s2 = 0.0
    for start in range(0, n, _DEV_RUN):
        part = flat[start : start + _DEV_RUN]
        dev = buf[: part.size]
        np.copyto(dev, part)  # a plain conversion: fast, unlike a mixed-type subtract
        np.subtract(dev, center, out=dev)
        s1 += float(dev.sum())
        # Not np.dot: BLAS would start threads of its own in every task, and they spin.
        s2 += float(np.einsum("i,i->", dev, dev))
    return center + s1 / n, max(s2 - s1 * s1 / n, 0.0)


def _fill_stats(layout: Layout, n: int, want: _Want) -> Stats:
    """Statistics of ``n`` copies of the fill value (a never-written chunk costs no read)."""
    return _data_stats(np.full(1, layout.fill_value, dtype=layout.dtype), want).repeated(n)


def reduce_pieces(reader: _Reader, pieces: Sequence[ChunkPiece], want: _Want) -> Stats:
    """Statistics of the pieces of a selection (a dask task): one chunk at a time."""
    layout = reader.layout
    stats = Stats()
    scratch = scratch_buffer(layout.chunk_nbytes)
    for piece, payload in zip(pieces, reader.fetch([p.coords for p in pieces]), strict=True):
        if payload is None:
            n = math.prod(s.stop - s.start for s in piece.outer)  # never written: fill
            stats.merge(_fill_stats(layout, n, want))
            continue
        chunk = layout.decode(payload, piece.coords, scratch)
        stats.merge(_data_stats(chunk[piece.inner], want))
    return stats


def merge_stats(parts: Sequence[Stats]) -> Stats:
    """Merge partial statistics (a dask task)."""
    out = Stats()
    for part in parts:
        out.merge(part)
    return out


# -- the lazy selection --------------------------------------------------------------------


class LazyArray(Shaped):
    """A lazy selection of a stored array: nothing is read until it is computed or reduced.

    Get one with ``array.lazy[...]`` (any basic index: integers, slices with steps,
    Ellipsis). It has the selection's ``shape`` and ``dtype``, a :attr:`dask` array that reads
    only the chunks the selection touches, and one-pass reductions (:meth:`mean`,
    :meth:`std`, ...) that run on dask's current scheduler: threads on this machine, or a
    dask.distributed cluster when a client is active.

    Parameters
    ----------
    array : HubArray
        The stored array.
    axes : tuple
        One ``range`` (the indices taken, any step) or ``int`` (an index; the axis is dropped)
        per dimension of ``array``.
    """

    def __init__(self, array: HubArray, axes: tuple[Axis, ...]) -> None:
        self._array = array
        self._axes = axes

    @classmethod
    def whole(cls, array: HubArray) -> LazyArray:
        """The whole of ``array``."""
        return cls(array, tuple(range(n) for n in array.shape))

    # -- what it is ----------------------------------------------------------------------

    @property
    def array(self) -> HubArray:
        """The stored array this is a selection of."""
        return self._array

    @property
    def shape(self) -> tuple[int, ...]:
        """The selection's shape."""
        return tuple(len(a) for a in self._axes if isinstance(a, range))

    @property
    def dtype(self) -> np.dtype[Any]:
        """The array's dtype."""
        return self._array.dtype

    def index(self) -> tuple[slice | int, ...]:
        """The selection as an index into the stored array (``array[lazy.index()]``)."""
        out: list[slice | int] = []
        for axis in self._axes:
            if isinstance(axis, int):
                out.append(axis)
            else:
                stop: int | None = axis.stop if axis.stop >= 0 else None
                out.append(slice(axis.start, stop, axis.step))
        return tuple(out)

    def __repr__(self) -> str:
        index = ", ".join(
            str(a) if isinstance(a, int) else f"{a.start}:{a.stop}:{a.step}" for a in self._axes
        )
        return f"<LazyArray {self._array.name}[{index}] shape={self.shape} dtype={self.dtype}>"

    # -- selecting and reading -----------------------------------------------------------

    def __getitem__(self, key: Any) -> LazyArray:
        """A selection of this selection (still lazy)."""
        return LazyArray(self._array, compose(self._axes, key))

    def compute(self) -> npt.NDArray[Any]:
        """Read the selection into a numpy array."""
        return self._array._read(self.index())

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> npt.NDArray[Any]:
        data = self.compute()
        return data if dtype is None else data.astype(dtype, copy=False)

    def _reader(self) -> tuple[_Reader, str]:
        array = self._array
        array.store.session.follow_head()
        layout = array.layout
        store = array.store
        resolved = store.session.pinned
        if resolved is not None and resolved.sealed:
            from dask.base import tokenize

            token = tokenize(store.root, str(store.name), resolved.version, layout.path)
        else:
            import uuid

            token = uuid.uuid4().hex
        return _Reader(store, layout), token

    @property
    def dask(self) -> Any:
        """A ``dask.array.Array`` of the selection, built by hubzarr.

        Each block holds whole chunks (merged up to about 64 MiB); its task fetches their
        bytes concurrently and decodes them in place. Only chunks the selection touches are
        read, and never-written chunks are filled without a read. The graph reads the version
        the array is at when the graph is built.
        """
        import dask.array as da
        from dask.base import tokenize
        from dask.highlevelgraph import HighLevelGraph

        if self.size == 0:
            return da.empty(self.shape, dtype=self.dtype)
        reader, token = self._reader()
        layout = reader.layout
        token = tokenize(token, self._axes)
        name = f"hubzarr-read-{token}"
        blocks = _Blocks(self._axes, layout, BLOCK_BYTES)
        layer: dict[Any, Any] = {
            (name, *block.index): (read_block, reader, block.pieces, block.shape, blocks.flips)
            for block in blocks
        }
        graph = HighLevelGraph.from_collections(name, layer, dependencies=())
        meta = np.empty((0,) * len(blocks.out_axes), dtype=layout.dtype)
        chunks = blocks.dask_chunks()
        return da.Array(graph, name, chunks, meta=meta)  # type: ignore[no-untyped-call]

    # -- reductions ----------------------------------------------------------------------

    def _stats(self, want: _Want, progress: bool) -> Stats:
        check_flag(progress, "progress")  # every reduction comes here before reading
        from dask.base import tokenize
        from dask.delayed import Delayed
        from dask.highlevelgraph import HighLevelGraph

        reader, token = self._reader()
        layout = reader.layout
        per_axis, _ = plan(self._axes, layout.chunks)
        pieces = [
            combine_pieces(parts, layout.chunks, layout.shape) for parts in product(*per_axis)
        ]
        token = tokenize(token, self._axes, want)
        name = f"hubzarr-stats-{token}"
        layer: dict[Any, Any] = {}
        keys: list[Any] = []
        for i, group in enumerate(
            task_groups(pieces, layout.chunk_nbytes, task_bytes=TASK_BYTES, min_tasks=MIN_TASKS)
        ):
            keys.append((name, 0, i))
            layer[keys[-1]] = (reduce_pieces, reader, group, want)
        level = 0
        while len(keys) > 1:
            level += 1
            merged = []
            for i in range(0, len(keys), FAN_IN):
                merged.append((name, level, i // FAN_IN))
                layer[merged[-1]] = (merge_stats, list(keys[i : i + FAN_IN]))
            keys = merged
        if not keys:
            return Stats()
        graph = HighLevelGraph.from_collections(name, layer, dependencies=())
        return _compute(Delayed(keys[0], graph, layer=name), progress)  # type: ignore[no-untyped-call,no-any-return]

    def sum(self, *, progress: bool = False) -> Any:
        """Sum of the selection's values: exact for integers, float64 for floats.

        Raises
        ------
        InvalidArgumentError
            If ``progress`` is not a bool (checked before anything is read).
        CorruptChunkError
            If a chunk is corrupt or does not decode.
        """
        total = self._stats(_Want(sum=True), progress).total
        return _scalar(total, self.dtype)

    def mean(self, *, progress: bool = False) -> Any:
        """Mean of the selection's values, accumulated in float64 (NaN if it is empty).

        Raises
        ------
        InvalidArgumentError
            If ``progress`` is not a bool (checked before anything is read).
        CorruptChunkError
            If a chunk is corrupt or does not decode.
        """
        stats = self._stats(_Want(sum=True), progress)
        if stats.count == 0:
            return np.float64("nan")
        mean = stats.total / stats.count
        return np.complex128(mean) if self.dtype.kind == "c" else np.float64(mean)

    def var(self, *, ddof: int = 0, progress: bool = False) -> Any:
        """Variance, from one pass of parallel moments in float64 (as numpy's ``var``).

        Raises
        ------
        InvalidArgumentError
            If ``ddof`` is not a non-negative integer or ``progress`` not a bool (checked
            before anything is read).
        CorruptChunkError
            If a chunk is corrupt or does not decode.
        """
        ddof = check_ddof(ddof)
        stats = self._stats(_Want(moments=True), progress)
        if stats.count - ddof <= 0:
            return np.float64("nan")
        return np.float64(stats.m2 / (stats.count - ddof))

    def std(self, *, ddof: int = 0, progress: bool = False) -> Any:
        """Standard deviation, from one pass of parallel moments in float64.

        Raises
        ------
        InvalidArgumentError
            If ``ddof`` is not a non-negative integer or ``progress`` not a bool (checked
            before anything is read).
        CorruptChunkError
            If a chunk is corrupt or does not decode.
        """
        return np.sqrt(self.var(ddof=ddof, progress=progress))

    def _extremes(self, progress: bool) -> Stats:
        if self.dtype.kind == "c":
            raise InvalidArgumentError(
                f"min and max of complex values ({self.dtype}) are not defined; reduce "
                "abs(), .real or .imag through .dask instead"
            )
        if self.size == 0:
            raise InvalidArgumentError(
                f"the selection {self!r} is empty, so it has no minimum or maximum"
            )
        return self._stats(_Want(extremes=True), progress)

    def min(self, *, progress: bool = False) -> Any:
        """Smallest value (NaN if there is one, as numpy).

        Raises
        ------
        InvalidArgumentError
            If ``progress`` is not a bool, the values are complex, or the selection is empty.
        CorruptChunkError
            If a chunk is corrupt or does not decode.
        """
        return self.dtype.type(self._extremes(progress).low)

    def max(self, *, progress: bool = False) -> Any:
        """Largest value (NaN if there is one, as numpy).

        Raises
        ------
        InvalidArgumentError
            If ``progress`` is not a bool, the values are complex, or the selection is empty.
        CorruptChunkError
            If a chunk is corrupt or does not decode.
        """
        return self.dtype.type(self._extremes(progress).high)

    def histogram(
        self,
        bins: int | Sequence[float] = 10,
        range: tuple[float, float] | None = None,
        *,
        progress: bool = False,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[Any]]:
        """Counts of values in bins, as :func:`numpy.histogram` returns them.

        Parameters
        ----------
        bins : int or sequence of float
            The number of equal bins, or their edges (increasing).
        range : (float, float), optional
            The span of equal bins. Without it, the selection's min and max, which takes
            one more pass over the data: give it when known.
        progress : bool
            Show a progress bar.

        Returns
        -------
        (counts, edges)
            ``counts`` of each bin (int64) and the ``len(counts) + 1`` bin edges.

        Raises
        ------
        InvalidArgumentError
            If ``bins``, ``range`` or ``progress`` are unusable (checked before anything is
            read), the values are complex, or, without ``range``, not all finite.
        CorruptChunkError
            If a chunk is corrupt or does not decode.
        """
        count, edges, span = check_histogram(bins, range, progress)
        if self.dtype.kind == "c":
            raise InvalidArgumentError(f"cannot bin complex values ({self.dtype})")
        if edges is not None:
            want = _Want(bins=tuple(edges.tolist()))
            return self._stats(want, progress).hist_or(edges.size - 1), edges
        if span is None:
            if self.size == 0:
                low, high = 0.0, 1.0
            else:
                extremes = self._extremes(progress)
                # As numpy scalars of the array's dtype, as numpy.histogram itself takes them.
                low, high = extremes.low, extremes.high
                if not (np.isfinite(low) and np.isfinite(high)):
                    raise InvalidArgumentError(
                        f"the values span [{low}, {high}], which cannot be cut into bins; "
                        "pass range=(low, high) to bin the finite values"
                    )
        else:
            low, high = span
        want = _Want(bins=count, range=(low, high))
        counts = self._stats(want, progress).hist_or(count)
        cuts = np.histogram(np.empty(0, dtype=self.dtype), bins=count, range=(low, high))[1]
        return counts, cuts


def _number(value: Any) -> float | None:
    """``value`` as a float if it is a real number (not a bool, not a string)."""
    if isinstance(value, bool | np.bool_) or not isinstance(
        value, int | float | np.integer | np.floating
    ):
        return None
    return float(value)


def check_histogram(
    bins: Any, range: Any, progress: Any
) -> tuple[int, npt.NDArray[np.float64] | None, tuple[float, float] | None]:
    """Check the arguments of :meth:`LazyArray.histogram` and return them parsed.

    Returns
    -------
    (count, edges, range)
        The number of bins; the edges if ``bins`` gave them (else ``None``); ``range`` as two
        floats (``None`` if not given).

    Raises
    ------
    InvalidArgumentError
        If ``bins`` is neither a positive integer nor an increasing 1-d sequence of at least two
        numbers, ``range`` is neither ``None`` nor a pair of finite numbers with low <= high, or
        ``progress`` is not a bool.
    """
    check_flag(progress, "progress")
    span: tuple[float, float] | None = None
    if range is not None:
        pair = tuple(range) if isinstance(range, tuple | list | np.ndarray) else ()
        numbers = [_number(v) for v in pair]
        if len(numbers) != 2 or None in numbers:
            raise InvalidArgumentError(
                f"range must be a pair of numbers (low, high), not {range!r}"
            )
        low, high = numbers
        assert low is not None and high is not None
        if not (math.isfinite(low) and math.isfinite(high)) or low > high:
            raise InvalidArgumentError(f"range {range!r} must be finite, with low <= high")
        span = (low, high)
    if isinstance(bins, int | np.integer) and not isinstance(bins, bool | np.bool_):
        if bins < 1:
            raise InvalidArgumentError(f"bins must be at least 1, not {bins}")
        return int(bins), None, span
    if not isinstance(bins, Sequence | np.ndarray) or isinstance(bins, str | bytes):
        raise InvalidArgumentError(
            f"bins must be a positive int or a sequence of edges, not {bins!r}"
        )
    if any(_number(v) is None for v in np.asarray(bins, dtype=object).reshape(-1)):
        raise InvalidArgumentError(f"bins given as edges must be numbers, not {bins!r}")
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or not np.all(np.diff(edges) >= 0):
        raise InvalidArgumentError(
            "bins given as edges must be a 1-d increasing sequence of at least 2 values"
        )
    return edges.size - 1, edges, span


def _scalar(total: Any, dtype: np.dtype[Any]) -> Any:
    if dtype.kind in "biu":
        info = np.iinfo(np.uint64 if dtype.kind == "u" else np.int64)
        return (
            (np.uint64 if dtype.kind == "u" else np.int64)(total)
            if info.min <= total <= info.max
            else total
        )
    if dtype.kind == "c":
        return np.complex128(total)
    return np.float64(total)


def _compute(obj: Any, progress: bool) -> Any:
    """Compute a dask collection on the current scheduler, with a progress bar if asked."""
    if not progress:
        return obj.compute()
    client = _distributed_client()
    if client is not None:
        from distributed import progress as show

        future = client.compute(obj)
        show(future)  # type: ignore[no-untyped-call]
        return future.result()
    import sys

    from dask.diagnostics import ProgressBar  # type: ignore[attr-defined]

    with ProgressBar(out=sys.stderr):  # type: ignore[no-untyped-call]
        return obj.compute()


def _distributed_client() -> Any:
    """The active dask.distributed client, if there is one (and it is dask's scheduler)."""
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()  # type: ignore[no-untyped-call]
    except ValueError:
        return None


# -- writing -------------------------------------------------------------------------------


@dataclass(eq=False)
class _Writer:
    """Writes blocks of values into one array at a branch (a graph key of the write)."""

    array: HubArray
    layout: Layout
    #: The array was just created: a chunk of fill values need not be stored.
    new: bool = False


def write_block(writer: _Writer, block: npt.NDArray[Any], origin: tuple[int, ...]) -> int:
    """Write ``block``, whose first element is at ``origin`` in the array (a dask task).

    Chunks the block covers whole are encoded here and stored concurrently, each with the
    fenced write single assignments use; chunks it covers in part (the edges of an unaligned
    region) are merged under compare-and-swap, as ``array[region] = values`` does. Returns
    the number of chunks written.
    """
    layout = writer.layout
    block = np.asarray(block)
    ends = tuple(o + n for o, n in zip(origin, block.shape, strict=True))
    ranges = [
        range(o // c, -(-e // c)) for o, e, c in zip(origin, ends, layout.chunks, strict=True)
    ]
    whole: list[tuple[str, bytes]] = []
    partial: list[tuple[tuple[slice, ...], npt.NDArray[Any]]] = []
    for coords in product(*ranges):
        lows = tuple(j * c for j, c in zip(coords, layout.chunks, strict=True))
        highs = tuple(
            min(lo + c, n) for lo, c, n in zip(lows, layout.chunks, layout.shape, strict=True)
        )
        inside = tuple(
            slice(max(lo, o) - o, min(hi, e) - o)
            for lo, hi, o, e in zip(lows, highs, origin, ends, strict=True)
        )
        values = block[inside]
        if all(lo >= o and hi <= e for lo, hi, o, e in zip(lows, highs, origin, ends, strict=True)):
            if writer.new and layout.is_fill(values):
                continue
            if values.shape != layout.chunks:  # at the array's edge: stored whole, as zarr does
                padded = np.full(layout.chunks, layout.fill_value, dtype=layout.dtype)
                padded[tuple(slice(0, n) for n in values.shape)] = values
                values = padded
            whole.append((layout.key(coords), layout.encode(values)))
        else:
            region = tuple(
                slice(max(lo, o), min(hi, e))
                for lo, hi, o, e in zip(lows, highs, origin, ends, strict=True)
            )
            partial.append((region, values))
    store = writer.array.store

    async def store_all() -> None:
        await asyncio.gather(*(store.session.write(key, payload) for key, payload in whole))

    sync(store_all())
    for region, values in partial:
        writer.array[region] = values
    return len(whole) + len(partial)


def write_region(
    array: HubArray, values: npt.NDArray[Any], origin: tuple[int, ...], *, new: bool = False
) -> int:
    """Write ``values`` into ``array`` with their first element at ``origin``, on the calling
    thread, as one task of :func:`assign` writes its block (see :func:`write_block`).

    ``new``: the array was just created, so chunks of fill values need not be stored. Returns
    the number of chunks written.
    """
    return write_block(_Writer(array, array.layout, new), values, origin)


def assign(array: HubArray, key: Any, value: Any, *, new: bool = False) -> None:
    """``array[key] = value`` for a dask array ``value``: written block by block, in parallel
    on dask's current scheduler (threads, or a dask.distributed cluster).

    Raises
    ------
    InvalidIndexError
        If ``key`` is not a region of step-1 slices and integers.
    InvalidArgumentError
        If the shapes do not broadcast, or the dtype does not cast safely.
    ReadOnlyError
        At a tag or sealed version, or opened read-only.
    """
    import dask.array as da
    from dask.base import compute
    from dask.delayed import delayed

    from hubzarr.errors import InvalidIndexError, UnsafeCastError

    array.store.session.check_writable()
    selection, out_shape, flips = normalize_index(key, array.shape)
    region: list[slice] = []
    for item in selection:
        if isinstance(item, int):
            region.append(slice(item, item + 1))
        elif item.step not in (None, 1) or flips:
            raise InvalidIndexError(
                f"a dask array can only be assigned to a region of step-1 slices, not {key!r}; "
                "compute it first or write it with step 1"
            )
        else:
            region.append(item)
    dtype = array.dtype
    if not np.can_cast(value.dtype, dtype, "safe"):
        raise UnsafeCastError(
            f"refusing to store a dask array of {value.dtype} in an array of {dtype}: the "
            f"values may not fit; cast it explicitly with .astype({str(dtype)!r}) if that is "
            "intended"
        )
    try:
        value = da.broadcast_to(value, out_shape)  # type: ignore[no-untyped-call]
    except ValueError:
        raise InvalidArgumentError(
            f"cannot assign a dask array of shape {value.shape} to a selection of shape "
            f"{out_shape}; the shapes must broadcast"
        ) from None
    shape = tuple(s.stop - s.start for s in region)
    value = value.astype(dtype).reshape(shape)
    if math.prod(shape) == 0:
        return
    layout = array.layout
    value = value.rechunk(aligned_chunks(region, layout.chunks, dtype.itemsize, BLOCK_BYTES))
    writer = _Writer(array, layout, new)  # in every task: tasks go where their block is
    starts = [np.cumsum((0, *c[:-1])) for c in value.chunks]
    tasks = []
    for index, block in zip(
        product(*(range(len(c)) for c in value.chunks)), value.to_delayed().ravel(), strict=True
    ):
        origin = tuple(
            int(r.start + starts[a][i]) for a, (r, i) in enumerate(zip(region, index, strict=True))
        )
        tasks.append(delayed(write_block, pure=False)(writer, block, origin))
    compute(*tasks)  # type: ignore[no-untyped-call]
