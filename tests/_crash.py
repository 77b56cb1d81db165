"""The crash-test workload, run in a spawned process that SIGKILLs itself at a chosen point.

:func:`workload` opens a :class:`hubzarr.Hub`, creates ``crash/arr`` and runs the operations of
:func:`script` (writes, tags, branches). After each operation returns it appends an
acknowledgement, one JSON line, to an ack file and fsyncs it before starting the next one: the
parent then knows exactly what was acknowledged when the process died.

Kill points are counted, not timed. ``hook="call"`` wraps the hub's storage (every storage
created through ``open_storage``) and counts every call of a ``Storage`` method; the process
kills itself just before the ``kill_at``-th call starts (``when="before"``) or just after it
returned or raised (``when="after"``). ``hook="rename"`` counts the renames and hard links that
publish a local write (``os.replace`` and ``os.link`` in :mod:`hubzarr.storage`): the process
dies with the temporary file written but not yet published, or just after publishing it.
``only``, a regular expression, restricts the count to the matching events (``"create "``
followed by a path, ``"link "`` and a path, ...). A ``kill_at`` larger than the number of
counted events lets the workload finish; its last ack record, ``{"op": "done", "log":
[...]}``, names each event.
"""

from __future__ import annotations

import inspect
import json
import os
import random
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

NAME = "crash/arr"
SHAPE = (16, 16)
CHUNKS = (4, 4)
DTYPE = "int64"

T = TypeVar("T")


# -- the script and its model ------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    """One operation of the workload.

    ``kind`` is ``create``, ``write`` (``value`` into ``region`` of ``branch``), ``tag``
    (``tag`` at ``branch``) or ``branch`` (``new_branch`` from ``tag``).
    """

    kind: str
    branch: str = ""
    region: tuple[int, int, int, int] = (0, 0, 0, 0)
    value: int = 0
    tag: str = ""
    new_branch: str = ""

    @property
    def selection(self) -> tuple[slice, slice]:
        r0, r1, c0, c1 = self.region
        return slice(r0, r1), slice(c0, c1)

    def describe(self) -> str:
        if self.kind == "write":
            return f"write {self.value} into {list(self.region)} of {self.branch}"
        if self.kind == "tag":
            return f"tag {self.tag} at {self.branch}"
        if self.kind == "branch":
            return f"branch {self.new_branch} from {self.tag}"
        if self.kind == "revert":
            return f"revert {self.branch} to {self.tag}"
        return "create"


def _span(rng: random.Random, size: int) -> tuple[int, int]:
    length = rng.randint(1, 7)
    start = rng.randint(0, size - length)
    return start, start + length


def script(seed: int, n_ops: int = 7) -> list[Op]:
    """Return the workload's operations for ``seed``: create, then ``n_ops`` more, at least a
    write, a tag, a branch from that tag and a write on it, and last a revert of a branch to
    a tag (the one step that publishes a whole prepared state)."""
    rng = random.Random(seed)
    kinds = ["write", "tag", "branch", "write"]
    kinds += [rng.choice(["write", "write", "tag", "branch"]) for _ in range(n_ops - len(kinds))]
    kinds.append("revert")
    ops = [Op("create")]
    branches, tags = ["main"], []
    for k, kind in enumerate(kinds, start=1):
        if kind == "write":
            # The write after the first branch goes to that branch.
            branch = branches[-1] if k == 4 else rng.choice(branches)
            region = (*_span(rng, SHAPE[0]), *_span(rng, SHAPE[1]))
            ops.append(Op("write", branch=branch, region=region, value=1000 + k))
        elif kind == "tag":
            tags.append(f"t{k}")
            ops.append(Op("tag", branch=rng.choice(branches), tag=tags[-1]))
        elif kind == "revert":
            ops.append(Op("revert", branch=rng.choice(branches), tag=rng.choice(tags)))
        else:
            branches.append(f"b{k}")
            ops.append(Op("branch", tag=rng.choice(tags), new_branch=branches[-1]))
    return ops


@dataclass
class Model:
    """What every branch head and tag holds, applying operations in order."""

    heads: dict[str, npt.NDArray[np.int64]]
    tags: dict[str, npt.NDArray[np.int64]]

    @classmethod
    def after(cls, ops: Sequence[Op]) -> Model:
        model = cls({}, {})
        for op in ops:
            model.apply(op)
        return model

    def copy(self) -> Model:
        return Model(
            {b: a.copy() for b, a in self.heads.items()},
            {t: a.copy() for t, a in self.tags.items()},
        )

    def apply(self, op: Op) -> None:
        if op.kind == "create":
            self.heads["main"] = np.zeros(SHAPE, dtype=DTYPE)
        elif op.kind == "write":
            self.heads[op.branch][op.selection] = op.value
        elif op.kind == "tag":
            self.tags[op.tag] = self.heads[op.branch].copy()
        elif op.kind == "revert":
            self.heads[op.branch] = self.tags[op.tag].copy()
        else:
            self.heads[op.new_branch] = self.tags[op.tag].copy()


# -- kill points -------------------------------------------------------------------------


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillSwitch:
    """Counts events (from any thread) and SIGKILLs the process at the ``at``-th one, counting
    only the events that match the regular expression ``only`` if one is given.

    ``log`` names each event (the call and its storage path), in order, so that the parent can
    aim kill points at the steps of a seal: how many events a run has varies a little (writes
    share seal checks), the order of a seal's steps does not.
    """

    def __init__(self, when: str, at: int, only: str = "") -> None:
        self.when = when
        self.at = at
        self.only = re.compile(only)
        self.log: list[str] = []
        self._matched = 0
        self._lock = threading.Lock()

    def before(self, what: str) -> int:
        """Count an event about to happen; die first if it is the chosen one."""
        with self._lock:
            self.log.append(what)
            n = 0
            if self.only.search(what):
                self._matched += 1
                n = self._matched
        if self.when == "before" and n == self.at:
            _die()
        return n

    def after(self, n: int) -> None:
        """Event ``n`` has happened; die now if it was the chosen one."""
        if self.when == "after" and n == self.at:
            _die()

    def around(self, what: str, call: Callable[[], T]) -> T:
        n = self.before(what)
        try:
            return call()
        finally:
            self.after(n)


def _killing_storage_class() -> type[Any]:
    """A ``Storage`` that counts every call of its inner storage's methods: each coroutine
    method the ``Storage`` interface declares, whatever that set is today."""
    from hubzarr.storage import Storage

    def counted(name: str) -> Callable[..., Any]:
        async def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            n = self._switch.before(f"{name} {args[0] if args else ''}")
            try:
                return await getattr(self._inner, name)(*args, **kwargs)
            finally:
                self._switch.after(n)

        method.__name__ = name
        return method

    def __init__(self: Any, inner: Any, switch: KillSwitch) -> None:  # noqa: N807
        self._inner = inner
        self._switch = switch
        self.url = inner.url
        self.read_only = inner.read_only

    def __getattr__(self: Any, name: str) -> Any:  # noqa: N807
        return getattr(self._inner, name)

    namespace: dict[str, Any] = {
        name: counted(name)
        for name, function in vars(Storage).items()
        if not name.startswith("_") and inspect.iscoroutinefunction(function)
    }
    namespace.update(__init__=__init__, __getattr__=__getattr__)
    return type("KillingStorage", (Storage,), namespace)


class _KillingOs:
    """Stands in for :mod:`os` inside :mod:`hubzarr.storage`: counts renames and hard links."""

    def __init__(self, switch: KillSwitch) -> None:
        self._switch = switch

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def replace(self, src: Any, dst: Any, **kwargs: Any) -> None:
        where = _full(dst, kwargs.get("dst_dir_fd"))
        self._switch.around(f"replace {where}", lambda: os.replace(src, dst, **kwargs))

    def link(self, src: Any, dst: Any, **kwargs: Any) -> None:
        where = _full(dst, kwargs.get("dst_dir_fd"))
        self._switch.around(f"link {where}", lambda: os.link(src, dst, **kwargs))


def _full(name: Any, folder: int | None) -> str:
    """The path of ``name`` in the folder open as ``folder`` (storage works on descriptors)."""
    if folder is None:
        return str(name)
    return os.path.join(os.readlink(f"/proc/self/fd/{folder}"), str(name))


def install(hook: str, switch: KillSwitch) -> None:
    """Put the kill switch under every storage hubzarr opens (``call``), or under the renames
    and links of local writes (``rename``)."""
    import hubzarr.storage

    if hook == "rename":
        hubzarr.storage.os = _KillingOs(switch)  # type: ignore[attr-defined,assignment]
        return
    original = hubzarr.storage.open_storage
    killing = _killing_storage_class()

    def open_storage(root: str, storage_options: dict[str, Any] | None = None) -> Any:
        return killing(original(root, storage_options), switch)

    # Every module that imported the function by name gets the wrapper too.
    for name, module in list(sys.modules.items()):
        if name.startswith("hubzarr") and getattr(module, "open_storage", None) is original:
            module.open_storage = open_storage  # type: ignore[attr-defined]


# -- the child process -------------------------------------------------------------------


def _perform(hub: Any, arrays: dict[str, Any], op: Op) -> None:
    from hubzarr.errors import NotFoundError

    if op.kind == "create":
        try:
            arrays["main"] = hub.load(NAME)
        except NotFoundError:
            arrays["main"] = hub.array(SHAPE, NAME, dtype=DTYPE, chunks=CHUNKS, fill_value=0)
    elif op.kind == "write":
        if op.branch not in arrays:
            arrays[op.branch] = hub.load(f"{NAME}:{op.branch}")
        arrays[op.branch][op.selection] = op.value
    elif op.kind == "tag":
        hub.tag(f"{NAME}:{op.branch}", op.tag)
    elif op.kind == "revert":
        hub.revert(f"{NAME}:{op.branch}", op.tag)
    else:
        hub.branch(f"{NAME}:{op.tag}", op.new_branch)


def workload(
    root: str,
    options: dict[str, Any],
    seed: int,
    hook: str,
    when: str,
    kill_at: int,
    only: str,
    ack_path: str,
) -> None:
    """Run :func:`script` (``seed``) on ``root``, acknowledging each operation in ``ack_path``;
    SIGKILL this process at the ``kill_at``-th event of ``hook`` (``when`` before or after)
    that matches the regular expression ``only``."""
    import numcodecs.blosc

    import hubzarr

    # blosc's process-wide mutex is a multiprocessing lock: a named semaphore registered with
    # the test runner's resource tracker, which a SIGKILLed process cannot unregister (the
    # tracker then warns at exit). This process has no children: a thread lock does the job.
    numcodecs.blosc._MUTEX = threading.Lock()
    numcodecs.blosc._MUTEX_IS_INIT = True
    switch = KillSwitch(when, kill_at, only)
    install(hook, switch)
    hub = hubzarr.Hub(root, storage_options=options)
    model = Model({}, {})
    arrays: dict[str, Any] = {}
    with open(ack_path, "a", encoding="utf-8") as ack:

        def acknowledge(record: dict[str, Any]) -> None:
            ack.write(json.dumps(record) + "\n")
            ack.flush()
            os.fsync(ack.fileno())

        for i, op in enumerate(script(seed)):
            _perform(hub, arrays, op)
            model.apply(op)
            record: dict[str, Any] = {"i": i, "op": op.kind, "what": op.describe()}
            if op.kind == "write":
                record.update(branch=op.branch, region=list(op.region), value=op.value)
            elif op.kind == "tag":
                record.update(branch=op.branch, tag=op.tag, expected=model.tags[op.tag].tolist())
            elif op.kind == "branch":
                record.update(tag=op.tag, branch=op.new_branch)
            elif op.kind == "revert":
                record.update(branch=op.branch, tag=op.tag)
            acknowledge(record)
        acknowledge({"op": "done", "log": switch.log})
