"""Settings: where the hub root and default namespace come from, and the config file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from hubzarr.config import (
    DEFAULT_NAMESPACE,
    Settings,
    config_path,
    default_root,
    load_settings,
    resolve_namespace,
    resolve_root,
    save_settings,
)
from hubzarr.errors import FormatError, InvalidArgumentError, InvalidNameError, StorageError


def write_config(text: str) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# -- config_path ---------------------------------------------------------------------------


def test_config_path_follows_xdg(isolated_env: Path) -> None:
    assert config_path() == isolated_env / ".config" / "hubzarr" / "config.json"


def test_config_path_defaults_to_home_config(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert config_path() == isolated_env / ".config" / "hubzarr" / "config.json"
    monkeypatch.setenv("XDG_CONFIG_HOME", "")
    assert config_path() == isolated_env / ".config" / "hubzarr" / "config.json"


def test_config_path_explicit(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(isolated_env / "xdg"))
    assert config_path() == isolated_env / "xdg" / "hubzarr" / "config.json"
    monkeypatch.setenv("HUBZARR_CONFIG", str(isolated_env / "elsewhere.json"))
    assert config_path() == isolated_env / "elsewhere.json"
    monkeypatch.setenv("HUBZARR_CONFIG", "~/tilde.json")
    assert config_path() == isolated_env / "tilde.json"


# -- resolve_root --------------------------------------------------------------------------


def test_default_root_is_in_home(isolated_env: Path) -> None:
    assert default_root() == str(isolated_env / ".hubzarr")
    assert resolve_root() == str(isolated_env / ".hubzarr")


def test_resolve_root_precedence(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert resolve_root() == str(isolated_env / ".hubzarr")

    save_settings(Settings(root="memory://from-config"))
    assert resolve_root() == "memory://from-config"

    monkeypatch.setenv("HUBZARR_ROOT", "s3://from-env/prefix")
    assert resolve_root() == "s3://from-env/prefix"

    assert resolve_root("/explicit/root") == "/explicit/root"
    assert resolve_root(tmp_path / "path-like") == str(tmp_path / "path-like")

    monkeypatch.delenv("HUBZARR_ROOT")
    assert resolve_root() == "memory://from-config"
    assert resolve_root("explicit") == "explicit"


def test_empty_root_variable_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    save_settings(Settings(root="memory://from-config"))
    monkeypatch.setenv("HUBZARR_ROOT", "")
    assert resolve_root() == "memory://from-config"


def test_resolve_root_checks_the_root_wherever_it_comes_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for blank in ("", "   "):
        with pytest.raises(InvalidArgumentError, match="the hub root is empty"):
            resolve_root(blank)
    monkeypatch.setenv("HUBZARR_ROOT", " ")
    with pytest.raises(InvalidArgumentError, match=r"the hub root in \$HUBZARR_ROOT is empty"):
        resolve_root()
    monkeypatch.setenv("HUBZARR_ROOT", "s3://key:se/cret@bucket")
    with pytest.raises(InvalidArgumentError, match=r"\$HUBZARR_ROOT \(s3://\.\.\.\)") as info:
        resolve_root()
    assert "cret" not in str(info.value)
    monkeypatch.delenv("HUBZARR_ROOT")
    for configured in ("", "gs://token:se/cret@bucket/hub"):
        path = write_config(json.dumps({"root": configured}))
        with pytest.raises(InvalidArgumentError, match="the hub root in the config file") as info:
            resolve_root()
        assert str(path) in str(info.value) and "cret" not in str(info.value)
    assert resolve_root("/explicit") == "/explicit"  # the broken config is not needed


def test_config_without_root_falls_back_to_default(isolated_env: Path) -> None:
    save_settings(Settings(namespace="alice"))
    assert resolve_root() == str(isolated_env / ".hubzarr")


@pytest.mark.parametrize("bad", [42, b"/tmp/hub", ["/tmp/hub"], 1.5])
def test_resolve_root_refuses_other_types(bad: object) -> None:
    with pytest.raises(InvalidArgumentError, match=type(bad).__name__):
        resolve_root(bad)  # type: ignore[arg-type]


def test_explicit_settings_skip_a_broken_config_file(monkeypatch: pytest.MonkeyPatch) -> None:
    write_config("{not json")
    assert resolve_root("/explicit") == "/explicit"
    monkeypatch.setenv("HUBZARR_ROOT", "/from-env")
    monkeypatch.setenv("HUBZARR_NAMESPACE", "alice")
    assert resolve_root() == "/from-env"
    assert resolve_namespace() == "alice"
    monkeypatch.delenv("HUBZARR_ROOT")
    with pytest.raises(FormatError):
        resolve_root()


# -- resolve_namespace ---------------------------------------------------------------------


def test_resolve_namespace_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    assert DEFAULT_NAMESPACE == "library"
    assert resolve_namespace() == "library"

    save_settings(Settings(namespace="from-config"))
    assert resolve_namespace() == "from-config"

    monkeypatch.setenv("HUBZARR_NAMESPACE", "from-env")
    assert resolve_namespace() == "from-env"

    monkeypatch.setenv("HUBZARR_NAMESPACE", "")
    assert resolve_namespace() == "from-config"

    monkeypatch.delenv("HUBZARR_NAMESPACE")
    save_settings(Settings(root="/only/a/root"))
    assert resolve_namespace() == "library"


# -- save_settings, load_settings ----------------------------------------------------------


def test_load_settings_without_a_file_is_empty() -> None:
    assert not config_path().exists()
    assert load_settings() == Settings()
    assert load_settings() == Settings(root=None, namespace=None)


def test_save_settings_round_trip() -> None:
    path = save_settings(Settings(root="s3://bucket/hub", namespace="alice"))
    assert path == config_path()
    assert json.loads(path.read_text(encoding="utf-8")) == {
        "root": "s3://bucket/hub",
        "namespace": "alice",
    }
    assert load_settings() == Settings(root="s3://bucket/hub", namespace="alice")


def test_save_settings_leaves_out_unset_fields() -> None:
    path = save_settings(Settings(root="/hub"))
    assert json.loads(path.read_text(encoding="utf-8")) == {"root": "/hub"}
    save_settings(Settings(namespace="bob"))
    assert load_settings() == Settings(root=None, namespace="bob")


def test_save_settings_writes_a_private_file() -> None:
    old_umask = os.umask(0)  # the mode must not depend on a permissive umask
    try:
        path = save_settings(Settings(root="/hub", namespace="alice"))
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Replacing an existing, world-readable file makes it private too.
    path.chmod(0o644)
    save_settings(Settings(root="/other"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]


def test_save_settings_creates_the_folder(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = isolated_env / "deep" / "er" / "config.json"
    monkeypatch.setenv("HUBZARR_CONFIG", str(target))
    assert save_settings(Settings(namespace="alice")) == target
    assert load_settings() == Settings(namespace="alice")


@pytest.mark.parametrize("bad", ["Alice", "a/b", "../x", "", "bad name", "\u0430lice", "x\n"])
def test_save_settings_refuses_an_invalid_namespace(bad: str) -> None:
    save_settings(Settings(root="/kept", namespace="kept"))
    with pytest.raises(InvalidNameError, match="namespace"):
        save_settings(Settings(root="/new", namespace=bad))
    assert load_settings() == Settings(root="/kept", namespace="kept")


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "",
        '{"root": "/hub",}',
        "\ufeff\x00",
    ],
)
def test_load_settings_malformed_json(text: str) -> None:
    path = write_config(text)
    with pytest.raises(FormatError, match="not valid JSON") as info:
        load_settings()
    assert str(path) in str(info.value)
    assert isinstance(info.value, StorageError)
    assert isinstance(info.value, OSError)


def test_load_settings_not_utf8() -> None:
    path = write_config("")
    path.write_bytes(b'{"root": "/h\xff\xfeb"}')
    with pytest.raises(FormatError) as info:
        load_settings()
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "data",
    [
        [],
        ["root", "/hub"],
        "just a string",
        42,
        None,
        {"root": 42},
        {"namespace": ["alice"]},
        {"root": "/hub", "extra": "field"},
        {"ROOT": "/hub"},
        {"root": {"nested": "/hub"}},
    ],
)
def test_load_settings_wrong_fields(data: object) -> None:
    path = write_config(json.dumps(data))
    with pytest.raises(FormatError, match="must be a JSON object") as info:
        load_settings()
    assert str(path) in str(info.value)
    with pytest.raises(FormatError):
        resolve_namespace()


def test_load_settings_accepts_nulls() -> None:
    write_config('{"root": null, "namespace": "alice"}')
    assert load_settings() == Settings(root=None, namespace="alice")
    assert resolve_namespace() == "alice"
