"""A storage wrapper that counts the primitives called through it, for cost assertions.

It is installed the way any wrapper is (a cache, a fault injector): ``Hub(root,
storage=...)``, so every store, array and group that hub opens goes through it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import hubzarr
from hubzarr.storage import Parts, Storage, open_storage


class CountingStorage(Storage):
    """Delegate to ``inner`` and count calls per primitive, and paths per primitive."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.url = inner.url
        self.read_only = inner.read_only
        self.clock_slack_s = inner.clock_slack_s
        self.reclaims_superseded = inner.reclaims_superseded
        self.calls: Counter[str] = Counter()
        self.paths: list[tuple[str, str]] = []

    def reset(self) -> None:
        self.calls.clear()
        self.paths.clear()

    def _note(self, op: str, path: str) -> None:
        self.calls[op] += 1
        self.paths.append((op, path))

    async def read(self, path: str) -> bytes | None:
        self._note("read", path)
        return await self.inner.read(path)

    async def size(self, path: str) -> int | None:
        self._note("size", path)
        return await self.inner.size(path)

    async def write(self, path: str, data: Parts, *, durable: bool = False) -> None:
        self._note("write", path)
        await self.inner.write(path, data, durable=durable)

    async def create(
        self, path: str, data: Parts, *, durable: bool = True, unique: bool = True
    ) -> None:
        self._note("create", path)
        await self.inner.create(path, data, durable=durable, unique=unique)

    async def empty(self, path: str) -> None:
        self._note("empty", path)
        await self.inner.empty(path)

    async def delete(self, path: str) -> None:
        self._note("delete", path)
        await self.inner.delete(path)

    async def delete_prefix(self, prefix: str) -> None:
        self._note("delete_prefix", prefix)
        await self.inner.delete_prefix(prefix)

    async def list(self, prefix: str) -> dict[str, int]:
        self._note("list", prefix)
        return await self.inner.list(prefix)

    async def list_dir(self, prefix: str) -> list[str]:
        self._note("list_dir", prefix)
        return await self.inner.list_dir(prefix)

    async def list_detailed(
        self, prefix: str, *, temporaries: bool = False
    ) -> dict[str, tuple[int, float]]:
        self._note("list_detailed", prefix)
        return await self.inner.list_detailed(prefix, temporaries=temporaries)


def counting_hub(
    root: str, options: dict[str, Any] | None = None
) -> tuple[hubzarr.Hub, CountingStorage]:
    """A hub on ``root`` whose storage counts every primitive called, and the counter."""
    counter = CountingStorage(open_storage(root, options))
    return hubzarr.Hub(root, options, storage=counter), counter
