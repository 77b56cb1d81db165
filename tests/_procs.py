"""Targets for tests that run in other processes (importable, so 'spawn' can start them)."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable
from pathlib import Path
from typing import Any


def race(target: Callable[..., None], args: tuple[Any, ...], n: int) -> dict[int, str]:
    """Run ``target(*args, barrier, results, i)`` in ``n`` spawned processes released together
    by a barrier; return each one's reported outcome, ``{i: outcome}``."""
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, results, i)) for i in range(n)]
    for p in procs:
        p.start()
    outcomes = dict(results.get(timeout=120) for _ in range(n))
    for p in procs:
        p.join(timeout=60)
    return outcomes


def payload(worker: int, trial: int) -> bytes:
    """The bytes ``worker`` tries to create in ``trial``: distinct, and big enough to tear."""
    head = f"worker={worker} trial={trial};".encode()
    return head + bytes([worker]) * (64 * 1024 + worker)


def race_create(root: str, worker: int, trials: int, barrier: Any, results: Any) -> None:
    """Race ``create`` of ``race/<trial>`` against the other workers, once per trial.

    Reports ``(trial, worker, outcome)`` on ``results``; outcome is ``"won"``,
    ``"exists"`` or the repr of any other exception.
    """
    from hubzarr.errors import AlreadyExistsError
    from hubzarr.storage import LocalStorage

    storage = LocalStorage(Path(root))

    async def attempt(trial: int) -> str:
        try:
            await storage.create(f"race/{trial}", payload(worker, trial))
        except AlreadyExistsError:
            return "exists"
        except Exception as exc:  # reported, and failed, by the parent
            return repr(exc)
        return "won"

    for trial in range(trials):
        barrier.wait(timeout=120)
        results.put((trial, worker, asyncio.run(attempt(trial))))


def write_after_delete(root: str, opened: Any, deleted: Any, results: Any) -> None:
    """Open ``loss/data``, write, tell the parent, wait until it deleted the repository, then
    write and read again; report what each of those two did."""
    import hubzarr

    arr = hubzarr.Hub(root).load("loss/data")
    arr[0:2] = 5  # a write that succeeds, before the deletion
    opened.set()
    assert deleted.wait(timeout=120)
    outcome = []
    for attempt in (lambda: arr.__setitem__(slice(0, 4), 9), lambda: arr[:]):
        try:
            attempt()
            outcome.append("ok")
        except hubzarr.NotFoundError:
            outcome.append("NotFoundError")
        except Exception as exc:  # reported to, and failed by, the parent
            outcome.append(repr(exc))
    results.put(outcome)


def put_if_absent(
    root: str, options: dict[str, Any], keys: int, barrier: Any, results: Any, i: int
) -> None:
    """For each of ``keys`` keys, wait for the others, then ``set_if_not_exists`` a value of
    this process's own and read the key back; report what was read, or an error."""
    import traceback

    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    import hubzarr

    try:
        store = hubzarr.Hub(root, storage_options=options).store("race/keys", mode="r+")
        prototype = default_buffer_prototype()
        seen = []
        for k in range(keys):
            barrier.wait(timeout=120)
            mine = prototype.buffer.from_bytes(f"process {i} key {k}".encode())
            sync(store.set_if_not_exists(f"k{k}", mine))
            found = sync(store.get(f"k{k}", prototype))
            seen.append(None if found is None else found.to_bytes().decode())
        results.put((i, seen))
    except Exception:  # reported to, and failed by, the parent
        barrier.abort()
        results.put((i, traceback.format_exc()))
