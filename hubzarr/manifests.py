"""Manifests, checkpoints and the index a version is read with.

A sealed version's manifest lists what the version itself wrote: the newest generation of each
key it wrote, and the keys it deleted (:class:`~hubzarr.records.Manifest`). The *index* of a
version, ``{key: location}``, is its whole state: the manifests of its *chain* (the sealed
ancestors back to the nearest checkpoint, at most :data:`~hubzarr.records.CHECKPOINT_EVERY`)
applied oldest first (:func:`merge`). Every so many versions a sealed version's manifest is a
:class:`~hubzarr.records.Checkpoint` holding the whole merged index instead (as Delta Lake
checkpoints its log), so opening stays cheap after thousands of versions while a seal costs what
was written since the previous one; one seal in :data:`~hubzarr.records.CHECKPOINT_EVERY` costs
a rewrite of the index.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hubzarr.files import RepoFiles
from hubzarr.frame import TOMBSTONE
from hubzarr.records import (
    Checkpoint,
    Location,
    Manifest,
    VersionRecord,
    parse_manifest,
    split_generation,
)

__all__ = ["HeadContents", "Index", "Manifests", "apply", "build", "merge"]

#: A version's state: the object each key resolves to.
Index = dict[str, Location]


@dataclass(frozen=True, slots=True)
class HeadContents:
    """What an open version holds under its own prefix (``data/<version>/``): the newest
    generation of each key it wrote.

    Attributes
    ----------
    written : dict
        ``{key: generation}`` of the keys whose newest object holds a value.
    deleted : dict
        ``{key: generation}`` of the keys whose newest object is a tombstone.
    """

    written: dict[str, int]
    deleted: dict[str, int]

    @classmethod
    def from_listing(cls, listing: dict[str, int]) -> HeadContents:
        """From a listing of ``data/<version>/`` (``{object name: size}``): the newest
        generation of each key, told apart by size (a tombstone is 4 bytes, data at least 8;
        an emptied superseded generation, 0 bytes, is never the newest)."""
        newest: dict[str, tuple[int, int]] = {}
        for name, size in listing.items():
            key, generation = split_generation(name)
            if generation >= newest.get(key, (-1, 0))[0]:
                newest[key] = (generation, size)
        tombstone = len(TOMBSTONE)
        return cls(
            written={k: g for k, (g, size) in newest.items() if size != tombstone},
            deleted={k: g for k, (g, size) in newest.items() if size == tombstone},
        )


def apply(index: Index, manifest: Manifest | Checkpoint) -> None:
    """Apply one sealed version's manifest (or checkpoint) to ``index``, in place."""
    if isinstance(manifest, Checkpoint):
        index.clear()
        for location, keys in manifest.index.items():
            index.update(dict.fromkeys(keys, location))
        return
    index.update(manifest.locations())
    for key in manifest.deleted:
        index.pop(key, None)


def merge(manifests: Iterable[Manifest | Checkpoint]) -> Index:
    """The index of the state the manifests lead to, applied in order (oldest first)."""
    index: Index = {}
    for manifest in manifests:
        apply(index, manifest)
    return index


def build(
    record: VersionRecord, contents: HeadContents, base: Index | None
) -> Manifest | Checkpoint:
    """The manifest sealing the version of ``record`` with ``contents``.

    ``base`` is the version's starting index, needed (and only then given) when the version is
    a checkpoint (:attr:`VersionRecord.is_checkpoint`).
    """
    version = record.id
    if not record.is_checkpoint:
        return Manifest(
            version,
            written=tuple(sorted(k for k, g in contents.written.items() if g == 0)),
            generations={k: g for k, g in sorted(contents.written.items()) if g},
            deleted=tuple(sorted(contents.deleted)),
        )
    assert base is not None, "a checkpoint needs the starting index"
    index = dict(base)
    for key in contents.deleted:
        index.pop(key, None)
    index.update((k, Location(version, g)) for k, g in contents.written.items())
    grouped: dict[Location, list[str]] = {}
    for key, location in sorted(index.items()):
        grouped.setdefault(location, []).append(key)
    # Stored sorted by location (as the manifest's JSON is), so equal states give equal bytes.
    return Checkpoint(version, {loc: tuple(grouped[loc]) for loc in sorted(grouped, key=str)})


class Manifests:
    """The manifests of one repository (its files, opened): read once each, then kept, as a
    manifest never changes."""

    def __init__(self, files: RepoFiles) -> None:
        self.files = files
        self._cache: dict[str, Manifest | Checkpoint] = {}

    async def read(self, version: str) -> Manifest | Checkpoint | None:
        """Read and check the manifest of ``version``; ``None`` if it has none (yet)."""
        cached = self._cache.get(version)
        if cached is not None:
            return cached

        def parse(data: dict[str, Any], where: str) -> Manifest | Checkpoint:
            return parse_manifest(data, where, version)

        manifest = await self.files.read_record(self.files.manifest_path(version), parse)
        if manifest is not None:
            self._cache[version] = manifest
        return manifest

    async def exists(self, version: str) -> bool:
        """Whether ``version`` has a manifest (is sealed and listed)."""
        if version in self._cache:
            return True
        return await self.files.storage.exists(self.files.manifest_path(version))

    async def contents(self, version: str) -> HeadContents:
        """List what the open ``version`` holds under its prefix (one listing)."""
        prefix = f"{self.files.home}/data/{version}"
        return HeadContents.from_listing(await self.files.storage.list(prefix))
