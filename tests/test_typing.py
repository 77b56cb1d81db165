"""A user's type checker accepts hubzarr: the README's snippets, written as user code
(tests/typed/readme_usage.py), pass ``mypy --strict`` with no cast and no ``type: ignore``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

api = pytest.importorskip("mypy.api")

HERE = Path(__file__).parent


def test_user_code_type_checks_strictly(tmp_path: Path) -> None:
    env_path = os.environ.get("MYPYPATH")
    # An editable install is found through an import hook mypy does not follow: point it at
    # the source tree (the repository root) directly.
    os.environ["MYPYPATH"] = str(HERE.parent)
    try:
        out, err, status = api.run(
            [
                "--strict",
                "--no-incremental",
                "--cache-dir",
                str(tmp_path / "cache"),
                "--config-file",
                os.devnull,
                str(HERE / "typed" / "readme_usage.py"),
            ]
        )
    finally:
        if env_path is None:
            os.environ.pop("MYPYPATH", None)
        else:
            os.environ["MYPYPATH"] = env_path
    assert status == 0, out + err
