"""Developer sessions: ``nox -s tests``, ``lint``, ``typecheck`` and ``benchmarks``."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite."""
    session.install("-e", ".[test]")
    session.run("pytest", "-n", "2", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check formatting and lint rules with ruff."""
    session.install("ruff>=0.12")
    session.run("ruff", "format", "--check", ".")
    session.run("ruff", "check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check the package with mypy (strict)."""
    session.install("-e", ".[test]")
    session.run("mypy")


@nox.session
def benchmarks(session: nox.Session) -> None:
    """Run the benchmarks side by side with plain zarr and print the medians."""
    session.install("-e", ".")
    session.run("python", "benchmarks/run.py", *session.posargs)
