"""A read-only reader of hubzarr repositories, written from docs/format.md alone.

It imports nothing from hubzarr: only json, crc32c, numcodecs, numpy and fsspec. The tests
(tests/test_format.py) check that it reads exactly what hubzarr reads, which is what shows the
specification is enough to implement the format.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from itertools import product
from typing import Any

import crc32c
import fsspec
import numcodecs
import numpy as np

KNOWN_LAYOUT = 4
VERSION = re.compile(r"[0-9a-f]{20}")
GENERATION = re.compile(r"(.+)~([1-9][0-9]*)")
TOMBSTONE = b"HZ1T"


class DamagedError(Exception):
    """The repository is not as the specification says."""


def canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), sort_keys=True).encode()


class Repository:
    """One repository ``user/name`` under a hub root (any fsspec URL or local folder)."""

    def __init__(self, root: str, name: str, **storage_options: Any) -> None:
        self.fs, path = fsspec.core.url_to_fs(root, **storage_options)
        self.base = f"{path.rstrip('/')}/{name}"
        self.layout: int | None = None
        info = self.record("repo.json")
        if info is None:
            raise LookupError(f"no repository {name}")
        if not isinstance(info["layout"], int) or info["layout"] > KNOWN_LAYOUT:
            raise DamagedError(f"layout {info['layout']}: upgrade this reader")
        self.layout, self.home = info["layout"], info["id"]
        self.default_branch = info["default_branch"]

    # -- section 3: records ------------------------------------------------------------

    def raw(self, place: str) -> bytes | None:
        try:
            data: bytes = self.fs.cat_file(f"{self.base}/{place}")
        except FileNotFoundError:
            return None
        return data

    def record(self, place: str) -> dict[str, Any] | None:
        raw = self.raw(place)
        if raw is None:
            return None
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise DamagedError(f"{place} is not an object")
        crc = data.pop("crc32c", None)
        layout = self.layout if self.layout is not None else data.get("layout")
        if isinstance(layout, int) and layout > KNOWN_LAYOUT:
            return data  # checked otherwise, perhaps: the caller refuses it
        if crc is None and layout is not None and layout >= 2:
            raise DamagedError(f"{place} has no checksum")
        if crc is not None and crc != crc32c.crc32c(canonical(data) + b"\n" + place.encode()):
            raise DamagedError(f"{place} fails its checksum")
        return data

    def inner(self, path: str) -> dict[str, Any] | None:
        return self.record(f"{self.home}/{path}")

    # -- section 5: refs; section 10: resolving ------------------------------------------

    def refs(self, kind: str) -> dict[str, str]:
        """Live refs of ``kind`` ("branches" or "tags"): name to the version they name."""
        folder = f"{self.base}/{self.home}/refs/{kind}"
        try:
            names = [p.rstrip("/").rsplit("/", 1)[1] for p in self.fs.ls(folder, detail=False)]
        except FileNotFoundError:
            names = []
        out = {}
        for file in sorted(n for n in names if n.endswith(".json")):
            ref = self.inner(f"refs/{kind}/{file}")
            if ref is not None and not ref.get("deleted"):
                out[file[: -len(".json")]] = ref["head" if kind == "branches" else "version"]
        return out

    def follow(self, head: str) -> str:
        """A branch's open head: follow the seals from ``head``."""
        while (seal := self.inner(f"seals/{head}.json")) is not None:
            if self.inner(f"manifests/{head}.json") is None:
                raise DamagedError(f"seal of {head} unfinished (this reader does not write)")
            if seal["successor"] is None:
                raise LookupError("the branch was deleted")
            head = seal["successor"]
        return head

    def resolve(self, ref: str | None = None) -> tuple[str, bool]:
        """(version, sealed) of a branch, tag or version id."""
        ref = ref or self.default_branch
        if ref in (branches := self.refs("branches")):
            return self.follow(branches[ref]), False
        if ref in (tags := self.refs("tags")):
            return tags[ref], True
        if VERSION.fullmatch(ref) and self.inner(f"versions/{ref}.json") is not None:
            if self.inner(f"manifests/{ref}.json") is None:
                raise LookupError(f"{ref} is an open head: open its branch")
            return ref, True
        raise LookupError(f"no ref {ref}")

    # -- section 9: the index ------------------------------------------------------------

    def manifest(self, version: str) -> dict[str, Any]:
        manifest = self.inner(f"manifests/{version}.json")
        if manifest is None or manifest["version"] != version:
            raise DamagedError(f"no manifest for sealed version {version}")
        return manifest

    def apply(self, index: dict[str, tuple[str, int]], version: str) -> None:
        manifest = self.manifest(version)
        if manifest["checkpoint"]:
            index.clear()
            for location, keys in manifest["index"].items():
                owner, _, generation = location.partition("~")
                index.update(dict.fromkeys(keys, (owner, int(generation or 0))))
            return
        index.update(dict.fromkeys(manifest["written"], (version, 0)))
        index.update((k, (version, g)) for k, g in manifest["generations"].items())
        for key in manifest["deleted"]:
            index.pop(key, None)

    @staticmethod
    def keys_of(data: dict[str, Any]) -> dict[str, tuple[str, int]]:
        """The keys a shard (or a root's ``meta`` or ``inline`` member) holds, run by run."""
        keys = data["keys"].split("\n") if data["keys"] else []
        runs = data["runs"]
        out: dict[str, tuple[str, int]] = {}
        for n in range(0, len(runs), 2):
            end = runs[n + 2] if n + 2 < len(runs) else len(keys)
            owner, _, generation = data["locations"][runs[n + 1]].partition("~")
            out.update(dict.fromkeys(keys[runs[n] : end], (owner, int(generation or 0))))
        if keys != sorted(set(keys)) or len(out) != len(keys):
            raise DamagedError("a shard's keys are not sorted, distinct and all in runs")
        return out

    def shard(self, name: str) -> dict[str, tuple[str, int]]:
        data = self.inner(f"shards/{name}.json")
        if data is None:
            raise DamagedError(f"shard {name} is missing")
        hashed = "-" not in name  # layout 3: named by its content
        if hashed and hashlib.blake2b(canonical(data), digest_size=16).hexdigest() != name:
            raise DamagedError(f"shard {name} is not named by its content")
        return self.keys_of(data)

    @staticmethod
    def shard_names(root: dict[str, Any]) -> list[str]:
        """Section 9: layout 4 lists runs of shards by writer and number, layout 3 hex
        digests."""
        if "writers" in root:
            runs = root["runs"]
            return [
                f"{root['writers'][w]}-{n + j}"
                for w, n, count in zip(runs[0::3], runs[1::3], runs[2::3], strict=True)
                for j in range(count)
            ]
        names = root["shards"]
        return [names[32 * i : 32 * (i + 1)] for i in range(len(names) // 32)]

    def sealed_index(self, version: str) -> dict[str, tuple[str, int]]:
        """Layouts 3 and 4: the index root if there is one, else the parent's index and the
        manifest."""
        root = self.inner(f"index/{version}.json")
        if root is None:
            record = self.inner(f"versions/{version}.json")
            if record is None:
                raise DamagedError(f"no record of {version}")
            parent = record["parent"]
            index = {} if parent is None else self.sealed_index(parent)
            self.apply(index, version)
            return index
        index = self.keys_of(root["meta"])
        if "inline" in root:
            index.update(self.keys_of(root["inline"]))
        else:
            names = self.shard_names(root)
            if len(names) != len(root["firsts"].split("\n")):
                raise DamagedError(f"the index root of {version} names other shards than it lists")
            for name in names:
                index.update(self.shard(name))
        if len(index) != root["count"]:
            raise DamagedError(f"the index root of {version} miscounts its keys")
        return index

    def index(self, version: str, *, sealed: bool) -> dict[str, tuple[str, int]]:
        record = self.inner(f"versions/{version}.json")
        if record is None:
            raise DamagedError(f"no record of {version}")
        if self.layout is not None and self.layout >= 3:
            if sealed:
                return self.sealed_index(version)
            return {} if record["parent"] is None else self.sealed_index(record["parent"])
        index: dict[str, tuple[str, int]] = {}
        for ancestor in reversed(record["chain"]):
            self.apply(index, ancestor)
        if sealed:
            self.apply(index, version)
        return index

    # -- sections 6 and 10: objects ------------------------------------------------------

    def payload(self, version: str, key: str, generation: int) -> bytes | None:
        """The checked payload of an object (``None`` for a tombstone)."""
        name = f"{key}~{generation}" if generation else key
        raw = self.raw(f"{self.home}/data/{version}/{name}")
        if raw is None:
            raise DamagedError(f"{version}/{name} is missing")
        if raw == TOMBSTONE:
            return None
        magic, crc, payload = raw[:4], int.from_bytes(raw[4:8], "big"), raw[8:]
        binding = f"\n{version}\n{generation}\n{key}".encode()
        if magic == b"HZ2D" and crc32c.crc32c(payload + binding) == crc:
            return payload
        if magic == b"HZ1D" and self.layout == 1 and crc32c.crc32c(payload) == crc:
            return payload
        raise DamagedError(f"{version}/{name} fails its checksum")

    def head_objects(self, head: str) -> dict[str, int]:
        """The newest generation of each key in an open head's folder."""
        folder = f"{self.base}/{self.home}/data/{head}"
        newest: dict[str, int] = {}
        for path in self.fs.find(folder):
            name = path[len(folder) + 1 :]
            match = GENERATION.fullmatch(name)
            key, generation = (match[1], int(match[2])) if match else (name, 0)
            newest[key] = max(newest.get(key, 0), generation)
        return newest

    def state(self, ref: str | None = None) -> dict[str, bytes]:
        """Every key with a value at ``ref`` and its payload."""
        version, sealed = self.resolve(ref)
        index = self.index(version, sealed=sealed)
        out: dict[str, bytes] = {}
        head = {} if sealed else self.head_objects(version)
        for key in sorted(set(index) | set(head)):
            owner, generation = (version, head[key]) if key in head else index[key]
            found = self.payload(owner, key, generation)
            if found is not None:
                out[key] = found
        return out


def _fill(value: Any, dtype: np.dtype[Any]) -> Any:
    number = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
    if dtype.kind == "c":
        return complex(*(number.get(v, v) for v in value))
    return number.get(value, value) if isinstance(value, str) else value


def array(state: dict[str, bytes], path: str = "") -> np.ndarray[Any, Any]:
    """Decode the zarr format 2 array at ``path`` of a state, as zarr-python would."""
    prefix = f"{path}/" if path else ""
    meta = json.loads(state[prefix + ".zarray"])
    dtype = np.dtype(meta["dtype"])
    shape, chunks = meta["shape"], meta["chunks"]
    out = np.full(shape, _fill(meta["fill_value"], dtype), dtype=dtype)
    codecs = [numcodecs.get_codec(c) for c in meta.get("filters") or []]
    compressor = meta["compressor"] and numcodecs.get_codec(meta["compressor"])
    separator = meta.get("dimension_separator", ".")
    grid = [range(-(-n // c)) for n, c in zip(shape, chunks, strict=True)]
    for coords in product(*grid):
        raw = state.get(prefix + (separator.join(map(str, coords)) or "0"))
        if raw is None:
            continue
        data: Any = compressor.decode(raw) if compressor else raw
        for codec in reversed(codecs):
            data = codec.decode(data)
        chunk = np.frombuffer(data, dtype=dtype).reshape(chunks, order=meta["order"])
        region = tuple(
            slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(coords, chunks, shape, strict=True)
        )
        out[region] = chunk[tuple(slice(0, r.stop - r.start) for r in region)]
    return out
