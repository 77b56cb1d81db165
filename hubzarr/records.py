"""The records a repository stores, typed: one frozen class and one parse function each.

Every JSON file in a repository is one of these records (``docs/format.md`` gives each file's
path and fields):

===============================  ===========================================================
``repo.json``                    :class:`RepositoryRecord`: identity, layout, default branch
``refs/branches/<b>.json``       :class:`BranchRef`, or a :class:`DeletedRef` marker
``refs/tags/<t>.json``           :class:`TagRef`, or a :class:`DeletedRef` marker
``refs/names/<ref>.json``        :class:`NameClaim`: the claim of a ref name, the whole ref
``versions/<id>.json``           :class:`VersionRecord`: parent, manifest chain, time
``seals/<id>.json``              :class:`SealRecord`: the fence, successor, branch, message
``manifests/<id>.json``          :class:`Manifest` (what the version wrote) or
                                 :class:`Checkpoint` (the whole merged index)
===============================  ===========================================================

Each is stored as canonical JSON (sorted keys, no spaces) with a ``crc32c`` member: the
CRC-32C of the canonical JSON without that member, a newline, and the record's path below
``<user>/<name>/`` (:func:`encode_record`, :func:`decode_record`), so an edited record, or a
record copied to another's place, is a :class:`~hubzarr.errors.FormatError` naming the file.
Parsing (each class's ``parse``) checks every field's type and range, and nothing read from
storage is trusted before it: a malformed record is a ``FormatError`` naming the file and
saying what is wrong. Pure: no I/O.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, NamedTuple

import crc32c

from hubzarr.errors import FormatError, InvalidArgumentError
from hubzarr.names import check_ref

__all__ = [
    "CHECKPOINT_EVERY",
    "INCARNATION_ID",
    "LAYOUT",
    "VERSION_ID",
    "BranchRef",
    "Checkpoint",
    "DeletedRef",
    "ExpiryRecord",
    "Location",
    "Manifest",
    "NameClaim",
    "RefKind",
    "RepositoryRecord",
    "SealRecord",
    "TagRef",
    "VersionRecord",
    "check_message",
    "decode_record",
    "encode_record",
    "keys_are_keys",
    "new_version_id",
    "parse_ref",
    "split_generation",
]

#: The repository layout this code writes (and the newest it reads): the storage format's
#: version (``docs/format.md``). Layout 4 names index shards by the version that wrote them and
#: a number, so that a root lists them as runs; layout 3 gives every sealed version an index
#: root and shards (:mod:`hubzarr.index`) instead of checkpoints, each shard named by the hash
#: of its content; layout 2 binds every data object to its key, version and generation
#: (:mod:`hubzarr.frame`) and every record to its path; layout 1 did neither. Older layouts are
#: still read (and written to, in repositories created with them).
LAYOUT = 4
#: A sealed version whose chain is this long gets a checkpoint instead of a manifest.
CHECKPOINT_EVERY = 50

#: A version id: 12 hex digits of milliseconds since the epoch, then 8 random hex digits.
VERSION_ID = re.compile(r"[0-9a-f]{20}", re.ASCII)
#: An incarnation folder's name: 16 random hex digits.
INCARNATION_ID = re.compile(r"[0-9a-f]{16}", re.ASCII)

RefKind = Literal["branch", "tag"]

_GENERATION = re.compile(r"(.+)~([1-9][0-9]*)", re.ASCII)
#: An index location as stored in a checkpoint: a version id and an optional ``~generation``.
_LOCATION = re.compile(r"([0-9a-f]{20})(?:~([1-9][0-9]*))?", re.ASCII)
#: The latest time a record may hold, in seconds since the epoch: the end of the year 9999, the
#: last instant :class:`datetime.datetime` can show (a version id's milliseconds go further).
_MAX_TIME = 253402300799.0
#: The bytes a key may hold: all but control characters and the backslash (newlines, which
#: separate keys in :func:`keys_are_keys`, are counted apart).
_KEY_BYTES = bytes(b for b in range(256) if b == 10 or not (b < 32 or b in (92, 127)))
#: A generation suffix at the end of a key: such a key would alias another key's object.
_GENERATION_END = re.compile(rb"~[1-9][0-9]*\n")
_ADVICE = "the repository is damaged: restore that file from a copy"
#: The member holding a record's checksum.
CHECKSUM = "crc32c"


def split_generation(name: str) -> tuple[str, int]:
    """Split a stored object's name under ``data/<version>/`` into (zarr key, generation)."""
    match = _GENERATION.fullmatch(name)
    if match is None:
        return name, 0
    return match[1], int(match[2])


class Location(NamedTuple):
    """Where the object a key resolves to lies: the version that wrote it, and which of its
    generations (0 for the first write of the key in that version)."""

    version: str
    generation: int = 0

    def __str__(self) -> str:
        return f"{self.version}~{self.generation}" if self.generation else self.version

    def object_name(self, key: str) -> str:
        """The object's name under ``data/<version>/``: the key, ``~<n>`` for generation n."""
        return f"{key}~{self.generation}" if self.generation else key

    @classmethod
    def parse(cls, text: Any, where: str) -> Location:
        """Parse a location as a checkpoint stores it: ``<version id>[~<generation>]``.

        Raises
        ------
        FormatError
            If ``text`` is not such a string; the message names ``where``.
        """
        match = _LOCATION.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise _damaged(
                where,
                f"names the location {_short(text)} in its index, not a version id with an "
                "optional ~generation",
            )
        return cls(match[1], int(match[2] or 0))


# -- checking fields -----------------------------------------------------------------------


def _damaged(where: str, problem: str) -> FormatError:
    return FormatError(f"{where} {problem}; {_ADVICE}")


def _short(value: Any) -> str:
    text = (
        repr(value) if isinstance(value, str | int | float | bool | None) else type(value).__name__
    )
    return text if len(text) <= 60 else text[:57] + "..."


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


def keys_are_keys(joined: str, count: int) -> bool:
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
    if value and not keys_are_keys(joined, len(value)):
        key = next(k for k in value if not keys_are_keys(k, 1))
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


# -- the envelope of a record: canonical JSON with a checksum bound to its path ---------------


def _dump(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def _checksum(body: bytes, place: str) -> int:
    crc: int = crc32c.crc32c(body + b"\n" + place.encode())
    return crc


def _stored_as_written(raw: bytes, stored: Any, place: str) -> bool:
    """Whether ``raw`` is canonical JSON whose checksum member is ``stored`` and matches: the
    bytes without that member are then exactly what the writer checksummed, which spares
    re-encoding a large record (an index root of 10^8 chunks) to check it. ``False`` says
    nothing: the caller checks the canonical form of what it decoded."""
    if not isinstance(stored, int) or isinstance(stored, bool):
        return False
    member = b'"%s":%d' % (CHECKSUM.encode(), stored)
    for cut in (b"," + member, member + b","):
        at = raw.find(cut)
        if at >= 0:
            # The checksum of the bytes around the member, continued: no copy of the record.
            view = memoryview(raw)
            crc = crc32c.crc32c(view[at + len(cut) :], crc32c.crc32c(view[:at]))
            return crc32c.crc32c(b"\n" + place.encode(), crc) == stored
    return False


def encode_record(record: dict[str, Any], place: str) -> bytes:
    """Serialise a record for the file at ``place`` (its path below ``<user>/<name>/``):
    canonical JSON with its :data:`CHECKSUM` member."""
    return _dump({**record, CHECKSUM: _checksum(_dump(record), place)})


def decode_record(raw: bytes, where: str, place: str, layout: int | None) -> dict[str, Any]:
    """Decode a stored record and check its checksum; return it without the checksum.

    Parameters
    ----------
    raw : bytes
        The file's content.
    where : str
        How to name the file in an error.
    place : str
        Its path below ``<user>/<name>/``, which the checksum binds it to.
    layout : int or None
        The repository's layout (``None`` while reading ``repo.json``, which states its own).
        A layout 2 record must carry a checksum; a record of a newer layout than this code
        knows is returned unchecked (opening its repository says to upgrade).

    Raises
    ------
    FormatError
        If the content is not a JSON object, or its checksum is missing (layout 2) or wrong.
    """
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        # RecursionError: arrays or objects nested too deep for the decoder.
        raise FormatError(f"{where} is not valid JSON; {_ADVICE}") from exc
    if not isinstance(data, dict):
        raise _damaged(where, "is not a JSON object")
    stored = data.pop(CHECKSUM, None)
    if layout is None:
        layout = data.get("layout") if isinstance(data.get("layout"), int) else None
    if layout is not None and layout > LAYOUT:
        return data  # a newer layout may check records otherwise
    if stored is None:
        if layout is not None and layout >= 2:
            raise _damaged(
                where,
                f"has no {CHECKSUM!r}, which every record of layout {layout} carries "
                "(edited outside hubzarr?)",
            )
    elif _stored_as_written(raw, stored, place):
        pass
    elif isinstance(stored, bool) or stored != _checksum(_dump(data), place):
        raise _damaged(
            where,
            "does not match its checksum: it was edited, damaged, or copied from another "
            "record's place",
        )
    return data


# -- the records ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RepositoryRecord:
    """``repo.json``: a repository's identity, created once (its creation publishes it).

    Attributes
    ----------
    id : str
        The incarnation folder holding everything else (16 hex digits). A repository deleted
        and created again under its name gets a new one.
    layout : int
        The storage format version it was written with (:data:`LAYOUT`).
    default_branch : str
        The branch a name without a ref means.
    root_version : str
        The first version's id (the default branch's first head).
    created : float
        When it was created, in seconds since the epoch.
    """

    id: str
    layout: int
    default_branch: str
    root_version: str
    created: float

    def to_dict(self) -> dict[str, Any]:
        """The record as stored."""
        return {
            "format": "hubzarr",
            "layout": self.layout,
            "id": self.id,
            "default_branch": self.default_branch,
            "root_version": self.root_version,
            "created": self.created,
        }

    @classmethod
    def parse(cls, data: dict[str, Any], where: str, name: str) -> RepositoryRecord:
        """Parse ``repo.json`` of the repository ``name``.

        Raises
        ------
        FormatError
            If a field is missing or malformed, or the layout is newer than :data:`LAYOUT`
            (the message then says to upgrade hubzarr).
        """
        layout = _member(data, "layout", where)
        if isinstance(layout, bool) or not isinstance(layout, int) or layout < 1:
            raise _damaged(where, f"has layout {_short(layout)}, not a positive integer")
        if layout > LAYOUT:
            raise FormatError(
                f"{name} was written with repository layout {layout}, newer than this "
                f"hubzarr understands ({LAYOUT}); upgrade hubzarr"
            )
        incarnation = _text(_member(data, "id", where), "id", where)
        if not INCARNATION_ID.fullmatch(incarnation):
            raise _damaged(where, f"has an invalid 'id' {_short(incarnation)}")
        return cls(
            id=incarnation,
            layout=layout,
            default_branch=_ref_name(
                _member(data, "default_branch", where), "default branch", where
            ),
            root_version=_version_id(_member(data, "root_version", where), "root_version", where),
            created=_time(_member(data, "created", where), "created", where),
        )


@dataclass(frozen=True, slots=True)
class BranchRef:
    """A branch, ``refs/branches/<b>.json``: the branch's current open head (or a head sealed
    since, which readers follow through the seals to the open one).

    Attributes
    ----------
    head : str
        The version id.
    nonce : str or None
        A random value making a new branch's record unique to its creator (see
        :meth:`hubzarr.storage.Storage.create`); ``None`` once the branch has moved.
    base : str or None
        The version the head started from, as its writer knew it (layout 3): a hint that
        lets an opener read that version's index root while it reads the head's record,
        which says for sure. ``None`` where unknown.
    """

    kind: ClassVar[RefKind] = "branch"
    head: str
    nonce: str | None = None
    base: str | None = None

    @property
    def version(self) -> str:
        """The version the ref points at (:attr:`head`)."""
        return self.head

    def to_dict(self) -> dict[str, Any]:
        """The record as stored."""
        record: dict[str, Any] = {"head": self.head}
        if self.nonce is not None:
            record["nonce"] = self.nonce
        if self.base is not None:
            record["base"] = self.base
        return record


@dataclass(frozen=True, slots=True)
class TagRef:
    """A tag, ``refs/tags/<t>.json``: created once, never changed.

    Attributes
    ----------
    version : str
        The sealed version it names.
    time : float
        When it was created, in seconds since the epoch.
    message : str or None
        Its message.
    nonce : str or None
        A random value making the record unique to its creator.
    """

    kind: ClassVar[RefKind] = "tag"
    version: str
    time: float
    message: str | None = None
    nonce: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record as stored."""
        record = {"version": self.version, "time": self.time, "message": self.message}
        return record | ({"nonce": self.nonce} if self.nonce is not None else {})


@dataclass(frozen=True, slots=True)
class DeletedRef:
    """The marker a deleted tag or branch leaves in its file, so its name stays taken.

    Attributes
    ----------
    was : str
        The version the ref pointed at.
    time : float
        When it was deleted.
    """

    was: str
    time: float

    def to_dict(self) -> dict[str, Any]:
        """The record as stored."""
        return {"deleted": True, "was": self.was, "time": self.time}


def _parse_live_ref(data: dict[str, Any], where: str, kind: RefKind) -> BranchRef | TagRef:
    nonce = _optional_text(data.get("nonce"), "nonce", where)
    if kind == "branch":
        head = _version_id(_member(data, "head", where), "head", where)
        return BranchRef(head, nonce, _optional_version_id(data.get("base"), "base", where))
    return TagRef(
        _version_id(_member(data, "version", where), "version", where),
        time=_time(_member(data, "time", where), "time", where),
        message=_optional_text(data.get("message"), "message", where),
        nonce=nonce,
    )


def _stated_kind(data: dict[str, Any], where: str, kind: RefKind | None) -> RefKind:
    stated = data.get("kind", kind)
    if stated not in ("branch", "tag") or (kind is not None and stated != kind):
        raise _damaged(where, f"has kind {_short(stated)}, not {kind or 'branch or tag'!r}")
    return "branch" if stated == "branch" else "tag"


def parse_ref(data: dict[str, Any], where: str, kind: RefKind) -> BranchRef | TagRef | DeletedRef:
    """Parse the file of a ref of ``kind``: the ref, or the marker of its deletion.

    Raises
    ------
    FormatError
        If a field is missing or malformed, or the record is of another kind; the message
        names ``where``.
    """
    _stated_kind(data, where, kind)
    deleted = data.get("deleted", False)
    if deleted is True:
        return DeletedRef(
            _version_id(_member(data, "was", where), "was", where),
            _time(_member(data, "time", where), "time", where),
        )
    if deleted is not False:
        raise _damaged(where, f"has deleted {_short(deleted)}, not true or false")
    return _parse_live_ref(data, where, kind)


@dataclass(frozen=True, slots=True)
class NameClaim:
    """``refs/names/<ref>.json``: the claim of a ref name, shared by tags and branches.

    Exactly one creator of a name wins its claim (put-if-absent). The claim holds the whole
    ref, so a creator that died after claiming is finished by the next one to try the name,
    and it is never deleted: a deleted ref's name is not reused.

    Attributes
    ----------
    ref : BranchRef or TagRef
        The ref as created; the ref's own file holds exactly :meth:`to_dict`.
    """

    ref: BranchRef | TagRef

    @property
    def kind(self) -> RefKind:
        """What the claimed name is."""
        return self.ref.kind

    def to_dict(self) -> dict[str, Any]:
        """The record as stored (also the first content of the ref's own file)."""
        return {**self.ref.to_dict(), "kind": self.kind}

    @classmethod
    def parse(cls, data: dict[str, Any], where: str) -> NameClaim:
        """Parse a claim.

        Raises
        ------
        FormatError
            If a field is missing or malformed, or the claim is marked deleted.
        """
        kind = _stated_kind(data, where, None)
        if data.get("deleted", False) is not False:
            raise _damaged(where, f"has deleted {_short(data['deleted'])}, which a claim cannot")
        return cls(_parse_live_ref(data, where, kind))


@dataclass(frozen=True, slots=True)
class VersionRecord:
    """A version's immutable record, ``versions/<id>.json``.

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
    origin : str or None
        For a snapshot a copy made of another root's open head (:mod:`hubzarr.replicate`):
        that head's id, whose writes this version holds. ``None`` for every other version.
    merged : tuple of str
        For a merge, the version merged into the parent's state (a second parent, shown by
        the log; the state is the parent's with this version's own manifest, as for any
        version). Empty for every other version.
    """

    id: str
    parent: str | None
    chain: tuple[str, ...]
    created: float
    origin: str | None = None
    merged: tuple[str, ...] = ()

    @property
    def is_checkpoint(self) -> bool:
        """Whether this version's manifest, once sealed, is a :class:`Checkpoint`."""
        return len(self.chain) >= CHECKPOINT_EVERY

    def child(self, *, chained: bool = True) -> VersionRecord:
        """Return the record of a new open version starting from this one.

        ``chained=False`` (layout 3, where a sealed version's index root holds its whole
        state) gives a chain of the parent alone.
        """
        chained = chained and not self.is_checkpoint
        chain = (self.id, *self.chain) if chained else (self.id,)
        return VersionRecord(new_version_id(), self.id, chain, time.time())

    def to_dict(self) -> dict[str, Any]:
        """The record as stored."""
        record = {
            "id": self.id,
            "parent": self.parent,
            "chain": list(self.chain),
            "created": self.created,
        }
        if self.origin is not None:
            record["origin"] = self.origin
        if self.merged:
            record["merged"] = list(self.merged)
        return record

    @classmethod
    def parse(cls, data: dict[str, Any], where: str, version: str) -> VersionRecord:
        """Parse and check the record of ``version``.

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
        origin = _optional_version_id(data.get("origin"), "origin", where)
        created = _time(_member(data, "created", where), "created", where)
        merged = data.get("merged", [])
        if not isinstance(merged, list) or len(merged) > 1:
            raise _damaged(where, "has merged versions that are not a list of one version id")
        ids_merged = tuple(_version_id(m, "a merged version", where) for m in merged)
        if version in ids_merged:
            raise _damaged(where, "merges itself")
        return cls(version, parent, ids, created, origin, ids_merged)


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
    def parse(cls, data: dict[str, Any], where: str, version: str) -> SealRecord:
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

    def to_dict(self) -> dict[str, Any]:
        """The record as stored."""
        return {
            "version": self.version,
            "successor": self.successor,
            "branch": self.branch,
            "time": self.time,
            "message": self.message,
            "author": self.author,
        }


@dataclass(frozen=True, slots=True)
class ExpiryRecord:
    """The mark of a version dropped by retention, ``expired/<version>.json`` (layout 3 and
    newer): its record and seal stay, so the history still shows it, but its state (manifest,
    index root, and what only it named) is gone.

    Attributes
    ----------
    version : str
        The expired version.
    time : float
        When gc expired it, in seconds since the epoch.
    unreachable : bool
        Whether no ref reached it any more (its objects are freed with its records), rather
        than retention dropping it.
    """

    version: str
    time: float
    unreachable: bool = False

    @classmethod
    def parse(cls, data: dict[str, Any], where: str, version: str) -> ExpiryRecord:
        """Parse and check the expiry mark of ``version``.

        Raises
        ------
        FormatError
            If a field is missing or malformed, or the mark names another version.
        """
        if _member(data, "version", where) != version:
            raise _damaged(where, f"marks {_short(data['version'])} expired, not {version}")
        unreachable = data.get("unreachable", False)
        if not isinstance(unreachable, bool):
            raise _damaged(where, f"has unreachable {_short(unreachable)}, not true or false")
        return cls(
            version=version,
            time=_time(_member(data, "expired", where), "expired", where),
            unreachable=unreachable,
        )

    def to_dict(self) -> dict[str, Any]:
        """The record as stored."""
        record: dict[str, Any] = {"version": self.version, "expired": self.time}
        if self.unreachable:
            record["unreachable"] = True
        return record


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a sealed version itself wrote, ``manifests/<version>.json``.

    Attributes
    ----------
    version : str
        The sealed version.
    written : tuple of str
        Keys whose newest object in the version is its first write (generation 0).
    generations : dict
        ``{key: generation}`` for keys whose newest object in the version is a later
        generation.
    deleted : tuple of str
        Keys whose newest object in the version is a tombstone.
    """

    version: str
    written: tuple[str, ...] = ()
    generations: dict[str, int] = field(default_factory=dict)
    deleted: tuple[str, ...] = ()

    def locations(self) -> dict[str, Location]:
        """``{key: location}`` of every object the version wrote that its sealed state holds."""
        first = Location(self.version)
        out = dict.fromkeys(self.written, first)
        out.update((k, Location(self.version, g)) for k, g in self.generations.items())
        return out

    def to_dict(self) -> dict[str, Any]:
        """The manifest as stored."""
        return {
            "version": self.version,
            "checkpoint": False,
            "written": list(self.written),
            "generations": dict(self.generations),
            "deleted": list(self.deleted),
        }


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A sealed version's whole state, written instead of a :class:`Manifest` every
    :data:`CHECKPOINT_EVERY` versions, so that opening a version reads a bounded chain.

    Attributes
    ----------
    version : str
        The sealed version.
    index : dict
        ``{location: keys}``: every key the version holds, grouped by where its object lies.
    """

    version: str
    index: dict[Location, tuple[str, ...]] = field(default_factory=dict)

    def locations(self) -> dict[str, Location]:
        """``{key: location}`` of the objects this version's own writes left in its state."""
        return {
            k: loc for loc, keys in self.index.items() if loc.version == self.version for k in keys
        }

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint as stored."""
        index = {str(loc): list(keys) for loc, keys in self.index.items()}
        return {"version": self.version, "checkpoint": True, "index": index}


def parse_manifest(data: dict[str, Any], where: str, version: str) -> Manifest | Checkpoint:
    """Parse and check the manifest (or checkpoint) of ``version``.

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
        return Checkpoint(
            version,
            {
                Location.parse(loc, where): _keys(keys, "index keys", where)
                for loc, keys in index.items()
            },
        )
    generations = data.get("generations", {})
    if not isinstance(generations, dict) or not all(
        isinstance(g, int) and not isinstance(g, bool) and g > 0 for g in generations.values()
    ):
        raise _damaged(where, "has generations that are not positive integers by key")
    _keys(list(generations), "rewritten keys", where)
    return Manifest(
        version,
        written=_keys(_member(data, "written", where), "written keys", where),
        generations=dict(generations),
        deleted=_keys(_member(data, "deleted", where), "deleted keys", where),
    )
