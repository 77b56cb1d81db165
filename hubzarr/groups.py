"""Groups: a repository holding several arrays and subgroups, as a zarr format 2 hierarchy.

A :class:`HubGroup` is one group of a repository at one ref. Its members are addressed by
``/``-separated keys (``group["images"]``, ``group["train/labels"]``); each member's metadata
lies at ``<key>/.zarray`` or ``<key>/.zgroup`` in the repository, exactly where zarr and xarray
put it, so ``zarr.open_group(hubzarr.store(name))`` and ``xarray.open_zarr`` read the same
hierarchy. Tags and branches work on the whole repository, so a tag snapshots every array of
the group at once.

Creating a member writes its metadata object last and only if the key is still free
(compare-and-swap on the head's write-once generations, as partial-chunk writes do), so of two
concurrent creators of one key exactly one wins and the other gets ``AlreadyExistsError``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from hubzarr.arrays import HubArray
from hubzarr.errors import (
    AlreadyExistsError,
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
)
from hubzarr.metadata import (
    GroupInfo,
    array_spec,
    encode_attributes,
    group_documents,
    metadata_documents,
    node_key,
    node_kind,
    open_node_async,
    open_zarr_array,
    open_zarr_group,
    read_attributes,
)
from hubzarr.retry import compare_and_swap
from hubzarr.spec import DEFAULT_COMPRESSOR
from hubzarr.storage import check_path
from hubzarr.stores import HubStore, StoredNode, conditional_writes

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["Attributes", "HubGroup", "check_key"]

#: Names of zarr's metadata files: never a member's name.
_RESERVED = frozenset({".zgroup", ".zarray", ".zattrs", ".zmetadata"})
_GENERATION_LIKE = re.compile(r".*~[0-9]+", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Keys named in a "no such key" message.
_SHOWN_KEYS = 20

Kind = Literal["array", "group"]


def check_key(key: Any) -> str:
    """Return ``key`` if it can name a member of a group.

    A key is one or more ``/``-separated names: not empty, no leading, trailing or doubled
    ``/``, no ``.`` or ``..`` segment, no segment named like a zarr metadata file (``.zarray``,
    ``.zgroup``, ``.zattrs``, ``.zmetadata``) or ending with ``~`` and digits (hubzarr's names for
    rewrites), no control characters, backslashes or NUL.

    Raises
    ------
    InvalidArgumentError
        If ``key`` is not such a string.
    """
    if not isinstance(key, str):
        raise InvalidArgumentError(
            f"a group key is a string such as 'images' or 'train/labels', not {key!r}"
        )
    segments = key.split("/")
    problem = None
    if not key:
        problem = "it is empty"
    elif key.startswith("/"):
        problem = "it starts with '/' (keys are relative to the group)"
    elif key.endswith("/"):
        problem = "it ends with '/'"
    elif "" in segments:
        problem = "it has an empty segment ('//')"
    elif any(s in (".", "..") for s in segments):
        problem = "it has a '.' or '..' segment"
    elif any(s in _RESERVED for s in segments):
        problem = "a segment is the name of a zarr metadata file"
    elif any(_GENERATION_LIKE.fullmatch(s) for s in segments):
        problem = "a segment ends with '~' and digits, which hubzarr uses for rewrites of a key"
    elif _CONTROL.search(key):
        problem = "it holds control characters"
    else:
        try:
            check_path(key)
        except InvalidArgumentError as exc:
            problem = f"the storage refuses it ({exc})"
    if problem is not None:
        raise InvalidArgumentError(
            f"invalid group key {key!r}: {problem}; use '/'-separated names such as 'images' "
            "or 'train/labels'"
        )
    return key


class HubGroup(StoredNode):
    """A group of arrays and subgroups stored in a hubzarr repository.

    Create one with :func:`hubzarr.group`; :func:`hubzarr.load` returns one for a repository
    holding a group. ``group[key]`` returns a :class:`~hubzarr.arrays.HubArray` or a subgroup.

    Parameters
    ----------
    store : HubStore
        The repository at a ref.
    path : str
        The group's key in the repository; ``""`` for the root group.
    """

    def __init__(self, store: HubStore, path: str = "") -> None:
        self._store = store
        self._path = path

    # -- what it is (and StoredNode's store, path, name, version, read_only) -------------

    def __repr__(self) -> str:
        mode = " read-only" if self.read_only else ""
        path = f" path={self._path!r}" if self._path else ""
        return f"<HubGroup {self.name}{path} version={self.version}{mode}>"

    def _describe(self) -> str:
        return f"group {self._path!r} of {self.name}" if self._path else f"the group {self.name}"

    # -- members -------------------------------------------------------------------------

    async def _children(self, path: str) -> dict[str, Kind]:
        base = f"{path}/" if path else ""
        found: dict[str, Kind] = {}
        # Members are known by their metadata keys, which a version's index root holds: no
        # walk of the chunks under the group.
        for key in await self._store.session.metadata_keys(base):
            name, _, leaf = key[len(base) :].partition("/")
            if leaf == ".zarray":
                found[name] = "array"
            elif leaf == ".zgroup":
                found.setdefault(name, "group")
        return dict(sorted(found.items()))

    def _members(self) -> dict[str, Kind]:
        self._store.session.follow_head()
        members: dict[str, Kind] = sync(self._children(self._path))
        return members

    def keys(self) -> list[str]:
        """Return the names of this group's arrays and subgroups, sorted.

        At a branch's head this lists the head's objects, as ``zarr`` does; at a tag or version
        the keys are in memory.
        """
        return list(self._members())

    def arrays(self) -> list[tuple[str, HubArray]]:
        """Return ``(name, array)`` for each array directly in this group, sorted by name.

        String variables that xarray wrote (object dtype, ``vlen-utf8``) are not HubArrays and
        are left out; :meth:`keys` lists them, and :func:`hubzarr.open_dataset` reads them.

        Raises
        ------
        FormatError
            If an array's metadata is malformed.
        """
        names = [k for k, kind in self._members().items() if kind == "array"]
        paths = [node_key(self._path, k) for k in names]
        nodes: list[zarr.Array[Any] | GroupInfo | None] = sync(self._open_nodes(paths))
        return [
            (k, HubArray(self._store, node, p))
            for k, p, node in zip(names, paths, nodes, strict=True)
            if isinstance(node, zarr.Array)
        ]

    async def _open_nodes(self, paths: list[str]) -> list[zarr.Array[Any] | GroupInfo | None]:
        return list(
            await asyncio.gather(
                *(open_node_async(self._store, p, skip_strings=True) for p in paths)
            )
        )

    def groups(self) -> list[tuple[str, HubGroup]]:
        """Return ``(name, subgroup)`` for each subgroup directly in this group, sorted by name."""
        return [
            (k, HubGroup(self._store, node_key(self._path, k)))
            for k, kind in self._members().items()
            if kind == "group"
        ]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._members())

    def __contains__(self, key: object) -> bool:
        try:
            key = check_key(key)
        except InvalidArgumentError:
            return False
        self._store.session.follow_head()
        return sync(node_kind(self._store, node_key(self._path, key))) is not None

    def _open(self, key: str) -> HubArray | HubGroup:
        path = node_key(self._path, key)
        try:
            node = sync(open_node_async(self._store, path))
        except NotFoundError:
            raise NotFoundError(self._missing(key)) from None
        if isinstance(node, GroupInfo):
            return HubGroup(self._store, path)
        assert node is not None
        return HubArray(self._store, node, path)

    def _missing(self, key: str) -> str:
        parent, _, _ = key.rpartition("/")
        where = node_key(self._path, parent)
        names = list(sync(self._children(where)))
        held = ", ".join(repr(n) for n in names[:_SHOWN_KEYS]) or "nothing"
        if len(names) > _SHOWN_KEYS:
            held += f" and {len(names) - _SHOWN_KEYS} more"
        inside = f"group {parent!r} of it" if parent else "it"
        return (
            f"no array or group {key!r} in {self._describe()} (version {self.version}); "
            f"{inside} holds {held}"
        )

    def __getitem__(self, key: str) -> HubArray | HubGroup:
        """Open the array or subgroup at ``key`` (``"images"``, ``"train/labels"``).

        Raises
        ------
        InvalidArgumentError
            If ``key`` is malformed (see :func:`check_key`).
        NotFoundError
            If nothing lies at ``key`` (the message lists the keys that exist).
        FormatError
            If the member's metadata is malformed.
        """
        key = check_key(key)
        self._store.session.follow_head()
        return self._open(key)

    # -- creating and deleting members ----------------------------------------------------

    def _writable(self) -> None:
        sync(self._store.session.resolved())
        self._store.session.check_writable()

    def create_array(
        self,
        key: str,
        shape: Any,
        dtype: Any = "float32",
        chunks: Any = None,
        fill_value: Any = 0,
        compressor: Any = DEFAULT_COMPRESSOR,
        overwrite: bool = False,
    ) -> HubArray:
        """Create an array at ``key``, with the checks :func:`hubzarr.array` makes.

        Missing intermediate groups (``"train"`` for ``"train/labels"``) are created.

        Parameters
        ----------
        key : str
            Where: ``"images"``, ``"train/labels"``.
        shape : int or tuple of int
            Positive dimensions. Nothing is allocated: only written chunks are stored.
        dtype : numpy dtype-like
            A bool, integer, float or complex dtype.
        chunks : tuple of int, optional
            Chunk shape; default: MB-scale chunks with cheap single samples along axis 0.
        fill_value : scalar
            The value of never-written elements; must fit ``dtype`` exactly.
        compressor : numcodecs codec or None
            Default: Blosc lz4 with byte shuffle.
        overwrite : bool
            Replace an array or group already at ``key`` (its objects are deleted from the
            branch's head; tags keep them).

        Returns
        -------
        HubArray
            The new array, writable.

        Raises
        ------
        InvalidArgumentError
            If ``key``, shape, chunks, dtype, fill value or compressor are unusable, or an
            intermediate key is an array (nothing is written).
        AlreadyExistsError
            If something lies at ``key`` and ``overwrite`` is false.
        ReadOnlyError
            At a tag, a sealed version, or a group opened read-only.
        NotFoundError
            If this group was deleted meanwhile.
        """
        key = check_key(key)
        spec = array_spec(shape, dtype, chunks, fill_value, compressor)
        self._writable()
        path = node_key(self._path, key)
        self._create(key, metadata_documents(spec), ".zarray", overwrite)
        return HubArray(self._store, open_zarr_array(self._store, path), path)

    def create_group(self, key: str, overwrite: bool = False) -> HubGroup:
        """Create an empty subgroup at ``key`` (and any missing intermediate groups).

        Raises
        ------
        InvalidArgumentError
            If ``key`` is malformed or an intermediate key is an array.
        AlreadyExistsError
            If something lies at ``key`` and ``overwrite`` is false.
        ReadOnlyError
            At a tag, a sealed version, or a group opened read-only.
        NotFoundError
            If this group was deleted meanwhile.
        """
        key = check_key(key)
        self._writable()
        self._create(key, group_documents(), ".zgroup", overwrite)
        return HubGroup(self._store, node_key(self._path, key))

    def _create(self, key: str, documents: dict[str, bytes], marker: str, overwrite: bool) -> None:
        zgroup = group_documents()[".zgroup"]
        sync(self._create_async(key, documents, marker, overwrite, zgroup))

    async def _create_async(
        self, key: str, documents: dict[str, bytes], marker: str, overwrite: bool, zgroup: bytes
    ) -> None:
        store, prototype = self._store, default_buffer_prototype()
        parts = key.split("/")
        ancestors = [node_key(self._path, "/".join(parts[:i])) for i in range(1, len(parts))]
        path = node_key(self._path, key)

        async def attempt() -> None:
            with conditional_writes():
                kinds = await asyncio.gather(
                    *(node_kind(store, p) for p in (self._path, *ancestors, path))
                )
                if kinds[0] != "group":
                    version = (await store.session.resolved()).version
                    raise NotFoundError(
                        f"{self._describe()} no longer exists (version {version}); open "
                        "the repository again"
                    )
                for ancestor, kind in zip(ancestors, kinds[1:-1], strict=True):
                    if kind == "array":
                        raise InvalidArgumentError(
                            f"cannot create {key!r} in {self._describe()}: {ancestor!r} is "
                            "an array, and an array holds no keys"
                        )
                if kinds[-1] is not None:
                    if not overwrite:
                        raise AlreadyExistsError(
                            f"{key!r} already exists in {self._describe()} (a "
                            f"{kinds[-1]}); pass overwrite=True to replace it, or delete "
                            f"it first with del group[{key!r}]"
                        )
                    await self._store.delete_dir(path)
                    # Deleted under this compare-and-swap; create it from fresh reads.
                    raise ConflictError(f"{key!r} in {self._describe()} was just deleted")
                for ancestor, kind in zip(ancestors, kinds[1:-1], strict=True):
                    if kind is None:
                        await store.set(
                            node_key(ancestor, ".zgroup"), prototype.buffer.from_bytes(zgroup)
                        )
                # The marker (.zarray, .zgroup) first and only if still absent: exactly one
                # of concurrent creators gets here; then the rest (.zattrs).
                for name in sorted(documents, key=lambda n: n != marker):
                    payload = prototype.buffer.from_bytes(documents[name])
                    await store.set(node_key(path, name), payload)

        def exhausted() -> AlreadyExistsError:
            return AlreadyExistsError(
                f"other writers kept changing {key!r} in {self._describe()} while it was "
                "created; try again"
            )

        await compare_and_swap(attempt, before_retry=store.session.refresh, exhausted=exhausted)

    def __delitem__(self, key: str) -> None:
        """Delete the array or subgroup at ``key`` with everything in it, from the branch's
        head (tags and sealed versions keep it; ``hub gc`` frees what no ref reaches).

        Costs one listing of the head and one small write (a tombstone) per stored object.

        Raises
        ------
        InvalidArgumentError
            If ``key`` is malformed.
        NotFoundError
            If nothing lies at ``key``.
        ReadOnlyError
            At a tag, a sealed version, or a group opened read-only.
        """
        key = check_key(key)
        self._writable()
        self._store.session.follow_head()
        path = node_key(self._path, key)
        if sync(node_kind(self._store, path)) is None:
            raise NotFoundError(self._missing(key))
        sync(self._store.delete_dir(path))

    # -- pictures ------------------------------------------------------------------------

    def show(
        self,
        index: int | slice | Sequence[int] | None = None,
        *,
        key: str | None = None,
        labels: str | None = None,
        path: str | None = None,
    ) -> Image.Image:
        """Draw samples of the group's images, captioned with their labels and class names.

        The images are the array at ``key``, else the first of ``images``, ``image``, ``x``
        in this group, else its only array. The labels are the array at ``labels``, else the
        first of ``labels``, ``label``, ``y`` in this group that holds one value a sample
        (shape ``(N,)``). Class names are the attribute ``class_names`` or ``classes`` (a list
        of strings) of the labels array, else of this group: what ``hub cp`` writes for a
        folder of images. The picture is :meth:`HubArray.show`'s.

        Parameters
        ----------
        index : int, slice or sequence of int, optional
            The samples along the first axis; default the first 16 (4 volumes).
        key : str, optional
            The images' key (``"train/images"``).
        labels : str, optional
            The labels' key.
        path : str, optional
            Also write the picture to this file (``"out.png"``).

        Returns
        -------
        PIL.Image.Image
            The picture.

        Raises
        ------
        InvalidArgumentError
            If no array can be chosen as the images (the message lists the arrays), ``key``
            or ``labels`` names a group, or :meth:`HubArray.show` refuses.
        NotFoundError
            If nothing lies at ``key`` or ``labels``.
        InvalidIndexError
            If a sample is out of range or none is selected.
        """
        from hubzarr import show

        images = self._member_array(key, "images") if key is not None else self._images()
        found = show.arrangement(images.shape, images.dtype)
        label_array = None
        if labels is not None:
            label_array = self._member_array(labels, "labels")
        elif found.kind != "image":
            members = dict(self.arrays())
            label_array = next(
                (
                    members[k]
                    for k in show.LABEL_KEYS
                    if k in members and members[k].shape == (found.samples,)
                ),
                None,
            )
        names = None
        if label_array is not None:
            names = show.class_names(dict(label_array.zarr.attrs), dict(self.attrs))
        image = images.show(index, labels=label_array, class_names=names)
        if path is not None:
            show.save(image, path)
        return image

    def _member_array(self, key: str, role: str) -> HubArray:
        node = self[key]
        if not isinstance(node, HubArray):
            raise InvalidArgumentError(
                f"the {role} {key!r} of {self._describe()} is a group; name an array"
            )
        return node

    def _images(self) -> HubArray:
        """The array :meth:`show` draws when no key is given."""
        from hubzarr import show

        members = dict(self.arrays())
        for key in show.IMAGE_KEYS:
            if key in members:
                return members[key]
        if len(members) == 1:
            return next(iter(members.values()))
        held = ", ".join(repr(k) for k in members) or "no arrays"
        raise InvalidArgumentError(
            f"which array of {self._describe()} is the images? it holds {held} and none is "
            f"named {', '.join(show.IMAGE_KEYS)}: name it (key=..., hub show --key KEY)"
        )

    def _repr_html_(self) -> str:
        """A notebook's view: name, version, and each array (of subgroups too) with its shape,
        dtype, chunks and size, from the consolidated metadata (one read)."""
        from hubzarr import show

        self._store.session.follow_head()
        nodes = open_zarr_group(self._store, self._path).members(max_depth=None)
        members = sorted((k, node) for k, node in nodes if isinstance(node, zarr.Array))
        return show.group_html(self.name, self._path, self.version, members)

    # -- attributes ------------------------------------------------------------------------

    @property
    def attrs(self) -> Attributes:
        """The group's attributes (``.zattrs``), read now; assigning to them stores them.

        ``group.attrs["title"] = "mnist"`` and ``group.attrs.update(...)`` write at once (at a
        branch); ``group.attrs = {...}`` replaces them all.
        """
        self._store.session.follow_head()
        return Attributes(self, sync(self._read_attrs()))

    @attrs.setter
    def attrs(self, value: dict[str, Any]) -> None:
        self.attrs.put(value)

    async def _read_attrs(self) -> dict[str, Any]:
        return await read_attributes(self._store, self._path)

    def _update_attrs(self, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        self._writable()
        updated: dict[str, Any] = sync(self._change_attrs(change))
        return updated

    async def _change_attrs(self, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        key = node_key(self._path, ".zattrs")

        async def attempt() -> dict[str, Any]:
            # Read, change, write only if nobody wrote in between: no update is lost.
            with conditional_writes():
                attrs = await self._read_attrs()
                change(attrs)
                payload = default_buffer_prototype().buffer.from_bytes(encode_attributes(attrs))
                await self._store.set(key, payload)
            return attrs

        def exhausted() -> ConflictError:
            return ConflictError(
                f"other writers kept changing the attributes of {self._describe()}; try again"
            )

        return await compare_and_swap(
            attempt, before_retry=self._store.session.refresh, exhausted=exhausted
        )


class Attributes(MutableMapping[str, Any]):
    """A group's attributes as read when ``group.attrs`` was taken; changes are stored at once.

    Each change is a compare-and-swap of the ``.zattrs`` object, so concurrent writers of
    different attributes lose none; the values must be JSON.
    """

    def __init__(self, group: HubGroup, values: dict[str, Any]) -> None:
        self._group = group
        self._values = values

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return repr(self._values)

    def asdict(self) -> dict[str, Any]:
        """Return a copy of the attributes as a plain dict."""
        return dict(self._values)

    def _apply(self, change: Callable[[dict[str, Any]], None]) -> None:
        check: dict[str, Any] = dict(self._values)
        change(check)
        encode_attributes(check)  # refuse what is not JSON before anything is written
        self._values = self._group._update_attrs(change)

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise InvalidArgumentError(f"attribute names are strings, not {key!r}")
        self._apply(lambda attrs: attrs.__setitem__(key, value))

    def __delitem__(self, key: str) -> None:
        if key not in self._values:
            raise KeyError(key)
        self._apply(lambda attrs: attrs.pop(key, None))

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Set several attributes in one write."""
        values = dict(*args, **kwargs)
        if not all(isinstance(k, str) for k in values):
            raise InvalidArgumentError("attribute names are strings")
        self._apply(lambda attrs: attrs.update(values))

    def put(self, values: dict[str, Any]) -> None:
        """Replace all attributes with ``values`` in one write."""
        values = dict(values)
        if not all(isinstance(k, str) for k in values):
            raise InvalidArgumentError("attribute names are strings")

        def replace(attrs: dict[str, Any]) -> None:
            attrs.clear()
            attrs.update(values)

        self._apply(replace)
