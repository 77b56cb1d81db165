"""Benchmark ``hub cp`` between repositories against the tools a user would otherwise reach for,
side by side in one run.

1. **local to local**: a repository of about ``--mb`` MiB stored (incompressible uint8 data in
   4 MiB chunks) with 10 versions (the first holds half the data, each of the 9 tags after it
   rewrites a ninth of the rest), copied with ``hubzarr.copy`` into a new root, against
   ``cp -r`` of the repository's folder. Each repeat copies afresh (both destinations deleted
   after timing), the two interleaved, order alternating. Reported: median MB/s (bytes stored /
   seconds), ``hub/cp`` = ratio of medians and ``paired`` = median of per-repeat ratios.
   Target: ``paired`` >= 0.8.
2. **repeated copy**: the same copy run again into its complete destination (nothing to do):
   median seconds, and its ratio to the first copy's median. Target: < 5%.
3. **to and within S3** (one moto server, in a process of its own as a remote server would
   be, so that its work does not hold this process's interpreter): a repository of ``--objects``
   small chunks (16 KiB each, one version) copied local to S3 and S3 to S3, against fsspec's
   own ``put`` (of the repository's folder) and ``copy`` (of its objects, recursively), which
   move the same objects. Reported: median objects/s and the paired ratio. Target: >= 2x.

Usage: ``python benchmarks/copies.py [--mb 1024] [--objects 2000] [--repeats 3]``. Results, with
every timing, go to ``benchmarks/results/copy-latest.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import s3fs

import hubzarr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from servers import make_bucket, moto_server_process, s3_options

RESULTS = Path(__file__).resolve().parent / "results" / "copy-latest.json"
CHUNK = 4 * 2**20
SMALL = 16 * 2**10


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def make_history(hub: hubzarr.Hub, mb: int) -> None:
    """About ``mb`` MiB stored in 10 versions: half at first, then 9 tags of rewrites."""
    rows = max(2, mb // 2 * 2**20 // CHUNK)  # one chunk per row
    rng = np.random.default_rng(0)
    arr = hub.array((rows, CHUNK), "bench/repo", chunks=(1, CHUNK), dtype="u1", compressor=None)
    for lo in range(0, rows, 16):
        arr[lo : lo + 16] = rng.integers(0, 256, (min(16, rows - lo), CHUNK), dtype="u1")
    hub.tag("bench/repo", "v0")
    per_tag = max(1, rows // 9)
    for t in range(1, 10):
        lo = (t - 1) * per_tag % rows
        arr[lo : lo + per_tag] = rng.integers(0, 256, (min(per_tag, rows - lo), CHUNK), dtype="u1")
        hub.tag("bench/repo", f"v{t}")


def timed(call: Callable[..., Any], *args: Any) -> float:
    start = time.perf_counter()
    call(*args)
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values)


def paired(ours: list[float], theirs: list[float]) -> float:
    """Median of per-repeat throughput ratios (ours / theirs), from seconds."""
    return median([t / o for o, t in zip(ours, theirs, strict=True)])


def local_part(work: Path, mb: int, repeats: int) -> dict[str, Any]:
    source = hubzarr.Hub(str(work / "source"))
    make_history(source, mb)
    folder = work / "source" / "bench" / "repo"
    stored = folder_bytes(folder)
    hub_s: list[float] = []
    cp_s: list[float] = []
    again: list[float] = []

    def hub_cp(target: Path) -> None:
        source.copy("bench/repo", "bench/repo", to_root=str(target))

    def cp_r(target: Path) -> None:
        subprocess.run(["cp", "-r", str(folder), str(target / "bench")], check=True)

    for i in range(repeats + 1):  # the first round warms the page cache and is dropped
        order = ("hub", "cp") if i % 2 else ("cp", "hub")
        for who in order:
            target = work / f"{who}-{i}"
            (target / "bench").mkdir(parents=True)
            t = timed(hub_cp if who == "hub" else cp_r, target)
            if i:
                (hub_s if who == "hub" else cp_s).append(t)
            if who == "hub" and i == repeats:
                again = [timed(hub_cp, target) for _ in range(repeats)]
            shutil.rmtree(target)
    mbs = stored / 2**20
    return {
        "stored_mb": mbs,
        "hub_s": hub_s,
        "cp_s": cp_s,
        "repeat_s": again,
        "hub_mbs": mbs / median(hub_s),
        "cp_mbs": mbs / median(cp_s),
        "ratio": median(cp_s) / median(hub_s),
        "paired": paired(hub_s, cp_s),
        "repeat_fraction": median(again) / median(hub_s),
    }


def s3_part(work: Path, objects: int, repeats: int) -> dict[str, Any]:
    local = hubzarr.Hub(str(work / "small"))
    arr = local.array(
        (objects, SMALL), "bench/small", chunks=(1, SMALL), dtype="u1", compressor=None
    )
    arr[:] = np.random.default_rng(1).integers(0, 256, (objects, SMALL), dtype="u1")
    folder = work / "small" / "bench" / "small"
    count = sum(1 for p in folder.rglob("*") if p.is_file())
    out: dict[str, Any] = {"objects": count}
    with moto_server_process() as url:
        options = s3_options(url)
        options.pop("max_concurrency", None)
        fs = s3fs.S3FileSystem(**options)
        make_bucket(url, "bench")
        seed = hubzarr.Hub("s3://bench/seed", storage_options=options)
        local.copy("bench/small", "bench/small", to_root=seed)
        times: dict[str, list[float]] = {
            k: [] for k in ("hub put", "fsspec put", "hub copy", "fsspec copy")
        }

        def hub_put(run: str) -> None:
            dest = hubzarr.Hub(f"s3://bench/{run}-hub-put", storage_options=options)
            local.copy("bench/small", "bench/small", to_root=dest)

        def fsspec_put(run: str) -> None:
            fs.put(str(folder), f"bench/{run}-fs-put/bench/", recursive=True)

        def hub_copy(run: str) -> None:
            dest = hubzarr.Hub(f"s3://bench/{run}-hub-copy", storage_options=options)
            seed.copy("bench/small", "bench/small", to_root=dest)

        def fsspec_copy(run: str) -> None:
            fs.copy("bench/seed/bench/small", f"bench/{run}-fs-copy/small", recursive=True)

        for i in range(repeats):
            pairs = [("hub put", hub_put), ("fsspec put", fsspec_put)]
            pairs += [("hub copy", hub_copy), ("fsspec copy", fsspec_copy)]
            if i % 2:
                pairs = [pairs[1], pairs[0], pairs[3], pairs[2]]
            for label, call in pairs:
                times[label].append(timed(call, f"r{i}"))
                fs.invalidate_cache()
    out["seconds"] = times
    for kind in ("put", "copy"):
        hub_t, fs_t = times[f"hub {kind}"], times[f"fsspec {kind}"]
        out[kind] = {
            "hub_objects_s": count / median(hub_t),
            "fsspec_objects_s": count / median(fs_t),
            "ratio": median(fs_t) / median(hub_t),
            "paired": paired(hub_t, fs_t),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=1024)
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where the temporary data goes")
    parser.add_argument("--skip-local", action="store_true")
    parser.add_argument("--skip-s3", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": platform.platform(), "args": vars(args)}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        if not args.skip_local:
            local = results["local"] = local_part(work, args.mb, args.repeats)
            print(
                f"local to local, {local['stored_mb']:.0f} MiB in 10 versions, "
                f"median of {args.repeats}:"
            )
            print(f"  hub cp  {local['hub_mbs']:8.0f} MB/s")
            print(f"  cp -r   {local['cp_mbs']:8.0f} MB/s")
            ok = "met" if local["paired"] >= 0.8 else "NOT met"
            print(
                f"  hub/cp {local['ratio']:.2f}, paired {local['paired']:.2f} (target >= 0.8: {ok})"
            )
            frac = local["repeat_fraction"]
            ok = "met" if frac < 0.05 else "NOT met"
            print(
                f"repeated copy of the unchanged repository: {median(local['repeat_s']):.3f} s, "
                f"{frac:.1%} of the first copy (target < 5%: {ok})"
            )
        if not args.skip_s3:
            s3 = results["s3"] = s3_part(work, args.objects, args.repeats)
            print(f"S3 (moto), {s3['objects']} objects of 16 KiB, median of {args.repeats}:")
            for kind, label in (("put", "local to S3"), ("copy", "S3 to S3")):
                r = s3[kind]
                ok = "met" if r["paired"] >= 2 else "NOT met"
                print(
                    f"  {label:12} hub {r['hub_objects_s']:7.0f} objects/s, fsspec "
                    f"{r['fsspec_objects_s']:7.0f} objects/s: {r['ratio']:.2f}x, paired "
                    f"{r['paired']:.2f}x (target >= 2x: {ok})"
                )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
