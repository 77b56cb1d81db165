"""Damage at random: every stored record and object of repositories with history is mutated
(truncated, bit-flipped, swapped with another, copied over another, nested deeply, deleted),
and every public operation must then return the right data or raise a ``HubError`` within a
time bound: never a raw exception, a hang, or wrong data."""

from __future__ import annotations

import json
import random
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import hubzarr
from hubzarr import frame

ARRAY, GROUP = "fuzz/arr", "fuzz/grp"
#: Mutations tried, over every kind of damage and every kind of file.
MUTATIONS = 240
#: No operation on a small damaged repository may take longer.
TIME_BOUND_S = 60.0
KINDS = ("truncate", "flip", "swap", "duplicate", "nest", "delete")


def _build(root: Path) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Repositories with tags, branches, rewrites and deletions; return what each ref holds,
    and ``{open head version: "repository:branch"}``."""
    hub = hubzarr.Hub(str(root))
    arr = hub.array((8, 4), name=ARRAY, dtype="int32", chunks=(2, 4))
    arr[:] = np.arange(32, dtype="int32").reshape(8, 4)
    hub.tag(ARRAY, "v1")
    arr[0:2] = -1
    arr[3] = 7  # a partial rewrite: generations
    arr[6:8] = 0  # chunks equal to the fill value: tombstones
    hub.tag(ARRAY, "v2", message="second")
    hub.branch(f"{ARRAY}:v1", "dev")
    dev = hub.load(f"{ARRAY}:dev")
    assert isinstance(dev, hubzarr.HubArray)
    dev[4:6] = 100
    arr[2] = 3
    group = hub.group(GROUP)
    group.create_array("a", (6,), dtype="float64", chunks=(2,))[:] = np.arange(6.0)
    group.create_array("b/c", (4,), dtype="int8", chunks=(4,))[:] = 5
    group.attrs["title"] = "fuzz"
    hub.tag(GROUP, "g1")
    del group["b"]
    expected: dict[str, dict[str, Any]] = {ARRAY: {}, GROUP: {}}
    for ref in ("main", "v1", "v2", "dev"):
        expected[ARRAY][ref] = np.asarray(hub.load(f"{ARRAY}:{ref}")[:])
    for ref in ("main", "g1"):
        opened = hub.load(f"{GROUP}:{ref}")
        assert isinstance(opened, hubzarr.HubGroup)
        expected[GROUP][ref] = {k: np.asarray(a[:]) for k, a in _arrays(opened)}
    heads = {hub.load(f"{n}:{b}").version: f"{n}:{b}" for n, b in _BRANCHES}
    return expected, heads


_BRANCHES = ((ARRAY, "main"), (ARRAY, "dev"), (GROUP, "main"))


def _arrays(group: hubzarr.HubGroup) -> list[tuple[str, hubzarr.HubArray]]:
    found = list(group.arrays())
    for key, sub in group.groups():
        found += [(f"{key}/{k}", a) for k, a in _arrays(sub)]
    return sorted(found)


def _mutate(files: list[Path], rng: random.Random) -> tuple[str, list[Path]]:
    """Damage one file (two, for swap and duplicate); return what was done, and the files
    that were deleted or replaced by a tombstone."""
    kind = rng.choice(KINDS)
    target = rng.choice(files)
    raw = target.read_bytes()
    if kind == "truncate":
        target.write_bytes(raw[: rng.randrange(len(raw))] if raw else b"")
    elif kind == "flip":
        if raw:
            at = rng.randrange(len(raw))
            target.write_bytes(
                raw[:at] + bytes([raw[at] ^ (1 << rng.randrange(8))]) + raw[at + 1 :]
            )
    elif kind in ("swap", "duplicate"):
        other = rng.choice([f for f in files if f != target])
        moved = other.read_bytes()
        target.write_bytes(moved)
        if kind == "swap":
            other.write_bytes(raw)
        tombstoned = [target] * (moved == frame.TOMBSTONE) + [other] * (raw == frame.TOMBSTONE)
        return f"{kind} {target} {other}", tombstoned if kind == "swap" else tombstoned[:1]
    elif kind == "nest":
        depth = rng.choice([50, 5_000, 200_000])
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and doc:
            field = rng.choice(sorted(doc))
            nested = "[" * depth + json.dumps(doc[field]) + "]" * depth
            others = {k: v for k, v in doc.items() if k != field}
            body = json.dumps(others)[:-1] + (", " if others else "") + f'"{field}": {nested}}}'
            target.write_bytes(body.encode())
        else:
            target.write_bytes(raw[:8] + b"[" * depth + b"]" * depth)
    else:
        target.unlink()
        return f"{kind} {target}", [target]
    return f"{kind} {target}", []


def _bounded(call: Callable[[], Any]) -> Any:
    """Run ``call`` in a daemon thread; a call still running after the bound is a hang."""
    done: Future[Any] = Future()

    def run() -> None:
        try:
            done.set_result(call())
        except BaseException as exc:
            done.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return done.result(timeout=TIME_BOUND_S)


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, dict):
        return (
            isinstance(got, dict)
            and sorted(got) == sorted(want)
            and all(_same(got[k], want[k]) for k in want)
        )
    if isinstance(got, tuple) and len(got) == 1:  # dask's compute() of one array
        got = got[0]
    if np.ndim(want) == 0:  # a reduction: summed in another order
        return bool(np.isclose(got, want, rtol=1e-12, atol=0))
    return bool(np.array_equal(np.asarray(got), np.asarray(want)))


def _operations(
    hub: hubzarr.Hub, expected: dict[str, dict[str, Any]], unknown: set[str]
) -> list[tuple[str, Any]]:
    """Every public operation, as (description, call returning (value, expected or None));
    the data of the branches in ``unknown`` is not compared."""
    ops: list[tuple[str, Any]] = []
    for ref, want in expected[ARRAY].items():
        name = f"{ARRAY}:{ref}"
        if name in unknown:
            want = None  # noqa: PLW2901
        row, mean = (None, None) if want is None else (want[3], want.mean())
        ops.append((f"read {name}", lambda n=name, w=want: (hub.load(n, mode="r")[:], w)))
        ops.append((f"row {name}", lambda n=name, w=row: (hub.load(n, mode="r")[3], w)))
        ops.append((f"mean {name}", lambda n=name, w=mean: (hub.load(n).mean(), w)))
        ops.append((f"dask {name}", lambda n=name, w=want: (hub.load(n).dask.compute(), w)))
        ops.append((f"verify {name}", lambda n=name: (hub.verify(n), None)))
        ops.append((f"log {name}", lambda n=name: (hub.log(n), None)))
    for ref, want in expected[GROUP].items():
        name = f"{GROUP}:{ref}"
        if name in unknown:
            want = None  # noqa: PLW2901

        def read_group(n: str = name, w: dict[str, Any] = want) -> tuple[Any, Any]:
            group = hub.load(n, mode="r")
            if not isinstance(group, hubzarr.HubGroup):
                return "not a group", w
            return {k: a[:] for k, a in _arrays(group)}, w

        ops.append((f"group {name}", read_group))
        ops.append((f"group keys {name}", lambda n=name: (hub.load(n).keys(), None)))  # type: ignore[union-attr]
        ops.append((f"group verify {name}", lambda n=name: (hub.verify(n), None)))
    ops += [
        ("ls", lambda: (hub.ls(), None)),
        ("gc", lambda: (hub.gc(ARRAY, grace=0, dry_run=True), None)),
        ("write", lambda: (hub.load(ARRAY).__setitem__((1, 1), 9), None)),  # type: ignore[union-attr]
        ("tag", lambda: (hub.tag(ARRAY, f"t{random.getrandbits(32)}"), None)),
        ("branch", lambda: (hub.branch(f"{ARRAY}:v2", f"b{random.getrandbits(32)}"), None)),
        ("attrs", lambda: (hub.load(GROUP).attrs.__setitem__("k", 1), None)),  # type: ignore[union-attr]
        ("delete tag", lambda: (hub.delete_tag(ARRAY, "v2"), None)),
    ]
    return ops


def _check(ops: list[tuple[str, Any]], what: str) -> list[str]:
    failures = []
    for label, op in ops:
        try:
            got, want = _bounded(op)
        except hubzarr.HubError:
            continue
        except TimeoutError:
            failures.append(f"{what}: {label} hung")
            continue
        except Exception as exc:
            failures.append(f"{what}: {label} raised {type(exc).__name__}: {exc!s:.200}")
            continue
        if want is not None and not _same(got, want):
            failures.append(f"{what}: {label} returned wrong data")
    return failures


@pytest.mark.parametrize("seed", range(4))
def test_damage_anywhere_is_an_error_or_the_right_data(tmp_path: Path, seed: int) -> None:
    pristine = tmp_path / "pristine"
    expected, heads = _build(pristine)
    rng = random.Random(seed)
    failures: list[str] = []
    runs = MUTATIONS // 4
    for i in range(runs):
        root = tmp_path / f"m{i}"
        shutil.copytree(pristine, root, symlinks=True)
        files = sorted(p for p in root.rglob("*") if p.is_file())
        what, gone = _mutate(files, rng)
        # What an open head holds is what its folder lists: an object deleted there, or
        # replaced by a tombstone, reads as a write that never happened (docs/design.md).
        unknown = {heads[v] for p in gone for v in heads if f"/data/{v}/" in str(p)}
        hub = hubzarr.Hub(str(root))
        failures += _check(_operations(hub, expected, unknown), what)
        shutil.rmtree(root, ignore_errors=True)
    assert not failures, "\n".join(failures[:40])
