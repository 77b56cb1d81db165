"""Real processes racing on one repository, on a local root and on S3 (a moto server).

- Writers write their own elements (whole chunks, and parts of chunks every writer shares)
  while taggers tag the branch and branch from it: every write that returned is in the head;
  every tag and branch shows a state that existed while it was taken; nothing made changes.
- Several processes write their own elements of one chunk: no update is lost.
- Of several processes creating one repository, tag or branch, exactly one wins; a tag and
  a branch of one name count as one.

The processes are spawned once per test and run every trial, released together by a barrier
(see ``_race.py``). Each trial's workload is drawn from a seed named in every failure; the
interleaving is the scheduler's, so each test runs several trials. ``HUBZARR_RACE_TRIALS=k``
runs ``k`` times as many (a soak run).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import _race
import numpy as np
import pytest
from _race import CHUNK, FILL, SIDE, SIZE, decode, describe
from conftest import Backend

import hubzarr

_SCALE = int(os.environ.get("HUBZARR_RACE_TRIALS", "1"))
#: Trials per test and backend. Every S3 request goes through the one moto server in this
#: process (several milliseconds each), so S3 trials are fewer and smaller.
TRIALS = {
    "writes": {"local": 10, "s3": 4},
    "one-chunk": {"local": 20, "s3": 6},
    "create": {"local": 5, "s3": 3},
}
#: Seeds of the trials' workloads: the base plus the trial number.
SEED = {"writes": 1000, "one-chunk": 2000, "revert": 3000, "merge": 4000}


def _trials(test: str, backend: Backend) -> int:
    return TRIALS[test][backend.kind] * _SCALE


@pytest.fixture(params=["local", "s3"])
def race_backend(request: pytest.FixtureRequest, local_root: str) -> Backend:
    """A fresh hub root, local or on the moto S3 server."""
    if request.param == "local":
        return Backend("local", local_root)
    backend: Backend = request.getfixturevalue("s3_backend")
    return backend


def _report(problems: list[str], limit: int = 40) -> str:
    more = f"\n... and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"{len(problems)} problems:\n" + "\n".join(problems[:limit]) + more


def _errors(where: str, by_proc: dict[int, dict[str, Any]]) -> list[str]:
    return [
        f"{where}: process {i} failed:\n{outcome['error']}"
        for i, outcome in sorted(by_proc.items())
        if "error" in outcome
    ]


# -- writes racing tags and branches -----------------------------------------------------------

WRITERS, TAGGERS = 3, 2
#: Writes per writer, and tags or branches per tagger, in each trial.
WRITES = {"local": 40, "s3": 10}
OPS = {"local": 8, "s3": 3}


@dataclass(frozen=True)
class Write:
    seq: int
    start: int
    stop: int
    step: int
    value: int
    started: int
    returned: int

    def covers(self, element: int) -> bool:
        return element in range(self.start, self.stop, self.step)


@dataclass(frozen=True)
class Ref:
    name: str
    kind: str
    source: str | None  # the tag a branch was made from; None: made from the branch itself
    version: str
    started: int
    returned: int
    content: list[int]  # read by the tagger right after making it


def _seq(stored: int) -> int:
    found = decode(stored)
    return -1 if found is None else found[1]


def _allowed(writes: list[Write], ref: Ref) -> set[int]:
    """The values an element written by ``writes`` may hold in ``ref``: that of a write that
    began before the ref returned, and no older than the last one that returned before the ref
    began (the fill value if none had)."""
    done = [w.seq for w in writes if w.returned < ref.started]
    newest_done = done[-1] if done else -1
    allowed = {w.value for w in writes if w.started < ref.returned and w.seq >= newest_done}
    return allowed | {FILL} if newest_done < 0 else allowed


def _check_snapshot(
    where: str, ref: Ref, now: np.ndarray, covering: list[list[Write]]
) -> list[str]:
    problems = []
    for e in range(SIZE):
        allowed = _allowed(covering[e], ref)
        if int(now[e]) not in allowed:
            problems.append(
                f"{where}: {ref.kind} {ref.name} (taken during [{ref.started}, {ref.returned}] "
                f"ns) shows element {e} = {describe(int(now[e]))}, a state that did not exist "
                f"then; allowed: {sorted(describe(v) for v in allowed)}"
            )
    return problems


def _check_order(where: str, refs: list[Ref], final: dict[str, np.ndarray]) -> list[str]:
    """A snapshot taken after another returned shows no element older than the other does."""
    problems = []
    for a in refs:
        for b in refs:
            if a.returned < b.started:
                older = [e for e in range(SIZE) if _seq(final[b.name][e]) < _seq(final[a.name][e])]
                problems += [
                    f"{where}: {b.kind} {b.name} shows element {e} = "
                    f"{describe(int(final[b.name][e]))}, older than "
                    f"{describe(int(final[a.name][e]))} in {a.kind} {a.name}, which returned "
                    "before it began"
                    for e in older
                ]
    return problems


def _check_writes_and_tags(
    hub: hubzarr.Hub, trial: int, seed: int, by_proc: dict[int, dict[str, Any]]
) -> list[str]:
    where = f"trial {trial} (seed {seed})"
    problems = _errors(where, by_proc)
    repo = f"race/arr-{trial}"
    owner = _race.owners(WRITERS)
    writes = {w: [Write(*entry) for entry in by_proc[w]["log"]] for w in range(WRITERS)}
    covering = [[w for w in writes[owner[e]] if w.covers(e)] for e in range(SIZE)]
    refs = [Ref(*entry) for i in range(WRITERS, WRITERS + TAGGERS) for entry in by_proc[i]["log"]]

    # (a) Every write that returned is in the head.
    head = hub.load(repo, mode="r")[:]
    for e in range(SIZE):
        expected = covering[e][-1].value if covering[e] else FILL
        if head[e] != expected:
            problems.append(
                f"{where}: the head lost a write: element {e} is {describe(int(head[e]))}, but "
                f"{describe(expected)} returned last"
            )

    final = {ref.name: hub.load(f"{repo}:{ref.name}", mode="r")[:] for ref in refs}
    for ref in refs:
        now = final[ref.name]
        # (c) A version never changes after it was made.
        changed = [e for e in range(SIZE) if now[e] != ref.content[e]]
        problems += [
            f"{where}: {ref.kind} {ref.name} changed after it was made: element {e} was "
            f"{describe(ref.content[e])}, is {describe(int(now[e]))}"
            for e in changed
        ]
        if ref.source is None:
            # (b) Every tag (and branch of the branch) shows a state that existed.
            problems += _check_snapshot(where, ref, now, covering)
        elif now.tolist() != final[ref.source].tolist():
            problems.append(f"{where}: branch {ref.name} differs from {ref.source}, its origin")
    problems += _check_order(where, [r for r in refs if r.source is None], final)

    history = {entry.id for entry in hub.log(repo)}
    problems += [
        f"{where}: tag {ref.name} (version {ref.version}) is not in the history of the branch"
        for ref in refs
        if ref.kind in ("tag", "commit") and ref.version not in history
    ]
    return problems


def test_writes_racing_tags_and_branches_are_kept_and_versions_never_change(
    race_backend: Backend,
) -> None:
    trials = _trials("writes", race_backend)
    seeds = [SEED["writes"] + t for t in range(trials)]
    hub = race_backend.hub()
    for t in range(trials):
        hub.array((SIZE,), name=f"race/arr-{t}", dtype="int64", chunks=(CHUNK,), fill_value=FILL)
    outcomes = _race.run(
        _race.writes_and_tags,
        (
            race_backend.root,
            race_backend.options,
            WRITERS,
            WRITES[race_backend.kind],
            OPS[race_backend.kind],
            seeds,
        ),
        WRITERS + TAGGERS,
        trials,
    )
    problems = []
    for t, by_proc in enumerate(outcomes):
        problems += _check_writes_and_tags(hub, t, seeds[t], by_proc)
    assert not problems, _report(problems)


def _writes_and(operation: str, backend: Backend, seeds: list[int]) -> list[dict]:
    """The outcomes of :func:`_race.writes_and` running ``operation`` against ``WRITERS``
    writers, one trial per seed."""
    args = (operation, backend.root, backend.options, WRITERS, WRITES[backend.kind], seeds)
    return _race.run(_race.writes_and, args, WRITERS + 1, len(seeds))


def test_writes_racing_a_revert_are_ordered_before_or_after_it(race_backend: Backend) -> None:
    """A revert to the tag ``base`` (every element the fill value) while writers rewrite their
    own chunks whole. Afterwards each element holds the last write to it if that began after
    the revert returned; the fill value if every write to it returned before the revert
    began; else one of the two: no write that returned after the revert began is lost, and
    no write that returned before it survives it."""
    trials = _trials("writes", race_backend)
    seeds = [SEED["revert"] + t for t in range(trials)]
    hub = race_backend.hub()
    for t in range(trials):
        hub.array((SIZE,), name=f"race/rev-{t}", dtype="int64", chunks=(CHUNK,), fill_value=FILL)
        hub.tag(f"race/rev-{t}", "base")
    outcomes = _writes_and("revert", race_backend, seeds)
    problems = []
    owner = (np.arange(SIZE) // CHUNK) % WRITERS
    for t, by_proc in enumerate(outcomes):
        where = f"trial {t} (seed {seeds[t]})"
        errors = _errors(where, by_proc)
        problems += errors
        if errors:
            continue
        writes = {w: [Write(*entry) for entry in by_proc[w]["log"]] for w in range(WRITERS)}
        ((_, revert_started, revert_returned),) = by_proc[WRITERS]["log"]
        head = hub.load(f"race/rev-{t}", mode="r")[:]
        for e in range(SIZE):
            covering = [w for w in writes[owner[e]] if w.covers(e)]
            last = covering[-1] if covering else None
            if last is None or last.returned < revert_started:
                allowed = {FILL}
            elif last.started > revert_returned:
                allowed = {last.value}
            else:
                allowed = {FILL, last.value}
            if int(head[e]) not in allowed:
                problems.append(
                    f"{where}: element {e} is {describe(int(head[e]))}; allowed: "
                    f"{sorted(describe(v) for v in allowed)}"
                )
    assert not problems, _report(problems)


def test_writes_racing_a_merge_are_all_kept(race_backend: Backend) -> None:
    """A merge of the branch ``side`` (which wrote chunks no writer touches) into main while
    writers rewrite their own chunks of main whole. Afterwards every element of a writer's
    chunk holds the last write to it (a merge changes only what the side changed, and loses
    no write), and every chunk the side wrote holds its value, unless the merge gave up
    (``ConflictError``, after racing writes too often) and changed nothing."""
    trials = _trials("writes", race_backend)
    seeds = [SEED["merge"] + t for t in range(trials)]
    hub = race_backend.hub()
    side_chunks = [c for c in range(SIZE // CHUNK) if c % (WRITERS + 1) == WRITERS]
    for t in range(trials):
        name = f"race/mrg-{t}"
        hub.array((SIZE,), name=name, dtype="int64", chunks=(CHUNK,), fill_value=FILL)
        hub.branch(name, "side")
        side = hub.load_array(f"{name}:side")
        for c in side_chunks:
            side[c * CHUNK : (c + 1) * CHUNK] = SIDE
    outcomes = _writes_and("merge", race_backend, seeds)
    problems = []
    owner = (np.arange(SIZE) // CHUNK) % (WRITERS + 1)
    merged = 0
    for t, by_proc in enumerate(outcomes):
        where = f"trial {t} (seed {seeds[t]})"
        errors = _errors(where, by_proc)
        problems += errors
        if errors:
            continue
        ((version, _, _),) = by_proc[WRITERS]["log"]
        merged += version is not None
        head = hub.load(f"race/mrg-{t}", mode="r")[:]
        for e in range(SIZE):
            if owner[e] == WRITERS:
                expected = SIDE if version is not None else FILL
            else:
                writes = [Write(*entry) for entry in by_proc[owner[e]]["log"]]
                covering = [w for w in writes if w.covers(e)]
                expected = covering[-1].value if covering else FILL
            if int(head[e]) != expected:
                problems.append(
                    f"{where}: element {e} is {describe(int(head[e]))}, not {describe(expected)}"
                )
        if version is not None:
            assert hub.log(f"race/mrg-{t}:{version}")[0].merged, where
    assert not problems, _report(problems)
    assert merged > 0, "every merge gave up"


# -- partial-chunk writes by several processes to one chunk -----------------------------------

WRITING_PROCS, CHUNK_SIZE = 4, 16
ROUNDS = {"local": 6, "s3": 3}


def test_partial_chunk_writes_to_one_chunk_by_several_processes_lose_no_update(
    race_backend: Backend,
) -> None:
    # Each process read-modify-writes the same chunk: plain zarr loses updates here.
    trials = _trials("one-chunk", race_backend)
    seeds = [SEED["one-chunk"] + t for t in range(trials)]
    hub = race_backend.hub()
    for t in range(trials):
        hub.array(
            (CHUNK_SIZE,),
            name=f"race/chunk-{t}",
            dtype="int64",
            chunks=(CHUNK_SIZE,),
            fill_value=FILL,
        )
    outcomes = _race.run(
        _race.one_chunk_writes,
        (race_backend.root, race_backend.options, ROUNDS[race_backend.kind], seeds),
        WRITING_PROCS,
        trials,
    )
    problems, lossy = [], 0
    for t, by_proc in enumerate(outcomes):
        where = f"trial {t} (seed {seeds[t]})"
        problems += _errors(where, by_proc)
        head = hub.load(f"race/chunk-{t}", mode="r")[:]
        lost = [
            f"{where}: lost update: element {e} is {describe(int(head[e]))}, but "
            f"{describe(v)} returned last"
            for outcome in by_proc.values()
            for e, v in sorted(outcome["last"].items())
            if head[e] != v
        ]
        lossy += bool(lost)
        problems += lost
    assert not problems, f"updates lost in {lossy} of {trials} trials; " + _report(problems)


# -- concurrent creation of one repository, tag or branch -------------------------------------

CREATORS = 6
#: What the creators race for (see ``_race.create_once``), and the prefix of the ref's name;
#: "tag-or-branch": odd processes tag and even ones branch, all under one name.
ACTIONS = {"repo": "", "tag": "t", "branch": "b", "tag-or-branch": "x"}
DATA = np.arange(8, dtype="int32") + 1


def _check_creation(hub: hubzarr.Hub, trial: int, action: str, outcomes: dict[int, str]) -> str:
    winners = [i for i, o in outcomes.items() if o == "won"]
    others = sorted(o for o in outcomes.values() if o != "won")
    if len(winners) != 1 or others != ["exists"] * (CREATORS - 1):
        return f"not exactly one winner, the others AlreadyExistsError: {outcomes}"
    winner = winners[0]
    if action == "repo":
        # Every creator filled its array with its own index: the winner's must be there.
        made = hub.load(f"race/repo-{trial}")
        expected, tagged = [winner] * 4, False
    else:
        made = hub.load(f"race/arr:{ACTIONS[action]}{trial}")
        expected = DATA.tolist()
        tagged = action == "tag" or (action == "tag-or-branch" and winner % 2 == 1)
    if made[:].tolist() != expected or made.read_only != tagged:
        return f"process {winner} won, but made {made!r} holding {made[:]}"
    return ""


def test_exactly_one_concurrent_creator_of_a_repository_tag_or_branch_wins(
    race_backend: Backend,
) -> None:
    hub = race_backend.hub()
    hub.array((8,), name="race/arr", dtype="int32", chunks=(2,))[:] = DATA
    outcomes = _race.run(
        _race.create_once,
        (race_backend.root, race_backend.options, list(ACTIONS)),
        CREATORS,
        _trials("create", race_backend),
    )
    problems = []
    for t, by_proc in enumerate(outcomes):
        for action in ACTIONS:
            wrong = _check_creation(hub, t, action, {i: o[action] for i, o in by_proc.items()})
            if wrong:
                problems.append(f"trial {t}, {action}: {wrong}")
    assert not problems, _report(problems)
