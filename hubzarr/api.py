"""The Python API: :class:`Hub` and the module-level functions that use a default one.

Names are parsed (and refused, if malformed) before any I/O; the hub root is resolved from the
argument, ``HUBZARR_ROOT``, the config file, or the embedded default folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from hubzarr.cache import CachedStorage, ChunkCache, open_cached
from hubzarr.collect import DEFAULT_GRACE_S, GCReport, Retention, collect
from hubzarr.config import resolve_namespace, resolve_root, resolve_storage_options
from hubzarr.errors import (
    AlreadyExistsError,
    AsOfWarning,
    ConflictError,
    HubError,
    InvalidArgumentError,
    InvalidNameError,
    NotFoundError,
    ReadOnlyError,
)
from hubzarr.names import Name, check_ref, parse_name
from hubzarr.records import Location, check_message
from hubzarr.retry import compare_and_swap
from hubzarr.runner import run as _run
from hubzarr.storage import Storage, check_root, open_storage, public_options
from hubzarr.summaries import RepoSummary, summarize, summarize_all
from hubzarr.versions import LogEntry, Repository, list_repositories

# Arrays, groups, stores and what they need (zarr, numpy, dask) are imported where first
# needed: the repository-level operations (ls, describe, log, tag, branch, gc, delete) need
# none of them, and the quick commands of the CLI start without.
if TYPE_CHECKING:
    from hubzarr.addresses import PathLocation
    from hubzarr.arrays import HubArray
    from hubzarr.groups import HubGroup
    from hubzarr.history import Diff
    from hubzarr.imports import Source as ImportSource
    from hubzarr.integrity import VerifyReport
    from hubzarr.session import Session
    from hubzarr.stores import HubStore
    from hubzarr.transfer import CopyReport, Progress

__all__ = [
    "Hub",
    "array",
    "branch",
    "copy",
    "delete",
    "delete_branch",
    "delete_tag",
    "describe",
    "describe_all",
    "from_dask",
    "from_numpy",
    "gc",
    "group",
    "load",
    "load_array",
    "load_group",
    "log",
    "ls",
    "pin",
    "reader",
    "store",
    "tag",
    "verify",
]

RootLike = str | os.PathLike[str] | None
_DEFAULT: Any = object()
_Node = TypeVar("_Node", "HubArray", "HubGroup")
_DEFAULT_BRANCH = "main"


class Hub:
    """A hub root and the operations on the repositories under it.

    Parameters
    ----------
    root : str or os.PathLike, optional
        A folder, ``file://``, ``memory://``, ``s3://`` or ``gs://`` URL. Default:
        ``HUBZARR_ROOT``, else the config file, else ``~/.hubzarr`` (or, when ``storage`` is
        given, its URL).
    storage_options : dict, optional
        Options for the root's fsspec filesystem.
    storage : Storage, optional
        The storage primitives to use for the root instead of opening them: a wrapper around
        :func:`hubzarr.storage.open_storage`'s (a cache, a fault injector, a request counter).
        Every store, array and group this hub opens uses it.
    cache : bool, str, os.PathLike or ChunkCache, optional
        The local cache of immutable objects (:mod:`hubzarr.cache`). ``None``: as configured
        (by default on for remote roots, off for local and memory ones); ``True``: on, in the
        configured folder; ``False``: off; a folder; or a :class:`hubzarr.cache.ChunkCache`.
        With ``storage``, only an explicit ``cache`` wraps it.

    Raises
    ------
    InvalidArgumentError
        If the root URL embeds credentials, ``storage`` is not a
        :class:`hubzarr.storage.Storage`, or ``cache`` is of another type.
    """

    def __init__(
        self,
        root: RootLike = None,
        storage_options: dict[str, Any] | None = None,
        *,
        storage: Storage | None = None,
        cache: bool | str | os.PathLike[str] | ChunkCache | None = None,
    ) -> None:
        if storage is not None and not isinstance(storage, Storage):
            raise InvalidArgumentError(
                f"storage must be a hubzarr.storage.Storage, not {type(storage).__name__}"
            )
        self.root = check_root(
            resolve_root(root) if storage is None or root is not None else storage.url
        )
        self.storage_options = resolve_storage_options(self.root, storage_options)
        if cache is not None:
            # Decided here, and carried by the storage to every store (and dask worker).
            storage = open_cached(self.root, self.storage_options, cache=cache, storage=storage)
        self._injected = storage
        self._storage: Storage | None = storage

    def __repr__(self) -> str:
        return f"Hub({self.root!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Credentials stay behind: the receiver resolves its own (environment, profile); an
        # injected storage pickles as it chooses (hubzarr's own never pickle a secret).
        return (_rebuild_hub, (self.root, public_options(self.storage_options), self._injected))

    @property
    def storage(self) -> Storage:
        """The storage primitives of the root."""
        if self._storage is None:
            self._storage = open_cached(self.root, self.storage_options)
        return self._storage

    def _parse(self, name: str, as_of: datetime | None = None) -> Name:
        """``name`` parsed; with ``as_of``, pinned to the version its branch had then."""
        parsed = parse_name(name, default_user=resolve_namespace())
        if as_of is None:
            return parsed
        when = _moment(as_of)
        repo = Repository(self.storage, parsed)
        if when > time.time() and _run(repo.resolve(parsed.ref)).kind == "branch":
            stamp = as_of.astimezone(UTC).isoformat().replace("+00:00", "Z")
            warnings.warn(
                f"as_of {stamp} is in the future: {name} is read at its branch's head, as it "
                "is now",
                AsOfWarning,
                stacklevel=3,
            )
            return parsed
        return parsed.with_ref(_run(repo.sealed_at(parsed.ref, as_of)))

    def _store(self, name: Name, *, read_only: bool, session: Session | None = None) -> HubStore:
        from hubzarr.stores import HubStore

        return HubStore(
            self.root,
            name,
            storage_options=self.storage_options,
            read_only=read_only,
            storage=self._injected,
            session=session,
        )

    def array(
        self,
        shape: Any,
        name: str,
        *,
        dtype: Any = "float32",
        chunks: Any = None,
        fill_value: Any = 0,
        compressor: Any = _DEFAULT,
        overwrite: bool = False,
    ) -> HubArray:
        """Create an array in a new repository (or, with ``overwrite``, in a branch's head).

        Parameters
        ----------
        shape : int or tuple of int
            Positive dimensions. Nothing is allocated: only written chunks are stored.
        name : str
            ``user/name[:branch]``; the ref becomes the repository's first (default) branch,
            ``main`` if absent.
        dtype : numpy dtype-like
            A bool, integer, float or complex dtype.
        chunks : tuple of int, optional
            Chunk shape; default: MB-scale chunks with cheap single samples along axis 0.
        fill_value : scalar
            The value of never-written elements; must fit ``dtype`` exactly.
        compressor : numcodecs codec or None
            Default: Blosc lz4 with byte shuffle.
        overwrite : bool
            If the repository exists, replace the contents of the branch's head (its tags and
            sealed versions are untouched).

        Returns
        -------
        HubArray
            The new array, writable.

        Raises
        ------
        InvalidNameError
            If ``name`` is malformed.
        InvalidArgumentError
            If shape, chunks, dtype, fill value or compressor are unusable (nothing is created).
        AlreadyExistsError
            If the repository exists and ``overwrite`` is false.
        ReadOnlyError
            If ``overwrite`` names a tag or a sealed version.
        """
        import zarr

        from hubzarr.arrays import HubArray
        from hubzarr.metadata import array_spec, metadata_documents, open_zarr_array
        from hubzarr.spec import DEFAULT_COMPRESSOR, check_flag

        check_flag(overwrite, "overwrite")
        parsed = self._parse(name)
        codec = DEFAULT_COMPRESSOR if compressor is _DEFAULT else compressor
        spec = array_spec(shape, dtype, chunks, fill_value, codec)
        repo = Repository(self.storage, parsed)
        branch = parsed.ref or _DEFAULT_BRANCH
        try:
            # The array's metadata is part of the repository's first version from the start.
            _run(repo.create(branch, initial=metadata_documents(spec)))
        except AlreadyExistsError:
            if not overwrite:
                raise
            resolved = _run(repo.resolve(parsed.ref))
            if resolved.kind != "branch":
                raise ReadOnlyError(
                    f"cannot overwrite {parsed}: it is a {resolved.kind}, and versions never "
                    "change; overwrite a branch instead"
                ) from None
            store = self._store(parsed.with_ref(resolved.ref), read_only=False)
            return HubArray(store, zarr.create_array(store, **spec, overwrite=True))
        store = self._store(parsed.with_ref(branch), read_only=False)
        zarray = open_zarr_array(store)
        return HubArray(store, zarray)

    def group(self, name: str) -> HubGroup:
        """Create a repository holding an empty group, or open the group a repository holds.

        A group holds arrays and subgroups by key (``group.create_array("images", ...)``,
        ``group["train/labels"]``); tags and branches snapshot all of them at once.

        Parameters
        ----------
        name : str
            ``user/name[:ref]``. A new repository's first (default) branch is the ref, ``main``
            if absent; an existing repository is opened at the ref (a tag or version id opens
            the group read-only).

        Returns
        -------
        HubGroup
            The root group of the repository.

        Raises
        ------
        InvalidNameError
            If ``name`` is malformed.
        AlreadyExistsError
            If the repository holds an array (open it with :meth:`load`).
        NotFoundError
            If the repository exists but the ref does not, or an empty repository is opened at
            a tag or version.
        FormatError
            If the group's metadata is malformed.
        """
        parsed = self._parse(name)
        try:
            # Checked first: a creator that loses leaves its unpublished objects for gc.
            if _run(Repository(self.storage, parsed).exists()):
                raise AlreadyExistsError(name)
            return self._new_group(parsed)
        except AlreadyExistsError:
            return self._open_group(self._store(parsed, read_only=False))

    def _open_group(self, store: HubStore) -> HubGroup:
        from zarr.core.buffer import default_buffer_prototype

        from hubzarr.groups import HubGroup
        from hubzarr.metadata import GroupInfo, group_documents, open_node

        _run(store.session.resolved())
        try:
            node = open_node(store)
        except NotFoundError:
            # An empty repository (hub.store(name, mode="w-")): at a branch, it becomes a group.
            if store.read_only:
                raise
            prototype = default_buffer_prototype()
            for key, payload in group_documents().items():
                store.set_sync(key, prototype.buffer.from_bytes(payload))
            return HubGroup(store)
        if not isinstance(node, GroupInfo):
            raise AlreadyExistsError(
                f"repository {store.name} exists and holds an array, not a group; open it with "
                f"hubzarr.load({str(store.name)!r}), or choose another name for the group"
            )
        return HubGroup(store)

    def from_dask(
        self,
        data: Any,
        name: str,
        *,
        chunks: Any = None,
        fill_value: Any = 0,
        compressor: Any = _DEFAULT,
    ) -> HubArray:
        """Create an array holding a dask array's values, written chunk by chunk in parallel.

        The dask graph and the writes run on dask's current scheduler (threads, or a
        dask.distributed cluster when a client is active); chunks of fill values are not
        stored. Each chunk write has the guarantees of any write to a branch (see
        :meth:`array`); until all are done, readers may see some chunks still at the fill value.

        Parameters
        ----------
        data : dask.array.Array
            The values; its shape and dtype become the array's.
        name : str
            ``user/name[:branch]`` of a new repository.
        chunks, fill_value, compressor
            As for :meth:`array` (default chunks: MB-scale, whatever ``data``'s blocks are).

        Returns
        -------
        HubArray
            The new array.

        Raises
        ------
        AlreadyExistsError
            If the repository exists (nothing is changed).
        InvalidArgumentError
            If ``data`` is not a dask array, or chunks, dtype or fill value are unusable.
        """
        from hubzarr.bulk import assign

        if not (hasattr(data, "__dask_graph__") and hasattr(data, "dtype")):
            raise InvalidArgumentError(
                f"from_dask takes a dask.array.Array, not {type(data).__name__}; use "
                "from_numpy for numpy arrays"
            )
        arr = self.array(
            data.shape,
            name,
            dtype=data.dtype,
            chunks=chunks,
            fill_value=fill_value,
            compressor=compressor,
        )
        assign(arr, Ellipsis, data, new=True)
        return arr

    def from_numpy(
        self,
        data: Any,
        name: str,
        *,
        chunks: Any = None,
        fill_value: Any = 0,
        compressor: Any = _DEFAULT,
    ) -> HubArray:
        """Create an array holding a numpy array's values, encoding and writing chunks in
        parallel (see :meth:`from_dask`)."""
        import dask.array as da
        import numpy as np

        from hubzarr.bulk import assign

        values = np.asarray(data)
        arr = self.array(
            values.shape,
            name,
            dtype=values.dtype,
            chunks=chunks,
            fill_value=fill_value,
            compressor=compressor,
        )
        darr = da.from_array(values, chunks=arr.chunks)  # type: ignore[no-untyped-call]
        assign(arr, Ellipsis, darr, new=True)
        return arr

    def load(
        self, name: str, *, mode: Literal["r", "r+"] = "r+", as_of: datetime | None = None
    ) -> HubArray | HubGroup:
        """Open an array (or a group) by name, lazily: no chunk is read until indexed.

        Parameters
        ----------
        name : str
            ``user/name[:ref]``; ref is a branch, tag or version id (default: default branch).
        mode : {"r+", "r"}
            ``"r+"`` allows writes at a branch; tags and versions are always read-only.
        as_of : datetime.datetime, optional
            Read the branch as it was then (a time with a zone): the newest version of its
            history sealed (committed or tagged) at or before it, read-only. A time in the
            future reads the head, with an :class:`AsOfWarning`.

        Returns
        -------
        HubArray or HubGroup
            The array; or, for a repository holding a group, the :class:`HubGroup`.

        Raises
        ------
        InvalidNameError
            If ``name`` is malformed.
        InvalidArgumentError
            If ``as_of`` has no time zone, or ``name`` is a tag or version id with ``as_of``.
        NotFoundError
            If the repository or ref does not exist (the message names close matches), the
            repository holds neither an array nor a group, or nothing of the branch was sealed
            by ``as_of`` (the message says when its history starts).
        FormatError
            If the array's (or group's) metadata is malformed.
        """
        from hubzarr.arrays import HubArray
        from hubzarr.groups import HubGroup
        from hubzarr.metadata import GroupInfo, open_node

        if mode not in ("r", "r+"):
            raise InvalidArgumentError(f"mode must be 'r' or 'r+', not {mode!r}")
        store = self._store(self._parse(name, as_of), read_only=mode == "r")
        node = open_node(store)
        if isinstance(node, GroupInfo):
            return HubGroup(store)
        return HubArray(store, node)

    def load_array(
        self, name: str, *, mode: Literal["r", "r+"] = "r+", as_of: datetime | None = None
    ) -> HubArray:
        """Open an array by name, as :meth:`load` does, typed as one.

        Raises
        ------
        NotFoundError
            As :meth:`load`, and if the repository holds a group (open it with
            :meth:`load_group`).
        InvalidNameError, FormatError
            As :meth:`load`.
        """
        from hubzarr.arrays import HubArray

        return self._load_as(HubArray, name, mode, "load_group", as_of)

    def load_group(
        self, name: str, *, mode: Literal["r", "r+"] = "r+", as_of: datetime | None = None
    ) -> HubGroup:
        """Open the group a repository holds, as :meth:`load` does, typed as one.

        Raises
        ------
        NotFoundError
            As :meth:`load`, and if the repository holds an array (open it with
            :meth:`load_array`).
        InvalidNameError, FormatError
            As :meth:`load`.
        """
        from hubzarr.groups import HubGroup

        return self._load_as(HubGroup, name, mode, "load_array", as_of)

    def _load_as(
        self,
        kind: type[_Node],
        name: str,
        mode: Literal["r", "r+"],
        instead: str,
        as_of: datetime | None,
    ) -> _Node:
        """:meth:`load`, refusing anything but a ``kind``, whose loader is ``instead``."""
        node = self.load(name, mode=mode, as_of=as_of)
        if not isinstance(node, kind):
            held = "an array" if instead == "load_array" else "a group"
            raise NotFoundError(
                f"{node.name} holds {held}, not a {kind.__name__}; open it with "
                f"hubzarr.{instead}({name!r})"
            )
        return node

    def reader(self, name: str, *, as_of: datetime | None = None) -> Session:
        """Return a reader of one version of a repository: its keys with their objects'
        locations and sizes, each object as stored, each payload checked.

        For tools that work on stored objects rather than arrays (copying, verifying,
        loading for training): see :class:`hubzarr.session.Session` (``entries``,
        ``read_object``, ``read``, ``keys``). At a branch it reads the head as it is at each
        call; at a tag or version id, that version forever.

        Raises
        ------
        InvalidNameError
            If ``name`` is malformed (checked before any I/O).
        NotFoundError
            If the repository or ref does not exist.
        """
        return self._reader(self._parse(name, as_of))

    def _reader(self, name: Name) -> Session:
        from hubzarr.session import Session

        session = Session(self.storage, name, read_only=True)
        _run(session.resolved())
        return session

    def store(self, name: str, *, mode: Literal["r", "r+", "w-"] = "r") -> HubStore:
        """Return the zarr store of a repository at a ref.

        Use it directly from zarr or xarray: ``zarr.open_array(hub.store(name))``,
        ``xarray.open_zarr(hub.store(name))``.

        Parameters
        ----------
        name : str
            ``user/name[:ref]``.
        mode : {"r", "r+", "w-"}
            ``"r"`` read-only, ``"r+"`` writable at a branch, ``"w-"`` create a new, empty
            repository (its first branch is the ref, ``main`` if absent) and return it writable.

        Raises
        ------
        InvalidNameError
            If ``name`` is malformed.
        NotFoundError
            If the repository or ref does not exist (modes ``"r"``, ``"r+"``).
        AlreadyExistsError
            If the repository exists (mode ``"w-"``).
        """
        if mode not in ("r", "r+", "w-"):
            raise InvalidArgumentError(f"mode must be 'r', 'r+' or 'w-', not {mode!r}")
        parsed = self._parse(name)
        if mode == "w-":
            parsed = parsed.with_ref(parsed.ref or _DEFAULT_BRANCH)
            _run(Repository(self.storage, parsed).create(str(parsed.ref)))
        store = self._store(parsed, read_only=mode == "r")
        _run(store.session.resolved())
        return store

    def _repo(self, name: str) -> tuple[Repository, Name]:
        parsed = self._parse(name)
        return Repository(self.storage, parsed), parsed

    def pin(self, name: str, *, message: str | None = None) -> str:
        """Return the name of a version that never changes, holding the state ``name`` has now:
        what a training run or a paper should record.

        At a tag or version id, that version. At a branch, the version its head started from
        if the head holds no write of its own (the state of its last tag, say); else the head
        is sealed now, as :meth:`tag` seals it but without a name (``message`` goes into the
        seal), and the branch goes on in a new head. No chunk is copied.

        Returns
        -------
        str
            ``user/name:<version id>``.

        Raises
        ------
        InvalidNameError
            If ``name`` is malformed.
        NotFoundError
            If the repository or ref does not exist.
        ReadOnlyError
            If ``name`` is a branch on a read-only root (HTTP): pin one of its tags.
        """
        repo, parsed = self._repo(name)
        version = _run(repo.sealed_state(parsed.ref, check_message(message)))
        return f"{parsed.repository}:{version}"

    def commit(self, name: str, message: str | None = None) -> str:
        """Seal the head of the branch ``name`` as a version of its history without a name
        (a tag without a name), with ``message``; no chunk is copied, and the branch goes on
        in a new head. :meth:`log` lists it; ``name:<version id>`` and ``as_of`` read it.

        A head holding no write of its own is not sealed: its state is already the version
        it started from, which is returned.

        Returns
        -------
        str
            The id of the sealed version.

        Raises
        ------
        InvalidNameError
            If ``name`` is malformed.
        InvalidArgumentError
            If ``name`` is a tag or version id, or ``message`` is neither a string nor
            ``None``.
        NotFoundError
            If the repository or branch does not exist.
        ReadOnlyError
            On a read-only root (HTTP).
        """
        return self.commit_state(name, message)[0]

    def commit_state(self, name: str, message: str | None = None) -> tuple[str, bool]:
        """:meth:`commit`, also saying whether a new version was sealed (``False``: the head
        held no write of its own, and the version its state already is was returned)."""
        repo, parsed = self._repo(name)
        return _run(repo.commit(parsed.ref, check_message(message)))

    def tag(self, name: str, tag: str, *, message: str | None = None) -> str:
        """Create an immutable tag of ``name``'s current state; no chunk is copied.

        Every argument is checked before anything is read or written.

        Returns
        -------
        str
            The id of the tagged (sealed) version.

        Raises
        ------
        InvalidNameError
            If ``name`` or ``tag`` is malformed.
        InvalidArgumentError
            If ``message`` is neither a string nor ``None``.
        NotFoundError
            If the repository or ref does not exist.
        AlreadyExistsError
            If a tag or branch named ``tag`` exists.
        """
        repo, parsed = self._repo(name)
        return _run(repo.tag(parsed.ref, tag, check_message(message)))

    def branch(self, name: str, new_branch: str) -> str:
        """Create a writable branch starting at ``name``'s current state.

        Returns
        -------
        str
            The id of the new branch's (empty, open) head version.

        Raises
        ------
        InvalidNameError
            If ``name`` or ``new_branch`` is malformed.
        NotFoundError
            If the repository or ref does not exist.
        AlreadyExistsError
            If a tag or branch named ``new_branch`` exists.
        """
        repo, parsed = self._repo(name)
        return _run(repo.branch(parsed.ref, new_branch))

    def delete_tag(self, name: str, tag: str) -> str:
        """Delete a tag; return the version it pointed at.

        The data it kept alive stays until :meth:`gc` collects it, and the tag's name is never
        reused (creating a tag or branch of that name raises ``AlreadyExistsError``), so a name
        someone saved never silently comes to mean other data.

        Raises
        ------
        InvalidNameError
            If ``name`` or ``tag`` is malformed.
        NotFoundError
            If the repository or the tag does not exist.
        """
        repo, _ = self._repo_only(name, "delete_tag")
        return _run(repo.delete_ref("tag", tag))

    def delete_branch(self, name: str, branch: str) -> str:
        """Delete a branch; return the head it pointed at.

        Its versions that no other ref reaches are left for :meth:`gc`; the name is never
        reused.

        Raises
        ------
        InvalidNameError
            If ``name`` or ``branch`` is malformed.
        InvalidArgumentError
            For the repository's default branch.
        NotFoundError
            If the repository or the branch does not exist.
        """
        repo, _ = self._repo_only(name, "delete_branch")
        return _run(repo.delete_ref("branch", branch))

    def gc(
        self,
        name: str,
        *,
        grace: float = DEFAULT_GRACE_S,
        dry_run: bool = True,
        expire_before: datetime | None = None,
        keep_last: int | None = None,
    ) -> GCReport:
        """Free the stored objects no branch or tag of ``name`` can reach any more.

        Collects what deleted tags and branches kept alive, rewrites superseded before a
        snapshot, and what crashed writers and sealers left behind. Only objects (and
        versions) older than ``grace`` seconds are touched, so writers and taggers at work
        meanwhile are safe.

        With ``expire_before`` or ``keep_last`` (retention), old untagged sealed versions are
        dropped too: ``hub log`` still lists them, marked expired, but they can no longer be
        read, and what only they used is freed. Tags, the versions branches need, each
        branch's state as of ``expire_before`` and its ``keep_last`` newest sealed versions
        stay.

        Parameters
        ----------
        name : str
            ``user/name``, without a ref.
        grace : float
            Seconds; younger objects and versions are kept. Default one hour.
        dry_run : bool
            Only report what would be freed (the default); pass ``False`` to delete.
        expire_before : datetime.datetime, optional
            Drop versions sealed before this time (with a zone), except each branch's newest
            one sealed before it: the branch as of any time from then on stays readable.
        keep_last : int, optional
            Keep each branch's ``keep_last`` newest sealed versions (>= 1); with
            ``expire_before``, a version either keeps stays.

        Returns
        -------
        GCReport
            Objects and bytes freed (or to free), unreachable versions, objects kept.

        Raises
        ------
        NotFoundError
            If the repository does not exist.
        InvalidArgumentError
            If ``grace`` is not a finite number >= 0, ``dry_run`` not a bool, ``keep_last``
            not a whole number >= 1, ``expire_before`` not a time with a zone, or retention is
            asked of a repository in storage layout 2 (nothing is read or deleted).
        """
        if (
            isinstance(grace, bool)
            or not isinstance(grace, int | float)
            or not 0 <= grace < math.inf
        ):
            raise InvalidArgumentError(
                f"grace must be a finite number of seconds >= 0, not {grace!r}"
            )
        from hubzarr.spec import check_flag

        check_flag(dry_run, "dry_run")
        retention = None  # (checked by collect before it reads anything)
        if expire_before is not None or keep_last is not None:
            retention = Retention(expire_before, keep_last)
        repo, _ = self._repo_only(name, "gc")
        return _run(collect(repo, grace=float(grace), dry_run=bool(dry_run), retention=retention))

    def verify(
        self,
        name: str,
        *,
        progress: Callable[[int, int], None] | None = None,
        as_of: datetime | None = None,
    ) -> VerifyReport:
        """Read and check every stored object of a version.

        Checks each object's CRC-32C, validates array metadata, and decompresses each chunk
        with its array's codecs. Objects are read from storage, never from the local cache.

        Parameters
        ----------
        name : str
            ``user/name[:ref]``: a branch's head, a tag or a version id.
        progress : callable, optional
            Called as ``progress(done, total)`` after each object.

        Returns
        -------
        VerifyReport
            Objects and bytes checked and every problem found (``report.ok``).

        Raises
        ------
        NotFoundError
            If the repository or ref does not exist.
        InvalidArgumentError
            If ``progress`` is neither callable nor ``None``.
        """
        if progress is not None and not callable(progress):
            raise InvalidArgumentError(
                f"progress must be a function progress(done, total) or None, not {progress!r}"
            )
        from hubzarr.integrity import verify_store
        from hubzarr.stores import HubStore

        # What storage holds is checked, never the local cache's copies.
        storage = self.storage
        uncached = storage.inner if isinstance(storage, CachedStorage) else storage
        parsed = self._parse(name, as_of)
        store = HubStore(self.root, parsed, read_only=True, storage=uncached)
        return _run(verify_store(store, progress))

    def copy(
        self,
        src: str,
        dst: str,
        *,
        tag: str | None = None,
        resize: tuple[int, int] | None = None,
        storage_options: dict[str, Any] | None = None,
        progress: Progress | None = None,
        from_root: Hub | RootLike = None,
        to_root: Hub | RootLike = None,
    ) -> CopyReport:
        """Copy a repository to another root or name, data into a repository, or a version
        out of one.

        Each of ``src`` and ``dst`` is a repository (``user/name[:ref]`` at this hub's root,
        ``ROOT::user/name[:ref]`` at another, or at ``from_root`` / ``to_root``) or a file or
        store outside any hub (a local path or an fsspec URL); :mod:`hubzarr.addresses` gives
        the rule that tells them apart, and refuses a word that could be both.

        - repository to repository: the whole repository, every version, tag and branch
          (:mod:`hubzarr.replicate`): objects byte for byte with their checksums checked,
          only what the destination lacks (a killed copy resumes; a repeated one copies
          nothing), a new destination visible only once complete, one that shares history
          brought up to date (refused, unchanged, if its branches have changes the source
          lacks). With a ref on the source (``alice/mnist:v1``), a new repository holding
          only that state as its first version (a shallow copy; a tag keeps its name);
        - repository to ``.zarr`` folder or URL (any path not ending in ``.npy``): a plain
          zarr (format 2) store of that version, objects copied byte for byte (checksums
          checked), the metadata last: what zarr, xarray and TensorStore open without hubzarr.
          The version's index is read a shard at a time, in bounded memory whatever the number
          of chunks. An interrupted export resumes where it stopped when run again;
        - repository to ``.npy``: the array, written in bounded memory;
        - ``.npy`` file to repository: an array; ``.npz``: a group of its arrays;
        - HDF5 file (``.h5``, ``.hdf5``, ``.hdf``, ``.he5``, ``.nc``; needs
          ``hubzarr[hdf5]``) to repository: a group of its groups and datasets, attributes
          kept;
        - folder of images (``folder/<class>/<image>``, or images directly in it; needs
          ``hubzarr[images]``) to repository: a group of ``images`` (N, H, W, C) uint8 and
          ``labels`` (class indices; the ``classes`` attribute names them);
        - zarr store (format 2 or 3: a ``.zarr`` folder or a URL) to repository: its arrays
          and groups, rewritten as format 2.

        An import checks the whole source before the repository is created (a refused one
        leaves the root as it was), reads it in bounded memory while it writes chunks in
        parallel, and deletes the new repository again if reading the values fails. The
        rules of each kind (links, attributes, dtypes, chunks, image modes) are in
        :mod:`hubzarr.imports`.

        Parameters
        ----------
        src, dst : str
            Where from and where to.
        tag : str, optional
            Tag the imported repository's state with this name (imports only).
        resize : tuple of int, optional
            ``(height, width)``: resize every image of an imported folder of images (and
            convert each to the mode most have); without it, images must all have one size
            and mode.
        storage_options : dict, optional
            fsspec options for the file or store side, when it is a URL.
        progress : callable, optional
            Called as ``progress(objects done, objects, bytes done, bytes)``.
        from_root, to_root : Hub or str, optional
            The root of the source or destination repository, when not this hub's (a
            :class:`Hub` carries its storage options); not together with ``ROOT::`` in that
            word.

        Returns
        -------
        CopyReport
            Objects and bytes written, objects skipped, seconds.

        Raises
        ------
        InvalidArgumentError
            If either side is ambiguous, both or neither are repositories, the source is
            missing, corrupt, truncated or of a kind hubzarr does not import, holds objects,
            strings or records, holds images of several sizes or modes without ``resize``, or
            needs an extra that is not installed (nothing is created).
        AlreadyExistsError
            If the destination repository exists (an import, a shallow copy) or is another
            repository than the source (a copy), or the destination store holds a store or
            files this export would not write.
        DivergedError
            If a branch or tag of the destination repository has changes the source lacks.
        ConflictError
            If a copy's source or destination branch changed while it ran in a way it
            cannot carry (run it again: it resumes).
        ReadOnlyError
            If the destination is a read-only (HTTP) root.
        NotFoundError
            If the source repository or ref does not exist.
        CorruptChunkError
            If a source object fails its checksum (nothing is published: a copy's new
            repository or refs, an export's store metadata).
        """
        import time

        from hubzarr.addresses import PathLocation, RepoLocation, classify
        from hubzarr.transfer import CopyReport

        if progress is not None and not callable(progress):
            raise InvalidArgumentError(f"progress must be a function or None, not {progress!r}")
        if tag is not None:
            check_ref(tag, what="tag")
        user = resolve_namespace()
        source = classify(src, default_user=user, exists=os.path.lexists)
        target = classify(dst, default_user=user, exists=os.path.lexists)
        if resize is not None and not isinstance(source, PathLocation):
            raise InvalidArgumentError("resize= applies to imports of folders of images")
        start = time.perf_counter()
        if isinstance(source, RepoLocation) and isinstance(target, PathLocation):
            if tag is not None:
                raise InvalidArgumentError("tag= names the state of an import; an export has none")
            hub = self._at(source.root, from_root)
            done = hub._export(source.name, target, storage_options, progress)
        elif isinstance(source, PathLocation) and isinstance(target, RepoLocation):
            done = self._at(target.root, to_root)._import(
                source, target.name, tag, resize=resize, storage_options=storage_options,
                progress=progress,
            )  # fmt: skip
        elif isinstance(source, RepoLocation) and isinstance(target, RepoLocation):
            if tag is not None:
                raise InvalidArgumentError(
                    "tag= names the state of an import; a copy carries the source's tags"
                )
            done = self._at(source.root, from_root)._replicate(
                source.name, self._at(target.root, to_root), target.name, progress
            )
        else:
            raise InvalidArgumentError(
                f"neither {src!r} nor {dst!r} is a repository: one side must be user/name[:ref] "
                "or ROOT::user/name[:ref]; see `hub cp --help` for how words are read"
            )
        return CopyReport(str(source), str(target), *done, time.perf_counter() - start)

    def _replicate(
        self, name: Name, dest: Hub, dest_name: Name, progress: Progress | None
    ) -> tuple[int, int, int, int, int]:
        from hubzarr.replicate import replicate, shallow_copy

        if dest_name.ref is not None:
            raise InvalidArgumentError(
                f"the destination of a copy is a repository, named without a ref, not "
                f"{dest_name}: a copy carries every branch and tag (or, with a ref on the "
                "source, makes a new repository of that one state)"
            )
        if self.storage.url == dest.storage.url and name.with_ref(None) == dest_name:
            raise InvalidArgumentError(
                f"{name} and {dest_name} under {self.storage.url} are the same repository; "
                "copy it to another name or root"
            )
        if dest.storage.read_only:
            raise ReadOnlyError(
                f"cannot copy to {dest.storage.url}: that root is read-only (HTTP); copy to "
                "a local folder, memory, S3 or GCS root"
            )
        src, dst = Repository(self.storage, name), Repository(dest.storage, dest_name)
        if name.ref is None:
            done = _run(replicate(src, dst, progress))
        else:
            done = _run(shallow_copy(src, name.ref, dst, progress))
        return done.objects, done.bytes, done.skipped, done.versions, done.refs

    def _at(self, root: str | None, given: Hub | RootLike) -> Hub:
        """The hub of one side of a copy: its ``ROOT::`` or the root given for it."""
        if root is not None and given is not None:
            raise InvalidArgumentError(
                f"a root is given twice for one side of the copy ({root}:: and {given!r}); "
                "give it once"
            )
        if isinstance(given, Hub):
            return given
        if given is not None:
            return Hub(given)
        return self if root is None else Hub(root)

    def _export(
        self,
        name: Name,
        target: PathLocation,
        storage_options: dict[str, Any] | None,
        progress: Progress | None,
    ) -> tuple[int, int, int, int, int]:
        from hubzarr.transfer import export_zarr

        if target.suffix == ".npy":
            return self._export_npy(name, target)
        session = self._reader(name)
        dest = open_storage(target.path, storage_options)
        if dest.read_only:
            raise ReadOnlyError(f"cannot export to {target}: that location is read-only")
        objects, nbytes, skipped = _run(export_zarr(session, dest, progress))
        return objects, nbytes, skipped, 0, 0

    def _export_npy(self, name: Name, target: PathLocation) -> tuple[int, int, int, int, int]:
        import numpy as np

        if "://" in target.path:
            raise InvalidArgumentError(
                f"cannot export to {target}: .npy files are written to local paths only"
            )
        path = os.path.expanduser(target.path)
        if os.path.lexists(path):
            raise AlreadyExistsError(f"{target} exists; choose a new file or delete it first")
        arr = self.load_array(str(name), mode="r")
        partial = f"{path}.partial-{os.getpid()}"
        try:
            out = np.lib.format.open_memmap(partial, "w+", arr.dtype, arr.shape)
            rows = arr.chunks[0]
            for lo in range(0, arr.shape[0], rows):  # a band of chunks at a time
                out[lo : lo + rows] = arr[lo : lo + rows]
            out.flush()
            del out
            os.replace(partial, path)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
        return 1, os.path.getsize(path), 0, 0, 0

    def _import(
        self,
        source: PathLocation,
        name: Name,
        tag: str | None,
        *,
        resize: tuple[int, int] | None = None,
        storage_options: dict[str, Any] | None = None,
        progress: Progress | None = None,
    ) -> tuple[int, int, int, int, int]:
        from hubzarr.imports import open_source
        from hubzarr.session import Session

        if name.ref is not None:
            raise InvalidArgumentError(
                f"an import creates a repository; name it without a ref, not {name} "
                "(tag= / --tag tags the result)"
            )
        # The whole source is checked before the repository is created; what only reading the
        # values finds (a corrupt chunk, a truncated image) deletes the repository again.
        with open_source(source.path, resize=resize, storage_options=storage_options) as found:
            # Filled (and tagged) as a draft, published whole: an import killed at any point
            # leaves no repository, and one that fails deletes its draft.
            repo, at = Repository(self.storage, name), name.with_ref(_DEFAULT_BRANCH)
            _run(repo.create(_DEFAULT_BRANCH, initial=found.documents(), publish=False))
            try:
                store = self._store(
                    at, read_only=False, session=Session(self.storage, at, repository=repo)
                )
                _fill(store, found, progress)
                if tag is not None:
                    _run(repo.tag(None, tag))
                _run(repo.publish())
            except BaseException:
                with contextlib.suppress(HubError):
                    _run(repo.discard())
                raise
        refs = 1 if tag is None else 2  # the default branch, and the tag
        return found.nchunks, found.nbytes, 0, 1, refs

    def _new_group(self, name: Name) -> HubGroup:
        """A new repository holding an empty group (``AlreadyExistsError`` if it exists)."""
        from hubzarr.groups import HubGroup
        from hubzarr.metadata import group_documents

        branch = name.ref or _DEFAULT_BRANCH
        _run(Repository(self.storage, name).create(branch, initial=group_documents()))
        return HubGroup(self._store(name.with_ref(branch), read_only=False))

    def _repo_only(self, name: str, action: str) -> tuple[Repository, Name]:
        repo, parsed = self._repo(name)
        if parsed.ref is not None:
            raise InvalidArgumentError(
                f"{action} takes a repository name without a ref, not {name!r}"
            )
        return repo, parsed

    def log(
        self,
        name: str,
        *,
        limit: int | None = None,
        as_of: datetime | None = None,
        graph: bool = False,
    ) -> list[LogEntry]:
        """Return the versions leading to ``name`` (as of ``as_of``), newest first, at most
        ``limit`` of them: through each version's parent, or with ``graph``, through the
        versions merges took in too (each version listed after every one descending from it,
        as ``hub log --graph`` draws them).

        Raises
        ------
        InvalidArgumentError
            If ``limit`` is not a positive integer or ``None``.
        NotFoundError
            If the repository or ref does not exist.
        """
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise InvalidArgumentError(f"limit must be a positive integer or None, not {limit!r}")
        if not isinstance(graph, bool):
            raise InvalidArgumentError(f"graph must be True or False, not {graph!r}")
        parsed = self._parse(name, as_of)
        return _run(Repository(self.storage, parsed).log(parsed.ref, limit, graph=graph))

    def diff(
        self,
        a: str,
        b: str,
        *,
        a_as_of: datetime | None = None,
        b_as_of: datetime | None = None,
    ) -> Diff:
        """Compare two states of one repository: for each array and group that differs, its
        metadata changes (shape, dtype, chunks, codec, attributes) and the chunks added,
        changed and deleted (:meth:`NodeDiff.region` gives each chunk's index region).

        Only the index shards the two states do not share are read: the cost grows with
        what changed between them, not with the arrays' size.

        Parameters
        ----------
        a, b : str
            ``user/name[:ref]`` each (a branch, tag or version id); ``b`` may be a ref or
            version id alone, of ``a``'s repository.
        a_as_of, b_as_of : datetime.datetime, optional
            Read that side's branch as it was then (as :meth:`load`'s ``as_of``).

        Raises
        ------
        InvalidArgumentError
            If the two names are of different repositories, or a time has no zone.
        NotFoundError
            If a repository or ref does not exist.
        """
        from hubzarr.history import Diff, diff_states

        left = self._parse(a, a_as_of)
        right = self._parse(b if "/" in b else f"{left.repository}:{b}", b_as_of)
        if left.repository != right.repository:
            raise InvalidArgumentError(
                f"diff compares two states of one repository, not {left.repository} and "
                f"{right.repository}: copy one into the other's history first, or compare "
                "their arrays' values"
            )
        sessions = self._reader(left), self._reader(right)

        async def run() -> Diff:
            states = await asyncio.gather(*(s.state() for s in sessions))
            versions = await asyncio.gather(*(s.resolved() for s in sessions))
            nodes, other = await diff_states(
                states[0], states[1], (sessions[0].read, sessions[1].read)
            )
            a_name, b_name = (f"{left.repository}:{v.version}" for v in versions)
            return Diff(a_name, b_name, nodes, other)

        return _run(run())

    def revert(self, name: str, to: str, *, message: str | None = None) -> str:
        """Give the branch ``name`` a new version equal to an older state ``to`` (a ref or
        version id of the same repository, e.g. one from :meth:`log`): history is never
        rewritten, and the branch goes on from that version. Chunks that differ are copied
        into it; a reader sees the branch jump to that state in one step.

        Returns
        -------
        str
            The id of the new version.

        Raises
        ------
        InvalidArgumentError
            If ``name`` is not a branch, or ``to`` names another repository.
        NotFoundError
            If the repository, branch or ``to`` does not exist.
        ConflictError
            If the branch was sealed by another writer meanwhile: run it again.
        """
        from hubzarr.history import revert_writes

        branch, repo = self._branch(name, "revert")
        target = self._reader(self._same_repository(branch, to))
        check_message(message)

        async def run() -> str:
            base = await repo.sealed_state(branch.ref)
            nothing: dict[str, Location | None] = {}
            current = (await repo.sealed_index(base), nothing)
            version = (await target.resolved()).version
            writes = await revert_writes(current, await target.state())
            text = message if message is not None else f"revert to {version}"
            return await repo.publish_state(str(branch.ref), base, writes, text, strict=False)

        return _run(run())

    def merge(
        self,
        name: str,
        source: str,
        *,
        strategy: Literal["ours", "theirs"] | None = None,
        message: str | None = None,
    ) -> str:
        """Merge ``source`` (a branch, tag or version id of the same repository) into the
        branch ``name``: a three-way merge, chunk by chunk, against their common ancestor.

        A chunk (or metadata document) changed on one side only is taken from it; changed on
        both sides to the same bytes, it is fine; changed differently on both, it is a
        conflict, and nothing changes: :class:`MergeConflictError` lists each array and
        region. ``strategy="ours"`` keeps this branch's side of every conflict,
        ``"theirs"`` takes ``source``'s. The result is a new version of the branch whose
        record names ``source``'s version as merged (a second parent, shown by the log);
        chunks taken are copied into it, and a reader sees the branch move to it in one step.
        A ``source`` that is a branch has its head committed first.

        Returns
        -------
        str
            The id of the new version (the branch's current version when ``source`` holds
            nothing it lacks).

        Raises
        ------
        InvalidArgumentError
            If ``name`` is not a branch, ``source`` is the same branch, names another
            repository, or ``strategy`` is not ``"ours"``, ``"theirs"`` or ``None``.
        NotFoundError
            If the repository, branch or source does not exist.
        MergeConflictError
            If both sides changed the same chunks or metadata differently (nothing changes).
        ConflictError
            If the branch was sealed by another writer meanwhile: run it again.
        """
        from hubzarr.history import merge_writes

        if strategy not in (None, "ours", "theirs"):
            raise InvalidArgumentError(
                f"strategy must be 'ours', 'theirs' or None, not {strategy!r}"
            )
        check_message(message)
        branch, repo = self._branch(name, "merge into")
        other = self._same_repository(branch, source)
        if other.ref == branch.ref:
            raise InvalidArgumentError(f"cannot merge {name} into itself")

        async def run() -> str | HubError:
            ours = await repo.sealed_state(branch.ref)
            theirs = await repo.sealed_state(other.ref)
            base = await repo.common_ancestor(ours, theirs)
            if base == theirs:
                return ours  # already holds everything the source has
            indexes = await asyncio.gather(
                *(
                    repo.sealed_index(v) if v is not None else _empty_index()
                    for v in (base, ours, theirs)
                )
            )
            at_base, at_ours, at_theirs = indexes
            writes, conflicts = await merge_writes(
                at_base, at_ours, at_theirs, repo.same_bytes, strategy
            )
            if conflicts:
                return await _conflict_error(repo, name, source, conflicts, indexes[1:])
            text = message if message is not None else f"merge {other.ref} into {branch.ref}"
            return await repo.publish_state(str(branch.ref), ours, writes, text, merged=(theirs,))

        def exhausted() -> ConflictError:
            return ConflictError(
                f"{name} kept changing while {source} was merged into it; merge again when "
                "its writers pause"
            )

        # Worked out again from the branch's new state while writes land in it meanwhile; a
        # conflict is returned, not raised, as trying again would not settle it.
        found = _run(compare_and_swap(run, exhausted=exhausted))
        if isinstance(found, HubError):
            raise found
        return found

    def _branch(self, name: str, action: str) -> tuple[Name, Repository]:
        """``name`` parsed as a branch (its ref, or the default branch) and its repository.

        Raises
        ------
        InvalidArgumentError
            If ``name`` is a tag or version id.
        """
        parsed = self._parse(name)
        repo = Repository(self.storage, parsed)
        resolved = _run(repo.resolve(parsed.ref))
        if resolved.kind != "branch":
            raise InvalidArgumentError(
                f"{parsed.repository}:{resolved.ref} is a {resolved.kind}, which never changes: "
                f"{action} a branch ({parsed.repository}:<branch>)"
            )
        return parsed.with_ref(resolved.ref), repo

    def _same_repository(self, branch: Name, other: str) -> Name:
        """``other`` (a name, or a ref of ``branch``'s repository) parsed, refused if it is of
        another repository."""
        parsed = self._parse(other if "/" in other else f"{branch.repository}:{other}")
        if parsed.repository != branch.repository:
            raise InvalidArgumentError(
                f"{other} is of another repository than {branch.repository}: revert and "
                "merge work within one repository (copy it in first with hub cp)"
            )
        return parsed

    def ls(self, prefix: str = "") -> list[str]:
        """Return the names (``user/name``) of the repositories whose name starts with prefix.

        Raises
        ------
        InvalidArgumentError
            If ``prefix`` is not a string.
        """
        _check_prefix(prefix)
        return _run(list_repositories(self.storage, prefix))

    def describe(self, name: str) -> RepoSummary:
        """Summarise a repository: bytes and objects stored, versions, branches, tags and
        when it last changed.

        One listing of the repository's folder and the reads of its refs, run concurrently.

        Parameters
        ----------
        name : str
            ``user/name``, without a ref.

        Returns
        -------
        RepoSummary
            The repository at a glance.

        Raises
        ------
        InvalidNameError
            If ``name`` is malformed (checked before any I/O).
        InvalidArgumentError
            If ``name`` has a ref (a summary is of the whole repository).
        NotFoundError
            If the repository does not exist.
        """
        repo, _ = self._repo_only(name, "describe")
        return _run(summarize(repo))

    def describe_all(self, prefix: str = "") -> list[RepoSummary]:
        """Summarise (as :meth:`describe` does) the repositories whose name starts with
        ``prefix``, sorted by name: what ``hub ls -l`` shows.

        The repositories are summarised concurrently; one deleted meanwhile is left out.

        Raises
        ------
        InvalidArgumentError
            If ``prefix`` is not a string.
        """
        _check_prefix(prefix)

        async def listed() -> list[RepoSummary]:
            names = await list_repositories(self.storage, prefix)
            return await summarize_all(
                Repository(self.storage, parsed)
                for parsed in map(_repository_name, names)
                if parsed is not None
            )

        return _run(listed())

    def delete(self, name: str) -> None:
        """Delete a repository with all its versions.

        Raises
        ------
        InvalidArgumentError
            If ``name`` has a ref (delete repositories, not refs).
        NotFoundError
            If the repository does not exist.
        """
        repo, _ = self._repo_only(name, "delete")
        _run(repo.delete())


def _check_prefix(prefix: object) -> None:
    if not isinstance(prefix, str):
        raise InvalidArgumentError(f"prefix must be a string, not {prefix!r}")


#: Chunks of a block read from a source are written in pieces of about this many bytes ...
_PIECE_BYTES = 8 * 2**20
#: ... on this many threads (encoding, checksums and storage calls release the GIL) ...
_WRITERS = max(2, os.cpu_count() or 1)
#: ... with at most this many pieces waiting or in flight (bounded memory).
_PIECES_IN_FLIGHT = 2 * _WRITERS


def _fill(store: HubStore, source: ImportSource, progress: Progress | None) -> None:
    """Write the values of every array of ``source`` into the new repository at ``store``.

    This thread reads the source a block of whole chunks at a time (its reader decodes in
    parallel where it can) while a pool of threads encodes and stores the pieces of the blocks
    read before, with the fenced writes of any bulk write; chunks of fill values are not
    stored. ``progress`` is called here, after each piece is stored.
    """
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

    from hubzarr.arrays import HubArray
    from hubzarr.bulk import write_region
    from hubzarr.imports import Block
    from hubzarr.indexing import chunk_regions
    from hubzarr.metadata import open_zarr_array

    objects, nbytes = source.nchunks, source.nbytes
    done = [0, 0]
    pending: set[Future[tuple[int, int]]] = set()

    def write(arr: HubArray, piece: Block) -> tuple[int, int]:
        write_region(arr, piece.values, piece.origin, new=True)
        grid = (-(-n // c) for n, c in zip(piece.values.shape, arr.chunks, strict=True))
        return math.prod(grid), piece.values.nbytes

    def settle(until: int) -> None:
        nonlocal pending
        while len(pending) > until:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                chunks, size = future.result()
                done[0] += chunks
                done[1] += size
                if progress is not None:
                    progress(done[0], objects, done[1], nbytes)

    with ThreadPoolExecutor(_WRITERS) as pool:
        try:
            for item in source.arrays:
                arr = HubArray(store, open_zarr_array(store, item.key), item.key)
                with contextlib.closing(item.blocks()) as blocks:
                    for block in blocks:  # whole chunks, from a chunk edge: so are the pieces
                        shape, itemsize = block.values.shape, item.dtype.itemsize
                        for inside in chunk_regions(shape, item.chunks, itemsize, _PIECE_BYTES):
                            origin = tuple(
                                o + s.start for o, s in zip(block.origin, inside, strict=True)
                            )
                            piece = Block(origin, block.values[inside])
                            pending.add(pool.submit(write, arr, piece))
                            settle(_PIECES_IN_FLIGHT)
            settle(0)
        finally:
            for future in pending:
                future.cancel()


def _repository_name(name: str) -> Name | None:
    """The parsed name of a listed repository folder; ``None`` for a folder no name can
    address (written by hand: ``hub ls`` shows it, but no operation reaches it)."""
    try:
        return parse_name(name, default_user=name.partition("/")[0])  # always user/name
    except InvalidNameError:
        return None


def _rebuild_hub(root: str, options: dict[str, Any], storage: Storage | None) -> Hub:
    return Hub(root, options, storage=storage)


def array(
    shape: Any,
    name: str,
    *,
    dtype: Any = "float32",
    chunks: Any = None,
    fill_value: Any = 0,
    compressor: Any = _DEFAULT,
    overwrite: bool = False,
    root: RootLike = None,
) -> HubArray:
    """Create an array; see :meth:`Hub.array`."""
    return Hub(root).array(
        shape,
        name,
        dtype=dtype,
        chunks=chunks,
        fill_value=fill_value,
        compressor=compressor,
        overwrite=overwrite,
    )


def from_dask(
    data: Any,
    name: str,
    *,
    chunks: Any = None,
    fill_value: Any = 0,
    compressor: Any = _DEFAULT,
    root: RootLike = None,
) -> HubArray:
    """Create an array from a dask array; see :meth:`Hub.from_dask`."""
    return Hub(root).from_dask(
        data, name, chunks=chunks, fill_value=fill_value, compressor=compressor
    )


def from_numpy(
    data: Any,
    name: str,
    *,
    chunks: Any = None,
    fill_value: Any = 0,
    compressor: Any = _DEFAULT,
    root: RootLike = None,
) -> HubArray:
    """Create an array from a numpy array; see :meth:`Hub.from_numpy`."""
    return Hub(root).from_numpy(
        data, name, chunks=chunks, fill_value=fill_value, compressor=compressor
    )


def load(
    name: str,
    *,
    mode: Literal["r", "r+"] = "r+",
    as_of: datetime | None = None,
    root: RootLike = None,
) -> HubArray | HubGroup:
    """Open an array or group by name; see :meth:`Hub.load`."""
    return Hub(root).load(name, mode=mode, as_of=as_of)


def load_array(
    name: str,
    *,
    mode: Literal["r", "r+"] = "r+",
    as_of: datetime | None = None,
    root: RootLike = None,
) -> HubArray:
    """Open an array by name; see :meth:`Hub.load_array`."""
    return Hub(root).load_array(name, mode=mode, as_of=as_of)


def load_group(
    name: str,
    *,
    mode: Literal["r", "r+"] = "r+",
    as_of: datetime | None = None,
    root: RootLike = None,
) -> HubGroup:
    """Open a repository's group by name; see :meth:`Hub.load_group`."""
    return Hub(root).load_group(name, mode=mode, as_of=as_of)


def group(name: str, *, root: RootLike = None) -> HubGroup:
    """Create or open a repository holding a group; see :meth:`Hub.group`."""
    return Hub(root).group(name)


def store(name: str, *, mode: Literal["r", "r+", "w-"] = "r", root: RootLike = None) -> HubStore:
    """Return a repository's zarr store; see :meth:`Hub.store`."""
    return Hub(root).store(name, mode=mode)


def reader(name: str, *, as_of: datetime | None = None, root: RootLike = None) -> Session:
    """Return a reader of one version of a repository; see :meth:`Hub.reader`."""
    return Hub(root).reader(name, as_of=as_of)


def pin(name: str, *, message: str | None = None, root: RootLike = None) -> str:
    """Name a version that never changes, with ``name``'s state now; see :meth:`Hub.pin`."""
    return Hub(root).pin(name, message=message)


def commit(name: str, message: str | None = None, *, root: RootLike = None) -> str:
    """Seal a branch's head as an unnamed version; see :meth:`Hub.commit`."""
    return Hub(root).commit(name, message)


def tag(name: str, tag: str, *, message: str | None = None, root: RootLike = None) -> str:
    """Tag a version; see :meth:`Hub.tag`."""
    return Hub(root).tag(name, tag, message=message)


def branch(name: str, new_branch: str, *, root: RootLike = None) -> str:
    """Create a branch; see :meth:`Hub.branch`."""
    return Hub(root).branch(name, new_branch)


def log(
    name: str,
    *,
    limit: int | None = None,
    as_of: datetime | None = None,
    root: RootLike = None,
) -> list[LogEntry]:
    """Return a repository's history; see :meth:`Hub.log`."""
    return Hub(root).log(name, limit=limit, as_of=as_of)


def revert(name: str, to: str, *, message: str | None = None, root: RootLike = None) -> str:
    """Give a branch a new version equal to an older state; see :meth:`Hub.revert`."""
    return Hub(root).revert(name, to, message=message)


def merge(
    name: str,
    source: str,
    *,
    strategy: Literal["ours", "theirs"] | None = None,
    message: str | None = None,
    root: RootLike = None,
) -> str:
    """Merge a branch, tag or version into a branch; see :meth:`Hub.merge`."""
    return Hub(root).merge(name, source, strategy=strategy, message=message)


def diff(
    a: str,
    b: str,
    *,
    a_as_of: datetime | None = None,
    b_as_of: datetime | None = None,
    root: RootLike = None,
) -> Diff:
    """Compare two states of one repository; see :meth:`Hub.diff`."""
    return Hub(root).diff(a, b, a_as_of=a_as_of, b_as_of=b_as_of)


def ls(prefix: str = "", *, root: RootLike = None) -> list[str]:
    """List repositories; see :meth:`Hub.ls`."""
    return Hub(root).ls(prefix)


def describe(name: str, *, root: RootLike = None) -> RepoSummary:
    """Summarise a repository; see :meth:`Hub.describe`."""
    return Hub(root).describe(name)


def describe_all(prefix: str = "", *, root: RootLike = None) -> list[RepoSummary]:
    """Summarise the repositories under a root; see :meth:`Hub.describe_all`."""
    return Hub(root).describe_all(prefix)


def delete(name: str, *, root: RootLike = None) -> None:
    """Delete a repository; see :meth:`Hub.delete`."""
    Hub(root).delete(name)


def delete_tag(name: str, tag: str, *, root: RootLike = None) -> str:
    """Delete a tag; see :meth:`Hub.delete_tag`."""
    return Hub(root).delete_tag(name, tag)


def delete_branch(name: str, branch: str, *, root: RootLike = None) -> str:
    """Delete a branch; see :meth:`Hub.delete_branch`."""
    return Hub(root).delete_branch(name, branch)


def gc(
    name: str,
    *,
    grace: float = DEFAULT_GRACE_S,
    dry_run: bool = True,
    expire_before: datetime | None = None,
    keep_last: int | None = None,
    root: RootLike = None,
) -> GCReport:
    """Collect garbage; see :meth:`Hub.gc`."""
    return Hub(root).gc(
        name, grace=grace, dry_run=dry_run, expire_before=expire_before, keep_last=keep_last
    )


def verify(
    name: str, *, progress: Callable[[int, int], None] | None = None, root: RootLike = None
) -> VerifyReport:
    """Verify a version; see :meth:`Hub.verify`."""
    return Hub(root).verify(name, progress=progress)


def copy(
    src: str,
    dst: str,
    *,
    tag: str | None = None,
    resize: tuple[int, int] | None = None,
    storage_options: dict[str, Any] | None = None,
    progress: Progress | None = None,
    root: RootLike = None,
    from_root: Hub | RootLike = None,
    to_root: Hub | RootLike = None,
) -> CopyReport:
    """:meth:`Hub.copy` on the default hub (or ``root``)."""
    return Hub(root).copy(
        src,
        dst,
        tag=tag,
        resize=resize,
        storage_options=storage_options,
        progress=progress,
        from_root=from_root,
        to_root=to_root,
    )


def _moment(as_of: Any) -> float:
    """``as_of`` as seconds since the epoch.

    Raises
    ------
    InvalidArgumentError
        If it is not a datetime, or has no time zone (a naive time means no one instant).
    """
    if not isinstance(as_of, datetime):
        raise InvalidArgumentError(
            f"as_of must be a datetime with a time zone, not {type(as_of).__name__} ({as_of!r})"
        )
    if as_of.tzinfo is None or as_of.utcoffset() is None:
        raise InvalidArgumentError(
            f"as_of {as_of.isoformat()} has no time zone, so it names no one instant: give "
            "one, as datetime(2026, 1, 2, 15, 0, tzinfo=datetime.timezone.utc), or "
            "'2026-01-02T15:00Z' / '2026-01-02T16:00+01:00' on the command line"
        )
    return as_of.timestamp()


async def _empty_index() -> Any:
    from hubzarr.index import DictIndex

    return DictIndex({})


async def _conflict_error(
    repo: Repository, name: str, source: str, conflicts: Any, sides: Any
) -> HubError:
    """The :class:`MergeConflictError` of a merge: each array and group, its chunk regions
    and metadata fields in conflict."""
    from hubzarr.errors import MergeConflictError
    from hubzarr.history import nodes_of

    session_reads = (
        lambda key: _read_at(repo, sides[0], key),
        lambda key: _read_at(repo, sides[1], key),
    )
    nodes, other = await nodes_of(conflicts, (sides[0], {}), (sides[1], {}), session_reads)
    lines = []
    for node in nodes:
        where = node.path or "/"
        regions = [
            "[" + ", ".join(f"{r.start}:{r.stop}" for r in node.region(c)) + "]"
            for c in node.changed + node.added + node.deleted
        ]
        fields = list(node.metadata)
        parts = ([f"metadata ({', '.join(fields)})"] if fields else []) + regions[:10]
        more = f" and {len(regions) - 10} more" if len(regions) > 10 else ""
        lines.append(f"{where}: {', '.join(parts)}{more}")
    lines += [f"{key}" for key in other]
    return MergeConflictError(
        f"merging {source} into {name}: {len(conflicts)} chunks or documents changed "
        f"differently on both sides: {'; '.join(lines)}. The branch's state is unchanged "
        "(writes not committed yet were committed); settle them with strategy='ours' or "
        "'theirs' (hub merge --ours / --theirs), or change one side and merge again",
        nodes,
    )


async def _read_at(repo: Repository, index: Any, key: str) -> bytes | None:
    """The payload of ``key`` in a sealed version's ``index``, checked."""
    from hubzarr import frame

    loc = await index.get(key)
    if loc is None:
        return None
    raw = await repo.storage.read(repo.files.object_path(loc, key))
    if raw is None:
        return None
    where = f"{repo.name} version {loc.version} key {key!r}"
    payload = frame.decode(raw, where, frame.binding(loc.version, key, loc.generation))
    return None if payload is None else bytes(payload)
