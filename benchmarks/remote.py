"""Benchmark hubzarr's reads where the network or the decoder sets the pace, against plain zarr 3
and TensorStore, side by side in one run (issue 13).

Part 1, **remote**: moto in a process of its own, behind a latency proxy in another
(``tests/faults.py``: every request waits ``--latencies`` ms, 50 and 20 by default, concurrent
requests wait concurrently; ``--bandwidth`` caps response bodies, off by default). Two float32
arrays, a random walk stored with Blosc lz4 (clevel 5, byte shuffle, zarr format 2), one row per
chunk:

- ``small``: ``--small-chunks`` (400) chunks of 64 KiB, shape (400, 16384);
- ``large``: ``--large-chunks`` (20) chunks of 8 MiB, shape (20, 2097152).

Each is written (past the proxy) as a hubzarr repository tagged ``v1``, one never tagged, and a
plain zarr array, and read in full, cold (an array opened afresh, untimed, before every read)
through the proxy by each of :data:`REMOTE_CLIENTS`:

- ``hub tag``: ``Hub("s3://bench/hub", storage_options=...).load_array("bench/NAME-tagged:v1")``;
- ``hub head``: the branch head of the repository never tagged (its chunks are in the head);
- ``hub head@tag``: the branch head of the tagged repository (an empty head over the tag: what
  ``load("bench/NAME-tagged")`` gives after a tag);
- ``zarr``: ``zarr.storage.FsspecStore.from_url("s3://bench/plain/NAME")``, same s3fs options.

Every client reads once first (a warm-up that also checks the values), then ``--repeats`` times,
interleaved, the order rotating every repeat. Reported per client: median chunks/s and MB/s (MiB
of array), ``vs zarr`` (ratio of medians) and ``paired`` (median of the per-repeat ratios to the
zarr read of the same repeat); what the proxy saw during each read: requests per chunk (``req/ch``,
and of them ``GET/ch``, ``404``: all requests answered 404), the most requests in flight at once
(``inflt``); and the median time and request count of the open before it (``open ms``, ``open``).
The issue's targets are checked on ``paired`` under each table.

Part 2, **local**: ``arr[:]`` of a ``--local-gb`` (1) GiB float32 random walk (chunks of 128 x
4096 = 2 MiB, the same codec) on a local root at a tag, against TensorStore (``driver: zarr``)
and plain zarr 3 (``LocalStore``) reading the plain zarr format 2 copy that ``hub.copy`` exports
from it (the same chunk objects, byte for byte). Page cache warm (one read each first), then
``--repeats`` reads each, interleaved; median MB/s, ratios of medians and paired ratios.

Usage::

    python benchmarks/remote.py                            # --repeats 5; about 6 minutes
    python benchmarks/remote.py --repeats 3 --latencies 50 --skip-local   # quicker

Results, with every timing and request count, the machine and the command, go to
``benchmarks/results/remote.json`` (committed); ``--plot`` then draws ``reads.png`` from its
local part and ``bulk.json`` (``plots.py``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import record
import zarr
import zarr.storage

import hubzarr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from faults import Exchange, ProxyProcess, proxy_process
from servers import make_bucket, moto_server_process, s3_options

CODEC = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
BUCKET = "bench"
HUB_ROOT = f"s3://{BUCKET}/hub"
SMALL_COLS = 16384  # 64 KiB of float32 per chunk
LARGE_COLS = 2 * 2**20  # 8 MiB
LOCAL_COLS, LOCAL_CHUNK_ROWS = 4096, 128  # 2 MiB chunks, as benchmarks/bulk.py
PACKAGES = ("hubzarr", "zarr", "tensorstore", "s3fs", "moto", "numcodecs", "numpy")
#: The issue's targets: hub tag's chunks/s over zarr's, per array and latency (ms)...
TAG_TARGETS = {("small", 50): 2.0, ("small", 20): 1.2, ("large", 50): 1.0, ("large", 20): 1.0}
#: ... hub head's over hub tag's, and the local read's over TensorStore's and plain zarr's.
HEAD_TARGET, TENSORSTORE_TARGET, LOCAL_ZARR_TARGET = 0.9, 1.0, 1.5


def random_walk(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """float32 random walk along each row (Blosc lz4 + shuffle compresses it about 1.3-1.6x)."""
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.standard_normal((rows, cols), dtype=np.float32), axis=1, dtype=np.float32)


def median(values: Iterable[float]) -> float:
    return statistics.median(values)


def paired(ours: list[float], theirs: list[float]) -> float:
    """Median of the per-repeat throughput ratios (ours / theirs), from seconds."""
    return median(t / o for o, t in zip(ours, theirs, strict=True))


# ---------------------------------------------------------------------------------- remote


@dataclass(frozen=True)
class Remote:
    """Where a remote client reads: the endpoint (the proxy), the array's name, and a folder
    for local things (cache folders, a local root holding the same repository)."""

    url: str
    name: str
    work: Path

    @property
    def local_root(self) -> str:
        """A local root holding a copy of ``bench/NAME-tagged``."""
        return str(self.work / "local")

    def fresh_cache(self) -> Path:
        """An empty cache folder of its own."""
        return Path(tempfile.mkdtemp(prefix="cold-", dir=self.work))

    @property
    def options(self) -> dict[str, Any]:
        """s3fs options for the endpoint (``max_concurrency=1``: one GET per object)."""
        return s3_options(self.url)


def _hub(remote: Remote, cache: Any = False) -> hubzarr.Hub:
    return hubzarr.Hub(HUB_ROOT, storage_options=remote.options, cache=cache)


def open_hub_tag(remote: Remote) -> Any:
    return _hub(remote).load_array(f"bench/{remote.name}-tagged:v1", mode="r")


def open_hub_head(remote: Remote) -> Any:
    return _hub(remote).load_array(f"bench/{remote.name}", mode="r")


def open_hub_head_at_tag(remote: Remote) -> Any:
    return _hub(remote).load_array(f"bench/{remote.name}-tagged", mode="r")


def open_cache_cold(remote: Remote) -> Any:
    """At the tag, through a local cache folder of its own, empty."""
    return _hub(remote, remote.fresh_cache()).load_array(f"bench/{remote.name}-tagged:v1")


def open_cache_warm(remote: Remote) -> Any:
    """At the tag, through a cache folder the first read filled (a fresh process would also
    find it on disk; this one serves hot objects from its memory tier)."""
    return _hub(remote, remote.work / "warm").load_array(f"bench/{remote.name}-tagged:v1")


def open_local(remote: Remote) -> Any:
    """The same repository on a local root (no network at all)."""
    return hubzarr.Hub(remote.local_root).load_array(f"bench/{remote.name}-tagged:v1")


def open_zarr(remote: Remote) -> Any:
    store = zarr.storage.FsspecStore.from_url(
        f"s3://{BUCKET}/plain/{remote.name}", storage_options=remote.options, read_only=True
    )
    return zarr.open_array(store, mode="r", zarr_format=2)


#: The remote part's clients: label -> opener of the array (each read opens afresh). The
#: issue's next rows go here as openers of their own, e.g. a read through the local cache
#: cold (the cache folder emptied first) and warm (filled by the warm-up), with the same
#: ``Remote``; rows that need several processes (four readers at once, each object fetched
#: about once) get a function beside :func:`remote_block`. "zarr" is the baseline of the ratios.
REMOTE_CLIENTS: dict[str, Callable[[Remote], Any]] = {
    "hub tag": open_hub_tag,
    "hub head": open_hub_head,
    "hub head@tag": open_hub_head_at_tag,
    "cache cold": open_cache_cold,
    "cache warm": open_cache_warm,
    "local root": open_local,
    "zarr": open_zarr,
}


def store_remote(moto_url: str, name: str, data: np.ndarray) -> None:
    """Write ``data`` (one row per chunk) straight to moto: two repositories and plain zarr."""
    options = s3_options(moto_url)
    spec: dict[str, Any] = {"shape": data.shape, "chunks": (1, data.shape[1]), "dtype": "f4"}
    hub = hubzarr.Hub(HUB_ROOT, storage_options=options, cache=False)
    hub.array(name=f"bench/{name}", compressor=CODEC, **spec)[:] = data
    hub.array(name=f"bench/{name}-tagged", compressor=CODEC, **spec)[:] = data
    hub.tag(f"bench/{name}-tagged", "v1")
    store = zarr.storage.FsspecStore.from_url(
        f"s3://{BUCKET}/plain/{name}", storage_options=options
    )
    plain = zarr.create_array(
        store, **spec, fill_value=0, order="C", zarr_format=2, compressors=CODEC, filters=None
    )
    plain[:] = data


def copy_local(moto_url: str, name: str, local_root: str) -> None:
    """The tagged repository, copied to a local root (the warm cache's yardstick)."""
    hub = hubzarr.Hub(HUB_ROOT, storage_options=s3_options(moto_url), cache=False)
    hub.copy(f"bench/{name}-tagged", f"bench/{name}-tagged", to_root=local_root)


def _read_in_process(url: str, name: str, cache: str) -> None:
    _hub(Remote(url, name, Path(cache)), cache).load_array(f"bench/{name}-tagged:v1")[:]


def readers_at_once(proxy: ProxyProcess, remote: Remote, processes: int) -> dict[str, Any]:
    """``processes`` processes read the tag at once through one empty cache folder; how many
    times the server was asked for each chunk."""
    import multiprocessing

    cache = remote.fresh_cache()
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(target=_read_in_process, args=(remote.url, remote.name, str(cache)))
        for _ in range(processes)
    ]
    proxy.take()
    for child in children:
        child.start()
    for child in children:
        child.join()
        assert child.exitcode == 0, "a reader failed"
    exchanges, _ = proxy.take()
    return {"data_gets": sum(1 for e in exchanges if e.method == "GET" and "/data/" in e.path)}


def tally(exchanges: list[Exchange]) -> Counter[str]:
    """Requests by kind (``GET`` of an object, ``LIST``, ``HEAD``, ``other``), all, and 404s."""
    counts: Counter[str] = Counter()
    for e in exchanges:
        kind = "LIST" if e.method == "GET" and "list-type" in e.query else e.method
        counts[kind if kind in ("GET", "HEAD", "LIST") else "other"] += 1
        counts["all"] += 1
        counts["404"] += e.status == 404
    return counts


def cold_read(
    proxy: ProxyProcess, opener: Callable[[Remote], Any], remote: Remote
) -> dict[str, Any]:
    """Open afresh, then read everything; time both, and count what the proxy saw of each."""
    proxy.take()
    start = time.perf_counter()
    arr = opener(remote)
    opened = time.perf_counter() - start
    open_counts = tally(proxy.take()[0])
    start = time.perf_counter()
    out = arr[:]
    seconds = time.perf_counter() - start
    exchanges, in_flight = proxy.take()
    return {
        "out": out,
        "seconds": seconds,
        "open_s": opened,
        "open": open_counts,
        "read": tally(exchanges),
        "in_flight": in_flight,
    }


def remote_block(
    proxy: ProxyProcess,
    name: str,
    latency_ms: int,
    data: np.ndarray,
    repeats: int,
    work: Path,
) -> dict[str, Any]:
    """Time every remote client on one array at one latency; print and return the rows."""
    remote = Remote(proxy.url, name, work)
    clients = list(REMOTE_CLIENTS)
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in clients}
    for client in clients:  # warm-up (connections, code paths), and a check of the values
        run = cold_read(proxy, REMOTE_CLIENTS[client], remote)
        assert np.array_equal(run["out"], data), f"{client} read other values"
    for r in range(repeats):
        for client in clients[r % len(clients) :] + clients[: r % len(clients)]:
            run = cold_read(proxy, REMOTE_CLIENTS[client], remote)
            del run["out"]
            runs[client].append(run)
    nchunks, mib = data.shape[0], data.nbytes / 2**20
    zarr_s = [run["seconds"] for run in runs["zarr"]]
    rows: dict[str, dict[str, Any]] = {}
    for client in clients:
        seconds = [run["seconds"] for run in runs[client]]
        med = median(seconds)
        rows[client] = {
            "chunks_per_s": nchunks / med,
            "mbps": mib / med,
            "vs_zarr": median(zarr_s) / med,
            "paired": paired(seconds, zarr_s),
            "requests_per_chunk": median(run["read"]["all"] for run in runs[client]) / nchunks,
            "gets_per_chunk": median(run["read"]["GET"] for run in runs[client]) / nchunks,
            "read_404": median(run["read"]["404"] for run in runs[client]),
            "max_in_flight": median(run["in_flight"] for run in runs[client]),
            "open_ms": median(run["open_s"] for run in runs[client]) * 1e3,
            "open_requests": median(run["open"]["all"] for run in runs[client]),
            "seconds": seconds,
            "runs": runs[client],
        }
    print(
        f"\n{name} at {latency_ms} ms: float32 {data.shape}, {nchunks} chunks of "
        f"{data[0].nbytes // 1024} KiB ({mib:.0f} MiB), median of {repeats}"
    )
    head = ("chunks/s", "MB/s", "vs zarr", "paired", "req/ch", "GET/ch", "404", "inflt")
    print(f"  {'client':<14}" + "".join(f"{h:>9}" for h in head) + f"{'open ms':>9}{'open':>6}")
    for client, row in rows.items():
        print(
            f"  {client:<14}{row['chunks_per_s']:>9.0f}{row['mbps']:>9.1f}{row['vs_zarr']:>9.2f}"
            f"{row['paired']:>9.2f}{row['requests_per_chunk']:>9.2f}{row['gets_per_chunk']:>9.2f}"
            f"{row['read_404']:>9.0f}{row['max_in_flight']:>9.0f}{row['open_ms']:>9.0f}"
            f"{row['open_requests']:>6.0f}"
        )
    tag, target = rows["hub tag"], TAG_TARGETS.get((name, latency_ms))
    checks = []
    if target is not None:
        met = "met" if tag["paired"] >= target else "NOT met"
        checks.append(f"hub tag >= {target:.1f}x zarr: {met} ({tag['paired']:.2f}x)")
    head_vs_tag = paired(rows["hub head"]["seconds"], tag["seconds"])
    met = "met" if head_vs_tag >= HEAD_TARGET else "NOT met"
    checks.append(f"hub head >= {HEAD_TARGET}x hub tag: {met} ({head_vs_tag:.2f}x)")
    warm = paired(rows["cache warm"]["seconds"], rows["local root"]["seconds"])
    checks.append(
        f"cache warm >= 0.9x local root: {'met' if warm >= 0.9 else 'NOT met'} ({warm:.2f}x)"
    )
    cold = median(rows["cache cold"]["seconds"]) / median(tag["seconds"])
    checks.append(
        f"cache cold <= 1.1x hub tag's time: {'met' if cold <= 1.1 else 'NOT met'} ({cold:.2f}x)"
    )
    together = readers_at_once(proxy, remote, 4)
    per_chunk = together["data_gets"] / nchunks
    checks.append(f"4 processes at once through one cache: {per_chunk:.2f} GETs per chunk")
    print("  " + "\n  ".join(checks))
    return {
        "shape": data.shape,
        "nchunks": nchunks,
        "mib": mib,
        "tag_target": target,
        "head_vs_tag_paired": head_vs_tag,
        "warm_vs_local_paired": warm,
        "cold_cache_time_ratio": cold,
        "four_processes_gets_per_chunk": per_chunk,
        "rows": rows,
    }


def remote_part(args: argparse.Namespace) -> dict[str, Any]:
    arrays = {
        "small": random_walk(args.small_chunks, SMALL_COLS),
        "large": random_walk(args.large_chunks, LARGE_COLS, seed=1),
    }
    out: dict[str, Any] = {"latencies": {}}
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        work = Path(folder)
        with moto_server_process() as moto_url:
            make_bucket(moto_url, BUCKET)
            for name, data in arrays.items():
                store_remote(moto_url, name, data)
                copy_local(moto_url, name, str(work / "local"))
            bandwidth = args.bandwidth * 1e6 if args.bandwidth else None
            print(
                f"moto in a process of its own, behind a proxy in another; bandwidth "
                f"{f'{args.bandwidth:g} MB/s' if bandwidth else 'uncapped'}; zarr "
                f"async.concurrency={zarr.config.get('async.concurrency')}"
            )
            for latency_ms in args.latencies:
                settings = {"latency_s": latency_ms / 1e3, "bandwidth": bandwidth}
                with proxy_process(moto_url, **settings) as proxy:
                    out["latencies"][latency_ms] = {
                        name: remote_block(proxy, name, latency_ms, data, args.repeats, work)
                        for name, data in arrays.items()
                    }
    return out


# ----------------------------------------------------------------------------------- local


def store_local(work: Path, gib: float) -> tuple[hubzarr.Hub, Path, np.ndarray]:
    """Write the array at a tag on a local root and export the tag as plain zarr format 2."""
    rows = int(gib * 2**30) // (LOCAL_COLS * 4)
    rows -= rows % LOCAL_CHUNK_ROWS
    hub = hubzarr.Hub(str(work / "hub"))
    arr = hub.array(
        (rows, LOCAL_COLS),
        name="bench/big",
        dtype="f4",
        chunks=(LOCAL_CHUNK_ROWS, LOCAL_COLS),
        compressor=CODEC,
    )
    data = np.empty((rows, LOCAL_COLS), dtype="f4")
    block = 16 * LOCAL_CHUNK_ROWS
    for start in range(0, rows, block):
        n = min(block, rows - start)
        data[start : start + n] = random_walk(n, LOCAL_COLS, seed=start)
        arr[start : start + n] = data[start : start + n]
    hub.tag("bench/big", "v1")
    plain = work / "plain.zarr"
    hub.copy("bench/big:v1", str(plain))
    return hub, plain, data


def local_part(work: Path, gib: float, repeats: int) -> dict[str, Any]:
    import tensorstore as ts

    hub, plain, data = store_local(work, gib)
    spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": str(plain)}}
    arrays: dict[str, Any] = {
        "hub tag": hub.load_array("bench/big:v1", mode="r"),
        "tensorstore": ts.open(spec, read=True).result(),
        "zarr": zarr.open_array(zarr.storage.LocalStore(plain, read_only=True), mode="r"),
    }
    reads: dict[str, Callable[[], Any]] = {
        "hub tag": lambda: arrays["hub tag"][:],
        "tensorstore": lambda: arrays["tensorstore"].read().result(),
        "zarr": lambda: arrays["zarr"][:],
    }
    for client, read in reads.items():  # the page cache warmed, and the values checked
        assert np.array_equal(read(), data), f"{client} read other values"
    mib = data.nbytes / 2**20
    del data
    clients = list(reads)
    times: dict[str, list[float]] = {c: [] for c in clients}
    for r in range(repeats):
        for client in clients[r % len(clients) :] + clients[: r % len(clients)]:
            start = time.perf_counter()
            reads[client]()
            times[client].append(time.perf_counter() - start)
    hub_s = times["hub tag"]
    rows: dict[str, dict[str, Any]] = {
        client: {
            "mbps": mib / median(times[client]),
            "hub_vs": median(times[client]) / median(hub_s),
            "hub_vs_paired": paired(hub_s, times[client]),
            "seconds": times[client],
        }
        for client in clients
    }
    print(
        f"\nlocal: arr[:] of float32 {arrays['zarr'].shape} ({mib:.0f} MiB), chunks "
        f"{LOCAL_CHUNK_ROWS} x {LOCAL_COLS}, page cache warm, median of {repeats}"
    )
    print(f"  {'reader':<14}{'MB/s':>9}{'hub vs':>9}{'paired':>9}")
    for client, row in rows.items():
        print(f"  {client:<14}{row['mbps']:>9.0f}{row['hub_vs']:>9.2f}{row['hub_vs_paired']:>9.2f}")
    checks = []
    for client, target in (("tensorstore", TENSORSTORE_TARGET), ("zarr", LOCAL_ZARR_TARGET)):
        ratio = rows[client]["hub_vs_paired"]
        met = "met" if ratio >= target else "NOT met"
        checks.append(f"hub tag >= {target}x {client}: {met} ({ratio:.2f}x)")
    print("  " + "; ".join(checks))
    return {"mib": mib, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (default 5)")
    parser.add_argument(
        "--latencies", type=int, nargs="+", default=[50, 20], help="ms per request (50 20)"
    )
    parser.add_argument(
        "--bandwidth", type=float, default=None, help="MB/s cap on responses (default none)"
    )
    parser.add_argument("--small-chunks", type=int, default=400)
    parser.add_argument("--large-chunks", type=int, default=20)
    parser.add_argument("--local-gb", type=float, default=1.0, help="GiB read locally (1)")
    parser.add_argument("--dir", default=None, help="where the local part's data goes")
    parser.add_argument(
        "--concurrency", type=int, default=None, help="zarr's async.concurrency (zarr's: 10)"
    )
    parser.add_argument("--skip-remote", action="store_true")
    parser.add_argument("--skip-local", action="store_true")
    parser.add_argument("--plot", action="store_true", help="then draw reads.png (plots.py)")
    args = parser.parse_args()
    if args.concurrency is not None:  # zarr's (hubzarr's arr[:] of many chunks has its own)
        zarr.config.set({"async.concurrency": args.concurrency})
    result: dict[str, Any] = {
        "args": vars(args),
        "async_concurrency": zarr.config.get("async.concurrency"),
    }
    if not args.skip_remote:
        result["remote"] = remote_part(args)
    if not args.skip_local:
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            result["local"] = local_part(Path(tmp), args.local_gb, args.repeats)
    record.write("remote", result, PACKAGES, plot=args.plot)


if __name__ == "__main__":
    main()
