"""xarray integration: datasets stored in hubzarr repositories, at any branch, tag or version.

- :func:`open_dataset` gives a lazy, dask-backed ``xarray.Dataset``. The group's metadata is
  read once (the store's consolidated ``.zmetadata``), checked like every hubzarr array's, and
  handed to xarray's zarr backend as checked. Each variable whose values xarray does not
  transform (no scaling, no masking of a fill value other than NaN, no time or other dtype
  decoding) then reads through hubzarr's own dask graph (:attr:`HubArray.dask`), which is
  faster than zarr's; the others keep xarray's lazy arrays.
- :func:`to_hub` writes a dataset with ``Dataset.to_zarr`` onto a :class:`HubStore`. It first
  rehearses the write against an in-memory overlay of the target (nothing is computed and
  nothing stored), so a dataset that does not fit (an append with other dimensions, an encoding
  xarray refuses, misaligned chunks) is refused before anything is written.
- :class:`HubBackendEntrypoint`, registered as the ``hubzarr`` engine:
  ``xarray.open_dataset("alice/climate:v1", engine="hubzarr")``.

``xarray.open_zarr(hubzarr.store(name))`` also works directly, through the store's
consolidated metadata. This module imports xarray; ``import hubzarr`` does not import it.
"""

from __future__ import annotations

import builtins
import functools
import math
import os
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, Literal

import numpy as np
import xarray as xr
import zarr
from numcodecs.abc import Codec
from xarray.backends import BackendEntrypoint
from xarray.backends.store import StoreBackendEntrypoint
from xarray.backends.zarr import ZarrStore
from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.core.sync import sync

from hubzarr.arrays import HubArray
from hubzarr.config import resolve_namespace
from hubzarr.errors import AlreadyExistsError, InvalidArgumentError
from hubzarr.groups import HubGroup
from hubzarr.groups import check_key as check_group_key
from hubzarr.metadata import (
    _REFUSED_CODECS,
    _STRING_CODECS,
    group_documents,
    node_key,
    open_zarr_group,
)
from hubzarr.names import Name, parse_name
from hubzarr.session import check_key
from hubzarr.spec import DEFAULT_COMPRESSOR, check_compressor, default_chunks
from hubzarr.stores import HubStore, KeySetListing, is_metadata, slice_payload
from hubzarr.versions import Repository

__all__ = ["HubBackendEntrypoint", "open_dataset", "to_hub"]

RootLike = str | os.PathLike[str] | None
WriteMode = Literal["w-", "w", "a", "a-", "r+"]
_DIMENSIONS = "_ARRAY_DIMENSIONS"
_DEFAULT_BRANCH = "main"
#: to_zarr arguments that to_hub decides itself.
_FIXED = frozenset(
    {"store", "compute", "consolidated", "zarr_format", "zarr_version", "storage_options"}
)


def _hub_store(
    name: str | HubStore, root: RootLike, storage_options: dict[str, Any] | None
) -> HubStore:
    if isinstance(name, HubStore):
        return name
    if not isinstance(name, str):
        raise InvalidArgumentError(
            f"expected a repository name such as 'alice/climate:v1', not {name!r}"
        )
    return HubStore(
        None if root is None else os.fspath(root),
        name,
        storage_options=storage_options,
        read_only=True,
    )


def _xarray_store(
    store: HubStore, group: str | None, use_zarr_fill_value_as_mask: bool | None
) -> tuple[ZarrStore, zarr.Group]:
    """xarray's view of a group whose metadata hubzarr has checked."""
    path = "" if group is None else check_group_key(group.strip("/"))
    zgroup = open_zarr_group(store, path)
    for name, array in zgroup.arrays():
        dims = array.attrs.get(_DIMENSIONS)
        if not (
            isinstance(dims, list)
            and len(dims) == array.ndim
            and all(isinstance(d, str) for d in dims)
        ):
            raise InvalidArgumentError(
                f"array {node_key(path, name)!r} of {store.name} has no valid {_DIMENSIONS} "
                "attribute naming its dimensions, so it is not part of an xarray dataset (it "
                "was not written by xarray); read it with hubzarr.load(...)"
            )
    # Format 2 stores hold no fill-value semantics of their own: xarray's default for them
    # treats zarr's fill_value as netCDF's _FillValue.
    mask = True if use_zarr_fill_value_as_mask is None else use_zarr_fill_value_as_mask
    return ZarrStore(zgroup, mode="r", use_zarr_fill_value_as_mask=mask), zgroup


class HubBackendEntrypoint(BackendEntrypoint):
    """The ``hubzarr`` engine of ``xarray.open_dataset``.

    ``xarray.open_dataset("alice/climate:v1", engine="hubzarr", chunks={})`` opens the dataset
    stored in a repository at a branch, tag or version id. Backend keywords: ``root`` and
    ``storage_options`` (as for :class:`hubzarr.Hub`), ``group`` (a subgroup's key). It never
    claims a file by itself (``guess_can_open`` is false): pass ``engine="hubzarr"``.
    """

    description = "Open datasets stored in hubzarr repositories (versioned zarr) by name"
    url = "https://github.com/hubzarr/hubzarr"
    open_dataset_parameters = (
        "filename_or_obj",
        "mask_and_scale",
        "decode_times",
        "concat_characters",
        "decode_coords",
        "drop_variables",
        "use_cftime",
        "decode_timedelta",
        "group",
        "root",
        "storage_options",
        "use_zarr_fill_value_as_mask",
    )

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        """Never: a repository name looks like a relative path, so ask for the engine."""
        return False

    def open_dataset(
        self,
        filename_or_obj: Any,
        *,
        mask_and_scale: Any = True,
        decode_times: Any = True,
        concat_characters: Any = True,
        decode_coords: Any = True,
        drop_variables: str | Iterable[str] | None = None,
        use_cftime: Any = None,
        decode_timedelta: Any = None,
        group: str | None = None,
        root: RootLike = None,
        storage_options: dict[str, Any] | None = None,
        use_zarr_fill_value_as_mask: bool | None = None,
    ) -> xr.Dataset:
        """Open the dataset of a repository (a name ``user/name[:ref]`` or a HubStore).

        Raises
        ------
        InvalidNameError
            If the name is malformed.
        NotFoundError
            If the repository, ref or group does not exist, or the repository holds an array.
        FormatError
            If any metadata file of the group is malformed.
        InvalidArgumentError
            If an array of the group has no ``_ARRAY_DIMENSIONS`` (it is not an xarray
            dataset).
        """
        store = _hub_store(filename_or_obj, root, storage_options)
        zstore, _ = _xarray_store(store, group, use_zarr_fill_value_as_mask)
        return StoreBackendEntrypoint().open_dataset(
            zstore,
            mask_and_scale=mask_and_scale,
            decode_times=decode_times,
            concat_characters=concat_characters,
            decode_coords=decode_coords,
            drop_variables=drop_variables,
            use_cftime=use_cftime,
            decode_timedelta=decode_timedelta,
        )


def _all_nan(value: Any) -> bool:
    try:
        return bool(np.all(np.isnan(np.asarray(value, dtype=float))))
    except (TypeError, ValueError):
        return False


def _as_stored(variable: xr.Variable, array: zarr.Array[Any]) -> bool:
    """Whether xarray shows ``array``'s values unchanged: same dtype and shape, no scale or
    offset, no fill value masked other than NaN (masking NaN with NaN changes nothing)."""
    encoding = variable.encoding
    if np.dtype(array.dtype) != variable.dtype or tuple(array.shape) != variable.shape:
        return False
    if variable.dtype.kind not in "biufc":
        return False
    if "scale_factor" in encoding or "add_offset" in encoding:
        return False
    return all(
        _all_nan(encoding[key]) for key in ("_FillValue", "missing_value") if key in encoding
    )


def open_dataset(
    name: str,
    *,
    chunks: Any = None,
    group: str | None = None,
    root: RootLike = None,
    storage_options: dict[str, Any] | None = None,
    use_zarr_fill_value_as_mask: bool | None = None,
    **xarray_kwargs: Any,
) -> xr.Dataset:
    """Open the dataset stored in a repository, lazily, at a branch, tag or version id.

    Parameters
    ----------
    name : str
        ``user/name[:ref]`` (default: the default branch).
    chunks : None, dict, int or "auto"
        ``None`` (the default): dask chunks that hubzarr's graph chooses (whole stored chunks,
        several small ones per block). Anything else is passed to xarray (``{}``: the stored
        chunks, ``"auto"``, ``{"time": 100}``), and the data is rechunked to exactly that.
    group : str, optional
        The key of a subgroup holding the dataset.
    root : str or os.PathLike, optional
        The hub root (default as for :class:`hubzarr.Hub`).
    storage_options : dict, optional
        Options for the root's fsspec filesystem.
    use_zarr_fill_value_as_mask : bool, optional
        As for ``xarray.open_zarr``; default true (zarr format 2).
    **xarray_kwargs
        Passed to ``xarray.open_dataset``: ``decode_times``, ``mask_and_scale``,
        ``drop_variables``, ``decode_cf``, ...

    Returns
    -------
    xarray.Dataset
        Every variable dask-backed, except dimension coordinates (loaded as indexes). Nothing
        else is read until computed.

    Raises
    ------
    InvalidNameError
        If ``name`` is malformed.
    NotFoundError
        If the repository, ref or group does not exist, or the repository holds an array.
    FormatError
        If any metadata file of the group is malformed (the message names it).
    InvalidArgumentError
        If an array of the group has no ``_ARRAY_DIMENSIONS`` (it is not an xarray dataset).
    """
    store = _hub_store(name, root, storage_options)
    zstore, zgroup = _xarray_store(store, group, use_zarr_fill_value_as_mask)
    ds = xr.open_dataset(
        zstore, engine="store", chunks={} if chunks is None else chunks, **xarray_kwargs
    )
    path = zgroup.path
    arrays = dict(zgroup.arrays())
    for key, variable in ds.variables.items():
        array = arrays.get(str(key))
        if array is None or not _as_stored(variable, array) or variable.chunks is None:
            continue
        fast = HubArray(store, array, node_key(path, str(key))).dask
        if chunks is not None and fast.chunks != variable.chunks:
            fast = fast.rechunk(variable.chunks)
        variable.data = fast
    return ds


# -- writing ---------------------------------------------------------------------------------


class _Rehearsal(KeySetListing, Store):
    """A writable overlay of a store, in memory, for rehearsing a write.

    Reads fall through to ``base`` (read-only) unless the rehearsal wrote or deleted the key;
    metadata written is kept, chunk payloads are dropped (nothing reads them back: a write
    touches each chunk once). Every key is checked as :class:`HubStore` checks it
    (:func:`hubzarr.session.check_key`), so a write the store would refuse fails here, before
    anything is stored.
    """

    supports_writes = True
    supports_deletes = True
    supports_listing = True
    supports_partial_writes = False

    def __init__(self, base: Store | None) -> None:
        super().__init__(read_only=False)
        self._base = base
        self._metadata: dict[str, bytes] = {}
        self._chunks: builtins.set[str] = set()
        self._deleted: builtins.set[str] = set()

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        check_key(key)
        if key in self._metadata:
            return prototype.buffer.from_bytes(
                slice_payload(memoryview(self._metadata[key]), byte_range)
            )
        if key in self._deleted or self._base is None:
            return None
        return await self._base.get(key, prototype, byte_range)

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> builtins.list[Buffer | None]:
        return [await self.get(key, prototype, r) for key, r in key_ranges]

    async def exists(self, key: str) -> bool:
        check_key(key)
        if key in self._metadata or key in self._chunks:
            return True
        if key in self._deleted or self._base is None:
            return False
        return await self._base.exists(key)

    async def set(self, key: str, value: Buffer) -> None:
        check_key(key)
        self._deleted.discard(key)
        if key.rpartition("/")[2].startswith(".z"):
            self._metadata[key] = value.to_bytes()
        else:
            self._chunks.add(key)

    async def delete(self, key: str) -> None:
        check_key(key)
        self._metadata.pop(key, None)
        self._chunks.discard(key)
        self._deleted.add(key)

    async def _listed(self, prefix: str = "") -> builtins.set[str]:
        base: builtins.set[str] = set()
        if self._base is not None:
            base = {key async for key in self._base.list_prefix(prefix)}
        return (base - self._deleted) | set(self._metadata) | self._chunks


def _check_codecs(encoding: Mapping[Hashable, Any]) -> None:
    """Refuse codecs hubzarr would later refuse to read (they (de)serialise Python objects)."""
    for name, settings in encoding.items():
        if not isinstance(settings, Mapping):
            raise InvalidArgumentError(
                f"encoding[{name!r}] must be a dict of zarr settings, not {settings!r}"
            )
        for field in ("compressors", "filters"):
            codecs = settings.get(field)
            if codecs is None:
                continue
            for codec in codecs if isinstance(codecs, list | tuple) else (codecs,):
                if field == "compressors":
                    check_compressor(codec)
                elif (
                    isinstance(codec, Codec) and codec.codec_id in _REFUSED_CODECS - _STRING_CODECS
                ):
                    raise InvalidArgumentError(
                        f"encoding[{name!r}] names the filter {codec.codec_id!r}, which "
                        "(de)serialises Python objects and is not allowed"
                    )


def _new_variables(store: HubStore, path: str, ds: xr.Dataset) -> builtins.set[str]:
    """The variables of ``ds`` that are not arrays of the group at ``path`` yet."""
    names = [str(name) for name in ds.variables]

    async def exists(name: str) -> bool:
        return await store.exists(node_key(node_key(path, name), ".zarray"))

    async def check() -> builtins.list[bool]:
        import asyncio

        return list(await asyncio.gather(*(exists(n) for n in names)))

    found: builtins.list[bool] = sync(check())
    return {n for n, there in zip(names, found, strict=True) if not there}


def _with_defaults(
    ds: xr.Dataset, encoding: Mapping[Hashable, Any], new: builtins.set[str]
) -> tuple[xr.Dataset, dict[Hashable, dict[str, Any]]]:
    """The dataset and encoding ``to_zarr`` gets: for each new variable without them, hubzarr's
    default compressor and (in-memory numbers) hubzarr's default chunks.

    A variable named in ``encoding`` is written with that encoding alone (xarray's rule), so
    the defaults go there; otherwise into the variable's own encoding, on a shallow copy of the
    dataset, next to what it holds (scale factors, units, fill values).
    """
    out: dict[Hashable, dict[str, Any]] = {k: dict(v) for k, v in encoding.items()}
    ds = ds.copy(deep=False)
    for name, variable in ds.variables.items():
        if str(name) not in new:
            continue
        settings = out[name] if name in out else dict(variable.encoding)
        if not {"compressors", "compressor"} & set(settings):
            settings["compressors"] = DEFAULT_COMPRESSOR
        if (
            "chunks" not in settings
            and variable.chunks is None
            and variable.ndim
            and variable.dtype.kind in "biufcmM"
            and math.prod(variable.shape) > 0
        ):
            settings["chunks"] = default_chunks(tuple(variable.shape), variable.dtype)
        if name in out:
            out[name] = settings
        else:
            variable.encoding = settings
    return ds, out


def _write(
    ds: xr.Dataset,
    store: Store,
    mode: str,
    encoding: dict[Hashable, dict[str, Any]],
    kwargs: dict[str, Any],
    *,
    compute: bool,
) -> None:
    to_zarr: Any = ds.to_zarr  # its overloads cannot see a mode or compute held in variables
    to_zarr(
        store,
        mode=mode,
        encoding={k: dict(v) for k, v in encoding.items()},  # xarray may change the dicts
        compute=compute,
        consolidated=False,  # the store serves .zmetadata itself
        zarr_format=2,
        **kwargs,
    )


def to_hub(
    ds: xr.Dataset,
    name: str,
    mode: WriteMode | None = None,
    *,
    group: str | None = None,
    append_dim: Hashable | None = None,
    region: Any = None,
    encoding: Mapping[Hashable, Any] | None = None,
    root: RootLike = None,
    storage_options: dict[str, Any] | None = None,
    **to_zarr_kwargs: Any,
) -> HubGroup:
    """Write an ``xarray.Dataset`` into a repository, as ``Dataset.to_zarr`` (format 2) does.

    Dask-backed variables are computed in parallel and written chunk by chunk through the
    store, with the guarantees of any hubzarr write (a tag taken meanwhile loses nothing).

    Parameters
    ----------
    ds : xarray.Dataset
        The dataset.
    name : str
        ``user/name[:branch]``. A new repository's first branch is the ref, ``main`` if absent.
    mode : {"w-", "w", "a", "a-", "r+"}, optional
        ``"w-"`` (the default): create the repository, refused if it exists. ``"w"``: replace
        the group's contents at the branch's head (tags keep the old ones; a missing repository
        is created). ``"a"``: add or overwrite variables, or append along ``append_dim`` (the
        default mode with ``append_dim``); ``"a-"``: append only the variables along
        ``append_dim``. ``"r+"``: write into existing variables only, in ``region`` (the
        default mode with ``region``).
    group : str, optional
        The key of a subgroup to write the dataset into.
    append_dim, region
        As for ``Dataset.to_zarr``.
    encoding : dict, optional
        Per-variable zarr settings (``{"t": {"chunks": (100, 10), "compressors": ...}}``). New
        variables without a compressor get Blosc lz4; in-memory numeric variables without
        chunks get hubzarr's default chunks.
    root : str or os.PathLike, optional
        The hub root (default as for :class:`hubzarr.Hub`).
    storage_options : dict, optional
        Options for the root's fsspec filesystem.
    **to_zarr_kwargs
        Other ``Dataset.to_zarr`` keywords (``safe_chunks``, ``align_chunks``,
        ``write_empty_chunks``, ``chunkmanager_store_kwargs``).

    Returns
    -------
    HubGroup
        The group written (at the branch).

    Raises
    ------
    InvalidNameError
        If ``name`` is malformed.
    InvalidArgumentError
        For an unknown mode, a keyword hubzarr sets itself (``compute``, ``consolidated``,
        ``zarr_format``, ...), or a codec that (de)serialises Python objects.
    AlreadyExistsError
        Mode ``"w-"`` and the repository exists.
    NotFoundError
        Mode ``"r+"`` and the repository does not exist, or the ref does not.
    ReadOnlyError
        If ``name`` is a tag or a version id.
    ValueError
        xarray's own refusals: mismatched dimensions or dtypes in an append, new variables in
        mode ``"r+"``, an invalid encoding, misaligned dask chunks. Nothing is written.
    """
    if not isinstance(ds, xr.Dataset):
        raise InvalidArgumentError(f"to_hub writes an xarray.Dataset, not {type(ds).__name__}")
    fixed = sorted(_FIXED & set(to_zarr_kwargs))
    if fixed:
        raise InvalidArgumentError(
            f"to_hub sets {', '.join(fixed)} itself; remove {'it' if len(fixed) == 1 else 'them'}"
        )
    if mode is None:
        mode = "a" if append_dim is not None else "r+" if region is not None else "w-"
    if mode not in ("w-", "w", "a", "a-", "r+"):
        raise InvalidArgumentError(f"mode must be 'w-', 'w', 'a', 'a-' or 'r+', not {mode!r}")
    path = check_group_key(group.strip("/")) if group and group.strip("/") else ""
    encoding = dict(encoding or {})
    _check_codecs(encoding)
    parsed = parse_name(name, default_user=resolve_namespace())
    store = HubStore(
        None if root is None else os.fspath(root),
        parsed,
        storage_options=storage_options,
        read_only=False,
    )
    repo = Repository(store.storage, parsed)
    exists = sync(repo.exists())
    if exists and mode == "w-":
        raise AlreadyExistsError(
            f"repository {parsed.repository} already exists under {store.root}; pass mode='w' "
            "to replace its contents, or mode='a' to add variables or append"
        )
    kwargs = {"group": path or None, "append_dim": append_dim, "region": region}
    kwargs |= to_zarr_kwargs
    everything = {str(v) for v in ds.variables}
    if exists:
        sync(store.session.resolved())
        store.session.check_writable()
        # The rehearsal reads what is there; when everything is replaced, nothing is.
        target: Store | None = None if mode == "w" and not path else store.with_read_only(True)
        if mode == "w":
            new = everything
        elif mode == "r+":
            new = set()  # creates no variable: no defaults to give
        else:
            new = _new_variables(store, path, ds)
        xmode: str = mode
    else:
        # A new repository: the write is rehearsed against nothing, then the repository is
        # created (holding an empty group) and written in mode "a".
        if mode == "r+":
            sync(store.session.resolved())  # NotFoundError, naming close matches
        target, new, xmode = None, everything, "a"
    ds, encoding = _with_defaults(ds, encoding, new)
    _write(ds, _Rehearsal(target), xmode, encoding, kwargs, compute=False)
    write = functools.partial(_write, ds, mode=xmode, encoding=encoding, kwargs=kwargs)
    if exists:
        _write_or_restore(store, write, _scope(ds, path, mode))
        return HubGroup(store, path)
    branch = parsed.with_ref(parsed.ref or _DEFAULT_BRANCH)
    store = HubStore(
        None if root is None else os.fspath(root),
        branch,
        storage_options=storage_options,
        read_only=False,
    )
    _create_and_write(store, branch, write)
    return HubGroup(store, path)


def _create_and_write(store: HubStore, name: Name, write: Callable[..., None]) -> None:
    """Create the repository (holding an empty group) at the branch ``name`` names, and
    write; a failure deletes it again: nobody was meant to see it before the write finished."""
    repo = Repository(store.storage, name)
    sync(repo.create(str(name.ref), initial=group_documents()))
    try:
        write(store, compute=True)
    except BaseException:
        store.session.stop_writes()
        sync(repo.delete())
        raise


def _scope(ds: xr.Dataset, path: str, mode: str) -> builtins.list[str]:
    """The key prefixes a write of ``ds`` into the group at ``path`` may change: the group's
    own metadata and its variables' keys; with mode ``"w"``, all of the group (xarray clears
    it first)."""
    if mode == "w":
        return [f"{path}/" if path else ""]
    return [node_key(path, n) for n in (".zgroup", ".zattrs")] + [
        f"{node_key(path, str(v))}/" for v in ds.variables
    ]


def _write_or_restore(
    store: HubStore, write: Callable[..., None], scope: builtins.list[str]
) -> None:
    """Write for real; on any failure after the rehearsal (a dask task that raises, the
    storage failing), put back what the write changed, so the branch is as it was."""
    snapshot = sync(store.session.snapshot())
    try:
        write(store, compute=True)
    except BaseException:
        # dask's threads may still be running tasks that write: stop them first.
        store.session.stop_writes()
        sync(store.session.restore(snapshot, scope, last=is_metadata))
        raise
    store.session.release()
