"""Repositories, refs, versions, manifests and the seal protocol.

Layout of one repository under the hub root::

    <user>/<name>/repo.json                       identity: incarnation id, default branch
    <user>/<name>/<incarnation>/refs/branches/<b>.json   {"head": <version id>}
    <user>/<name>/<incarnation>/refs/tags/<t>.json       {"version": <version id>}, created once
    <user>/<name>/<incarnation>/versions/<id>.json       parent and manifest chain, created once
    <user>/<name>/<incarnation>/seals/<id>.json          the fence: <id> takes no more writes
    <user>/<name>/<incarnation>/manifests/<id>.json      what <id> wrote and deleted, created once
    <user>/<name>/<incarnation>/data/<id>/<zarr key>     objects written while <id> was open

Every repository file but a branch ref is created once (put-if-absent) and never changed. A
deleted repository loses its ``repo.json`` first, so re-creating the name starts a new
incarnation folder that no debris of the old one can leak into.

**Copy-on-write by key prefix.** A branch points at one *open* version, its head; zarr writes
go to ``data/<head>/``. Sealing a head (for a tag or a branch) creates its successor's record,
then the seal record (the fence), then the manifest listing ``data/<head>/``, then moves the
branch. No chunk is ever copied: the new head starts empty and reads fall through to its
ancestors.

**Reading.** The newest object for a key along a version's ancestry is found in an index merged
from the manifests in the version's *chain*, loaded once when the version is opened. The chain
is at most :data:`CHECKPOINT_EVERY` manifests long: every so many generations a sealed version's
manifest is written as a checkpoint holding the whole merged index (as Delta Lake checkpoints
its log), so opening stays cheap after thousands of tags while a tag's cost stays proportional
to what was written since the last one.

**Crashes.** Each step is idempotent and the seal record holds all a finisher needs, so a
sealer that dies halfway is finished by the next actor that opens the branch or the version.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import getpass
import json
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from hubzarr import frame
from hubzarr.errors import AlreadyExistsError, FormatError, InvalidArgumentError, NotFoundError
from hubzarr.frame import TOMBSTONE
from hubzarr.names import Name, check_ref
from hubzarr.storage import Storage

__all__ = [
    "CHECKPOINT_EVERY",
    "LAYOUT",
    "LogEntry",
    "Repository",
    "Resolved",
    "VersionRecord",
    "list_repositories",
]

#: The repository layout this code writes and reads.
LAYOUT = 1
#: A sealed version whose chain is this long gets a checkpoint manifest.
CHECKPOINT_EVERY = 50

_VERSION_ID = re.compile(r"[0-9a-f]{20}", re.ASCII)
_INCARNATION = re.compile(r"[0-9a-f]{16}", re.ASCII)


_GENERATION = re.compile(r"(.+)~([1-9][0-9]*)", re.ASCII)


def split_generation(name: str) -> tuple[str, int]:
    """Split a stored object's name under ``data/<version>/`` into (zarr key, generation)."""
    match = _GENERATION.fullmatch(name)
    if match is None:
        return name, 0
    return match[1], int(match[2])


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _valid_manifest(data: dict[str, Any]) -> bool:
    """Whether a manifest has the shape :meth:`Repository._apply` relies on."""
    if data.get("checkpoint"):
        index = data.get("index")
        return isinstance(index, dict) and all(
            isinstance(owner, str) and _strings(keys) for owner, keys in index.items()
        )
    generations = data.get("generations", {})
    return (
        _strings(data.get("written"))
        and _strings(data.get("deleted"))
        and isinstance(generations, dict)
        and all(
            isinstance(g, int) and not isinstance(g, bool) and g > 0 for g in generations.values()
        )
    )


def new_version_id() -> str:
    """Return a new version id: 12 hex digits of milliseconds, then 8 random hex digits."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(4)}"


def _dump(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def _author() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@dataclass(frozen=True, slots=True)
class VersionRecord:
    """A version's immutable record.

    Attributes
    ----------
    id : str
        The version id.
    parent : str or None
        The sealed version it was started from; ``None`` for a repository's first version.
    chain : tuple of str
        The sealed ancestors whose manifests make up this version's starting state, newest
        first, ending at a checkpoint or at the first version.
    created : float
        When the version was opened, in seconds since the epoch.
    """

    id: str
    parent: str | None
    chain: tuple[str, ...]
    created: float

    @property
    def is_checkpoint(self) -> bool:
        """Whether this version's manifest, once sealed, holds the whole merged index."""
        return len(self.chain) >= CHECKPOINT_EVERY

    def child(self) -> VersionRecord:
        """Return the record of a new open version starting from this one."""
        chain = (self.id,) if self.is_checkpoint else (self.id, *self.chain)
        return VersionRecord(new_version_id(), self.id, chain, time.time())

    def to_json(self) -> bytes:
        """Serialise the record."""
        return _dump(
            {
                "id": self.id,
                "parent": self.parent,
                "chain": list(self.chain),
                "created": self.created,
            }
        )


@dataclass(frozen=True, slots=True)
class Resolved:
    """What a ref resolved to.

    Attributes
    ----------
    kind : {"branch", "tag", "version"}
        What the ref named.
    ref : str
        The ref itself.
    version : str
        The version id: the open head for a branch, a sealed version otherwise.
    sealed : bool
        Whether the version is sealed (immutable).
    """

    kind: Literal["branch", "tag", "version"]
    ref: str
    version: str
    sealed: bool


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One version in a repository's history.

    Attributes
    ----------
    id : str
        The version id.
    parent : str or None
        The version it started from.
    time : datetime.datetime
        When it was sealed (or opened, for an open head), in UTC.
    message : str or None
        The message given when it was sealed.
    refs : tuple of str
        The branches and tags pointing at it (``"tag: v1"``-style for tags).
    sealed : bool
        False for a branch's open head.
    """

    id: str
    parent: str | None
    time: datetime
    message: str | None
    refs: tuple[str, ...]
    sealed: bool


class Repository:
    """One repository's version history on a storage.

    Parameters
    ----------
    storage : Storage
        The hub root's storage.
    name : Name
        The repository's name; its ref is ignored.
    """

    def __init__(self, storage: Storage, name: Name) -> None:
        self.storage = storage
        self.name = name.with_ref(None)
        self._base = f"{name.user}/{name.repo}"
        self._info: dict[str, Any] | None = None

    # -- files ---------------------------------------------------------------------------

    async def _read_json(self, path: str) -> dict[str, Any] | None:
        raw = await self.storage.read(path)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise FormatError(
                f"{self.storage.url}/{path} is not valid JSON; the repository {self.name} is "
                "damaged: restore that file from a copy"
            ) from exc
        if not isinstance(data, dict):
            raise FormatError(f"{self.storage.url}/{path} is not a JSON object")
        return data

    def _field(
        self, data: dict[str, Any], key: str, kind: type | tuple[type, ...], path: str
    ) -> Any:
        value = data.get(key)
        if not isinstance(value, kind):
            raise FormatError(
                f"{self.storage.url}/{path} lacks a valid {key!r} field; the repository "
                f"{self.name} is damaged: restore that file from a copy"
            )
        return value

    @property
    def _home(self) -> str:
        assert self._info is not None, "call open() or create() first"
        return f"{self._base}/{self._info['id']}"

    def _path(self, *parts: str) -> str:
        return "/".join((self._home, *parts))

    def path(self, *parts: str) -> str:
        """Return the storage path of ``parts`` inside the repository's incarnation folder."""
        return self._path(*parts)

    @property
    def base(self) -> str:
        """The repository's folder under the root, ``<user>/<name>``."""
        return self._base

    @property
    def incarnation(self) -> str:
        """The id of the repository's current incarnation folder."""
        assert self._info is not None, "call open() or create() first"
        return str(self._info["id"])

    def data_path(self, version: str, key: str, generation: int = 0) -> str:
        """Return the storage path of generation ``generation`` of ``key`` in ``version``.

        Objects are written once: rewriting a key in an open version creates its next
        generation, ``<key>~<n>``, and never changes an object a sealed manifest may name.
        """
        suffix = f"~{generation}" if generation else ""
        return self._path("data", version, key + suffix)

    def object_path(self, location: str, key: str) -> str:
        """Return the storage path of ``key`` at an index location (``version[~gen]``)."""
        version, _, generation = location.partition("~")
        return self.data_path(version, key, int(generation or 0))

    # -- identity ------------------------------------------------------------------------

    async def exists(self) -> bool:
        """Return whether the repository exists."""
        return await self.storage.exists(f"{self._base}/repo.json")

    async def open(self) -> None:
        """Read the repository's identity.

        Raises
        ------
        NotFoundError
            If there is no such repository; the message names close matches.
        FormatError
            If ``repo.json`` is damaged or of a newer layout.
        """
        if self._info is not None:
            return
        path = f"{self._base}/repo.json"
        info = await self._read_json(path)
        if info is None:
            names = [n for n in await list_repositories(self.storage) if n != str(self.name)]
            close = difflib.get_close_matches(str(self.name), names, n=3, cutoff=0.75)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise NotFoundError(
                f"no repository {self.name} under {self.storage.url}{hint} "
                "(create one with hubzarr.array(...); list them with 'hub ls')"
            )
        layout = self._field(info, "layout", int, path)
        if layout > LAYOUT:
            raise FormatError(
                f"{self.name} was written with repository layout {layout}, newer than this "
                f"hubzarr understands ({LAYOUT}); upgrade hubzarr"
            )
        if not _INCARNATION.fullmatch(str(self._field(info, "id", str, path))):
            raise FormatError(f"{self.storage.url}/{path} has an invalid 'id'")
        check_ref(self._field(info, "default_branch", str, path), what="default branch")
        if not _VERSION_ID.fullmatch(str(self._field(info, "root_version", str, path))):
            raise FormatError(f"{self.storage.url}/{path} has an invalid 'root_version'")
        self._field(info, "created", (int, float), path)
        self._info = info

    @property
    def default_branch(self) -> str:
        """The branch a name without a ref means."""
        assert self._info is not None, "call open() or create() first"
        return str(self._info["default_branch"])

    async def create(self, branch: str, initial: dict[str, bytes] | None = None) -> str:
        """Create the repository with one branch; return the branch's head.

        Parameters
        ----------
        branch : str
            The first (default) branch.
        initial : dict, optional
            Objects the first version holds from the start (``{zarr key: payload}``, such as
            an array's ``.zarray``): written before the repository is published, so a creator
            killed halfway leaves no repository rather than one without its array.

        Raises
        ------
        AlreadyExistsError
            If the repository exists (exactly one of several concurrent creators succeeds).
        """
        check_ref(branch, what="branch")
        record = VersionRecord(new_version_id(), None, (), time.time())
        info = {
            "format": "hubzarr",
            "layout": LAYOUT,
            "id": secrets.token_hex(8),
            "default_branch": branch,
            "root_version": record.id,
            "created": record.created,
        }
        # Everything goes into a fresh incarnation folder no reader looks at until repo.json
        # names it: repo.json, created last, decides the winner among concurrent creators and
        # publishes the lot at once. A loser's folder, or a killed creator's, is left for gc.
        self._info = info
        try:
            for key, payload in (initial or {}).items():
                await self.storage.create(
                    self.data_path(record.id, key), (frame.encode_header(payload), payload)
                )
            await self._recover_default_branch()
        finally:
            self._info = None
        try:
            await self.storage.create(f"{self._base}/repo.json", _dump(info))
        except AlreadyExistsError:
            raise AlreadyExistsError(
                f"repository {self.name} already exists under {self.storage.url}; open it "
                "with hubzarr.load(...), or pass overwrite=True to replace its head's contents"
            ) from None
        self._info = info
        await self._recover_default_branch()
        return record.id

    async def delete(self) -> None:
        """Delete the repository with all its versions."""
        await self.open()
        home = self._home
        await self.storage.delete(f"{self._base}/repo.json")
        self._info = None
        await self.storage.delete_prefix(home)

    # -- refs ----------------------------------------------------------------------------

    def _ref_path(self, kind: Literal["branch", "tag"], ref: str) -> str:
        return self._path("refs", "branches" if kind == "branch" else "tags", f"{ref}.json")

    async def _read_ref(self, kind: Literal["branch", "tag"], ref: str) -> str | None:
        path = self._ref_path(kind, ref)
        data = await self._read_json(path)
        if data is None:
            if kind == "branch" and ref == self.default_branch:
                return await self._recover_default_branch()
            return None
        if data.get("deleted") is True:
            return None
        value = self._field(data, "head" if kind == "branch" else "version", str, path)
        if not _VERSION_ID.fullmatch(value):
            raise FormatError(f"{self.storage.url}/{path} points at an invalid version id")
        return str(value)

    async def _recover_default_branch(self) -> str | None:
        # The first version's record and the default branch are fully determined by repo.json:
        # the creator writes them right after it, and any opener finishes a creation that
        # stopped halfway.
        assert self._info is not None
        if self.storage.read_only:
            return None
        root = VersionRecord(
            str(self._info["root_version"]), None, (), float(self._info["created"])
        )
        for path, content in (
            (self._path("versions", f"{root.id}.json"), root.to_json()),
            (self._ref_path("branch", self.default_branch), _dump({"head": root.id})),
        ):
            with contextlib.suppress(AlreadyExistsError):
                await self.storage.create(path, content)
        return await self._read_ref("branch", self.default_branch)

    async def refs(self) -> dict[str, tuple[Literal["branch", "tag"], str]]:
        """Return ``{ref: (kind, version)}`` for every branch (its head) and tag."""
        await self.open()
        out: dict[str, tuple[Literal["branch", "tag"], str]] = {}
        kinds: tuple[tuple[Literal["branch", "tag"], str], ...] = (
            ("branch", "branches"),
            ("tag", "tags"),
        )
        for kind, folder in kinds:
            names = [
                n.removesuffix(".json")
                for n in await self.storage.list_dir(self._path("refs", folder))
                if n.endswith(".json")
            ]
            versions = await asyncio.gather(*(self._read_ref(kind, n) for n in names))
            out.update(
                (n, (kind, v)) for n, v in zip(names, versions, strict=True) if v is not None
            )
        return out

    async def _deleted(self, kind: Literal["branch", "tag"], ref: str) -> bool:
        data = await self._read_json(self._ref_path(kind, ref))
        return data is not None and data.get("deleted") is True

    async def _check_ref_free(self, ref: str, what: str) -> None:
        branch, tag = await asyncio.gather(
            self._read_ref("branch", ref), self._read_ref("tag", ref)
        )
        if branch is not None or tag is not None:
            kind = "branch" if branch is not None else "tag"
            raise AlreadyExistsError(
                f"{self.name} already has a {kind} named {ref!r}; choose another {what} name"
            )
        kinds: tuple[Literal["branch", "tag"], ...] = ("branch", "tag")
        for kind in kinds:
            if await self._deleted(kind, ref):
                raise AlreadyExistsError(self._reuse_message(kind, ref, what))

    def _reuse_message(self, kind: str, ref: str, what: str) -> str:
        return (
            f"{self.name} had a {kind} named {ref!r}, which was deleted; ref names are never "
            f"reused, so a name someone saved never silently means other data: choose another "
            f"{what} name"
        )

    async def delete_ref(self, kind: Literal["branch", "tag"], ref: str) -> str:
        """Delete a tag or branch; return the version it pointed at.

        The ref's record stays behind, marked deleted, so its name is never reused (a name
        saved in a notebook cannot come to mean other data). The versions it kept alive are
        left for :meth:`gc`.

        Raises
        ------
        NotFoundError
            If there is no such tag or branch.
        InvalidArgumentError
            For the default branch.
        """
        check_ref(ref, what=kind)
        await self.open()
        if kind == "branch" and ref == self.default_branch:
            raise InvalidArgumentError(
                f"{ref!r} is the default branch of {self.name} and cannot be deleted; delete "
                "the repository instead"
            )
        path = self._ref_path(kind, ref)
        data = await self._read_json(path)
        if data is None or data.get("deleted") is True:
            gone = " (it was deleted)" if data is not None else ""
            raise NotFoundError(f"{self.name} has no {kind} named {ref!r}{gone}")
        version = self._field(data, "head" if kind == "branch" else "version", str, path)
        record = {"deleted": True, "was": version, "time": time.time()}
        await self.storage.write(path, _dump(record), durable=True)
        if kind == "branch":
            await self._seal_deleted(ref, str(version))
        return str(version)

    async def _seal_deleted(self, branch: str, head: str) -> None:
        """Seal a deleted branch's head with no successor, so a store still writing there
        gets NotFoundError at its next seal check instead of writing what gc will free."""
        while True:
            try:
                head = (await self.successors(head))[-1]
            except NotFoundError:
                return  # sealed as deleted already
            seal = {
                "version": head,
                "successor": None,
                "branch": branch,
                "time": time.time(),
                "message": f"branch {branch} deleted",
                "author": _author(),
            }
            try:
                await self.storage.create(self._path("seals", f"{head}.json"), _dump(seal))
            except AlreadyExistsError:
                continue  # a tag sealed it meanwhile: seal the head that took over
            await self._finish_seal(head, seal)
            return

    async def resolve(self, ref: str | None) -> Resolved:
        """Resolve a branch, tag or version id (``None``: the default branch).

        Raises
        ------
        NotFoundError
            If nothing of that name exists; the message lists close matches.
        """
        await self.open()
        ref = ref or self.default_branch
        head = await self._read_ref("branch", ref)
        if head is not None:
            return Resolved("branch", ref, await self.current_head(head), sealed=False)
        tag = await self._read_ref("tag", ref)
        if tag is not None:
            return Resolved("tag", ref, tag, sealed=True)
        if _VERSION_ID.fullmatch(ref) and await self.read_version(ref) is not None:
            return Resolved("version", ref, ref, sealed=await self._is_sealed(ref))
        for kind in ("tag", "branch"):
            if await self._deleted(kind, ref):
                raise NotFoundError(f"the {kind} {ref!r} of {self.name} was deleted")
        known = sorted(await self.refs())
        close = difflib.get_close_matches(ref, known, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise NotFoundError(
            f"{self.name} has no branch, tag or version {ref!r}; {hint}"
            f"its refs are: {', '.join(known) or '(none)'}"
        )

    async def branch_head(self, branch: str) -> str:
        """Return the open head of ``branch``, finishing any half-done seal of it first.

        Raises
        ------
        NotFoundError
            If there is no such branch.
        """
        head = await self._read_ref("branch", branch)
        if head is None:
            raise NotFoundError(f"{self.name} has no branch {branch!r}")
        return await self.current_head(head)

    async def current_head(self, version: str) -> str:
        """Follow ``version``'s seals to the open head that took over its writes."""
        return (await self.successors(version))[-1]

    async def successors(self, version: str) -> list[str]:
        """Return ``version`` and the heads that took over from it, oldest first.

        All but the last are sealed. A seal found on the way is finished first (manifest
        written, branch moved), so a sealer that died halfway is completed by whoever comes next.
        """
        path = [version]
        while await self.storage.exists(self._path("seals", f"{path[-1]}.json")):
            seal = await self._read_seal(path[-1])
            assert seal is not None, "seal records are never deleted"
            await self._finish_seal(path[-1], seal)
            if seal.get("successor") is None:
                # Sealed by the deletion of its branch: nothing takes over its writes.
                raise NotFoundError(
                    f"the branch {seal.get('branch')!r} of {self.name} was deleted (its last "
                    f"version, {path[-1]}, can still be read by id until garbage collection)"
                )
            path.append(str(seal["successor"]))
        return path

    # -- versions ------------------------------------------------------------------------

    async def read_version(self, version: str) -> VersionRecord | None:
        """Return a version's record, or ``None`` if there is none."""
        path = self._path("versions", f"{version}.json")
        data = await self._read_json(path)
        if data is None:
            return None
        parent = data.get("parent")
        chain = self._field(data, "chain", list, path)
        if (parent is not None and not isinstance(parent, str)) or not all(
            isinstance(c, str) and _VERSION_ID.fullmatch(c) for c in chain
        ):
            raise FormatError(f"{self.storage.url}/{path} has an invalid parent or chain")
        created = self._field(data, "created", (float, int), path)
        return VersionRecord(version, parent, tuple(chain), float(created))

    async def _require_version(self, version: str) -> VersionRecord:
        record = await self.read_version(version)
        if record is None:
            raise FormatError(
                f"{self.name} refers to version {version}, whose record is missing; the "
                "repository is damaged"
            )
        return record

    async def _read_seal(self, version: str) -> dict[str, Any] | None:
        return await self._read_json(self._path("seals", f"{version}.json"))

    async def _is_sealed(self, version: str) -> bool:
        if await self.storage.exists(self._path("manifests", f"{version}.json")):
            return True
        seal = await self._read_seal(version)
        if seal is None:
            return False
        await self._finish_seal(version, seal)
        return True

    async def list_written(self, version: str) -> tuple[dict[str, int], dict[str, int]]:
        """List what an open version wrote: its newest generation of each key, as
        ``({written key: generation}, {deleted key: generation})``."""
        newest: dict[str, tuple[int, int]] = {}
        for name, size in (await self.storage.list(self._path("data", version))).items():
            key, generation = split_generation(name)
            if generation >= newest.get(key, (-1, 0))[0]:
                newest[key] = (generation, size)
        written = {k: g for k, (g, size) in newest.items() if size != len(TOMBSTONE)}
        deleted = {k: g for k, (g, size) in newest.items() if size == len(TOMBSTONE)}
        return written, deleted

    @staticmethod
    def location(version: str, generation: int) -> str:
        """The index location of generation ``generation`` of a key written in ``version``."""
        return f"{version}~{generation}" if generation else version

    async def manifest(self, version: str) -> dict[str, Any]:
        """Return a sealed version's manifest (finishing its seal first if needed)."""
        return await self._manifest(version)

    async def _manifest(self, version: str) -> dict[str, Any]:
        path = self._path("manifests", f"{version}.json")
        data = await self._read_json(path)
        if data is None:
            seal = await self._read_seal(version)
            if seal is None:
                raise FormatError(
                    f"{self.name}: sealed version {version} has no manifest; the repository is "
                    "damaged"
                )
            await self._finish_seal(version, seal)
            data = await self._read_json(path)
            assert data is not None
        if not _valid_manifest(data):
            raise FormatError(
                f"{self.storage.url}/{path} is not a valid manifest (keys written, generations, "
                f"deleted, or a checkpoint index); the repository {self.name} is damaged: "
                "restore that file from a copy"
            )
        return data

    @staticmethod
    def _apply(index: dict[str, str], version: str, manifest: dict[str, Any]) -> None:
        if manifest.get("checkpoint"):
            index.clear()
            index.update((key, owner) for owner, keys in manifest["index"].items() for key in keys)
            return
        index.update(dict.fromkeys(manifest["written"], version))
        index.update(
            (key, Repository.location(version, int(generation)))
            for key, generation in manifest.get("generations", {}).items()
        )
        for key in manifest["deleted"]:
            index.pop(key, None)

    async def load_index(self, chain: Iterable[str]) -> dict[str, str]:
        """Merge the manifests of ``chain`` (newest first) into ``{key: owning version}``."""
        ids = list(chain)
        manifests = await asyncio.gather(*(self._manifest(v) for v in ids))
        index: dict[str, str] = {}
        for version, manifest in zip(reversed(ids), reversed(manifests), strict=True):
            self._apply(index, version, manifest)
        return index

    async def extend_index(self, index: dict[str, str], sealed: Iterable[str]) -> None:
        """Apply the manifests of ``sealed`` versions (oldest first) to ``index`` in place.

        Turns the starting index of an open head into that of the head that took over after it
        was sealed, without reloading the whole chain.
        """
        for version in sealed:
            self._apply(index, version, await self._manifest(version))

    async def version_index(self, version: str, *, sealed: bool) -> dict[str, str]:
        """Return the index a reader of ``version`` resolves keys with.

        For a sealed version, the whole state; for an open head, its starting state (the head's
        own objects are looked up under its prefix first).
        """
        record = await self._require_version(version)
        if not sealed:
            return await self.load_index(record.chain)
        return await self.load_index(
            (version,) if record.is_checkpoint else (version, *record.chain)
        )

    # -- the seal protocol ---------------------------------------------------------------

    async def _finish_seal(self, version: str, seal: dict[str, Any]) -> None:
        manifest_path = self._path("manifests", f"{version}.json")
        if not self.storage.read_only and not await self.storage.exists(manifest_path):
            record = await self._require_version(version)
            # The listing names the newest generation of each key at this moment. Objects are
            # written once, so a writer that lands later creates a newer generation, which no
            # manifest names: the sealed version cannot change under its readers.
            written, deleted = await self.list_written(version)
            manifest: dict[str, Any]
            if record.is_checkpoint:
                index = await self.load_index(record.chain)
                for key in deleted:
                    index.pop(key, None)
                index.update((k, self.location(version, g)) for k, g in written.items())
                grouped: dict[str, list[str]] = {}
                for key, owner in sorted(index.items()):
                    grouped.setdefault(owner, []).append(key)
                manifest = {"version": version, "checkpoint": True, "index": grouped}
            else:
                manifest = {
                    "version": version,
                    "checkpoint": False,
                    "written": sorted(k for k, g in written.items() if g == 0),
                    "generations": {k: g for k, g in sorted(written.items()) if g},
                    "deleted": sorted(deleted),
                }
            # Another finisher may have published it first; manifests are write-once.
            with contextlib.suppress(AlreadyExistsError):
                await self.storage.create(manifest_path, _dump(manifest))
        branch, successor = seal.get("branch"), seal.get("successor")
        if isinstance(branch, str) and successor is not None:
            await self._move_branch(branch, version, str(successor))

    async def _move_branch(self, branch: str, old: str, new: str) -> None:
        path = self._ref_path("branch", branch)
        data = await self._read_json(path)
        if (
            data is not None
            and data.get("head") == old
            and data.get("deleted") is not True
            and not self.storage.read_only
        ):
            # Only the seal of `old` moves the branch off `old`, and its successor is fixed by
            # the seal record, so every finisher writes the same content.
            await self.storage.write(path, _dump({"head": new}), durable=True)

    async def seal(self, branch: str, message: str | None = None) -> str:
        """Seal the head of ``branch`` and give the branch a new empty head.

        Returns
        -------
        str
            The id of the sealed version.
        """
        head = await self.branch_head(branch)
        record = await self._require_version(head)
        successor = record.child()
        await self.storage.create(
            self._path("versions", f"{successor.id}.json"), successor.to_json()
        )
        seal = {
            "version": head,
            "successor": successor.id,
            "branch": branch,
            "time": time.time(),
            "message": message,
            "author": _author(),
        }
        try:
            await self.storage.create(self._path("seals", f"{head}.json"), _dump(seal))
        except AlreadyExistsError:
            # A concurrent sealer won; its seal is as good as ours (our successor record is
            # left for garbage collection).
            won = await self._read_seal(head)
            assert won is not None
            seal = won
        await self._finish_seal(head, seal)
        return head

    async def _sealed_version(
        self, ref: str | None, action: str, message: str | None = None
    ) -> str:
        resolved = await self.resolve(ref)
        if resolved.kind == "branch":
            return await self.seal(resolved.ref, message)
        if not resolved.sealed:
            raise InvalidArgumentError(
                f"version {resolved.version} of {self.name} is an open head; {action} its "
                "branch instead"
            )
        return resolved.version

    async def tag(self, ref: str | None, tag: str, message: str | None = None) -> str:
        """Create an immutable tag at ``ref`` (sealing a branch's head); return the version id.

        Raises
        ------
        AlreadyExistsError
            If a tag or branch of that name exists (exactly one concurrent creator wins).
        """
        check_ref(tag, what="tag")
        await self.open()
        await self._check_ref_free(tag, "tag")
        version = await self._sealed_version(ref, "tag", message)
        # The nonce makes the record unique to this writer, so a retried put-if-absent whose
        # first acknowledgement was lost recognises its own record.
        record = {
            "version": version,
            "time": time.time(),
            "message": message,
            "nonce": secrets.token_hex(8),
        }
        await self._publish_ref("tag", tag, record)
        return version

    async def _publish_ref(
        self, kind: Literal["branch", "tag"], ref: str, record: dict[str, Any]
    ) -> None:
        """Create a new ref: first claim its name, shared by tags and branches, then write it.

        Tags and branches live in separate folders, so put-if-absent on the ref itself cannot
        stop a tag and a branch of one name from both being created; the claim
        ``refs/names/<ref>.json`` does (exactly one creator wins), and it holds the whole ref,
        so a creator that died after claiming is finished by the next one to try the name.
        Claims are never deleted: a deleted ref's name is not reused.
        """
        content = _dump({**record, "kind": kind})
        claim = self._path("refs", "names", f"{ref}.json")
        try:
            await self.storage.create(claim, content)
        except AlreadyExistsError:
            taken = await self._finish_claim(ref)
            raise AlreadyExistsError(
                f"{self.name} already has a {taken or kind} named {ref!r}; choose another "
                f"{kind} name"
            ) from None
        await self._create_ref_from_claim(kind, ref, content)

    async def _create_ref_from_claim(
        self, kind: Literal["branch", "tag"], ref: str, content: bytes
    ) -> None:
        path = self._ref_path(kind, ref)
        try:
            await self.storage.create(path, content)
        except AlreadyExistsError:
            if await self.storage.read(path) != content:
                raise
            # A finisher wrote it from our claim: the same bytes.

    async def _finish_claim(self, ref: str) -> str | None:
        """Create the ref a claim holds if its creator died before writing it; return its kind."""
        data = await self._read_json(self._path("refs", "names", f"{ref}.json"))
        if data is None or data.get("kind") not in ("branch", "tag"):
            return None
        kind: Literal["branch", "tag"] = "branch" if data["kind"] == "branch" else "tag"
        if await self._read_json(self._ref_path(kind, ref)) is None:
            with contextlib.suppress(AlreadyExistsError):
                await self._create_ref_from_claim(kind, ref, _dump(data))
        return kind

    async def branch(self, ref: str | None, new_branch: str) -> str:
        """Create a branch starting at ``ref``; return its (empty, open) head.

        Raises
        ------
        AlreadyExistsError
            If a tag or branch of that name exists (exactly one concurrent creator wins).
        """
        check_ref(new_branch, what="branch")
        await self.open()
        await self._check_ref_free(new_branch, "branch")
        base = await self._require_version(await self._sealed_version(ref, "branch from"))
        head = base.child()
        await self.storage.create(self._path("versions", f"{head.id}.json"), head.to_json())
        await self._publish_ref(
            "branch", new_branch, {"head": head.id, "nonce": secrets.token_hex(8)}
        )
        return head.id

    async def log(self, ref: str | None) -> list[LogEntry]:
        """Return the history leading to ``ref``, newest first."""
        resolved = await self.resolve(ref)
        by_version: dict[str, list[str]] = {}
        for name, (kind, version) in sorted((await self.refs()).items()):
            by_version.setdefault(version, []).append(name if kind == "branch" else f"tag: {name}")
        entries: list[LogEntry] = []
        current: str | None = resolved.version
        while current is not None:
            record, seal = await asyncio.gather(
                self._require_version(current), self._read_seal(current)
            )
            when = float(seal["time"]) if seal else record.created
            message = seal.get("message") if seal else None
            entries.append(
                LogEntry(
                    id=current,
                    parent=record.parent,
                    time=datetime.fromtimestamp(when, UTC),
                    message=message if isinstance(message, str) else None,
                    refs=tuple(by_version.get(current, ())),
                    sealed=seal is not None,
                )
            )
            current = record.parent
        return entries


async def list_repositories(storage: Storage, prefix: str = "") -> list[str]:
    """Return the names (``user/name``) of the repositories under a root, sorted.

    Parameters
    ----------
    storage : Storage
        The hub root.
    prefix : str
        Keep only names starting with this.
    """
    users = [u for u in await storage.list_dir("") if not u.startswith(".")]
    users = [u for u in users if u.startswith(prefix.split("/", 1)[0])]
    names_per_user = await asyncio.gather(*(storage.list_dir(u) for u in users))
    candidates = [f"{u}/{n}" for u, names in zip(users, names_per_user, strict=True) for n in names]
    candidates = [c for c in candidates if c.startswith(prefix)]
    found = await asyncio.gather(*(storage.exists(f"{c}/repo.json") for c in candidates))
    return sorted(c for c, present in zip(candidates, found, strict=True) if present)
