"""The zarr Store of one repository at one ref: a thin adapter over a :class:`Session`.

A :class:`HubStore` turns zarr's ``Store`` calls (buffers, byte ranges, listings, sync
variants) into calls of its :class:`~hubzarr.session.Session`, which owns the copy-on-write
protocol: at a branch every write goes to the open head, fenced against seals, as the key's next
write-once generation; a deletion is a tombstone; at a tag or sealed version each key is one
storage read and writes are refused.

Each group's consolidated metadata, ``<group>/.zmetadata``, is virtual: built on read from the
``.zgroup``, ``.zarray`` and ``.zattrs`` keys at the store's version, so it can never go stale
(xarray and ``zarr.open_consolidated`` read it; writes of it are accepted and dropped). At a
sealed version the keys are in the index in memory and the document is built once per store; at
a branch's head it takes the same listing :meth:`HubStore.list` does.
"""

from __future__ import annotations

import asyncio
import builtins
import json
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from typing import Any

from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype
from zarr.core.sync import sync

from hubzarr.cache import open_cached
from hubzarr.config import resolve_namespace, resolve_root, resolve_storage_options
from hubzarr.errors import FormatError
from hubzarr.names import Name, parse_name
from hubzarr.session import Session, check_key, conditional_writes
from hubzarr.storage import Storage, check_root, public_options

__all__ = [
    "HubStore",
    "KeySetListing",
    "StoredNode",
    "conditional_writes",
    "is_metadata",
    "slice_payload",
]

#: zarr format 2's consolidated metadata key, served virtually (see the module docstring).
_ZMETADATA = ".zmetadata"
#: The names of zarr format 2's metadata files (a ``.zmetadata`` is built, never stored).
_METADATA_FILES = frozenset({".zgroup", ".zarray", ".zattrs"})
#: Deletions in flight at once in :meth:`HubStore.delete_dir`, and metadata reads in flight
#: while a ``.zmetadata`` is built.
_DELETE_CONCURRENCY = _METADATA_CONCURRENCY = 32


def _consolidated_group(key: str) -> str | None:
    """The prefix (``""`` or ``"a/b/"``) of the group whose ``.zmetadata`` ``key`` is, if any."""
    if key == _ZMETADATA:
        return ""
    if key.endswith("/" + _ZMETADATA):
        return key[: -len(_ZMETADATA)]
    return None


def is_metadata(key: str) -> bool:
    """Whether ``key`` is a zarr format 2 metadata file (``.zarray``, ``.zgroup``,
    ``.zattrs``), which writers put last (readers then never meet an array described before
    its chunks are, or a half-deleted one no longer described)."""
    return key.rpartition("/")[2] in _METADATA_FILES


def slice_payload(payload: memoryview, request: ByteRequest | None) -> memoryview:
    """The part of ``payload`` a zarr byte-range request asks for (all of it for ``None``)."""
    if request is None:
        return payload
    if isinstance(request, RangeByteRequest):
        return payload[request.start : request.end]
    if isinstance(request, OffsetByteRequest):
        return payload[request.offset :]
    if isinstance(request, SuffixByteRequest):
        return payload[max(0, len(payload) - request.suffix) :]
    raise TypeError(f"Unexpected byte_range, got {request}.")


class KeySetListing:
    """zarr's three listings (``list``, ``list_prefix``, ``list_dir``), derived from one set
    of keys that a store returns from ``_listed``. Put it before ``Store`` in the bases."""

    async def _listed(self, prefix: str = "") -> builtins.set[str]:
        """Every key starting with ``prefix`` (a superset is fine: callers filter)."""
        raise NotImplementedError

    async def list(self) -> AsyncIterator[str]:
        """Yield every key."""
        for key in sorted(await self._listed()):
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        """Yield every key starting with ``prefix``."""
        for key in sorted(await self._listed(prefix)):
            if key.startswith(prefix):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        """Yield the immediate children of the folder ``prefix``."""
        base = prefix.rstrip("/")
        base = base + "/" if base else ""
        children = {
            k[len(base) :].split("/", 1)[0] for k in await self._listed(base) if k.startswith(base)
        }
        for child in sorted(children):
            yield child


class StoredNode:
    """What an array and a group share: the repository (at a ref) they are read from, and
    their key in it."""

    _store: HubStore
    _path: str

    @property
    def store(self) -> HubStore:
        """The zarr store this node lives in."""
        return self._store

    @property
    def path(self) -> str:
        """The key in the repository (``"images"``, ``"train/labels"``); ``""`` for the
        repository's root: the array a repository is, or its root group."""
        return self._path

    @property
    def name(self) -> str:
        """The name this was opened by, ``user/name[:ref]``."""
        return str(self._store.name)

    @property
    def version(self) -> str:
        """The version id read (and, at a branch, written): the head for a branch."""
        self._store.session.follow_head()
        return sync(self._store.session.resolved()).version

    @property
    def read_only(self) -> bool:
        """Whether writes are refused (a tag, a sealed version, or mode='r')."""
        return self._store.read_only


class HubStore(KeySetListing, Store):
    """A zarr ``Store`` over one hubzarr repository at one branch, tag or version.

    Parameters
    ----------
    root : str, optional
        The hub root (default: ``HUBZARR_ROOT``, the config file, or ``~/.hubzarr``).
    name : str or Name
        ``user/name[:ref]``; without a ref, the repository's default branch.
    storage_options : dict, optional
        Options for the fsspec filesystem of ``root``.
    read_only : bool
        Refuse writes even at a branch.
    storage : Storage, optional
        The storage to use for ``root`` instead of opening one (a wrapper such as a cache,
        a fault injector or a request counter).
    session : Session, optional
        The session to read and write through (one over a draft repository, being filled
        before it is published); by default the store opens its own.

    Raises
    ------
    InvalidNameError
        If ``name`` breaks the name grammar (checked before any I/O).

    Notes
    -----
    The store is opened lazily. Pickling it keeps the version it resolved, so every dask worker
    reads the same version, and drops credentials from ``storage_options``: workers resolve
    them from their own environment.
    """

    supports_writes: bool = True
    supports_deletes: bool = True
    supports_listing: bool = True

    def __init__(
        self,
        root: str | None = None,
        name: str | Name = "",
        *,
        storage_options: dict[str, Any] | None = None,
        read_only: bool = False,
        storage: Storage | None = None,
        session: Session | None = None,
    ) -> None:
        super().__init__(read_only=read_only)
        self.root = check_root(resolve_root(root) if storage is None or root else storage.url)
        self.name: Name = (
            name if isinstance(name, Name) else parse_name(name, default_user=resolve_namespace())
        )
        self._storage_options = resolve_storage_options(self.root, storage_options)
        self._storage = self._injected = storage
        self._session: Session | None = session
        # Consolidated metadata built at sealed versions: {(version, group prefix): document}.
        self._zmetadata: dict[tuple[str, str], bytes | None] = {}

    # -- identity, pickling --------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HubStore) and (self.root, str(self.name), self._read_only) == (
            other.root,
            str(other.name),
            other._read_only,
        )

    def __hash__(self) -> int:
        return hash((HubStore, self.root, str(self.name), self._read_only))

    def __repr__(self) -> str:
        mode = ", read_only=True" if self._read_only else ""
        return f"HubStore({self.root!r}, {str(self.name)!r}{mode})"

    def __str__(self) -> str:
        return f"hub://{self.name}"

    def __getstate__(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "name": self.name,
            "read_only": self._read_only,
            "storage_options": public_options(self._storage_options),
            # An injected storage pickles as it chooses; otherwise the receiver opens its own.
            "storage": self._injected,
            # The version it resolved, so every receiver reads the same one.
            "pinned": self.session.pinned,
            "keep_superseded": self.session.keeps_superseded,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__init__(read_only=state["read_only"])
        self.root = state["root"]
        self.name = state["name"]
        self._storage_options = resolve_storage_options(self.root, state["storage_options"])
        self._storage = self._injected = state["storage"]
        self._session = Session(
            self.storage,
            self.name,
            read_only=self._read_only,
            pinned=state["pinned"],
            keep_superseded=state["keep_superseded"],
        )
        self._zmetadata = {}

    def with_read_only(self, read_only: bool = False) -> HubStore:
        """Return a new, unopened store at the same ref with another ``read_only`` setting."""
        clone = HubStore(
            self.root,
            self.name,
            storage_options=self._storage_options,
            read_only=read_only,
            storage=self._injected,
        )
        clone._session = Session(
            clone.storage, self.name, read_only=read_only, pinned=self.session.pinned
        )
        return clone

    # -- opening -------------------------------------------------------------------------

    @property
    def storage(self) -> Storage:
        """The storage of the hub root."""
        if self._storage is None:
            self._storage = open_cached(self.root, self._storage_options)
        return self._storage

    @property
    def session(self) -> Session:
        """The session reading (and at a branch, writing) the repository at this store's ref."""
        if self._session is None:
            self._session = Session(self.storage, self.name, read_only=self._read_only)
        return self._session

    async def _open(self) -> None:
        await super()._open()
        await self.session.resolved()

    @property
    def read_only(self) -> bool:
        """Whether writes are refused: opened read-only, at a sealed version, or on a read-only
        root (HTTP)."""
        return self.session.read_only

    def close(self) -> None:
        """Close the store; it reopens (and re-resolves its ref) on next use."""
        super().close()
        self.session.forget()

    # -- reading -------------------------------------------------------------------------

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        """Return the value of ``key`` at this store's version, or ``None`` if absent."""
        group = _consolidated_group(key)
        if group is not None:
            check_key(key)
            document = await self._consolidated(group)
            payload: memoryview | None = None if document is None else memoryview(document)
        else:
            payload = await self.session.read(key)
        if payload is None:
            return None
        return prototype.buffer.from_bytes(slice_payload(payload, byte_range))

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> builtins.list[Buffer | None]:
        """Return byte ranges of several keys."""
        return list(await asyncio.gather(*(self.get(k, prototype, r) for k, r in key_ranges)))

    async def _get_many(
        self, requests: Iterable[tuple[str, BufferPrototype, ByteRequest | None]]
    ) -> AsyncGenerator[tuple[str, Buffer | None], None]:
        requests = list(requests)
        values = await asyncio.gather(*(self.get(*r) for r in requests))
        for (key, _, _), value in zip(requests, values, strict=True):
            yield key, value

    async def exists(self, key: str) -> bool:
        """Return whether ``key`` has a value at this store's version."""
        group = _consolidated_group(key)
        if group is not None:
            check_key(key)
            return await self.exists(group + ".zgroup")
        return await self.session.exists(key)

    async def getsize(self, key: str) -> int:
        """Return the size of ``key``'s value in bytes.

        Raises
        ------
        FileNotFoundError
            If ``key`` has no value.
        """
        group = _consolidated_group(key)
        if group is not None:
            check_key(key)
            document = await self._consolidated(group)
            size = None if document is None else len(document)
        else:
            size = await self.session.size(key)
        if size is None:
            raise FileNotFoundError(key)
        return size

    # -- writing -------------------------------------------------------------------------

    async def set(self, key: str, value: Buffer) -> None:
        """Store ``value`` at ``key`` in the branch's head (a ``.zmetadata`` is dropped: the
        store builds it from the metadata files on every read)."""
        if _consolidated_group(key) is not None:
            check_key(key)
            await self.session.ensure_writable()
            return
        await self.session.write(key, value.as_numpy_array().data)

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        """Store ``value`` at ``key`` unless ``key`` already has a value: atomic, so of
        concurrent callers (in any process) exactly one stores its value."""
        if _consolidated_group(key) is not None:
            check_key(key)
            await self.session.ensure_writable()
            return
        await self.session.put_if_absent(key, value.as_numpy_array().data)

    async def delete(self, key: str) -> None:
        """Remove ``key`` from the branch's head: a tombstone, so that a read does not fall
        through to an ancestor's object. A ``.zmetadata`` is virtual: nothing to delete."""
        if _consolidated_group(key) is not None:
            check_key(key)
            await self.session.ensure_writable()
            return
        await self.session.delete(key)

    async def delete_dir(self, prefix: str) -> None:
        """Delete every key under ``prefix`` (tombstones), many at once: chunks first, then the
        metadata files, deepest first, so an interrupted deletion (or overwrite) leaves every
        array and group it had not finished still described, and repeating it finishes it."""
        self.session.check_writable()
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        phases: dict[int, builtins.list[str]] = {}
        for key in await self.session.keys():
            if key.startswith(prefix):
                # Chunks before any metadata file; metadata files by depth, deepest first.
                phase = -key.count("/") if is_metadata(key) else -(2**31)
                phases.setdefault(phase, []).append(key)
        limit = asyncio.Semaphore(_DELETE_CONCURRENCY)

        async def delete(key: str) -> None:
            async with limit:
                await self.session.delete(key)

        for phase in sorted(phases):
            await asyncio.gather(*(delete(key) for key in phases[phase]))

    # -- listing -------------------------------------------------------------------------

    async def _listed(self, prefix: str = "") -> builtins.set[str]:
        """The stored keys (starting with ``prefix``) and, for each group, its virtual
        ``.zmetadata``."""
        keys = await self.session.keys(prefix)
        groups = {k[: -len(".zgroup")] for k in keys if k.rpartition("/")[2] == ".zgroup"}
        return keys | {group + _ZMETADATA for group in groups}

    async def _consolidated(self, group: str) -> bytes | None:
        """Build the consolidated metadata of the group at prefix ``group`` (``""``, ``"a/"``):
        every ``.zgroup``, ``.zarray`` and ``.zattrs`` under it at this version, read
        concurrently; ``None`` if there is no group there."""
        session = self.session
        resolved = await session.resolved()
        cached = (resolved.version, group)
        if resolved.sealed and cached in self._zmetadata:
            return self._zmetadata[cached]
        keys = await session.metadata_keys(group)
        document = None
        if group + ".zgroup" in keys:
            names = sorted(k for k in keys if is_metadata(k))
            limit = asyncio.Semaphore(_METADATA_CONCURRENCY)

            async def read(key: str) -> memoryview | None:
                async with limit:
                    return await session.read(key)

            payloads = await asyncio.gather(*(read(k) for k in names))
            metadata: dict[str, Any] = {}
            for key, payload in zip(names, payloads, strict=True):
                if payload is None:
                    continue
                try:
                    doc = json.loads(bytes(payload))
                except (UnicodeDecodeError, ValueError, RecursionError) as exc:
                    raise FormatError(
                        f"key {key!r} of {self.name} (version {resolved.version}) is not valid "
                        f"JSON metadata ({exc}); restore it from a copy, or recreate the array "
                        "or group it describes"
                    ) from exc
                if isinstance(doc, dict) and key.endswith(".zgroup"):
                    # zarr-python embeds a snapshot of a subgroup's members here; stale by now.
                    doc.pop("consolidated_metadata", None)
                metadata[key[len(group) :]] = doc
            document = json.dumps({"metadata": metadata, "zarr_consolidated_format": 1}).encode()
        if resolved.sealed:
            self._zmetadata[cached] = document
        return document

    # -- synchronous variants (zarr's SupportsSyncStore protocol) -------------------------

    def get_sync(
        self,
        key: str,
        *,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        """Synchronous :meth:`get`."""
        result: Buffer | None = sync(
            self.get(key, prototype or default_buffer_prototype(), byte_range)
        )
        return result

    def set_sync(self, key: str, value: Buffer) -> None:
        """Synchronous :meth:`set`."""
        sync(self.set(key, value))

    def delete_sync(self, key: str) -> None:
        """Synchronous :meth:`delete`."""
        sync(self.delete(key))
