"""tf.data datasets (hubzarr/tensorflow.py): the PyTorch loader's order, sharding and pinning,
with the output signature taken from the arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_torch import CHUNK, N, _fill

import hubzarr
from hubzarr.loading import Plan, SampleStream, open_source

tf = pytest.importorskip("tensorflow")
import hubzarr.tensorflow  # noqa: E402


@pytest.fixture
def hub(tmp_path: Path) -> hubzarr.Hub:
    hub = hubzarr.Hub(str(tmp_path / "hub"))
    _fill(hub)
    return hub


def test_samples_come_in_the_sampler_s_order_with_their_signature(hub: hubzarr.Hub) -> None:
    data = hubzarr.tensorflow.dataset("t/data:v1", root=hub.root, seed=3)
    assert data.element_spec["images"] == tf.TensorSpec((4, 4, 3), tf.uint8)
    assert data.element_spec["labels"] == tf.TensorSpec((), tf.int64)
    labels = []
    for element in data:
        assert (element["images"].numpy() == int(element["labels"]) % 251).all()
        labels.append(int(element["labels"]))
    source = open_source("t/data:v1", root=hub.root)
    stream = SampleStream(source, Plan(N, CHUNK, 0, 3, True), 96 * 2**20, 64)
    assert labels == stream.order().tolist()  # what hubzarr.torch yields in one worker
    assert sorted(labels) == list(range(N))


def test_each_pass_is_the_next_epoch_and_batches_are_whole(hub: hubzarr.Hub) -> None:
    data = hubzarr.tensorflow.dataset(
        "t/data:v1", root=hub.root, batch_size=96, as_tuple=True, epoch=4
    )
    assert data.element_spec[0] == tf.TensorSpec((None, 4, 4, 3), tf.uint8)
    first = [b[1].numpy() for b in data]
    second = [b[1].numpy() for b in data]
    assert [len(b) for b in first] == [96] * (N // 96) + [N % 96]
    assert int(data.cardinality()) == len(first)  # Keras knows an epoch's length
    one, two = np.concatenate(first), np.concatenate(second)
    assert sorted(one.tolist()) == sorted(two.tolist()) == list(range(N))
    assert one.tolist() != two.tolist()
    again = hubzarr.tensorflow.dataset("t/data:v1", root=hub.root, batch_size=96, epoch=4)
    assert np.concatenate([b["labels"].numpy() for b in again]).tolist() == one.tolist()


def test_input_pipelines_share_an_epoch(hub: hubzarr.Hub) -> None:
    seen: list[int] = []
    for rank in range(3):
        data = hubzarr.tensorflow.dataset(
            "t/data:v1", root=hub.root, rank=rank, world_size=3, drop_last=True, batch_size=50
        )
        labels = np.concatenate([b["labels"].numpy() for b in data]).tolist()
        assert int(data.cardinality()) == -(-len(labels) // 50)
        seen.extend(labels)
    assert len(seen) == len(set(seen)) == N - N % 3
    samples = hubzarr.tensorflow.dataset("t/data:v1", root=hub.root, rank=1, world_size=3)
    assert int(samples.cardinality()) == sum(1 for _ in samples) == -(-N // 3)


def test_a_branch_is_pinned_and_bad_input_refused(hub: hubzarr.Hub) -> None:
    data = hubzarr.tensorflow.dataset("t/data", root=hub.root, shuffle=False, batch_size=N)
    hub.load_group("t/data")["labels"][:5] = -1
    assert next(iter(data))["labels"].numpy().tolist() == list(range(N))
    with pytest.raises(hubzarr.NotFoundError, match="no array 'boxes'"):
        hubzarr.tensorflow.dataset("t/data:v1", ["boxes"], root=hub.root)
    with pytest.raises(hubzarr.InvalidArgumentError, match="rank"):
        hubzarr.tensorflow.dataset("t/data:v1", root=hub.root, rank=2, world_size=2)
