"""The one hubzarr error tree.

Every error hubzarr raises on purpose is a :class:`HubError`. Each leaf also inherits the
builtin exception a caller would already catch for that situation, so ``except KeyError``-style
code written against numpy, zarr or the filesystem keeps working::

    HubError                                   anything hubzarr raises on purpose
    ├── InvalidArgumentError (ValueError)      the caller passed something unusable: fix the call
    │   ├── InvalidNameError                   a name or ref breaks the name grammar
    │   └── UnsafeCastError                    a value does not fit the array's dtype exactly
    ├── InvalidIndexError (IndexError)         an index is out of bounds or of an unsupported kind
    ├── NotFoundError (LookupError)            no such repository, branch, tag or version
    ├── AlreadyExistsError (FileExistsError)   a repository, branch or tag of that name exists
    ├── ReadOnlyError (PermissionError,        writing to a tag, a sealed version, or a store
    │                  ValueError)             opened read-only: branch, then write
    ├── ConflictError (RuntimeError)           other writers kept changing the chunks a partial
    │   │                                      write read, more often than it retried: retry
    │   ├── DivergedError                      a copy's destination has changes its source
    │   │                                      lacks: copy to a new name
    │   └── MergeConflictError                 both sides of a merge changed the same chunks
    │                                          or metadata differently: settle them
    └── StorageError (OSError)                 the storage backend failed or holds bad data
        ├── AccessDeniedError (PermissionError) the credential may not do that: names the bucket
        │                                      and which credential was used, never a secret
        ├── FormatError                        a hubzarr file is malformed or of a newer layout
        └── CorruptChunkError                  a stored object is truncated or fails its checksum

Grouped by what a handler does: the ``InvalidArgumentError`` and ``InvalidIndexError`` families
are the caller's bug; ``NotFoundError`` and ``AlreadyExistsError`` are expected outcomes a program
branches on; ``ReadOnlyError`` asks for a branch; ``StorageError`` is the environment's fault
and may be retried or reported.

``ReadOnlyError`` is also a ``ValueError`` because zarr's ``Store`` contract raises
``ValueError`` for a write to a read-only store, and zarr (and its conformance tests) catch that.
"""

from __future__ import annotations

__all__ = [
    "AccessDeniedError",
    "AlreadyExistsError",
    "AsOfWarning",
    "ConflictError",
    "CorruptChunkError",
    "DivergedError",
    "FormatError",
    "HubError",
    "InvalidArgumentError",
    "InvalidIndexError",
    "InvalidNameError",
    "MergeConflictError",
    "NotFoundError",
    "ReadOnlyError",
    "StorageError",
    "UnsafeCastError",
]


class HubError(Exception):
    """Base class of every error hubzarr raises on purpose."""


class InvalidArgumentError(HubError, ValueError):
    """An argument (shape, chunks, dtype, fill value, root, mode, ...) is unusable."""


class InvalidNameError(InvalidArgumentError):
    """A repository name or ref does not follow the name grammar."""


class UnsafeCastError(InvalidArgumentError):
    """A value cannot be stored in the array's dtype without changing it."""


class InvalidIndexError(HubError, IndexError):
    """An index is out of bounds or of a kind hubzarr does not support."""


class NotFoundError(HubError, LookupError):
    """No repository, branch, tag or version of that name exists."""


class AlreadyExistsError(HubError, FileExistsError):
    """A repository, branch or tag of that name already exists."""


class ReadOnlyError(HubError, PermissionError, ValueError):
    """A write was attempted on a tag, a sealed version or a read-only store."""


class ConflictError(HubError, RuntimeError):
    """A partial-chunk write lost its compare-and-swap race more often than it retries, or a
    copy found its destination changed while it ran."""


class DivergedError(ConflictError):
    """A copy's destination has changes its source lacks (a branch written there, a tag of
    the same name on other data): nothing is copied."""


class MergeConflictError(ConflictError):
    """A merge found chunks or metadata both sides changed differently: nothing is changed.
    ``conflicts`` holds each array and group concerned (:class:`hubzarr.history.NodeDiff`,
    its ``changed`` chunks and ``metadata`` fields the conflicts), to settle with
    ``strategy="ours"`` or ``"theirs"``."""

    def __init__(self, message: str, conflicts: tuple[object, ...] = ()) -> None:
        super().__init__(message)
        self.conflicts = conflicts


class StorageError(HubError, OSError):
    """The storage backend failed, or what it holds is not what hubzarr wrote."""


class AccessDeniedError(StorageError, PermissionError):
    """The backend refused the credential in use for that bucket or object."""


class FormatError(StorageError):
    """A hubzarr metadata file is malformed, or was written by a newer layout."""


class CorruptChunkError(StorageError):
    """A stored object is truncated, empty, or fails its checksum."""


class AsOfWarning(UserWarning):
    """A read ``as_of`` a time in the future: the branch is read at its head, as it is now
    (a warning, not an error: the state asked for is the newest there is)."""
