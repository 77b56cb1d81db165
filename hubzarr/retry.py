"""Trying again: one backoff policy, for transient storage failures and for lost races.

Two loops in hubzarr repeat an operation. A storage call that failed transiently (a 5xx, a
throttling code, a dropped connection) is repeated a few times (:func:`retry_transient`, used
by :class:`hubzarr.storage.FsspecStorage`). A read-modify-write that lost a compare-and-swap
race to another writer (a partial-chunk write, creating a group member, changing attributes) is
repeated from fresh reads (:func:`compare_and_swap`). Both wait between tries by
:meth:`RetryPolicy.delay`: exponential backoff with full jitter, so that clients that collided
once do not collide again in lockstep.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from hubzarr.errors import ConflictError

__all__ = ["CONFLICTS", "TRANSIENT", "RetryPolicy", "compare_and_swap", "retry_transient"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often an operation is tried, and how long to wait between tries.

    Attributes
    ----------
    attempts : int
        Tries in all, the first included.
    first_delay_s : float
        The longest wait after the first failure, in seconds; it doubles with each failure ...
    max_delay_s : float
        ... up to this.
    """

    attempts: int
    first_delay_s: float
    max_delay_s: float

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` failed tries (at least 1): a random fraction of
        the backoff (full jitter)."""
        return random.uniform(0, min(self.max_delay_s, self.first_delay_s * 2 ** (failures - 1)))


#: Transient storage failures: four tries over about a second at most.
TRANSIENT = RetryPolicy(attempts=4, first_delay_s=0.1, max_delay_s=1.0)
#: Lost compare-and-swap races: many quick tries, as writers of one chunk seldom collide twice.
CONFLICTS = RetryPolicy(attempts=64, first_delay_s=0.002, max_delay_s=0.25)


async def retry_transient(
    call: Callable[[], Awaitable[T]],
    is_transient: Callable[[BaseException], bool],
    policy: RetryPolicy = TRANSIENT,
) -> T:
    """Await ``call()``; while it raises an exception that ``is_transient``, try again after
    :meth:`RetryPolicy.delay`, up to ``policy.attempts`` tries; then let the last one out."""
    for failures in range(1, policy.attempts + 1):
        try:
            return await call()
        except Exception as exc:
            if failures == policy.attempts or not is_transient(exc):
                raise
        await asyncio.sleep(policy.delay(failures))
    raise AssertionError("unreachable")


async def compare_and_swap(
    attempt: Callable[[], Awaitable[T]],
    *,
    exhausted: Callable[[], Exception],
    before_retry: Callable[[], Awaitable[None]] | None = None,
    policy: RetryPolicy = CONFLICTS,
) -> T:
    """Await ``attempt()`` until it does not raise :class:`~hubzarr.errors.ConflictError`.

    ``attempt`` reads what it changes and writes under
    :func:`hubzarr.session.conditional_writes`, so it raises ``ConflictError`` when another
    writer (or a seal) got there between its read and its write; it must be safe to repeat.
    Between tries this waits (:meth:`RetryPolicy.delay`) and awaits ``before_retry()``, if
    given (which catches up with the branch's head); after ``policy.attempts`` lost races it raises
    ``exhausted()``.
    """
    for failures in range(1, policy.attempts + 1):
        try:
            return await attempt()
        except ConflictError:
            if failures == policy.attempts:
                break
        await asyncio.sleep(policy.delay(failures))
        if before_retry is not None:
            await before_retry()
    raise exhausted()
