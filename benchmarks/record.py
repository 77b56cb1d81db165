"""A benchmark's committed results file: its timings, and what a reader needs to judge them.

Every script that feeds the documentation's plots writes ``benchmarks/results/<script>.json``
through :func:`write`: the script's own results, plus the machine (CPU model, cores, memory,
OS, Python, load average when the run ended), the date, the exact command line, the run's
wall time and the versions of the packages it compared. ``plots.py`` reads these files.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
#: When the script that imported this module started (its imports aside): the run's wall time.
STARTED = time.monotonic()


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux; what ``platform`` knows elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """The machine a run measured."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
    }


def command() -> str:
    """The command line that ran this script, as typed from the repository root."""
    return shlex.join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])


def versions(packages: Iterable[str]) -> dict[str, str | None]:
    """Installed versions of ``packages`` (None: not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for package in packages:
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


def _plain(value: Any) -> Any:
    """JSON for what ``json`` does not know: numpy values, sets and tuples, else the text."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, set | frozenset):
        return sorted(value)
    return str(value)


def write(
    script: str, result: dict[str, Any], packages: Iterable[str], *, plot: bool = False
) -> Path:
    """Write ``result`` with the machine, date, command and versions to
    ``benchmarks/results/<script>.json``; return its path. ``plot``: then draw the plots that
    read it (``plots.render_script``, into ``benchmarks/plots/``)."""
    record = {
        "machine": machine(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command(),
        "run_seconds": round(time.monotonic() - STARTED, 1),
        "versions": versions(packages),
        **result,
    }
    path = RESULTS / f"{script}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, default=_plain) + "\n")
    print(f"\nwrote {path}")
    if plot:
        import plots  # matplotlib only when asked: loader.py's environment may lack it

        plots.render_script(script)
    return path
