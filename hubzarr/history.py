"""Comparing two states of a repository: which arrays and groups changed, how their metadata
changed, and which chunks were added, changed or deleted (``hubzarr.diff``, ``hub diff``).

Two versions of one repository share every index shard neither changed since their common
history (a seal keeps its parent's shards that hold no key it changed), so a diff reads only
the shards that one side holds and the other does not: its cost grows with what changed
between the two, not with the arrays' size. An open head adds what it wrote (one listing).
Objects are compared by where they lie (version and generation): a chunk rewritten with the
same bytes counts as changed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from hubzarr.errors import FormatError
from hubzarr.index import Shard, ShardedIndex, VersionIndex, is_metadata
from hubzarr.records import Location, keys_are_keys

__all__ = ["Diff", "NodeDiff", "diff_states", "merge_writes", "revert_writes"]

#: What a changed key was at each side: ``(location in a, location in b)``, ``None``: absent.
Change = tuple[Location | None, Location | None]
#: Shards read at once.
_READS = 32
#: Fields of ``.zarray`` a diff reports by name (any other field changed is reported too).
_ARRAY_FIELDS = ("shape", "dtype", "chunks", "compressor", "filters", "fill_value", "order")


@dataclass(frozen=True, slots=True)
class NodeDiff:
    """How one array or group differs between the two states.

    Attributes
    ----------
    path : str
        Its path in the repository (``""``: the repository's root node).
    kind : {"array", "group"}
    status : {"added", "deleted", "changed"}
    metadata : dict
        ``{field: (old, new)}``: ``.zarray`` fields (``shape``, ``dtype``, ``chunks``,
        ``compressor``, ...), and ``attributes`` for a change of ``.zattrs``.
    added, changed, deleted : tuple of tuple of int
        Chunk coordinates (arrays), sorted.
    chunks, shape : tuple of int
        The array's chunk and array shape in the state the chunks are read in (the newer one,
        the older for a deleted array): what :meth:`region` maps coordinates with.
    """

    path: str
    kind: Literal["array", "group"]
    status: Literal["added", "deleted", "changed"]
    metadata: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    added: tuple[tuple[int, ...], ...] = ()
    changed: tuple[tuple[int, ...], ...] = ()
    deleted: tuple[tuple[int, ...], ...] = ()
    chunks: tuple[int, ...] = ()
    shape: tuple[int, ...] = ()

    def region(self, coords: tuple[int, ...]) -> tuple[slice, ...]:
        """The index region the chunk at ``coords`` covers (clipped to the array's shape)."""
        return tuple(
            slice(c * n, min((c + 1) * n, size) if size else (c + 1) * n)
            for c, n, size in zip(coords, self.chunks, self.shape, strict=True)
        )


@dataclass(frozen=True, slots=True)
class Diff:
    """How the state ``b`` differs from the state ``a`` (each ``user/name:<version>``).

    Attributes
    ----------
    a, b : str
        What was compared, each resolved to a version (an open head's id at a branch).
    nodes : tuple of NodeDiff
        Each array and group that differs, by path.
    other : tuple of str
        Keys that changed and belong to no array or group (files a store holds beside them).
    """

    a: str
    b: str
    nodes: tuple[NodeDiff, ...]
    other: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.nodes or self.other)


async def diff_states(
    a: tuple[VersionIndex, Mapping[str, Location | None]],
    b: tuple[VersionIndex, Mapping[str, Location | None]],
    read: tuple[Any, Any],
) -> tuple[tuple[NodeDiff, ...], tuple[str, ...]]:
    """The nodes that differ between two states of one repository, each an index and what an
    open head changed over it (:meth:`hubzarr.session.Session.state`); ``read`` reads a
    metadata key at each side (``await read[0](key)``).
    """
    return await nodes_of(await _changed_keys(a, b), a, b, read)


async def nodes_of(
    changes: Mapping[str, Change],
    a: tuple[VersionIndex, Mapping[str, Location | None]],
    b: tuple[VersionIndex, Mapping[str, Location | None]],
    read: tuple[Any, Any],
) -> tuple[tuple[NodeDiff, ...], tuple[str, ...]]:
    """``changes`` (key -> its locations at ``a`` and ``b``) sorted into the arrays and groups
    of the two states, as :func:`diff_states` reports them."""
    metadata_a, metadata_b = await asyncio.gather(_metadata_keys(*a), _metadata_keys(*b))
    arrays = {k.rpartition("/")[0] for k in metadata_a | metadata_b if _leaf(k) == ".zarray"}
    groups = {k.rpartition("/")[0] for k in metadata_a | metadata_b if _leaf(k) == ".zgroup"}
    paths = sorted(arrays | groups, key=lambda p: (-len(p), p))  # longest first: owners
    documents: dict[tuple[int, str], Any] = {}

    async def document(side: int, key: str) -> Any:
        if (side, key) not in documents:
            raw = await read[side](key)
            try:
                documents[side, key] = None if raw is None else json.loads(bytes(raw))
            except ValueError:
                raise FormatError(f"{key} is not a JSON document") from None
        return documents[side, key]

    touched: dict[str, dict[str, Change]] = {}
    other: list[str] = []
    for key, change in changes.items():
        owner = _owner(key, paths)
        if owner is None:
            other.append(key)
        else:
            touched.setdefault(owner, {})[key] = change
    nodes: list[NodeDiff] = []
    for path in sorted(touched):
        node = await _node_diff(path, touched[path], path in arrays, document)
        if node is not None:
            nodes.append(node)
    return tuple(nodes), tuple(sorted(other))


def _leaf(key: str) -> str:
    return key.rpartition("/")[2]


def _owner(key: str, paths: list[str]) -> str | None:
    """The array or group ``key`` belongs to: its own metadata's, or the deepest whose folder
    holds it."""
    if is_metadata(key):
        folder = key.rpartition("/")[0]
        return folder if folder in paths else None
    for path in paths:
        if not path or key.startswith(path + "/"):
            return path
    return None


async def _node_diff(
    path: str, changes: dict[str, Change], is_array: bool, document: Any
) -> NodeDiff | None:
    prefix = f"{path}/" if path else ""
    kind: Literal["array", "group"] = "array" if is_array else "group"
    meta_key = prefix + (".zarray" if is_array else ".zgroup")
    status: Literal["added", "deleted", "changed"] = "changed"
    if meta_key in changes:
        before, after = changes[meta_key]
        status = "added" if before is None else "deleted" if after is None else "changed"
    metadata: dict[str, tuple[Any, Any]] = {}
    old_meta = await document(0, meta_key) if is_array and status != "added" else None
    new_meta = await document(1, meta_key) if is_array and status != "deleted" else None
    if is_array and meta_key in changes and old_meta is not None and new_meta is not None:
        for name in sorted(set(old_meta) | set(new_meta), key=_field_order):
            if old_meta.get(name) != new_meta.get(name):
                metadata[name] = (old_meta.get(name), new_meta.get(name))
    attrs_key = prefix + ".zattrs"
    if attrs_key in changes:
        old_attrs, new_attrs = changes[attrs_key]
        metadata["attributes"] = (
            await document(0, attrs_key) if old_attrs is not None else None,
            await document(1, attrs_key) if new_attrs is not None else None,
        )
    shown = new_meta if new_meta is not None else old_meta
    sep = (shown or {}).get("dimension_separator") or "."
    buckets: dict[str, list[tuple[int, ...]]] = {"added": [], "changed": [], "deleted": []}
    for key, (old, new) in changes.items():
        if is_metadata(key[len(prefix) :]) or not is_array:
            continue
        coords = _coords(key[len(prefix) :], sep)
        if coords is None:
            continue
        bucket = "added" if old is None else "deleted" if new is None else "changed"
        buckets[bucket].append(coords)
    if status != "changed":
        metadata = {}  # the whole node is new, or gone
    elif not metadata and not any(buckets.values()):
        return None
    return NodeDiff(
        path,
        kind,
        status,
        metadata,
        added=tuple(sorted(buckets["added"])),
        changed=tuple(sorted(buckets["changed"])),
        deleted=tuple(sorted(buckets["deleted"])),
        chunks=tuple((shown or {}).get("chunks") or ()),
        shape=tuple((shown or {}).get("shape") or ()),
    )


def _field_order(name: str) -> tuple[int, str]:
    return (_ARRAY_FIELDS.index(name) if name in _ARRAY_FIELDS else len(_ARRAY_FIELDS), name)


def _coords(chunk_key: str, separator: str) -> tuple[int, ...] | None:
    parts = chunk_key.split(separator)
    if not all(p.isdigit() for p in parts):
        return None
    return tuple(int(p) for p in parts)


async def _metadata_keys(index: VersionIndex, head: Mapping[str, Location | None]) -> set[str]:
    keys = await index.metadata()
    for key, location in head.items():
        if is_metadata(key):
            (keys.add if location is not None else keys.discard)(key)
    return keys


async def revert_writes(
    current: tuple[VersionIndex, Mapping[str, Location | None]],
    target: tuple[VersionIndex, Mapping[str, Location | None]],
) -> dict[str, Location | None]:
    """What makes ``current`` equal ``target``: key -> the object ``target`` has (``None``:
    delete it)."""
    return {key: new for key, (_, new) in (await _changed_keys(current, target)).items()}


async def merge_writes(
    base: VersionIndex,
    ours: VersionIndex,
    theirs: VersionIndex,
    same: Any,
    strategy: Literal["ours", "theirs"] | None,
) -> tuple[dict[str, Location | None], dict[str, Change]]:
    """A three-way merge of ``theirs`` into ``ours`` against their common ancestor ``base``,
    key by key: what to write over ``ours`` (key -> the object to take, ``None``: delete),
    and the conflicts left (key -> its objects in ours and theirs).

    A key only ``theirs`` changed is taken; one both changed to the same object, or to
    objects with the same bytes (``await same(key, ours, theirs)``), or both deleted, is
    fine; otherwise it conflicts, and ``strategy`` settles it (``"ours"``: kept, ``"theirs"``:
    taken).
    """
    nothing: dict[str, Location | None] = {}
    ours_changed, theirs_changed = await asyncio.gather(
        _changed_keys((base, nothing), (ours, nothing)),
        _changed_keys((base, nothing), (theirs, nothing)),
    )
    writes: dict[str, Location | None] = {}
    conflicts: dict[str, Change] = {}
    for key, (_, taken) in sorted(theirs_changed.items()):
        if key not in ours_changed:
            writes[key] = taken
            continue
        kept = ours_changed[key][1]
        if kept == taken:
            continue
        if kept is not None and taken is not None and await same(key, kept, taken):
            continue
        if strategy == "theirs":
            writes[key] = taken
        elif strategy is None:
            conflicts[key] = (kept, taken)
    return writes, conflicts


async def _changed_keys(
    a: tuple[VersionIndex, Mapping[str, Location | None]],
    b: tuple[VersionIndex, Mapping[str, Location | None]],
) -> dict[str, Change]:
    """Every key whose object differs between the two states, with both locations."""
    (index_a, head_a), (index_b, head_b) = a, b
    changes: dict[str, Change] = {}
    if _sharded(index_a) and _sharded(index_b):
        assert isinstance(index_a, ShardedIndex) and isinstance(index_b, ShardedIndex)
        changes = await _changed_shards(index_a, index_b)
    else:
        before, after = await asyncio.gather(index_a.mapping(), index_b.mapping())
        _compare(before, after, changes)
    # What the open heads wrote over their indexes.
    for key in head_a.keys() | head_b.keys():
        old = head_a[key] if key in head_a else await index_a.get(key)
        new = head_b[key] if key in head_b else await index_b.get(key)
        if old != new:
            changes[key] = (old, new)
        else:
            changes.pop(key, None)
    return changes


def _sharded(index: VersionIndex) -> bool:
    return isinstance(index, ShardedIndex) and index.root.inline is None


def _compare(
    before: Mapping[str, Location], after: Mapping[str, Location], changes: dict[str, Change]
) -> None:
    for key in before.keys() | after.keys():
        old, new = before.get(key), after.get(key)
        if old != new:
            changes[key] = (old, new)


async def _changed_shards(index_a: ShardedIndex, index_b: ShardedIndex) -> dict[str, Change]:
    """:func:`_changed_keys` of two sharded indexes: only the shards one names and the other
    does not are read (a shard both name holds the same keys at the same locations in both,
    and no other shard of either holds them). A shard of each side with the same keys (a
    rewrite of chunks that were there) is compared run by run, without a map of its keys."""
    root_a, root_b = index_a.root, index_b.root
    names_a = {root_a.name(i): i for i in range(root_a.shards)}
    names_b = {root_b.name(i): i for i in range(root_b.shards)}
    own_a = [i for name, i in names_a.items() if name not in names_b]
    own_b = [i for name, i in names_b.items() if name not in names_a]
    shards_a, shards_b = await asyncio.gather(_read(index_a, own_a), _read(index_b, own_b))
    changes: dict[str, Change] = {}
    _compare(dict(root_a.meta.items()), dict(root_b.meta.items()), changes)
    # Pairs with the same first key and the same keys: compared by their runs.
    by_first = {shard.first(): shard for shard in shards_b}
    rest_a, paired = [], set()
    for shard in shards_a:
        other = by_first.get(shard.first())
        if other is not None and _same_keys(shard, other):
            _compare_runs(shard, other, changes)
            paired.add(id(other))
        else:
            rest_a.append(shard)
    before = {k: v for shard in rest_a for k, v in shard.items()}
    after = {k: v for shard in shards_b if id(shard) not in paired for k, v in shard.items()}
    _compare(before, after, changes)
    return changes


async def _read(index: ShardedIndex, numbers: list[int]) -> list[Shard]:
    out: list[Shard] = []
    for start in range(0, len(numbers), _READS):
        out += await asyncio.gather(*(index.shard(i) for i in numbers[start : start + _READS]))
    return out


def _same_keys(a: Shard, b: Shard) -> bool:
    return len(a) == len(b) and a.joined() == b.joined()


def _compare_runs(a: Shard, b: Shard, changes: dict[str, Change]) -> None:
    """Keys (the same in both shards) whose locations differ, found by walking both shards'
    runs together: a stretch where both runs name one location each costs a comparison. The
    keys are split, and those reported checked, only where locations differ (the two shards'
    keys are the same string, so their order plays no part).

    Raises
    ------
    FormatError
        If a key reported is not one a store could have written.
    """
    count = len(a)
    bounds = sorted({*a.starts, *b.starts, count})
    ia = ib = 0
    found: dict[str, Change] = {}
    for lo, hi in itertools.pairwise(bounds):
        while ia + 1 < len(a.starts) and a.starts[ia + 1] <= lo:
            ia += 1
        while ib + 1 < len(b.starts) and b.starts[ib + 1] <= lo:
            ib += 1
        old, new = a.locations[a.runs[ia]], b.locations[b.runs[ib]]
        if old != new:
            keys = a.keys
            for k in range(lo, hi):
                found[keys[k]] = (old, new)
    if found and not keys_are_keys("\n".join(found), len(found)):
        raise FormatError(
            f"{a.where} holds a key no store could have written; the repository is damaged: "
            "restore that file from a copy"
        )
    changes.update(found)
