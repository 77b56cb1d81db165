"""Crash tests: a process SIGKILLed at any point of create, write, tag, branch or revert
leaves a repository that opens, holds everything acknowledged, shows no half-published version, and
whose next operation finishes the interrupted seal. On a local root and on S3 (moto).

Each trial runs :func:`_crash.workload` in a spawned process on a fresh root. The process
kills itself at a counted point (the N-th storage call, before it starts or after it returns;
or the N-th rename or hard link that publishes a local write, leaving its temporary file behind)
and acknowledges each operation in an fsynced file as soon as it returns. The parent replays
the acknowledgements on a model (:class:`_crash.Model`) and checks the repository against it:
for the operation in flight when the process died, both the state before and the state after
are allowed (a write chunk by chunk: zarr writes chunks independently).

Kill points: N spread over the events an un-killed run of the same script counts (the count
varies a little from run to run, as concurrent chunk writes share seal checks, so a trial whose
N is past the end runs to completion), plus, for each tag of the script, one aimed between its
seal record and its manifest, counted among the matching events only, which is exact.

A failure names the backend, the seed and the kill point; :func:`run_trial` reruns one trial.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _crash
import numpy as np
import numpy.typing as npt
import pytest
from _crash import NAME, Model, Op
from envelopes import unframe
from zarr.core.sync import sync

import hubzarr
from hubzarr.errors import NotFoundError
from hubzarr.records import split_generation
from hubzarr.storage import TMP_SUFFIX

#: Events that publish a seal record, and a manifest: put-if-absent through the storage, or
#: locally the hard link that does it.
SEAL = r"^(create|link) .*/seals/"
MANIFEST = r"^(create|link) .*/manifests/"


@dataclass(frozen=True)
class Trial:
    """One run of the workload: where, which script, and at which event it dies."""

    root: str
    options: dict[str, Any]
    seed: int
    hook: str  # "call": storage calls; "rename": the renames and links of local writes
    when: str  # "before" or "after" the event
    at: int  # the at-th event (matching ``only``) is the last; 0: none
    only: str = ""

    def __str__(self) -> str:
        only = f" only={self.only!r}" if self.only else ""
        return f"seed={self.seed} hook={self.hook} when={self.when} at={self.at}{only}"


@dataclass
class Outcome:
    """What a child acknowledged before it died (or finished)."""

    acks: list[dict[str, Any]]
    log: list[str] | None  # the events counted, if the workload ran to its end
    exitcode: int


def _spawn(trial: Trial, ack_path: Path) -> Outcome:
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(
        target=_crash.workload,
        args=(
            trial.root,
            trial.options,
            trial.seed,
            trial.hook,
            trial.when,
            trial.at,
            trial.only,
            str(ack_path),
        ),
    )
    child.start()
    child.join(timeout=120)
    if child.exitcode is None:
        child.kill()
        child.join()
        pytest.fail(f"the workload ({trial}) hung")
    acks: list[dict[str, Any]] = []
    log = None
    lines = ack_path.read_text(encoding="utf-8").splitlines() if ack_path.exists() else []
    for line in lines:
        record = json.loads(line)  # each line was fsynced before the next operation began
        if record["op"] == "done":
            log = [str(event) for event in record["log"]]
        else:
            acks.append(record)
    return Outcome(acks, log, int(child.exitcode))


# -- checks ------------------------------------------------------------------------------


def _read(hub: hubzarr.Hub, ref: str) -> npt.NDArray[Any] | None:
    """The whole array at ``ref``, or ``None`` if there is no such ref."""
    try:
        arr = hub.load(f"{NAME}:{ref}", mode="r")
    except NotFoundError as exc:
        if "has no branch, tag or version" in str(exc):
            return None
        raise
    return arr[:]


def _chunkwise(
    actual: npt.NDArray[Any], before: npt.NDArray[Any], after: npt.NDArray[Any], what: str
) -> None:
    """Each chunk of ``actual`` equals that chunk either before or after the operation."""
    rows, cols = _crash.CHUNKS
    for r in range(0, actual.shape[0], rows):
        for c in range(0, actual.shape[1], cols):
            sel = (slice(r, r + rows), slice(c, c + cols))
            assert np.array_equal(actual[sel], before[sel]) or np.array_equal(
                actual[sel], after[sel]
            ), (
                f"{what}: chunk at ({r}, {c}) is {actual[sel].tolist()}, neither "
                f"{before[sel].tolist()} (before) nor {after[sel].tolist()} (after)"
            )


def _layout(hub: hubzarr.Hub) -> tuple[str, dict[str, int]]:
    """The repository's current incarnation and ``{path under it: size}``."""
    raw = sync(hub.storage.read(f"{NAME}/repo.json"))
    assert raw is not None, "the repository vanished"
    home = str(json.loads(raw)["id"])
    listing = sync(hub.storage.list(NAME))
    return home, {
        p[len(home) + 1 :]: size for p, size in listing.items() if p.startswith(home + "/")
    }


def _read_json(hub: hubzarr.Hub, home: str, path: str) -> dict[str, Any]:
    raw = sync(hub.storage.read(f"{NAME}/{home}/{path}"))
    assert raw is not None, f"{path} was listed but cannot be read"
    try:
        data: dict[str, Any] = json.loads(raw)
    except ValueError as exc:
        raise AssertionError(f"{path} is not valid JSON ({len(raw)} bytes): {raw[:80]!r}") from exc
    return data


def _superseded(path: str, listing: Any) -> bool:
    """Whether the object at ``path`` is a generation of its key with a newer one listed."""
    folder, _, name = path.rpartition("/")
    key, generation = split_generation(name)
    return f"{folder}/{key}~{generation + 1}" in listing


def _check_stored_objects(hub: hubzarr.Hub) -> tuple[set[str], list[str]]:
    """As the crash left them: every listed object is whole, every tag's version published.
    Return the stored tags and the seal records that have no manifest yet."""
    home, listing = _layout(hub)
    tags = set()
    unfinished = [
        path
        for path in listing
        if path.startswith("seals/") and f"manifests/{path.removeprefix('seals/')}" not in listing
    ]
    for path in listing:
        if path.startswith("data/"):
            raw = sync(hub.storage.read(f"{NAME}/{home}/{path}"))
            assert raw is not None, f"{path} was listed but cannot be read"
            if raw == b"" and _superseded(path, listing):
                continue  # emptied by the write of its successor (docs/format.md)
            unframe(path, raw)  # raises CorruptChunkError if truncated or torn
        elif path.endswith(".json"):
            _read_json(hub, home, path)
    for path in listing:
        if path.startswith("refs/tags/"):
            version = _read_json(hub, home, path)["version"]
            assert f"manifests/{version}.json" in listing, (
                f"half-published version visible: {path} names {version}, which has no manifest"
            )
            tags.add(path.removeprefix("refs/tags/").removesuffix(".json"))
    return tags, unfinished


def _check_seals_finished(hub: hubzarr.Hub) -> None:
    """Every seal record has its manifest and no branch is left at a sealed head."""
    home, listing = _layout(hub)
    for path in listing:
        if path.startswith("seals/"):
            version = path.removeprefix("seals/").removesuffix(".json")
            assert f"manifests/{version}.json" in listing, f"seal of {version} never finished"
        if path.startswith("refs/branches/"):
            head = _read_json(hub, home, path)["head"]
            assert f"seals/{head}.json" not in listing, f"{path} still at sealed head {head}"


def _check_log(hub: hubzarr.Hub, branch: str) -> set[str]:
    """The history of ``branch`` is one chain from an open head to the first version; return
    the tags on it."""
    entries = hub.log(f"{NAME}:{branch}")
    assert entries, f"empty log for {branch}"
    assert not entries[0].sealed, f"the head of {branch} is sealed: {entries[0]}"
    assert branch in entries[0].refs, f"{branch} not at its head: {entries[0]}"
    assert all(e.sealed for e in entries[1:]), f"open version in the history of {branch}"
    for child, parent in itertools.pairwise(entries):
        assert child.parent == parent.id, f"broken chain in {branch}: {child} after {parent}"
    assert entries[-1].parent is None
    return {r.removeprefix("tag: ") for e in entries for r in e.refs if r.startswith("tag: ")}


def check_after_crash(
    hub: hubzarr.Hub, seed: int, acks: list[dict[str, Any]], *, mid_seal: bool = False
) -> None:
    """Check a repository after the workload ``seed`` died having acknowledged ``acks``.

    First the stored objects as the crash left them; then the next operations, on the branch
    the interrupted operation worked on (so they meet its half-finished seal, if any); then
    every branch and tag against the model. ``mid_seal``: the process died between creating a
    seal record and its manifest.
    """
    ops = _crash.script(seed)
    for i, record in enumerate(acks):
        assert (record["i"], record["op"]) == (i, ops[i].kind), f"unexpected ack {record}"
    before = Model.after(ops[: len(acks)])
    inflight: Op | None = ops[len(acks)] if len(acks) < len(ops) else None
    after = before.copy()
    if inflight is not None:
        after.apply(inflight)
    for record in acks:
        if record["op"] == "tag":
            assert np.array_equal(record["expected"], before.tags[record["tag"]])

    if NAME not in hub.ls("crash"):
        assert not acks, "the repository is gone although its creation was acknowledged"
        hub.array(_crash.SHAPE, NAME, dtype=_crash.DTYPE, chunks=_crash.CHUNKS)
        empty = np.zeros(_crash.SHAPE, dtype=_crash.DTYPE)
        _next_operations(hub, "main", empty, empty)
        return
    stored_tags, unfinished = _check_stored_objects(hub)
    if mid_seal:
        assert unfinished, "the kill point missed the seal in flight"
    assert set(before.tags) <= stored_tags <= set(after.tags), (
        f"stored tags: {sorted(stored_tags)}; acknowledged: {sorted(before.tags)}"
    )
    if not acks:
        # A creation in flight: a repository that exists must open.
        hub.load(NAME)

    target = inflight.branch if inflight is not None and inflight.branch else "main"
    if inflight is not None and inflight.kind == "revert":
        # Published in one step: the whole old state, or the whole new one.
        actual = _read(hub, target)
        assert actual is not None
        assert np.array_equal(actual, before.heads[target]) or np.array_equal(
            actual, after.heads[target]
        ), f"{target} mid-revert reads {actual.tolist()}, neither before nor after"
    tags = _next_operations(
        hub, target, before.heads.get(target, after.heads[target]), after.heads[target]
    )
    for branch in sorted(after.heads.keys() - {target}):
        actual = _read(hub, branch)
        if actual is None:
            assert branch not in before.heads, f"acknowledged branch {branch} is missing"
            continue
        _chunkwise(
            actual,
            before.heads.get(branch, after.heads[branch]),
            after.heads[branch],
            f"head of {branch}",
        )
        tags |= _check_log(hub, branch)
    for tag, content in after.tags.items():
        actual = _read(hub, tag)
        if actual is None:
            assert tag not in before.tags, f"acknowledged tag {tag} is missing"
            continue
        assert np.array_equal(actual, content), (
            f"tag {tag} reads {actual.tolist()}, expected {content.tolist()}"
        )
    assert set(before.tags) <= tags - {"after"} <= set(after.tags), (
        f"tags in the history: {sorted(tags)}; acknowledged: {sorted(before.tags)}"
    )
    _check_seals_finished(hub)


#: Where the next operations write, and what.
_NEXT = (slice(2, 7), slice(3, 13)), 77777
_SIDE = (slice(9, 16), slice(5, 11)), 88888


def _next_operations(
    hub: hubzarr.Hub, branch: str, before: npt.NDArray[Any], after: npt.NDArray[Any]
) -> set[str]:
    """Write to ``branch`` (whose head held ``before`` or ``after``, chunk by chunk), tag it
    ``after``, branch ``after-b`` from the tag and write there; check what each reads back.
    Return the tags in the history of ``branch``."""
    (where, value), (side_where, side_value) = _NEXT, _SIDE
    hub.load(f"{NAME}:{branch}")[where] = value
    hub.tag(f"{NAME}:{branch}", "after")
    hub.branch(f"{NAME}:after", "after-b")
    hub.load(f"{NAME}:after-b")[side_where] = side_value

    tagged = hub.load(f"{NAME}:after")[:]
    before, after = before.copy(), after.copy()
    before[where] = after[where] = value
    _chunkwise(tagged, before, after, f"{branch} after the next write")
    np.testing.assert_array_equal(hub.load(f"{NAME}:{branch}")[:], tagged)
    side = tagged.copy()
    side[side_where] = side_value
    np.testing.assert_array_equal(hub.load(f"{NAME}:after-b")[:], side)
    assert "after" in _check_log(hub, "after-b")
    tags = _check_log(hub, branch)
    assert "after" in tags
    return tags


# -- the trials --------------------------------------------------------------------------


def run_trial(trial: Trial, ack_path: Path) -> Outcome:
    """Run the workload on a fresh root, killed as ``trial`` says, then check the repository.

    A trial aimed between a seal record and its manifest (``only`` given) also checks that the
    process did die there. To rerun one failing trial::

        run_trial(Trial("/tmp/hub", {}, 101, "call", "before", 6), Path("/tmp/ack"))
    """
    outcome = _spawn(trial, ack_path)
    assert outcome.exitcode in (0, -9), (
        f"the workload failed (exit code {outcome.exitcode}); see its traceback on stderr"
    )
    killed = outcome.exitcode == -9
    if killed and (trial.hook, trial.when) == ("rename", "before"):
        left = list(Path(trial.root).rglob(f"*{TMP_SUFFIX}"))
        assert left, "the process died before publishing a write, yet left no temporary file"
    hub = hubzarr.Hub(trial.root, storage_options=trial.options)
    mid_seal = bool(trial.only) and killed
    check_after_crash(hub, trial.seed, outcome.acks, mid_seal=mid_seal)
    return outcome


def _kill_points(log: list[str], when: str, trials: int, seed: int) -> list[tuple[int, str]]:
    """``(at, only)``: ``trials`` points spread over the events, one drawn at random in each
    stretch; then, for each seal, the point where its record exists and its manifest does not
    (after the record is published, or before the manifest is)."""
    rng = random.Random(seed)
    spread = [(1 + int((j + rng.random()) * len(log) / trials), "") for j in range(trials)]
    # After each seal record, or before each manifest, of a seal whose record comes first (a
    # revert's new version gets its manifest before its seal: no one writes into it, so no
    # seal of it is ever in flight).
    sealed: set[str] = set()
    manifested: set[str] = set()
    aims, seals, manifests = [], 0, 0
    for event in log:
        version = re.search(r"/(?:seals|manifests)/(\w+)\.json", event)
        if version is None:
            continue
        if re.search(SEAL, event):
            seals += 1
            sealed.add(version[1])
            if when == "after" and version[1] not in manifested:
                aims.append((seals, SEAL))
        elif re.search(MANIFEST, event):
            manifests += 1
            manifested.add(version[1])
            if when == "before" and version[1] in sealed:
                aims.append((manifests, MANIFEST))
    return spread + aims


#: (backend, hook, when, seed, spread trials): each seed's script has two tags, so each case
#: also runs two trials aimed at a half-finished seal. 40 local trials, 15 on S3.
CASES = [
    pytest.param("local", "call", "before", 101, 10, id="local-call-before"),
    pytest.param("local", "call", "after", 102, 10, id="local-call-after"),
    pytest.param("local", "rename", "before", 109, 6, id="local-rename-before"),
    pytest.param("local", "rename", "after", 111, 6, id="local-rename-after"),
    pytest.param("s3", "call", "before", 113, 6, id="s3-call-before"),
    pytest.param("s3", "call", "after", 105, 5, id="s3-call-after"),
]


@pytest.mark.parametrize(("kind", "hook", "when", "seed", "trials"), CASES)
def test_a_killed_process_leaves_a_consistent_repository(
    kind: str,
    hook: str,
    when: str,
    seed: int,
    trials: int,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    if kind == "s3":
        backend = request.getfixturevalue("s3_backend")
        base, options = backend.root, backend.options
    else:
        base, options = str(tmp_path / "hub"), {}

    def trial(name: str, at: int, only: str = "") -> Trial:
        return Trial(f"{base}/{name}", options, seed, hook, when, at, only)

    # An un-killed run counts the events (and must pass the same checks).
    counted = run_trial(trial("full", 0), tmp_path / "full.ack")
    assert counted.log, "the workload counted no events: is the kill hook installed?"
    points = _kill_points(counted.log, when, trials, seed)
    assert any(only for _, only in points), "no seal found among the events"

    failures = []
    killed = 0
    for j, (at, only) in enumerate(points):
        current = trial(f"trial{j}", at, only)
        try:
            outcome = run_trial(current, tmp_path / f"{j}.ack")
        except Exception as exc:  # every failing trial is reported, not just the first
            failures.append(f"{kind} {current}: {type(exc).__name__}: {exc}")
            continue
        killed += outcome.exitcode == -9
    assert not failures, "\n".join(failures)
    assert killed >= len(points) // 2, f"only {killed} of {len(points)} trials were killed"
