"""The ``hub`` command line. The only place that prints, and that turns errors into exit codes."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import typer

from hubzarr.errors import FormatError, HubError, InvalidArgumentError, NotFoundError

app = typer.Typer(
    name="hub",
    help="Versioned zarr arrays by name, on any filesystem fsspec reaches.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

if TYPE_CHECKING:
    from hubzarr.config import Settings
    from hubzarr.groups import HubGroup
    from hubzarr.summaries import RepoSummary
    from hubzarr.versions import LogEntry

F = TypeVar("F", bound=Callable[..., Any])

RootOption = Annotated[
    str | None,
    typer.Option(
        "--root",
        help="Hub root (folder or URL). Default: $HUBZARR_ROOT, the config file, ~/.hubzarr.",
        show_default=False,
    ),
]
NameArgument = Annotated[str, typer.Argument(help="Repository name: user/name[:ref].")]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document instead, for scripts.")
]
AsOfOption = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        help="Read the branch as it was at this time, ISO 8601 with a zone (2026-01-02T15:00Z):"
        " its newest version committed or tagged by then.",
    ),
]


def _handles_errors(command: F) -> F:
    """Print a hubzarr error as one line on stderr and exit with status 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except HubError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _size(nbytes: int) -> str:
    """``nbytes`` as people read it (``3.00 MiB``), as dask's ``format_bytes`` writes it:
    without importing dask, which ``hub ls -l`` would spend most of its time on."""
    for unit, scale in (
        ("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("kiB", 2**10)
    ):  # fmt: skip
        if nbytes >= scale * 0.9:
            return f"{nbytes / scale:.2f} {unit}"
    return f"{nbytes} B"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 'es' if word.endswith('ch') else 's'}"


def _json(document: Any) -> None:
    """Print ``document`` as one JSON document on stdout."""
    typer.echo(json.dumps(document, indent=2))


def _as_of(text: str | None, option: str = "--as-of") -> datetime | None:
    """``--as-of`` (or another time ``option``), parsed (its zone is checked where it is
    used).

    Raises
    ------
    InvalidArgumentError
        If it is not an ISO 8601 time.
    """
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise InvalidArgumentError(
            f"{option} {text!r} is not a time: write ISO 8601 with a zone, as "
            "2026-01-02T15:00Z or 2026-01-02T16:00+01:00"
        ) from None


@contextlib.contextmanager
def _noted() -> Iterator[None]:
    """Print hubzarr's warnings about what was read (an ``--as-of`` in the future) as notes
    on stderr."""
    from hubzarr.errors import AsOfWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AsOfWarning)
        yield
    for warning in caught:
        if issubclass(warning.category, AsOfWarning):
            typer.echo(f"note: {warning.message}", err=True)
        else:
            warnings.showwarning(
                warning.message, warning.category, warning.filename, warning.lineno
            )


def _utc(moment: datetime) -> str:
    """An aware UTC time in ISO 8601, ``Z`` for the zone (``2025-01-02T03:04:05.678000Z``)."""
    return moment.isoformat().replace("+00:00", "Z")


def _rows(rows: list[tuple[str, ...]], *, indent: int = 0, first: int = 0) -> None:
    """Print ``rows`` as a table: columns aligned (the first at least ``first`` wide), no
    borders, no wrapping (so that a script can read each line), no trailing spaces."""
    from rich.console import Console
    from rich.table import Table

    table = Table.grid(padding=(0, 2 if indent else 1), pad_edge=False)
    for i in range(len(rows[0]) if rows else 0):
        table.add_column(no_wrap=True, overflow="ignore", min_width=first if i == 0 else None)
    for row in rows:
        table.add_row(*row)
    console = Console(width=100_000, highlight=False, markup=False, emoji=False)
    with console.capture() as captured:
        console.print(table)
    for line in captured.get().splitlines():
        typer.echo(" " * indent + line.rstrip())


#: The width of the column of names in ``hub info`` and ``hub configure --show``.
_KEY_WIDTH = 12


def _version_callback(value: bool) -> None:
    if value:
        import hubzarr

        typer.echo(f"hubzarr {hubzarr.__version__}")
        raise typer.Exit


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Show the version."
        ),
    ] = False,
) -> None:
    """Versioned zarr arrays by name, on any filesystem fsspec reaches."""


@app.command()
@_handles_errors
def demo(
    root: RootOption = None,
    samples: Annotated[int, typer.Option(help="Samples in the demo array.", min=1)] = 100,
) -> None:
    """Run the hubzarr story at a small size and print what it did."""
    import numpy as np

    from hubzarr.api import Hub
    from hubzarr.arrays import HubArray

    hub = Hub(root)
    name = "demo/bigarray"
    typer.echo(f"hub root: {hub.root}")
    if name in hub.ls("demo/"):
        hub.delete(name)
        typer.echo(f"deleted the previous run's {name}")

    start = time.perf_counter()
    big = hub.array((samples, 512, 512, 3), name=f"{name}:v0", dtype="uint8")
    took = (time.perf_counter() - start) * 1000
    typer.echo(f"created {big.name}: shape {big.shape}, chunks {big.chunks} ({took:.0f} ms)")

    image = np.random.default_rng(0).integers(0, 256, size=(512, 512, 3), dtype=np.uint8)
    big[0, :, :, :] = image
    typer.echo(f"wrote big[0] ({_size(image.nbytes)}); nothing else to call")

    again = hub.load(f"{name}:v0")
    assert isinstance(again, HubArray)
    mean = again[0:10, 100:200, 100:200].mean()
    typer.echo(f"loaded again: again[0:10, 100:200, 100:200].mean() = {mean:.4f}")

    version = hub.tag(f"{name}:v0", "v1", message="first image")
    typer.echo(f"tagged {name}:v0 as v1 (version {version}); no chunk copied")

    big[0] = 255 - image
    v0, v1 = hub.load(f"{name}:v0"), hub.load(f"{name}:v1")
    assert isinstance(v0, HubArray) and isinstance(v1, HubArray)
    v0_first, v1_first = v0[0], v1[0]
    typer.echo(
        f"overwrote big[0]: v0 now has the new image ({np.array_equal(v0_first, 255 - image)}), "
        f"v1 still has the old one ({np.array_equal(v1_first, image)})"
    )

    start = time.perf_counter()
    huge = hub.array((10**6, 10**6, 1000), name="demo/petabyte", dtype="uint8", overwrite=True)
    took = (time.perf_counter() - start) * 1000
    typer.echo(f"created demo/petabyte: {_size(huge.nbytes)} in {took:.0f} ms, nothing allocated")

    typer.echo(f"history of {name}:")
    for entry in hub.log(f"{name}:v0"):
        typer.echo(_log_line(entry))


def _log_line(entry: LogEntry) -> str:
    refs = f" ({', '.join(entry.refs)})" if entry.refs else ""
    state = "" if entry.sealed else " [open head]"
    if entry.merged:
        state += f" [merged {', '.join(entry.merged)}]"
    if entry.expired:
        state += " [expired]"
    message = f"  {entry.message}" if entry.message else ""
    return f"  {entry.id}  {entry.time:%Y-%m-%d %H:%M:%S}Z{refs}{state}{message}"


@app.command("ls")
@_handles_errors
def ls_command(
    prefix: Annotated[str, typer.Argument(help="Only names starting with this.")] = "",
    long: Annotated[
        bool,
        typer.Option("--long", "-l", help="A table: size, versions, last change and refs of each."),
    ] = False,
    as_json: JsonOption = False,
    root: RootOption = None,
) -> None:
    """List the repositories under the hub root.

    With -l, a table: the bytes each stores (what 'hub gc' has yet to free included), its
    versions (branch heads included), when it last changed and its branches and tags.
    """
    from hubzarr.api import Hub

    hub = Hub(root)
    if not long:
        names = hub.ls(prefix)
        if as_json:
            _json(names)
            return
        for name in names:
            typer.echo(name)
        return
    summaries = hub.describe_all(prefix)
    if as_json:
        _json([_summary_document(summary) for summary in summaries])
        return
    if summaries:
        _rows(
            [
                ("name", "size", "versions", "last change", "refs"),
                *(
                    (
                        s.name,
                        _size(s.nbytes),
                        str(s.versions),
                        f"{s.last_change:%Y-%m-%d %H:%M:%S}Z" if s.last_change else "-",
                        ", ".join((*s.branches, *(f"tag: {t}" for t in s.tags))) or "-",
                    )
                    for s in summaries
                ),
            ]
        )


def _summary_document(summary: RepoSummary) -> dict[str, Any]:
    return {
        "name": summary.name,
        "nbytes": summary.nbytes,
        "objects": summary.objects,
        "versions": summary.versions,
        "branches": list(summary.branches),
        "tags": list(summary.tags),
        "last_change": _utc(summary.last_change) if summary.last_change else None,
    }


@app.command("rm")
@_handles_errors
def rm(
    name: Annotated[str, typer.Argument(help="Repository name: user/name, without a ref.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete without asking.")] = False,
    root: RootOption = None,
) -> None:
    """Delete the repository NAME with all its versions, branches and tags.

    Asks first, showing what will be lost; without a terminal to ask in, --yes is needed.

    To delete one tag or branch instead, use 'hub tag -d' or 'hub branch -d'.
    """
    from hubzarr.api import Hub
    from hubzarr.config import resolve_namespace
    from hubzarr.names import parse_name

    hub = Hub(root)
    parsed = parse_name(name, default_user=resolve_namespace())
    if parsed.ref is not None:
        repo, ref = parsed.with_ref(None), parsed.ref
        raise InvalidArgumentError(
            f"hub rm deletes a whole repository and takes a name without a ref, not {name!r}; "
            f"to delete the tag or branch {ref!r} only, run 'hub tag -d {repo} {ref}' or "
            f"'hub branch -d {repo} {ref}'"
        )
    summary = hub.describe(name)
    lost = (
        f"{_plural(summary.versions, 'version')}, {_refs_line(summary)}, "
        f"{_size(summary.nbytes)} in {_plural(summary.objects, 'object')}"
    )
    if not yes:
        if not _stdin_is_tty():
            raise InvalidArgumentError(
                f"not deleting {summary.name} under {hub.root} ({lost}): there is no terminal "
                "to confirm in; pass --yes to delete it"
            )
        question = f"delete {summary.name} under {hub.root}: {lost}? This cannot be undone."
        if not typer.confirm(question, default=False, err=True):
            typer.echo(f"not deleted: {summary.name}", err=True)
            raise typer.Exit(1)
    with _progress(f"deleting {summary.name}", nbytes=False):
        hub.delete(summary.name)
    typer.echo(f"deleted {summary.name} under {hub.root} ({lost})")


def _refs_line(summary: RepoSummary) -> str:
    """``2 branches (dev, main), 1 tag (v1)``."""
    parts = []
    for word, refs in (("branch", summary.branches), ("tag", summary.tags)):
        listed = f" ({', '.join(refs)})" if refs else ""
        parts.append(f"{_plural(len(refs), word)}{listed}")
    return ", ".join(parts)


@app.command()
@_handles_errors
def info(name: NameArgument, as_json: JsonOption = False, root: RootOption = None) -> None:
    """Show an array's ref, version, shape, dtype, chunks and compressor; for a group, each of
    its arrays (with subgroups' arrays) by key."""
    from hubzarr.api import Hub
    from hubzarr.groups import HubGroup

    arr = Hub(root).load(name, mode="r")
    resolved = arr.store.session.pinned
    assert resolved is not None
    document: dict[str, Any] = {
        "name": arr.name,
        "ref": resolved.ref,
        "ref_kind": resolved.kind,
        "version": resolved.version,
        "sealed": resolved.sealed,
    }
    rows = {
        "name": arr.name,
        "ref": f"{resolved.ref} ({resolved.kind})",
        "version": f"{resolved.version} ({'sealed' if resolved.sealed else 'open head'})",
    }
    if isinstance(arr, HubGroup):
        arrays = _group_arrays(arr)
        total = sum(a.nbytes for _, a in arrays)
        if as_json:
            members = [
                {
                    "path": path,
                    "shape": list(a.shape),
                    "dtype": str(a.dtype),
                    "chunks": list(a.chunks),
                    "nbytes": a.nbytes,
                }
                for path, a in arrays
            ]
            _json(document | {"kind": "group", "nbytes": total, "arrays": members})
            return
        count = f"{len(arrays)} array{'' if len(arrays) == 1 else 's'}"
        rows["group"] = f"{count}, {_size(total)}"
        _rows([(f"{key}:", value) for key, value in rows.items()], first=_KEY_WIDTH)
        if arrays:
            _rows(
                [
                    (
                        path,
                        f"shape={tuple(a.shape)}",
                        f"dtype={a.dtype}",
                        f"chunks={tuple(a.chunks)}",
                        f"size={_size(a.nbytes)}",
                    )
                    for path, a in arrays
                ],
                indent=2,
            )
        return
    metadata = arr.zarr.metadata.to_dict()  # the fill value as zarr stores it: JSON
    compressor = metadata.get("compressor")
    if as_json:
        _json(
            document
            | {
                "kind": "array",
                "shape": list(arr.shape),
                "dtype": str(arr.dtype),
                "chunks": list(arr.chunks),
                "nbytes": arr.nbytes,
                "compressor": compressor,
                "fill_value": metadata.get("fill_value"),
            }
        )
        return
    rows |= {
        "shape": str(arr.shape),
        "dtype": str(arr.dtype),
        "chunks": str(arr.chunks),
        "size": _size(arr.nbytes),
        "compressor": str(compressor),
        "fill value": str(arr.zarr.fill_value),
    }
    _rows([(f"{key}:", value) for key, value in rows.items()], first=_KEY_WIDTH)


def _group_arrays(group: HubGroup) -> list[tuple[str, Any]]:
    """``(key, zarr array)`` for every array of ``group`` and its subgroups (xarray's string
    variables too), from the group's consolidated metadata: one read."""
    import zarr

    from hubzarr.metadata import open_zarr_group

    members = open_zarr_group(group.store, group.path).members(max_depth=None)
    return sorted((key, node) for key, node in members if isinstance(node, zarr.Array))


@app.command()
@_handles_errors
def log(
    name: NameArgument,
    count: Annotated[
        int | None, typer.Option("-n", "--max-count", help="Show at most this many versions.")
    ] = None,
    as_of: AsOfOption = None,
    graph: Annotated[
        bool,
        typer.Option("--graph", help="Also the versions merges took in, with lines joining them."),
    ] = False,
    as_json: JsonOption = False,
    root: RootOption = None,
) -> None:
    """Show the versions leading to NAME, newest first."""
    from hubzarr.api import Hub

    with _noted():
        entries = Hub(root).log(name, limit=count, as_of=_as_of(as_of), graph=graph)
    if as_json:
        _json(
            [
                {
                    "id": entry.id,
                    "parent": entry.parent,
                    "time": _utc(entry.time),
                    "message": entry.message,
                    "refs": list(entry.refs),
                    "sealed": entry.sealed,
                    "merged": list(entry.merged),
                    "expired": entry.expired,
                }
                for entry in entries
            ]
        )
        return
    for line in _graph(entries) if graph else map(_log_line, entries):
        typer.echo(line)


def _graph(entries: list[LogEntry]) -> Iterator[str]:
    """The log's lines with a column of history drawn beside each (as ``git log --graph``):
    ``*`` the version, ``|`` a line passing, ``\\`` a merged version's line starting, ``/`` a
    line joining the one it branched from."""
    lanes: list[str] = []  # the version each column waits for

    def row(marks: dict[int, str]) -> str:
        return " ".join(marks.get(i, "|") for i in range(len(lanes)))

    def bend(i: int, mark: str) -> str:
        """Every column's line, and column ``i``'s bent by half a column to the left."""
        cells = [" "] * (2 * len(lanes) - 1)
        cells[::2] = ["|"] * len(lanes)
        cells[2 * i], cells[2 * i - 1] = " ", mark
        return "".join(cells).rstrip()

    for entry in entries:
        if entry.id not in lanes:
            lanes.append(entry.id)
        column = lanes.index(entry.id)
        # Other columns waiting for this version (lines that branched from it) join it.
        for other in [i for i, v in enumerate(lanes) if v == entry.id and i != column][::-1]:
            yield bend(other, "/")
            del lanes[other]
        yield f"{row({column: '*'})} {_log_line(entry)}"
        parents = [p for p in (entry.parent, *entry.merged) if p is not None]
        if not parents:
            del lanes[column]
            continue
        lanes[column] = parents[0]
        for parent in parents[1:]:
            if parent not in lanes:
                lanes.insert(column + 1, parent)
                yield bend(column + 1, "\\")


@app.command()
@_handles_errors
def diff(
    a: Annotated[str, typer.Argument(help="From: user/name[:ref], or a time (with B a name).")],
    b: Annotated[
        str, typer.Argument(help="To: user/name[:ref], a ref or version id of A, or a time.")
    ],
    stat: Annotated[bool, typer.Option("--stat", help="Counts only, a line per node.")] = False,
    as_json: JsonOption = False,
    root: RootOption = None,
) -> None:
    """Show what changed from A to B: each array's and group's metadata (shape, dtype, chunks,
    codec, attributes), and the chunks added (+), changed (~) and deleted (-) as index regions.

    A time (ISO 8601 with a time of day and a zone: 2026-01-02T15:00Z) stands for the other
    side's branch as it was then: 'hub diff 2026-01-02T15:00Z alice/train' shows what changed
    since. Only the index shards the two do not share are read.
    """
    from hubzarr.api import Hub

    a_name, a_when, b_name, b_when = _diff_sides(a, b)
    with _noted():
        found = Hub(root).diff(a_name, b_name, a_as_of=a_when, b_as_of=b_when)
    if as_json:
        _json(_diff_document(found))
        return
    typer.echo(f"{found.a} -> {found.b}")
    if not found:
        typer.echo("no differences")
        return
    for node in found.nodes:
        typer.echo("\n".join(_diff_lines(node, stat=stat)))
    for key in found.other:
        typer.echo(f"{key}: changed (not part of an array or group)")


def _diff_sides(a: str, b: str) -> tuple[str, datetime | None, str, datetime | None]:
    """``hub diff``'s words: names, refs of A's repository, or times (a word with ``:`` and
    no ``/``, which no name or ref is), each time standing for the other side's name."""

    def when(word: str) -> datetime | None:
        return _as_of(word) if ":" in word and "/" not in word else None

    a_when, b_when = when(a), when(b)
    if a_when is not None and b_when is not None:
        raise InvalidArgumentError(
            "give a repository name on at least one side of hub diff, not two times"
        )
    if a_when is not None:
        return b, a_when, b, None
    if b_when is not None:
        return a, None, a, b_when
    return a, None, b, None


def _region(node: Any, coords: tuple[int, ...]) -> str:
    inside = ", ".join(f"{s.start}:{s.stop}" for s in node.region(coords))
    return f"[{inside}]"


def _diff_lines(node: Any, *, stat: bool) -> list[str]:
    """How ``hub diff`` shows one node: a heading, metadata changes, chunk counts, and (unless
    ``stat``) each chunk's region, at most 20 of each kind."""
    where = node.path or "/"
    counts = f"+{len(node.added)} ~{len(node.changed)} -{len(node.deleted)} chunks"
    if stat:
        fields = f" ({', '.join(node.metadata)})" if node.metadata else ""
        return [f"{where}  {node.kind}  {node.status}  {counts}{fields}"]
    lines = [f"{where} ({node.kind}, {node.status})"]
    for name, (old, new) in node.metadata.items():
        lines.append(f"  {name}: {json.dumps(old)} -> {json.dumps(new)}")
    if node.kind == "array":
        lines.append(f"  {counts}")
        for mark, coords in (("+", node.added), ("~", node.changed), ("-", node.deleted)):
            lines += [f"  {mark} {_region(node, c)}" for c in coords[:20]]
            if len(coords) > 20:
                lines.append(f"  {mark} ... and {len(coords) - 20} more")
    return lines


def _diff_document(found: Any) -> dict[str, Any]:
    def regions(node: Any, coords: tuple[tuple[int, ...], ...]) -> list[list[list[int]]]:
        return [[[s.start, s.stop] for s in node.region(c)] for c in coords]

    return {
        "a": found.a,
        "b": found.b,
        "nodes": [
            {
                "path": node.path,
                "kind": node.kind,
                "status": node.status,
                "metadata": {k: list(v) for k, v in node.metadata.items()},
                "added": regions(node, node.added),
                "changed": regions(node, node.changed),
                "deleted": regions(node, node.deleted),
            }
            for node in found.nodes
        ],
        "other": list(found.other),
    }


@app.command()
@_handles_errors
def merge(
    name: NameArgument,
    source: Annotated[str, typer.Argument(help="What to merge: a branch, tag or version id.")],
    into: Annotated[
        str | None, typer.Option("--into", help="The branch to merge into (default: NAME's).")
    ] = None,
    ours: Annotated[
        bool, typer.Option("--ours", help="Settle conflicts with NAME's side.")
    ] = False,
    theirs: Annotated[
        bool, typer.Option("--theirs", help="Settle conflicts with SOURCE's side.")
    ] = False,
    message: Annotated[str | None, typer.Option("--message", "-m", help="A message.")] = None,
    root: RootOption = None,
) -> None:
    """Merge SOURCE into the branch NAME (or --into BRANCH), chunk by chunk, against their
    common ancestor.

    A chunk changed on one side is taken; changed on both to different bytes, it is a
    conflict: nothing changes, and each conflicting array and region is listed, to settle
    with --ours or --theirs.
    """
    from hubzarr.api import Hub

    if ours and theirs:
        raise InvalidArgumentError("give at most one of --ours and --theirs")
    strategy: Literal["ours", "theirs"] | None = "ours" if ours else "theirs" if theirs else None
    target = name if into is None else f"{name.partition(':')[0]}:{into}"
    version = Hub(root).merge(target, source, strategy=strategy, message=message)
    typer.echo(f"merged {source} into {target} (version {version})")


@app.command()
@_handles_errors
def revert(
    name: NameArgument,
    version: Annotated[str, typer.Argument(help="The state to go back to: a version id or ref.")],
    message: Annotated[str | None, typer.Option("--message", "-m", help="A message.")] = None,
    root: RootOption = None,
) -> None:
    """Give the branch NAME a new version equal to an older state VERSION; history is kept."""
    from hubzarr.api import Hub

    made = Hub(root).revert(name, version, message=message)
    typer.echo(f"reverted {name} to {version} (version {made})")


@app.command()
@_handles_errors
def commit(
    name: NameArgument,
    message: Annotated[str | None, typer.Option("--message", "-m", help="A message.")] = None,
    root: RootOption = None,
) -> None:
    """Seal the head of the branch NAME as a version of its history without a name.

    The version is listed by 'hub log' and read as NAME:<version id> or with --as-of; the
    branch goes on in a new head. No chunk is copied.
    """
    from hubzarr.api import Hub

    version, new = Hub(root).commit_state(name, message)
    if new:
        typer.echo(f"committed {name} as version {version}")
    else:
        typer.echo(f"nothing to commit: {name} holds no change since version {version}")


@app.command()
@_handles_errors
def tag(
    name: NameArgument,
    tag: Annotated[str, typer.Argument(help="The tag's name.")],
    message: Annotated[str | None, typer.Option("--message", "-m", help="A message.")] = None,
    delete: Annotated[
        bool, typer.Option("--delete", "-d", help="Delete the tag TAG of NAME instead.")
    ] = False,
    root: RootOption = None,
) -> None:
    """Tag NAME's current state as TAG: an immutable snapshot, no data copied.

    With -d, delete the tag: its data stays until 'hub gc', and the name is never reused.
    """
    from hubzarr.api import Hub

    hub = Hub(root)
    if delete:
        version = hub.delete_tag(name, tag)
        typer.echo(f"deleted tag {tag} of {name} (was version {version}); 'hub gc' frees its data")
        return
    version = hub.tag(name, tag, message=message)
    typer.echo(f"tagged {name} as {tag} (version {version})")


@app.command()
@_handles_errors
def branch(
    name: NameArgument,
    new_branch: Annotated[str, typer.Argument(help="The branch's name.")],
    delete: Annotated[
        bool, typer.Option("--delete", "-d", help="Delete the branch NEW_BRANCH of NAME.")
    ] = False,
    root: RootOption = None,
) -> None:
    """Create a writable branch NEW_BRANCH starting at NAME's current state.

    With -d, delete the branch: its data stays until 'hub gc', and the name is never reused.
    """
    from hubzarr.api import Hub

    if delete:
        head = Hub(root).delete_branch(name, new_branch)
        typer.echo(
            f"deleted branch {new_branch} of {name} (was at {head}); 'hub gc' frees its data"
        )
        return
    head = Hub(root).branch(name, new_branch)
    typer.echo(f"created branch {new_branch} of {name} (head {head})")


def _duration(text: str) -> float:
    """Parse a grace period: seconds, or a number with a unit (30m, 1h, 2d, 1 hour)."""
    from dask.utils import parse_timedelta

    try:
        value = float(parse_timedelta(text.strip()))
    except (ValueError, KeyError, IndexError, TypeError):
        raise typer.BadParameter(
            f"{text!r} is not a duration: give seconds, or a number with s, m, h or d (1h)"
        ) from None
    if not value >= 0 or value == float("inf"):
        raise typer.BadParameter(f"{text!r}: the grace period must be finite and >= 0")
    return value


@app.command()
@_handles_errors
def gc(
    name: Annotated[str, typer.Argument(help="Repository name: user/name.")],
    yes: Annotated[bool, typer.Option("--yes", help="Delete; without it, only report.")] = False,
    grace: Annotated[
        str,
        typer.Option(
            "--grace",
            help="Keep objects and versions younger than this (seconds, or 30m, 1h, 2d).",
        ),
    ] = "1h",
    expire_before: Annotated[
        str | None,
        typer.Option(
            "--expire-before",
            metavar="TIME",
            help="Drop untagged versions sealed before this time (ISO 8601 with a zone), "
            "keeping each branch's state as of then.",
        ),
    ] = None,
    keep_last: Annotated[
        int | None,
        typer.Option(
            "--keep-last",
            metavar="N",
            help="Keep each branch's N newest sealed versions; drop older untagged ones.",
        ),
    ] = None,
    root: RootOption = None,
) -> None:
    """Free the data no branch or tag of NAME reaches (a dry run unless --yes).

    Frees deleted refs' data, rewrites superseded since a tag, and crash leftovers.
    With --expire-before or --keep-last, also drops old untagged versions (hub log still
    lists them, as expired) and frees what only they used.

    Nothing younger than the grace period is touched, so writers at work are safe.
    """
    from hubzarr.api import Hub

    hub, seconds = Hub(root), _duration(grace)
    before = _as_of(expire_before, "--expire-before")
    with _progress(f"collecting {name}" if yes else f"looking through {name}", nbytes=False):
        report = hub.gc(
            name, grace=seconds, dry_run=not yes, expire_before=before, keep_last=keep_last
        )
    verb = "would free" if report.dry_run else "freed"
    expired = ""
    if before is not None or keep_last is not None:
        expiring = _plural(report.expired, "version")
        expired = f", {'would expire' if report.dry_run else 'expired'} {expiring}"
    unreachable = _plural(report.versions, "unreachable version")
    typer.echo(
        f"{name}: {verb} {_plural(report.objects, 'object')} ({_size(report.bytes)}) and "
        f"{unreachable}{expired}; kept {_plural(report.kept_objects, 'object')}"
    )
    if report.dry_run and report.objects:
        typer.echo("dry run: nothing was deleted; run again with --yes to delete")


@app.command()
@_handles_errors
def verify(name: NameArgument, as_of: AsOfOption = None, root: RootOption = None) -> None:
    """Read every object of NAME's version and check it: checksums, metadata, chunks.

    Exits with status 1 if anything is wrong, listing each problem.
    """
    from hubzarr.api import Hub

    hub = Hub(root)  # a refused root is reported before the progress bar starts
    when = _as_of(as_of)
    with _noted(), _progress("verifying", nbytes=False) as update:
        report = hub.verify(name, progress=update, as_of=when)
    for problem in report.problems:
        typer.echo(f"error: {problem.message}", err=True)
    status = "OK" if report.ok else _plural(len(report.problems), "problem")
    typer.echo(
        f"{report.name} (version {report.version}): {_plural(report.objects, 'object')}, "
        f"{_size(report.bytes)} checked: {status}"
    )
    if not report.ok:
        raise typer.Exit(1)


@app.command()
@_handles_errors
def show(
    name: NameArgument,
    index: Annotated[
        str | None,
        typer.Argument(
            help="Samples along the first axis: 5, 0:16, ::100 or 3,7,9 (after '--' if "
            "negative: -- -1). Default: the first 16 (4 volumes).",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="The picture's file (.png). Default: NAME with '/' and ':' as '-', then "
            ".png, in the current folder.",
            show_default=False,
        ),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--key", help="A group's array to draw. Default: images, image, x, or its only one."
        ),
    ] = None,
    labels: Annotated[
        str | None,
        typer.Option(
            "--labels",
            help="A group's array of labels for the captions. Default: labels, label or y, "
            "if it holds one value a sample.",
        ),
    ] = None,
    as_of: AsOfOption = None,
    root: RootOption = None,
) -> None:
    """Draw samples of NAME as one picture: a grid of tiles, each captioned with its index
    (and a group's labels and class names). Needs Pillow, the "images" extra.

    \b
      hub show alice/mnist:v1 -o digits.png        the first 16 of a group's images
      hub show alice/mnist:v1 ::1000               every 1000th
      hub show alice/scans 3 -o scan3.png          slices of one volume
    """
    from hubzarr import show as pictures
    from hubzarr.api import Hub
    from hubzarr.arrays import HubArray

    selection = pictures.parse_index(index) if index is not None else None
    with _noted():
        node = Hub(root).load(name, mode="r", as_of=_as_of(as_of))
    target = output if output is not None else f"{name.replace('/', '-').replace(':', '-')}.png"
    if isinstance(node, HubArray):
        if key is not None or labels is not None:
            raise InvalidArgumentError(
                f"{name} is an array: --key and --labels choose the arrays of a group"
            )
        image = node.show(selection, path=target)
    else:
        image = node.show(selection, key=key, labels=labels, path=target)
    width, height = image.size
    typer.echo(f"wrote {target} ({width}x{height} px, {image.mode})")


@app.command("cp")
@_handles_errors
def cp(
    src: Annotated[str, typer.Argument(help="Where from: a repository or a file.")],
    dst: Annotated[str, typer.Argument(help="Where to: a repository or a file or store.")],
    tag_as: Annotated[
        str | None, typer.Option("--tag", help="Tag the imported repository's state.")
    ] = None,
    from_root: Annotated[
        str | None, typer.Option("--from-root", help="The source repository's root.")
    ] = None,
    to_root: Annotated[
        str | None, typer.Option("--to-root", help="The destination repository's root.")
    ] = None,
    resize: Annotated[
        str | None,
        typer.Option(
            "--resize",
            metavar="HxW",
            help="Resize every image of an imported folder to H x W pixels (and convert "
            "each to the mode most have).",
            show_default=False,
        ),
    ] = None,
    root: RootOption = None,
) -> None:
    """Copy a repository between roots, import a file, folder or store into one, or export a
    version.

    \b
      hub cp alice/x s3://bucket/hub::alice/x      every version, tag and branch;
                                                   again: only what is new
      hub cp alice/x --to-root s3://bucket/hub alice/x      the same
      hub cp alice/x:v1 s3://bucket/hub::alice/x1  only that state (a new repository)
      hub cp ./images.npy alice/images --tag v0    .npy -> an array
      hub cp data.npz alice/data                   .npz -> a group of arrays
      hub cp data.h5 alice/data                    HDF5 -> a group (needs h5py)
      hub cp ./photos alice/photos                 photos/<class>/*.png -> images,
                                                   labels (needs Pillow)
      hub cp ./photos alice/p --resize 224x224     ... of several sizes or modes
      hub cp s3://bucket/d.zarr alice/d            zarr (format 2 or 3) -> a group
      hub cp alice/images:v0 out.zarr              a version -> a plain zarr store
      hub cp alice/images:v0 out.npy               an array -> a .npy file
      hub cp s3://bucket/hub::alice/x:v1 x.zarr    a repository at another root

    \b
    How a word is read (the first line that fits):
      ROOT::NAME                the repository NAME at ROOT (::NAME: default root)
      a URL; /.. ./.. ../.. ~   a file or store
      *.npy *.npz *.zarr *.h5   a file or store
      user/name[:ref]           a repository; if a local file or folder of that
                                name exists too, an error: write ./WORD or ::WORD
    """
    from hubzarr.api import Hub

    size = None
    if resize is not None:
        height, x, width = resize.lower().partition("x")
        if not (x and height.strip().isdigit() and width.strip().isdigit()):
            raise InvalidArgumentError(
                f"--resize takes HEIGHTxWIDTH in pixels, such as 224x224, not {resize!r}"
            )
        size = (int(height), int(width))
    hub = Hub(root)  # a refused root is reported before the progress bar starts
    with _progress("copying", nbytes=True) as update:

        def progress(done: int, total: int, nbytes: int, total_bytes: int) -> None:
            update(nbytes, total_bytes, f"{done}/{total} objects")

        report = hub.copy(
            src,
            dst,
            tag=tag_as,
            resize=size,
            progress=progress,
            from_root=from_root,
            to_root=to_root,
        )
    typer.echo(str(report))


@contextlib.contextmanager
def _progress(label: str, *, nbytes: bool) -> Iterator[Callable[..., None]]:
    """A progress bar on stderr while a long command runs (none unless stderr is a terminal);
    yields ``update(completed, total, description=label)``. Without updates it pulses."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    console = Console(stderr=True)
    columns: list[ProgressColumn] = [TextColumn("{task.description}"), BarColumn()]
    columns += [DownloadColumn(), TransferSpeedColumn()] if nbytes else [MofNCompleteColumn()]
    with Progress(
        *columns,
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(completed: int, total: int, description: str = label) -> None:
            # A total of 0: not known ahead (an export's bytes); the bar then pulses.
            known = total if total > 0 else None
            bar.update(task, completed=completed, total=known, description=description)

        yield update


def _stdin_is_tty() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):  # closed or detached stdin
        return False


def _scrub(message: str, secrets: list[str]) -> str:
    for secret in secrets:
        message = message.replace(secret, "****")
    return message


def _option(value: str | None, current: str | None) -> str | None:
    """A string option: absent keeps the current setting, an empty value clears it."""
    if value is None:
        return current
    return value or None


_NOT_SET = "(not set)"


def _kind(root: str) -> str:
    from hubzarr.config import root_bucket

    location = root_bucket(root)
    return location[0] if location else "other"


def _is_remote(root: str) -> bool:
    return "://" in root and root.split("://", 1)[0].lower() not in ("file", "memory")


def _show_settings(root: str) -> None:
    from hubzarr.config import (
        aws_credentials_path,
        config_path,
        load_settings,
        mask_key_id,
        read_aws_key_id,
        resolve_cache,
        resolve_namespace,
        root_bucket,
    )

    settings = load_settings()
    location = root_bucket(root)
    family = location[0] if location else None
    credentials, key_id, secret = "(not needed)", _NOT_SET, _NOT_SET
    if family == "gs":
        credentials = settings.profile or "(gcsfs default: application default credentials)"
        key_id = secret = "(not used by gs:// roots)"
    elif family == "s3" or settings.profile:
        credentials = str(aws_credentials_path())
        if settings.profile:
            try:
                found, has_secret = read_aws_key_id(settings.profile)
            except HubError:
                key_id = secret = "(the credentials file cannot be read)"
            else:
                if found is None and not has_secret:
                    key_id = f"(no profile {settings.profile!r} with keys in that file)"
                else:
                    key_id = mask_key_id(found) if found else _NOT_SET
                    secret = "****" if has_secret else _NOT_SET
    rows = {
        "config file": str(config_path()),
        "root": root,
        "namespace": resolve_namespace(),
        "endpoint": settings.endpoint_url or _NOT_SET,
        "region": settings.region or _NOT_SET,
        "profile": settings.profile or _NOT_SET,
        "anon": "yes" if settings.anon else "no",
        "credentials": credentials,
        "access key": key_id,
        "secret key": secret,
    }
    cache = resolve_cache()
    if cache.enabled is None:
        use = "for remote roots (s3, gs, http)"
    else:
        use = "for every root" if cache.enabled else "off"
    rows["cache"] = "off" if cache.size_limit == 0 else use
    rows["cache dir"] = str(cache.directory)
    rows["cache size"] = _size(cache.size_limit)
    _rows([(f"{key}:", value) for key, value in rows.items()], first=_KEY_WIDTH)


def _check(root: str, *, create: bool, interactive: bool) -> None:
    """Probe the root; offer to create a missing bucket."""
    from hubzarr.config import create_bucket, probe_root, resolve_storage_options, root_bucket

    options = resolve_storage_options(root, None)
    typer.echo(f"checking {root} ...")
    try:
        probe = probe_root(root, options)
    except NotFoundError:
        location = root_bucket(root)
        if location is None:
            raise
        bucket = location[1]
        if not create and not (
            interactive and typer.confirm(f"the bucket {bucket!r} does not exist; create it?")
        ):
            raise NotFoundError(
                f"the bucket {bucket!r} of the hub root {root} does not exist; create it with "
                "'hub configure --check --create-bucket', or with the provider's tools"
            ) from None
        create_bucket(root, options)
        typer.echo(f"created the bucket {bucket!r}")
        probe = probe_root(root, options)
    typer.echo(f"check passed: wrote, read and deleted {root.rstrip('/')}/{probe}")


def _credential_settings(
    new: Settings,
    *,
    root_given: bool,
    profile: str | None,
    access_key_id: str | None,
    secret_access_key: str | None,
    token: str | None,
    interactive: bool,
    secrets: list[str],
) -> tuple[Settings, tuple[str, str, str] | None]:
    """Settle the credential settings; return them and the AWS key to write (profile, id,
    secret), if any. Prompts for what is missing when interactive."""
    from hubzarr.config import DEFAULT_AWS_PROFILE, check_token_file, root_bucket

    scope = new.root or os.environ.get("HUBZARR_ROOT") or ""
    location = root_bucket(scope)
    family = location[0] if location else None
    keys_given = access_key_id is not None or secret_access_key is not None
    if family != "s3" and keys_given:
        hint = "; for a gs:// root give --token KEY.json" if family == "gs" else ""
        raise InvalidArgumentError(
            "--access-key-id and --secret-access-key are for s3:// roots; set one with "
            f"--root s3://bucket/prefix{hint}"
        )
    if token is not None and family != "gs":
        raise InvalidArgumentError(
            "--token is for gs:// roots; set one with --root gs://bucket/prefix"
        )
    if token is not None and profile is not None:
        raise InvalidArgumentError("give the key file with --token or --profile, not both")
    if new.anon and (keys_given or token):
        raise InvalidArgumentError("--anon uses no credentials: leave out the keys and token")

    if (
        interactive
        and root_given
        and not keys_given
        and token is None
        and profile is None
        and not new.anon
        and not new.profile
    ):
        if family == "s3":
            access_key_id = (
                typer.prompt(
                    "AWS access key id (empty: use the environment or the default profile)",
                    default="",
                    show_default=False,
                )
                or None
            )
        elif family == "gs":
            token = (
                typer.prompt(
                    "service-account JSON key file (empty: application default credentials)",
                    default="",
                    show_default=False,
                )
                or None
            )
    if access_key_id is not None and secret_access_key is None:
        if not interactive:
            raise InvalidArgumentError(
                "--secret-access-key is needed with --access-key-id (run interactively to be "
                "asked for it)"
            )
        secret_access_key = typer.prompt("AWS secret access key", hide_input=True)
        secrets.append(secret_access_key)
    if secret_access_key is not None and access_key_id is None:
        if not interactive:
            raise InvalidArgumentError("--access-key-id is needed with --secret-access-key")
        access_key_id = typer.prompt("AWS access key id")

    aws_key = None
    if access_key_id is not None and secret_access_key is not None:
        name = profile or DEFAULT_AWS_PROFILE
        aws_key = (name, access_key_id.strip(), secret_access_key.strip())
        new = replace(new, profile=name)
    if token == "":
        new = replace(new, profile=None)
    key_file = token if token is not None else (profile if family == "gs" else None)
    if key_file:
        path, loose = check_token_file(key_file)
        if loose:
            typer.echo(
                f"warning: {path} is readable by other users; restrict it with 'chmod 600 {path}'",
                err=True,
            )
        new = replace(new, profile=path)
    return new, aws_key


def _change_settings(
    *,
    root: str | None,
    namespace: str | None,
    endpoint_url: str | None,
    region: str | None,
    profile: str | None,
    anon: bool | None,
    access_key_id: str | None,
    secret_access_key: str | None,
    token: str | None,
    interactive: bool,
    secrets: list[str],
    cache: tuple[bool | None, str | None, str | None] = (None, None, None),
) -> None:
    from hubzarr.config import (
        Settings,
        check_settings,
        load_settings,
        parse_size,
        save_aws_credentials,
        save_settings,
    )
    from hubzarr.storage import check_root

    try:
        current = load_settings()
    except FormatError:
        # With root and namespace given, the old file is not needed: a broken one is replaced.
        if root is None or namespace is None:
            raise
        current = Settings()
    new_root = _option(root, current.root)
    if new_root is not None:
        check_root(new_root)
    if current.root is not None and new_root is not None and _kind(current.root) != _kind(new_root):
        # Another kind of store (S3, GCS, local): the old endpoint, region and profile mean
        # nothing there (a GCS "profile" is a key file).
        current = replace(current, endpoint_url=None, region=None, profile=None, anon=None)
    new = Settings(
        root=new_root,
        namespace=_option(namespace, current.namespace),
        endpoint_url=_option(endpoint_url, current.endpoint_url),
        region=_option(region, current.region),
        profile=_option(profile, current.profile),
        anon=anon if anon is not None else current.anon,
        cache=cache[0] if cache[0] is not None else current.cache,
        cache_dir=_option(cache[1], current.cache_dir),
        cache_size=current.cache_size
        if cache[2] is None
        else parse_size(cache[2], what="--cache-size")
        if cache[2]
        else None,
    )
    new, aws_key = _credential_settings(
        new,
        root_given=root is not None,
        profile=profile,
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        token=token,
        interactive=interactive,
        secrets=secrets,
    )
    check_settings(new)
    if aws_key is not None:
        credentials = save_aws_credentials(*aws_key)
        typer.echo(f"wrote the access key of profile {aws_key[0]!r} to {credentials}")
    path = save_settings(new)
    typer.echo(f"wrote {path}")
    env_root = os.environ.get("HUBZARR_ROOT")
    if root is not None and env_root and env_root != new.root:
        typer.echo(f"note: $HUBZARR_ROOT ({env_root}) overrides the configured root", err=True)


@app.command()
def configure(
    root: Annotated[
        str | None, typer.Option("--root", help="Hub root to use by default.", show_default=False)
    ] = None,
    namespace: Annotated[
        str | None,
        typer.Option("--namespace", help="Namespace of bare names.", show_default=False),
    ] = None,
    endpoint_url: Annotated[
        str | None,
        typer.Option(
            "--endpoint-url",
            help="Endpoint of an S3-compatible service (MinIO, ...) or a GCS emulator.",
            show_default=False,
        ),
    ] = None,
    region: Annotated[
        str | None,
        typer.Option(
            "--region",
            help="S3: the bucket's region. GCS: new buckets' location.",
            show_default=False,
        ),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            help="S3: AWS profile of the credentials (keys given here go under it, default "
            "'hubzarr'). GCS: path of a service-account JSON key file.",
            show_default=False,
        ),
    ] = None,
    anon: Annotated[
        bool | None,
        typer.Option("--anon/--no-anon", help="Public bucket: no credentials.", show_default=False),
    ] = None,
    access_key_id: Annotated[
        str | None,
        typer.Option(
            "--access-key-id",
            help="S3 access key id, written to the AWS credentials file under --profile.",
            show_default=False,
        ),
    ] = None,
    secret_access_key: Annotated[
        str | None,
        typer.Option(
            "--secret-access-key",
            help="S3 secret key, written to the AWS credentials file (asked for if missing).",
            show_default=False,
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help="GCS: path of a service-account JSON key file (it stays where it is).",
            show_default=False,
        ),
    ] = None,
    cache: Annotated[
        bool | None,
        typer.Option(
            "--cache/--no-cache",
            help="Read immutable objects through the local cache for every root, or for none "
            "(default: for remote roots only).",
            show_default=False,
        ),
    ] = None,
    cache_dir: Annotated[
        str | None,
        typer.Option(
            "--cache-dir",
            help="The local cache's folder (default: the user cache folder).",
            show_default=False,
        ),
    ] = None,
    cache_size: Annotated[
        str | None,
        typer.Option(
            "--cache-size",
            help="The local cache's size limit, shared by all processes: bytes, 500M, 10GB, "
            "10GiB (default 10 GiB; 0 caches nothing).",
            show_default=False,
        ),
    ] = None,
    check: Annotated[
        bool | None,
        typer.Option(
            "--check/--no-check",
            help="Write, read and delete a probe object at the root. Default: after a change, "
            "for an object-store root.",
            show_default=False,
        ),
    ] = None,
    create_bucket: Annotated[
        bool,
        typer.Option("--create-bucket", help="Create the root's bucket if it does not exist."),
    ] = False,
    no_input: Annotated[
        bool, typer.Option("--no-input", help="Never prompt (for scripts and CI).")
    ] = False,
    show: Annotated[
        bool, typer.Option("--show", help="Print the settings in effect, secrets masked.")
    ] = False,
) -> None:
    """Set the default hub root, namespace and connection settings, or --show them.

    Point hubzarr at a bucket in one command (add --endpoint-url URL for MinIO and the like):

      hub configure --root s3://bucket/prefix --access-key-id ID --secret-access-key KEY

    Secrets never go into hubzarr's config file: S3 keys go to the AWS credentials file.

    Missing keys are asked for when run in a terminal. An empty value clears a setting.
    """
    from hubzarr.config import resolve_root
    from hubzarr.storage import check_root

    secrets = [s for s in (secret_access_key,) if s]
    changing = any(
        v is not None
        for v in (
            root,
            namespace,
            endpoint_url,
            region,
            profile,
            anon,
            access_key_id,
            secret_access_key,
            token,
            cache,
            cache_dir,
            cache_size,
        )
    )
    if not (changing or show or check):
        typer.echo(
            "nothing to change: pass --root, --namespace, --endpoint-url, --region, --profile, "
            "--anon, --access-key-id/--secret-access-key, --token, --cache/--no-cache, "
            "--cache-dir or --cache-size; or --show, --check",
            err=True,
        )
        raise typer.Exit(2)
    interactive = not no_input and _stdin_is_tty()
    try:
        env_root = os.environ.get("HUBZARR_ROOT")
        if env_root:
            # Refused before anything is written, and never echoed in the note on it below.
            check_root(env_root, where=" in $HUBZARR_ROOT")
        if changing:
            _change_settings(
                root=root,
                namespace=namespace,
                endpoint_url=endpoint_url,
                region=region,
                profile=profile,
                anon=anon,
                access_key_id=access_key_id,
                secret_access_key=secret_access_key,
                token=token,
                interactive=interactive,
                secrets=secrets,
                cache=(cache, cache_dir, cache_size),
            )
        target = resolve_root()
        if changing or show:
            _show_settings(target)
        if check is None:  # by default, check a change to an object store's settings
            check = changing and _is_remote(target)
        if check:
            _check(target, create=create_bucket, interactive=interactive)
    except HubError as exc:
        typer.echo(f"error: {_scrub(str(exc), secrets)}", err=True)
        raise typer.Exit(1) from None


cache_app = typer.Typer(
    help="The local cache of immutable objects (chunks of tags, records), shared by every "
    "process on this machine.",
    no_args_is_help=True,
)
app.add_typer(cache_app, name="cache")


@cache_app.command("info")
@_handles_errors
def cache_info(as_json: JsonOption = False, root: RootOption = None) -> None:
    """Show the cache's folder, size, limit, entries, hits and misses (of every process)."""
    from hubzarr.cache import shared_cache
    from hubzarr.config import resolve_cache, resolve_root

    settings = resolve_cache()
    target = resolve_root(root)
    found = shared_cache(settings.directory, settings.size_limit).info()
    used = settings.applies_to(target)
    if as_json:
        _json(
            {
                "directory": str(found.directory),
                "size": found.size,
                "size_limit": found.size_limit,
                "entries": found.entries,
                "hits": found.hits,
                "misses": found.misses,
                "root": target,
                "used_for_root": used,
            }
        )
        return
    rows = {
        "folder": str(found.directory),
        "size": f"{_size(found.size)} of {_size(found.size_limit)}",
        "entries": str(found.entries),
        "hits": str(found.hits),
        "misses": str(found.misses),
        "root": f"{target} ({'cached' if used else 'not cached'})",
    }
    _rows([(f"{key}:", value) for key, value in rows.items()], first=_KEY_WIDTH)


@cache_app.command("clear")
@_handles_errors
def cache_clear(
    name: Annotated[
        str | None,
        typer.Argument(help="Only this repository's objects (user/name), at the hub root."),
    ] = None,
    root: RootOption = None,
) -> None:
    """Drop every cached object, or those of the repository NAME."""
    from hubzarr.cache import shared_cache
    from hubzarr.config import (
        resolve_cache,
        resolve_namespace,
        resolve_root,
        resolve_storage_options,
    )
    from hubzarr.names import parse_name
    from hubzarr.storage import open_storage

    settings = resolve_cache()
    cache = shared_cache(settings.directory, settings.size_limit)
    if name is None:
        dropped = cache.clear()
        typer.echo(f"dropped {_plural(dropped, 'object')} from {cache.directory}")
        return
    parsed = parse_name(name, default_user=resolve_namespace())
    target = resolve_root(root)
    identity = open_storage(target, resolve_storage_options(target, None)).identity
    dropped = cache.clear(f"{identity}\n{parsed.repository}/")
    typer.echo(
        f"dropped {_plural(dropped, 'object')} of {parsed.repository} from {cache.directory}"
    )


def _parse_index(text: str) -> tuple[Any, ...]:
    """``0:10,:,5`` as the index ``(slice(0, 10), slice(None), 5)``."""
    items: list[Any] = []
    for raw in text.split(","):
        part = raw.strip()
        try:
            if part == "...":
                items.append(Ellipsis)
            elif ":" in part:
                bounds = part.split(":")
                if len(bounds) > 3:
                    raise ValueError(part)
                items.append(slice(*(int(b) if b.strip() else None for b in bounds)))
            else:
                items.append(int(part))
        except ValueError:
            raise InvalidArgumentError(
                f"--index takes numpy basic indices separated by commas, such as "
                f"'0:100,:,5' or '...,0', not {text!r}"
            ) from None
    return tuple(items)


@cache_app.command("warm")
@_handles_errors
def cache_warm(
    name: NameArgument,
    index: Annotated[
        str | None,
        typer.Option(
            "--index",
            help="Only the chunks of this selection: numpy indices separated by commas, "
            "such as '0:1000' or '0:100,:,5' (an array only).",
            show_default=False,
        ),
    ] = None,
    root: RootOption = None,
) -> None:
    """Fetch the chunks of NAME (or of a selection) into the cache ahead of reading."""
    from hubzarr.api import Hub
    from hubzarr.arrays import HubArray
    from hubzarr.config import resolve_cache

    hub = Hub(root)
    settings = resolve_cache()
    if not settings.applies_to(hub.root):
        raise InvalidArgumentError(
            f"the cache is off for {hub.root} (local and memory roots are not cached by "
            "default); turn it on with 'hub configure --cache', or give it a size"
        )
    node = hub.load(name, mode="r")
    selection = _parse_index(index) if index is not None else ...
    if isinstance(node, HubArray):
        arrays = [node]
    else:
        if index is not None:
            raise InvalidArgumentError(
                f"{name} is a group: --index selects in an array. Leave it out to warm every "
                "array of the group, or warm part of one array in Python: "
                "hubzarr.load(name)[key].prefetch(selection)"
            )
        arrays, groups = [], [node]
        while groups:
            group = groups.pop()
            arrays += [array for _, array in group.arrays()]
            groups += [sub for _, sub in group.groups()]
    total = 0
    with _progress(f"warming {name}", nbytes=False) as update:
        for array in arrays:
            total += array.prefetch(selection, progress=update)
    typer.echo(f"{name}: {_plural(total, 'chunk')} in the cache ({hub.storage.url})")


if __name__ == "__main__":  # pragma: no cover
    app()
