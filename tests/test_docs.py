"""Every code example of the documentation site and the README runs, as written.

Each page is one test: its ``python`` blocks run in order in one namespace, in this process,
and its ``sh`` blocks in ``bash -e``, in order, all in a fresh home whose embedded default root
(``~/.hubzarr``) starts empty, with the page's working folder as the current one. A failing
block fails the test with the page, the line and the block.

Install commands (``python3 -m pip install ...``) are not run: each one's extras are checked to
exist in ``pyproject.toml``. Nor is the README's test command (``python3 -m pytest ...``, this
suite): it is checked to be what ``.ci/run`` runs. A page may ask for servers in an HTML comment,
``<!-- docs-test: s3 gcs -->``: a moto S3 server (buckets ``my-bucket`` and ``public-data``,
which anyone may read) and a GCS emulator (``my-gcs-bucket``), reached the way real
deployments are configured, through the environment (``AWS_ENDPOINT_URL``,
``STORAGE_EMULATOR_HOST``), so the examples are the commands a user types.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
import traceback
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import pytest
from servers import (
    S3_KEY,
    S3_REGION,
    S3_SECRET,
    Server,
    make_bucket,
    make_gcs_bucket,
    make_public_read,
    s3_client,
)

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
#: Every page of the site, and the README.
PAGES = sorted([REPO / "README.md", *DOCS.rglob("*.md")])
RUN = {"python", "sh"}
#: Fences that show rather than run: program output, files' contents.
SHOWN = {"text", "json", "toml", "yaml"}
_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)(?P<info>[^\n`]*)$")
_SERVICES = re.compile(r"<!--\s*docs-test:\s*([a-z0-9 ]+?)\s*-->")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    language: str
    line: int  # of the opening fence, 1-based
    code: str


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of ``page``, in order (Material's ``title=...`` info ignored)."""
    found: list[Block] = []
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        indent, fence = len(match["indent"]), match["fence"]
        language = match["info"].strip().split(" ")[0].strip("{}.")
        body: list[str] = []
        start = i + 1
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][indent:])
            i += 1
        found.append(Block(language, start, "\n".join(body) + "\n"))
        i += 1
    return found


def _extras() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return set(project["optional-dependencies"])


#: Stands in for ``python3`` in the ``sh`` blocks (installs and the test suite are checked),
#: and for ``hub``: the entry point's own function (``hubzarr.cli:app``) run by this Python,
#: wherever pip put the script.
_SHIM = r"""
hub() {
    "$HUB_DOCS_PYTHON" -m hubzarr.cli "$@"
}
python3() {
    if [ "$1" = "-m" ] && [ "$2" = "pip" ] && [ "$3" = "install" ]; then
        "$HUB_DOCS_PYTHON" "$HUB_DOCS_CHECK" install "${@:4}"
    elif [ "$1" = "-m" ] && [ "$2" = "pytest" ]; then
        "$HUB_DOCS_PYTHON" "$HUB_DOCS_CHECK" pytest "${@:3}"
    else
        "$HUB_DOCS_PYTHON" "$@"
    fi
}
"""


def check_install(args: list[str]) -> None:
    """Fail unless every ``hubzarr[extra]`` (or ``.[extra]``) named in ``args`` exists."""
    known = _extras()
    for arg in args:
        match = re.fullmatch(r"(?:hubzarr|\.|-e)?\[([a-z0-9,\-]+)\]", arg.strip("\"'"))
        if match is None:
            continue
        unknown = set(match[1].split(",")) - known
        assert not unknown, f"pip install {arg}: no such extra {sorted(unknown)} in pyproject"


def _s3_bucket(url: str, name: str, *, public: bool = False) -> None:
    """Bucket ``name`` on the moto server at ``url``, empty; ``public``: anyone may read it."""
    with s3_client(url) as client:
        if any(b["Name"] == name for b in client.list_buckets()["Buckets"]):
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
                for item in page.get("Contents", []):
                    client.delete_object(Bucket=name, Key=item["Key"])
        else:
            make_bucket(url, name)
    if public:
        make_public_read(url, name)


def check_test_command(args: list[str]) -> None:
    """Fail unless ``.ci/run`` runs ``python3 -m pytest`` with at least ``args``."""
    for line in (REPO / ".ci" / "run").read_text().splitlines():
        words = shlex.split(line, comments=True)
        if words[:3] == ["python3", "-m", "pytest"] and set(args) <= set(words[3:]):
            return
    raise AssertionError(f"python3 -m pytest {' '.join(args)}: not what .ci/run runs")


def _services_env(page: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    """The environment for the servers ``page`` asks for."""
    match = _SERVICES.search(page.read_text())
    wanted = set(match[1].split()) if match else set()
    env: dict[str, str] = {}
    if "s3" in wanted:
        s3: Server = request.getfixturevalue("s3_server")
        _s3_bucket(s3.url, "my-bucket")
        _s3_bucket(s3.url, "public-data", public=True)
        env |= {
            "AWS_ENDPOINT_URL": s3.url,
            "AWS_ACCESS_KEY_ID": S3_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET,
            "AWS_DEFAULT_REGION": S3_REGION,
        }
    if "gcs" in wanted:
        gcs: Server = request.getfixturevalue("gcs_server")
        try:
            make_gcs_bucket(gcs.url, "my-gcs-bucket")
        except urllib.error.HTTPError as error:
            if error.code != 409:  # 409: made by an earlier test of this session
                raise
        env |= {"STORAGE_EMULATOR_HOST": gcs.url}
    return env


def _where(page: Path, block: Block) -> str:
    return f"{page.relative_to(REPO)}, the {block.language} block at line {block.line}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_examples_run(
    page: Path,
    tmp_path: Path,
    isolated_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    found = blocks(page)
    unknown = sorted({b.language for b in found} - RUN - SHOWN)
    assert not unknown, f"{page.name}: code blocks in {unknown}: mark each sh, python or text"
    monkeypatch.delenv("HUBZARR_CACHE_SIZE")  # the user's default, not the other tests'
    for name, value in _services_env(page, request).items():
        monkeypatch.setenv(name, value)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    env = dict(os.environ)
    env["HUB_DOCS_PYTHON"] = sys.executable
    env["HUB_DOCS_CHECK"] = __file__
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for block in found:
        if block.language == "python":
            try:
                exec(compile(block.code, f"{page.name}:{block.line}", "exec"), namespace)
            except Exception:
                pytest.fail(
                    f"{_where(page, block)} failed:\n{block.code}\n{traceback.format_exc()}"
                )
        elif block.language == "sh":
            script = _SHIM + "set -euo pipefail\n" + block.code
            done = subprocess.run(
                ["bash", "-c", script],
                check=False,
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
            )
            print(f"$ {block.code}{done.stdout}{done.stderr}")  # shown if the page fails
            assert done.returncode == 0, (
                f"{_where(page, block)} exited {done.returncode}:\n{block.code}\n"
                f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
            )


def test_blocks_are_found() -> None:
    """The collector sees fences as Markdown does: indented ones (in lists, admonitions) too."""
    page = DOCS / "quickstart.md"
    found = blocks(page)
    assert [b.language for b in found].count("python") >= 2
    assert all(b.code.strip() for b in found)
    fences = sum(1 for line in page.read_text().splitlines() if _FENCE.match(line))
    assert fences == 2 * len(found)


if __name__ == "__main__":  # the sh blocks' `python3 -m pip install` and `python3 -m pytest`
    check = {"install": check_install, "pytest": check_test_command}[sys.argv[1]]
    check(sys.argv[2:])
