"""Bulk computation: hubzarr's reductions against zarr + dask, dask's own std, and the raw
limit of reading and decoding the same chunk files; memory of a mean; LocalCluster vs threads.

One float32 array (``--gb`` GiB, default 1; chunks of 128 x 4096 = 2 MiB; a random walk, so
Blosc lz4 + shuffle compresses it about 1.3x) is stored twice with the same chunks and codec:
in a hubzarr repository (read at its branch head) and in a plain ``zarr.storage.LocalStore``
(format 2). With the page cache warm, each of these is timed ``--repeats`` times, interleaved
(the order rotating every repeat), and the median reported as MB/s of uncompressed data:

- ``hub mean``: ``arr.mean()``, hubzarr's own graph (dask's threaded scheduler);
- ``zarr mean``: ``da.from_zarr(zarr_array).mean().compute()``, zarr 3 with dask;
- ``raw``: the limit of reading and decoding: a pool of as many threads as dask uses reads
  each of hubzarr's chunk files and decodes it with numcodecs into a buffer, nothing else (no
  checksum, no reduction, no dask);
- ``raw + sum``: the same, also summing each decoded chunk in float64 (as hubzarr does, with
  ``einsum``), as a mean must;
- ``hub std``: ``arr.std()`` (one pass of parallel moments in float64);
- ``dask std``: ``da.from_zarr(zarr_array).std().compute()``, dask's std over the same data,
  and ``dask std (hub graph)``, dask's std over ``arr.dask``.

Then the peak resident memory of a process computing ``arr.mean()`` over a ``--mem-gb``
(default 4) GiB array, and the same mean on a ``LocalCluster`` of 2 single-threaded worker
processes against the threaded scheduler.

Usage: ``python benchmarks/bulk.py [--gb 1] [--mem-gb 4] [--repeats 5] [--dir /tmp] [--plot]``.
Results, with every timing, the machine and the command, also go to
``benchmarks/results/bulk.json`` (committed); ``--plot`` then draws ``reads.png`` with
``remote.json``'s local reads (``plots.py``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numcodecs
import numpy as np
import record
import zarr
import zarr.storage

import hubzarr

CODEC = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
COLS = 4096
CHUNK_ROWS = 128  # 128 x 4096 float32 = 2 MiB per chunk
WRITE_ROWS = 8192  # rows generated and written at a time (128 MiB)
PACKAGES = ("hubzarr", "zarr", "dask", "distributed", "numcodecs", "numpy")


def make(root: str, plain: str | None, name: str, gib: float) -> int:
    """Write the random-walk array into hubzarr (and plain zarr); return its row count."""
    rows = int(gib * 2**30) // (COLS * 4)
    rows -= rows % CHUNK_ROWS
    hub = hubzarr.array(
        (rows, COLS), name, dtype="float32", chunks=(CHUNK_ROWS, COLS), compressor=CODEC, root=root
    )
    z = None
    if plain is not None:
        z = zarr.create_array(
            zarr.storage.LocalStore(plain),
            shape=(rows, COLS),
            chunks=(CHUNK_ROWS, COLS),
            dtype="float32",
            zarr_format=2,
            compressors=CODEC,
            filters=None,
            fill_value=0,
        )
    rng = np.random.default_rng(0)
    for start in range(0, rows, WRITE_ROWS):
        n = min(WRITE_ROWS, rows - start)
        block = np.cumsum(rng.standard_normal((n, COLS), dtype=np.float32), axis=1)
        hub[start : start + n] = block
        if z is not None:
            z[start : start + n] = block
    return rows


def chunk_files(root: str, name: str) -> list[Path]:
    """hubzarr's chunk objects of the array (one version, written once each)."""
    files = [p for p in Path(root, name).rglob("*") if p.is_file() and "/data/" in str(p)]
    return sorted(p for p in files if not p.name.startswith("."))


def raw(files: list[Path], threads: int, summing: bool) -> float:
    """Read and decode every chunk file with a thread pool; return the sum (or 0)."""
    size = CHUNK_ROWS * COLS

    def work(paths: list[Path]) -> float:
        out = np.empty(size, dtype=np.float32)
        total = 0.0
        for path in paths:
            with open(path, "rb") as f:
                payload = memoryview(f.read())[8:]  # hubzarr's 8-byte header
            CODEC.decode(payload, out=out)
            if summing:
                total += float(np.einsum("i->", out, dtype=np.float64))  # hubzarr's sum
        return total

    groups = [files[i : i + 16] for i in range(0, len(files), 16)]
    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(work, groups))


def compare(ops: dict[str, Callable[[], Any]], mib: float, repeats: int) -> dict[str, Any]:
    """Time every op ``repeats`` times, interleaved, after one warm-up run each."""
    results = {name: fn() for name, fn in ops.items()}  # warm-up; keep a result to check
    times: dict[str, list[float]] = {name: [] for name in ops}
    names = list(ops)
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            start = time.perf_counter()
            ops[name]()
            times[name].append(time.perf_counter() - start)
    return {
        name: {
            "mbps": mib / statistics.median(t),
            "times": t,
            "result": float(np.real(results[name])),
        }
        for name, t in times.items()
    }


def peak_memory(root: str, name: str) -> dict[str, float]:
    """Peak RSS of a fresh process that computes the array's mean (and of one that only
    opens it)."""
    # VmHWM (the peak RSS of this process image), not ru_maxrss, which Linux carries over
    # from the forking parent.
    script = (
        "import sys, hubzarr\n"
        "def hwm():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'):\n"
        "            return int(line.split()[1])\n"
        "arr = hubzarr.load(sys.argv[2], root=sys.argv[1])\n"
        "arr.shape\n"
        "base = hwm()\n"
        "if sys.argv[3] == 'mean':\n"
        "    arr.mean()\n"
        "print(base, hwm())\n"
    )
    out: dict[str, float] = {}
    for what in ("open", "mean"):
        done = subprocess.run(
            [sys.executable, "-c", script, root, name, what],
            check=True,
            capture_output=True,
            text=True,
        )
        base, peak = (int(v) / 1024 for v in done.stdout.split())
        out[f"{what}_base_mib"], out[f"{what}_peak_mib"] = base, peak
    return out


def cluster_vs_threads(arr: hubzarr.HubArray, mib: float, repeats: int) -> dict[str, Any]:
    """The same mean on a 2-process LocalCluster and on the threaded scheduler."""
    from distributed import Client, LocalCluster

    times: dict[str, list[float]] = {"threads": [], "cluster": []}
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):

        def on_cluster() -> Any:
            with dask.config.set(scheduler=client.get):
                return arr.mean()

        def threaded() -> Any:
            with dask.config.set(scheduler="threads"):
                return arr.mean()

        results = {"cluster": on_cluster(), "threads": threaded()}
        for r in range(repeats):
            for who, fn in [("threads", threaded), ("cluster", on_cluster)][:: 1 if r % 2 else -1]:
                start = time.perf_counter()
                fn()
                times[who].append(time.perf_counter() - start)
    return {
        who: {"mbps": mib / statistics.median(t), "times": t, "result": float(results[who])}
        for who, t in times.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gb", type=float, default=1.0, help="GiB of the compared array")
    parser.add_argument("--mem-gb", type=float, default=4.0, help="GiB of the memory test")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where the temporary data goes")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-cluster", action="store_true")
    parser.add_argument("--plot", action="store_true", help="then draw reads.png (plots.py)")
    args = parser.parse_args()

    threads = os.cpu_count() or 1
    report: dict[str, Any] = {"args": vars(args), "threads": threads}
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="hubzarr-bulk-") as tmp:
        root, plain = f"{tmp}/hub", f"{tmp}/plain.zarr"
        start = time.perf_counter()
        rows = make(root, plain, "bench/big", args.gb)
        mib = rows * COLS * 4 / 2**20
        print(f"wrote {mib:.0f} MiB twice in {time.perf_counter() - start:.0f} s", flush=True)
        arr = hubzarr.load("bench/big", root=root, mode="r")
        zarr_array = zarr.open_array(zarr.storage.LocalStore(plain), mode="r")
        files = chunk_files(root, "bench/big")
        assert len(files) == rows // CHUNK_ROWS, len(files)
        ops: dict[str, Callable[[], Any]] = {
            "hub mean": arr.mean,
            "zarr mean": lambda: da.from_zarr(zarr_array).mean().compute(),
            "raw": lambda: raw(files, threads, summing=False),
            "raw + sum": lambda: raw(files, threads, summing=True),
            "hub std": arr.std,
            "dask std": lambda: da.from_zarr(zarr_array).std().compute(),
            "dask std (hub graph)": lambda: arr.dask.std().compute(),
        }
        rows_out = compare(ops, mib, args.repeats)
        report["throughput"] = rows_out
        print(f"\n{mib:.0f} MiB float32, Blosc lz4, {threads} threads; median of {args.repeats}")
        print(f"{'':24} {'MB/s':>8}")
        for name, row in rows_out.items():
            print(f"{name:24} {row['mbps']:8.0f}")

        def ratio(a: str, b: str) -> tuple[float, float]:
            """Throughput of ``a`` over ``b``: ratio of medians, and median of the ratios
            within each repeat (which cancels the shared machine's drift better)."""
            times_a, times_b = rows_out[a]["times"], rows_out[b]["times"]
            paired = statistics.median(tb / ta for ta, tb in zip(times_a, times_b, strict=True))
            return float(rows_out[a]["mbps"] / rows_out[b]["mbps"]), float(paired)

        checks = {
            "hub mean / zarr mean (target >= 1.9)": ratio("hub mean", "zarr mean"),
            "hub mean / raw (target >= 0.85)": ratio("hub mean", "raw"),
            "hub mean / raw + sum": ratio("hub mean", "raw + sum"),
            "hub std / dask std (target >= 2)": ratio("hub std", "dask std"),
            "hub std / dask std (hub graph)": ratio("hub std", "dask std (hub graph)"),
        }
        report["ratios"] = checks
        print(f"{'':40} {'ratio':>6} {'paired':>7}")
        for label, (value, paired) in checks.items():
            print(f"{label:40} {value:6.2f} {paired:7.2f}")
        means = {n: r["result"] for n, r in rows_out.items() if "mean" in n}
        print("means agree:", means)

        if not args.skip_cluster:
            cluster = cluster_vs_threads(arr, mib, args.repeats)
            report["cluster"] = cluster
            print(
                f"\nmean on a 2-process LocalCluster: {cluster['cluster']['mbps']:.0f} MB/s; "
                f"threaded scheduler: {cluster['threads']['mbps']:.0f} MB/s; "
                f"cluster/threads {cluster['cluster']['mbps'] / cluster['threads']['mbps']:.2f}"
            )

        if not args.skip_memory:
            for path in (plain,):
                subprocess.run(["rm", "-rf", path], check=True)
            start = time.perf_counter()
            make(root, None, "bench/mem", args.mem_gb)
            print(f"\nwrote {args.mem_gb:g} GiB in {time.perf_counter() - start:.0f} s", flush=True)
            memory = peak_memory(root, "bench/mem")
            report["memory"] = {"gib": args.mem_gb, **memory}
            print(
                f"peak RSS of a mean over {args.mem_gb:g} GiB: {memory['mean_peak_mib']:.0f} MiB "
                f"(a process that only opens the array: {memory['open_peak_mib']:.0f} MiB; "
                "target < 1024)"
            )
    record.write("bulk", report, PACKAGES, plot=args.plot)


if __name__ == "__main__":
    main()
