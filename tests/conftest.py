"""Shared fixtures: an isolated home and config for every test, and hub roots on every backend."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

import hubzarr


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Give each test its own HOME and config, so no test reads or writes the user's."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    for var in ("HUBZARR_ROOT", "HUBZARR_NAMESPACE", "HUBZARR_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    return home


def _memory_root() -> Iterator[str]:
    path = f"/hubzarr-test-{uuid.uuid4().hex}"
    yield f"memory://{path}"
    # fsspec's recursive rm is quadratic in the number of files; drop the keys directly.
    fs = fsspec.filesystem("memory")
    for key in [k for k in fs.store if k == path or k.startswith(path + "/")]:
        del fs.store[key]
    fs.pseudo_dirs[:] = [d for d in fs.pseudo_dirs if not (d == path or d.startswith(path + "/"))]


@pytest.fixture
def memory_root() -> Iterator[str]:
    """A fresh ``memory://`` hub root, removed afterwards."""
    yield from _memory_root()


@pytest.fixture
def local_root(tmp_path: Path) -> str:
    """A fresh local-folder hub root."""
    return str(tmp_path / "hub")


@pytest.fixture(params=["local", "memory"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh hub root on each backend that needs no server."""
    if request.param == "local":
        yield str(tmp_path / "hub")
    else:
        yield from _memory_root()


@pytest.fixture
def hub(root: str) -> hubzarr.Hub:
    """A :class:`hubzarr.Hub` on each backend."""
    return hubzarr.Hub(root)
