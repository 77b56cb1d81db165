"""History you can navigate (issue 16): commits without tags, reads as of a time, and the log's
limits; on local folders and in memory, through the API and the ``hub`` command."""

from __future__ import annotations

import itertools
import json
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
