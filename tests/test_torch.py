"""The PyTorch datasets (hubzarr/torch.py over hubzarr/loading.py): every sample once per epoch
across workers and ranks, chunk-aware shuffling, reproducible and resumable orders, pinning,
map-style access, bad input."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import Backend
from counting import CountingStorage
from servers import S3_KEY, S3_SECRET

import hubzarr
from hubzarr.loading import Plan, SampleStream, open_source
from hubzarr.storage import open_storage

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader  # noqa: E402

from hubzarr.torch import Dataset, IterableDataset  # noqa: E402

N, CHUNK = 1000, 64  # 16 chunks of images, the last one short


def _fill(hub: hubzarr.Hub, name: str = "t/data", n: int = N) -> None:
    """A group: images (n, 4, 4, 3) uint8 whose pixels encode their sample, labels = index."""
    group = hub.group(name)
    images = group.create_array("images", shape=(n, 4, 4, 3), chunks=(CHUNK, 4, 4, 3), dtype="u1")
    labels = group.create_array("labels", shape=(n,), chunks=(100,), dtype="i8")
    index = np.arange(n)
    images[:] = (index % 251).astype("u1")[:, None, None, None] * np.ones((4, 4, 3), "u1")
    labels[:] = index
    hub.tag(name, "v1")


@pytest.fixture
def local(tmp_path: Path) -> hubzarr.Hub:
    hub = hubzarr.Hub(str(tmp_path / "hub"))
    _fill(hub)
    return hub


def _labels(batches: Any) -> list[int]:
    out: list[int] = []
    for batch in batches:
        labels = batch["labels"] if isinstance(batch, dict) else batch[1]
        out.extend(int(x) for x in torch.as_tensor(labels).reshape(-1))
    return out


def _dataset(hub: hubzarr.Hub, **kwargs: Any) -> IterableDataset:
    return IterableDataset("t/data:v1", root=hub.root, **kwargs)


# -- order --------------------------------------------------------------------------------


def test_an_epoch_yields_every_sample_once_shuffled_and_each_image_with_its_label(
    local: hubzarr.Hub,
) -> None:
    data = _dataset(local)
    seen = []
    for sample in data:
        label = int(sample["labels"])
        assert sample["images"].shape == (4, 4, 3) and sample["images"].dtype == torch.uint8
        assert (sample["images"] == label % 251).all()
        seen.append(label)
    assert sorted(seen) == list(range(N))
    assert seen != sorted(seen)
    assert len(data) == N


def test_orders_are_reproducible_per_seed_and_epoch(local: hubzarr.Hub) -> None:
    first = _labels(DataLoader(_dataset(local, seed=1), batch_size=50))
    again = _labels(DataLoader(_dataset(local, seed=1), batch_size=50))
    other_seed = _labels(DataLoader(_dataset(local, seed=2), batch_size=50))
    data = _dataset(local, seed=1)
    data.set_epoch(1)
    next_epoch = _labels(DataLoader(data, batch_size=50))
    assert first == again
    assert first not in (other_seed, next_epoch)
    assert sorted(next_epoch) == sorted(other_seed) == list(range(N))


def test_each_chunk_is_read_once_per_epoch(tmp_path: Path) -> None:
    root = str(tmp_path / "hub")
    _fill(hubzarr.Hub(root))
    counter = CountingStorage(open_storage(root))
    data = IterableDataset(hubzarr.Hub(root, storage=counter).load_group("t/data:v1"))
    counter.reset()
    assert sorted(_labels(DataLoader(data, batch_size=100))) == list(range(N))
    image_reads = Counter(p for op, p in counter.paths if op == "read" and "/images/" in p)
    assert len(image_reads) == 16  # every chunk of images...
    assert set(image_reads.values()) == {1}  # ... read once


def test_a_small_buffer_mixes_few_chunks_and_a_large_one_many(local: hubzarr.Hub) -> None:
    def chunks_per_batch(buffer_bytes: int) -> float:
        data = _dataset(local, buffer_bytes=buffer_bytes, batch_size=64)
        loader = DataLoader(data, batch_size=None)
        return float(np.mean([len(set((b["labels"] // CHUNK).tolist())) for b in loader]))

    sample_bytes = 48 + 8
    few = chunks_per_batch(2 * CHUNK * sample_bytes)
    many = chunks_per_batch(N * sample_bytes)
    assert few < 8
    assert many > 12  # of 16 chunks in all


@pytest.mark.parametrize("batch_size", [None, 64])
def test_a_buffer_smaller_than_a_step_still_yields_every_sample_once(
    local: hubzarr.Hub, batch_size: int | None
) -> None:
    """A step swaps ``batch_size`` (else 64) samples out of the buffer: a buffer of fewer
    samples holds one step instead (it used to fail drawing more slots than it had)."""
    data = _dataset(local, buffer_bytes=1, batch_size=batch_size)
    loader = DataLoader(data, batch_size=None if batch_size else 8)
    labels = _labels(loader)
    assert sorted(labels) == list(range(N)) and labels != list(range(N))


def test_samples_keep_their_shape_so_labels_collate_to_one_axis(tmp_path: Path) -> None:
    """A sample of a 1-d array is a 0-d tensor: a DataLoader batch of labels is ``(B,)``, as
    ``CrossEntropyLoss`` wants, not ``(B, 1)``; an image keeps its own shape."""
    root = str(tmp_path / "hub")
    _fill(hubzarr.Hub(root))
    iterable = IterableDataset("t/data:v1", root=root)
    mapped = Dataset(hubzarr.Hub(root).load_group("t/data:v1"))
    for data in (iterable, mapped):
        batch = next(iter(DataLoader(data, batch_size=8)))
        assert batch["labels"].shape == (8,) and batch["labels"].dtype == torch.int64
        assert batch["images"].shape == (8, 4, 4, 3)
    assert mapped[3]["labels"].shape == () and int(mapped[3]["labels"]) == 3


def test_without_shuffle_samples_come_in_order(local: hubzarr.Hub) -> None:
    assert _labels(DataLoader(_dataset(local, shuffle=False), batch_size=64)) == list(range(N))


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_workers_share_an_epoch_without_duplicates_or_gaps(
    local: hubzarr.Hub, context: str
) -> None:
    loader = DataLoader(
        _dataset(local), batch_size=32, num_workers=2, multiprocessing_context=context
    )
    seen = _labels(loader)
    assert sorted(seen) == list(range(N))


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_persistent_workers_follow_set_epoch(local: hubzarr.Hub, context: str) -> None:
    data = _dataset(local, batch_size=50)
    loader = DataLoader(
        data,
        batch_size=None,
        num_workers=2,
        persistent_workers=True,
        multiprocessing_context=context,
    )
    epochs = []
    for epoch in range(3):
        data.set_epoch(epoch)
        epochs.append(_labels(loader))
    fresh = _dataset(local, batch_size=50)
    fresh.set_epoch(2)
    expected = _labels(DataLoader(fresh, batch_size=None, num_workers=2))
    assert epochs[2] == expected  # the workers, started in epoch 0, drew epoch 2's order
    assert epochs[0] != epochs[1] != epochs[2]
    assert all(sorted(labels) == list(range(N)) for labels in epochs)


@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_and_workers_together_cover_the_epoch(local: hubzarr.Hub, drop_last: bool) -> None:
    world = 3
    per_rank = []
    for rank in range(world):
        data = _dataset(local, rank=rank, world_size=world, drop_last=drop_last)
        loader = DataLoader(data, batch_size=16, num_workers=2, multiprocessing_context="fork")
        per_rank.append(_labels(loader))
        assert len(data) == len(per_rank[-1])
    sizes = {len(labels) for labels in per_rank}
    everything = Counter(x for labels in per_rank for x in labels)
    if drop_last:
        assert sizes == {N // world}  # 333 each: one sample left out, none twice
        assert len(everything) == N - N % world and set(everything.values()) == {1}
    else:
        assert sizes == {-(-N // world)}  # 334 each: two samples come twice, none missing
        assert set(everything) == set(range(N)) and sum(everything.values()) == N + 2


def test_plans_split_any_stream_exactly() -> None:
    for length, unit, world, workers in [(10, 3, 1, 1), (1000, 64, 3, 2), (7, 10, 4, 3)]:
        for drop_last in (False, True):
            taken: Counter[int] = Counter()
            for rank in range(world):
                for worker in range(workers):
                    plan = Plan(length, unit, 5, 9, True, rank, world, worker, workers, drop_last)
                    pieces = plan.pieces()
                    assert sum(b - a for a, b in pieces) == plan.worker_samples()
                    assert all(a // unit == (b - 1) // unit for a, b in pieces)  # within a unit
                    taken.update(i for a, b in pieces for i in range(a, b))
            expected = length // world * world if drop_last else -(-length // world) * world
            assert sum(taken.values()) == expected
            assert len(taken) == min(length, expected)


# -- resuming -----------------------------------------------------------------------------


@pytest.mark.parametrize("stop", [0, 1, 63, 64, 500, 999, 1000])
def test_a_stream_resumes_anywhere_with_exactly_the_rest(local: hubzarr.Hub, stop: int) -> None:
    source = open_source("t/data:v1", root=local.root)
    plan = Plan(N, source.unit, 3, 7, True)
    whole = SampleStream(source, plan, 300 * 56, 64)
    order = [int(x) for block in whole for x in block["labels"]]
    assert order == whole.order().tolist()
    rest = SampleStream(source, plan, 300 * 56, 64, start=stop)
    assert [int(x) for block in rest for x in block["labels"]] == order[stop:]


def test_resume_by_hand_in_one_process(local: hubzarr.Hub) -> None:
    data = _dataset(local, seed=4)
    data.set_epoch(2)
    whole = [int(s["labels"]) for s in data]
    data.set_epoch(2)
    it = iter(data)
    head = [int(next(it)["labels"]) for _ in range(377)]
    state = data.state_dict()
    assert state["yielded"] == 377 and state["epoch"] == 2
    later = _dataset(local, seed=4)
    later.load_state_dict(state)
    assert head + [int(s["labels"]) for s in later] == whole


def test_resume_by_batches_seen_with_workers(local: hubzarr.Hub) -> None:
    def loader(data: IterableDataset) -> DataLoader[Any]:
        return DataLoader(data, batch_size=None, num_workers=2, multiprocessing_context="fork")

    data = _dataset(local, batch_size=32, seed=3)
    whole = [b["labels"].tolist() for b in loader(data)]
    later = _dataset(local, batch_size=32, seed=3)
    later.load_state_dict({"epoch": 0, "batches_seen": 11})
    assert [b["labels"].tolist() for b in loader(later)] == whole[11:]


@pytest.mark.filterwarnings("ignore:'set_vital' is deprecated:UserWarning")  # torchdata 0.11
def test_resume_with_torchdata_stateful_dataloader(local: hubzarr.Hub) -> None:
    stateful = pytest.importorskip("torchdata.stateful_dataloader")

    def loader(data: IterableDataset) -> Any:
        return stateful.StatefulDataLoader(
            data, batch_size=16, num_workers=2, multiprocessing_context="fork"
        )

    whole = _labels(loader(_dataset(local, seed=5)))
    first = loader(_dataset(local, seed=5))
    it = iter(first)
    head = _labels(next(it) for _ in range(13))
    state = first.state_dict()
    resumed = loader(_dataset(local, seed=5))
    resumed.load_state_dict(state)
    tail = _labels(resumed)
    assert sorted(head + tail) == list(range(N))
    assert head + tail == whole


def test_a_state_from_another_seed_or_version_is_refused(local: hubzarr.Hub) -> None:
    state = _dataset(local, seed=1).state_dict()
    with pytest.raises(hubzarr.InvalidArgumentError, match="seed"):
        _dataset(local, seed=2).load_state_dict(state)
    with pytest.raises(hubzarr.InvalidArgumentError, match="state"):
        _dataset(local).load_state_dict({"yielded": 3})


# -- pinning ------------------------------------------------------------------------------


def test_a_branch_is_pinned_when_the_dataset_is_made(tmp_path: Path) -> None:
    hub = hubzarr.Hub(str(tmp_path / "hub"))
    _fill(hub)
    before = len(hub.log("t/data"))
    data = IterableDataset("t/data", root=hub.root, shuffle=False)  # head empty over v1
    assert len(hub.log("t/data")) == before  # pinned to v1 itself: nothing sealed
    hub.load_group("t/data")["labels"][:10] = -1  # a write the dataset must not see
    assert _labels(DataLoader(data, batch_size=100)) == list(range(N))
    pinned = IterableDataset("t/data", root=hub.root, shuffle=False)  # head holds the write
    assert len(hub.log("t/data")) == before + 1  # sealed, unnamed
    hub.load_group("t/data")["labels"][:10] = -2
    assert _labels(DataLoader(pinned, batch_size=100))[:10] == [-1] * 10
    assert hub.pin("t/data:v1") == f"{hub.load_group('t/data:v1').name.split(':')[0]}:" + (
        hub.load_group("t/data:v1").version
    )


def test_a_branch_of_a_read_only_root_is_refused(tmp_path: Path) -> None:
    hub = hubzarr.Hub(str(tmp_path / "hub"))
    _fill(hub)

    class ReadOnly(CountingStorage):
        pass

    storage = ReadOnly(open_storage(hub.root))
    storage.read_only = True
    with pytest.raises(hubzarr.ReadOnlyError, match="tag"):
        hubzarr.Hub(hub.root, storage=storage).pin("t/data")


# -- map-style ----------------------------------------------------------------------------


def test_map_style_reads_samples_and_batches(tmp_path: Path) -> None:
    root = str(tmp_path / "hub")
    _fill(hubzarr.Hub(root))
    counter = CountingStorage(open_storage(root))
    data = Dataset(hubzarr.Hub(root, storage=counter).load_group("t/data:v1"), as_tuple=True)
    counter.reset()
    assert len(data) == N
    image, label = data[130]
    assert int(label) == 130 and (image == 130).all()
    assert int(data[-1][1]) == N - 1
    reads = len(counter.paths)
    assert int(data[131][1]) == 131 and len(counter.paths) == reads  # its chunk is kept
    batch = data.__getitems__([5, 900, 6])
    assert [int(lab) for _, lab in batch] == [5, 900, 6]
    loader = DataLoader(data, batch_size=100, shuffle=True, num_workers=2)
    assert sorted(_labels(loader)) == list(range(N))
    with pytest.raises(IndexError):
        data[N]
    with pytest.raises(hubzarr.InvalidArgumentError):
        data["3"]


def test_one_array_yields_data_and_a_transform_applies(tmp_path: Path) -> None:
    hub = hubzarr.Hub(str(tmp_path / "hub"))
    hub.array((10, 2), "t/one", dtype="f4", chunks=(3, 2))[:] = np.arange(20).reshape(10, 2)
    data = IterableDataset(
        "t/one", root=hub.root, shuffle=False, transform=lambda s: s["data"].sum()
    )
    assert [float(x) for x in data] == [float(4 * i + 1) for i in range(10)]


# -- remote -------------------------------------------------------------------------------


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_workers_read_s3_with_credentials_from_their_environment(
    s3_backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, context: str
) -> None:
    hub = s3_backend.hub()
    _fill(hub, n=300)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    data = IterableDataset(
        "t/data:v1",
        root=s3_backend.root,
        storage_options=s3_backend.options,
        cache=str(tmp_path / "cache"),
    )
    loader = DataLoader(data, batch_size=32, num_workers=2, multiprocessing_context=context)
    assert sorted(_labels(loader)) == list(range(300))
    assert sorted(_labels(loader)) == list(range(300))  # again: from the cache
    assert S3_SECRET.encode() not in __import__("pickle").dumps(data)


# -- bad input ----------------------------------------------------------------------------


def test_bad_input_is_refused_before_the_first_batch(tmp_path: Path) -> None:
    hub = hubzarr.Hub(str(tmp_path / "hub"))
    _fill(hub)
    group = hub.group("t/odd")
    group.create_array("a", shape=(10, 2), dtype="f4")
    group.create_array("b", shape=(9,), dtype="f4")
    group.create_array("c", shape=(), dtype="f4")
    with pytest.raises(hubzarr.NotFoundError, match="no array 'boxes'"):
        _dataset(hub, keys=["images", "boxes"])
    with pytest.raises(hubzarr.InvalidArgumentError, match="differ in length"):
        IterableDataset("t/odd", keys=["a", "b"], root=hub.root)
    with pytest.raises(hubzarr.InvalidArgumentError, match="0-d"):
        IterableDataset("t/odd", keys=["c"], root=hub.root)
    with pytest.raises(hubzarr.InvalidArgumentError, match="distinct"):
        _dataset(hub, keys=["images", "images"])
    hub.array((4,), "t/single", dtype="f4")
    with pytest.raises(hubzarr.InvalidArgumentError, match="one array"):
        IterableDataset("t/single", root=hub.root, keys=["data"])
    with pytest.raises(hubzarr.InvalidArgumentError, match="rank"):
        _dataset(hub, rank=3, world_size=3)
    with pytest.raises(hubzarr.InvalidArgumentError, match="batch_size"):
        _dataset(hub, batch_size=0)
    with pytest.raises(hubzarr.NotFoundError):
        IterableDataset("t/nothing", root=hub.root)
