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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import crc32c

from hubzarr import frame
from hubzarr.errors import AlreadyExistsError, FormatError, InvalidArgumentError, NotFoundError
from hubzarr.frame import TOMBSTONE
from hubzarr.names import Name, check_ref
from hubzarr.storage import Storage

__all__ = [
    "CHECKPOINT_EVERY",
    "INCARNATION_ID",
    "LAYOUT",
    "VERSION_ID",
    "LogEntry",
    "Manifest",
    "RefRecord",
    "Repository",
    "Resolved",
    "SealRecord",
    "VersionRecord",
    "check_message",
    "list_repositories",
    "split_generation",
    "split_location",
]

#: The repository layout this code writes (and the newest it reads). Layout 2 binds every data
#: object to its key, version and generation (:mod:`hubzarr.frame`); layout 1 objects are
#: unbound, and are accepted only in repositories written with layout 1.
LAYOUT = 2
#: A sealed version whose chain is this long gets a checkpoint manifest.
CHECKPOINT_EVERY = 50

#: A version id: 12 hex digits of milliseconds, then 8 random hex digits.
VERSION_ID = re.compile(r"[0-9a-f]{20}", re.ASCII)
#: An incarnation folder's name.
INCARNATION_ID = re.compile(r"[0-9a-f]{16}", re.ASCII)


_GENERATION = re.compile(r"(.+)~([1-9][0-9]*)", re.ASCII)


def split_generation(name: str) -> tuple[str, int]:
    """Split a stored object's name under ``data/<version>/`` into (zarr key, generation)."""
    match = _GENERATION.fullmatch(name)
    if match is None:
        return name, 0
    return match[1], int(match[2])


def split_location(location: str) -> tuple[str, int]:
    """Split an index location (``<version>`` or ``<version>~<generation>``) into its parts."""
    version, _, generation = location.partition("~")
    return version, int(generation or 0)


#: The latest time a record may hold, in seconds since the epoch: the end of the year 9999, the
#: last instant :class:`datetime.datetime` can show (a version id's milliseconds go further).
_MAX_TIME = 253402300799.0
#: An index location: the version that wrote a key, and the generation if not the first.
_LOCATION = re.compile(r"[0-9a-f]{20}(?:~[1-9][0-9]*)?", re.ASCII)
#: The bytes a key may hold: all but control characters and the backslash (newlines, which
#: separate keys in :func:`_keys_are_keys`, are counted apart).
_KEY_BYTES = bytes(b for b in range(256) if b == 10 or not (b < 32 or b in (92, 127)))
#: A generation suffix at the end of a key: such a key would alias another key's object.
_GENERATION_END = re.compile(rb"~[1-9][0-9]*\n")
_ADVICE = "the repository is damaged: restore that file from a copy"


def _damaged(where: str, problem: str) -> FormatError:
    return FormatError(f"{where} {problem}; {_ADVICE}")


def _member(data: dict[str, Any], key: str, where: str) -> Any:
    if key not in data:
        raise _damaged(where, f"lacks its {key!r} field")
    return data[key]


def _version_id(value: Any, what: str, where: str) -> str:
    if not isinstance(value, str) or not VERSION_ID.fullmatch(value):
        raise _damaged(where, f"has {what} {_short(value)}, not a version id (20 hex digits)")
    return value


def _optional_version_id(value: Any, what: str, where: str) -> str | None:
    return None if value is None else _version_id(value, what, where)


def _text(value: Any, what: str, where: str) -> str:
    if not isinstance(value, str):
        raise _damaged(where, f"has {what} {_short(value)}, not a string")
    return value


def _optional_text(value: Any, what: str, where: str) -> str | None:
    return None if value is None else _text(value, what, where)


def _time(value: Any, what: str, where: str) -> float:
    """A stored time: a finite number of seconds from the epoch to the end of the year 9999."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= _MAX_TIME:
        raise _damaged(
            where, f"has {what} {_short(value)}, not a time (seconds since 1970, before 10000)"
        )
    return float(value)


def _ref_name(value: Any, what: str, where: str) -> str:
    try:
        check_ref(value, what=what)
    except InvalidArgumentError as exc:
        raise _damaged(where, f"has an invalid {what} name ({exc})") from None
    return str(value)


def _short(value: Any) -> str:
    text = (
        repr(value) if isinstance(value, str | int | float | bool | None) else type(value).__name__
    )
    return text if len(text) <= 60 else text[:57] + "..."


def _keys_are_keys(joined: str, count: int) -> bool:
    """Whether ``joined``, ``count`` keys separated by newlines, holds only keys a store could
    have written: no empty, ``.`` or ``..`` segment, control character, backslash or generation
    suffix. A few scans of one string at C speed: a checkpoint may name millions of keys."""
    raw = ("\n" + joined + "\n").encode("utf-8", "surrogatepass")
    if raw.count(b"\n") != count + 1 or raw.translate(None, _KEY_BYTES):
        return False
    # With newlines as separators too, every key lies between two: "//" is an empty segment
    # (or an empty key), "/./" and "/../" are dot segments.
    flat = raw.replace(b"\n", b"/")
    if b"//" in flat or b"/./" in flat or b"/../" in flat:
        return False
    return b"~" not in raw or _GENERATION_END.search(raw) is None


def _keys(value: Any, what: str, where: str) -> tuple[str, ...]:
    """A manifest's list of zarr keys, each one a key the store could have written."""
    if not isinstance(value, list):
        raise _damaged(where, f"has {what} that are not a list of keys")
    try:
        joined = "\n".join(value)
    except TypeError:
        raise _damaged(where, f"has {what} that are not all strings") from None
    if value and not _keys_are_keys(joined, len(value)):
        key = next(k for k in value if not _keys_are_keys(k, 1))
        raise _damaged(where, f"names the key {_short(key)} among its {what}, which is not a key")
    return tuple(value)


def check_message(message: Any) -> str | None:
    """Return ``message`` if it is a valid message for a tag or snapshot: a string, or ``None``.

    Raises
    ------
    InvalidArgumentError
        For anything else (checked before anything is written, so nothing is left half done).
    """
    if message is not None and not isinstance(message, str):
        raise InvalidArgumentError(
            f"message must be a string or None, not {type(message).__name__} ({_short(message)})"
        )
    return message


def new_version_id() -> str:
    """Return a new version id: 12 hex digits of milliseconds, then 8 random hex digits."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(4)}"


#: The field holding a record's checksum (:meth:`Repository._checksum`).
_CHECKSUM = "crc32c"


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

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str, version: str) -> VersionRecord:
        """Parse and check the record of ``version`` (``versions/<version>.json``).

        Raises
        ------
        FormatError
            If a field is missing or malformed, the record names another version, its parent
            is itself, or its chain is longer than :data:`CHECKPOINT_EVERY`, repeats a version
            or does not start at the parent; the message names ``where``.
        """
        if data.get("id", version) != version:
            raise _damaged(where, f"is the record of version {_short(data['id'])}, not {version}")
        parent = _optional_version_id(data.get("parent"), "parent", where)
        chain = _member(data, "chain", where)
        if not isinstance(chain, list) or len(chain) > CHECKPOINT_EVERY:
            raise _damaged(
                where, f"has a chain that is not a list of at most {CHECKPOINT_EVERY} version ids"
            )
        ids = tuple(_version_id(c, "a chain entry", where) for c in chain)
        # The chain is the parent and its own chain (cut at a checkpoint): so it starts at the
        # parent, and, as history has no cycles, holds neither a version twice nor this one.
        if parent == version or version in ids or len(set(ids)) != len(ids):
            raise _damaged(where, "has a parent or chain that leads back to itself (a cycle)")
        if (ids[0] if ids else None) != parent:
            raise _damaged(where, "has a chain that does not start at its parent")
        return cls(version, parent, ids, _time(_member(data, "created", where), "created", where))


@dataclass(frozen=True, slots=True)
class SealRecord:
    """A seal, ``seals/<version>.json``: the fence after which ``version`` takes no writes.

    Attributes
    ----------
    version : str
        The sealed version.
    successor : str or None
        The open head that took over its branch; ``None`` when the branch was deleted.
    branch : str
        The branch whose head it was.
    time : float
        When it was sealed, in seconds since the epoch.
    message : str or None
        The message given to the tag or snapshot.
    author : str
        Who sealed it.
    """

    version: str
    successor: str | None
    branch: str
    time: float
    message: str | None
    author: str

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str, version: str) -> SealRecord:
        """Parse and check the seal of ``version``.

        Raises
        ------
        FormatError
            If a field is missing or malformed, or the seal names another version or itself
            as successor; the message names ``where``.
        """
        if _member(data, "version", where) != version:
            raise _damaged(where, f"is the seal of {_short(data['version'])}, not of {version}")
        successor = _optional_version_id(_member(data, "successor", where), "successor", where)
        if successor == version:
            raise _damaged(where, "names its own version as its successor (a cycle)")
        return cls(
            version=version,
            successor=successor,
            branch=_ref_name(_member(data, "branch", where), "branch", where),
            time=_time(_member(data, "time", where), "time", where),
            message=_optional_text(data.get("message"), "message", where),
            author=_text(data.get("author", "unknown"), "author", where),
        )

    def to_json(self) -> bytes:
        """Serialise the record."""
        return _dump(
            {
                "version": self.version,
                "successor": self.successor,
                "branch": self.branch,
                "time": self.time,
                "message": self.message,
                "author": self.author,
            }
        )


@dataclass(frozen=True, slots=True)
class RefRecord:
    """A branch or tag (``refs/branches/<b>.json``, ``refs/tags/<t>.json``), or the claim of its
    name (``refs/names/<ref>.json``, which holds the whole ref and its kind).

    Attributes
    ----------
    kind : {"branch", "tag"}
        What the ref is.
    version : str
        A branch's head, a tag's version; for a deleted ref, the version it pointed at.
    deleted : bool
        Whether the ref was deleted (its file is then a marker that keeps the name taken).
    time : float or None
        When a tag was created, or a ref deleted.
    message : str or None
        A tag's message.
    """

    kind: Literal["branch", "tag"]
    version: str
    deleted: bool = False
    time: float | None = None
    message: str | None = None

    @classmethod
    def from_json(
        cls, data: dict[str, Any], where: str, kind: Literal["branch", "tag"] | None
    ) -> RefRecord:
        """Parse and check a ref of ``kind``, or (``kind=None``) a claim, which names its kind.

        Raises
        ------
        FormatError
            If a field is missing or malformed, the record is of another kind, or a claim is
            marked deleted; the message names ``where``.
        """
        stated = data.get("kind", kind)
        if stated not in ("branch", "tag") or (kind is not None and stated != kind):
            raise _damaged(where, f"has kind {_short(stated)}, not {kind or 'branch or tag'!r}")
        resolved: Literal["branch", "tag"] = "branch" if stated == "branch" else "tag"
        nonce = data.get("nonce")
        if nonce is not None:
            _text(nonce, "nonce", where)
        deleted = data.get("deleted", False)
        if deleted is not False and (deleted is not True or kind is None):
            raise _damaged(where, f"has deleted {_short(deleted)}, which a {stated} cannot have")
        if deleted:
            return cls(
                resolved,
                _version_id(_member(data, "was", where), "was", where),
                deleted=True,
                time=_time(_member(data, "time", where), "time", where),
            )
        if resolved == "branch":
            return cls(resolved, _version_id(_member(data, "head", where), "head", where))
        return cls(
            resolved,
            _version_id(_member(data, "version", where), "version", where),
            time=_time(_member(data, "time", where), "time", where),
            message=_optional_text(data.get("message"), "message", where),
        )


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a sealed version holds, ``manifests/<version>.json``.

    A plain manifest lists what the version itself wrote; a checkpoint holds the whole merged
    index of the version's state.

    Attributes
    ----------
    version : str
        The sealed version.
    checkpoint : bool
        Whether this is a checkpoint (only :attr:`index` is set) or a plain manifest.
    written : tuple of str
        Keys whose generation 0 the version wrote.
    generations : dict
        ``{key: generation}`` for keys whose newest object in the version is a later generation.
    deleted : tuple of str
        Keys the version deleted (tombstones).
    index : dict
        For a checkpoint: ``{location: keys}``, each key's owning location (``version[~gen]``).
    """

    version: str
    checkpoint: bool
    written: tuple[str, ...] = ()
    generations: dict[str, int] = field(default_factory=dict)
    deleted: tuple[str, ...] = ()
    index: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str, version: str) -> Manifest:
        """Parse and check the manifest of ``version``.

        Raises
        ------
        FormatError
            If a field is missing or malformed (a key that could not have been written, a
            generation that is not a positive integer, a location that is not
            ``<version id>[~<generation>]``), or the manifest names another version; the message
            names ``where``.
        """
        if data.get("version", version) != version:
            raise _damaged(where, f"is the manifest of {_short(data['version'])}, not {version}")
        checkpoint = data.get("checkpoint", False)
        if not isinstance(checkpoint, bool):
            raise _damaged(where, f"has checkpoint {_short(checkpoint)}, not true or false")
        if checkpoint:
            index = _member(data, "index", where)
            if not isinstance(index, dict):
                raise _damaged(where, "has an index that is not an object")
            for location in index:
                if not _LOCATION.fullmatch(location):
                    raise _damaged(
                        where,
                        f"names the location {_short(location)} in its index, not a version id "
                        "with an optional ~generation",
                    )
            return cls(
                version,
                True,
                index={loc: _keys(keys, "index keys", where) for loc, keys in index.items()},
            )
        generations = data.get("generations", {})
        if not isinstance(generations, dict) or not all(
            isinstance(g, int) and not isinstance(g, bool) and g > 0 for g in generations.values()
        ):
            raise _damaged(where, "has generations that are not positive integers by key")
        _keys(list(generations), "rewritten keys", where)
        return cls(
            version,
            False,
            written=_keys(_member(data, "written", where), "written keys", where),
            generations=dict(generations),
            deleted=_keys(_member(data, "deleted", where), "deleted keys", where),
        )

    def to_dict(self) -> dict[str, Any]:
        """The manifest as it is stored."""
        if self.checkpoint:
            index = {loc: list(keys) for loc, keys in self.index.items()}
            return {"version": self.version, "checkpoint": True, "index": index}
        return {
            "version": self.version,
            "checkpoint": False,
            "written": list(self.written),
            "generations": dict(self.generations),
            "deleted": list(self.deleted),
        }


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
        """Read a record: a JSON object whose checksum (layout 2) matches its content and the
        place it lies; return it without the checksum, or ``None`` if there is none."""
        raw = await self.storage.read(path)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            # RecursionError: arrays or objects nested too deep for the decoder.
            raise FormatError(
                f"{self._where(path)} is not valid JSON; the repository {self.name} is "
                "damaged: restore that file from a copy"
            ) from exc
        if not isinstance(data, dict):
            raise _damaged(self._where(path), "is not a JSON object")
        stored = data.pop(_CHECKSUM, None)
        layout = (self._info or data).get("layout")
        if isinstance(layout, int) and layout > LAYOUT:
            return data  # a newer layout may check records otherwise: open() says to upgrade
        if stored is None:
            if isinstance(layout, int) and layout >= 2:
                raise _damaged(
                    self._where(path),
                    f"has no {_CHECKSUM!r}, which every record of layout {layout} carries "
                    "(edited outside hubzarr?)",
                )
        elif isinstance(stored, bool) or stored != self._checksum(path, _dump(data)):
            raise _damaged(
                self._where(path),
                "does not match its checksum: it was edited, damaged, or copied from another "
                "record's place",
            )
        return data

    def _checksum(self, path: str, body: bytes) -> int:
        """The CRC-32C of a record's canonical JSON ``body``, bound to its place in the
        repository (the path below ``<user>/<name>/``, so a copy to another name or root
        stays valid)."""
        assert path.startswith(self._base + "/"), path
        crc: int = crc32c.crc32c(body + b"\n" + path[len(self._base) + 1 :].encode())
        return crc

    def _bound(self, path: str, content: bytes) -> bytes:
        """``content`` (a record's JSON, from :func:`_dump`) with its checksum for ``path``."""
        data = json.loads(content)
        data.pop(_CHECKSUM, None)
        return _dump({**data, _CHECKSUM: self._checksum(path, _dump(data))})

    async def _create_record(self, path: str, content: bytes) -> None:
        """Create a record once (put-if-absent), with its checksum."""
        await self.storage.create(path, self._bound(path, content))

    async def _write_record(self, path: str, content: bytes, *, durable: bool = False) -> None:
        """Replace a record (a branch ref, a deleted ref's marker), with its checksum."""
        await self.storage.write(path, self._bound(path, content), durable=durable)

    def _where(self, path: str) -> str:
        """How an error names the file at ``path``."""
        return f"{self.storage.url}/{path}"

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
        version, generation = split_location(location)
        return self.data_path(version, key, generation)

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
        where = self._where(path)
        layout = _member(info, "layout", where)
        if isinstance(layout, bool) or not isinstance(layout, int) or layout < 1:
            raise _damaged(where, f"has layout {_short(layout)}, not a positive integer")
        if layout > LAYOUT:
            raise FormatError(
                f"{self.name} was written with repository layout {layout}, newer than this "
                f"hubzarr understands ({LAYOUT}); upgrade hubzarr"
            )
        if not INCARNATION_ID.fullmatch(_text(_member(info, "id", where), "id", where)):
            raise _damaged(where, f"has an invalid 'id' {_short(info['id'])}")
        _ref_name(_member(info, "default_branch", where), "default branch", where)
        _version_id(_member(info, "root_version", where), "root_version", where)
        _time(_member(info, "created", where), "created", where)
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
        if await self.exists():
            raise self._exists_error()
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
                bound = frame.binding(record.id, key, 0)
                await self.storage.create(
                    self.data_path(record.id, key), (frame.encode_header(payload, bound), payload)
                )
            await self._recover_default_branch()
        finally:
            self._info = None
        try:
            await self._create_record(f"{self._base}/repo.json", _dump(info))
        except AlreadyExistsError:
            # Another creator won: our folder was never published, and nobody else knows it.
            await self.storage.delete_prefix(f"{self._base}/{info['id']}")
            raise self._exists_error() from None
        self._info = info
        await self._recover_default_branch()
        return record.id

    def _exists_error(self) -> AlreadyExistsError:
        return AlreadyExistsError(
            f"repository {self.name} already exists under {self.storage.url}; open it "
            "with hubzarr.load(...), or pass overwrite=True to replace its head's contents"
        )

    @property
    def layout(self) -> int:
        """The layout the repository was written with (see :data:`LAYOUT`)."""
        assert self._info is not None, "call open() or create() first"
        return int(self._info["layout"])

    async def check_live(self) -> None:
        """Check that the repository still exists as the incarnation this object opened.

        Raises
        ------
        NotFoundError
            If it was deleted (or deleted and created again) since it was opened: a handle
            opened before a deletion must neither read nor write.
        """
        info = await self._read_json(f"{self._base}/repo.json")
        if info is None or info.get("id") != self.incarnation:
            raise NotFoundError(
                f"the repository {self.name} under {self.storage.url} was deleted after this "
                "handle opened it; open it again (hubzarr.load) if it was created anew"
            )

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

    async def _ref_record(self, kind: Literal["branch", "tag"], ref: str) -> RefRecord | None:
        path = self._ref_path(kind, ref)
        data = await self._read_json(path)
        return None if data is None else RefRecord.from_json(data, self._where(path), kind)

    async def _read_ref(self, kind: Literal["branch", "tag"], ref: str) -> str | None:
        record = await self._ref_record(kind, ref)
        if record is None:
            if kind == "branch" and ref == self.default_branch:
                return await self._recover_default_branch()
            return None
        return None if record.deleted else record.version

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
                await self._create_record(path, content)
        # Read directly, not through _read_ref: a ref that cannot be created or read back must
        # not send it here again, and again.
        record = await self._ref_record("branch", self.default_branch)
        return None if record is None or record.deleted else record.version

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
        record = await self._ref_record(kind, ref)
        return record is not None and record.deleted

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
        current = await self._ref_record(kind, ref)
        if current is None or current.deleted:
            gone = " (it was deleted)" if current is not None else ""
            raise NotFoundError(f"{self.name} has no {kind} named {ref!r}{gone}")
        version = current.version
        record = {"deleted": True, "was": version, "time": time.time()}
        await self._write_record(self._ref_path(kind, ref), _dump(record), durable=True)
        if kind == "branch":
            await self._seal_deleted(ref, version)
        return version

    async def _seal_deleted(self, branch: str, head: str) -> None:
        """Seal a deleted branch's head with no successor, so a store still writing there
        gets NotFoundError at its next seal check instead of writing what gc will free."""
        tried: set[str] = set()
        while True:
            try:
                head = (await self.successors(head))[-1]
            except NotFoundError:
                return  # sealed as deleted already
            if head in tried:
                # Its seal exists (creating it failed) yet successors() ends there: storage that
                # contradicts itself, which retrying would never resolve.
                raise _damaged(
                    self._where(self._path("seals", f"{head}.json")),
                    "exists but cannot be read back as the seal of that version",
                )
            tried.add(head)
            seal = SealRecord(
                version=head,
                successor=None,
                branch=branch,
                time=time.time(),
                message=f"branch {branch} deleted",
                author=_author(),
            )
            try:
                await self._create_record(self._path("seals", f"{head}.json"), seal.to_json())
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
        if VERSION_ID.fullmatch(ref) and await self.read_version(ref) is not None:
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
            if seal is None:
                raise _damaged(
                    self._where(self._path("seals", f"{path[-1]}.json")),
                    "vanished while it was read (seal records are never deleted)",
                )
            await self._finish_seal(path[-1], seal)
            if seal.successor is None:
                # Sealed by the deletion of its branch: nothing takes over its writes.
                raise NotFoundError(
                    f"the branch {seal.branch!r} of {self.name} was deleted (its last "
                    f"version, {path[-1]}, can still be read by id until garbage collection)"
                )
            if seal.successor in path:
                # Each seal names a new version, so a successor met before is damage; without
                # this check every operation on the branch would loop forever.
                cycle = path[path.index(seal.successor) :]
                files = ", ".join(self._where(self._path("seals", f"{v}.json")) for v in cycle)
                raise FormatError(
                    f"the seals of {self.name} form a cycle: {files} lead back to "
                    f"{seal.successor}; the repository is damaged: restore those files from a "
                    "copy"
                )
            path.append(seal.successor)
        return path

    # -- versions ------------------------------------------------------------------------

    async def read_version(self, version: str) -> VersionRecord | None:
        """Return a version's record, or ``None`` if there is none."""
        path = self._path("versions", f"{version}.json")
        data = await self._read_json(path)
        if data is None:
            return None
        return VersionRecord.from_json(data, self._where(path), version)

    async def _require_version(self, version: str) -> VersionRecord:
        record = await self.read_version(version)
        if record is None:
            raise FormatError(
                f"{self.name} refers to version {version}, whose record is missing; the "
                "repository is damaged"
            )
        return record

    async def _read_seal(self, version: str) -> SealRecord | None:
        path = self._path("seals", f"{version}.json")
        data = await self._read_json(path)
        return None if data is None else SealRecord.from_json(data, self._where(path), version)

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
        """Return a sealed version's manifest as stored, checked (finishing its seal first if
        needed); :meth:`read_manifest` returns it parsed.

        Raises
        ------
        FormatError
            If the manifest is malformed, or the version was never sealed.
        """
        return (await self._manifest(version)).to_dict()

    async def read_manifest(self, version: str) -> Manifest:
        """Return a sealed version's manifest, parsed and checked (finishing its seal first if
        needed).

        Raises
        ------
        FormatError
            If the manifest is malformed, or the version was never sealed.
        """
        return await self._manifest(version)

    async def _manifest(self, version: str) -> Manifest:
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
            if data is None:  # a read-only root: the finisher could not write it
                raise FormatError(
                    f"{self.name}: version {version} was sealed by a sealer that stopped before "
                    f"writing {self._where(path)}; open the repository once on a writable root "
                    "to finish the seal"
                )
        return Manifest.from_json(data, self._where(path), version)

    @staticmethod
    def _apply(index: dict[str, str], version: str, manifest: Manifest) -> None:
        if manifest.checkpoint:
            index.clear()
            index.update((key, owner) for owner, keys in manifest.index.items() for key in keys)
            return
        index.update(dict.fromkeys(manifest.written, version))
        index.update(
            (key, Repository.location(version, generation))
            for key, generation in manifest.generations.items()
        )
        for key in manifest.deleted:
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

    async def _finish_seal(self, version: str, seal: SealRecord) -> None:
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
                await self._create_record(manifest_path, _dump(manifest))
        if seal.successor is not None:
            await self._move_branch(seal.branch, version, seal.successor)

    async def _move_branch(self, branch: str, old: str, new: str) -> None:
        current = await self._ref_record("branch", branch)
        if (
            current is not None
            and current.version == old
            and not current.deleted
            and not self.storage.read_only
        ):
            # Only the seal of `old` moves the branch off `old`, and its successor is fixed by
            # the seal record, so every finisher writes the same content.
            await self._write_record(
                self._ref_path("branch", branch), _dump({"head": new}), durable=True
            )

    async def seal(self, branch: str, message: str | None = None) -> str:
        """Seal the head of ``branch`` and give the branch a new empty head.

        Returns
        -------
        str
            The id of the sealed version.

        Raises
        ------
        InvalidArgumentError
            If ``message`` is neither a string nor ``None`` (nothing is written).
        """
        check_message(message)
        head = await self.branch_head(branch)
        record = await self._require_version(head)
        successor = record.child()
        await self._create_record(
            self._path("versions", f"{successor.id}.json"), successor.to_json()
        )
        seal = SealRecord(
            version=head,
            successor=successor.id,
            branch=branch,
            time=time.time(),
            message=message,
            author=_author(),
        )
        try:
            await self._create_record(self._path("seals", f"{head}.json"), seal.to_json())
        except AlreadyExistsError:
            # A concurrent sealer won; its seal is as good as ours (our successor record is
            # left for garbage collection).
            won = await self._read_seal(head)
            if won is None:
                raise _damaged(
                    self._where(self._path("seals", f"{head}.json")),
                    "exists but cannot be read back",
                ) from None
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
        InvalidNameError
            If ``tag`` breaks the name grammar (nothing is read or written).
        InvalidArgumentError
            If ``message`` is neither a string nor ``None`` (nothing is read or written).
        """
        check_ref(tag, what="tag")
        check_message(message)
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
            await self._create_record(claim, content)
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
            await self._create_record(path, content)
        except AlreadyExistsError:
            if await self.storage.read(path) != self._bound(path, content):
                raise
            # A finisher wrote it from our claim: the same bytes.

    async def _finish_claim(self, ref: str) -> str | None:
        """Create the ref a claim holds if its creator died before writing it; return its kind."""
        path = self._path("refs", "names", f"{ref}.json")
        data = await self._read_json(path)
        if data is None:
            return None
        kind = RefRecord.from_json(data, self._where(path), None).kind
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
        await self._create_record(self._path("versions", f"{head.id}.json"), head.to_json())
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
        seen: set[str] = set()
        current: str | None = resolved.version
        while current is not None:
            if current in seen:
                # Each version's record is created before its children's, so a parent met
                # before is damage; without this check the walk would never end.
                cycle = [e.id for e in entries[[e.id for e in entries].index(current) :]]
                files = ", ".join(self._where(self._path("versions", f"{v}.json")) for v in cycle)
                raise FormatError(
                    f"the version records of {self.name} form a cycle: {files} lead back to "
                    f"{current}; the repository is damaged: restore those files from a copy"
                )
            seen.add(current)
            record, seal = await asyncio.gather(
                self._require_version(current), self._read_seal(current)
            )
            entries.append(
                LogEntry(
                    id=current,
                    parent=record.parent,
                    time=datetime.fromtimestamp(seal.time if seal else record.created, UTC),
                    message=seal.message if seal else None,
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
