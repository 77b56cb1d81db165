"""History you can navigate (issue 16): commits without tags, reads as of a time, and the log's
limits; on local folders and in memory, through the API and the ``hub`` command."""

from __future__ import annotations

import itertools
import json
import re
import warnings
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from typer.testing import CliRunner

import hubzarr
from hubzarr.cli import app

NAME = "alice/hist"


def _history(hub: hubzarr.Hub) -> tuple[dict[str, np.ndarray], list[hubzarr.LogEntry]]:
    """Three commits of a small array, then a write left in the head: the states each commit
    sealed (by version id, and ``"head"``), and the log."""
    arr = hub.array((4, 4), NAME, chunks=(2, 2), dtype="int32")
    states: dict[str, np.ndarray] = {}
    for value in (1, 2, 3):
        arr[:2] = value
        arr[2:, 2:] = value * 10
        states[hub.commit(NAME, f"commit {value}")] = arr[:]
    arr[0, 0] = -1
    states["head"] = arr[:]
    return states, hub.log(NAME)


def test_a_commit_seals_the_head_as_a_version_without_a_name(hub: hubzarr.Hub) -> None:
    states, log = _history(hub)
    commits = [v for v in states if v != "head"]
    assert [e.id for e in log if e.sealed][:3] == commits[::-1]
    for entry in log[1:4]:
        assert entry.sealed and not entry.refs and entry.message.startswith("commit ")
    assert log[0].refs == ("main",) and not log[0].sealed  # the branch went on in a new head
    for version, state in states.items():
        ref = "" if version == "head" else f":{version}"
        np.testing.assert_array_equal(hub.load_array(NAME + ref)[:], state)
    # Nothing written since the last commit: nothing is sealed, and the state's version is
    # returned.
    before = len(hub.log(NAME))
    hub.commit(NAME)  # seals the write at [0, 0]
    again = hub.commit(NAME, "again")
    assert again == hub.log(NAME)[1].id and len(hub.log(NAME)) == before + 1


def test_commit_refuses_what_is_not_a_branch(hub: hubzarr.Hub) -> None:
    states, _ = _history(hub)
    hub.tag(NAME, "v1")
    version = next(iter(states))
    for ref in ("v1", version):
        with pytest.raises(hubzarr.InvalidArgumentError, match="never changes: commit the branch"):
            hub.commit(f"{NAME}:{ref}")
    with pytest.raises(hubzarr.InvalidArgumentError, match="message must be a string"):
        hub.commit(NAME, 42)  # type: ignore[arg-type]
    with pytest.raises(hubzarr.NotFoundError):
        hub.commit(f"{NAME}:nope")
    with pytest.raises(hubzarr.NotFoundError):
        hub.commit("alice/none")


def test_as_of_reads_the_newest_version_sealed_by_then(hub: hubzarr.Hub) -> None:
    states, log = _history(hub)
    sealed = [e for e in log if e.sealed][::-1]  # oldest first
    tick = timedelta(microseconds=1)
    for older, newer in itertools.pairwise(sealed):
        np.testing.assert_array_equal(hub.load_array(NAME, as_of=newer.time)[:], states[newer.id])
        np.testing.assert_array_equal(
            hub.load_array(NAME, as_of=newer.time - tick)[:], states[older.id]
        )
    # Now: the newest commit, not the head's uncommitted write; any zone names the instant.
    now = datetime.now(UTC).astimezone(datetime.now().astimezone().tzinfo)
    arr = hub.load_array(NAME, as_of=now)
    np.testing.assert_array_equal(arr[:], states[sealed[-1].id])
    with pytest.raises(hubzarr.ReadOnlyError):
        arr[0, 0] = 5  # a version of the past is read-only
    assert hub.log(NAME, as_of=sealed[1].time)[0].id == sealed[1].id
    assert (
        hubzarr.runner.run(hub.reader(NAME, as_of=sealed[0].time).resolved()).version
        == sealed[0].id
    )
    assert hub.verify(NAME, as_of=sealed[0].time).ok
    # Before the first commit: refused, saying where history starts.
    with pytest.raises(hubzarr.NotFoundError, match=r"history starts at .*Z \(version"):
        hub.load_array(NAME, as_of=sealed[0].time - tick)
    # In the future: the head as it is, with a warning.
    with pytest.warns(hubzarr.AsOfWarning, match="in the future"):
        future = hub.load_array(NAME, as_of=datetime.now(UTC) + timedelta(days=1))
    np.testing.assert_array_equal(future[:], states["head"])


def test_as_of_refuses_times_without_a_zone_and_refs_that_never_change(hub: hubzarr.Hub) -> None:
    _history(hub)
    hub.tag(NAME, "v1")
    with pytest.raises(hubzarr.InvalidArgumentError, match="no time zone"):
        hub.load_array(NAME, as_of=datetime(2026, 1, 2, 15, 0))
    with pytest.raises(hubzarr.InvalidArgumentError, match="must be a datetime"):
        hub.load_array(NAME, as_of="2026-01-02")  # type: ignore[arg-type]
    with pytest.raises(hubzarr.InvalidArgumentError, match="tag, whose state never changes"):
        hub.load_array(f"{NAME}:v1", as_of=datetime.now(UTC))
    hub.array((2,), "alice/fresh", dtype="int8")
    with pytest.raises(hubzarr.NotFoundError, match="no sealed version yet"):
        hub.load_array("alice/fresh", as_of=datetime.now(UTC))


def test_a_branch_reads_its_history_before_it_existed(hub: hubzarr.Hub) -> None:
    """A branch's history runs through the versions it started from."""
    states, log = _history(hub)
    first = [e for e in log if e.sealed][-1]
    hub.branch(f"{NAME}:{first.id}", "side")
    side = hub.load_array(f"{NAME}:side")
    side[:] = 7
    version = hub.commit(f"{NAME}:side")
    np.testing.assert_array_equal(
        hub.load_array(f"{NAME}:side", as_of=first.time)[:], states[first.id]
    )
    now = datetime.now(UTC)
    assert hub.load_array(f"{NAME}:side", as_of=now).version == version


def test_the_log_takes_a_limit(hub: hubzarr.Hub) -> None:
    _, log = _history(hub)
    assert hub.log(NAME, limit=2) == log[:2]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(hubzarr.InvalidArgumentError, match="limit must be a positive"):
            hub.log(NAME, limit=bad)  # type: ignore[arg-type]


def test_hub_commit_log_and_as_of_on_the_command_line(local_root: str) -> None:
    hub = hubzarr.Hub(local_root)
    runner = CliRunner()

    def hub_cmd(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(app, [*args, "--root", local_root])
        return result.exit_code, result.stdout, result.stderr

    arr = hub.array((4,), NAME, chunks=(2,), dtype="int32")
    arr[:] = 1
    code, out, _ = hub_cmd("commit", NAME, "-m", "ones")
    assert code == 0 and out.startswith(f"committed {NAME} as version ")
    version = out.split()[-1]
    code, out, _ = hub_cmd("commit", NAME)
    assert (
        code == 0
        and out.strip() == f"nothing to commit: {NAME} holds no change since version {version}"
    )
    arr[:] = 2
    hub.commit(NAME, "twos")
    code, out, _ = hub_cmd("log", NAME, "-n", "2", "--json")
    entries = json.loads(out)
    assert code == 0 and len(entries) == 2 and entries[1]["message"] == "twos"
    when = hub.log(NAME)[2].time.isoformat()  # the first commit's time, with its zone
    code, out, _ = hub_cmd("log", NAME, "--as-of", when, "--json")
    assert code == 0 and json.loads(out)[0]["id"] == version
    code, out, _ = hub_cmd("verify", NAME, "--as-of", when)
    assert code == 0 and f"(version {version})" in out
    code, _, err = hub_cmd("log", NAME, "--as-of", "yesterday")
    assert code != 0 and "is not a time" in err
    code, _, err = hub_cmd("log", NAME, "--as-of", "2026-01-02T15:00")
    assert code != 0 and "no time zone" in err
    code, out, err = hub_cmd("log", NAME, "--as-of", "2999-01-01T00:00Z", "-n", "1")
    assert code == 0 and "note: as_of 2999-01-01T00:00:00Z is in the future" in err
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the note is not also a Python warning
        assert hub_cmd("log", NAME, "--as-of", "2999-01-01T00:00Z")[0] == 0


def test_diff_lists_metadata_changes_and_chunks_as_regions(hub: hubzarr.Hub) -> None:
    arr = hub.array((10, 10), NAME, chunks=(5, 5), dtype="int32")
    arr[:] = 1
    hub.tag(NAME, "v1")
    arr[0, 0] = 5  # chunk (0, 0) changed
    arr.zarr.attrs["units"] = "m"
    arr.zarr.resize((15, 5))  # chunks (0, 1) and (1, 1) dropped
    arr = hub.load_array(NAME)
    arr[12, 0] = 3  # chunk (2, 0) added
    hub.tag(NAME, "v2")
    found = hub.diff(f"{NAME}:v1", "v2")
    assert found.a.endswith(hub.log(f"{NAME}:v1")[0].id) and found
    (node,) = found.nodes
    assert (node.path, node.kind, node.status) == ("", "array", "changed")
    assert node.metadata == {"shape": ([10, 10], [15, 5]), "attributes": ({}, {"units": "m"})}
    assert (node.added, node.changed, node.deleted) == (((2, 0),), ((0, 0),), ((0, 1), (1, 1)))
    assert node.region((2, 0)) == (slice(10, 15), slice(0, 5))
    # The other way round, and a state against itself.
    back = hub.diff(f"{NAME}:v2", "v1").nodes[0]
    assert (back.added, back.deleted) == (((0, 1), (1, 1)), ((2, 0),))
    assert not hub.diff(f"{NAME}:v2", f"{NAME}:v2")
    # What the open head wrote since counts, uncommitted.
    arr[6, 1] = 8
    assert hub.diff(f"{NAME}:v2", NAME).nodes[0].changed == ((1, 0),)


def test_diff_of_a_group_names_each_member(hub: hubzarr.Hub) -> None:
    group = hub.group(NAME)
    group.create_array("x", shape=(4,), chunks=(2,), dtype="int8")[:] = 1
    group.create_array("old", shape=(2,), chunks=(2,), dtype="int8")[:] = 1
    hub.tag(NAME, "v1")
    group = hub.load_group(NAME)
    group.attrs = {"k": 2}
    group["x"][0] = 5
    group.create_array("y", shape=(4,), chunks=(2,), dtype="int8")[:] = 2
    del group["old"]
    nodes = {n.path: n for n in hub.diff(f"{NAME}:v1", NAME).nodes}
    assert set(nodes) == {"", "x", "y", "old"}
    assert nodes[""].kind == "group" and nodes[""].metadata == {"attributes": ({}, {"k": 2})}
    assert nodes["x"].changed == ((0,),) and nodes["x"].status == "changed"
    assert nodes["y"].status == "added" and nodes["y"].added == ((0,), (1,))
    assert nodes["old"].status == "deleted" and nodes["old"].deleted == ((0,),)


def test_diff_reads_only_the_shards_the_two_do_not_share(
    local_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its cost follows the change, not the array: shards of 4 keys, 40 chunks, one changed."""
    from counting import counting_hub

    import hubzarr.index as hindex

    monkeypatch.setattr(hindex, "SHARD_KEYS", 4)
    monkeypatch.setattr(hindex, "INLINE_KEYS", 2)
    hub = hubzarr.Hub(local_root)
    arr = hub.array((40,), NAME, chunks=(1,), dtype="int32")
    arr[:] = np.arange(40)
    hub.tag(NAME, "v1")
    arr[17] = -1
    hub.tag(NAME, "v2")
    hindex.SHARDS.clear()
    counted, counter = counting_hub(local_root)
    (node,) = counted.diff(f"{NAME}:v1", "v2").nodes
    assert node.changed == ((17,),) and not node.added and not node.deleted
    shards = [p for op, p in counter.paths if "/shards/" in p]
    assert len(shards) == 2  # the one shard each side holds alone (of 10 each)
    assert not [p for op, p in counter.paths if op.startswith("list")]
    # A chunk deleted (its shard's keys differ) and one rewritten in another shard.
    hub.load_array(NAME)[5] = 0  # the fill value: the chunk is deleted
    hub.load_array(NAME)[33] = -3
    hub.tag(NAME, "v3")
    hindex.SHARDS.clear()
    counter.reset()
    (node,) = counted.diff(f"{NAME}:v2", "v3").nodes
    assert (node.deleted, node.changed, node.added) == (((5,),), ((33,),), ())
    assert len([p for op, p in counter.paths if "/shards/" in p]) == 4


def test_diff_refuses_two_repositories_and_takes_times(hub: hubzarr.Hub) -> None:
    _, log = _history(hub)
    hub.array((2,), "alice/other", dtype="int8")
    with pytest.raises(hubzarr.InvalidArgumentError, match="one repository"):
        hub.diff(NAME, "alice/other")
    with pytest.raises(hubzarr.NotFoundError):
        hub.diff(NAME, "nope")
    first, last = log[-1], log[1]
    found = hub.diff(NAME, NAME, a_as_of=first.time, b_as_of=last.time)
    assert found.a.endswith(first.id) and found.b.endswith(last.id)
    assert found.nodes[0].changed  # every commit rewrote chunks


def test_hub_diff_on_the_command_line(local_root: str) -> None:
    hub = hubzarr.Hub(local_root)
    runner = CliRunner()
    arr = hub.array((10,), NAME, chunks=(5,), dtype="int32")
    arr[:] = 1
    hub.tag(NAME, "v1")
    when = hub.log(f"{NAME}:v1")[0].time.isoformat()
    arr[7] = 2
    hub.tag(NAME, "v2")

    def run(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(app, ["diff", *args, "--root", local_root])
        return result.exit_code, result.stdout, result.stderr

    code, out, _ = run(f"{NAME}:v1", "v2")
    assert code == 0 and out.splitlines()[1:] == [
        "/ (array, changed)",
        "  +0 ~1 -0 chunks",
        "  ~ [5:10]",
    ]
    code, out, _ = run(f"{NAME}:v1", "v2", "--stat")
    assert code == 0 and out.splitlines()[1] == "/  array  changed  +0 ~1 -0 chunks"
    code, out, _ = run(f"{NAME}:v1", "v2", "--json")
    assert code == 0 and json.loads(out)["nodes"][0]["changed"] == [[[5, 10]]]
    code, out, _ = run(when, f"{NAME}:main")  # what changed since v1's time
    assert code == 0 and "~ [5:10]" in out
    code, out, _ = run(f"{NAME}:v2", "v2")
    assert code == 0 and out.splitlines()[1] == "no differences"
    code, _, err = run(when, when)
    assert code != 0 and "not two times" in err


@pytest.mark.parametrize("kind", ["s3", "gcs"])
def test_commit_as_of_and_diff_on_object_stores(kind: str, request: pytest.FixtureRequest) -> None:
    """The same on S3 (moto) and GCS (the emulator): seal times come from this machine's
    clock, and the diff reads the shards it needs through the object store."""
    backend = request.getfixturevalue(f"{kind}_backend")
    hub = backend.hub()
    states, log = _history(hub)
    sealed = [e for e in log if e.sealed]
    for entry in sealed:
        np.testing.assert_array_equal(hub.load_array(NAME, as_of=entry.time)[:], states[entry.id])
    (node,) = hub.diff(f"{NAME}:{sealed[-1].id}", sealed[0].id).nodes
    assert node.changed == ((0, 0), (0, 1), (1, 1))  # the first rows' and the corner's chunks


@pytest.mark.parametrize("layout", [2, 3])
def test_diff_in_older_layouts(
    local_root: str, layout: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Layout 2 (indexes merged from manifests) and layout 3 (shards named by content) give
    the same answers; layout 2 compares whole indexes."""
    from hubzarr import versions

    with monkeypatch.context() as old:
        old.setattr(versions, "LAYOUT", layout)
        hub = hubzarr.Hub(local_root)
        arr = hub.array((300,), NAME, chunks=(1,), dtype="int16")  # 300 chunks: shards
        arr[:] = 1
        hub.tag(NAME, "v1")
    hub = hubzarr.Hub(local_root)
    arr = hub.load_array(NAME)
    arr[5] = 2
    arr[299] = 0  # the fill value: its chunk is deleted
    hub.tag(NAME, "v2")
    (node,) = hub.diff(f"{NAME}:v1", "v2").nodes
    assert (node.changed, node.deleted, node.added) == (((5,),), ((299,),), ())


def _branches(hub: hubzarr.Hub) -> tuple[hubzarr.HubArray, hubzarr.HubArray]:
    """main and dev, from one tag of a 4x4 array of ones in chunks of 2x2."""
    main = hub.array((4, 4), NAME, chunks=(2, 2), dtype="int32")
    main[:] = 1
    hub.tag(NAME, "v1")
    hub.branch(f"{NAME}:v1", "dev")
    return hub.load_array(NAME), hub.load_array(f"{NAME}:dev")


def test_a_merge_takes_what_one_side_changed_and_names_both_parents(hub: hubzarr.Hub) -> None:
    main, dev = _branches(hub)
    dev[0, 0] = 5  # chunk (0, 0), on dev
    main[3, 3] = 7  # chunk (1, 1), on main
    dev[2, 0] = 9
    main[2, 0] = 9  # chunk (1, 0) on both, to the same bytes: no conflict
    version = hub.merge(NAME, "dev")
    expected = np.ones((4, 4), dtype="int32")
    expected[0, 0], expected[3, 3], expected[2, 0] = 5, 7, 9
    np.testing.assert_array_equal(hub.load_array(NAME)[:], expected)
    np.testing.assert_array_equal(hub.load_array(f"{NAME}:{version}")[:], expected)
    entry = next(e for e in hub.log(NAME) if e.id == version)
    dev_commit = hub.log(f"{NAME}:dev")[1].id  # dev's head was committed first
    assert entry.merged == (dev_commit,) and entry.message == "merge dev into main"
    assert hub.log(f"{NAME}:dev")[0].parent == dev_commit  # dev itself is untouched
    np.testing.assert_array_equal(hub.load_array(f"{NAME}:dev")[0, 0], 5)
    # Merging again brings nothing new: the branch's state is returned.
    assert hub.merge(NAME, "dev") == hub.log(NAME)[0].parent
    with pytest.raises(hubzarr.InvalidArgumentError, match="into itself"):
        hub.merge(NAME, "main")


def test_a_conflict_changes_nothing_and_names_each_region(hub: hubzarr.Hub) -> None:
    main, dev = _branches(hub)
    dev[0, 1] = 5
    main[1, 0] = 6  # chunk (0, 0) on both, differently
    dev[3, 3] = 8
    main[3, 3] = 9  # chunk (1, 1) too
    before = hub.load_array(NAME)[:]
    with pytest.raises(hubzarr.MergeConflictError, match=r"/: \[0:2, 0:2\], \[2:4, 2:4\]") as info:
        hub.merge(NAME, "dev")
    (node,) = info.value.conflicts
    assert node.changed == ((0, 0), (1, 1))
    np.testing.assert_array_equal(hub.load_array(NAME)[:], before)
    assert not hub.log(NAME)[1].merged
    hub.merge(NAME, "dev", strategy="ours")
    np.testing.assert_array_equal(hub.load_array(NAME)[:], before)
    dev2 = hub.load_array(f"{NAME}:dev")
    dev2[0, 0] = 11  # chunk (0, 0) again on dev, after the first merge
    hub.merge(NAME, "dev", strategy="theirs")
    got = hub.load_array(NAME)[:]
    # Against the version merged first (the common ancestor now), both sides changed chunk
    # (0, 0): dev's whole chunk is taken. Only main changed chunk (1, 1) since: main's stays.
    np.testing.assert_array_equal(got[:2, :2], dev2[:2, :2])
    assert got[3, 3] == 9 and dev2[3, 3] == 8


def test_a_metadata_change_on_both_sides_conflicts(hub: hubzarr.Hub) -> None:
    main, dev = _branches(hub)
    main.zarr.resize((6, 4))
    dev.zarr.resize((8, 4))
    with pytest.raises(hubzarr.MergeConflictError, match=r"metadata \(shape\)"):
        hub.merge(NAME, "dev")
    hub.merge(NAME, "dev", strategy="theirs")
    assert hub.load_array(NAME).shape == (8, 4)


def test_revert_makes_a_new_version_equal_to_an_older_state(hub: hubzarr.Hub) -> None:
    states, log = _history(hub)
    first = [e for e in log if e.sealed][-1]
    before = len(hub.log(NAME))
    version = hub.revert(NAME, first.id)
    np.testing.assert_array_equal(hub.load_array(NAME)[:], states[first.id])
    np.testing.assert_array_equal(hub.load_array(f"{NAME}:{version}")[:], states[first.id])
    entries = hub.log(NAME)
    assert entries[1].id == version and entries[1].message == f"revert to {first.id}"
    assert len(entries) == before + 2  # the head's write committed, then the revert
    # Every earlier state is still there.
    for v, state in states.items():
        if v != "head":
            np.testing.assert_array_equal(hub.load_array(f"{NAME}:{v}")[:], state)
    hub.tag(NAME, "t")
    with pytest.raises(hubzarr.InvalidArgumentError, match="never changes"):
        hub.revert(f"{NAME}:t", first.id)
    hub.array((2,), "alice/other", dtype="int8")
    with pytest.raises(hubzarr.InvalidArgumentError, match="another repository"):
        hub.revert(NAME, "alice/other:main")


def test_merge_and_revert_on_the_command_line(local_root: str) -> None:
    hub = hubzarr.Hub(local_root)
    runner = CliRunner()
    main, dev = _branches(hub)
    dev[0, 0] = 5
    main[0, 1] = 6

    def run(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(app, [*args, "--root", local_root])
        return result.exit_code, result.stdout, result.stderr

    code, _, err = run("merge", NAME, "dev")
    assert code != 0 and "[0:2, 0:2]" in err and "--ours / --theirs" in err
    code, out, _ = run("merge", NAME, "dev", "--theirs", "-m", "take dev")
    assert code == 0 and out.startswith(f"merged dev into {NAME}")
    code, out, _ = run("log", NAME, "-n", "2")
    assert code == 0 and "[merged " in out and "take dev" in out
    v1 = hub.log(f"{NAME}:v1")[0].id
    code, out, _ = run("revert", NAME, "v1")
    assert code == 0 and out.startswith(f"reverted {NAME} to v1")
    np.testing.assert_array_equal(hub.load_array(NAME)[:], hub.load_array(f"{NAME}:{v1}")[:])
    assert run("merge", NAME, "dev", "--ours", "--theirs")[0] != 0


def test_the_log_graph_takes_in_merged_versions(local_root: str) -> None:
    hub = hubzarr.Hub(local_root)
    main, dev = _branches(hub)
    dev[0, 0] = 5
    d1 = hub.commit(f"{NAME}:dev", "dev one")
    dev[0, 2] = 6
    d2 = hub.commit(f"{NAME}:dev", "dev two")
    main[2, 2] = 7
    m1 = hub.commit(NAME, "main one")
    merge = hub.merge(NAME, "dev", message="take dev")
    v1 = hub.log(f"{NAME}:v1")[0].id

    plain = [e.id for e in hub.log(NAME) if e.sealed]
    assert d1 not in plain and d2 not in plain
    graph = [e.id for e in hub.log(NAME, graph=True)]
    # Every version of both lines, each after all that descend from it.
    assert set(plain) | {d1, d2} <= set(graph)
    assert graph.index(merge) < min(graph.index(d2), graph.index(m1))
    assert graph.index(d2) < graph.index(d1) < graph.index(v1)
    assert graph.index(m1) < graph.index(v1)
    with pytest.raises(hubzarr.InvalidArgumentError, match="graph"):
        hub.log(NAME, graph="yes")  # type: ignore[arg-type]

    result = CliRunner().invoke(app, ["log", NAME, "--graph", "--root", local_root])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    at = {
        v: next(i for i, line in enumerate(lines) if re.match(rf"[*| ]+{v}\b", line))
        for v in (merge, d2, d1, m1)
    }
    # The merge on the first column, then dev's line opening beside it, then main's line
    # joining back before the version both started from.
    assert lines[at[merge]].startswith("* ") and lines[at[merge] + 1] == "|\\"
    assert lines[at[d2]].startswith("| * ") and lines[at[d1]].startswith("| * ")
    assert lines[at[m1]].startswith("* | ")
    assert "|/" in lines[max(at.values()) + 1 :]
