"""The ``hub`` command line, through click's test runner (stdout and stderr kept apart)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import hubzarr
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
    for command in ("demo", "ls", "info", "log", "tag", "branch", "configure"):
        assert command in result.output


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
