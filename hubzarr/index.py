"""The sharded index of a sealed version (layouts 3 and 4): open in constant time and memory.

A version's *index* maps each key it holds to the object that holds its value (a
:class:`~hubzarr.records.Location`). Under layout 2 a reader merged the manifests of a chain of
versions into one dict, so opening a version cost time and memory linear in its chunks. Since
layout 3 every sealed version has an index **root**, ``index/<version>.json``, and the keys,
sorted by code point, are cut into **shards** of a few thousand keys, ``shards/<name>.json``
(see ``docs/format.md``, section 9). Layout 4 names a shard ``<version>-<number>``: the
version that wrote it and its place among that version's new shards, so that a root lists its
shards' names as a few runs (a root of 10^8 keys is about 110 KB); layout 3 named each by the
BLAKE2b hash of its content (a root of 10^8 keys: 500 KB).

- opening a version reads its root: the first key of each shard and the shards' names, or,
  for a small version, the keys themselves (an *inline* root);
- a lookup bisects the root for the shard, reads the shard once (shared by every handle of
  the repository in the process, and cached on disk by the chunk cache, since a shard never
  changes) and bisects it;
- a seal derives its root from its parent's root and its own manifest: it rewrites only the
  shards holding keys it changed, and shares every other shard with the parent. The result
  depends on nothing else, so every finisher of a seal writes the same bytes.

Walking the index (:meth:`VersionIndex.walk`) reads it a shard at a time, in bounded memory.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import itertools
import json
import operator
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from hubzarr.errors import FormatError
from hubzarr.records import VERSION_ID, Location, keys_are_keys

__all__ = [
    "INLINE_KEYS",
    "SHARD_KEYS",
    "UNKNOWN",
    "DictIndex",
    "IndexRoot",
    "Shard",
    "ShardedIndex",
    "VersionIndex",
    "derive_root",
    "shard_name",
]

#: Keys per shard when shards are cut; a shard that grows past twice this is cut again.
SHARD_KEYS = 8192
#: A version holding at most this many keys keeps them in its root (no shard to read).
INLINE_KEYS = 256
#: Lookups a root or shard answers from its stored string (each a search at C speed) before it
#: splits the string into a list, which costs more once but less per lookup.
_PROBES = 8
#: Characters of a shard's name: the hex digest of BLAKE2b with a 16-byte digest.
NAME_LENGTH = 32


def _is_hex(text: str) -> bool:
    """Whether ``text`` is lowercase hex digits only (at C speed: a root of 10^8 chunks names
    12,000 shards in one 390 KB string)."""
    return text.isascii() and not text.encode("ascii").translate(None, b"0123456789abcdef")


def _lines(joined: str) -> int:
    """How many lines ``joined`` holds (``""``: none)."""
    return joined.count("\n") + 1 if joined else 0


def _split(joined: str | None) -> list[str]:
    """The lines of ``joined`` (``""`` or ``None``: none)."""
    return joined.split("\n") if joined else []


def _damaged(where: str, what: str) -> FormatError:
    return FormatError(f"{where} {what}; the repository is damaged: restore it from a copy")


class Shard:
    """Sorted keys and the object each resolves to, run-length coded: keys ``starts[i]`` up to
    ``starts[i + 1]`` all lie at ``locations[runs[i]]`` (one run for keys one version wrote
    together, whatever their number).

    A shard read from storage keeps its keys as stored, one joined string, until something
    needs them one by one: its first few lookups find their key in that string, so opening a
    version and reading a chunk builds no list of 8192 keys; later lookups bisect the list. What a
    found key does not need is checked when an answer first needs it (:meth:`check`): that
    every key is a key, and their order.
    """

    __slots__ = (
        "_checked",
        "_count",
        "_joined",
        "_keys",
        "_scans",
        "locations",
        "runs",
        "starts",
        "where",
    )

    def __init__(
        self,
        keys: list[str] | None,
        locations: list[Location],
        starts: list[int],
        runs: list[int],
        where: str = "",
        joined: str | None = None,
    ) -> None:
        self.locations = locations
        self.starts = starts
        self.runs = runs
        #: How errors name the file it was read from.
        self.where = where
        #: The keys one by one (``None``: not split from ``_joined`` yet).
        self._keys = keys
        #: The keys as stored (kept: threads may be reading it while another splits it).
        self._joined = joined
        self._count = len(keys) if keys is not None else _lines(joined or "")
        #: Whether the keys are known to be keys, sorted and distinct (built here: yes).
        self._checked = joined is None
        #: How many lookups searched the joined keys (past :data:`_PROBES`, they are split).
        self._scans = 0

    @property
    def keys(self) -> list[str]:
        """The keys, sorted (split from the stored string on first use)."""
        keys = self._keys
        if keys is None:
            keys = self._keys = _split(self._joined)
        return keys

    def joined(self) -> str:
        """The keys joined by newlines, as stored (without joining them again where the
        stored string is kept)."""
        return self._joined if self._joined is not None else "\n".join(self.keys)

    def first(self) -> str | None:
        """The first key (``None``: no key), without splitting the keys."""
        if self._keys is not None or self._joined is None:
            return self.keys[0] if self.keys else None
        return self._joined.partition("\n")[0] if self._joined else None

    def last(self) -> str | None:
        """The last key (``None``: no key), without splitting the keys."""
        if self._keys is not None or self._joined is None:
            return self.keys[-1] if self.keys else None
        return self._joined.rpartition("\n")[2] if self._joined else None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Shard):
            return NotImplemented
        return (self.keys, self.locations, self.starts, self.runs) == (
            other.keys,
            other.locations,
            other.starts,
            other.runs,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Shard({len(self)} keys, {len(self.locations)} locations)"

    @classmethod
    def from_items(cls, items: Iterable[tuple[str, Location]]) -> Shard:
        """A shard of ``items``, sorted by key, each key once."""
        keys: list[str] = []
        locations: list[Location] = []
        numbers: dict[Location, int] = {}
        starts: list[int] = []
        runs: list[int] = []
        previous: Location | None = None
        for key, location in items:
            if location != previous:
                number = numbers.get(location)
                if number is None:
                    number = numbers[location] = len(locations)
                    locations.append(location)
                starts.append(len(keys))
                runs.append(number)
                previous = location
            keys.append(key)
        return cls(keys, locations, starts, runs)

    def apply(self, changes: Mapping[str, Location | None]) -> Shard:
        """This shard with ``changes`` applied (``None``: the key is deleted), in time that
        grows with the changes and the runs (the keys and the run of each are moved in bulk,
        not one by one in Python).

        Raises
        ------
        FormatError
            If the shard's keys fail :meth:`check`.
        """
        self.check()
        keys = list(self.keys)
        ends = [*self.starts[1:], len(keys)] if self.starts else []
        per_key: list[int] = []
        for start, end, number in zip(self.starts, ends, self.runs, strict=True):
            per_key.extend(itertools.repeat(number, end - start))
        locations = list(self.locations)
        numbers = {loc: n for n, loc in enumerate(locations)}
        for key, location in changes.items():
            i = bisect.bisect_left(keys, key)
            there = i < len(keys) and keys[i] == key
            if location is None:
                if there:
                    del keys[i], per_key[i]
                continue
            if location not in numbers:
                numbers[location] = len(locations)
                locations.append(location)
            number = numbers[location]
            if there:
                per_key[i] = number
            else:
                keys.insert(i, key)
                per_key.insert(i, number)
        # Runs and locations as :meth:`from_items` makes them (numbered in key order), so
        # that every finisher writes the same shard.
        starts: list[int] = []
        runs: list[int] = []
        order: dict[Location, int] = {}
        at = 0
        for location, group in itertools.groupby(map(locations.__getitem__, per_key)):
            starts.append(at)
            runs.append(order.setdefault(location, len(order)))
            at += len(list(group))
        return Shard(keys, list(order), starts, runs)

    def __len__(self) -> int:
        return self._count

    def check(self) -> None:
        """Check that every key is one a store could have written, and that they are sorted
        and distinct (once: a shard read from storage is checked on its first miss or walk).

        Raises
        ------
        FormatError
            If not.
        """
        if self._checked:
            return
        joined, keys = self._joined or "", self.keys
        if keys and not keys_are_keys(joined, len(keys)):
            raise _damaged(self.where, "holds a key no store could have written")
        if not all(map(operator.lt, keys, keys[1:])):
            raise _damaged(self.where, "holds keys that are not sorted and distinct")
        self._checked = True

    def get(self, key: str) -> Location | None:
        """The location of ``key``, ``None`` if the shard does not hold it.

        Raises
        ------
        FormatError
            If the key is not found and the shard's keys fail :meth:`check`: a miss is an
            answer only in a shard known to be sorted.
        """
        if self._keys is None and self._scans < _PROBES:
            self._scans += 1
            i = self._scan(key)
        else:
            keys = self.keys
            i = bisect.bisect_left(keys, key)
            if i == len(keys) or keys[i] != key:
                i = -1
        if i < 0:
            self.check()
            return None
        return self.locations[self.runs[bisect.bisect_right(self.starts, i) - 1]]

    def _scan(self, key: str) -> int:
        """The position of ``key`` found in the joined keys (``-1``: not there), without
        splitting them: the line equal to ``key``, at C speed."""
        joined = self._joined or ""
        if "\n" in key:
            return -1  # not a key (a line of its own)
        if joined == key or joined.startswith(key + "\n"):
            at = 0
        elif joined.endswith("\n" + key):
            at = len(joined) - len(key)
        else:
            at = joined.find("\n" + key + "\n")
            if at < 0:
                return -1
            at += 1
        return joined.count("\n", 0, at) if len(self.starts) > 1 else 0

    def items(self, prefix: str = "") -> Iterator[tuple[str, Location]]:
        """``(key, location)`` for each key (starting with ``prefix``), in key order.

        Raises
        ------
        FormatError
            If the shard's keys fail :meth:`check`.
        """
        self.check()
        keys, starts = self.keys, self.starts
        first = bisect.bisect_left(keys, prefix) if prefix else 0
        run = bisect.bisect_right(starts, first) - 1 if keys else 0
        for i in range(first, len(keys)):
            key = keys[i]
            if prefix and not key.startswith(prefix):
                return
            while run + 1 < len(starts) and starts[run + 1] <= i:
                run += 1
            yield key, self.locations[self.runs[run]]

    @property
    def weight(self) -> int:
        """About the bytes the shard holds in memory."""
        joined = len(self._joined) if self._joined is not None else 0
        split = 80 * len(self) if self._keys is not None else 0
        return split + joined + 100 * len(self.locations) + 60 * len(self.starts)

    def to_dict(self) -> dict[str, Any]:
        """The shard as stored (``keys`` joined by newlines, ``runs`` as start, location
        pairs)."""
        runs = [n for pair in zip(self.starts, self.runs, strict=True) for n in pair]
        return {
            "keys": "\n".join(self.keys),
            "locations": [str(loc) for loc in self.locations],
            "runs": runs,
        }

    @classmethod
    def parse(cls, data: Mapping[str, Any], where: str) -> Shard:
        """Parse a stored shard (or a root's inline or metadata keys). Its structure is
        checked here; its keys when first needed (:meth:`check`).

        Raises
        ------
        FormatError
            If a member is missing or malformed, or a run names no location.
        """
        joined, names, runs = data.get("keys"), data.get("locations"), data.get("runs")
        if not isinstance(joined, str) or not isinstance(names, list):
            raise _damaged(where, "has keys or locations of the wrong type")
        count = joined.count("\n") + 1 if joined else 0
        locations = [Location.parse(name, where) for name in names]
        if (
            not isinstance(runs, list)
            or len(runs) % 2
            or not all(isinstance(n, int) and not isinstance(n, bool) for n in runs)
        ):
            raise _damaged(where, "has runs that are not pairs of integers")
        starts, numbers = runs[0::2], runs[1::2]
        if count and (not starts or starts[0] != 0):
            raise _damaged(where, "has runs that do not begin at its first key")
        if not all(map(operator.lt, starts, starts[1:])) or (
            starts and starts[-1] >= max(count, 1)
        ):
            raise _damaged(where, "has runs out of order or past its last key")
        if any(not 0 <= n < len(locations) for n in numbers):
            raise _damaged(where, "has a run that names no location")
        return cls(None, locations, starts, numbers, where, joined)


def shard_name(record: dict[str, Any]) -> str:
    """The name of the shard ``record`` (its :meth:`Shard.to_dict`): the hex BLAKE2b-128
    digest of its canonical JSON."""
    canonical = json.dumps(record, separators=(",", ":"), sort_keys=True).encode()
    return hashlib.blake2b(canonical, digest_size=NAME_LENGTH // 2).hexdigest()


def is_metadata(key: str) -> bool:
    """Whether ``key`` is a metadata document (its last segment starts with a dot: zarr's
    ``.zarray``, ``.zattrs``, ``.zgroup``), which a root holds itself, so that opening an array
    reads no shard; chunk keys never start with a dot."""
    return key.rpartition("/")[2].startswith(".")


class IndexRoot:
    """A sealed version's ``index/<version>.json``: its number of keys, its metadata keys
    (``meta``), and either its other keys (``inline``) or its shards, each by the first key it
    holds and its name.

    As with a :class:`Shard`, a root read from storage keeps its shards' first keys as stored,
    one joined string: its first few lookups bisect that string (a key in the shard the last
    one found costs nothing more); anything more splits it. What a
    lookup that finds its key does not need is checked when first needed: the order of the
    first keys (:meth:`check`) on a miss or a walk, and a shard's name when it is used.
    """

    __slots__ = (
        "_firsts",
        "_joined",
        "_probe",
        "_probes",
        "_shards",
        "count",
        "inline",
        "meta",
        "names",
        "ordered",
        "run_numbers",
        "run_starts",
        "run_writers",
        "version",
        "where",
        "writers",
    )

    def __init__(
        self,
        version: str,
        count: int,
        meta: Shard,
        inline: Shard | None,
        firsts: list[str] | None,
        names: str,
        writers: list[str] | None = None,
        run_starts: list[int] | None = None,
        run_writers: list[int] | None = None,
        run_numbers: list[int] | None = None,
        *,
        where: str = "",
        ordered: bool = True,
        joined: str | None = None,
    ) -> None:
        self.version = version
        self.count = count
        self.meta = meta
        self.inline = inline
        #: Layout 3: the shards' names, hex digests of their content, one after another.
        self.names = names
        #: Layout 4: the versions that wrote the shards, and the runs of shards:
        #: ``run_starts[j]`` is the first shard of run ``j``, written by
        #: ``writers[run_writers[j]]`` as its shard number ``run_numbers[j]``, the next shard
        #: as the next number, and so on.
        self.writers = writers or []
        self.run_starts = run_starts or []
        self.run_writers = run_writers or []
        self.run_numbers = run_numbers or []
        #: How errors name the file it was read from.
        self.where = where
        #: Whether the first keys are known to be in order.
        self.ordered = ordered
        #: The first keys one by one (``None``: not split from ``_joined`` yet).
        self._firsts = firsts
        self._joined = joined
        self._shards = len(firsts) if firsts is not None else _lines(joined or "")
        #: The last lookup answered from the joined first keys: (shard, its first key, the
        #: next shard's first key or ``None``), and how many were.
        self._probe: tuple[int, str, str | None] | None = None
        self._probes = 0

    @property
    def firsts(self) -> list[str]:
        """The first key of each shard (split from the stored string on first use)."""
        firsts = self._firsts
        if firsts is None:
            firsts = self._firsts = _split(self._joined)
        return firsts

    def first(self, i: int) -> str:
        """The first key of shard ``i``."""
        probe = self._probe
        if self._firsts is None and probe is not None:
            if i == probe[0]:
                return probe[1]
            if i == probe[0] + 1 and probe[2] is not None:
                return probe[2]
        return self.firsts[i]

    def _key_fields(self) -> tuple[Any, ...]:
        return (
            self.version,
            self.count,
            self.meta,
            self.inline,
            self.firsts,
            self.names,
            self.writers,
            self.run_starts,
            self.run_writers,
            self.run_numbers,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IndexRoot):
            return NotImplemented
        return self._key_fields() == other._key_fields()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"IndexRoot({self.version}, {self.count} keys, {self.shards} shards)"

    @property
    def shards(self) -> int:
        return self._shards

    @property
    def data_count(self) -> int:
        """Keys other than metadata."""
        return self.count - len(self.meta)

    def name(self, i: int) -> str:
        """The name of shard ``i``: ``<writer>-<number>`` (layout 4), or the hex digest of its
        content (layout 3).

        Raises
        ------
        FormatError
            If a layout 3 name is not a hex digest (a name becomes a path).
        """
        if self.writers:
            writer, number = self.ref(i)
            return f"{writer}-{number}"
        name = self.names[i * NAME_LENGTH : (i + 1) * NAME_LENGTH]
        if not _is_hex(name):
            raise _damaged(self.where, f"names a shard {name!r}, which is not a hex digest")
        return name

    def ref(self, i: int) -> tuple[str, int]:
        """Shard ``i`` as ``(writer, number)`` (layout 4), or ``(hex name, -1)`` (layout 3)."""
        if not self.writers:
            return self.name(i), -1
        j = bisect.bisect_right(self.run_starts, i) - 1
        return self.writers[self.run_writers[j]], self.run_numbers[j] + i - self.run_starts[j]

    @classmethod
    def sharded(
        cls, version: str, count: int, meta: Shard, firsts: list[str], refs: list[tuple[str, int]]
    ) -> IndexRoot:
        """A root of shards, each by its first key and its :meth:`ref`: all of layout 3's
        form, or all of layout 4's."""
        hashed = bool(refs) and refs[0][1] < 0
        if any((number < 0) != hashed for _, number in refs):
            raise AssertionError("a root names its shards one way: by writer, or by hash")
        if hashed:
            return cls(version, count, meta, None, firsts, "".join(name for name, _ in refs))
        writers: dict[str, int] = {}
        starts: list[int] = []
        run_writers: list[int] = []
        numbers: list[int] = []
        previous: tuple[str, int] = ("", -2)
        for i, (writer, number) in enumerate(refs):
            if writer != previous[0] or number != previous[1] + 1:
                starts.append(i)
                run_writers.append(writers.setdefault(writer, len(writers)))
                numbers.append(number)
            previous = (writer, number)
        writer_list = list(writers)
        return cls(
            version, count, meta, None, firsts, "", writer_list, starts, run_writers, numbers
        )

    def check(self) -> None:
        """Check that the shards are in order of their first keys (once).

        Raises
        ------
        FormatError
            If not.
        """
        if self.ordered:
            return
        # The first keys are only compared, never used as paths: their order is what matters
        # (each shard's own keys are checked when it is read).
        firsts = self.firsts
        if not all(map(operator.lt, firsts, firsts[1:])):
            raise _damaged(self.where, "has shards out of order")
        self.ordered = True

    def placed(self, i: int, shard: Shard) -> Shard:
        """``shard``, read as shard ``i``, if it holds the keys the root places there.

        Raises
        ------
        FormatError
            If its first key is not the one the root lists, or a key lies in the next shard.
        """
        first, last = shard.first(), shard.last()
        if (
            first is None
            or last is None
            or first != self.first(i)
            or (i + 1 < self.shards and last >= self.first(i + 1))
        ):
            raise _damaged(
                self.where, f"lists shard {self.name(i)} where it does not hold those keys"
            )
        return shard

    def shard_of(self, key: str) -> int:
        """The shard that holds ``key`` if any does (the last whose first key is at most it)."""
        joined, probe = self._joined, self._probe
        if self._firsts is None and joined:
            if probe is not None and probe[1] <= key and (probe[2] is None or key < probe[2]):
                return probe[0]  # the shard the last lookup found holds this key too
            if self._probes < _PROBES:
                self._probes += 1
                return self._bisect_joined(joined, key)
        return max(bisect.bisect_right(self.firsts, key) - 1, 0)

    def _bisect_joined(self, joined: str, key: str) -> int:
        """:meth:`shard_of` on the joined first keys, without splitting them: a bisection
        over character offsets, each step reading the line that starts after its middle."""
        lo, hi = 0, len(joined)  # the answer starts at lo, or after lo and at most at hi
        while lo < hi:
            mid = (lo + hi) // 2
            newline = joined.find("\n", mid, hi)
            if newline < 0:
                hi = mid
                continue
            end = joined.find("\n", newline + 1)
            if joined[newline + 1 : end if end >= 0 else len(joined)] <= key:
                lo = newline + 1
            else:
                hi = newline
        end = joined.find("\n", lo)
        following = None
        if end >= 0:
            after = joined.find("\n", end + 1)
            following = joined[end + 1 : after if after >= 0 else len(joined)]
        i = joined.count("\n", 0, lo)
        self._probe = (i, joined[lo : end if end >= 0 else len(joined)], following)
        return i

    def shards_under(self, prefix: str) -> range:
        """The shards that may hold keys starting with ``prefix``."""
        if not prefix:
            return range(self.shards)
        first = self.shard_of(prefix)
        # Keys with the prefix sort before prefix + U+10FFFF.
        last = self.shard_of(prefix + "\U0010ffff")
        return range(first, last + 1)

    def to_dict(self) -> dict[str, Any]:
        """The root as stored."""
        out: dict[str, Any] = {
            "version": self.version,
            "count": self.count,
            "meta": self.meta.to_dict(),
        }
        if self.inline is not None:
            out["inline"] = self.inline.to_dict()
        elif self.writers:
            out["firsts"] = "\n".join(self.firsts)
            out["writers"] = self.writers
            out["runs"] = [
                n
                for run in zip(self.run_writers, self.run_numbers, self._run_lengths(), strict=True)
                for n in run
            ]
        else:
            out["firsts"] = "\n".join(self.firsts)
            out["shards"] = self.names
        return out

    def _run_lengths(self) -> list[int]:
        ends = [*self.run_starts[1:], len(self.firsts)]
        return [end - start for start, end in zip(self.run_starts, ends, strict=True)]

    @classmethod
    def parse(cls, data: Mapping[str, Any], where: str, version: str) -> IndexRoot:
        """Parse a stored root. Its structure is checked here; the order of its shards and
        their names when first needed.

        Raises
        ------
        FormatError
            If a member is missing or malformed, or the root names another version.
        """
        if data.get("version") != version:
            raise _damaged(where, f"is not the index root of {version}")
        count = data.get("count")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise _damaged(where, "has a count that is not a non-negative integer")
        meta = data.get("meta")
        if not isinstance(meta, dict):
            raise _damaged(where, "has metadata keys that are not an object")
        held = Shard.parse(meta, where)
        if not all(map(is_metadata, held.keys)) or len(held) > count:
            raise _damaged(where, "has metadata keys that are not metadata, or too many")
        if "inline" in data:
            inline = data["inline"]
            if not isinstance(inline, dict):
                raise _damaged(where, "has inline keys that are not an object")
            shard = Shard.parse(inline, where)
            if any(map(is_metadata, shard.keys)) or len(shard) + len(held) != count:
                raise _damaged(where, f"holds other keys than its count of {count}")
            return cls(version, count, held, shard, [], "", where=where)
        joined = data.get("firsts")
        if not isinstance(joined, str):
            raise _damaged(where, "has first keys that are not a string")
        shards = _lines(joined)
        if count > len(held) and not shards:
            raise _damaged(where, f"counts {count} keys but has no shard")
        if "writers" in data:
            return cls._parse_runs(data, where, version, count, held, joined)
        names = data.get("shards")
        if not isinstance(names, str) or len(names) != NAME_LENGTH * shards:
            raise _damaged(where, "has shard names that are not one hex digest per shard")
        return cls(
            version, count, held, None, None, names, where=where, ordered=False, joined=joined
        )

    @classmethod
    def _parse_runs(
        cls,
        data: Mapping[str, Any],
        where: str,
        version: str,
        count: int,
        held: Shard,
        joined: str,
    ) -> IndexRoot:
        """A layout 4 root's ``writers`` and ``runs`` (triples: writer, first number,
        shards)."""
        shards = _lines(joined)
        writers, runs = data.get("writers"), data.get("runs")
        if not isinstance(writers, list) or not all(
            isinstance(w, str) and VERSION_ID.fullmatch(w) for w in writers
        ):
            raise _damaged(where, "has writers that are not version ids")
        if (
            not isinstance(runs, list)
            or len(runs) % 3
            or not all(type(n) is int and 0 <= n < 2**40 for n in runs)
        ):
            raise _damaged(where, "has runs that are not triples of non-negative integers")
        run_writers, numbers, lengths = runs[0::3], runs[1::3], runs[2::3]
        if any(w >= len(writers) for w in run_writers) or not all(lengths):
            raise _damaged(where, "has a run that names no writer, or holds no shard")
        starts = list(itertools.accumulate(lengths, initial=0))
        if starts.pop() != shards:
            raise _damaged(where, f"has runs of other than its {shards} shards")
        return cls(
            version,
            count,
            held,
            None,
            None,
            "",
            writers,
            starts,
            run_writers,
            numbers,
            where=where,
            ordered=False,
            joined=joined,
        )


class ShardReader(Protocol):
    """Where a :class:`ShardedIndex` reads its shards from (a
    :class:`~hubzarr.versions.Repository`)."""

    @property
    def scope(self) -> str:
        """What the names of its shards are unique within (a repository's folder): the
        shards this process holds are kept by scope and name."""

    async def read_shard(self, name: str) -> Shard: ...


class _Shards:
    """The shards in memory in this process, by the scope of their names (a repository's
    folder) and name, least recently used first out, bounded in bytes: one shard serves every
    handle of a repository."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._held: OrderedDict[tuple[str, str], Shard] = OrderedDict()
        self._bytes = 0

    def get(self, name: tuple[str, str]) -> Shard | None:
        # No lock: every read of a chunk asks, from several threads, and each OrderedDict
        # operation is atomic under the GIL (a shard evicted meanwhile is simply not moved).
        shard = self._held.get(name)
        if shard is not None:
            with contextlib.suppress(KeyError):
                self._held.move_to_end(name)
        return shard

    def put(self, name: tuple[str, str], shard: Shard) -> None:
        with self._lock:
            if name in self._held:
                return
            self._held[name] = shard
            self._bytes += shard.weight
            while self._bytes > self.limit and len(self._held) > 1:
                _, old = self._held.popitem(last=False)
                self._bytes -= old.weight

    def clear(self) -> None:
        with self._lock:
            self._held.clear()
            self._bytes = 0


#: Shards an index keeps by number, beside the shared LRU.
_RECENT = 8
#: Every shard this process holds (64 MiB: about a hundred shards of 8192 keys).
SHARDS = _Shards(64 << 20)


#: What :meth:`VersionIndex.known` answers for a key whose shard is not in memory.
UNKNOWN = Location("unknown")


class VersionIndex:
    """The index a session resolves keys with: a sealed version's state, or the state an open
    head started from."""

    #: Keys it holds.
    count: int

    async def get(self, key: str) -> Location | None:
        """The location of ``key``; ``None`` if it has no value."""
        raise NotImplementedError

    def known(self, key: str) -> Location | None:
        """The location of ``key`` if it is known without I/O (``None``: no value), else
        :data:`UNKNOWN` (then ask :meth:`get`): the fast path of a read."""
        raise NotImplementedError

    def walk(self, prefix: str = "") -> AsyncIterator[list[tuple[str, Location]]]:
        """The ``(key, location)`` pairs (of keys starting with ``prefix``), a shard at a time
        (each in key order)."""
        raise NotImplementedError

    async def mapping(self, prefix: str = "") -> dict[str, Location]:
        """``{key: location}`` for every key starting with ``prefix`` (all of it in memory)."""
        out: dict[str, Location] = {}
        async for items in self.walk(prefix):
            out.update(items)
        return out

    async def keys(self, prefix: str = "") -> set[str]:
        """Every key (starting with ``prefix``)."""
        return set(await self.mapping(prefix))

    async def metadata(self, prefix: str = "") -> set[str]:
        """Every metadata key (:func:`is_metadata`) starting with ``prefix``."""
        return {k for k in await self.keys(prefix) if is_metadata(k)}


class DictIndex(VersionIndex):
    """An index held whole in memory: layout 2's merged manifests, or an empty state."""

    def __init__(self, index: dict[str, Location]) -> None:
        self.index = index
        self.count = len(index)

    async def get(self, key: str) -> Location | None:
        return self.index.get(key)

    def known(self, key: str) -> Location | None:
        return self.index.get(key)

    async def walk(self, prefix: str = "") -> AsyncIterator[list[tuple[str, Location]]]:
        yield sorted((k, v) for k, v in self.index.items() if k.startswith(prefix))

    async def keys(self, prefix: str = "") -> set[str]:
        # Straight from the dict: no sorted walk to build a set from.
        return {k for k in self.index if k.startswith(prefix)}


class ShardedIndex(VersionIndex):
    """A layout 3 index: a root in memory, its shards read on first use."""

    def __init__(self, root: IndexRoot, reader: ShardReader) -> None:
        self.root = root
        self.count = root.count
        self._reader = reader
        self._loading: dict[tuple[int, str], asyncio.Future[Shard]] = {}
        #: The shards used last, by number (a few): reads of neighbouring keys skip the LRU.
        self._recent: dict[int, Shard] = {}

    def __repr__(self) -> str:
        return f"ShardedIndex({self.root.version}, {self.count} keys, {self.root.shards} shards)"

    def _held(self, i: int) -> Shard | None:
        root = self.root
        if root.inline is not None:
            return root.inline
        held = self._recent.get(i)
        if held is not None:
            return held
        held = SHARDS.get((self._reader.scope, root.name(i)))
        if held is not None:
            root.placed(i, held)
            if len(self._recent) >= _RECENT:
                self._recent = {}  # replaced, not cleared: other threads may be reading it
            self._recent[i] = held
        return held

    async def shard(self, i: int) -> Shard:
        """Shard ``i``, read once by concurrent callers in one event loop."""
        held = self._held(i)
        if held is not None:
            return held
        name = self.root.name(i)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # run to its end in the calling thread: no one to share with
            return self.root.placed(i, await self._read(name))
        key = (id(loop), name)  # a future belongs to its loop
        loading = self._loading.get(key)
        if loading is None:
            loading = self._loading[key] = asyncio.ensure_future(self._read(name))
            loading.add_done_callback(lambda _: self._loading.pop(key, None))
        return self.root.placed(i, await asyncio.shield(loading))

    async def _read(self, name: str) -> Shard:
        shard = await self._reader.read_shard(name)
        SHARDS.put((self._reader.scope, name), shard)
        return shard

    async def get(self, key: str) -> Location | None:
        found = self.known(key)
        if found is not UNKNOWN:
            return found
        return self._found(await self.shard(self.root.shard_of(key)), key)

    def _found(self, shard: Shard, key: str) -> Location | None:
        """``key`` looked up in its shard: a miss is an answer once the shards are known to be
        in order (checked on the first miss)."""
        found = shard.get(key)
        if found is None:
            self.root.check()
        return found

    def known(self, key: str) -> Location | None:
        root = self.root
        if is_metadata(key):
            return root.meta.get(key)
        if root.data_count == 0:
            return None
        held = self._held(root.shard_of(key))
        return UNKNOWN if held is None else self._found(held, key)

    async def metadata(self, prefix: str = "") -> set[str]:
        return {k for k, _ in self.root.meta.items(prefix)}

    async def walk(self, prefix: str = "") -> AsyncIterator[list[tuple[str, Location]]]:
        meta = list(self.root.meta.items(prefix))
        if meta:
            yield meta
        if self.root.data_count == 0:
            return
        self.root.check()
        if self.root.inline is not None:
            yield list(self.root.inline.items(prefix))
            return
        # The next shard is read while this one is handed out.
        shards = self.root.shards_under(prefix)
        ahead: asyncio.Future[Shard] | None = None
        for n, i in enumerate(shards):
            current = ahead if ahead is not None else asyncio.ensure_future(self.shard(i))
            ahead = asyncio.ensure_future(self.shard(i + 1)) if n + 1 < len(shards) else None
            items = list((await current).items(prefix))
            if items:
                yield items


#: Shards written at once by a derivation.
_WRITES = 64


async def derive_root(
    version: str,
    parent: VersionIndex | None,
    changes: Mapping[str, Location | None],
    write_shard: Callable[[str, Shard], Awaitable[None]],
    *,
    by_writer: bool = True,
) -> IndexRoot:
    """The root of ``version``: the state of ``parent`` (``None``: empty) with ``changes``
    (key -> new location, ``None`` for a deletion) applied. Shards that hold no changed key
    are the parent's; each shard holding one is rewritten (cut again into shards of
    :data:`SHARD_KEYS` if it grew past twice that) and stored by ``await write_shard(name,
    shard)``. New shards are named ``<version>-<n>``, numbered in key order (layout 4), or,
    without ``by_writer``, by the hash of their content (layout 3). Deterministic: the same
    inputs give the same root, and the same shards.
    """
    meta_changes = {k: v for k, v in changes.items() if is_metadata(k)}
    changes = {k: v for k, v in changes.items() if not is_metadata(k)}
    sharded = isinstance(parent, ShardedIndex) and parent.root.inline is None
    meta: dict[str, Location] = {}
    data: dict[str, Location] = {}
    if isinstance(parent, ShardedIndex):
        meta = dict(parent.root.meta.items())
        if parent.root.inline is not None:
            data = dict(parent.root.inline.items())
    elif parent is not None:
        for key, location in (await parent.mapping()).items():
            (meta if is_metadata(key) else data)[key] = location
    _apply(meta, meta_changes)
    held = Shard.from_items(sorted(meta.items()))
    writes: list[tuple[str, Shard]] = []

    def new(shard: Shard) -> tuple[str, int]:
        """The ref of a new shard, to be written."""
        ref = (version, len(writes)) if by_writer else (shard_name(shard.to_dict()), -1)
        writes.append((f"{version}-{ref[1]}" if by_writer else ref[0], shard))
        return ref

    firsts: list[str] = []
    refs: list[tuple[str, int]] = []
    if not sharded:
        _apply(data, changes)
        items = sorted(data.items())
        if len(items) <= INLINE_KEYS:
            return IndexRoot(version, len(held) + len(items), held, Shard.from_items(items), [], "")
        count = len(items)
        for j in range(0, len(items), SHARD_KEYS):
            cut = Shard.from_items(items[j : j + SHARD_KEYS])
            firsts.append(cut.keys[0])
            refs.append(new(cut))
    else:
        assert isinstance(parent, ShardedIndex)
        count = await _rewrite(parent, changes, firsts, refs, new)
    for start in range(0, len(writes), _WRITES):
        await asyncio.gather(*(write_shard(n, c) for n, c in writes[start : start + _WRITES]))
    return IndexRoot.sharded(version, len(held) + count, held, firsts, refs)


async def _rewrite(
    parent: ShardedIndex,
    changes: Mapping[str, Location | None],
    firsts: list[str],
    refs: list[tuple[str, int]],
    new: Callable[[Shard], tuple[str, int]],
) -> int:
    """Append the shards of ``parent`` with ``changes`` applied to ``firsts`` and ``refs``:
    the parent's own where no key changed, new ones (``new(shard)``) where one did; return the
    number of keys."""
    root = parent.root
    root.check()  # the new root keeps the parent's order
    touched: dict[int, dict[str, Location | None]] = {}
    for key, change in changes.items():
        touched.setdefault(root.shard_of(key), {})[key] = change
    shards = dict(
        zip(touched, await asyncio.gather(*(parent.shard(i) for i in touched)), strict=True)
    )
    count = root.data_count
    for i in range(root.shards):
        if i not in touched:
            firsts.append(root.firsts[i])
            refs.append(root.ref(i))
            continue
        shard = shards[i]
        count -= len(shard)
        changed = shard.apply(touched[i])
        count += len(changed)
        if len(changed) <= 2 * SHARD_KEYS:
            if len(changed):  # (a shard whose keys were all deleted is dropped)
                firsts.append(changed.keys[0])
                refs.append(new(changed))
            continue
        items = list(changed.items())
        for j in range(0, len(items), SHARD_KEYS):
            cut = Shard.from_items(items[j : j + SHARD_KEYS])
            firsts.append(cut.keys[0])
            refs.append(new(cut))
    return count


def _apply(state: dict[str, Location], changes: Mapping[str, Location | None]) -> None:
    for key, location in changes.items():
        if location is None:
            state.pop(key, None)
        else:
            state[key] = location
