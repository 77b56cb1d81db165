"""Spawned processes for tests/test_concurrency.py, and the workloads they run.

Every target has the signature ``target(*args, trials, barrier, results, i)``: process ``i`` runs
``trials`` trials, waits at the shared barrier before each (so that all processes start a trial
together), and puts ``(i, trial, outcome)`` on ``results`` after each. A failure inside a trial
is reported in the outcome (``outcome["error"]``, a traceback) and the process goes on with the
next trial, so the others are not left waiting at the barrier.

Times are ``time.monotonic_ns()``: CLOCK_MONOTONIC, one clock for every process of a machine.

Values written are unique to (writer, sequence number): ``value(w, seq)``; the arrays' fill
value ``FILL`` (0) is never written, so every element tells which write it shows.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

import hubzarr

#: The fill value of every array raced here; no write stores it.
FILL = 0
_SEQ_LIMIT = 1_000_000
#: How long a process waits for the others at a barrier before giving up.
_BARRIER_S = 120.0

# The array written and tagged by `writes_and_tags`: 64 elements in chunks of 4. The first
# SHARED elements are interleaved between the writers (element e belongs to writer e % W), so
# every chunk there is written piecewise by several processes at once; each later chunk
# belongs whole to one writer (chunk c to writer c % W), which writes it whole.
SIZE, CHUNK, SHARED = 64, 4, 32


def value(writer: int, seq: int) -> int:
    """The value that write ``seq`` of ``writer`` stores."""
    return (writer + 1) * _SEQ_LIMIT + seq + 1


def decode(stored: int) -> tuple[int, int] | None:
    """``(writer, seq)`` of the write that stored ``stored``, or ``None`` for the fill value."""
    if stored == FILL:
        return None
    writer, seq = divmod(int(stored), _SEQ_LIMIT)
    return writer - 1, seq - 1


def describe(stored: int) -> str:
    """``stored`` as a reader of a failure wants it: ``fill`` or ``process 1's write #7``."""
    found = decode(stored)
    if found is None:
        return "fill"
    return f"process {found[0]}'s write #{found[1]} ({stored})"


def owners(writers: int) -> np.ndarray:
    """The writer owning each element of the `writes_and_tags` array."""
    index = np.arange(SIZE)
    return np.where(index < SHARED, index % writers, (index // CHUNK) % writers)


def plan_writes(rng: np.random.Generator, writer: int, writers: int, n: int) -> list[slice]:
    """``n`` regions of ``writer``'s own elements: single elements and strided runs in the
    shared chunks (partial-chunk writes), and whole chunks of its own (full-chunk writes)."""
    shared = list(range(writer, SHARED, writers))
    chunks = [c for c in range(SHARED // CHUNK, SIZE // CHUNK) if c % writers == writer]
    plan = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.35:
            e = int(rng.choice(shared))
            plan.append(slice(e, e + 1, 1))
        elif kind < 0.7 or not chunks:
            start = int(rng.choice(shared))
            count = int(rng.integers(2, 6))
            plan.append(slice(start, min(start + writers * (count - 1) + 1, SHARED), writers))
        else:
            c = int(rng.choice(chunks))
            plan.append(slice(c * CHUNK, (c + 1) * CHUNK, 1))
    return plan


def run(target: Callable[..., None], args: tuple[Any, ...], n: int, trials: int) -> list[dict]:
    """Run ``target(*args, trials, barrier, results, i)`` in ``n`` spawned processes.

    Returns
    -------
    list of dict
        For each trial, ``{i: outcome}``.

    Raises
    ------
    AssertionError
        If a process dies, or the outcomes do not all arrive within 5 minutes.
    """
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [
        ctx.Process(target=target, args=(*args, trials, barrier, results, i)) for i in range(n)
    ]
    for p in procs:
        p.start()
    out: list[dict] = [{} for _ in range(trials)]
    deadline = time.monotonic() + 300
    complete = False
    try:
        for _ in range(n * trials):
            while True:
                try:
                    i, trial, outcome = results.get(timeout=1)
                    break
                except queue.Empty:
                    # Waiting on the queue, and noticing a process that died without a word.
                    dead = {k: p.exitcode for k, p in enumerate(procs) if p.exitcode}
                    assert not dead, f"processes died (index: exit code): {dead}"
                    assert time.monotonic() < deadline, f"no outcome in 5 minutes: {out}"
            out[trial][i] = outcome
        complete = True
    finally:
        for p in procs:
            p.join(timeout=60 if complete else 0)
            if p.is_alive():  # the others, stuck at a barrier, after one died
                p.kill()
                p.join()
    return out


def _failed(outcome: dict[str, Any]) -> None:
    outcome["error"] = traceback.format_exc()


# -- writes racing tags and branches -----------------------------------------------------------


def writes_and_tags(
    root: str,
    options: dict[str, Any],
    writers: int,
    writes: int,
    ops: int,
    seeds: list[int],
    trials: int,
    barrier: Any,
    results: Any,
    i: int,
) -> None:
    """Processes ``0 .. writers-1`` write their own elements of ``race/arr-<trial>``, ``writes``
    times each; the others take ``ops`` tags and branches of it. See test_concurrency.py."""
    hub = hubzarr.Hub(root, storage_options=options)
    _race_trials(
        hub,
        "race/arr-{}".format,
        lambda rng: plan_writes(rng, i, writers, writes),
        lambda repo, rng, log: _tag_and_branch(hub, repo, rng, i - writers, ops, log),
        writers,
        seeds,
        trials,
        barrier,
        results,
        i,
    )


def _race_trials(
    hub: hubzarr.Hub,
    repo_of: Callable[[int], str],
    plan: Callable[[np.random.Generator], list[slice]],
    other: Callable[[str, np.random.Generator, list[Any]], None],
    writers: int,
    seeds: list[int],
    trials: int,
    barrier: Any,
    results: Any,
    i: int,
) -> None:
    """Each trial of a race of writers and others on ``repo_of(trial)``, in process ``i``: a
    writer (``i`` < ``writers``) writes ``plan(rng)`` as :func:`_write` logs it, any other
    process runs ``other(repo, rng, log)``, all released together by the barrier; each
    outcome goes to ``results``."""
    for trial in range(trials):
        rng = np.random.default_rng([seeds[trial], i])
        repo = repo_of(trial)
        outcome: dict[str, Any] = {"log": []}
        arr = None
        try:
            arr = hub.load(repo) if i < writers else None
        except Exception:
            _failed(outcome)
        barrier.wait(timeout=_BARRIER_S)
        try:
            if "error" in outcome:
                pass
            elif arr is not None:
                _write(arr, plan(rng), i, outcome["log"])
            else:
                other(repo, rng, outcome["log"])
        except Exception:
            _failed(outcome)
        results.put((i, trial, outcome))


def _write(arr: hubzarr.HubArray, plan: list[slice], writer: int, log: list[Any]) -> None:
    """Write ``plan`` in order; each entry of ``log``: ``(seq, start, stop, step, value,
    started, returned)``."""
    for seq, region in enumerate(plan):
        v = value(writer, seq)
        started = time.monotonic_ns()
        if region.stop - region.start == 1 and seq % 2:
            arr[region.start] = v  # an integer index, as well as slices
        else:
            arr[region] = v
        log.append((seq, region.start, region.stop, region.step, v, started, time.monotonic_ns()))


def _tag_and_branch(
    hub: hubzarr.Hub, repo: str, rng: np.random.Generator, tagger: int, ops: int, log: list[Any]
) -> None:
    """Commit the branch, tag it, branch from it, or branch from this tagger's last tag,
    ``ops`` times.

    Each entry of ``log``: ``(ref, kind, source, version, start, end, content)``, where the
    content is read right after the ref was made (a commit's ref is its version id).
    """
    last_tag = None
    for k in range(ops):
        pick = rng.random()
        if pick < 0.25:
            kind, source = "commit", None
            start = time.monotonic_ns()
            version = ref = hub.commit(repo, f"tagger {tagger} op {k}")
        elif pick < 0.6 or (pick >= 0.85 and last_tag is None):
            ref, kind, source = f"t{tagger}-{k}", "tag", None
            start = time.monotonic_ns()
            version = hub.tag(repo, ref, message=f"tagger {tagger} op {k}")
        else:
            ref, kind = f"b{tagger}-{k}", "branch"
            source = None if pick < 0.85 else last_tag
            start = time.monotonic_ns()
            version = hub.branch(repo if source is None else f"{repo}:{source}", ref)
        end = time.monotonic_ns()
        content = hub.load(f"{repo}:{ref}", mode="r")[:]
        log.append((ref, kind, source, version, start, end, content.tolist()))
        if kind == "tag":
            last_tag = ref


# -- whole-chunk writes racing a revert -----------------------------------------------------


#: The value a merge race's branch ``side`` wrote into the chunks no writer touches.
SIDE = -77


def writes_and(
    operation: str,
    root: str,
    options: dict[str, Any],
    writers: int,
    writes: int,
    seeds: list[int],
    trials: int,
    barrier: Any,
    results: Any,
    i: int,
) -> None:
    """Processes ``0 .. writers-1`` write whole chunks of their own of a branch, ``writes``
    times each, while the last process runs ``operation`` on it once. Writers log as
    :func:`_write`; the last process logs ``(version, started, returned)``.

    - ``"revert"``: ``race/rev-<trial>``, chunk c is writer c % writers'; the branch is
      reverted to its tag ``base``.
    - ``"merge"``: ``race/mrg-<trial>``, chunk c is writer i's when c % (writers + 1) == i;
      the branch ``side`` (which wrote :data:`SIDE` into every chunk c with
      c % (writers + 1) == writers) is merged in. The version is ``None`` where the merge
      gave up (a :class:`~hubzarr.ConflictError`, after racing writes too often).
    """
    hub = hubzarr.Hub(root, storage_options=options)
    owners = writers + (operation == "merge")

    def plan(rng: np.random.Generator) -> list[slice]:
        own = [c for c in range(SIZE // CHUNK) if c % owners == i]
        return [slice(c * CHUNK, (c + 1) * CHUNK, 1) for c in rng.choice(own, size=writes).tolist()]

    def operate(repo: str, rng: np.random.Generator, log: list[Any]) -> None:
        started = time.monotonic_ns()
        log.append((_operate(hub, operation, repo), started, time.monotonic_ns()))

    prefix = "rev" if operation == "revert" else "mrg"
    _race_trials(
        hub,
        f"race/{prefix}-{{}}".format,
        plan,
        operate,
        writers,
        seeds,
        trials,
        barrier,
        results,
        i,
    )


def _operate(hub: hubzarr.Hub, operation: str, repo: str) -> str | None:
    if operation == "revert":
        return hub.revert(repo, "base")
    try:
        return hub.merge(repo, "side")
    except hubzarr.MergeConflictError:
        raise  # never: no writer touches the side's chunks
    except hubzarr.ConflictError:
        return None


# -- partial-chunk writes by several processes to one chunk -----------------------------------


def one_chunk_writes(
    root: str,
    options: dict[str, Any],
    rounds: int,
    seeds: list[int],
    trials: int,
    barrier: Any,
    results: Any,
    i: int,
) -> None:
    """Process ``i`` of P writes the elements ``i::P`` of the one chunk of ``race/chunk-<trial>``
    (16 elements), ``rounds`` rounds, each released by the barrier: element by element, all at
    once, or in two strided halves. The outcome's ``"last"`` maps each element to the value
    this process wrote to it last."""
    hub = hubzarr.Hub(root, storage_options=options)
    procs = barrier.parties
    for trial in range(trials):
        rng = np.random.default_rng([seeds[trial], i])
        outcome: dict[str, Any] = {"last": {}, "writes": 0}
        arr = None
        try:
            arr = hub.load(f"race/chunk-{trial}")
        except Exception:
            _failed(outcome)
        for _ in range(rounds):
            # Every round starts together; a process that failed still keeps the appointments.
            barrier.wait(timeout=_BARRIER_S)
            if arr is None or "error" in outcome:
                continue
            try:
                _write_round(arr, rng, i, procs, outcome)
            except Exception:
                _failed(outcome)
        results.put((i, trial, outcome))


def _write_round(
    arr: hubzarr.HubArray, rng: np.random.Generator, i: int, procs: int, outcome: dict[str, Any]
) -> None:
    size = arr.shape[0]
    kind = rng.integers(3)
    if kind == 0:
        regions = [slice(e, e + 1) for e in rng.permutation(range(i, size, procs))]
    elif kind == 1:
        regions = [slice(i, size, procs)]
    else:
        regions = [slice(i, size // 2, procs), slice(size // 2 + i, size, procs)]
    for region in regions:
        v = value(i, outcome["writes"])
        arr[region] = v
        outcome["last"].update(dict.fromkeys(range(size)[region], v))
        outcome["writes"] += 1


# -- concurrent creation of one repository, tag or branch --------------------------------------


def create_once(
    root: str,
    options: dict[str, Any],
    actions: list[str],
    trials: int,
    barrier: Any,
    results: Any,
    i: int,
) -> None:
    """For each trial and action, race the other processes to create one thing:

    - ``repo``: the repository ``race/repo-<trial>``, an int8 array filled with ``i``;
    - ``tag``, ``branch``: the tag ``t<trial>`` / branch ``b<trial>`` of ``race/arr``;
    - ``tag-or-branch``: ``x<trial>`` of ``race/arr``, a tag by odd and a branch by even ``i``.

    The outcome maps each action to ``"won"``, ``"exists"`` (``AlreadyExistsError``) or the
    error.
    """
    hub = hubzarr.Hub(root, storage_options=options)
    for trial in range(trials):
        outcome: dict[str, Any] = {}
        for action in actions:
            barrier.wait(timeout=_BARRIER_S)
            try:
                if action == "repo":
                    hub.array((4,), name=f"race/repo-{trial}", dtype="int8", fill_value=i)
                elif action == "tag" or (action == "tag-or-branch" and i % 2):
                    name = f"t{trial}" if action == "tag" else f"x{trial}"
                    hub.tag("race/arr", name, message=str(i))
                else:
                    name = f"b{trial}" if action == "branch" else f"x{trial}"
                    hub.branch("race/arr", name)
                outcome[action] = "won"
            except hubzarr.AlreadyExistsError:
                outcome[action] = "exists"
            except Exception as exc:
                outcome[action] = f"{type(exc).__name__}: {exc}"
        results.put((i, trial, outcome))
