"""Benchmark ``hub cp`` imports against the plain loops a user would write.

Part 1, a folder of images: ``--images`` small PNGs (``--side`` x ``--side`` RGB, in two class
folders) imported with ``hub.copy(folder, name)``, against a plain loop that decodes each file
with Pillow and stacks them (``np.stack``), and the same loop followed by a write to a plain zarr
(format 2) store with the same chunks and codec.

Part 2, an HDF5 dataset: a float32 dataset of ``--mb`` MiB (a random walk along each row, HDF5
chunks of 64 x 2048, gzip level 4) imported with ``hub.copy(file, name)``, against reading it
whole with h5py (``ds[:]``) and writing that to a plain zarr store with the chunks and codec
hubzarr chose.

Each contender runs once untimed (page cache, imports), then ``--repeats`` times, interleaved
(the order alternating every repeat); reported: the median seconds, and the peak of memory
allocated through Python and numpy (``tracemalloc``) during one extra run of each, apart from
the timed runs (tracing slows them down).

Usage: ``python benchmarks/imports.py [--images 2000] [--side 64] [--mb 200] [--repeats 5]
[--dir /tmp]``. Needs ``hubzarr[hdf5,images]``.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numcodecs
import numpy as np
import zarr
import zarr.storage
from PIL import Image

import hubzarr

CODEC = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)


def make_images(folder: Path, n: int, side: int) -> list[Path]:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:side, 0:side]
    files = []
    for i in range(n):
        base = ((x * 3 + y * 2 + i) % 256).astype(np.uint8)
        noise = rng.integers(0, 30, base.shape, dtype=np.uint8)
        pixels = np.stack([base, base[::-1], base // 2 + noise], axis=-1)
        path = folder / ("ab"[i % 2]) / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
        files.append(path)
    return sorted(files, key=lambda p: (p.parent.name, p.name))


def make_hdf5(path: Path, mb: int) -> None:
    cols = 8192
    rows = mb * 2**20 // (cols * 4)
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        ds = f.create_dataset(
            "x", (rows, cols), dtype="f4", chunks=(64, 2048), compression="gzip",
            compression_opts=4,
        )  # fmt: skip
        for lo in range(0, rows, 256):
            n = min(256, rows - lo)
            ds[lo : lo + n] = np.cumsum(rng.standard_normal((n, cols), dtype="f4"), axis=1)


def plain_zarr(folder: Path, data: np.ndarray, chunks: tuple[int, ...]) -> None:
    store = zarr.storage.LocalStore(folder)
    arr = zarr.create_array(
        store, shape=data.shape, chunks=chunks, dtype=data.dtype, compressors=CODEC,
        zarr_format=2, overwrite=True,
    )  # fmt: skip
    arr[...] = data


def measure(contenders: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    for fn in contenders.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - start)
    return times


def peak_mb(fn: Callable[[], Any]) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def report(title: str, contenders: dict[str, Callable[[], Any]], repeats: int) -> None:
    times = measure(contenders, repeats)
    peaks = {name: peak_mb(fn) for name, fn in contenders.items()}
    width = 5 * repeats
    print(f"\n{title}")
    print(f"{'':36} {'median s':>9} {'peak MiB':>9}  {'runs (s)':<{width}}")
    for name, ts in times.items():
        runs = " ".join(f"{t:.2f}" for t in ts)
        print(f"{name:36} {statistics.median(ts):9.2f} {peaks[name]:9.0f}  {runs}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        hub = hubzarr.Hub(str(work / "hub"))
        counter = itertools.count()

        def fresh() -> str:
            return f"bench/import{next(counter)}"

        files = make_images(work / "images", args.images, args.side)
        chunks = hubzarr.imports.open_images(work / "images").arrays[0].chunks

        def pillow_stack() -> np.ndarray:
            out = []
            for path in files:
                with Image.open(path) as im:
                    out.append(np.asarray(im.convert("RGB")))
            return np.stack(out)

        mib = len(files) * args.side**2 * 3 / 2**20
        report(
            f"{args.images} PNGs of {args.side}x{args.side} RGB ({mib:.0f} MiB)",
            {
                "hub.copy(folder)": lambda: hub.copy(str(work / "images"), fresh()),
                "Pillow decode + np.stack": pillow_stack,
                "Pillow decode + np.stack + zarr": lambda: plain_zarr(
                    work / "plain-images.zarr", pillow_stack(), chunks
                ),
            },
            args.repeats,
        )

        make_hdf5(work / "data.h5", args.mb)
        with hubzarr.imports.open_hdf5(work / "data.h5") as source:
            (array,) = source.arrays
            h5_chunks = array.chunks

        def h5_read() -> np.ndarray:
            with h5py.File(work / "data.h5", "r") as f:
                return np.asarray(f["x"][:])

        report(
            f"HDF5 float32, {args.mb} MiB, chunks (64, 2048), gzip 4 (zarr chunks {h5_chunks})",
            {
                "hub.copy(file.h5)": lambda: hub.copy(str(work / "data.h5"), fresh()),
                "h5py ds[:]": h5_read,
                "h5py ds[:] + zarr write": lambda: plain_zarr(
                    work / "plain-h5.zarr", h5_read(), h5_chunks
                ),
            },
            args.repeats,
        )


if __name__ == "__main__":
    main()
