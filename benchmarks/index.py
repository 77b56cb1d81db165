"""Opening a version at 10^3 to 10^8 chunks, tagging after one change, and the index's share of
a full read (issue 15), side by side with the layout 3 and layout 2 indexes and plain zarr.

**Synthetic versions.** This machine cannot write 10^8 chunk files in a benchmark's time, so
the large versions are built through the format: a repository is created with a 1-d int32 array
of N one-element chunks, one chunk (the one read, ``N // 2``) is written for real and tagged
``real``; then that version's index is replaced by one that names all N chunks at that version,
written directly as layout 4 records (:mod:`hubzarr.index`: shards of 8192 keys, named by
the version and a number, and the root listing them as one run), as layout 3 records for the
layout 3 rows (the same shards named by their content, the root listing every name), or, for
the layout 2 rows, as the version's manifest (what layout 2 merges at open). Only the chunk
read exists as an object. The repositories are kept in ``--dir`` and reused.

Rows, each trial in a fresh process (imports untimed), ``--repeats`` trials, medians:

- ``open+read``: ``Hub(root).load_array("bench/nN:real")`` then ``arr[N // 2]``: seconds,
  storage requests (reads, sizes, listings: counted in a second, untimed pass with every cache
  cleared) and the growth of the process's resident memory over the timed pass;
- the same for layout 3 (the smallest and largest sizes), layout 2 (10^3 and 10^5 chunks: at
  10^7 its manifest alone is 100 MB) and for
  plain zarr (``zarr.open_array`` of a format 2 array of the same shape holding that chunk);
- ``tag``: change one chunk at the branch head, then ``hub.tag``, timed, alternating 10^3 and
  10^7 chunks (``--tags`` each);
- ``full read``: ``arr[:]`` of a real array of 10^5 chunks (``--full``) at a tag, layout 4
  against layout 2 (today's index before this one), and the index records read against the
  chunks read.

Usage: ``python benchmarks/index.py [--dir DIR] [--sizes 1000 100000 10000000 100000000]
[--repeats 5]``. Building 10^8 takes a few minutes and about 1 GB in ``--dir``. Results also go
to ``benchmarks/results/index-latest.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the counting storage wrapper

import hubzarr  # noqa: E402
import hubzarr.index as hindex  # noqa: E402
import hubzarr.versions as hversions  # noqa: E402
from hubzarr.names import parse_name  # noqa: E402
from hubzarr.records import LAYOUT, Location, Manifest  # noqa: E402

RESULTS = HERE / "results" / "index-latest.json"
#: A small repository (and zarr array) every trial opens first, untimed: imports, the event
#: loop and zarr's first-call costs are then paid, as in a process that has opened anything.
WARM = 10


def lexicographic(n: int) -> Iterator[str]:
    """``str(i)`` for ``i`` in ``range(n)``, in code point order, without sorting them all."""
    if n <= 0:
        return
    yield "0"
    current = 1
    for _ in range(n - 1):
        yield str(current)
        if current * 10 < n:
            current *= 10
        else:
            while current % 10 == 9 or current + 1 >= n:
                current //= 10
            current += 1


def _name(n: int, layout: int) -> str:
    return {4: f"bench/n{n}", 3: f"bench/h{n}"}.get(layout, f"bench/old{n}")


def build(root: str, n: int, layout: int) -> None:
    """Create ``bench/nN`` (layout 4), ``bench/hN`` (layout 3) or ``bench/oldN`` (layout 2)
    with a synthetic tag
    ``real`` of ``n`` chunks (see the module docstring); nothing if it exists."""
    name = _name(n, layout)
    hub = hubzarr.Hub(root)
    if name in hub.ls("bench/"):
        return
    hversions.LAYOUT = layout
    try:
        arr = hub.array((n,), name, chunks=(1,), dtype="int32")
        arr[n // 2] = 42
        version = hub.tag(name, "real")
    finally:
        hversions.LAYOUT = LAYOUT
    repo = hversions.Repository(hub.storage, parse_name(name, default_user="bench"))
    asyncio.run(_forge(repo, Path(root), version, n, layout))


async def _forge(
    repo: hversions.Repository, folder: Path, version: str, n: int, layout: int
) -> None:
    await repo.open()
    here = Location(version)
    files = repo.files
    if layout == 2:
        real = await repo.read_manifest(version)
        assert isinstance(real, Manifest)
        meta = [k for k in real.written if hindex.is_metadata(k)]
        manifest = Manifest(version, written=tuple(sorted([*meta, *lexicographic(n)])))
        (folder / files.manifest_path(version)).unlink()
        await files.create_record(files.manifest_path(version), manifest.to_dict())
        return
    firsts: list[str] = []
    refs: list[tuple[str, int]] = []
    batch: list[str] = []

    async def flush() -> None:
        shard = hindex.Shard(list(batch), [here], [0], [0])
        record = shard.to_dict()
        # Layout 4 names a shard by its writer and number, layout 3 by its content.
        ref = (version, len(refs)) if layout == 4 else (hindex.shard_name(record), -1)
        name = f"{version}-{ref[1]}" if layout == 4 else ref[0]
        with contextlib.suppress(hubzarr.AlreadyExistsError):
            await files.create_record(files.shard_path(name), record)
        firsts.append(batch[0])
        refs.append(ref)
        batch.clear()

    for key in lexicographic(n):
        batch.append(key)
        if len(batch) == hindex.SHARD_KEYS:
            await flush()
    if batch:
        await flush()
    real = await repo.index_root(version)
    assert real is not None
    root = hindex.IndexRoot.sharded(version, n + len(real.meta), real.meta, firsts, refs)
    (folder / files.index_path(version)).unlink()
    await files.create_record(files.index_path(version), root.to_dict())


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def trial_open(root: str, n: int, kind: str) -> dict[str, Any]:
    """One trial, in this (fresh) process: open and read one chunk, timed; then counted."""
    import zarr
    from counting import counting_hub

    k = n // 2
    if kind == "zarr":
        warm = zarr.storage.LocalStore(str(Path(root).parent / "zarr" / f"n{WARM}"))
        assert zarr.open_array(warm, mode="r")[WARM // 2] == 42  # imports, first-call costs
        path = str(Path(root).parent / "zarr" / f"n{n}")
        before = _rss()
        start = time.perf_counter()
        value = zarr.open_array(zarr.storage.LocalStore(path, read_only=True), mode="r")[k]
        seconds = time.perf_counter() - start
        assert value == 42
        return {"seconds": seconds, "requests": 2, "rss": _rss() - before}
    name = f"{_name(n, int(kind.split()[1]))}:real"
    hub = hubzarr.Hub(root)
    assert hub.load_array(f"{_name(WARM, LAYOUT)}:real")[WARM // 2] == 42  # as zarr's row
    before = _rss()
    start = time.perf_counter()
    value = hub.load_array(name)[k]
    seconds = time.perf_counter() - start
    growth = _rss() - before
    assert value == 42, value
    hindex.SHARDS.clear()
    counted, counter = counting_hub(root)
    assert counted.load_array(name)[k] == 42
    return {"seconds": seconds, "requests": sum(counter.calls.values()), "rss": growth}


def _zarr_reference(root: str, n: int) -> None:
    import zarr

    path = Path(root).parent / "zarr" / f"n{n}"
    if path.exists():
        return
    arr = zarr.create_array(
        zarr.storage.LocalStore(str(path)), shape=(n,), chunks=(1,), dtype="int32", zarr_format=2
    )
    arr[n // 2] = 42


def _run_trial(root: str, n: int, kind: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--trial", kind, str(n), "--root", root],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(HERE.parent)},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def tags(root: str, sizes: list[int], count: int) -> dict[int, list[float]]:
    """Change one chunk, then tag, alternating between ``sizes``: the tags' seconds."""
    hub = hubzarr.Hub(root)
    times: dict[int, list[float]] = {n: [] for n in sizes}
    stamp = int(time.time())
    for i in range(count):
        for n in sizes:
            name = _name(n, LAYOUT)
            hub.load_array(name)[(n // 3 + i) % n] = i + 1
            start = time.perf_counter()
            hub.tag(name, f"t{stamp}-{i}")
            times[n].append(time.perf_counter() - start)
    return times


def full_read(work: Path, elements: int, repeats: int) -> dict[str, Any]:
    """``arr[:]`` of an int32 array of ``elements`` in real chunks of 16, at a tag, layout 4
    against layout 2."""
    from counting import counting_hub

    root = str(work / "full")
    hub = hubzarr.Hub(root)
    data = np.arange(elements, dtype="int32")
    for layout in (4, 2):
        name = f"bench/full{layout}"
        if name not in hub.ls("bench/"):
            hversions.LAYOUT = layout
            try:
                hub.array((elements,), name, chunks=(16,), dtype="int32")[:] = data
                hub.tag(name, "v1")
            finally:
                hversions.LAYOUT = LAYOUT
    seconds: dict[int, list[float]] = {4: [], 2: []}
    for r in range(repeats):
        for layout in (4, 2) if r % 2 == 0 else (2, 4):
            hindex.SHARDS.clear()
            arr = hubzarr.Hub(root).load_array(f"bench/full{layout}:v1")
            start = time.perf_counter()
            got = arr[:]
            seconds[layout].append(time.perf_counter() - start)
            assert got[-1] == elements - 1
    hindex.SHARDS.clear()
    counted, counter = counting_hub(root)
    counted.load_array("bench/full4:v1")[:]
    paths = [p for _, p in counter.paths]
    index = sum("/index/" in p or "/shards/" in p for p in paths)
    data_reads = sum("/data/" in p for p in paths)
    mb = elements * 4 / 2**20
    med = {k: statistics.median(v) for k, v in seconds.items()}
    return {
        "objects": -(-elements // 16),
        "layout 4 MB/s": mb / med[4],
        "layout 2 MB/s": mb / med[2],
        "ratio": med[2] / med[4],
        "paired": statistics.median(b / a for a, b in zip(seconds[4], seconds[2], strict=True)),
        "index requests": index,
        "chunk requests": data_reads,
    }


def _report_opens(rows: dict[str, list[dict[str, Any]]], repeats: int) -> dict[str, Any]:
    """Print the table of opens; return its medians by row."""
    print(f"\n{platform.node()}, {time.strftime('%Y-%m-%d')}, repeats {repeats}")
    print("| open a tag + read one chunk | chunks | ms | requests | memory growth MiB |")
    print("|---|---|---|---|---|")
    summary: dict[str, Any] = {}
    for label, trials in rows.items():
        kind, n = label.rsplit(" ", 1)
        ms = 1000 * statistics.median(t["seconds"] for t in trials)
        req = statistics.median(t["requests"] for t in trials)
        mib = statistics.median(t["rss"] for t in trials) / 2**20
        summary[label] = {"ms": ms, "requests": req, "rss_mib": mib, "trials": trials}
        print(f"| {kind} | {int(n):,} | {ms:.1f} | {req:.0f} | {mib:.1f} |")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default=None, help="work folder, kept (default: a temp one)")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[10**3, 10**5, 10**7, 10**8], help="chunks"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tags", type=int, default=7, help="tags per size (7)")
    parser.add_argument("--full", type=int, default=100_000 * 16, help="elements of full read")
    parser.add_argument("--trial", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--root", default=None, help=argparse.SUPPRESS)
    parser.add_argument("n", nargs="?", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trial:
        print(json.dumps(trial_open(args.root, args.n, args.trial)))
        return
    with contextlib.ExitStack() as stack:
        work = Path(args.dir or stack.enter_context(tempfile.TemporaryDirectory()))
        root = str(work / "hub")
        old_sizes = [n for n in args.sizes if n <= 10**5]
        hashed_sizes = sorted({min(args.sizes), max(args.sizes)})
        for n in args.sizes:
            start = time.perf_counter()
            build(root, n, LAYOUT)
            _zarr_reference(root, n)
            print(f"built {n:,} chunks in {time.perf_counter() - start:.1f} s", flush=True)
        for n in hashed_sizes:
            build(root, n, 3)
        for n in old_sizes:
            build(root, n, 2)
        build(root, WARM, LAYOUT)
        _zarr_reference(root, WARM)
        rows: dict[str, list[dict[str, Any]]] = {}
        kinds = [(n, "layout 4") for n in args.sizes] + [(n, "layout 3") for n in hashed_sizes]
        kinds += [(n, "layout 2") for n in old_sizes]
        kinds += [(n, "zarr") for n in args.sizes]
        for r in range(args.repeats):
            for n, kind in kinds[r % len(kinds) :] + kinds[: r % len(kinds)]:
                rows.setdefault(f"{kind} {n}", []).append(_run_trial(root, n, kind))
        summary = _report_opens(rows, args.repeats)
        small, large = min(args.sizes), max(args.sizes)
        for layout in (4, 3):
            ratio = (
                summary[f"layout {layout} {large}"]["ms"]
                / summary[f"layout {layout} {small}"]["ms"]
            )
            print(
                f"\nlayout {layout} at {large:,} / at {small:,}: {ratio:.2f}x (target: at most 2x)"
            )
        tag_sizes = [n for n in (10**3, 10**7) if n in args.sizes]
        tag_sizes = tag_sizes if len(tag_sizes) == 2 else [small, large]
        tag_times = tags(root, tag_sizes, args.tags)
        print("\n| tag after changing one chunk | chunks | ms (median) |")
        print("|---|---|---|")
        for n, seconds in tag_times.items():
            print(f"| layout 4 | {n:,} | {1000 * statistics.median(seconds):.1f} |")
        a, b = (statistics.median(tag_times[n]) for n in tag_sizes[:2])
        print(f"\ntag at {tag_sizes[-1]:,} / at {tag_sizes[0]:,}: {b / a:.2f}x (target: within 2x)")
        full = full_read(work, args.full, args.repeats)
        print(
            f"\nfull read of {full['objects']:,} chunks at a tag: layout 4 "
            f"{full['layout 4 MB/s']:.2f} MB/s, layout 2 {full['layout 2 MB/s']:.2f} MB/s "
            f"(layout 4 / layout 2: {full['ratio']:.2f}x, paired {full['paired']:.2f}x); index "
            f"requests {full['index requests']} for {full['chunk requests']} chunk requests "
            f"({100 * full['index requests'] / full['chunk requests']:.3f}%, target < 1%)"
        )
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(
            json.dumps(
                {"open": summary, "tags": tag_times, "full": full, "date": time.ctime()}, indent=1
            )
        )


if __name__ == "__main__":
    main()
