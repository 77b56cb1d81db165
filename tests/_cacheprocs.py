"""Targets for the cache tests that run in other processes (importable, so 'spawn' can start
them)."""

from __future__ import annotations

from typing import Any


def fill(
    directory: str, size_limit: int, keys: list[str], barrier: Any, results: Any, i: int
) -> None:
    """Put ``payload(key)`` under every key into the cache folder (after the barrier), then
    read each back; report ``(i, problems)``: keys read back with other bytes."""
    from hubzarr.cache import ChunkCache

    cache = ChunkCache(directory, size_limit=size_limit, memory_limit=0)
    barrier.wait(timeout=120)
    problems = []
    for key in keys:
        cache.put(key, payload(key))
        got = cache.get(key)
        if got is not None and got != payload(key):
            problems.append(key)
    cache.close()
    results.put((i, problems))


def payload(key: str, size: int = 48 * 1024) -> bytes:
    """The bytes cached under ``key``: the same in every process, large enough to be a file."""
    head = key.encode()
    return (head * (size // len(head) + 1))[:size]


def write_and_tag(root: str, cache_dir: str, value: int, tag: str | None) -> None:
    """From another process with the cache on: write ``value`` everywhere at the head of
    ``c/fresh``, then tag it ``tag`` (if any)."""
    import numpy as np

    import hubzarr

    hub = hubzarr.Hub(root, cache=cache_dir)
    arr = hub.load_array("c/fresh")
    arr[:] = np.full(arr.shape, value, dtype=arr.dtype)
    if tag is not None:
        hub.tag("c/fresh", tag)


def fill_in_child(cache: Any) -> None:
    """In a forked child: queue a fill on the parent's cache object and wait for it."""
    cache.put_later("child", payload("child"))
    cache.settle()
    assert cache.get("child") == payload("child")


def sum_in_child(root: str, name: str) -> float:
    """The sum of ``name`` read in bulk (``arr[:]``), in this (forked) process."""
    import hubzarr

    return float(hubzarr.Hub(root).load_array(name)[:].sum())


def read_tag_after(
    root: str, options: dict[str, Any], cache: str, name: str, barrier: Any, results: Any
) -> None:
    """Open ``name`` through the cache folder ``cache``, wait at the barrier with the others,
    read it whole, and report its sum."""
    import hubzarr

    arr = hubzarr.Hub(root, storage_options=options, cache=cache).load_array(name)
    barrier.wait(timeout=120)
    results.put(float(arr[:].sum()))


def claim_and_hold(directory: str, key: str, conn: Any) -> None:
    """Claim ``key`` in the cache folder, say so, and hold the claim until killed."""
    from hubzarr.cache import ChunkCache

    claim = ChunkCache(directory, size_limit=2**30).claim(key)
    conn.send(claim is not None)
    conn.recv()  # never answered: the test kills this process
