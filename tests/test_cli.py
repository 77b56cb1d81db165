"""The ``hub`` command line, through click's test runner (stdout and stderr kept apart)."""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import hubzarr
from hubzarr import cli
from hubzarr.cli import app

VERSION_ID = r"[0-9a-f]{20}"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def hub_root(tmp_path: Path) -> str:
    return str(tmp_path / "hub")


@pytest.fixture
def demo(runner: CliRunner, hub_root: str) -> dict[str, str]:
    """Run ``hub demo`` on a fresh root; return the root and the id of the version tagged v1."""
    result = runner.invoke(app, ["demo", "--root", hub_root, "--samples", "4"])
    assert result.exit_code == 0, result.output
    match = re.search(rf"tagged demo/bigarray:v0 as v1 \(version ({VERSION_ID})\)", result.stdout)
    assert match, result.stdout
    return {"root": hub_root, "v1": match.group(1), "output": result.stdout}


def invoke_ok(runner: CliRunner, *args: str) -> list[str]:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    return result.stdout.splitlines()


def invoke_error(runner: CliRunner, *args: str, code: int = 1) -> str:
    """Run a command that must fail with one ``error:`` line on stderr; return that line."""
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def info_rows(lines: list[str]) -> dict[str, str]:
    rows = {}
    for line in lines:
        key, _, value = line.partition(":")
        rows[key] = value.strip()
    return rows


# -- demo ----------------------------------------------------------------------------------


def test_demo(runner: CliRunner, hub_root: str) -> None:
    result = runner.invoke(app, ["demo", "--root", hub_root, "--samples", "4"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == f"hub root: {hub_root}"
    assert lines[1].startswith("created demo/bigarray:v0: shape (4, 512, 512, 3), chunks (1, ")
    assert (
        "overwrote big[0]: v0 now has the new image (True), v1 still has the old one (True)"
        in lines
    )
    assert any(line.startswith("created demo/petabyte: 909.49 TiB in ") for line in lines)
    history = lines[lines.index("history of demo/bigarray:") + 1 :]
    assert len(history) == 2
    assert "(v0) [open head]" in history[0]
    assert "(tag: v1)" in history[1]
    assert "first image" in history[1]

    assert invoke_ok(runner, "ls", "--root", hub_root) == ["demo/bigarray", "demo/petabyte"]
    assert invoke_ok(runner, "ls", "demo/big", "--root", hub_root) == ["demo/bigarray"]
    assert invoke_ok(runner, "ls", "other", "--root", hub_root) == []

    # What the demo printed is what is stored.
    hub = hubzarr.Hub(hub_root)
    v0, v1 = hub.load("demo/bigarray:v0", mode="r"), hub.load("demo/bigarray:v1", mode="r")
    assert v0.shape == (4, 512, 512, 3)
    assert (v0[0] == 255 - v1[0]).all()
    assert not (v1[0] == 0).all()
    assert (v0[1] == 0).all()


def test_demo_runs_again_on_the_same_root(runner: CliRunner, demo: dict[str, str]) -> None:
    result = runner.invoke(app, ["demo", "--root", demo["root"], "--samples", "2"])
    assert result.exit_code == 0, result.output
    assert "deleted the previous run's demo/bigarray" in result.stdout.splitlines()
    assert "v1 still has the old one (True)" in result.stdout
    assert invoke_ok(runner, "ls", "--root", demo["root"]) == ["demo/bigarray", "demo/petabyte"]
    history = invoke_ok(runner, "log", "demo/bigarray:v0", "--root", demo["root"])
    assert len(history) == 2
    assert demo["v1"] not in "\n".join(history)


def test_demo_uses_the_root_from_the_environment(
    runner: CliRunner, hub_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUBZARR_ROOT", hub_root)
    lines = invoke_ok(runner, "demo", "--samples", "1")
    assert lines[0] == f"hub root: {hub_root}"
    assert invoke_ok(runner, "ls") == ["demo/bigarray", "demo/petabyte"]
    assert (Path(hub_root) / "demo").is_dir()


# -- info, log -----------------------------------------------------------------------------


def test_info_of_a_tag(runner: CliRunner, demo: dict[str, str]) -> None:
    rows = info_rows(invoke_ok(runner, "info", "demo/bigarray:v1", "--root", demo["root"]))
    assert rows["name"] == "demo/bigarray:v1"
    assert rows["ref"] == "v1 (tag)"
    assert rows["version"] == f"{demo['v1']} (sealed)"
    assert rows["shape"] == "(4, 512, 512, 3)"
    assert rows["dtype"] == "uint8"
    assert rows["chunks"] == "(1, 512, 512, 3)"
    assert rows["size"] == "3.00 MiB"
    assert "blosc" in rows["compressor"]
    assert rows["fill value"] == "0"


def test_info_of_a_branch(runner: CliRunner, demo: dict[str, str]) -> None:
    rows = info_rows(invoke_ok(runner, "info", "demo/bigarray:v0", "--root", demo["root"]))
    assert rows["ref"] == "v0 (branch)"
    assert re.fullmatch(rf"{VERSION_ID} \(open head\)", rows["version"])
    assert rows["version"].split()[0] != demo["v1"]
    # Without a ref: the default branch, which the demo created as v0.
    default = info_rows(invoke_ok(runner, "info", "demo/bigarray", "--root", demo["root"]))
    assert default["ref"] == "v0 (branch)"
    assert default["version"] == rows["version"]


def test_info_of_a_version_id(runner: CliRunner, demo: dict[str, str]) -> None:
    name = f"demo/bigarray:{demo['v1']}"
    rows = info_rows(invoke_ok(runner, "info", name, "--root", demo["root"]))
    assert rows["version"] == f"{demo['v1']} (sealed)"
    assert rows["shape"] == "(4, 512, 512, 3)"


def test_log(runner: CliRunner, demo: dict[str, str]) -> None:
    lines = invoke_ok(runner, "log", "demo/bigarray:v0", "--root", demo["root"])
    assert len(lines) == 2
    assert re.fullmatch(
        rf"  {VERSION_ID}  \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\dZ \(v0\) \[open head\]", lines[0]
    ), lines[0]
    assert re.fullmatch(
        rf"  {demo['v1']}  \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\dZ \(tag: v1\)  first image", lines[1]
    ), lines[1]
    # The tag's own history starts at the tagged version.
    assert invoke_ok(runner, "log", "demo/bigarray:v1", "--root", demo["root"]) == lines[1:]


# -- tag, branch ---------------------------------------------------------------------------


def test_tag_then_the_same_tag_again(runner: CliRunner, demo: dict[str, str]) -> None:
    root = demo["root"]
    lines = invoke_ok(runner, "tag", "demo/bigarray:v0", "v2", "-m", "second state", "--root", root)
    assert len(lines) == 1
    match = re.fullmatch(rf"tagged demo/bigarray:v0 as v2 \(version ({VERSION_ID})\)", lines[0])
    assert match, lines
    v2 = match.group(1)
    history = invoke_ok(runner, "log", "demo/bigarray:v2", "--root", root)
    assert history[0].startswith(f"  {v2}  ")
    assert history[0].endswith("(tag: v2)  second state")
    assert demo["v1"] in history[1]

    error = invoke_error(runner, "tag", "demo/bigarray:v0", "v2", "-m", "again", "--root", root)
    assert "v2" in error
    assert "already" in error
    # The failed attempt changed nothing.
    assert invoke_ok(runner, "log", "demo/bigarray:v2", "--root", root) == history


def test_tag_named_like_a_branch_is_refused(runner: CliRunner, demo: dict[str, str]) -> None:
    error = invoke_error(runner, "tag", "demo/bigarray:v1", "v0", "--root", demo["root"])
    assert "v0" in error


def test_tag_with_a_malformed_tag_name(runner: CliRunner, demo: dict[str, str]) -> None:
    error = invoke_error(runner, "tag", "demo/bigarray:v0", "bad tag", "--root", demo["root"])
    assert "invalid tag 'bad tag'" in error


def test_branch(runner: CliRunner, demo: dict[str, str]) -> None:
    root = demo["root"]
    lines = invoke_ok(runner, "branch", "demo/bigarray:v1", "fix", "--root", root)
    match = re.fullmatch(
        rf"created branch fix of demo/bigarray:v1 \(head ({VERSION_ID})\)", "\n".join(lines)
    )
    assert match, lines
    head = match.group(1)
    history = invoke_ok(runner, "log", "demo/bigarray:fix", "--root", root)
    assert len(history) == 2
    assert history[0].startswith(f"  {head}  ")
    assert history[0].endswith("(fix) [open head]")
    assert history[1].startswith(f"  {demo['v1']}  ")

    rows = info_rows(invoke_ok(runner, "info", "demo/bigarray:fix", "--root", root))
    assert rows["ref"] == "fix (branch)"
    assert rows["version"] == f"{head} (open head)"
    # The branch starts with v1's content, and writing to it leaves v1 alone.
    hub = hubzarr.Hub(root)
    fix, v1 = hub.load("demo/bigarray:fix"), hub.load("demo/bigarray:v1", mode="r")
    assert (fix[0] == v1[0]).all()
    fix[0] = 7
    assert (hub.load("demo/bigarray:v1", mode="r")[0] == v1[0]).all()

    error = invoke_error(runner, "branch", "demo/bigarray:v1", "fix", "--root", root)
    assert "fix" in error


def test_branch_of_a_missing_ref(runner: CliRunner, demo: dict[str, str]) -> None:
    error = invoke_error(runner, "branch", "demo/bigarray:nope", "b", "--root", demo["root"])
    assert "nope" in error


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["info", "log"])
def test_missing_repository(runner: CliRunner, demo: dict[str, str], command: str) -> None:
    error = invoke_error(runner, command, "demo/nosuch", "--root", demo["root"])
    assert "no repository demo/nosuch" in error


def test_missing_repository_on_an_empty_root(runner: CliRunner, hub_root: str) -> None:
    error = invoke_error(runner, "info", "alice/x", "--root", hub_root)
    assert "no repository alice/x" in error
    assert not Path(hub_root).exists()


def test_missing_ref(runner: CliRunner, demo: dict[str, str]) -> None:
    error = invoke_error(runner, "info", "demo/bigarray:v9", "--root", demo["root"])
    assert "v9" in error


@pytest.mark.parametrize(
    "bad", ["Demo/bigarray", "../x", "a/b/c", "demo/bigarray:v1:v2", "s3://bucket/x"]
)
@pytest.mark.parametrize("command", ["info", "log"])
def test_malformed_name(runner: CliRunner, hub_root: str, command: str, bad: str) -> None:
    error = invoke_error(runner, command, bad, "--root", hub_root)
    assert error.startswith("error: invalid name")
    assert not Path(hub_root).exists()


def test_credentials_in_root_are_refused(runner: CliRunner) -> None:
    result = runner.invoke(app, ["ls", "--root", "s3://user:secret@bucket/hub"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert "secret" not in result.output


def test_no_arguments_shows_help(runner: CliRunner) -> None:
    result = runner.invoke(app, [])
    assert result.exit_code == 2
    for command in ("demo", "ls", "rm", "info", "log", "tag", "branch", "configure"):
        assert command in result.output


# -- rm ------------------------------------------------------------------------------------


@pytest.fixture
def two_repos(hub_root: str) -> str:
    """A root holding alice/data (3 versions: v1's, the heads of main and dev) and
    alice/other; return the root."""
    hub = hubzarr.Hub(hub_root)
    arr = hub.array((8, 4), "alice/data", dtype="int32", chunks=(2, 4))
    arr[0] = 1
    hub.tag("alice/data", "v1", message="first")
    hub.branch("alice/data:v1", "dev")
    hub.array((2,), "alice/other")
    return hub_root


def on_disk(root: str, name: str) -> int:
    """Bytes in the files under a repository's folder, as the operating system counts them."""
    return sum(
        os.path.getsize(os.path.join(folder, f))
        for folder, _, files in os.walk(Path(root, name))
        for f in files
    )


@pytest.mark.parametrize("flag", ["--yes", "-y"])
def test_rm_deletes_one_repository(runner: CliRunner, two_repos: str, flag: str) -> None:
    lines = invoke_ok(runner, "rm", "alice/data", flag, "--root", two_repos)
    assert len(lines) == 1
    assert lines[0].startswith(
        f"deleted alice/data under {two_repos} (3 versions, 2 branches (dev, main), 1 tag (v1), "
    )
    assert invoke_ok(runner, "ls", "--root", two_repos) == ["alice/other"]
    with pytest.raises(hubzarr.NotFoundError):
        hubzarr.Hub(two_repos).load("alice/data:v1")
    error = invoke_error(runner, "rm", "alice/data", "--yes", "--root", two_repos)
    assert "no repository alice/data" in error


def test_rm_asks_and_keeps_on_no(
    runner: CliRunner, two_repos: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "_stdin_is_tty", lambda: True)
    result = runner.invoke(app, ["rm", "alice/data", "--root", two_repos], input="n\n")
    assert result.exit_code == 1, result.output
    assert result.stdout.strip() == "n"  # the runner echoes the answer, as a terminal would
    summary = hubzarr.Hub(two_repos).describe("alice/data")
    assert (
        f"delete alice/data under {two_repos}: 3 versions, 2 branches (dev, main), 1 tag (v1), "
        f"{cli._size(summary.nbytes)} in {summary.objects} objects? This cannot be undone. "
        "[y/N]:"
    ) in result.stderr
    assert result.stderr.endswith("not deleted: alice/data\n")
    assert invoke_ok(runner, "ls", "--root", two_repos) == ["alice/data", "alice/other"]
    assert (hubzarr.Hub(two_repos).load("alice/data:v1")[0] == 1).all()


def test_rm_asks_and_deletes_on_yes(
    runner: CliRunner, two_repos: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "_stdin_is_tty", lambda: True)
    result = runner.invoke(app, ["rm", "alice/data", "--root", two_repos], input="y\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1].startswith("deleted alice/data under ")
    assert invoke_ok(runner, "ls", "--root", two_repos) == ["alice/other"]


def test_rm_without_a_terminal_needs_yes(runner: CliRunner, two_repos: str) -> None:
    # CliRunner's stdin is no terminal, as in a script or CI.
    error = invoke_error(runner, "rm", "alice/data", "--root", two_repos)
    assert error.startswith(f"error: not deleting alice/data under {two_repos} (3 versions, ")
    assert "pass --yes" in error
    assert invoke_ok(runner, "ls", "--root", two_repos) == ["alice/data", "alice/other"]
    assert (hubzarr.Hub(two_repos).load("alice/data:v1")[0] == 1).all()


@pytest.mark.parametrize("ref", ["v1", "dev", "main"])
def test_rm_refuses_a_name_with_a_ref(runner: CliRunner, two_repos: str, ref: str) -> None:
    error = invoke_error(runner, "rm", f"alice/data:{ref}", "--yes", "--root", two_repos)
    assert f"'hub tag -d alice/data {ref}'" in error
    assert f"'hub branch -d alice/data {ref}'" in error
    assert invoke_ok(runner, "ls", "--root", two_repos) == ["alice/data", "alice/other"]
    refs = hubzarr.Hub(two_repos).describe("alice/data")
    assert (refs.branches, refs.tags) == (("dev", "main"), ("v1",))


def test_rm_of_a_missing_or_malformed_name(runner: CliRunner, two_repos: str) -> None:
    error = invoke_error(runner, "rm", "alice/dat", "--yes", "--root", two_repos)
    assert error.startswith(f"error: no repository alice/dat under {Path(two_repos).as_uri()}")
    assert "did you mean alice/data?" in error
    assert invoke_error(runner, "rm", "../x", "--root", two_repos).startswith("error: invalid")
    assert invoke_ok(runner, "ls", "--root", two_repos) == ["alice/data", "alice/other"]


# -- ls -l, --json ---------------------------------------------------------------------------


def long_rows(runner: CliRunner, root: str) -> dict[str, re.Match[str]]:
    """``hub ls -l``'s rows by name, each matched into size, versions, last change, refs."""
    lines = invoke_ok(runner, "ls", "-l", "--root", root)
    assert re.fullmatch(r"name +size +versions +last change +refs", lines[0]), lines[0]
    row = re.compile(
        r"(?P<name>\S+) +(?P<size>\d+(?:\.\d\d)? (?:B|kiB|MiB)) +(?P<versions>\d+) +"
        r"(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ) +(?P<refs>.+)"
    )
    matches = [row.fullmatch(line) for line in lines[1:]]
    assert all(matches), lines
    return {m["name"]: m for m in matches if m}


def test_ls_long(runner: CliRunner, two_repos: str) -> None:
    rows = long_rows(runner, two_repos)
    assert list(rows) == ["alice/data", "alice/other"]
    assert rows["alice/data"]["versions"] == "3"
    assert rows["alice/data"]["refs"] == "dev, main, tag: v1"
    assert rows["alice/other"]["versions"] == "1"
    assert rows["alice/other"]["refs"] == "main"
    before = on_disk(two_repos, "alice/data")
    assert rows["alice/data"]["size"] == cli._size(before)

    # Incompressible data written, and a tag: the size, the versions and the refs follow.
    hub = hubzarr.Hub(two_repos)
    hub.load("alice/data")[2:8] = np.random.default_rng(0).integers(-(2**31), 2**31, (6, 4))
    hub.tag("alice/data", "v2")
    after = on_disk(two_repos, "alice/data")
    assert after > before + 6 * 4 * 4
    rows = long_rows(runner, two_repos)
    assert rows["alice/data"]["size"] == cli._size(after)
    assert rows["alice/data"]["versions"] == "4"
    assert rows["alice/data"]["refs"] == "dev, main, tag: v1, tag: v2"
    assert list(long_rows(runner, two_repos)) == ["alice/data", "alice/other"]
    assert invoke_ok(runner, "ls", "-l", "alice/o", "--root", two_repos)[1].startswith(
        "alice/other "
    )


def test_ls_long_of_an_empty_root(runner: CliRunner, hub_root: str) -> None:
    assert invoke_ok(runner, "ls", "--long", "--root", hub_root) == []
    assert json.loads("".join(invoke_ok(runner, "ls", "-l", "--json", "--root", hub_root))) == []


def test_ls_json(runner: CliRunner, two_repos: str) -> None:
    out = json.loads("\n".join(invoke_ok(runner, "ls", "--json", "--root", two_repos)))
    assert out == hubzarr.Hub(two_repos).ls() == ["alice/data", "alice/other"]
    out = json.loads("\n".join(invoke_ok(runner, "ls", "alice/d", "--json", "--root", two_repos)))
    assert out == ["alice/data"]


def test_ls_long_json_is_the_library_summary(runner: CliRunner, two_repos: str) -> None:
    out = json.loads("\n".join(invoke_ok(runner, "ls", "-l", "--json", "--root", two_repos)))
    summaries = hubzarr.Hub(two_repos).describe_all()
    assert [doc["name"] for doc in out] == [s.name for s in summaries]
    for doc, summary in zip(out, summaries, strict=True):
        assert doc["nbytes"] == summary.nbytes == on_disk(two_repos, summary.name)
        assert doc["objects"] == summary.objects
        assert doc["versions"] == summary.versions
        assert doc["branches"] == list(summary.branches)
        assert doc["tags"] == list(summary.tags)
        assert datetime.fromisoformat(doc["last_change"]) == summary.last_change
    assert (out[0]["versions"], out[0]["branches"], out[0]["tags"]) == (3, ["dev", "main"], ["v1"])


# -- info, log --json ------------------------------------------------------------------------


def test_info_json_of_an_array(runner: CliRunner, two_repos: str) -> None:
    hub = hubzarr.Hub(two_repos)
    hub.array((3, 5), "alice/floats", dtype="float32", chunks=(1, 5), fill_value=float("nan"))
    out = json.loads(
        "\n".join(invoke_ok(runner, "info", "alice/floats", "--json", "--root", two_repos))
    )
    head = hub.log("alice/floats")[0]
    assert out == {
        "name": "alice/floats",
        "ref": "main",
        "ref_kind": "branch",
        "version": head.id,
        "sealed": False,
        "kind": "array",
        "shape": [3, 5],
        "dtype": "float32",
        "chunks": [1, 5],
        "nbytes": 60,
        "compressor": out["compressor"],
        "fill_value": "NaN",
    }
    assert out["compressor"]["id"] == "blosc"
    tagged = json.loads(
        "\n".join(invoke_ok(runner, "info", "alice/data:v1", "--json", "--root", two_repos))
    )
    assert (tagged["ref"], tagged["ref_kind"], tagged["sealed"]) == ("v1", "tag", True)
    assert tagged["version"] == hub.log("alice/data:v1")[0].id
    assert (tagged["dtype"], tagged["shape"], tagged["fill_value"]) == ("int32", [8, 4], 0)


def test_info_json_of_a_group(runner: CliRunner, hub_root: str) -> None:
    group = hubzarr.Hub(hub_root).group("alice/mnist")
    group.create_array("images", (6, 28, 28), dtype="uint8")
    group.create_array("train/labels", (6,), dtype="int64")
    out = json.loads(
        "\n".join(invoke_ok(runner, "info", "alice/mnist", "--json", "--root", hub_root))
    )
    assert (out["kind"], out["ref"], out["ref_kind"]) == ("group", "main", "branch")
    assert out["arrays"] == [
        {
            "path": "images",
            "shape": [6, 28, 28],
            "dtype": "uint8",
            "chunks": out["arrays"][0]["chunks"],
            "nbytes": 6 * 28 * 28,
        },
        {"path": "train/labels", "shape": [6], "dtype": "int64", "chunks": [6], "nbytes": 48},
    ]
    assert out["nbytes"] == 6 * 28 * 28 + 48


def test_log_json_is_the_library_log(runner: CliRunner, two_repos: str) -> None:
    hub = hubzarr.Hub(two_repos)
    for name in ("alice/data", "alice/data:v1", "alice/data:dev"):
        out = json.loads("\n".join(invoke_ok(runner, "log", name, "--json", "--root", two_repos)))
        entries = hub.log(name)
        assert [doc["id"] for doc in out] == [entry.id for entry in entries]
        for doc, entry in zip(out, entries, strict=True):
            assert doc["parent"] == entry.parent
            assert doc["time"].endswith("Z")
            assert datetime.fromisoformat(doc["time"]) == entry.time
            assert doc["message"] == entry.message
            assert doc["refs"] == list(entry.refs)
            assert doc["sealed"] is entry.sealed
    out = json.loads(
        "\n".join(invoke_ok(runner, "log", "alice/data", "--json", "--root", two_repos))
    )
    assert [(d["refs"], d["sealed"], d["message"]) for d in out] == [
        (["main"], False, None),
        (["tag: v1"], True, "first"),
    ]


@pytest.mark.parametrize("command", ["log", "info", "rm"])
def test_json_errors_go_to_stderr(runner: CliRunner, two_repos: str, command: str) -> None:
    args = ["--json"] if command != "rm" else ["--yes"]
    error = invoke_error(runner, command, "alice/nosuch", *args, "--root", two_repos)
    assert "no repository alice/nosuch" in error


def test_size_reads_as_dask_writes_it() -> None:
    from dask.utils import format_bytes

    for n in (0, 1, 921, 922, 1023, 1024, 1234, 12345678, 1234567890, 2**40 * 909, 2**60):
        assert cli._size(n) == format_bytes(n)


# -- configure -----------------------------------------------------------------------------


def test_configure_then_show(runner: CliRunner, isolated_env: Path, tmp_path: Path) -> None:
    root = str(tmp_path / "configured")
    config = isolated_env / ".config" / "hubzarr" / "config.json"
    lines = invoke_ok(runner, "configure", "--root", root, "--namespace", "alice")
    assert lines[0] == f"wrote {config}"
    assert json.loads(config.read_text()) == {"root": root, "namespace": "alice"}

    shown = invoke_ok(runner, "configure", "--show")
    assert shown[:3] == [f"config file: {config}", f"root:        {root}", "namespace:   alice"]
    # The connection settings follow; a local root needs none.
    assert shown[3:7] == [
        "endpoint:    (not set)",
        "region:      (not set)",
        "profile:     (not set)",
        "anon:        no",
    ]

    # Changing one setting keeps the other.
    invoke_ok(runner, "configure", "--namespace", "bob")
    assert invoke_ok(runner, "configure", "--show")[1:3] == [
        f"root:        {root}",
        "namespace:   bob",
    ]


def test_configured_root_and_namespace_are_used(runner: CliRunner, tmp_path: Path) -> None:
    root = tmp_path / "configured"
    invoke_ok(runner, "configure", "--root", str(root), "--namespace", "demo")
    invoke_ok(runner, "demo", "--samples", "1")
    assert (root / "demo").is_dir()
    assert invoke_ok(runner, "ls") == ["demo/bigarray", "demo/petabyte"]
    # A bare name belongs to the configured namespace.
    rows = info_rows(invoke_ok(runner, "info", "bigarray:v1"))
    assert rows["name"] == "demo/bigarray:v1"


def test_configure_show_reports_the_environment(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    invoke_ok(runner, "configure", "--root", "/from/config")
    monkeypatch.setenv("HUBZARR_ROOT", "memory://from-env")
    shown = invoke_ok(runner, "configure", "--show")
    assert "root:        memory://from-env" in shown
    assert "namespace:   library" in shown


def test_configure_show_defaults(runner: CliRunner, isolated_env: Path) -> None:
    shown = invoke_ok(runner, "configure", "--show")
    assert shown[1:3] == [f"root:        {isolated_env / '.hubzarr'}", "namespace:   library"]
    assert not (isolated_env / ".config" / "hubzarr" / "config.json").exists()


def test_configure_with_nothing(runner: CliRunner, isolated_env: Path) -> None:
    result = runner.invoke(app, ["configure"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "nothing to change" in result.stderr
    assert not (isolated_env / ".config" / "hubzarr").exists()


def test_configure_refuses_an_invalid_namespace(runner: CliRunner, isolated_env: Path) -> None:
    error = invoke_error(runner, "configure", "--namespace", "Not Valid")
    assert "invalid name" in error
    assert not (isolated_env / ".config" / "hubzarr" / "config.json").exists()


def test_configure_refuses_credentials(runner: CliRunner, isolated_env: Path) -> None:
    result = runner.invoke(app, ["configure", "--root", "s3://key:secret@bucket"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert "secret" not in result.output
    assert not (isolated_env / ".config" / "hubzarr" / "config.json").exists()


def test_broken_config_file_is_reported(runner: CliRunner, isolated_env: Path) -> None:
    config = isolated_env / ".config" / "hubzarr" / "config.json"
    config.parent.mkdir(parents=True)
    config.write_text("{broken")
    error = invoke_error(runner, "ls")
    assert str(config) in error
    assert "not valid JSON" in error
    result = runner.invoke(app, ["configure", "--show"])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: config file {config} is not valid JSON")
    # The message says to rerun 'hub configure': giving every setting anew repairs the file.
    invoke_ok(runner, "configure", "--root", "/new/root", "--namespace", "alice")
    assert json.loads(config.read_text()) == {"root": "/new/root", "namespace": "alice"}


def test_version(runner: CliRunner) -> None:
    import importlib.metadata

    lines = invoke_ok(runner, "--version")
    assert lines == [f"hubzarr {importlib.metadata.version('hubzarr')}"]
