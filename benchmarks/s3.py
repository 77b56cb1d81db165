"""Benchmark hubzarr against plain zarr 3 over S3 (one moto server started here), side by side.

Two float32 arrays (a random walk, so blosc lz4 + shuffle compresses it about 1.6x) are stored
with the same chunks and codec (Blosc lz4, clevel 5, byte shuffle, zarr format 2, no filters):

- ``small``: shape (200, 16384), chunks (1, 16384): 200 chunks of 64 KiB;
- ``large``: shape (20, 2097152), chunks (1, 2097152): 20 chunks of 8 MiB.

Each is stored in one bucket of one moto server (running in a thread of this process) four
ways, and read in full (``arr[:]``) through five clients:

- ``hub tag``: hubzarr at the tag ``v1`` (reads go straight to the owning version: one GET);
- ``hub head``: hubzarr at the branch head of a repository never tagged (chunks in the head;
  each read call also checks once that the head is not sealed: one GET of the seal record, 404);
- ``hub head@tag``: hubzarr at the branch head of the tagged repository: the head is empty, so
  each chunk is a GET of the head's path (404) and then a GET of the tag's;
- ``zarr``: plain zarr, ``zarr.storage.FsspecStore.from_url`` with the same s3fs options
  (``max_concurrency=1``: s3fs's ``cat_file`` is one GET);
- ``zarr s3fs-default``: the same plain zarr array, with s3fs's own defaults (no
  ``max_concurrency``), where ``cat_file`` sends a HEAD before each GET.

Part 1, throughput: every client reads once (warm-up), then ``--repeats`` times, interleaved
(the order rotating every repeat). Reported: median chunks/s and MB/s (MiB of uncompressed
array per second), ``vs zarr`` = that client's throughput / plain zarr's (ratio of medians),
``paired`` = the median of the per-repeat ratios against the zarr run of the same repeat, and
``cpu ms/chunk``, the process's CPU time per chunk (moto's included: it runs in this process;
steadier than wall time on a busy machine). Targets, checked on ``paired``: ``hub tag`` at
least 2x zarr's chunks/s for small chunks, and no worse (1x) for large.

Part 2, requests: the server's request log (``Server.reset()`` before) for one full read by
each client of an already opened array: GETs of objects (``404``: how many of all requests
were answered 404), HEADs, LISTs (a GET of the bucket) and others; ``/chunk`` = all requests
per chunk, ``open`` = all requests to open the array (``hub.load`` / ``zarr.open_array``).
``hub tag`` must read with exactly one GET per chunk and nothing else (``check``).

Usage: ``python benchmarks/s3.py [--repeats 5] [--concurrency N] [--plot]``. Results, with every
timing, the machine and the command, go to ``benchmarks/results/s3.json`` (committed);
``--plot`` then draws ``s3.png`` (``plots.py``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import record
import zarr
import zarr.storage

import hubzarr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from servers import Server, make_bucket, moto_server, s3_options

CODEC = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
BUCKET = "bench"
ARRAYS = {"small": (200, 16384), "large": (20, 2 * 2**20)}  # rows x cols, one row per chunk
TARGETS = {"small": 2.0, "large": 1.0}  # hub tag's chunks/s over plain zarr's (the issue's)
CLIENTS = ("hub tag", "hub head", "hub head@tag", "zarr", "zarr s3fs-default")
PACKAGES = ("hubzarr", "zarr", "s3fs", "moto", "numcodecs", "numpy")


def make_data(shape: tuple[int, int]) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.cumsum(rng.standard_normal(shape, dtype=np.float32), axis=1, dtype=np.float32)


def setup(url: str, name: str, data: np.ndarray) -> dict[str, Callable[[], Any]]:
    """Store ``data`` four ways; return an opener for each client's array."""
    options = s3_options(url)
    spec: dict[str, Any] = {"shape": data.shape, "chunks": (1, data.shape[1]), "dtype": "f4"}
    # No local cache: every read is measured against S3 (the cache is on by default for
    # remote roots, and would answer every read after the first).
    hub = hubzarr.Hub(f"s3://{BUCKET}/hub", storage_options=options, cache=False)
    hub.array(name=f"bench/{name}", compressor=CODEC, **spec)[:] = data
    hub.array(name=f"bench/{name}-tagged", compressor=CODEC, **spec)[:] = data
    hub.tag(f"bench/{name}-tagged", "v1")
    plain_url = f"s3://{BUCKET}/plain/{name}"
    store = zarr.storage.FsspecStore.from_url(plain_url, storage_options=options)
    plain = zarr.create_array(
        store, **spec, fill_value=0, order="C", zarr_format=2, compressors=CODEC, filters=None
    )
    plain[:] = data
    default = {k: v for k, v in options.items() if k != "max_concurrency"}

    def zarr_open(opts: dict[str, Any]) -> Callable[[], Any]:
        def open_() -> Any:
            store = zarr.storage.FsspecStore.from_url(
                plain_url, storage_options=opts, read_only=True
            )
            return zarr.open_array(store, mode="r", zarr_format=2)

        return open_

    return {
        "hub tag": lambda: hub.load(f"bench/{name}-tagged:v1", mode="r"),
        "hub head": lambda: hub.load(f"bench/{name}", mode="r"),
        "hub head@tag": lambda: hub.load(f"bench/{name}-tagged", mode="r"),
        "zarr": zarr_open(options),
        "zarr s3fs-default": zarr_open(default),
    }


def throughput(name: str, arrays: dict[str, Any], data: np.ndarray, repeats: int) -> dict:
    nchunks, mib = data.shape[0], data.nbytes / 2**20
    for arr in arrays.values():  # warm-up, and a check that every client reads the same bytes
        assert np.array_equal(arr[:], data), "stored data differs from what was written"
    times: dict[str, list[float]] = {c: [] for c in CLIENTS}
    cpu: dict[str, list[float]] = {c: [] for c in CLIENTS}
    for r in range(repeats):
        for client in CLIENTS[r % len(CLIENTS) :] + CLIENTS[: r % len(CLIENTS)]:
            start, start_cpu = time.perf_counter(), time.process_time()
            arrays[client][:]
            times[client].append(time.perf_counter() - start)
            cpu[client].append(time.process_time() - start_cpu)
    print(
        f"\n{name}: float32 {data.shape}, {nchunks} chunks of {data[0].nbytes // 1024} KiB "
        f"({mib:.1f} MiB), median of {repeats}"
    )
    print(
        f"  {'client':<20}{'chunks/s':>10}{'MB/s':>10}{'vs zarr':>10}{'paired':>10}"
        f"{'cpu ms/chunk':>14}"
    )
    rows = []
    zarr_s = times["zarr"]
    for client in CLIENTS:
        med = statistics.median(times[client])
        row = {
            "client": client,
            "chunks_per_s": nchunks / med,
            "mbps": mib / med,
            "ratio": statistics.median(zarr_s) / med,
            "ratio_paired": statistics.median(
                z / t for z, t in zip(zarr_s, times[client], strict=True)
            ),
            "cpu_ms_per_chunk": statistics.median(cpu[client]) * 1e3 / nchunks,
            "times_s": times[client],
            "cpu_s": cpu[client],
        }
        rows.append(row)
        print(
            f"  {client:<20}{row['chunks_per_s']:>10.0f}{row['mbps']:>10.1f}"
            f"{row['ratio']:>10.2f}{row['ratio_paired']:>10.2f}{row['cpu_ms_per_chunk']:>14.2f}"
        )
    target = TARGETS[name]
    tag, default = rows[CLIENTS.index("hub tag")], rows[CLIENTS.index("zarr s3fs-default")]
    met = "met" if tag["ratio_paired"] >= target else "NOT met"
    print(
        f"  target hub tag >= {target:.2f}x zarr: {met} (paired {tag['ratio_paired']:.2f}x); "
        f"hub tag vs zarr s3fs-default: {tag['chunks_per_s'] / default['chunks_per_s']:.2f}x"
    )
    return {"shape": data.shape, "nchunks": nchunks, "mib": mib, "target": target, "rows": rows}


def tally(server: Server, fn: Callable[[], Any]) -> tuple[Any, Counter[str]]:
    """Run ``fn``; count the requests the server saw, by kind (a bucket GET is a LIST)."""
    server.reset()
    out = fn()
    counts: Counter[str] = Counter()
    for r in server.requests:
        kind = "LIST" if r.method == "GET" and "list-type" in r.query else r.method
        counts[kind if kind in ("GET", "HEAD", "LIST") else "other"] += 1
        counts["404"] += r.status == 404
    return out, counts


def requests(server: Server, openers: dict[str, dict[str, Callable[[], Any]]]) -> list[dict]:
    print("\nRequests seen by the server for one full read of an opened array, and to open it")
    cols = ("GET", "404", "HEAD", "LIST", "other")
    head = "".join(f"{c:>6}" for c in cols) + f"{'/chunk':>8}{'open':>6}"
    print(f"  {'array':<7}{'client':<20}{head}  check")
    rows = []
    for name, clients in openers.items():
        nchunks = ARRAYS[name][0]
        for client, opener in clients.items():
            arr, opened = tally(server, opener)
            _, read = tally(server, lambda arr=arr: arr[:])
            total = read.total() - read["404"]
            check = ""
            if client == "hub tag":
                ok = read["GET"] == total == nchunks and read["404"] == 0
                check = "ok: one GET per chunk" if ok else "FAIL: not one GET per chunk"
            counts = "".join(f"{read[c]:>6}" for c in cols)
            line = f"{total / nchunks:>8.2f}{opened.total() - opened['404']:>6}  {check}"
            print(f"  {name:<7}{client:<20}{counts}{line}".rstrip())
            rows.append({"array": name, "client": client, "read": read, "open": opened})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (default 5)")
    parser.add_argument(
        "--concurrency", type=int, default=None, help="zarr's async.concurrency (default: zarr's)"
    )
    parser.add_argument("--plot", action="store_true", help="then draw s3.png (plots.py)")
    args = parser.parse_args()
    if args.concurrency is not None:
        zarr.config.set({"async.concurrency": args.concurrency})
    result: dict[str, Any] = {
        "args": vars(args),
        "async_concurrency": zarr.config.get("async.concurrency"),
        "throughput": {},
    }
    with moto_server() as server:
        make_bucket(server.url, BUCKET)
        openers, data = {}, {}
        for name, shape in ARRAYS.items():
            data[name] = make_data(shape)
            openers[name] = setup(server.url, name, data[name])
        print(
            f"S3: moto at {server.url} (in this process), blosc lz4/5 shuffle, zarr format 2, "
            f"zarr async.concurrency={result['async_concurrency']}"
        )
        for name in ARRAYS:
            arrays = {c: opener() for c, opener in openers[name].items()}
            result["throughput"][name] = throughput(name, arrays, data[name], args.repeats)
        result["requests"] = requests(server, openers)
    record.write("s3", result, PACKAGES, plot=args.plot)


if __name__ == "__main__":
    main()
