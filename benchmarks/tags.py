"""Tag cost against array size: hubzarr's ``hub.tag`` against Icechunk's ``session.commit``,
each after changing one chunk of a 1-d array of N one-element chunks (issue 17).

For each N of ``--sizes`` (10^2, 10^3, 10^4, 10^5), a uint8 array of shape (N,) and chunks (1,)
is written in full (non-zero, so all N chunks are stored) and versioned once, twice over:

- ``hubzarr``: ``hubzarr.Hub(root)`` on a local root in a temporary folder, the array
  ``bench/tagsN`` (Blosc lz4, as ``run.py``), tagged ``base``;
- ``icechunk``: an Icechunk repository on local storage (``icechunk.local_filesystem_storage``),
  the zarr 3 array ``tagsN`` created through ``session.store`` (zarr's default codecs),
  committed once.

Then ``--repeats`` rounds. In each, for every size (the order of the sizes rotating every
round) and for both (the order alternating): change one chunk, then time ``hub.tag(name, ...)``
or ``session.commit(...)``. Icechunk's one-chunk change is made in a new writable session on
``main`` (a session commits once), opened untimed; hubzarr's through the array opened at
setup, whose writes after a tag open the new head, as ``run.py``'s tag benchmark does. The
one-chunk writes are timed as well (``write``, not compared). Reported: the median ms per size,
``hub/ice`` (hubzarr's median time over Icechunk's: below 1 = hubzarr faster) and each side's
ratio of its median at the largest size to that at the smallest (about 1: the cost does not
grow with the array).

Icechunk keeps chunks this small inline in its manifest (up to 512 bytes by default), so its
commit rewrites a manifest of N references; hubzarr's tag writes the index shard of the
changed key and the version's root. Neither writes N objects per version.

Usage: ``python benchmarks/tags.py [--sizes 100 1000 10000 100000] [--repeats 21] [--dir DIR]
[--plot]``; about 3 minutes, most of it writing the 10^5 chunks twice. Results, with every
timing, go to ``benchmarks/results/tags.json``; ``--plot`` then draws ``tags.png``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import icechunk
import numcodecs
import numpy as np
import record
import zarr

import hubzarr

CODEC = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
SIDES = ("hubzarr", "icechunk")
PACKAGES = ("hubzarr", "icechunk", "zarr", "numcodecs", "numpy")


class HubSide:
    """hubzarr: one repository on a local root, one array per size."""

    def __init__(self, root: Path) -> None:
        self.hub = hubzarr.Hub(str(root))
        self.arrays: dict[int, Any] = {}

    def setup(self, n: int) -> None:
        name = f"bench/tags{n}"
        arr = self.hub.array((n,), name, dtype="uint8", chunks=(1,), compressor=CODEC)
        arr[:] = np.ones(n, np.uint8)
        self.hub.tag(name, "base")
        self.arrays[n] = arr

    def change(self, n: int, index: int, value: int, label: str) -> tuple[float, float]:
        """Change one chunk and tag; the seconds of each."""
        start = time.perf_counter()
        self.arrays[n][index] = value
        wrote = time.perf_counter()
        self.hub.tag(f"bench/tags{n}", label)
        return wrote - start, time.perf_counter() - wrote


class IcechunkSide:
    """Icechunk: one repository on local storage, one array per size."""

    def __init__(self, path: Path) -> None:
        icechunk.set_logs_filter("error")  # it warns that local storage has no commit locks
        storage = icechunk.local_filesystem_storage(str(path))
        self.repo = icechunk.Repository.create(storage)

    def setup(self, n: int) -> None:
        session = self.repo.writable_session("main")
        arr = zarr.create_array(
            session.store, name=f"tags{n}", shape=(n,), chunks=(1,), dtype="uint8", fill_value=0
        )
        arr[:] = np.ones(n, np.uint8)
        session.commit(f"tags{n}: every chunk")

    def change(self, n: int, index: int, value: int, label: str) -> tuple[float, float]:
        """Change one chunk in a new session and commit; the seconds of each."""
        session = self.repo.writable_session("main")
        arr = zarr.open_array(session.store, path=f"tags{n}", mode="r+")
        start = time.perf_counter()
        arr[index] = value
        wrote = time.perf_counter()
        session.commit(label)
        return wrote - start, time.perf_counter() - wrote


def measure(work: Path, sizes: list[int], repeats: int) -> dict[str, Any]:
    sides = {"hubzarr": HubSide(work / "hub"), "icechunk": IcechunkSide(work / "icechunk")}
    setup_s: dict[str, dict[str, float]] = {side: {} for side in SIDES}
    for n in sizes:
        for side, runner in sides.items():
            start = time.perf_counter()
            runner.setup(n)
            setup_s[side][str(n)] = time.perf_counter() - start
            print(f"wrote and versioned {n:,} chunks with {side} in {setup_s[side][str(n)]:.1f} s")
    os.sync()  # the setup's writeback would otherwise land in the first timings
    times = {side: {n: {"write": [], "version": []} for n in sizes} for side in SIDES}
    for r in range(repeats):
        for n in sizes[r % len(sizes) :] + sizes[: r % len(sizes)]:
            index, value = (r * 7919) % n, 2 + r % 250
            for side in SIDES if r % 2 == 0 else SIDES[::-1]:
                write_s, version_s = sides[side].change(n, index, value, f"t{r}")
                times[side][n]["write"].append(write_s)
                times[side][n]["version"].append(version_s)
    rows = []
    for n in sizes:
        med = {side: statistics.median(times[side][n]["version"]) * 1e3 for side in SIDES}
        rows.append(
            {
                "chunks": n,
                "hubzarr_tag_ms": med["hubzarr"],
                "icechunk_commit_ms": med["icechunk"],
                "hub_over_icechunk": med["hubzarr"] / med["icechunk"],
                "hubzarr_write_ms": statistics.median(times["hubzarr"][n]["write"]) * 1e3,
                "icechunk_write_ms": statistics.median(times["icechunk"][n]["write"]) * 1e3,
            }
        )
    growth = {
        side: rows[-1][key] / rows[0][key]
        for side, key in (("hubzarr", "hubzarr_tag_ms"), ("icechunk", "icechunk_commit_ms"))
    }
    print(f"\nA version after changing one chunk (uint8, chunks (1,)), median of {repeats}, in ms")
    head = ("hub tag", "ice commit", "hub/ice", "hub write", "ice write")
    print(f"  {'chunks':>9}" + "".join(f"{h:>12}" for h in head))
    for row in rows:
        print(
            f"  {row['chunks']:>9,}{row['hubzarr_tag_ms']:>12.1f}{row['icechunk_commit_ms']:>12.1f}"
            f"{row['hub_over_icechunk']:>12.2f}{row['hubzarr_write_ms']:>12.1f}"
            f"{row['icechunk_write_ms']:>12.1f}"
        )
    print(
        f"  largest/smallest ({sizes[-1]:,} / {sizes[0]:,} chunks): hubzarr "
        f"{growth['hubzarr']:.2f}x, icechunk {growth['icechunk']:.2f}x"
    )
    return {
        "rows": rows,
        "largest_over_smallest": growth,
        "setup_s": setup_s,
        "times_s": {
            side: {str(n): t for n, t in by_size.items()} for side, by_size in times.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[100, 1_000, 10_000, 100_000],
        help="chunks per array (100 1000 10000 100000)",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=21, help="timed rounds (default 21)")
    parser.add_argument("--dir", default=None, help="folder for the temporary data")
    parser.add_argument("--plot", action="store_true", help="then draw tags.png (plots.py)")
    args = parser.parse_args()
    sizes = sorted(args.sizes)
    with tempfile.TemporaryDirectory(prefix="hubzarr-tags-", dir=args.dir) as folder:
        result = measure(Path(folder), sizes, args.repeats)
    record.write("tags", {"args": vars(args), **result}, PACKAGES, plot=args.plot)


if __name__ == "__main__":
    main()
