"""PyTorch datasets over a repository: train from any version, reproducibly and resumably.

``pip install "hubzarr[torch]"``. Two datasets, both pinned at one version when made (a branch
is pinned as :func:`hubzarr.pin` pins it), both yielding one sample per index along the
first axis as a dict of tensors (``{"images": ..., "labels": ...}``, or a tuple with
``as_tuple=True``), after an optional ``transform``:

- :class:`IterableDataset`: chunk-aware shuffling (each epoch reads every chunk once, in a
  random order, and shuffles samples in a buffer of ``buffer_bytes``), sharded across
  DataLoader workers and ``torch.distributed`` ranks, reproducible from ``seed`` and
  :meth:`~IterableDataset.set_epoch`, resumable mid-epoch with ``state_dict()`` /
  ``load_state_dict()`` (torchdata's ``StatefulDataLoader``, or by hand). The order and its
  rules are in :mod:`hubzarr.loading`.
- :class:`Dataset`: map-style, for random access (``dataset[i]``, and ``__getitems__`` for a
  batch of indices, read a chunk at a time).

Example::

    from torch.utils.data import DataLoader
    from hubzarr.torch import IterableDataset

    data = IterableDataset("alice/imagenet:v3", keys=["images", "labels"], seed=0)
    loader = DataLoader(data, batch_size=256, num_workers=8)
    for epoch in range(10):
        data.set_epoch(epoch)
        for batch in loader:
            ...
"""

from __future__ import annotations

import ctypes
import math
import multiprocessing
import multiprocessing.context
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

try:
    import torch
    import torch.utils.data
except ImportError as exc:  # pragma: no cover - the error users see without the extra
    raise ImportError(
        'hubzarr.torch needs PyTorch: pip install "hubzarr[torch]" (or install torch for your '
        "platform from pytorch.org)"
    ) from exc

from hubzarr.errors import InvalidArgumentError
from hubzarr.loading import (
    DEFAULT_BUFFER_BYTES,
    SAMPLE_STEP,
    Plan,
    SampleStream,
    Source,
    batches,
    check_count,
    check_shard,
    open_source,
    worker_parts,
)

__all__ = ["Dataset", "IterableDataset"]

#: The decoded chunks a map-style dataset keeps per process, in bytes.
DEFAULT_CHUNK_CACHE_BYTES = 64 * 2**20


def _native(values: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """``values`` contiguous, in this machine's byte order (torch holds no other), with its
    shape: a sample of a 1-d array stays 0-d (``np.ascontiguousarray`` would make it 1-d, and
    a batch of labels ``(B, 1)``)."""
    values = np.asarray(values)  # a numpy scalar (one sample of a 1-d array) as 0-d
    if not values.dtype.isnative:
        values = values.astype(values.dtype.newbyteorder("="))
    return values if values.flags.c_contiguous else values.copy(order="C")


def _check_dtypes(source: Source) -> None:
    for key, arr in source.arrays.items():
        try:
            torch.from_numpy(_native(np.zeros(1, dtype=arr.dtype)))
        except (TypeError, ValueError):
            raise InvalidArgumentError(
                f"{arr.name} ({key}) holds {arr.dtype}, which torch cannot hold; read it with "
                "another dtype (hubzarr.Hub.copy to a new array) or leave it out of keys"
            ) from None


class _Output:
    """Turns numpy rows into what the dataset yields: tensors, as a dict or a tuple, after
    ``transform``."""

    def __init__(
        self, keys: Sequence[str], as_tuple: bool, transform: Callable[[Any], Any] | None
    ) -> None:
        self.keys, self.as_tuple, self.transform = list(keys), as_tuple, transform

    def __call__(self, values: dict[str, npt.NDArray[Any]]) -> Any:
        tensors = {k: torch.from_numpy(_native(values[k])) for k in self.keys}
        out: Any = tuple(tensors[k] for k in self.keys) if self.as_tuple else tensors
        return self.transform(out) if self.transform is not None else out


class _Pinned:
    """What both datasets share: the pinned source they read."""

    source: Source

    @property
    def name(self) -> str:
        """The version read: ``user/name:<version id>``."""
        return self.source.name


class IterableDataset(_Pinned, torch.utils.data.IterableDataset[Any]):
    """Samples of a repository, in a random order read a chunk at a time.

    Parameters
    ----------
    source : str, HubArray or HubGroup
        ``user/name[:ref]``, or an opened array or group; pinned now (see
        :func:`hubzarr.pin`).
    keys : sequence of str, optional
        For a group, the arrays that make a sample (default: all arrays in it). A single
        array yields ``{"data": row}``.
    shuffle : bool
        Visit chunks in a random order each epoch and shuffle samples in a buffer (default);
        ``False``: in order.
    seed : int
        Draw every epoch's order from ``(seed, epoch)``.
    buffer_bytes : int
        The shuffle buffer of each worker, in bytes of samples: larger mixes more chunks into
        a batch (about ``buffer_bytes / chunk bytes`` of them), at that much memory. It holds
        at least one step (``batch_size`` samples, else 64) whatever its size.
    batch_size : int, optional
        Yield batches of this many samples (tensors with a leading axis; use
        ``DataLoader(dataset, batch_size=None)``) instead of single samples: faster, and the
        by-hand resume works with any number of workers.
    drop_last : bool
        With several ranks: leave out the tail of each epoch so that every rank yields the
        same number of samples, as ``DistributedSampler(drop_last=True)``; by default it is
        padded from the epoch's start instead.
    transform : callable, optional
        Applied to each sample (or batch) before it is yielded.
    as_tuple : bool
        Yield tuples in ``keys`` order instead of dicts.
    rank, world_size : int, optional
        This process's rank and the number of ranks (default: ``torch.distributed``'s if it
        is initialized, else 0 and 1).
    root, storage_options, cache
        Where a name lives, as for :class:`hubzarr.Hub`.

    Raises
    ------
    InvalidArgumentError
        Before any sample is read: keys not distinct or given for an array, arrays of
        different lengths, a 0-d array, a dtype torch cannot hold, a bad count or rank.
    NotFoundError
        If the repository, ref or a key does not exist.
    """

    def __init__(
        self,
        source: Any,
        keys: Sequence[str] | None = None,
        *,
        shuffle: bool = True,
        seed: int = 0,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
        batch_size: int | None = None,
        drop_last: bool = False,
        transform: Callable[[Any], Any] | None = None,
        as_tuple: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        root: Any = None,
        storage_options: dict[str, Any] | None = None,
        cache: Any = None,
    ) -> None:
        super().__init__()
        self.seed = check_count(seed, "seed", 0)
        self.buffer_bytes = check_count(buffer_bytes, "buffer_bytes", 0)
        self.batch_size = None if batch_size is None else check_count(batch_size, "batch_size", 1)
        if rank is None and world_size is None:
            distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
            rank = torch.distributed.get_rank() if distributed else 0
            world_size = torch.distributed.get_world_size() if distributed else 1
        self.rank, self.world_size = check_shard(
            rank if rank is not None else 0, world_size if world_size is not None else 1
        )
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.source = open_source(
            source, keys, root=root, storage_options=storage_options, cache=cache
        )
        _check_dtypes(self.source)
        self._output = _Output(list(self.source.arrays), as_tuple, transform)
        self._epoch = 0
        #: The epoch as the main process set it, in shared memory: persistent DataLoader
        #: workers keep their copy of the dataset from epoch to epoch, and read it here.
        self._shared_epoch: Any = multiprocessing.RawValue(ctypes.c_longlong, 0)
        #: Samples yielded this epoch by this copy (a DataLoader worker's, or the process's).
        self._yielded = 0
        self._resume: dict[str, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if multiprocessing.context.get_spawning_popen() is None:
            # Pickled other than to start a worker: shared memory does not travel.
            state["_shared_epoch"] = None
        return state

    def __repr__(self) -> str:
        keys = ", ".join(self.source.arrays)
        return (
            f"<hubzarr.torch.IterableDataset {self.name} [{keys}] samples={self.source.length} "
            f"shuffle={self.shuffle} seed={self.seed} epoch={self._epoch}>"
        )

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s order from the next iteration on (call it before each epoch,
        as with ``DistributedSampler``; without it every epoch repeats epoch 0's order)."""
        self._epoch = check_count(epoch, "epoch", 0)
        if self._shared_epoch is not None:
            self._shared_epoch.value = self._epoch
        self._yielded = 0
        self._resume = None

    def _plan(self, worker: int, workers: int) -> Plan:
        return Plan(
            self.source.length,
            self.source.unit,
            self._epoch,
            self.seed,
            self.shuffle,
            self.rank,
            self.world_size,
            worker,
            workers,
            self.drop_last,
        )

    def __len__(self) -> int:
        """Samples (or batches, with ``batch_size``) this rank yields per epoch."""
        samples = self._plan(0, 1).rank_samples()
        return samples if self.batch_size is None else math.ceil(samples / self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if info is not None and self._shared_epoch is not None:
            self._epoch = int(self._shared_epoch.value)  # set_epoch in the main process
        resume, self._resume = self._resume, None
        role, start = self._start(resume, worker, workers) if resume else (worker, 0)
        plan = self._plan(role, workers)
        step = self.batch_size or SAMPLE_STEP
        stream = SampleStream(self.source, plan, self.buffer_bytes, step, start)
        self._yielded = start
        if self.batch_size is not None:
            yield from self._batches(stream)
            return
        output = self._output
        for block in stream:
            rows = len(next(iter(block.values())))
            for i in range(rows):
                sample = output({k: v[i] for k, v in block.items()})
                self._yielded += 1
                yield sample

    def _batches(self, stream: SampleStream) -> Iterator[Any]:
        assert self.batch_size is not None
        for batch in batches(stream, self.batch_size):
            self._yielded += len(next(iter(batch.values())))
            yield self._output(batch)

    def _start(self, state: dict[str, Any], worker: int, workers: int) -> tuple[int, int]:
        """Where this worker resumes: the worker whose share it yields, and the samples of that
        share yielded already."""
        if "workers" in state:  # one worker's own state (a StatefulDataLoader, or in-process)
            if (state["worker"], state["workers"]) != (worker, workers):
                raise InvalidArgumentError(
                    f"this state was taken in worker {state['worker']} of {state['workers']}; "
                    f"it resumes only there, not in worker {worker} of {workers}"
                )
            return worker, int(state["yielded"])
        # By hand: batches seen from a DataLoader taking them from its workers in turn.
        seen = int(state["batches_seen"])
        size = self.batch_size
        if size is None and workers > 1:
            raise InvalidArgumentError(
                "resuming by batches seen needs batch_size= on the dataset (and "
                "DataLoader(batch_size=None)) when there are several workers: each worker's "
                "share of the batches seen depends on it"
            )
        if size is None:
            return worker, seen * int(state.get("samples_per_batch", 1))
        counts = [math.ceil(self._plan(w, workers).worker_samples() / size) for w in range(workers)]
        taken, turn = worker_parts(workers, counts, seen)
        # A new DataLoader asks its worker 0 first: it plays the worker whose turn was next.
        role = (turn + worker) % workers
        return role, min(taken[role] * size, self._plan(role, workers).worker_samples())

    def state_dict(self) -> dict[str, Any]:
        """Where this copy of the dataset is: its epoch and the samples it yielded.

        In a DataLoader worker (torchdata's ``StatefulDataLoader`` calls it there), the
        worker's own position; in the main process, after iterating it there
        (``num_workers=0``), the whole epoch's.
        """
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return {
            "name": self.name,
            "seed": self.seed,
            "epoch": self._epoch,
            "worker": worker,
            "workers": workers,
            "yielded": self._yielded,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from ``state`` at the next iteration: exactly the samples of its epoch not
        yielded yet, in the order they would have come.

        ``state`` is what :meth:`state_dict` returned, or, by hand, ``{"epoch": e,
        "batches_seen": k}``: ``k`` batches of epoch ``e`` came out of a DataLoader (with
        ``batch_size=`` on this dataset when it has several workers; else add
        ``"samples_per_batch"``, the DataLoader's batch size).

        Raises
        ------
        InvalidArgumentError
            If ``state`` is malformed or was taken on another version or seed.
        """
        if not isinstance(state, dict) or "epoch" not in state:
            raise InvalidArgumentError(
                "a state is the dict state_dict() returned, or {'epoch': e, 'batches_seen': k}"
            )
        for key, mine in (("name", self.name), ("seed", self.seed)):
            if key in state and state[key] != mine:
                raise InvalidArgumentError(
                    f"this state was taken with {key} {state[key]!r}, not {mine!r}: resuming "
                    "would yield other samples"
                )
        if "yielded" not in state and "batches_seen" not in state:
            raise InvalidArgumentError("a state needs 'yielded' or 'batches_seen'")
        self._epoch = check_count(state["epoch"], "epoch", 0)
        if self._shared_epoch is not None:
            self._shared_epoch.value = self._epoch
        self._resume = dict(state)


class Dataset(_Pinned, torch.utils.data.Dataset[Any]):
    """Map-style access to the samples of a repository, pinned at one version.

    ``dataset[i]`` reads the chunks holding sample ``i`` and keeps them decoded (up to
    ``chunk_cache_bytes`` per process), so neighbouring samples cost no read;
    ``__getitems__`` (used by DataLoader for a batch) reads each chunk a batch touches once.

    Parameters
    ----------
    source, keys, transform, as_tuple, root, storage_options, cache
        As for :class:`IterableDataset`.
    chunk_cache_bytes : int
        Decoded chunks kept per process.

    Raises
    ------
    InvalidArgumentError, NotFoundError
        As :class:`IterableDataset`.
    """

    def __init__(
        self,
        source: Any,
        keys: Sequence[str] | None = None,
        *,
        transform: Callable[[Any], Any] | None = None,
        as_tuple: bool = False,
        chunk_cache_bytes: int = DEFAULT_CHUNK_CACHE_BYTES,
        root: Any = None,
        storage_options: dict[str, Any] | None = None,
        cache: Any = None,
    ) -> None:
        self.chunk_cache_bytes = check_count(chunk_cache_bytes, "chunk_cache_bytes", 0)
        self.source = open_source(
            source, keys, root=root, storage_options=storage_options, cache=cache
        )
        _check_dtypes(self.source)
        self._output = _Output(list(self.source.arrays), as_tuple, transform)
        self._units: OrderedDict[int, dict[str, npt.NDArray[Any]]] = OrderedDict()
        self._held = 0

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_units"], state["_held"] = OrderedDict(), 0  # a worker decodes its own
        return state

    def __repr__(self) -> str:
        keys = ", ".join(self.source.arrays)
        return f"<hubzarr.torch.Dataset {self.name} [{keys}] samples={self.source.length}>"

    def __len__(self) -> int:
        return self.source.length

    def _index(self, index: Any) -> int:
        n = self.source.length
        if isinstance(index, bool) or not isinstance(index, int | np.integer):
            raise InvalidArgumentError(f"a sample index is an integer, not {index!r}")
        if not -n <= index < n:
            raise IndexError(f"sample {index} is out of range for {self.name} ({n} samples)")
        return int(index) % n

    def _unit(self, u: int) -> dict[str, npt.NDArray[Any]]:
        block = self._units.get(u)
        if block is not None:
            self._units.move_to_end(u)
            return block
        lo = u * self.source.unit
        block = self.source.read(lo, min(lo + self.source.unit, self.source.length))
        size = sum(v.nbytes for v in block.values())
        if size <= self.chunk_cache_bytes:
            self._units[u] = block
            self._held += size
            while self._held > self.chunk_cache_bytes:
                _, dropped = self._units.popitem(last=False)
                self._held -= sum(v.nbytes for v in dropped.values())
        return block

    def __getitem__(self, index: Any) -> Any:
        i = self._index(index)
        u, offset = divmod(i, self.source.unit)
        block = self._unit(u)
        return self._output({k: v[offset] for k, v in block.items()})

    def __getitems__(self, indices: Sequence[Any]) -> list[Any]:
        checked = [self._index(i) for i in indices]
        out: list[Any] = [None] * len(checked)
        by_unit: dict[int, list[int]] = {}
        for position, i in enumerate(checked):
            by_unit.setdefault(i // self.source.unit, []).append(position)
        for u, positions in by_unit.items():
            block = self._unit(u)
            for position in positions:
                offset = checked[position] - u * self.source.unit
                out[position] = self._output({k: v[offset] for k, v in block.items()})
        return out
