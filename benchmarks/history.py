"""History (issue 16): a diff of two versions that differ in one chunk, a commit after
changing one chunk against a tag after changing one chunk, and a merge of two branches that
each changed 10 chunks, in arrays of 100 and of 100,000 chunks.

Two uint8 arrays with one-element chunks (100 and 100,000 elements) are written in full (every
chunk stored) and tagged once. Then, ``--repeats`` times, alternating between the two arrays:

- change one chunk and ``hub.commit`` (timed), change one chunk and ``hub.tag`` (timed);
- ``hub.diff`` of the last two commits (one chunk apart), timed in a new ``Hub`` each time with
  the process's index shards dropped, so that each diff reads what it needs;
- a branch from the main branch, 10 chunks changed on it and 10 others on main, and
  ``hub.merge`` of it into main (timed).

Medians, and the large/small ratios (targets: a diff and a merge within 2x across sizes, a
commit the cost of a tag). Usage: ``python benchmarks/history.py [--repeats 15] [--dir DIR]``; the
100,000 chunk files take most of the minute it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hubzarr
import hubzarr.index as hindex

SIZES = (100, 100_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--dir", default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        work = Path(args.dir or stack.enter_context(tempfile.TemporaryDirectory()))
        root = str(work / f"history-{int(time.time())}")
        hub = hubzarr.Hub(root)
        for n in SIZES:
            arr = hub.array((n,), f"bench/h{n}", chunks=(1,), dtype="uint8")
            arr[:] = np.full(n, 1, dtype="uint8")
            hub.tag(f"bench/h{n}", "v0")
        times: dict[str, dict[int, list[float]]] = {
            k: {n: [] for n in SIZES} for k in ("commit", "tag", "diff", "merge")
        }
        for i in range(args.repeats):
            for n in SIZES if i % 2 == 0 else SIZES[::-1]:
                name = f"bench/h{n}"
                arr = hub.load_array(name)
                arr[(3 * i) % n] = i % 250 + 2
                start = time.perf_counter()
                first = hub.commit(name, f"c{i}")
                times["commit"][n].append(time.perf_counter() - start)
                arr[(3 * i + 1) % n] = i % 250 + 2
                start = time.perf_counter()
                hub.tag(name, f"t{i}")
                times["tag"][n].append(time.perf_counter() - start)
                second = hub.log(f"{name}:t{i}")[0].id
                hindex.SHARDS.clear()
                fresh = hubzarr.Hub(root)
                start = time.perf_counter()
                found = fresh.diff(f"{name}:{first}", second)
                times["diff"][n].append(time.perf_counter() - start)
                assert len(found.nodes) == 1 and len(found.nodes[0].changed) == 1, found
                hub.branch(name, f"s{i}")
                side = hub.load_array(f"{name}:s{i}")
                arr = hub.load_array(name)
                for j in range(10):
                    side[(7 * i + 2 * j) % n] = j + 3
                    arr[(7 * i + 2 * j + 1) % n] = j + 3
                start = time.perf_counter()
                hub.merge(name, f"s{i}")
                times["merge"][n].append(time.perf_counter() - start)
        print(f"\n{len(SIZES)} arrays, one-element chunks, median of {args.repeats}, in ms")
        print("| operation | 100 chunks | 100,000 chunks | ratio |")
        print("|---|---|---|---|")
        for kind, by_size in times.items():
            small, large = (statistics.median(by_size[n]) for n in SIZES)
            print(f"| {kind} | {1000 * small:.1f} | {1000 * large:.1f} | {large / small:.2f}x |")
        for n in SIZES:
            ratio = statistics.median(times["commit"][n]) / statistics.median(times["tag"][n])
            print(f"commit / tag at {n:,} chunks: {ratio:.2f}x")


if __name__ == "__main__":
    main()
