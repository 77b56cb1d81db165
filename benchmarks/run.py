"""Benchmark hubzarr against plain zarr 3 on local disk, and tagging cost versus array size.

Part 1, throughput. One float32 array (``--mb`` MiB, default 256; chunks of 128 x 4096 = 2 MiB;
a random walk, so blosc lz4 + shuffle compresses it about 1.6x) is stored twice with the same
chunks and codec: in a hubzarr repository and in a plain ``zarr.storage.LocalStore`` (format 2,
no filters). Full reads (``arr[:]``) and full writes (``arr[:] = data``) are timed:

- ``head``: the branch head right after creation (every chunk lies under the head's prefix);
- ``tag v10``: a read-only tag after ten rounds of "change one chunk, tag" (reads hit the one
  owning version found in the index, with no fall-through);
- ``head@10``: the branch head after those ten tags. Its reads fall through the empty head to
  the ancestors (one failed open per chunk); the write is timed last and fills the head.

The plain zarr array gets the same ten chunk changes, so both hold the same bytes. Each
operation is done once on both arrays before timing (page cache, imports, first-write file
creation), then timed ``--repeats`` times, hubzarr and zarr interleaved within each repeat (the
order alternating every repeat to cancel drift). Reported: median MB/s (MiB of uncompressed
array per second) and ``hub/zarr``, hubzarr's throughput divided by zarr's (1.00 = as fast; the
target is >= 0.95).

Part 2, tagging. Two uint8 arrays with one-element chunks, of 100 and of 100,000 elements, are
written in full (non-zero, so all 100 / 100,000 chunks are stored) and tagged once. Then
``--tags`` times, alternating between the two arrays: change one chunk (timed as ``write``)
and tag (timed as ``tag``). Reported: the medians and the ratio large/small (target: about 1,
as a tag lists only what the head wrote since the previous tag).

Usage: ``python benchmarks/run.py [--mb 256] [--repeats 5] [--tags 15] [--dir /tmp]``. Results
also go to ``benchmarks/results/latest.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import zarr
import zarr.storage

import hubzarr

CODEC = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
COLS = 4096
CHUNK_ROWS = 128  # 128 x 4096 float32 = 2 MiB per chunk
RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(
    op: str, hub_fn: Callable[[], Any], zarr_fn: Callable[[], Any], mib: float, repeats: int
) -> dict[str, Any]:
    """Time ``hub_fn`` and ``zarr_fn`` interleaved; return median MB/s and their ratio."""
    hub_fn()  # warm both equally: page cache, first-write file creation
    zarr_fn()
    times: dict[str, list[float]] = {"hub": [], "zarr": []}
    for r in range(repeats):
        order = [("hub", hub_fn), ("zarr", zarr_fn)]
        for who, fn in order if r % 2 == 0 else order[::-1]:
            times[who].append(timed(fn))
    hub_s, zarr_s = statistics.median(times["hub"]), statistics.median(times["zarr"])
    row = {
        "op": op,
        "hub_mbps": mib / hub_s,
        "zarr_mbps": mib / zarr_s,
        "ratio": zarr_s / hub_s,
        # Each hubzarr run against the zarr run beside it: robust to the machine's drift.
        "ratio_paired": statistics.median(
            z / h for z, h in zip(times["zarr"], times["hub"], strict=True)
        ),
        "hub_s": times["hub"],
        "zarr_s": times["zarr"],
    }
    print(
        f"  {op:<16}{row['hub_mbps']:>10.0f}{row['zarr_mbps']:>10.0f}{row['ratio']:>10.3f}"
        f"{row['ratio_paired']:>10.3f}"
    )
    return row


def throughput(hub: hubzarr.Hub, tmp: Path, mb: int, repeats: int) -> dict[str, Any]:
    rows = mb * 2**20 // (COLS * 4)
    shape, chunks = (rows, COLS), (min(CHUNK_ROWS, rows), COLS)
    nchunks = -(-rows // chunks[0])
    rng = np.random.default_rng(0)
    data = np.cumsum(rng.standard_normal(shape, dtype=np.float32), axis=1, dtype=np.float32)
    mib = data.nbytes / 2**20
    spec: dict[str, Any] = {"shape": shape, "chunks": chunks, "dtype": "float32"}

    name = "bench/big"
    hub.array(name=name, compressor=CODEC, **spec)[:] = data
    plain = zarr.create_array(
        zarr.storage.LocalStore(tmp / "plain.zarr"),
        **spec,
        fill_value=0,
        order="C",
        zarr_format=2,
        compressors=CODEC,
        filters=None,
    )
    plain[:] = data
    os.sync()  # flush the setup writes so their writeback does not land in the timings
    stored = sum(f.stat().st_size for f in (tmp / "plain.zarr").iterdir())
    print(
        f"\nThroughput: {mib:.0f} MiB float32 {shape}, chunks {chunks} "
        f"({data[:1].nbytes * chunks[0] / 2**20:.0f} MiB, {nchunks} chunks), blosc lz4/5 "
        f"shuffle, {data.nbytes / stored:.2f}x compression, median of {repeats}"
    )
    print(f"  {'operation':<16}{'hub MB/s':>10}{'zarr MB/s':>10}{'hub/zarr':>10}{'paired':>10}")

    def reader(arr: Any) -> Callable[[], Any]:
        def read() -> None:
            arr[:]

        return read

    def writer(arr: Any) -> Callable[[], Any]:
        def write() -> None:
            arr[:] = data

        return write

    head = hubzarr.Hub(hub.root).load(name)
    out = [
        compare("read  head", reader(head), reader(plain), mib, repeats),
        compare("write head", writer(head), writer(plain), mib, repeats),
    ]
    for i in range(1, 11):
        lo = (i % nchunks) * chunks[0]
        data[lo : lo + chunks[0]] += 1.0
        head[lo : lo + chunks[0]] = data[lo : lo + chunks[0]]
        plain[lo : lo + chunks[0]] = data[lo : lo + chunks[0]]
        hub.tag(name, f"v{i}")
    tagged, head10 = hub.load(f"{name}:v10", mode="r"), hub.load(name)
    for arr in (tagged, head10, plain):
        assert np.array_equal(arr[:], data), "stored data differs from what was written"
    out += [
        compare("read  tag v10", reader(tagged), reader(plain), mib, repeats),
        compare("read  head@10", reader(head10), reader(plain), mib, repeats),
        compare("write head@10", writer(head10), writer(plain), mib, repeats),
    ]
    return {"mib": mib, "shape": shape, "chunks": chunks, "nchunks": nchunks, "rows": out}


def tagging(hub: hubzarr.Hub, sizes: tuple[int, int], tags: int) -> dict[str, Any]:
    arrays, setup = {}, {}
    for n in sizes:
        name = f"bench/tags{n}"
        arr = hub.array((n,), name, dtype="uint8", chunks=(1,), compressor=CODEC)
        write_s = timed(partial(arr.__setitem__, slice(None), np.ones(n, np.uint8)))
        tag_s = timed(partial(hub.tag, name, "base"))
        arrays[n], setup[n] = (name, arr), {"write_all_s": write_s, "first_tag_s": tag_s}
    os.sync()  # flush the 100,000 setup files: their writeback would slow the first fsyncs
    times: dict[int, dict[str, list[float]]] = {n: {"write": [], "tag": []} for n in sizes}
    for i in range(tags):
        for n in sizes if i % 2 == 0 else sizes[::-1]:
            name, arr = arrays[n]
            idx, value = (i * 7919) % n, 2 + i % 250
            times[n]["write"].append(timed(partial(arr.__setitem__, idx, value)))
            times[n]["tag"].append(timed(partial(hub.tag, name, f"t{i}")))
    med = {n: {k: statistics.median(v) * 1e3 for k, v in times[n].items()} for n in sizes}
    small, large = sizes
    print(f"\nTag after changing one chunk (uint8, chunks (1,)), median of {tags}, in ms")
    print(f"  {'chunks':<16}{'tag':>10}{'1 chunk':>10}{'1st tag':>10}{'all':>10}")
    for n in sizes:
        s = setup[n]
        print(
            f"  {n:<16}{med[n]['tag']:>10.1f}{med[n]['write']:>10.1f}"
            f"{s['first_tag_s'] * 1e3:>10.0f}{s['write_all_s'] * 1e3:>10.0f}"
        )
    ratio = {k: med[large][k] / med[small][k] for k in ("tag", "write")}
    print(f"  {f'{large}/{small}':<16}{ratio['tag']:>10.2f}{ratio['write']:>10.2f}")
    return {
        "sizes": sizes,
        "median_ms": {str(n): med[n] for n in sizes},
        "ratio_large_small": ratio,
        "setup_s": {str(n): setup[n] for n in sizes},
        "times_s": {str(n): times[n] for n in sizes},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mb", type=int, default=256, help="array size in MiB (default 256)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (default 5)")
    parser.add_argument("--tags", type=int, default=15, help="timed tags per array (default 15)")
    parser.add_argument("--chunks", type=int, default=100_000, help="chunks of the large array")
    parser.add_argument("--dir", default=None, help="folder for the temporary data")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-tags", action="store_true")
    args = parser.parse_args()

    result: dict[str, Any] = {
        "versions": {
            "python": platform.python_version(),
            "zarr": zarr.__version__,
            "numcodecs": numcodecs.__version__,
            "numpy": np.__version__,
        },
        "args": vars(args),
    }
    with tempfile.TemporaryDirectory(prefix="hubzarr-bench-", dir=args.dir) as folder:
        tmp = Path(folder)
        hub = hubzarr.Hub(str(tmp / "hub"))
        if not args.skip_throughput:
            result["throughput"] = throughput(hub, tmp, args.mb, args.repeats)
        if not args.skip_tags:
            result["tagging"] = tagging(hub, (100, args.chunks), args.tags)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
