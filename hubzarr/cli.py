"""The ``hub`` command line. The only place that prints, and that turns errors into exit codes."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from hubzarr.errors import HubError

app = typer.Typer(
    name="hub",
    help="Versioned zarr arrays by name, on any filesystem fsspec reaches.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

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


def _size(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if nbytes < 1000:
            return f"{nbytes:.3g} {unit}"
        nbytes /= 1000
    return f"{nbytes:.3g} PB"


@app.command()
@_handles_errors
def demo(
    root: RootOption = None,
    samples: Annotated[int, typer.Option(help="Samples in the demo array.", min=1)] = 100,
) -> None:
    """Run the hubzarr story at a small size and print what it did."""
    import numpy as np

    from hubzarr.api import Hub

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
    mean = again[0:10, 100:200, 100:200].mean()
    typer.echo(f"loaded again: again[0:10, 100:200, 100:200].mean() = {mean:.4f}")

    version = hub.tag(f"{name}:v0", "v1", message="first image")
    typer.echo(f"tagged {name}:v0 as v1 (version {version}); no chunk copied")

    big[0] = 255 - image
    v0_first, v1_first = hub.load(f"{name}:v0")[0], hub.load(f"{name}:v1")[0]
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


def _log_line(entry: Any) -> str:
    refs = f" ({', '.join(entry.refs)})" if entry.refs else ""
    state = "" if entry.sealed else " [open head]"
    message = f"  {entry.message}" if entry.message else ""
    return f"  {entry.id}  {entry.time:%Y-%m-%d %H:%M:%S}Z{refs}{state}{message}"


@app.command("ls")
@_handles_errors
def ls_command(
    prefix: Annotated[str, typer.Argument(help="Only names starting with this.")] = "",
    root: RootOption = None,
) -> None:
    """List the repositories under the hub root."""
    from hubzarr.api import Hub

    for name in Hub(root).ls(prefix):
        typer.echo(name)


@app.command()
@_handles_errors
def info(name: NameArgument, root: RootOption = None) -> None:
    """Show an array's ref, version, shape, dtype, chunks and compressor."""
    from hubzarr.api import Hub

    arr = Hub(root).load(name, mode="r")
    resolved = arr.store.pinned_state()
    assert resolved is not None
    compressor = arr.zarr.metadata.to_dict().get("compressor")
    rows = {
        "name": arr.name,
        "ref": f"{resolved.ref} ({resolved.kind})",
        "version": f"{resolved.version} ({'sealed' if resolved.sealed else 'open head'})",
        "shape": str(arr.shape),
        "dtype": str(arr.dtype),
        "chunks": str(arr.chunks),
        "size": _size(arr.nbytes),
        "compressor": str(compressor),
        "fill value": str(arr.zarr.fill_value),
    }
    for key, value in rows.items():
        typer.echo(f"{key + ':':<12} {value}")


@app.command()
@_handles_errors
def log(name: NameArgument, root: RootOption = None) -> None:
    """Show the versions leading to NAME, newest first."""
    from hubzarr.api import Hub

    for entry in Hub(root).log(name):
        typer.echo(_log_line(entry))


@app.command()
@_handles_errors
def tag(
    name: NameArgument,
    tag: Annotated[str, typer.Argument(help="The new tag's name.")],
    message: Annotated[str | None, typer.Option("--message", "-m", help="A message.")] = None,
    root: RootOption = None,
) -> None:
    """Tag NAME's current state as TAG: an immutable snapshot, no data copied."""
    from hubzarr.api import Hub

    hub = Hub(root)
    version = hub.tag(name, tag, message)
    typer.echo(f"tagged {name} as {tag} (version {version})")


@app.command()
@_handles_errors
def branch(
    name: NameArgument,
    new_branch: Annotated[str, typer.Argument(help="The new branch's name.")],
    root: RootOption = None,
) -> None:
    """Create a writable branch NEW_BRANCH starting at NAME's current state."""
    from hubzarr.api import Hub

    head = Hub(root).branch(name, new_branch)
    typer.echo(f"created branch {new_branch} of {name} (head {head})")


@app.command()
@_handles_errors
def configure(
    root: Annotated[
        str | None, typer.Option("--root", help="Hub root to use by default.", show_default=False)
    ] = None,
    namespace: Annotated[
        str | None,
        typer.Option("--namespace", help="Namespace of bare names.", show_default=False),
    ] = None,
    show: Annotated[bool, typer.Option("--show", help="Print the settings in effect.")] = False,
) -> None:
    """Set the default hub root and namespace, or --show them."""
    from hubzarr.config import (
        Settings,
        config_path,
        load_settings,
        resolve_namespace,
        resolve_root,
        save_settings,
    )
    from hubzarr.storage import check_root

    if root is not None or namespace is not None:
        # With both given, the old file is not needed, so a broken one can be replaced.
        current = load_settings() if root is None or namespace is None else Settings()
        path = save_settings(
            Settings(
                root=check_root(root) if root is not None else current.root,
                namespace=namespace if namespace is not None else current.namespace,
            )
        )
        typer.echo(f"wrote {path}")
    elif not show:
        typer.echo("nothing to change: pass --root and/or --namespace, or --show", err=True)
        raise typer.Exit(2)
    typer.echo(f"config file: {config_path()}")
    typer.echo(f"root:        {resolve_root()}")
    typer.echo(f"namespace:   {resolve_namespace()}")


if __name__ == "__main__":  # pragma: no cover
    app()
