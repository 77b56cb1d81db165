"""A storage wrapper that counts the primitives called through it, for cost assertions, and
the sequential round trips they took.

It is installed the way any wrapper is (a cache, a fault injector): ``Hub(root,
storage=...)``, so every store, array and group that hub opens goes through it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable
from typing import Any, TypeVar

import hubzarr
from hubzarr.storage import Parts, Storage, open_storage

T = TypeVar("T")


class CountingStorage(Storage):
    """Delegate to ``inner`` and count calls per primitive, and paths per primitive.

    ``rounds`` is the longest chain of calls each begun after the one before it ended: the
    sequential round trips on a network where every call takes one (calls run at once, as
    ``asyncio.gather`` runs them, all begin before any of them ends on a remote storage).
    """

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.url = inner.url
        self.read_only = inner.read_only
        self.clock_slack_s = inner.clock_slack_s
        self.reclaims_superseded = inner.reclaims_superseded
        self.calls: Counter[str] = Counter()
        self.paths: list[tuple[str, str]] = []
        self.rounds = 0

    def reset(self) -> None:
        self.calls.clear()
        self.paths.clear()
        self.rounds = 0

    async def _note(self, op: str, path: str, call: Awaitable[T]) -> T:
        self.calls[op] += 1
        self.paths.append((op, path))
        depth = self.rounds + 1  # after every call that had ended when this one began
        try:
            return await call
        finally:
            self.rounds = max(self.rounds, depth)

    async def read(self, path: str) -> bytes | None:
        return await self._note("read", path, self.inner.read(path))

    async def size(self, path: str) -> int | None:
        return await self._note("size", path, self.inner.size(path))

    async def write(self, path: str, data: Parts, *, durable: bool = False) -> None:
        await self._note("write", path, self.inner.write(path, data, durable=durable))

    async def create(
        self, path: str, data: Parts, *, durable: bool = True, unique: bool = True
    ) -> None:
        await self._note(
            "create", path, self.inner.create(path, data, durable=durable, unique=unique)
        )

    async def empty(self, path: str) -> None:
        await self._note("empty", path, self.inner.empty(path))

    async def delete(self, path: str) -> None:
        await self._note("delete", path, self.inner.delete(path))

    async def delete_prefix(self, prefix: str) -> None:
        await self._note("delete_prefix", prefix, self.inner.delete_prefix(prefix))

    async def list(self, prefix: str) -> dict[str, int]:
        return await self._note("list", prefix, self.inner.list(prefix))

    async def list_dir(self, prefix: str) -> list[str]:
        return await self._note("list_dir", prefix, self.inner.list_dir(prefix))

    async def list_detailed(
        self, prefix: str, *, temporaries: bool = False
    ) -> dict[str, tuple[int, float]]:
        return await self._note(
            "list_detailed", prefix, self.inner.list_detailed(prefix, temporaries=temporaries)
        )


def counting_hub(
    root: str, options: dict[str, Any] | None = None
) -> tuple[hubzarr.Hub, CountingStorage]:
    """A hub on ``root`` whose storage counts every primitive called, and the counter."""
    counter = CountingStorage(open_storage(root, options))
    return hubzarr.Hub(root, options, storage=counter), counter
