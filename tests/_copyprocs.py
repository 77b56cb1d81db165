"""The child process of the copy crash tests: run one copy with a kill switch under every
storage it opens, and write the events it counted (if it was not killed) to a file."""

from __future__ import annotations

import json
from pathlib import Path

import _crash


def copy_until_killed(
    src: str, dst: str, root: str, when: str, at: int, only: str, log_path: str
) -> None:
    """``hubzarr.copy(src, dst, root=root)``, SIGKILLed at the ``at``-th event matching
    ``only``; the event log is written at the end."""
    switch = _crash.KillSwitch(when, at, only)
    _crash.install("call", switch)
    import hubzarr

    hubzarr.copy(src, dst, root=root)
    Path(log_path).write_text(json.dumps(switch.log), encoding="utf-8")
