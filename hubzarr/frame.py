"""The envelope of every object hubzarr stores under a version's ``data/`` prefix.

A data object is a 4-byte magic, a CRC-32C (4 bytes, big-endian), then the payload: exactly
what zarr asked to store. Two kinds exist, and the magic says which:

- ``b"HZ2D"`` (layout 2, written today): the checksum covers the payload followed by the
  object's *binding*, the version, generation and zarr key it was written for
  (:func:`binding`). The binding is not stored, only checked: an object copied or moved to
  another key, version or generation (two chunk files swapped, a later version's chunk copied
  over a tag's) fails its checksum where it now lies. The repository's name and root are not
  bound, so a byte-for-byte copy of a repository to another name or root stays valid.
- ``b"HZ1D"`` (layout 1): the checksum covers the payload only. Read only in repositories
  written with layout 1, so in a newer one an unbound object is never taken for a bound one.

A tombstone, recording that a key was deleted in a version so that reads do not fall through
to an ancestor's object, is the four bytes ``b"HZ1T"``. Data objects are at least 8 bytes long,
so a listing tells tombstones apart by size alone, and one read of a key at a version answers
"data", "deleted" or "absent". A tombstone found where a manifest records a write is damage,
which the reader (:mod:`hubzarr.session`) reports.

The checksum turns a truncated, empty, bit-flipped or misplaced object into
:class:`CorruptChunkError` instead of silently wrong numbers (blosc and zstd do not detect bit
flips).
"""

from __future__ import annotations

import crc32c

from hubzarr.errors import CorruptChunkError

__all__ = [
    "HEADER_SIZE",
    "TOMBSTONE",
    "binding",
    "checksum",
    "decode",
    "encode_header",
    "header",
]

_BOUND_MAGIC = b"HZ2D"
_UNBOUND_MAGIC = b"HZ1D"
TOMBSTONE = b"HZ1T"
HEADER_SIZE = len(_BOUND_MAGIC) + 4


def binding(version: str, key: str, generation: int) -> bytes:
    """Return what an object written as ``generation`` of ``key`` in ``version`` is bound to.

    The checksum of a bound object covers these bytes after the payload. Newlines cannot occur
    in version ids or generations, so the three fields cannot be confused with one another.
    """
    return f"\n{version}\n{generation}\n{key}".encode()


def checksum(payload: bytes | memoryview) -> int:
    """Return the CRC-32C of ``payload``: computed once, then extended by each binding."""
    crc: int = crc32c.crc32c(payload)
    return crc


def header(payload_checksum: int, bound_to: bytes) -> bytes:
    """Return the 8-byte header of a payload whose :func:`checksum` is ``payload_checksum``,
    bound to ``bound_to`` (a :func:`binding`); costs a CRC over the binding only."""
    crc: int = crc32c.crc32c(bound_to, value=payload_checksum)
    return _BOUND_MAGIC + crc.to_bytes(4, "big")


def encode_header(payload: bytes | memoryview, bound_to: bytes) -> bytes:
    """Return the 8-byte header to store in front of ``payload``, bound to ``bound_to``."""
    return header(checksum(payload), bound_to)


def decode(
    raw: bytes | memoryview, where: str, bound_to: bytes, *, unbound: bool = False
) -> memoryview | None:
    """Check an object read from storage and return its payload, or ``None`` for a tombstone.

    Parameters
    ----------
    raw : bytes or memoryview
        The stored object.
    where : str
        What to name in an error (repository, version and key).
    bound_to : bytes
        The :func:`binding` of the place the object was read from.
    unbound : bool
        Also accept a layout-1 object, whose checksum covers the payload only (repositories
        written with layout 1).

    Returns
    -------
    memoryview or None
        A zero-copy view of the payload, or ``None`` if the object is a tombstone.

    Raises
    ------
    CorruptChunkError
        If the object is empty, truncated, not a hubzarr object, fails its checksum, or was
        written for another key, version or generation.
    """
    if raw == TOMBSTONE:
        return None
    magic = bytes(raw[:4])
    if len(raw) < HEADER_SIZE or not (
        magic == _BOUND_MAGIC or (unbound and magic == _UNBOUND_MAGIC)
    ):
        raise CorruptChunkError(
            f"{where} is corrupt: {len(raw)} bytes with no valid hubzarr header (truncated, "
            "emptied or overwritten outside hubzarr); restore it from a copy or rewrite that "
            "region"
        )
    payload = memoryview(raw)[HEADER_SIZE:]
    expected = int.from_bytes(raw[4:HEADER_SIZE], "big")
    crc = checksum(payload)
    if magic == _UNBOUND_MAGIC:
        if crc != expected:
            raise _mismatch(where, len(payload))
        return payload
    if crc32c.crc32c(bound_to, value=crc) != expected:
        raise _mismatch(where, len(payload))
    return payload


def _mismatch(where: str, size: int) -> CorruptChunkError:
    return CorruptChunkError(
        f"{where} is corrupt: its checksum does not match its {size} bytes and the place it "
        "lies (bit rot, an outside edit, or an object copied or moved from another key or "
        "version); restore it from a copy or rewrite that region"
    )
