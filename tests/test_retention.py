"""Retention (issue 16): ``hub gc --expire-before/--keep-last`` drops the state of old untagged
sealed versions; tags, what branches need and every kept version read as before, ``hub log``
still lists what was dropped, and what later versions still name of it is kept."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from conftest import Backend
from typer.testing import CliRunner
from zarr.core.sync import sync

import hubzarr
import hubzarr.collect
from hubzarr.cli import app
from hubzarr.errors import InvalidArgumentError, NotFoundError
from hubzarr.names import parse_name
from hubzarr.records import TagRef
from hubzarr.versions import Repository

NAME = "alice/ret"


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> None:
    """Collect as if two hours had passed: everything written so far is past any grace."""
    monkeypatch.setattr(hubzarr.collect, "_now", lambda: time.time() + 7200)


def _objects(hub: hubzarr.Hub) -> dict[str, int]:
    listed = sync(hub.storage.list_detailed(NAME, temporaries=True))
    return {p: size for p, (size, _) in listed.items()}


def _under(objects: dict[str, int], folder: str, version: str) -> set[str]:
    """The names under ``<folder>/<version>`` (a data folder, or one record)."""
    found = set()
    for path in objects:
        parts = path.split("/")
        if folder in parts:
            rest = parts[parts.index(folder) + 1 :]
            if rest[0] in (version, f"{version}.json"):
                found.add("/".join(rest[1:]) or rest[0])
    return found


def _five_versions(hub: hubzarr.Hub) -> tuple[list[str], dict[str, np.ndarray]]:
    """An 8x4 array in four chunks of rows, written whole and committed (c1), then one chunk
    rewritten before each of c2, the tag v1 (c3), c4 and c5; a write left in the open head.
    Returns the five versions, oldest first, and the state of each (and of the head)."""
    arr = hub.array((8, 4), NAME, dtype="int32", chunks=(2, 4))
    arr[:] = np.arange(32).reshape(8, 4)
    versions = [hub.commit(NAME, "c1")]
    for row, seal in ((0, "c2"), (2, "v1"), (4, "c4"), (6, "c5")):
        arr[row] = -row - 1
        versions.append(hub.tag(NAME, seal) if seal == "v1" else hub.commit(NAME, seal))
    arr[7, 3] = 99
    states = {v: hub.load(f"{NAME}:{v}")[:] for v in versions}
    states["head"] = arr[:]
    return versions, states


def _reads_as_before(hub: hubzarr.Hub, states: dict[str, np.ndarray], kept: list[str]) -> None:
    for version in kept:
        np.testing.assert_array_equal(hub.load(f"{NAME}:{version}")[:], states[version])
        assert hub.verify(f"{NAME}:{version}").ok, version
    np.testing.assert_array_equal(hub.load(NAME)[:], states["head"])
    np.testing.assert_array_equal(hub.load(f"{NAME}:v1")[:], states[hub.log(f"{NAME}:v1")[0].id])


def test_keep_last_drops_old_commits_and_keeps_what_later_versions_name(
    hub: hubzarr.Hub, later: None
) -> None:
    (c1, c2, v1, c4, c5), states = _five_versions(hub)
    held = hub.load(f"{NAME}:{c1}")  # a handle opened before
    before = _objects(hub)

    dry = hub.gc(NAME, grace=0, keep_last=2)
    assert dry.dry_run and dry.expired == 2  # c1 and c2: v1 is tagged, c4 and c5 the last two
    assert _objects(hub) == before

    report = hub.gc(NAME, grace=0, dry_run=False, keep_last=2)
    assert report.expired == 2 and report.objects == dry.objects and report.objects > 0
    _reads_as_before(hub, states, [v1, c4, c5])
    for gone in (c1, c2):
        with pytest.raises(NotFoundError, match=f"{gone}.*expired by gc"):
            hub.load(f"{NAME}:{gone}")
    with pytest.raises(NotFoundError, match=f"{c1}.*expired by gc"):
        held[:2]  # its objects are gone: it says why, not that the repository is damaged
    # The log still lists every version, the dropped ones marked.
    log = hub.log(NAME)
    assert [e.id for e in log if e.sealed] == [c5, c4, v1, c2, c1]
    assert [e.id for e in log if e.expired] == [c2, c1]
    assert [e.message for e in log if e.expired] == ["c2", "c1"]

    after = _objects(hub)
    # c1 wrote all four chunks: rows 0-1 (rewritten in c2) and 2-3 (rewritten in v1) are
    # freed; 4-5 and 6-7 stay, v1 names them. c2's one chunk stays: v1, c4, c5 name it.
    assert _under(before, "data", c1) == {".zarray", ".zattrs", "0.0", "1.0", "2.0", "3.0"}
    assert _under(after, "data", c1) == {".zarray", ".zattrs", "2.0", "3.0"}
    assert _under(after, "data", c2) == _under(before, "data", c2) == {"0.0"}
    for folder in ("manifests", "index"):
        assert not _under(after, folder, c1) and not _under(after, folder, c2)
        assert _under(after, folder, v1)
    for folder in ("versions", "seals", "expired"):
        assert _under(after, folder, c1) and _under(after, folder, c2)
    assert not _under(after, "expired", v1)

    again = hub.gc(NAME, grace=0, dry_run=False, keep_last=2)
    assert (again.expired, again.objects) == (0, 0)
    _reads_as_before(hub, states, [v1, c4, c5])


def test_expire_before_keeps_each_branch_as_of_then(hub: hubzarr.Hub, later: None) -> None:
    arr = hub.array((4,), NAME, dtype="int32", chunks=(1,))
    commits = []
    for value in range(1, 5):
        arr[value - 1] = value
        commits.append(hub.commit(NAME, f"c{value}"))
    sealed = {e.id: e.time for e in hub.log(NAME) if e.sealed}
    c1, c2, c3, c4 = commits
    # Between c3 and c4's seals: c4 was sealed after, c3 is the state as of then.
    moment = sealed[c3] + (sealed[c4] - sealed[c3]) / 2
    report = hub.gc(NAME, grace=0, dry_run=False, expire_before=moment)
    assert report.expired == 2
    assert [e.id for e in hub.log(NAME) if e.expired] == [c2, c1]
    np.testing.assert_array_equal(hub.load(NAME, as_of=moment)[:], [1, 2, 3, 0])
    np.testing.assert_array_equal(hub.load(f"{NAME}:{c4}")[:], [1, 2, 3, 4])
    # As of a moment whose state was dropped: the error says so.
    with pytest.raises(NotFoundError, match="expired by gc"):
        hub.load(NAME, as_of=sealed[c2])


def test_tags_and_branches_keep_what_they_need(hub: hubzarr.Hub, later: None) -> None:
    (c1, c2, v1, c4, c5), states = _five_versions(hub)
    hub.branch(f"{NAME}:{c2}", "old")  # a branch whose head starts from c2
    hub.tag(f"{NAME}:{c1}", "first")
    hub.branch(f"{NAME}:{c4}", "x")  # a branch from c4, one commit on
    hub.load_array(f"{NAME}:x")[0] = 5
    hub.commit(f"{NAME}:x")
    report = hub.gc(NAME, grace=0, dry_run=False, keep_last=1)
    assert report.expired == 1  # c4: c1 is tagged, c2 starts a branch, v1 is tagged
    assert [e.id for e in hub.log(NAME) if e.expired] == [c4]
    _reads_as_before(hub, states, [c1, c2, v1, c5])
    np.testing.assert_array_equal(hub.load(f"{NAME}:old")[:], states[c2])
    # A tag, branch, revert or diff of an expired version is refused, with why; so is a
    # merge whose common ancestor was dropped.
    with pytest.raises(NotFoundError, match="expired by gc"):
        hub.revert(NAME, c4)
    with pytest.raises(NotFoundError, match="expired by gc"):
        hub.diff(f"{NAME}:{c4}", "v1")
    with pytest.raises(NotFoundError, match=f"{c4}.*expired by gc"):
        hub.merge(NAME, "x")  # their common ancestor is c4
    np.testing.assert_array_equal(hub.load(NAME)[:], states["head"])
    with pytest.raises(NotFoundError, match="expired by gc"):
        hub.tag(f"{NAME}:{c4}", "late")
    with pytest.raises(NotFoundError, match="expired by gc"):
        hub.branch(f"{NAME}:{c4}", "late")
    summary = hub.describe(NAME)
    assert (summary.branches, summary.tags) == (("main", "old", "x"), ("first", "v1"))


def test_a_tag_made_while_gc_marks_takes_its_version_back(
    hub: hubzarr.Hub, later: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tagger that checked for a mark before gc wrote it publishes after: gc lists the refs
    once its marks are written, sees the tag, and takes the mark back."""
    (c1, c2, v1, c4, c5), states = _five_versions(hub)
    needed = hubzarr.collect._needed
    calls = []

    async def tagger_in_between(repo: Repository, cutoff: float) -> tuple[set[str], list[str]]:
        calls.append(repo)
        if len(calls) == 2:  # the marks are written: the late tagger publishes now
            assert await repo.expiry(c1) is not None
            await repo.refs.publish("late", TagRef(c1, time.time(), None, nonce="0" * 16))
        return await needed(repo, cutoff)

    monkeypatch.setattr(hubzarr.collect, "_needed", tagger_in_between)
    report = hub.gc(NAME, grace=0, dry_run=False, keep_last=2)
    assert report.expired == 1 and len(calls) == 2
    assert [e.id for e in hub.log(NAME) if e.expired] == [c2]
    _reads_as_before(hub, states, [c1, v1, c4, c5])
    np.testing.assert_array_equal(hub.load(f"{NAME}:late")[:], states[c1])


def test_bad_retention_is_refused_before_anything_changes(hub: hubzarr.Hub, later: None) -> None:
    _five_versions(hub)
    before = _objects(hub)
    naive = datetime(2026, 1, 2)
    for kwargs, match in (
        ({"keep_last": 0}, "keep_last must be a whole number >= 1"),
        ({"keep_last": "2"}, "keep_last must be a whole number >= 1"),
        ({"keep_last": True}, "keep_last must be a whole number >= 1"),
        ({"expire_before": naive}, "with a time zone"),
        ({"expire_before": "2026-01-02"}, "with a time zone"),
    ):
        with pytest.raises(InvalidArgumentError, match=match):
            hub.gc(NAME, grace=0, dry_run=False, **kwargs)  # type: ignore[arg-type]
    assert _objects(hub) == before


def test_layout_2_refuses_retention(
    local_root: str, later: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hubzarr import versions

    with monkeypatch.context() as old:
        old.setattr(versions, "LAYOUT", 2)
        hub = hubzarr.Hub(local_root)
        _five_versions(hub)
    before = _objects(hub)
    with pytest.raises(InvalidArgumentError, match=r"layout 2.*hub cp"):
        hub.gc(NAME, grace=0, dry_run=False, keep_last=1)
    assert _objects(hub) == before


def test_hub_gc_expires_on_the_command_line(hub: hubzarr.Hub, later: None) -> None:
    (c1, c2, *_), _ = _five_versions(hub)
    runner = CliRunner()
    root = ["--root", hub.root]
    dry = runner.invoke(app, ["gc", NAME, "--keep-last", "2", "--grace", "0", *root])
    assert dry.exit_code == 0, dry.output
    assert "would expire 2 versions" in dry.output and "dry run" in dry.output
    done = runner.invoke(app, ["gc", NAME, "--keep-last", "2", "--grace", "0", "--yes", *root])
    assert done.exit_code == 0 and "expired 2 versions" in done.output, done.output
    log = runner.invoke(app, ["log", NAME, *root])
    lines = [line for line in log.output.splitlines() if "[expired]" in line]
    assert [line.split()[0] for line in lines] == [c2, c1]
    entries = json.loads(runner.invoke(app, ["log", NAME, "--json", *root]).output)
    assert [e["id"] for e in entries if e["expired"]] == [c2, c1]
    shown = runner.invoke(app, ["show", f"{NAME}:{c1}", *root])
    assert shown.exit_code == 1 and "expired by gc" in shown.output
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d")
    for bad, says in (
        (["--keep-last", "0"], "keep_last must be a whole number >= 1"),
        (["--expire-before", "yesterday"], "--expire-before 'yesterday' is not a time"),
        (["--expire-before", tomorrow], "with a time zone"),
    ):
        refused = runner.invoke(app, ["gc", NAME, *bad, "--yes", *root])
        assert refused.exit_code != 0 and says in refused.output, refused.output


def test_retention_on_object_stores_and_a_copy_of_what_is_left(
    local_or_s3: Backend, tmp_path: Path, later: None
) -> None:
    hub = local_or_s3.hub()
    (c1, c2, v1, c4, c5), states = _five_versions(hub)
    assert hub.gc(NAME, grace=0, dry_run=False, keep_last=2).expired == 2
    _reads_as_before(hub, states, [v1, c4, c5])
    # A copy of the whole repository carries the dropped versions as dropped, and what later
    # versions name of theirs.
    copy = hubzarr.Hub(str(tmp_path / "copy"))
    hub.copy(NAME, NAME, to_root=copy)
    _reads_as_before(copy, states, [v1, c4, c5])
    assert [e.id for e in copy.log(NAME) if e.expired] == [c2, c1]
    with pytest.raises(NotFoundError, match="expired by gc"):
        copy.load(f"{NAME}:{c1}")
    again = hub.copy(NAME, NAME, to_root=copy)
    assert (again.objects, again.versions) == (0, 0)
    repo = Repository(copy.storage, parse_name(NAME, default_user="library"))
    sync(repo.open())
    assert sync(repo.expired_versions()) == {c1, c2}


def test_versions_no_ref_reaches_are_refused_by_id_once_freed(
    hub: hubzarr.Hub, later: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gc marks the versions no ref reaches before it frees them, behind the same fence: a
    tag made at one of them by id is refused afterwards, and one made while gc runs stops the
    collection before anything is deleted."""
    arr = hub.array((4,), NAME, dtype="int32", chunks=(1,))
    arr[:] = 1
    hub.branch(NAME, "dev")
    dev = hub.load_array(f"{NAME}:dev")
    dev[0] = 2
    d1 = hub.commit(f"{NAME}:dev", "on dev")
    dev[1] = 3
    d2 = hub.commit(f"{NAME}:dev", "on dev again")
    hub.delete_branch(NAME, "dev")
    before = _objects(hub)

    needed = hubzarr.collect._needed
    calls = []

    async def tagger_in_between(repo: Repository, cutoff: float) -> tuple[set[str], list[str]]:
        calls.append(repo)
        if len(calls) == 1:  # the marks are written: a tagger that looked before publishes
            assert await repo.expiry(d2) is not None
            await repo.refs.publish("kept", TagRef(d2, time.time(), None, nonce="1" * 16))
        return await needed(repo, cutoff)

    with monkeypatch.context() as racing:
        racing.setattr(hubzarr.collect, "_needed", tagger_in_between)
        with pytest.raises(hubzarr.ConflictError, match=f"{d2}.*run gc again"):
            hub.gc(NAME, grace=0, dry_run=False)
    after = _objects(hub)
    # Nothing deleted, every mark taken back: only the tag is new.
    assert sorted(p.split("/", 1)[1] for p in after.keys() - before.keys()) == [
        "refs/names/kept.json",
        "refs/tags/kept.json",
    ]
    assert before.keys() <= after.keys()
    np.testing.assert_array_equal(hub.load(f"{NAME}:kept")[:], [2, 3, 1, 1])

    hub.delete_tag(NAME, "kept")
    assert hub.gc(NAME, grace=0, dry_run=False).objects > 0
    for version in (d1, d2):
        with pytest.raises(NotFoundError):
            hub.load(f"{NAME}:{version}")
        with pytest.raises(NotFoundError):
            hub.tag(f"{NAME}:{version}", "late")
    np.testing.assert_array_equal(hub.load(NAME)[:], [1, 1, 1, 1])


def test_a_handle_opened_before_a_revert_follows_its_branch_after_gc(
    hub: hubzarr.Hub, later: None
) -> None:
    """A revert moves its branch past the head it replaced: no ref reaches that head, but a
    handle opened before follows the seals through it, so gc keeps its record and seal (and
    refuses it by id)."""
    arr = hub.array((4,), NAME, dtype="int32", chunks=(1,))
    arr[:] = 1
    hub.tag(NAME, "v1")
    arr[:] = 2
    held = hubzarr.Hub(hub.root).load(NAME)
    np.testing.assert_array_equal(held[:], [2, 2, 2, 2])
    hub.revert(NAME, "v1")
    passed = hub.log(NAME)[0].parent  # the revert's version
    report = hub.gc(NAME, grace=0, dry_run=False)
    assert report.objects > 0
    held[0] = 9
    np.testing.assert_array_equal(hub.load(NAME)[:], [9, 1, 1, 1])
    np.testing.assert_array_equal(held[:], [9, 1, 1, 1])
    assert hub.log(NAME)[1].id == passed


def test_a_handle_whose_head_was_sealed_and_expired_reads_its_branch(
    hub: hubzarr.Hub, later: None
) -> None:
    """A handle at a head sealed since (by a branch made from it), then dropped by retention
    with the version it started from: a partial write through it reads the branch's current
    state (not the objects freed) and lands."""
    arr = hub.array((4,), NAME, dtype="int32", chunks=(4,))
    arr[:] = 1
    hub.commit(NAME)
    held = hubzarr.Hub(hub.root).load(NAME)  # a head that wrote nothing: reads the commit's
    np.testing.assert_array_equal(held[:], [1, 1, 1, 1])
    hub.branch(NAME, "tmp")  # seals that head
    hub.delete_branch(NAME, "tmp")
    arr[1] = 2
    hub.commit(NAME)
    arr[2] = 3
    hub.commit(NAME)
    assert hub.gc(NAME, grace=0, dry_run=False, keep_last=1).expired == 3
    held[3] = 4  # reads the chunk to change one element of it
    np.testing.assert_array_equal(hub.load(NAME)[:], [1, 2, 3, 4])
