"""mkdocs hooks: what the site generates from the code, so it cannot drift from it.

- ``reference/api.md``: one mkdocstrings section per public name of ``hubzarr`` (its
  ``__all__``), ``hubzarr.torch`` and ``hubzarr.tensorflow``, grouped as below. A public name
  missing from the groups, or a grouped name that is not public, fails the build.
- ``reference/cli.md``: the ``hub`` command's reference, from its Typer app (``typer hubzarr.cli
  utils docs``), its headings one level down.
- ``benchmarks.md``: the plots, drawn by ``benchmarks/plots.py`` from the committed results
  files in ``benchmarks/results/`` into a temporary folder and added to the site as generated
  files (nothing is written under ``docs/``).
"""

from __future__ import annotations

import ast
import importlib.util
import logging
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

log = logging.getLogger("mkdocs.hooks.hubzarr")

ROOT = Path(__file__).resolve().parent.parent

#: The API reference's sections, in order: title, what it is for, and the public names in it.
API_GROUPS: list[tuple[str, str, list[str]]] = [
    (
        "Arrays and groups",
        "Create, open and write arrays and groups by name.",
        ["array", "load", "load_array", "load_group", "group", "from_numpy", "from_dask",
         "HubArray", "LazyArray", "HubGroup"],
    ),
    (
        "Versions and history",
        "Seal, name, compare and merge states of a repository.",
        ["tag", "commit", "branch", "delete_tag", "delete_branch", "pin", "log", "diff", "merge",
         "revert", "LogEntry", "Diff", "NodeDiff"],
    ),
    (
        "Repositories and roots",
        "List, describe, copy, check and clean up repositories; `Hub` holds one root.",
        ["Hub", "ls", "describe", "describe_all", "delete", "copy", "verify", "gc",
         "RepoSummary", "CopyReport", "VerifyReport", "Problem", "GCReport"],
    ),
    (
        "zarr, xarray and raw objects",
        "A repository as a zarr store or an xarray dataset, and its stored objects.",
        ["store", "HubStore", "open_dataset", "to_hub", "reader", "Session", "ObjectEntry"],
    ),
    ("The local cache", "The cache of objects that never change.", ["ChunkCache", "CacheInfo"]),
    (
        "Training",
        "PyTorch and TensorFlow datasets (the `torch` and `tensorflow` extras).",
        ["hubzarr.torch.IterableDataset", "hubzarr.torch.Dataset", "hubzarr.tensorflow.dataset"],
    ),
    (
        "Errors and warnings",
        "One error tree; see [Errors](../errors.md) for what to do about each.",
        ["HubError", "InvalidArgumentError", "InvalidNameError", "UnsafeCastError",
         "InvalidIndexError", "NotFoundError", "AlreadyExistsError", "ReadOnlyError",
         "ConflictError", "DivergedError", "MergeConflictError", "StorageError",
         "AccessDeniedError", "FormatError", "CorruptChunkError", "AsOfWarning"],
    ),
]  # fmt: skip

#: Modules whose ``__all__`` is documented under their own dotted names (optional extras:
#: read without importing them, so the build needs neither torch nor tensorflow).
EXTRA_MODULES = ("hubzarr.torch", "hubzarr.tensorflow")


def _module_all(module: str) -> list[str]:
    """The ``__all__`` of ``module``, read from its source."""
    spec = importlib.util.find_spec("hubzarr")
    assert spec is not None and spec.submodule_search_locations
    path = Path(spec.submodule_search_locations[0]) / (module.rsplit(".", maxsplit=1)[-1] + ".py")
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    raise PluginError(f"{module} has no __all__")


def public_names() -> dict[str, str]:
    """Every documented public name (as written in ``API_GROUPS``) -> its defining object path."""
    import hubzarr

    names: dict[str, str] = {}
    for name in hubzarr.__all__:
        if name == "__version__":
            continue
        module = hubzarr._LAZY.get(name) or getattr(hubzarr, name).__module__
        names[name] = f"{module}.{name}"
    for module in EXTRA_MODULES:
        for name in _module_all(module):
            names[f"{module}.{name}"] = f"{module}.{name}"
    return names


def api_markdown() -> str:
    """The API reference's sections, checked against the public names."""
    names = public_names()
    grouped = [name for _, _, members in API_GROUPS for name in members]
    missing = sorted(set(names) - set(grouped))
    unknown = sorted(set(grouped) - set(names))
    if missing or unknown:
        raise PluginError(
            f"docs/hooks.py API_GROUPS is out of date: public names not in a group: {missing}; "
            f"grouped names that are not public: {unknown}"
        )
    parts = []
    for title, blurb, members in API_GROUPS:
        parts.append(f"## {title}\n\n{blurb}\n")
        parts.extend(f"::: {names[name]}\n" for name in members)
    return "\n".join(parts)


def cli_markdown() -> str:
    """The ``hub`` command's reference, as Typer writes it, under the page's own title."""
    command = [sys.executable, "-m", "typer", "hubzarr.cli", "utils", "docs", "--name", "hub"]
    text = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return re.sub(r"^(#+) ", r"#\1 ", text, flags=re.MULTILINE)


def on_page_markdown(markdown: str, page: Page, **_: Any) -> str:
    if page.file.src_uri == "reference/api.md":
        return markdown.replace("<!-- api-sections -->", api_markdown())
    if page.file.src_uri == "reference/cli.md":
        return markdown.replace("<!-- cli -->", cli_markdown())
    return markdown


#: Where this build's plots are drawn; removed once the site is written.
_plots: Path | None = None


def on_post_build(**_: Any) -> None:
    if _plots is not None:
        shutil.rmtree(_plots, ignore_errors=True)


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Draw the benchmark plots from the committed results and add them to the site."""
    spec = importlib.util.spec_from_file_location("_hub_plots", ROOT / "benchmarks" / "plots.py")
    assert spec is not None and spec.loader is not None
    plots = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plots)
    global _plots
    out = _plots = Path(tempfile.mkdtemp(prefix="hubzarr-plots-"))
    for path in plots.render_all(ROOT / "benchmarks" / "results", out):
        uri = f"assets/plots/{path.name}"
        files.append(File.generated(config, uri, abs_src_path=str(path)))
        log.info("plot %s", uri)
    return files
