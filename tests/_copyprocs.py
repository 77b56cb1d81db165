"""Killed copies: :func:`kill_copy` runs ``hubzarr.copy`` in a child process with a kill switch
under every storage it opens, which writes the events it counted (if it was not killed) to a
file."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import _crash


def copy_until_killed(
    src: str,
    dst: str,
    root: str,
    when: str,
    at: int,
    only: str,
    log_path: str,
    tag: str | None = None,
) -> None:
    """``hubzarr.copy(src, dst, root=root, tag=tag)``, SIGKILLed at the ``at``-th event
    matching ``only``; the event log is written at the end."""
    switch = _crash.KillSwitch(when, at, only)
    _crash.install("call", switch)
    import hubzarr

    hubzarr.copy(src, dst, root=root, tag=tag)
    Path(log_path).write_text(json.dumps(switch.log), encoding="utf-8")


def kill_copy(
    src: str, dst: str, root: str, when: str, at: int, log: Path, tag: str | None = None
) -> list[str] | None:
    """Run ``hubzarr.copy`` in a child SIGKILLed at the ``at``-th storage write; return the
    events it counted if it finished."""
    context = multiprocessing.get_context("spawn")
    only = r"^(create|create_copy|write) "
    child = context.Process(
        target=copy_until_killed,
        args=(src, dst, root, when, at, only, str(log), tag),
    )
    child.start()
    child.join(timeout=120)
    assert child.exitcode is not None, "the copy hung"
    return json.loads(log.read_text()) if log.exists() else None
