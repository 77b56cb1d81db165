"""Benchmark PyTorch loaders side by side: hubzarr's against its peers, on the same data.

One data set, ``--samples`` (50,000) images of 64 x 64 x 3 uint8 (smooth noise: it compresses a
little, as real images do) with int64 labels, is written once into a work folder (``--dir``), in
each loader's own format with that loader's own writer:

- ``hubzarr``: a repository group ``bench/loader`` (arrays ``images``, chunks of 256 samples,
  Blosc lz4, and ``labels``) tagged ``v1``, on a local root;
- ``deeplake``: a Deep Lake 4 dataset (``deeplake.create``, columns ``images`` and ``labels``);
- ``mosaic``: MDS shards (``streaming.MDSWriter``, 64 MiB shards, uncompressed);
- ``webdataset``: tar shards (``webdataset.ShardWriter``, 64 MiB, ``.npy`` + ``.cls``);
- ``litdata``: ``litdata.optimize`` chunks (64 MB), 2 writer processes;
- ``plain.zarr``: a plain zarr format 2 array (chunks of 256 samples, Blosc lz4), and
  ``images.npy``: the same images uncompressed.

The label of a sample is its index, so every batch of every loader maps back to its source
samples. Each row of :data:`LOADERS` reads two epochs through ``torch.utils.data.DataLoader``
(batch 256, 2 workers, shuffled): ``deeplake`` (``ds.pytorch()``), ``mosaic`` (MDS
``StreamingDataset``), ``webdataset`` (``WebDataset`` + ``WebLoader``), ``litdata``
(``StreamingDataset`` + ``StreamingDataLoader``), ``naive zarr`` (a map-style ``Dataset`` that
reads ``zarr_array[i]`` per sample), ``memmap gather`` (a ``Dataset`` that gathers a whole
batch of indices from ``np.load(mmap_mode="r")``), and, when ``import hubzarr.torch`` works,
``hubzarr`` (``hubzarr.torch.IterableDataset`` at its default buffer) and one row per
``--buffers`` size (samples/s against the shuffle buffer).

Every trial runs in a fresh process (imports untimed), ``--repeats`` (3) trials per row,
interleaved, the order rotating every repeat. Reported per row: median samples/s over both
epochs and for epoch 2 alone; shuffle quality, the mean number of distinct source blocks (256
consecutive indices) in a full batch (a uniform shuffle gives about 143 at 50,000 samples);
whether each epoch gave every sample exactly once and a new order; the peak PSS of the trial's
process and its workers together (psutil, sampled every 20 ms) and the process's PSS before
iterating (torch and the peer imported, the dataset built). Ratios of medians and paired ratios
(the median of per-repeat ratios) against the fastest peer, the memmap gather and the naive
zarr dataset, and the issue's targets, checked on the ``hubzarr`` row.

Usage::

    python benchmarks/loader.py                   # 50,000 samples, --repeats 3; ~20 minutes
    python benchmarks/loader.py --quick           # 10,000 samples, 1 repeat; ~3 minutes

Results, with every trial, the machine and the command, go to ``benchmarks/results/loader.json``
(committed); ``--plot`` then draws ``loader.png`` (``plots.py``; matplotlib is not in the
``loader-bench`` extra: ``python benchmarks/plots.py`` in the ``bench`` environment draws it
from the file as well).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import record

SIDE, BATCH, WORKERS, BLOCK = 64, 256, 2, 256
SHARD_BYTES = 1 << 26  # 64 MiB: MDSWriter's default, used for every sharded format
HUB_NAME = "bench/loader"
PEERS = ("deeplake", "mosaic", "webdataset", "litdata")
#: The issue's targets for the ``hubzarr`` row (paired ratios of samples/s), and for epoch 2
#: of the ``hubzarr s3 50 ms`` row against the ``hubzarr`` row's (ratio of medians).
PEER_TARGET, MEMMAP_TARGET, NAIVE_TARGET, REMOTE_TARGET = 2.0, 0.8, 20.0, 0.9
PACKAGES = (
    "torch", "torchdata", "psutil", "deeplake", "mosaicml-streaming", "webdataset", "litdata",
    "zarr", "numcodecs", "numpy", "hubzarr",
)  # fmt: skip

Batch = tuple[Any, Any]  # (images, source indices), tensors or arrays
Epochs = Callable[[int], Iterable[Batch]]


@dataclass(frozen=True)
class Data:
    """The work folder holding every format of one data set of ``n`` samples."""

    work: Path
    n: int

    def path(self, name: str) -> Path:
        return self.work / name


# ------------------------------------------------------------------------------ the data


def make_images(n: int, seed: int = 0) -> np.ndarray:
    """Smooth noise: random 9 x 9 control points per channel, bilinearly upsampled to 64 x 64,
    a little grain, 16 levels per channel (runs of equal pixels, without which lz4 finds
    nothing to compress: Blosc lz4 compresses it about 1.2x, as it does photographs)."""
    rng = np.random.default_rng(seed)
    up = np.zeros((SIDE, 9), dtype=np.float32)  # linear interpolation matrix, 9 -> 64
    pos = np.linspace(0, 8, SIDE)
    left = np.minimum(pos.astype(int), 7)
    up[np.arange(SIDE), left] = 1 - (pos - left)
    up[np.arange(SIDE), left + 1] = pos - left
    out = np.empty((n, SIDE, SIDE, 3), dtype=np.uint8)
    for start in range(0, n, 2000):
        m = min(2000, n - start)
        low = rng.uniform(0, 255, (m, 9, 9, 3)).astype(np.float32)
        smooth = (up @ low.transpose(0, 3, 1, 2) @ up.T).transpose(0, 2, 3, 1)
        smooth += rng.standard_normal(smooth.shape, dtype=np.float32) * 4
        out[start : start + m] = np.clip(smooth, 0, 255).astype(np.uint8) // 16 * 16
    return out


def write_npy(data: Data, images: np.ndarray) -> None:
    np.save(data.path("images.npy"), images)
    np.save(data.path("labels.npy"), np.arange(len(images), dtype=np.int64))


def write_zarr(data: Data, images: np.ndarray) -> None:
    import zarr

    plain = zarr.create_array(
        zarr.storage.LocalStore(data.path("plain.zarr")),
        shape=images.shape,
        chunks=(BLOCK, SIDE, SIDE, 3),
        dtype="u1",
        zarr_format=2,
        compressors=numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE),
        filters=None,
    )
    plain[:] = images


def write_hub(data: Data, images: np.ndarray) -> None:
    import hubzarr

    hub = hubzarr.Hub(str(data.path("hub")))
    group = hub.group(HUB_NAME)
    group.create_array("images", images.shape, dtype="uint8", chunks=(BLOCK, SIDE, SIDE, 3))[:] = (
        images
    )
    group.create_array("labels", (len(images),), dtype="int64", chunks=(BLOCK,))[:] = np.arange(
        len(images), dtype=np.int64
    )
    hub.tag(HUB_NAME, "v1")


def write_deeplake(data: Data, images: np.ndarray) -> None:
    import deeplake

    ds = deeplake.create(f"file://{data.path('deeplake')}")
    ds.add_column("images", deeplake.types.Array("uint8", shape=[SIDE, SIDE, 3]))
    ds.add_column("labels", deeplake.types.Int64())
    for start in range(0, len(images), 1000):
        stop = min(start + 1000, len(images))
        ds.append({"images": images[start:stop], "labels": np.arange(start, stop)})
    ds.commit()


def write_mosaic(data: Data, images: np.ndarray) -> None:
    from streaming import MDSWriter

    columns = {"image": f"ndarray:uint8:{SIDE},{SIDE},3", "label": "int64"}
    with MDSWriter(out=str(data.path("mosaic")), columns=columns, size_limit=SHARD_BYTES) as out:
        for i, image in enumerate(images):
            out.write({"image": image, "label": i})


def write_webdataset(data: Data, images: np.ndarray) -> None:
    import webdataset as wds

    data.path("webdataset").mkdir()
    pattern = str(data.path("webdataset") / "shard-%05d.tar")
    with wds.ShardWriter(pattern, maxsize=SHARD_BYTES, verbose=0) as out:
        for i, image in enumerate(images):
            out.write({"__key__": f"{i:08d}", "npy": image, "cls": i})


def _litdata_sample(npy: str, i: int) -> dict[str, Any]:
    return {"image": np.load(npy, mmap_mode="r")[i].copy(), "label": i}


def write_litdata(data: Data, images: np.ndarray) -> None:
    import litdata

    litdata.optimize(
        fn=functools.partial(_litdata_sample, str(data.path("images.npy"))),
        inputs=list(range(len(images))),
        output_dir=str(data.path("litdata")),
        chunk_bytes="64MB",
        num_workers=WORKERS,
        verbose=False,
    )


#: Format -> (the module it needs, writer). Written in this order (litdata reads images.npy).
WRITERS: dict[str, tuple[str, Callable[[Data, np.ndarray], None]]] = {
    "images.npy": ("numpy", write_npy),
    "plain.zarr": ("zarr", write_zarr),
    "hub": ("hubzarr", write_hub),
    "deeplake": ("deeplake", write_deeplake),
    "mosaic": ("streaming", write_mosaic),
    "webdataset": ("webdataset", write_webdataset),
    "litdata": ("litdata", write_litdata),
}


def importable(module: str) -> str | None:
    """None if ``module`` imports in a fresh interpreter, else the last line of the error."""
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, check=False
    )
    lines = done.stderr.strip().splitlines()
    return None if done.returncode == 0 else (lines[-1] if lines else f"exit {done.returncode}")


def write_all(data: Data, missing: dict[str, str]) -> dict[str, float]:
    """Write every format not yet in the work folder (a ``.done`` marker per format and size);
    returns the seconds each write took."""
    images: np.ndarray | None = None
    seconds: dict[str, float] = {}
    for name, (module, writer) in WRITERS.items():
        marker = data.path(f".{name}-{data.n}.done")
        if module in missing or marker.exists():
            continue
        if images is None:
            images = make_images(data.n)
        target = data.path(name)
        if target.is_dir():
            shutil.rmtree(target)
        target.unlink(missing_ok=True)
        start = time.perf_counter()
        writer(data, images)
        seconds[name] = time.perf_counter() - start
        marker.touch()
        print(f"wrote {name} in {seconds[name]:.1f} s", flush=True)
    return seconds


# ---------------------------------------------------------------------------- the loaders


def _loader(dataset: Any, **kwargs: Any) -> Any:
    from torch.utils.data import DataLoader

    return DataLoader(dataset, num_workers=WORKERS, **kwargs)


def _epochs(loader: Any, images: str, labels: str) -> Epochs:
    """Epochs of a DataLoader whose batches are dicts."""

    def epoch(_: int) -> Iterator[Batch]:
        for batch in loader:
            yield batch[images], batch[labels]

    return epoch


def open_deeplake(data: Data) -> Epochs:
    import deeplake

    ds = deeplake.open_read_only(f"file://{data.path('deeplake')}")
    return _epochs(_loader(ds.pytorch(), batch_size=BATCH, shuffle=True), "images", "labels")


def open_mosaic(data: Data) -> Epochs:
    from streaming import StreamingDataset
    from streaming.base.util import clean_stale_shared_memory

    clean_stale_shared_memory()  # left by an interrupted run
    ds = StreamingDataset(local=str(data.path("mosaic")), shuffle=True, batch_size=BATCH)
    return _epochs(_loader(ds, batch_size=BATCH), "image", "label")


def open_webdataset(data: Data) -> Epochs:
    import webdataset as wds

    urls = sorted(str(p) for p in data.path("webdataset").glob("*.tar"))

    def epoch(n: int) -> Iterator[Batch]:
        # shuffle(1000): the buffer of webdataset's examples; seeded per epoch.
        ds = (
            wds.WebDataset(urls, shardshuffle=len(urls), seed=n, empty_check=False)
            .shuffle(1000, seed=n)
            .decode()
            .to_tuple("npy", "cls")
            .batched(BATCH)
        )
        yield from wds.WebLoader(ds, batch_size=None, num_workers=WORKERS)

    return epoch


def open_litdata(data: Data) -> Epochs:
    import litdata

    ds = litdata.StreamingDataset(input_dir=str(data.path("litdata")), shuffle=True)
    loader = litdata.StreamingDataLoader(ds, batch_size=BATCH, num_workers=WORKERS)
    return _epochs(loader, "image", "label")  # the loader sets the epoch itself


class NaiveZarr:
    """``zarr_array[i]`` per sample, the labels in memory: what one writes first."""

    def __init__(self, data: Data) -> None:
        self.path = data.path("plain.zarr")
        self.labels = np.load(data.path("labels.npy"))
        self.array: Any = None  # opened in each worker: zarr's event loop does not survive fork

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        if self.array is None:
            import zarr

            self.array = zarr.open_array(zarr.storage.LocalStore(self.path, read_only=True))
        return self.array[i], int(self.labels[i])


def open_naive_zarr(data: Data) -> Epochs:
    loader = _loader(NaiveZarr(data), batch_size=BATCH, shuffle=True)
    return lambda _: loader


class MemmapGather:
    """A whole batch of indices gathered from the uncompressed ``.npy`` at once."""

    def __init__(self, data: Data) -> None:
        self.path = data.path("images.npy")
        self.array: np.ndarray | None = None  # a memmap pickles as a copy: opened per worker

    def __getitem__(self, indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
        if self.array is None:
            self.array = np.load(self.path, mmap_mode="r")
        index = np.asarray(indices)
        return self.array[index], index


def open_memmap(data: Data) -> Epochs:
    from torch.utils.data import BatchSampler, RandomSampler

    sampler = BatchSampler(RandomSampler(range(data.n)), BATCH, drop_last=False)
    loader = _loader(MemmapGather(data), sampler=sampler, batch_size=None)
    return lambda _: loader


def open_hub(data: Data, buffer_mib: float | None = None, workers: int | None = None) -> Epochs:
    """``hubzarr.torch.IterableDataset`` at the tag, on the local root, making its own batches
    of 256 (``DataLoader(batch_size=None)``, as the memmap row's sampler hands whole batches);
    ``buffer_mib`` None: the dataset's default shuffle buffer; ``workers``: DataLoader
    workers (default :data:`WORKERS`; 0: the dataset's own reading threads only)."""
    from torch.utils.data import DataLoader

    import hubzarr.torch

    options = {} if buffer_mib is None else {"buffer_bytes": int(buffer_mib * 2**20)}
    ds = hubzarr.torch.IterableDataset(
        f"{HUB_NAME}:v1",
        root=str(data.path("hub")),
        keys=("images", "labels"),
        shuffle=True,
        seed=0,
        batch_size=BATCH,
        **options,
    )
    loader = DataLoader(ds, batch_size=None, num_workers=WORKERS if workers is None else workers)

    def epoch(n: int) -> Iterable[Batch]:
        ds.set_epoch(n)
        return _epochs(loader, "images", "labels")(n)

    return epoch


#: Servers a trial started (moto and the latency proxy), stopped when the trial's process exits.
_SERVERS = contextlib.ExitStack()


def open_hub_remote(data: Data, latency_ms: float = 50.0) -> Epochs:
    """The ``hubzarr`` row's repository copied into moto (a process of its own) and read
    through the latency proxy of ``remote.py`` (another), through a local cache folder of its
    own, empty at the start: epoch 1 fetches every chunk, epoch 2 reads the cache. The
    workers find the S3 keys in their environment, as on a real machine."""
    import atexit

    from torch.utils.data import DataLoader

    import hubzarr
    import hubzarr.torch

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from faults import proxy_process
    from servers import S3_KEY, S3_SECRET, make_bucket, moto_server_process, s3_options

    atexit.register(_SERVERS.close)
    moto = _SERVERS.enter_context(moto_server_process())
    proxy = _SERVERS.enter_context(proxy_process(moto, latency_s=latency_ms / 1000))
    make_bucket(moto, "loader")
    remote = "s3://loader/hub"
    target = hubzarr.Hub(remote, storage_options=s3_options(moto), cache=False)
    hubzarr.Hub(str(data.path("hub"))).copy(HUB_NAME, HUB_NAME, to_root=target)
    os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"] = S3_KEY, S3_SECRET
    ds = hubzarr.torch.IterableDataset(
        f"{HUB_NAME}:v1",
        root=remote,
        storage_options=s3_options(proxy.url),
        cache=_SERVERS.enter_context(tempfile.TemporaryDirectory(prefix="loader-cache-")),
        keys=("images", "labels"),
        seed=0,
        batch_size=BATCH,
    )
    loader = DataLoader(ds, batch_size=None, num_workers=WORKERS)

    def epoch(n: int) -> Iterable[Batch]:
        ds.set_epoch(n)
        return _epochs(loader, "images", "labels")(n)

    return epoch


#: The rows: label -> opener of a loader's epochs, each opened in a fresh process (the
#: ``hubzarr`` rows only where ``hubzarr.torch`` imports). A row of another loader or setting
#: is one more opener here; ``--buffers`` rows are added by :func:`loaders`.
LOADERS: dict[str, Callable[[Data], Epochs]] = {
    "hubzarr": open_hub,
    "hubzarr 0 workers": functools.partial(open_hub, workers=0),
    "hubzarr s3 50 ms": open_hub_remote,
    "deeplake": open_deeplake,
    "mosaic": open_mosaic,
    "webdataset": open_webdataset,
    "litdata": open_litdata,
    "naive zarr": open_naive_zarr,
    "memmap gather": open_memmap,
}
#: What each row needs: the module it imports and the format it reads.
NEEDS = {
    "hubzarr": ("hubzarr.torch", "hub"),
    "deeplake": ("deeplake", "deeplake"),
    "mosaic": ("streaming", "mosaic"),
    "webdataset": ("webdataset", "webdataset"),
    "litdata": ("litdata", "litdata"),
    "naive zarr": ("zarr", "plain.zarr"),
    "memmap gather": ("numpy", "images.npy"),
}


def loaders(buffers: list[float]) -> dict[str, Callable[[Data], Epochs]]:
    """:data:`LOADERS` and a ``hubzarr`` row per shuffle buffer size in MiB."""
    rows = dict(LOADERS)
    for mib in buffers:
        rows[f"hubzarr {mib:g} MiB"] = functools.partial(open_hub, buffer_mib=mib)
    return rows


def needs(label: str) -> tuple[str, str]:
    return NEEDS["hubzarr" if label.startswith("hubzarr") else label]


# ------------------------------------------------------------------------------ one trial


class PeakPSS:
    """The peak over time of the PSS of this process and all its descendants together,
    sampled every ``interval`` s by a thread. Reading a process's PSS takes about 6 ms here
    (torch maps much): at 20 ms with three processes the sampler took most of a core from the
    loop it measured, so it samples four times a second."""

    def __init__(self, interval: float = 0.25) -> None:
        import psutil

        self.me = psutil.Process()
        self.peak = 0
        self.interval = interval
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        import psutil

        total = 0
        for proc in [self.me, *self.me.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                total += proc.memory_full_info().pss  # unless the worker just ended
        return total

    def _run(self) -> None:
        while not self.done.wait(self.interval):
            self.peak = max(self.peak, self.sample())

    def __enter__(self) -> PeakPSS:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()


def run_trial(label: str, data: Data, buffers: list[float]) -> dict[str, Any]:
    """Two epochs of one row, in this (fresh) process."""
    import torch

    torch.manual_seed(0)  # the samplers' order: the same for every row using torch's
    epochs = loaders(buffers)[label](data)
    pss = PeakPSS()
    base = pss.sample()
    seconds, counts, complete, quality, firsts = [], [], [], [], []
    with pss:
        for n in range(2):
            seen = np.zeros(data.n, dtype=np.int64)
            distinct: list[int] = []
            first: Batch | None = None
            start = time.perf_counter()
            for images, labels in epochs(n):
                index = np.asarray(labels, dtype=np.int64)
                if first is None:
                    first = (np.array(images), index.copy())
                np.add.at(seen, index, 1)
                if len(index) == BATCH:
                    distinct.append(len(np.unique(index // BLOCK)))
            seconds.append(time.perf_counter() - start)
            counts.append(int(seen.sum()))
            complete.append(bool((seen == 1).all()))
            quality.append(statistics.fmean(distinct) if distinct else float("nan"))
            assert first is not None, f"{label}: epoch {n} gave no batch"
            firsts.append(first)
    source = np.load(data.path("images.npy"), mmap_mode="r")
    for images, index in firsts:  # checked after timing: the images are those of the labels
        assert images.shape == (len(index), SIDE, SIDE, 3), (label, images.shape)
        assert np.array_equal(images, source[index]), f"{label}: images do not match labels"
    return {
        "seconds": seconds,
        "samples": counts,
        "complete": complete,
        "reshuffled": not np.array_equal(firsts[0][1], firsts[1][1]),
        "quality": quality,
        "peak_pss": pss.peak,
        "base_pss": base,
    }


def trial_in_process(label: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """:func:`run_trial` in a fresh interpreter; its result is its last line of output."""
    command = [sys.executable, __file__, "--trial", label, "--dir", str(work)]
    command += ["--samples", str(args.samples), "--buffers", *map(str, args.buffers)]
    done = subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=args.trial_timeout
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines or not lines[-1].startswith("{"):
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        return {"error": f"exit {done.returncode}: {tail}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# ------------------------------------------------------------------------------ the report


def median(values: Iterable[float]) -> float:
    return statistics.median(values)


def rate(trial: dict[str, Any]) -> float:
    """Samples per second over both epochs."""
    return float(sum(trial["samples"]) / sum(trial["seconds"]))


def paired(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> float:
    """Median of the per-repeat ratios of samples/s (repeats where both ran)."""
    ratios = [rate(o) / rate(t) for o, t in zip(ours, theirs, strict=True)]
    return median(ratios) if ratios else float("nan")


def summarise(trials: dict[str, list[dict[str, Any]]], n: int) -> dict[str, Any]:
    """Medians per row, and ratios against the fastest peer, the memmap gather, naive zarr."""
    rows: dict[str, dict[str, Any]] = {}
    for label, runs in trials.items():
        good = [t for t in runs if "error" not in t]
        if not good:
            rows[label] = {"error": runs[0]["error"] if runs else "not run"}
            continue
        rows[label] = {
            "samples_per_s": median(rate(t) for t in good),
            "epoch2_per_s": median(t["samples"][1] / t["seconds"][1] for t in good),
            "quality": median(statistics.fmean(t["quality"]) for t in good),
            "complete": all(all(t["complete"]) for t in good),
            "reshuffled": all(t["reshuffled"] for t in good),
            "peak_pss_mib": median(t["peak_pss"] / 2**20 for t in good),
            "base_pss_mib": median(t["base_pss"] / 2**20 for t in good),
        }
    ran = [p for p in PEERS if "samples_per_s" in rows.get(p, {})]
    best = max(ran, key=lambda p: rows[p]["samples_per_s"]) if ran else None
    baselines = {"best peer": best, "memmap": "memmap gather", "naive": "naive zarr"}
    for label, row in rows.items():
        if "error" in row:
            continue
        for name, base in baselines.items():
            if base is None or "error" in rows.get(base, {"error": 1}):
                continue
            both = [
                (o, t)
                for o, t in zip(trials[label], trials[base], strict=True)
                if "error" not in o and "error" not in t
            ]
            row[f"vs {name}"] = row["samples_per_s"] / rows[base]["samples_per_s"]
            row[f"paired vs {name}"] = paired([o for o, _ in both], [t for _, t in both])
    blocks = n / BLOCK
    uniform = blocks * (1 - (1 - 1 / blocks) ** BATCH)
    return {"rows": rows, "best_peer": best, "uniform_quality": uniform}


def print_table(summary: dict[str, Any]) -> None:
    head = (
        f"{'row':<20}{'samples/s':>10}{'epoch 2':>9}{'quality':>8}{'PSS MiB':>9}{'base':>6}"
        f"{'ok':>4}{'vs peer':>9}{'paired':>7}{'vs mmap':>8}{'paired':>7}{'vs naive':>9}"
        f"{'paired':>7}"
    )
    print(f"\n{head}\n{'-' * len(head)}")
    for label, row in summary["rows"].items():
        if "error" in row:
            print(f"{label:<20}{row['error'].splitlines()[-1][:90]}")
            continue
        ok = "yes" if row["complete"] and row["reshuffled"] else "NO"
        ratios = "".join(
            f"{row[f'vs {b}']:>8.2f}x{row[f'paired vs {b}']:>6.2f}x"
            if f"vs {b}" in row
            else " " * 15
            for b in ("best peer", "memmap", "naive")
        )
        print(
            f"{label:<20}{row['samples_per_s']:>10,.0f}{row['epoch2_per_s']:>9,.0f}"
            f"{row['quality']:>8.1f}{row['peak_pss_mib']:>9.0f}{row['base_pss_mib']:>6.0f}"
            f"{ok:>4}{ratios}"
        )
    print(
        f"\nquality: distinct blocks of {BLOCK} consecutive samples in a batch of {BATCH} "
        f"(uniform: {summary['uniform_quality']:.0f}); ok: every sample once per epoch, a new "
        f"order in epoch 2; PSS: peak of the process and its workers, base: the process before "
        f"iterating; fastest peer: {summary['best_peer']}"
    )
    hub = summary["rows"].get("hubzarr", {})
    if "samples_per_s" in hub:
        wds = summary["rows"].get("webdataset", {}).get("quality", float("nan"))
        remote = summary["rows"].get("hubzarr s3 50 ms", {}).get("epoch2_per_s", float("nan"))
        checks = [
            ("vs fastest peer", hub.get("paired vs best peer", float("nan")), PEER_TARGET),
            ("vs memmap gather", hub.get("paired vs memmap", float("nan")), MEMMAP_TARGET),
            ("vs naive zarr", hub.get("paired vs naive", float("nan")), NAIVE_TARGET),
            ("quality vs webdataset", hub["quality"] / wds, 1.0),
            # Epoch 2 through the proxy reads the cache epoch 1 filled.
            ("s3 at 50 ms, epoch 2 vs local", remote / hub["epoch2_per_s"], REMOTE_TARGET),
        ]
        for name, value, target in checks:
            if math.isnan(value):  # the baseline did not run
                print(f"hubzarr {name}: not measured (target >= {target:g}x)")
                continue
            verdict = "met" if value >= target else "NOT met"
            print(f"hubzarr {name}: {value:.2f}x (target >= {target:g}x): {verdict}")


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    data = Data(work, args.samples)
    rows = loaders(args.buffers)
    if args.rows:
        rows = {k: v for k, v in rows.items() if k in args.rows}
    modules = {needs(label)[0] for label in rows} | {m for m, _ in WRITERS.values()}
    missing = {m: why for m in sorted(modules) if (why := importable(m)) is not None}
    for module, why in missing.items():
        print(f"skipped: {module} not available ({why})", flush=True)
    write_seconds = write_all(data, missing)
    labels = [label for label in rows if needs(label)[0] not in missing]
    trials: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    for repeat in range(args.repeats):
        shift = repeat % len(labels)
        for label in labels[shift:] + labels[:shift]:
            trial = trial_in_process(label, args, work)
            trials[label].append(trial)
            shown = trial.get("error", "").splitlines()[-1:] or [f"{rate(trial):,.0f} samples/s"]
            print(f"repeat {repeat + 1}/{args.repeats} {label}: {shown[0]}", flush=True)
    summary = summarise(trials, args.samples)
    print_table(summary)
    return {
        "args": vars(args),
        "missing": missing,
        "write_seconds": write_seconds,
        "trials": trials,
        **summary,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=50_000, help="images (50,000)")
    parser.add_argument("--repeats", type=int, default=3, help="trials per row (3)")
    parser.add_argument(
        "--buffers", type=float, nargs="*", default=[16, 64, 256, 1024],
        help="hubzarr shuffle buffers in MiB, one row each (16 64 256 1024; none: no rows)",
    )  # fmt: skip
    parser.add_argument("--rows", nargs="+", default=None, help="only these rows (labels)")
    parser.add_argument("--dir", default=None, help="work folder, kept (default: a temp one)")
    parser.add_argument("--quick", action="store_true", help="10,000 samples, 1 repeat")
    parser.add_argument("--trial-timeout", type=float, default=1200, help="s per trial")
    parser.add_argument("--plot", action="store_true", help="then draw loader.png (plots.py)")
    parser.add_argument("--trial", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trial is not None:
        result = run_trial(args.trial, Data(Path(args.dir), args.samples), args.buffers)
        print(json.dumps(result))
        return
    if args.quick:
        args.samples, args.repeats = 10_000, 1
    if args.dir is None:
        with tempfile.TemporaryDirectory() as tmp:
            result = run(args, Path(tmp))
    else:
        Path(args.dir).mkdir(parents=True, exist_ok=True)
        result = run(args, Path(args.dir).resolve())
    record.write("loader", result, PACKAGES, plot=args.plot)


if __name__ == "__main__":
    main()
