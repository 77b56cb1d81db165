"""The name grammar: ``[user/]name[:ref]``. Pure functions, no I/O.

Repository components follow the OCI distribution grammar (lowercase ASCII letters and digits,
separated by single ``.``, ``_``, ``__`` or runs of ``-``); refs follow the OCI tag grammar
(ASCII letters, digits, ``_``, ``.``, ``-``, not starting with ``.`` or ``-``). Every check is a
``fullmatch`` with ``re.ASCII``, so no ``..``, no ``/`` beyond the one separator, no
look-alike characters from other scripts, and no trailing newline can get through. Names are
checked before any I/O; storage paths are built only from the parsed parts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hubzarr.errors import InvalidNameError

__all__ = ["MAX_COMPONENT_LENGTH", "MAX_REF_LENGTH", "REF", "Name", "check_ref", "parse_name"]

MAX_COMPONENT_LENGTH = 64
MAX_REF_LENGTH = 128

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*", re.ASCII)
#: The grammar of a ref (a branch or tag name), for a fullmatch.
REF = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*", re.ASCII)

_COMPONENT_RULE = (
    "lowercase ASCII letters and digits, separated by single '.', '_', '__' or '-' "
    f"(at most {MAX_COMPONENT_LENGTH} characters)"
)
_REF_RULE = (
    "ASCII letters, digits, '_', '.' and '-', not starting with '.' or '-' "
    f"(at most {MAX_REF_LENGTH} characters)"
)


@dataclass(frozen=True, slots=True)
class Name:
    """A parsed repository name.

    Attributes
    ----------
    user : str
        The namespace the repository lives in.
    repo : str
        The repository's name inside the namespace.
    ref : str or None
        A branch, tag or version id; ``None`` means the repository's default branch.
    """

    user: str
    repo: str
    ref: str | None = None

    @property
    def repository(self) -> str:
        """``user/repo``, without the ref."""
        return f"{self.user}/{self.repo}"

    def with_ref(self, ref: str | None) -> Name:
        """Return the same repository at another ref."""
        return Name(self.user, self.repo, ref)

    def __str__(self) -> str:
        return self.repository if self.ref is None else f"{self.repository}:{self.ref}"


def _describe(text: str) -> str:
    return repr(text) if len(text) <= 80 else repr(text[:77] + "...")


def _check_component(part: str, what: str, name: str) -> str:
    if not part:
        raise InvalidNameError(
            f"invalid name {_describe(name)}: the {what} is empty; "
            "names look like 'user/name' or 'user/name:ref'"
        )
    if len(part) > MAX_COMPONENT_LENGTH or not _COMPONENT.fullmatch(part):
        raise InvalidNameError(
            f"invalid name {_describe(name)}: the {what} {_describe(part)} "
            f"must be {_COMPONENT_RULE}"
        )
    return part


def check_ref(ref: str, *, what: str = "ref") -> str:
    """Check a branch, tag or version id against the ref grammar.

    Parameters
    ----------
    ref : str
        The candidate ref.
    what : str
        What the ref is called in the error message ("tag", "branch", ...).

    Returns
    -------
    str
        ``ref``, unchanged.

    Raises
    ------
    InvalidNameError
        If ``ref`` is not a string, is empty, too long, or uses characters outside the grammar.
    """
    if not isinstance(ref, str):
        raise InvalidNameError(f"the {what} must be a string, not {type(ref).__name__}")
    if not ref:
        raise InvalidNameError(f"the {what} is empty; it must be {_REF_RULE}")
    if len(ref) > MAX_REF_LENGTH or not REF.fullmatch(ref):
        raise InvalidNameError(f"invalid {what} {_describe(ref)}: it must be {_REF_RULE}")
    return ref


def parse_name(name: str, *, default_user: str) -> Name:
    """Parse ``[user/]name[:ref]`` into a :class:`Name`.

    Parameters
    ----------
    name : str
        The name to parse, for example ``"alice/mnist:v1"`` or ``"imagenet"``.
    default_user : str
        The namespace a bare ``name`` belongs to.

    Returns
    -------
    Name
        The parsed name.

    Raises
    ------
    InvalidNameError
        If any part of ``name`` breaks the grammar; the message says which part and why.
    """
    if not isinstance(name, str):
        raise InvalidNameError(f"a name must be a string, not {type(name).__name__}")
    if "://" in name:
        raise InvalidNameError(
            f"invalid name {_describe(name)}: it looks like a URL; pass storage locations "
            "as root=... and names as 'user/name[:ref]'"
        )
    path, sep, ref = name.partition(":")
    if sep and ":" in ref:
        raise InvalidNameError(
            f"invalid name {_describe(name)}: at most one ':' may separate the name from its ref"
        )
    parts = path.split("/")
    if len(parts) > 2:
        raise InvalidNameError(
            f"invalid name {_describe(name)}: only one '/' may separate the user from the "
            "repository ('user/name'); nested paths and absolute paths are not names"
        )
    if len(parts) == 2:
        user = _check_component(parts[0], "user", name)
        repo = _check_component(parts[1], "repository name", name)
    else:
        user = _check_component(default_user, "default namespace", default_user)
        repo = _check_component(parts[0], "repository name", name)
    if sep:
        check_ref(ref)
        return Name(user, repo, ref)
    return Name(user, repo, None)
