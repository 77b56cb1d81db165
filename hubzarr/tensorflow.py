"""``tf.data`` datasets over a repository, from the sampler the PyTorch loader uses.

``pip install "hubzarr[tensorflow]"``. :func:`dataset` gives a ``tf.data.Dataset`` of the
samples of a repository pinned at one version, in the order :mod:`hubzarr.loading` draws (the
same as :class:`hubzarr.torch.IterableDataset` with the same seed, epoch, rank and a single
worker), with its output signature taken from the arrays' shapes and dtypes::

    import hubzarr.tensorflow

    train = hubzarr.tensorflow.dataset("alice/mnist:v1", keys=["images", "labels"],
                                       batch_size=256, as_tuple=True)
    model.fit(train, epochs=10)   # each pass over the dataset is the next epoch's order
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

try:
    import tensorflow as tf
except ImportError as exc:  # pragma: no cover - the error users see without the extra
    raise ImportError(
        'hubzarr.tensorflow needs TensorFlow: pip install "hubzarr[tensorflow]"'
    ) from exc

from hubzarr.errors import InvalidArgumentError
from hubzarr.loading import (
    DEFAULT_BUFFER_BYTES,
    SAMPLE_STEP,
    Plan,
    SampleStream,
    batches,
    check_count,
    check_shard,
    open_source,
)

__all__ = ["dataset"]


def dataset(
    source: Any,
    keys: Sequence[str] | None = None,
    *,
    shuffle: bool = True,
    seed: int = 0,
    epoch: int = 0,
    buffer_bytes: int = DEFAULT_BUFFER_BYTES,
    batch_size: int | None = None,
    drop_last: bool = False,
    as_tuple: bool = False,
    rank: int = 0,
    world_size: int = 1,
    root: Any = None,
    storage_options: dict[str, Any] | None = None,
    cache: Any = None,
) -> Any:
    """Return a ``tf.data.Dataset`` of a repository's samples, pinned at one version.

    Parameters
    ----------
    source : str, HubArray or HubGroup
        ``user/name[:ref]``, or an opened array or group; pinned now (see
        :func:`hubzarr.pin`).
    keys : sequence of str, optional
        For a group, the arrays that make a sample (default: all arrays in it); a single
        array yields ``{"data": row}``.
    shuffle, seed, buffer_bytes, drop_last, as_tuple
        As for :class:`hubzarr.torch.IterableDataset`.
    epoch : int
        The first pass over the dataset yields epoch ``epoch``'s order, the next pass the next
        epoch's (``model.fit(..., epochs=n)`` makes one pass an epoch).
    batch_size : int, optional
        Yield batches of this many samples (the last may be shorter) instead of samples: much
        faster than ``.batch()`` after a dataset of single samples.
    rank, world_size : int
        This input pipeline and how many there are (``tf.distribute``'s
        ``InputContext.input_pipeline_id`` and ``num_input_pipelines``): each yields its own
        share of every epoch.
    root, storage_options, cache
        Where a name lives, as for :class:`hubzarr.Hub`.

    Returns
    -------
    tf.data.Dataset
        Elements are dicts of tensors by key (tuples in ``keys`` order with ``as_tuple``).
        Its ``cardinality()`` is the number of elements in one pass (samples, or batches
        with ``batch_size``), so Keras knows an epoch's length.

    Raises
    ------
    InvalidArgumentError
        Before anything is read: as :class:`hubzarr.torch.IterableDataset`, and for a dtype
        TensorFlow cannot hold.
    NotFoundError
        If the repository, ref or a key does not exist.
    """
    seed = check_count(seed, "seed", 0)
    first = check_count(epoch, "epoch", 0)
    buffer_bytes = check_count(buffer_bytes, "buffer_bytes", 0)
    size = None if batch_size is None else check_count(batch_size, "batch_size", 1)
    rank, world_size = check_shard(rank, world_size)
    src = open_source(source, keys, root=root, storage_options=storage_options, cache=cache)
    names = list(src.arrays)
    specs = {}
    for key, arr in src.arrays.items():
        dtype = np.dtype(arr.dtype).newbyteorder("=")
        try:
            tf_dtype = tf.as_dtype(dtype)
        except TypeError:
            raise InvalidArgumentError(
                f"{arr.name} ({key}) holds {arr.dtype}, which TensorFlow cannot hold; leave it "
                "out of keys"
            ) from None
        leading = (None,) if size is not None else ()
        specs[key] = tf.TensorSpec(shape=(*leading, *arr.shape[1:]), dtype=tf_dtype)
    signature: Any = tuple(specs[k] for k in names) if as_tuple else specs
    passes = itertools.count(first)

    def plan_of(epoch: int) -> Plan:
        return Plan(
            src.length,
            src.unit,
            epoch,
            seed,
            bool(shuffle),
            rank,
            world_size,
            drop_last=bool(drop_last),
        )

    # Every epoch yields the same number of samples: told to tf.data, so Keras knows an
    # epoch's length (a dataset of unknown length warns "ran out of data" after each one).
    samples = sum(b - a for a, b in plan_of(first).pieces())
    elements = samples if size is None else -(-samples // size)

    def generate() -> Iterator[Any]:
        plan = plan_of(next(passes))
        stream = SampleStream(src, plan, buffer_bytes, size or SAMPLE_STEP)
        if size is not None:
            for batch in batches(stream, size):
                yield _element(batch, names, as_tuple)
            return
        for block in stream:
            for i in range(len(block[names[0]])):
                yield _element({k: block[k][i] for k in names}, names, as_tuple)

    data = tf.data.Dataset.from_generator(generate, output_signature=signature)
    return data.apply(tf.data.experimental.assert_cardinality(elements))


def _element(values: dict[str, Any], names: list[str], as_tuple: bool) -> Any:
    """One element: native byte order (TensorFlow holds no other), as a dict or a tuple."""
    native = {k: v.astype(v.dtype.newbyteorder("="), copy=False) for k, v in values.items()}
    return tuple(native[k] for k in names) if as_tuple else native
