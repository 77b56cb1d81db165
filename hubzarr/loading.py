"""Samples for training, in an order that is random, reproducible, sharded and resumable, read
a chunk at a time: the sampler behind :mod:`hubzarr.torch` and :mod:`hubzarr.tensorflow`.

Framework-free (numpy only); the loaders wrap it.

**Source.** A repository pinned at one version when the dataset is made (:func:`open_source`):
one array, or arrays of a group sharing their first axis (``images`` and ``labels``). Sample
``i`` is row ``i`` of each. The samples are cut into *units*: runs of consecutive samples one
chunk long along the first axis of the array with the most bytes per sample (the images), so a
unit is read and decoded once per epoch, as whole chunks.

**Order** (:class:`Plan`). Each epoch draws a permutation of the units from ``(seed,
epoch)``; the units in that order are one stream of samples. The stream is cut into one
contiguous part per rank (``torch.distributed``), each of ``N // R`` samples with
``drop_last`` or ``ceil(N / R)`` without it (the stream wraps around to its start, as
``DistributedSampler`` pads), then each rank's part into one part per DataLoader worker. So
across every rank and worker, each sample comes once per epoch (with ``drop_last`` the last
``N mod R`` of the stream are left out; without it as many come twice).

**Shuffle buffer** (:class:`SampleStream`). Each worker reads its units in order, a unit ahead
on a thread of its own, into a buffer of ``buffer_bytes`` (its samples, not its chunks): once
full, each step takes ``step`` random slots, yields their samples and puts the next incoming
samples in their place; at the end the rest leave in a random order. The draws come from a
generator seeded by ``(seed, epoch, rank, worker)``, so the order is the same each run.

**Resuming.** The order depends on no data, so a position (samples yielded) is the whole state
of a worker: resuming replays the draws without reading (a fraction of a second for a million
samples), reads only the samples the buffer held at that point, and goes on.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from hubzarr.errors import InvalidArgumentError, NotFoundError

__all__ = [
    "DEFAULT_BUFFER_BYTES",
    "Plan",
    "SampleStream",
    "Source",
    "batches",
    "check_count",
    "check_shard",
    "open_source",
    "worker_parts",
]

#: The shuffle buffer of each worker, in bytes of samples. At 12 KiB a sample (64 x 64 x 3)
#: it holds 2,730 samples from 11 chunks of 256 or more: a batch of 256 drew from about 34
#: chunks of 256 samples (WebDataset's default: 19-21; a uniform shuffle of 50,000: 143).
DEFAULT_BUFFER_BYTES = 32 * 2**20
#: Samples a step yields when the loader yields samples one by one (a batch otherwise).
SAMPLE_STEP = 64
#: Units read ahead of the one being consumed, per worker, on this many threads.
READ_AHEAD_UNITS = 4
READ_THREADS = 2

Batch = dict[str, npt.NDArray[Any]]


@dataclass(frozen=True)
class Source:
    """The arrays a loader reads, pinned at one version.

    Attributes
    ----------
    arrays : dict
        Key -> :class:`~hubzarr.arrays.HubArray` (at a sealed version or a pinned head).
    name : str
        The repository and version read (``user/name:<version id>``).
    length : int
        Samples: the length of every array's first axis.
    unit : int
        Samples per unit (one chunk of the largest array along its first axis).
    """

    arrays: dict[str, Any]
    name: str
    length: int
    unit: int

    @property
    def units(self) -> int:
        """How many units the samples make."""
        return math.ceil(self.length / self.unit) if self.length else 0

    @property
    def sample_bytes(self) -> int:
        """Bytes of one sample, all arrays together."""
        return sum(
            int(np.prod(a.shape[1:], dtype=np.int64)) * a.dtype.itemsize
            for a in self.arrays.values()
        )

    def read(self, start: int, stop: int) -> Batch:
        """Samples ``start`` to ``stop`` of every array (whole chunks decoded in place)."""
        from hubzarr.bulk import read_selection

        return {
            key: read_selection(arr, [range(start, stop), *(range(n) for n in arr.shape[1:])])
            for key, arr in self.arrays.items()
        }


def open_source(
    source: Any,
    keys: Sequence[str] | None = None,
    *,
    root: Any = None,
    storage_options: dict[str, Any] | None = None,
    cache: Any = None,
) -> Source:
    """Open and check what a loader reads, pinned at one version.

    Parameters
    ----------
    source : str, HubArray or HubGroup
        A name (``user/name[:ref]``) or an opened array or group (a group's member too). A
        branch is pinned as :meth:`hubzarr.Hub.pin` pins it (its head sealed now if it holds
        writes): later writes and tags never change what the loader yields.
    keys : sequence of str, optional
        For a group, the arrays to read (default: every array directly in the group).
    root, storage_options, cache
        Where a name lives, as for :class:`hubzarr.Hub` (ignored for an opened node).

    Raises
    ------
    InvalidArgumentError
        If ``keys`` is given for an array or is empty, names an array twice, or the arrays
        differ in length or have no first axis.
    NotFoundError
        If the repository, ref or a key does not exist.
    ReadOnlyError
        If a branch of a read-only root is given (pin a tag).
    """
    from hubzarr.api import Hub
    from hubzarr.arrays import HubArray
    from hubzarr.groups import HubGroup

    path = ""
    if isinstance(source, str):
        hub, name = Hub(root, storage_options, cache=cache), source
    elif isinstance(source, HubArray | HubGroup):
        store = source.store
        hub = Hub(store.root, storage=store.storage)
        name, path = str(store.name), source.path
    else:
        raise InvalidArgumentError(
            f"a loader reads a repository's name, a HubArray or a HubGroup, not "
            f"{type(source).__name__}"
        )
    pinned = hub.pin(name, message="pinned by a hubzarr loader")
    node = hub.load(pinned, mode="r")
    if path:
        assert isinstance(node, HubGroup)
        node = node[path]
    if isinstance(node, HubArray):
        if keys is not None:
            raise InvalidArgumentError(
                f"{node.name} is one array: it has no keys to choose; leave keys out"
            )
        arrays: dict[str, Any] = {"data": node}
    else:
        members = dict(node.arrays())
        chosen = [keys] if isinstance(keys, str) else list(members if keys is None else keys)
        if isinstance(keys, str) or not chosen or len(set(chosen)) != len(chosen):
            raise InvalidArgumentError(
                f"keys must be distinct array keys of {node.name}, not {keys!r}; its arrays: "
                f"{', '.join(members) or '(none)'}"
            )
        missing = [k for k in chosen if k not in members]
        if missing:
            raise NotFoundError(
                f"{node.name} has no array {missing[0]!r}; its arrays: "
                f"{', '.join(members) or '(none)'}"
            )
        arrays = {k: members[k] for k in chosen}
    for key, arr in arrays.items():
        if arr.ndim == 0:
            raise InvalidArgumentError(
                f"{arr.name} ({key}) is 0-d: a loader yields samples along the first axis"
            )
    lengths = {key: arr.shape[0] for key, arr in arrays.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{k}: {n}" for k, n in lengths.items())
        raise InvalidArgumentError(
            f"the arrays of {node.name} differ in length along their first axis ({shown}); a "
            "sample takes one row of each"
        )
    widest = max(
        arrays.values(),
        key=lambda a: int(np.prod(a.shape[1:], dtype=np.int64)) * a.dtype.itemsize,
    )
    return Source(arrays, pinned, next(iter(lengths.values())), max(1, widest.chunks[0]))


@dataclass(frozen=True)
class Plan:
    """Which samples one worker of one rank yields in one epoch, and in what order they
    come in (before the shuffle buffer).

    Parameters
    ----------
    length, unit : int
        Samples, and samples per unit (:class:`Source`).
    epoch, seed : int
        Draw the units' order from ``(seed, epoch)``.
    shuffle : bool
        Whether to permute the units (and shuffle samples in a buffer).
    rank, world : int
        This rank, and how many there are.
    worker, workers : int
        This DataLoader worker, and how many each rank has.
    drop_last : bool
        Leave out the stream's tail instead of padding it from its start, so that every rank
        gets the same number of samples.
    """

    length: int
    unit: int
    epoch: int
    seed: int
    shuffle: bool
    rank: int = 0
    world: int = 1
    worker: int = 0
    workers: int = 1
    drop_last: bool = False

    def rank_samples(self) -> int:
        """Samples each rank yields this epoch."""
        if self.drop_last:
            return self.length // self.world
        return math.ceil(self.length / self.world) if self.length else 0

    def _worker_span(self) -> tuple[int, int]:
        """This worker's samples, as positions in the epoch's (wrapped) stream."""
        per_rank = self.rank_samples()
        base, extra = divmod(per_rank, self.workers)
        start = self.rank * per_rank + self.worker * base + min(self.worker, extra)
        return start, start + base + (self.worker < extra)

    def worker_samples(self) -> int:
        """Samples this worker yields this epoch."""
        start, stop = self._worker_span()
        return stop - start

    def pieces(self) -> list[tuple[int, int]]:
        """This worker's incoming samples: ``(start, stop)`` runs, each within one unit, in
        the order they are read."""
        units = math.ceil(self.length / self.unit) if self.length else 0
        order = (
            np.random.default_rng([self.seed, self.epoch]).permutation(units)
            if self.shuffle
            else np.arange(units)
        )
        start, stop = self._worker_span()
        out: list[tuple[int, int]] = []
        position = 0  # of the (endlessly wrapped) stream
        while position < stop and self.length:
            for u in order:
                lo, hi = int(u) * self.unit, min((int(u) + 1) * self.unit, self.length)
                a, b = max(lo, lo + start - position), min(hi, lo + stop - position)
                if a < b:
                    out.append((a, b))
                position += hi - lo
                if position >= stop:
                    break
        return out


def worker_parts(workers: int, batches: Sequence[int], seen: int) -> tuple[list[int], int]:
    """How many batches each worker had yielded when ``seen`` batches had come out of a
    DataLoader that takes them from its workers in turn (passing over those that are done),
    each worker ``w`` having ``batches[w]`` in all; and the worker whose turn is next."""
    taken = [0] * workers
    turn, remaining = 0, seen
    while remaining > 0 and any(t < b for t, b in zip(taken, batches, strict=True)):
        if taken[turn] < batches[turn]:
            taken[turn] += 1
            remaining -= 1
        turn = (turn + 1) % workers
    return taken, turn


def check_count(value: Any, what: str, minimum: int) -> int:
    """``value`` as an int, if it is an integer of at least ``minimum``.

    Raises
    ------
    InvalidArgumentError
        Otherwise (a bool too), naming ``what``.
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise InvalidArgumentError(f"{what} must be an integer >= {minimum}, not {value!r}")
    return int(value)


def check_shard(rank: Any, world_size: Any) -> tuple[int, int]:
    """``(rank, world_size)``, checked: ``0 <= rank < world_size``.

    Raises
    ------
    InvalidArgumentError
        If either is not an integer, or ``rank`` is not below ``world_size``.
    """
    world = check_count(world_size, "world_size", 1)
    mine = check_count(rank, "rank", 0)
    if mine >= world:
        raise InvalidArgumentError(f"rank must be below world_size ({world}), not {mine}")
    return mine, world


def batches(steps: Iterable[Batch], size: int) -> Iterator[Batch]:
    """The samples of ``steps`` regrouped into batches of ``size`` (the last may be shorter),
    in order."""
    carry: list[Batch] = []
    held = 0
    for step in steps:
        carry.append(step)
        held += _rows(step)
        while held >= size:
            batch, carry = _split(carry, size)
            held -= size
            yield batch
    if held:
        yield _split(carry, held)[0]


def _rows(batch: Batch) -> int:
    return len(next(iter(batch.values())))  # every array of a batch has as many


def _split(parts: list[Batch], size: int) -> tuple[Batch, list[Batch]]:
    """The first ``size`` samples of ``parts``, and the rest (as parts)."""
    out: list[Batch] = []
    rest: list[Batch] = []
    need = size
    for part in parts:
        n = _rows(part)
        if need >= n:
            out.append(part)
            need -= n
        elif need:
            out.append({k: v[:need] for k, v in part.items()})
            rest.append({k: v[need:] for k, v in part.items()})
            need = 0
        else:
            rest.append(part)
    batch = out[0] if len(out) == 1 else {k: np.concatenate([p[k] for p in out]) for k in out[0]}
    return batch, rest


class SampleStream:
    """One worker's samples for one epoch, in steps (dicts of arrays with a leading axis).

    Parameters
    ----------
    source : Source
        What to read.
    plan : Plan
        Which samples, and in which order they come in.
    buffer_bytes : int
        The shuffle buffer's size (only with ``plan.shuffle``); it holds at least ``step``
        samples, as each step swaps that many out of it.
    step : int
        Samples per step; every step but the last is full (after a resumed one).
    start : int
        Samples of this epoch already yielded (resuming): they are not yielded again, and
        not read unless the buffer held them then.

    Raises
    ------
    InvalidArgumentError
        If ``start`` is beyond this worker's samples.
    """

    def __init__(
        self, source: Source, plan: Plan, buffer_bytes: int, step: int, start: int = 0
    ) -> None:
        self.source, self.plan, self.step = source, plan, step
        self.pieces = plan.pieces()
        self.total = sum(b - a for a, b in self.pieces)
        if start < 0 or start > self.total:
            raise InvalidArgumentError(
                f"cannot resume at sample {start}: this worker yields {self.total} this epoch"
            )
        self.start = start
        capacity = max(step, buffer_bytes // max(source.sample_bytes, 1)) if plan.shuffle else 0
        self.capacity = min(capacity, self.total)

    def _rng(self) -> np.random.Generator:
        plan = self.plan
        return np.random.default_rng([plan.seed, plan.epoch, plan.rank, plan.worker, 1])

    def _indices(self) -> npt.NDArray[np.int64]:
        runs = [np.arange(a, b, dtype=np.int64) for a, b in self.pieces]
        return np.concatenate(runs) if runs else np.empty(0, np.int64)

    def order(self) -> npt.NDArray[np.int64]:
        """The sample indices this worker yields, in order (no data read)."""
        indices = self._indices()
        if not self.capacity:
            return indices
        rng = self._rng()
        buffer, _, _, drawn = self._replay(rng, indices, len(indices))
        return np.concatenate([*drawn, buffer[rng.permutation(self.capacity)]])

    def _replay(
        self, rng: np.random.Generator, indices: npt.NDArray[np.int64], until: int
    ) -> tuple[npt.NDArray[np.int64], int, int, list[npt.NDArray[np.int64]]]:
        """The buffer's whole steps in index space (nothing read), as long as they yield at
        most ``until`` samples in all: the buffered indices then, the samples taken in and
        yielded, and each step's indices."""
        buffer, fed, done = indices[: self.capacity].copy(), self.capacity, 0
        drawn = []
        while fed < len(indices):
            take = min(self.step, len(indices) - fed)
            if done + take > until:
                break
            slots = rng.choice(self.capacity, take, replace=False)
            drawn.append(buffer[slots])
            buffer[slots] = indices[fed : fed + take]
            fed += take
            done += take
        return buffer, fed, done, drawn

    def __iter__(self) -> Iterator[Batch]:
        rng = self._rng()
        if not self.capacity or not self.start:
            yield from self._run(rng, self.start, None, 0)
            return
        # Resuming: replay the draws of the whole steps before `start` without reading, then
        # read what the buffer held there, and go on from there.
        buffer, fed, done, _ = self._replay(rng, self._indices(), self.start)
        yield from self._run(rng, fed, self._gather(buffer), self.start - done)

    def _run(
        self, rng: np.random.Generator, fed: int, buffer: Batch | None, skip: int
    ) -> Iterator[Batch]:
        """The shuffle buffer, ``fed`` samples taken in already (``buffer`` holding the
        buffered ones, or ``None``: fill it first); the first ``skip`` samples are dropped."""
        incoming = _Incoming(self.source, self.pieces, fed)
        try:
            for out in self._steps(rng, incoming, buffer):
                size = _rows(out)
                cut = min(skip, size)
                skip -= cut
                if not cut:
                    yield out
                elif cut < size:
                    yield {k: v[cut:] for k, v in out.items()}
        finally:
            incoming.close()

    def _steps(
        self, rng: np.random.Generator, incoming: _Incoming, buffer: Batch | None
    ) -> Iterator[Batch]:
        if not self.capacity:
            while (block := incoming.take(self.step)) is not None:
                yield block
            return
        if buffer is None:
            buffer = incoming.take(self.capacity)
            assert buffer is not None
        while parts := incoming.parts(self.step):
            taken = sum(_rows(part) for part in parts)
            slots = rng.choice(self.capacity, taken, replace=False)
            out = {k: v[slots] for k, v in buffer.items()}
            at = 0
            for part in parts:  # each part straight into its slots: no joined copy
                n = _rows(part)
                for k, v in buffer.items():
                    v[slots[at : at + n]] = part[k]
                at += n
            yield out
        order = rng.permutation(self.capacity)
        for i in range(0, self.capacity, self.step):
            yield {k: v[order[i : i + self.step]] for k, v in buffer.items()}

    def _gather(self, indices: npt.NDArray[np.int64]) -> Batch:
        """Read the samples ``indices`` (any order), a unit at a time."""
        unit = self.source.unit
        out = {
            k: np.empty((len(indices), *a.shape[1:]), dtype=a.dtype)
            for k, a in self.source.arrays.items()
        }
        units = indices // unit
        for u in np.unique(units):
            where = np.nonzero(units == u)[0]
            lo = int(u) * unit
            block = self.source.read(lo, min(lo + unit, self.source.length))
            for k, v in block.items():
                out[k][where] = v[indices[where] - lo]
        return out


class _Incoming:
    """A worker's incoming samples: its pieces read (and decoded) ahead, in order, on a few
    threads of its own (decoding releases the interpreter lock)."""

    def __init__(self, source: Source, pieces: Sequence[tuple[int, int]], skip: int) -> None:
        todo: list[tuple[int, int]] = []
        for a, b in pieces:  # drop the first `skip` samples without reading them
            if skip >= b - a:
                skip -= b - a
                continue
            todo.append((a + skip, b))
            skip = 0
        self._source, self._todo = source, iter(todo)
        self._pool = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="hubzarr-loader")
        self._pending: deque[Future[Batch]] = deque()
        for _ in range(READ_AHEAD_UNITS):
            self._submit()
        self._current: Batch | None = None
        self._offset = 0

    def _submit(self) -> None:
        piece = next(self._todo, None)
        if piece is not None:
            self._pending.append(self._pool.submit(self._source.read, *piece))

    def _next_block(self) -> Batch | None:
        if not self._pending:
            return None
        block = self._pending.popleft().result()
        self._submit()
        return block

    def take(self, count: int) -> Batch | None:
        """The next ``count`` samples (fewer at the end; ``None`` when there are none)."""
        parts = self.parts(count)
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]  # views of a block read for this stream alone
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def parts(self, count: int) -> list[Batch]:
        """The next ``count`` samples (fewer at the end, none when there are none), as views
        of the blocks read, one part per block."""
        parts: list[Batch] = []
        need = count
        while need:
            if self._current is None:
                self._current = self._next_block()
                self._offset = 0
                if self._current is None:
                    break
            n = _rows(self._current)
            piece = min(need, n - self._offset)
            end = self._offset + piece
            parts.append({k: v[self._offset : end] for k, v in self._current.items()})
            self._offset = end
            need -= piece
            if end == n:
                self._current = None
        return parts

    def close(self) -> None:
        """Stop reading ahead (the reads under way finish on their own)."""
        for future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=False)
