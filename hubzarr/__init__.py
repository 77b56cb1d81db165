"""hubzarr: numpy-like arrays of any size, stored as versioned zarr on any filesystem.

Example::

    import hubzarr as hub
    big = hub.array((100000, 512, 512, 3), name="test/bigarray:v0", dtype="uint8")
    big[0] = image                               # stored; nothing else to call
    hub.tag("test/bigarray:v0", "v1")            # immutable snapshot, no chunk copied
    hub.load("test/bigarray:v1")[0]              # old state, forever
"""

from hubzarr.api import (
    Hub,
    array,
    branch,
    delete,
    delete_branch,
    delete_tag,
    gc,
    load,
    log,
    ls,
    store,
    tag,
    verify,
)
from hubzarr.array import HubArray
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
from hubzarr.integrity import Problem, VerifyReport
from hubzarr.store import HubStore
from hubzarr.versions import LogEntry

__version__ = "0.1.0"

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
    "HubStore",
    "InvalidArgumentError",
    "InvalidIndexError",
    "InvalidNameError",
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
    "gc",
    "load",
    "log",
    "ls",
    "store",
    "tag",
    "verify",
]
