"""hubzarr: numpy-like arrays of any size, stored as versioned zarr on any filesystem.

Example::

    import hubzarr as hub
    big = hub.array((100000, 512, 512, 3), name="test/bigarray:v0", dtype="uint8")
    big[0] = image                               # stored; nothing else to call
    hub.tag("test/bigarray:v0", "v1")            # immutable snapshot, no chunk copied
    hub.load("test/bigarray:v1")[0]              # old state, forever

Arrays, groups, stores and the xarray integration are imported on first use, so
``import hubzarr``, and the ``hub`` command's quick commands, do not import zarr, numpy, dask or
xarray until something needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Light: these import neither zarr, numpy nor dask (the repository-level operations run
# without them; the rest import what they need when called).
from hubzarr.api import (
    Hub,
    array,
    branch,
    commit,
    copy,
    delete,
    delete_branch,
    delete_tag,
    describe,
    describe_all,
    diff,
    from_dask,
    from_numpy,
    gc,
    group,
    load,
    load_array,
    load_group,
    log,
    ls,
    merge,
    pin,
    reader,
    revert,
    store,
    tag,
    verify,
)
from hubzarr.cache import CacheInfo, ChunkCache
from hubzarr.collect import GCReport
from hubzarr.errors import (
    AccessDeniedError,
    AlreadyExistsError,
    AsOfWarning,
    ConflictError,
    CorruptChunkError,
    DivergedError,
    FormatError,
    HubError,
    InvalidArgumentError,
    InvalidIndexError,
    InvalidNameError,
    MergeConflictError,
    NotFoundError,
    ReadOnlyError,
    StorageError,
    UnsafeCastError,
)
from hubzarr.summaries import RepoSummary
from hubzarr.versions import LogEntry

if TYPE_CHECKING:
    __version__: str
    from hubzarr.arrays import HubArray
    from hubzarr.bulk import LazyArray
    from hubzarr.groups import HubGroup
    from hubzarr.history import Diff, NodeDiff
    from hubzarr.integrity import Problem, VerifyReport
    from hubzarr.session import ObjectEntry, Session
    from hubzarr.stores import HubStore
    from hubzarr.transfer import CopyReport
    from hubzarr.xarray import open_dataset, to_hub


def _version() -> str:
    import importlib.metadata  # 20-50 ms: only when asked

    try:
        return importlib.metadata.version("hubzarr")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "0+unknown"


#: Where each of the other public names lives: ``{name: module}``, imported on first use.
_LAZY = {
    "HubArray": "hubzarr.arrays",
    "LazyArray": "hubzarr.bulk",
    "HubGroup": "hubzarr.groups",
    "Diff": "hubzarr.history",
    "NodeDiff": "hubzarr.history",
    "Problem": "hubzarr.integrity",
    "VerifyReport": "hubzarr.integrity",
    "ObjectEntry": "hubzarr.session",
    "Session": "hubzarr.session",
    "HubStore": "hubzarr.stores",
    "CopyReport": "hubzarr.transfer",
    "open_dataset": "hubzarr.xarray",
    "to_hub": "hubzarr.xarray",
}

#: The package's modules, also imported on first use (``hubzarr.storage.open_storage``).
_MODULES = frozenset(
    {
        "addresses", "api", "arrays", "bulk", "cache", "chunks", "cli", "collect", "config",
        "errors", "files", "frame", "groups", "history", "imports", "indexing", "integrity",
        "manifests", "metadata", "names", "records", "refs", "replicate", "retry", "runner",
        "session", "spec", "storage", "stores", "summaries", "transfer", "versions", "xarray",
    }
)  # fmt: skip


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if name == "__version__":
        value: Any = _version()
    elif module is not None:
        value = getattr(importlib.import_module(module), name)
    elif name in _MODULES:
        value = importlib.import_module(f"hubzarr.{name}")
    else:
        raise AttributeError(f"module 'hubzarr' has no attribute {name!r}")
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "AccessDeniedError",
    "AlreadyExistsError",
    "AsOfWarning",
    "CacheInfo",
    "ChunkCache",
    "ConflictError",
    "CopyReport",
    "CorruptChunkError",
    "Diff",
    "DivergedError",
    "FormatError",
    "GCReport",
    "Hub",
    "HubArray",
    "HubError",
    "HubGroup",
    "HubStore",
    "InvalidArgumentError",
    "InvalidIndexError",
    "InvalidNameError",
    "LazyArray",
    "LogEntry",
    "MergeConflictError",
    "NodeDiff",
    "NotFoundError",
    "ObjectEntry",
    "Problem",
    "ReadOnlyError",
    "RepoSummary",
    "Session",
    "StorageError",
    "UnsafeCastError",
    "VerifyReport",
    "__version__",
    "array",
    "branch",
    "commit",
    "copy",
    "delete",
    "delete_branch",
    "delete_tag",
    "describe",
    "describe_all",
    "diff",
    "from_dask",
    "from_numpy",
    "gc",
    "group",
    "load",
    "load_array",
    "load_group",
    "log",
    "ls",
    "merge",
    "open_dataset",
    "pin",
    "reader",
    "revert",
    "store",
    "tag",
    "to_hub",
    "verify",
]
