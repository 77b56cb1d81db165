"""hubzarr: numpy-like arrays of any size, stored as versioned zarr on any filesystem.

Example::

    import hubzarr as hub
    big = hub.array((100000, 512, 512, 3), name="test/bigarray:v0", dtype="uint8")
    big[0] = image                               # stored; nothing else to call
    hub.tag("test/bigarray:v0", "v1")            # immutable snapshot, no chunk copied
    hub.load("test/bigarray:v1")[0]              # old state, forever

``open_dataset`` and ``to_hub`` (xarray) are imported on first use, so ``import hubzarr`` does
not import xarray.
"""

from typing import TYPE_CHECKING, Any

from hubzarr.api import (
    Hub,
    array,
    branch,
    delete,
    delete_branch,
    delete_tag,
    from_dask,
    from_numpy,
    gc,
    group,
    load,
    log,
    ls,
    store,
    tag,
    verify,
)
from hubzarr.array import HubArray
from hubzarr.bulk import LazyArray
from hubzarr.collect import GCReport
from hubzarr.errors import (
    AccessDeniedError,
    AlreadyExistsError,
    ConflictError,
    CorruptChunkError,
    FormatError,
    HubError,
    InvalidArgumentError,
    InvalidIndexError,
    InvalidNameError,
    NotFoundError,
    ReadOnlyError,
    StorageError,
    UnsafeCastError,
)
from hubzarr.group import HubGroup
from hubzarr.integrity import Problem, VerifyReport
from hubzarr.store import HubStore
from hubzarr.versions import LogEntry

if TYPE_CHECKING:
    from hubzarr.xarray import open_dataset, to_hub

__version__ = "0.1.0"

#: Integrations imported on first use: ``{name: module}``.
_LAZY = {"open_dataset": "hubzarr.xarray", "to_hub": "hubzarr.xarray"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hubzarr' has no attribute {name!r}")


__all__ = [
    "AccessDeniedError",
    "AlreadyExistsError",
    "ConflictError",
    "CorruptChunkError",
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
    "NotFoundError",
    "Problem",
    "ReadOnlyError",
    "StorageError",
    "UnsafeCastError",
    "VerifyReport",
    "__version__",
    "array",
    "branch",
    "delete",
    "delete_branch",
    "delete_tag",
    "from_dask",
    "from_numpy",
    "gc",
    "group",
    "load",
    "log",
    "ls",
    "open_dataset",
    "store",
    "tag",
    "to_hub",
    "verify",
]
