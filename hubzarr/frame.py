"""The envelope of every object hubzarr stores under a version's ``data/`` prefix.

A data object is ``b"HZ1D"``, the CRC-32C of the payload (4 bytes, big-endian), then the
payload: exactly what zarr asked to store. A tombstone, recording that a key was deleted in a
version so that reads do not fall through to an ancestor's object, is the four bytes
``b"HZ1T"``. Data objects are at least 8 bytes long, so a listing tells tombstones apart by size
alone, and one read of a key at a version answers "data", "deleted" or "absent".

The checksum turns a truncated, empty or bit-flipped object into :class:`CorruptChunkError`
instead of silently wrong numbers (blosc and zstd do not detect bit flips).
"""

from __future__ import annotations

import crc32c

from hubzarr.errors import CorruptChunkError

__all__ = ["HEADER_SIZE", "TOMBSTONE", "decode", "encode_header"]

_DATA_MAGIC = b"HZ1D"
TOMBSTONE = b"HZ1T"
HEADER_SIZE = len(_DATA_MAGIC) + 4


def encode_header(payload: bytes | memoryview) -> bytes:
    """Return the 8-byte header to store in front of ``payload``."""
    crc: int = crc32c.crc32c(payload)
    return _DATA_MAGIC + crc.to_bytes(4, "big")


def decode(raw: bytes | memoryview, where: str) -> memoryview | None:
    """Check an object read from storage and return its payload, or ``None`` for a tombstone.

    Parameters
    ----------
    raw : bytes or memoryview
        The stored object.
    where : str
        What to name in an error (repository, version and key).

    Returns
    -------
    memoryview or None
        A zero-copy view of the payload, or ``None`` if the object is a tombstone.

    Raises
    ------
    CorruptChunkError
        If the object is empty, truncated, not a hubzarr object, or fails its checksum.
    """
    if raw == TOMBSTONE:
        return None
    if len(raw) < HEADER_SIZE or raw[:4] != _DATA_MAGIC:
        raise CorruptChunkError(
            f"{where} is corrupt: {len(raw)} bytes with no valid hubzarr header (truncated, "
            "emptied or overwritten outside hubzarr); restore it from a copy or rewrite that "
            "region"
        )
    payload = memoryview(raw)[HEADER_SIZE:]
    expected = int.from_bytes(raw[4:HEADER_SIZE], "big")
    if crc32c.crc32c(payload) != expected:
        raise CorruptChunkError(
            f"{where} is corrupt: its checksum does not match its {len(payload)} bytes "
            "(bit rot or an outside edit); restore it from a copy or rewrite that region"
        )
    return payload
