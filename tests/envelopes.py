"""Forging stored objects the way hubzarr frames them, for tests that damage a repository."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import crc32c

from hubzarr import frame
from hubzarr.records import split_generation

#: ``.../<incarnation>/data/<version>/<key>[~<generation>]`` of a stored data object, or the
#: same relative to the incarnation folder.
_DATA_PATH = re.compile(r"(?:.*/[0-9a-f]{16}/)?data/([0-9a-f]{20})/(.+)")


def place(path: str | Path) -> tuple[str, str, int]:
    """Return (version, zarr key, generation) of a data object's storage path or file."""
    match = _DATA_PATH.fullmatch(str(path).replace("\\", "/"))
    assert match is not None, f"{path} is not a data object's path"
    key, generation = split_generation(match[2])
    return match[1], key, generation


def framed(path: str | Path, payload: bytes) -> bytes:
    """Return ``payload`` in a valid envelope for the data object at ``path``: what hubzarr
    would store there (checksum and binding right), whatever the payload is."""
    return frame.encode_header(payload, frame.binding(*place(path))) + payload


def unframe(path: str | Path, raw: bytes) -> bytes | None:
    """Return the payload of the object ``raw`` read from ``path`` (``None``: a tombstone),
    checking it as hubzarr does."""
    payload = frame.decode(raw, str(path), frame.binding(*place(path)))
    return None if payload is None else bytes(payload)


#: ``.../<user>/<name>/`` then a record's place in its repository.
_RECORD_PATH = re.compile(r".*?/((?:[0-9a-f]{16}/(?:refs|versions|seals|manifests)/.+)|repo\.json)")


def record(path: str | Path, data: dict[str, Any]) -> bytes:
    """Return ``data`` as hubzarr stores the record at ``path``: canonical JSON with a
    checksum bound to its place, whatever the content is."""
    match = _RECORD_PATH.fullmatch(str(path).replace("\\", "/"))
    assert match is not None, f"{path} is not a record's path"
    body = {k: v for k, v in data.items() if k != "crc32c"}
    canonical = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    crc = crc32c.crc32c(canonical + b"\n" + match[1].encode())
    return json.dumps({**body, "crc32c": crc}, separators=(",", ":"), sort_keys=True).encode()
