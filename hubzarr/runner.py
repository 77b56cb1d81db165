"""Running hubzarr's coroutines from synchronous code, on one event loop thread.

zarr's ``sync`` and fsspec's do the same, but importing either costs 150 to 450 ms, which the
quick commands (``hub ls``, ``hub log``, ``hub tag``) would spend on nothing else: operations on
a repository's records run here, and so do the bulk readers' chunk fetches. One daemon thread
runs one event loop for the process (a new one in a forked child, whose copy of the thread does
not exist); a call from inside that loop, which would wait for itself forever, is refused.

A session's writes and seal checks stay on zarr's loop (they share futures between them, which
belong to one loop); reads and repository records create nothing tied to a loop, so they may
run here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run", "submit"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _forget() -> None:
    global _loop
    _loop = None


os.register_at_fork(after_in_child=_forget)


def _the_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="hubzarr", daemon=True).start()
            _loop = loop
        return _loop


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end on hubzarr's event loop thread and return its result.

    Raises
    ------
    RuntimeError
        If called from that loop itself (await the coroutine there instead).
    """
    loop = _the_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coro.close()
        raise RuntimeError(
            "hubzarr's synchronous API was called from hubzarr's own event loop; await the "
            "coroutine instead"
        )
    return asyncio.run_coroutine_threadsafe(coro, loop).result()


def submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Start ``coro`` on hubzarr's event loop thread; return a future of its result."""
    return asyncio.run_coroutine_threadsafe(coro, _the_loop())
