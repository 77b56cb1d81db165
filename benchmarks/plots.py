"""Plots of the committed benchmark results, for the documentation's benchmark page.

Reads ``benchmarks/results/<script>.json`` (written by the scripts through ``record.py``) and
draws one PNG per plot; each carries in a footer the machine, the date and the command of the
results it shows:

- ``reads.png``: a local read of 1 GiB at a tag against TensorStore and zarr (``remote.json``,
  its local part) and the mean of a 1 GiB array against zarr + dask and the raw read-and-decode
  limit (``bulk.json``), in MB/s;
- ``s3.png``: chunks/s over S3 (moto), hubzarr at a tag and at a branch head against zarr,
  small and large chunks (``s3.json``);
- ``tags.png``: the cost of a tag after changing one chunk against the array's size in chunks,
  hubzarr against Icechunk, log-log (``tags.json``);
- ``loader.png``: samples/s of the PyTorch loaders, hubzarr's rows against each peer
  (``loader.json``).

A plot whose results file is missing is skipped with a message (``reads.png`` draws the half
whose file exists). Usage: ``python benchmarks/plots.py [--results DIR] [--out DIR]``; a
script run with ``--plot`` draws its own plot through :func:`render_script`.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
OUT = HERE / "plots"
#: hubzarr in one colour everywhere; each peer in one of its own.
HUB = "#1b7f5f"
PEERS = {
    "zarr": "#6c8ebf",
    "tensorstore": "#e08a2c",
    "icechunk": "#8e5bb5",
    "raw": "#9a9a9a",
    "deeplake": "#c4515a",
    "mosaic": "#e08a2c",
    "webdataset": "#b7a13a",
    "litdata": "#8e5bb5",
    "naive zarr": "#6c8ebf",
    "memmap gather": "#9a9a9a",
}
#: loader.py's row labels as the plot names them (a ``hubzarr N MiB`` row: its shuffle buffer).
LOADER_NAMES = {
    "hubzarr": "hubzarr (default buffer)",
    "hubzarr 0 workers": "hubzarr, 0 workers",
    "hubzarr s3 50 ms": "hubzarr, S3 at 50 ms",
    "deeplake": "Deep Lake",
    "mosaic": "MosaicML Streaming",
    "webdataset": "WebDataset",
    "litdata": "LitData",
    "naive zarr": "naive zarr (arr[i])",
    "memmap gather": "memmap gather (.npy)",
}
WIDTH_IN, DPI = 8.0, 150  # 1200 px, read at 800 px: 10 pt type shows at about 14 px
plt.rcParams.update(
    {
        "font.size": 10,
        "axes.titlesize": 11,
        "axes.labelsize": 10,
        "axes.spines.top": False,
        "axes.spines.right": False,
    }
)


def load(results_dir: Path, script: str) -> dict[str, Any] | None:
    """The results of ``script``, or None (with a message) if its file is missing."""
    path = results_dir / f"{script}.json"
    if not path.exists():
        print(f"skipped: {path} is missing (run python benchmarks/{script}.py)")
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def provenance(script: str, data: dict[str, Any]) -> str:
    """One footer line: where, when and how ``data`` was measured."""
    m = data.get("machine", {})
    where = f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('os', '?')}, "
    where += f"Python {m.get('python', '?')}"
    return f"{script}.json: {where}; {data.get('date', '?')}; {data.get('command', '?')}"


def footer(fig: Figure, lines: list[str]) -> None:
    """The provenance lines, small, under the plots."""
    wrapped = [textwrap.fill(line, 170, subsequent_indent="    ") for line in lines]
    text = "\n".join(wrapped)
    height = 0.024 * (text.count("\n") + 1) + 0.02
    fig.text(0.01, 0.008, text, fontsize=6.5, color="#555555", ha="left", va="bottom")
    fig.tight_layout(rect=(0, height, 1, 1))


def colour(label: str) -> str:
    """hubzarr's colour for its rows, else the peer's (grey for one not listed)."""
    if label.startswith("hub"):
        return HUB
    return PEERS.get(label, PEERS.get(label.split(" ", 1)[0], "#9a9a9a"))


def bars(ax: Axes, labels: list[str], values: list[float], fmt: str, colours: list[str]) -> None:
    """Vertical bars with their values written on them."""
    drawn = ax.bar(labels, values, color=colours, width=0.65)
    ax.bar_label(drawn, [fmt.format(v) for v in values], padding=2, fontsize=9)
    ax.set_ylim(0, max(values) * 1.15)
    ax.yaxis.set_major_formatter(ticker.StrMethodFormatter("{x:,.0f}"))
    ax.tick_params(axis="x", labelsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


# ------------------------------------------------------------------------------- the plots


def plot_reads(results_dir: Path, out_dir: Path) -> Path | None:
    remote, bulk = load(results_dir, "remote"), load(results_dir, "bulk")
    panels = [p for p in (remote if remote and "local" in remote else None, bulk) if p]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(WIDTH_IN, 4.4), squeeze=False)
    lines, column = [], 0
    if remote and "local" in remote:
        ax, local = axes[0][column], remote["local"]
        names = {"hub tag": "hubzarr\nat a tag", "tensorstore": "TensorStore", "zarr": "zarr 3"}
        values = [local["rows"][k]["mbps"] for k in names]
        bars(ax, list(names.values()), values, "{:,.0f}", [colour(k) for k in names])
        ax.set_title(f"Read {local['mib'] / 1024:g} GiB at a tag\n(local disk, page cache warm)")
        ax.set_ylabel("throughput (MB/s, higher is better)")
        lines.append(provenance("remote", remote))
        column += 1
    if bulk:
        ax, rows = axes[0][column], bulk["throughput"]
        names = {
            "hub mean": "hubzarr\narr.mean()",
            "zarr mean": "zarr 3 + dask\nmean",
            "raw": "raw limit\n(read, decode)",
        }
        values = [rows[k]["mbps"] for k in names]
        bars(ax, list(names.values()), values, "{:,.0f}", [colour(k) for k in names])
        gib = bulk.get("args", {}).get("gb", 1.0)
        ax.set_title(f"Mean of a {gib:g} GiB float32 array\n(local disk, page cache warm)")
        ax.set_ylabel("throughput (MB/s, higher is better)")
        lines.append(provenance("bulk", bulk))
    fig.suptitle("hubzarr reads against zarr and TensorStore", fontsize=12, fontweight="bold")
    footer(fig, lines)
    return save(fig, out_dir / "reads.png")


def plot_s3(results_dir: Path, out_dir: Path) -> Path | None:
    data = load(results_dir, "s3")
    if data is None:
        return None
    names = {"hub tag": "hubzarr\nat a tag", "hub head": "hubzarr\nat a head", "zarr": "zarr 3"}
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH_IN, 4.4))
    for ax, (array, block) in zip(axes, data["throughput"].items(), strict=True):
        rows = {row["client"]: row for row in block["rows"]}
        values = [rows[k]["chunks_per_s"] for k in names]
        hatches = ["", "//", ""]
        bars(ax, list(names.values()), values, "{:,.0f}/s", [colour(k) for k in names])
        for patch, hatch in zip(ax.patches, hatches, strict=True):
            patch.set_hatch(hatch)
            patch.set_edgecolor("white")
        size = block["mib"] * 1024 / block["nchunks"]
        size_text = f"{size / 1024:g} MiB" if size >= 1024 else f"{size:g} KiB"
        ax.set_title(f"{array} chunks: {block['nchunks']} of {size_text}")
        ax.set_ylabel("chunks read per second (higher is better)")
    fig.suptitle(
        "Full reads over S3 (moto, local): hubzarr against zarr", fontsize=12, fontweight="bold"
    )
    footer(fig, [provenance("s3", data)])
    return save(fig, out_dir / "s3.png")


def plot_tags(results_dir: Path, out_dir: Path) -> Path | None:
    data = load(results_dir, "tags")
    if data is None:
        return None
    rows = data["rows"]
    sizes = [row["chunks"] for row in rows]
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 4.8))
    growth = data["largest_over_smallest"]
    # Values above hubzarr's points, below and right of Icechunk's (its line climbs).
    series = (
        ("hubzarr", "hubzarr_tag_ms", "hubzarr hub.tag", HUB, "o", ((0, 7), "center", "bottom")),
        ("icechunk", "icechunk_commit_ms", "Icechunk session.commit", PEERS["icechunk"], "s",
         ((7, -5), "left", "top")),
    )  # fmt: skip
    span = f"{sizes[-1] / sizes[0]:,.0f}x"
    for side, key, label, col, marker, (offset, ha, va) in series:
        values = [row[key] for row in rows]
        text = f"{label} ({span} the chunks: {growth[side]:.2f}x the time)"
        ax.plot(sizes, values, marker=marker, color=col, lw=2, ms=7, label=text)
        for x, y in zip(sizes, values, strict=True):
            ax.annotate(
                f"{y:.1f} ms", (x, y), textcoords="offset points", xytext=offset,
                ha=ha, va=va, fontsize=9, color=col,
            )  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    every = [row[k] for row in rows for k in ("hubzarr_tag_ms", "icechunk_commit_ms")]
    ax.set_ylim(min(every) / 2, max(every) * 2)
    ax.set_xlim(sizes[0] / 1.6, sizes[-1] * 2.5)
    ax.set_xticks(sizes, [f"{n:,}" for n in sizes])
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda y, _: f"{y:g}"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("array size (chunks of one element, log scale)")
    ax.set_ylabel("time to version one changed chunk\n(ms, median, log scale)")
    fig.suptitle(
        "Tag cost against array size: hubzarr against Icechunk", fontsize=12, fontweight="bold"
    )
    ax.grid(which="major", alpha=0.3)
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), fontsize=9, frameon=False)
    footer(fig, [provenance("tags", data)])
    return save(fig, out_dir / "tags.png")


def plot_loader(results_dir: Path, out_dir: Path) -> Path | None:
    data = load(results_dir, "loader")
    if data is None:
        return None
    rows = {k: v for k, v in data["rows"].items() if "samples_per_s" in v}
    failed = sorted(k for k, v in data["rows"].items() if "samples_per_s" not in v)
    order = sorted(rows, key=lambda k: rows[k]["samples_per_s"])
    values = [rows[k]["samples_per_s"] for k in order]
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 1.6 + 0.36 * len(order)))
    names = [
        LOADER_NAMES.get(k, k.replace(" MiB", " MiB buffer").replace(" ", ", ", 1)) for k in order
    ]
    drawn = ax.barh(names, values, color=[colour(k) for k in order], height=0.65)
    ax.bar_label(drawn, [f"{v:,.0f}" for v in values], padding=3, fontsize=9)
    ax.set_xlim(0, max(values) * 1.15)
    ax.xaxis.set_major_formatter(ticker.StrMethodFormatter("{x:,.0f}"))
    ax.set_xlabel("samples per second over two epochs (higher is better)")
    for tick in ax.get_yticklabels():
        if tick.get_text().startswith("hub"):
            tick.set_fontweight("bold")
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    samples = data.get("args", {}).get("samples")
    title = "PyTorch loaders: hubzarr against its peers"
    detail = f"{samples:,} images of 64 x 64 x 3, batches of 256, 2 workers, shuffled, local disk"
    fig.suptitle(title, fontsize=12, fontweight="bold")
    ax.set_title(detail, fontsize=9)
    lines = [provenance("loader", data)]
    if failed:
        lines.append("not run (see loader.json): " + ", ".join(failed))
    footer(fig, lines)
    return save(fig, out_dir / "loader.png")


def save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    print(f"wrote {path}")
    return path


#: Plot -> its function; the scripts whose results each reads.
PLOTS: dict[str, tuple[Callable[[Path, Path], Path | None], tuple[str, ...]]] = {
    "reads": (plot_reads, ("remote", "bulk")),
    "s3": (plot_s3, ("s3",)),
    "tags": (plot_tags, ("tags",)),
    "loader": (plot_loader, ("loader",)),
}


def render_all(results_dir: Path = RESULTS, out_dir: Path = OUT) -> list[Path]:
    """Draw every plot whose results are in ``results_dir`` into ``out_dir``; the PNGs
    written."""
    drawn = (plot(results_dir, out_dir) for plot, _ in PLOTS.values())
    return [path for path in drawn if path is not None]


def render_script(script: str, results_dir: Path = RESULTS, out_dir: Path = OUT) -> list[Path]:
    """Draw the plots that read ``script``'s results (``bulk`` and ``remote``: reads.png)."""
    drawn = (plot(results_dir, out_dir) for plot, scripts in PLOTS.values() if script in scripts)
    return [path for path in drawn if path is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--out", type=Path, default=OUT, help="where the PNGs go")
    args = parser.parse_args()
    render_all(args.results, args.out)


if __name__ == "__main__":
    main()
