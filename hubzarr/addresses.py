"""What a word on ``hub cp``'s command line (or a string given to :func:`hubzarr.copy`) names:
a repository at a root, or a file or store outside any hub. Pure: no I/O but the one question
"does this local path exist", which the caller answers.

The rule, in order (the first that applies decides):

1. ``ROOT::NAME`` is the repository ``NAME`` (``user/name[:ref]``) at the hub root ``ROOT``, a
   folder or URL (``s3://bucket/hub::alice/mnist:v1``); ``::NAME`` is ``NAME`` at the default
   root. This spelling is never a path.
2. A URL (``scheme://...``) without ``::`` is a file or store at that URL.
3. A word starting with ``/``, ``./``, ``../`` or ``~`` (or ``.`` / ``..``) is a local path.
4. A word whose last segment ends with a data file's suffix (``.npy``, ``.npz``, ``.zarr``,
   ``.h5``, ...) is a local path: ``out.zarr``, ``data/train.npy``.
5. A word that is a valid repository name is that repository at the default root, unless a
   local file or folder of that spelling exists: then the word is ambiguous, an
   :class:`~hubzarr.errors.InvalidArgumentError` that shows both spellings (``./data/train``
   for the folder, ``::data/train`` for the repository).
6. Anything else (``Data/Train``, ``a/b/c``, ``out/``) is a local path.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from hubzarr.errors import InvalidArgumentError, InvalidNameError
from hubzarr.names import Name, parse_name

__all__ = ["DATA_SUFFIXES", "Location", "PathLocation", "RepoLocation", "classify"]

#: Suffixes that make a word a file or store (rule 4); a repository named so needs ``::``.
DATA_SUFFIXES = (".npy", ".npz", ".zarr", ".zip", ".h5", ".hdf5", ".hdf", ".he5", ".nc")

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True, slots=True)
class RepoLocation:
    """A repository: ``name`` at ``root`` (``None``: the default root)."""

    root: str | None
    name: Name

    def __str__(self) -> str:
        return str(self.name) if self.root is None else f"{self.root}::{self.name}"


@dataclass(frozen=True, slots=True)
class PathLocation:
    """A file, folder or store outside any hub: a local path or an fsspec URL."""

    path: str

    @property
    def suffix(self) -> str:
        """The lowercase suffix of the last segment (``".npy"``), or ``""``."""
        last = self.path.rstrip("/").rsplit("/", 1)[-1]
        dot = last.rfind(".")
        return last[dot:].lower() if dot > 0 else ""

    def __str__(self) -> str:
        return self.path


Location = RepoLocation | PathLocation


def classify(word: str, *, default_user: str, exists: Callable[[str], bool]) -> Location:
    """Say what ``word`` names, by the module's rule.

    Parameters
    ----------
    word : str
        A source or destination as written by the user.
    default_user : str
        The namespace of a bare repository name.
    exists : callable
        ``exists(path)``: whether a local file or folder is at ``path`` (rule 5).

    Returns
    -------
    RepoLocation or PathLocation

    Raises
    ------
    InvalidArgumentError
        If ``word`` is empty, or ambiguous (rule 5).
    InvalidNameError
        If ``word`` uses ``::`` and what follows is not a valid name.
    """
    if not isinstance(word, str) or not word.strip():
        raise InvalidArgumentError(
            "a source or destination is empty; write a repository name (user/name[:ref]), "
            "ROOT::NAME, or a file path"
        )
    if "::" in word:
        root, _, name = word.partition("::")
        return RepoLocation(root or None, parse_name(name, default_user=default_user))
    if _URL.match(word):
        return PathLocation(word)
    if word in (".", "..") or word.startswith(("/", "./", "../", "~")):
        return PathLocation(word)
    if PathLocation(word).suffix in DATA_SUFFIXES:
        return PathLocation(word)
    try:
        parsed = parse_name(word, default_user=default_user)
    except InvalidNameError:
        return PathLocation(word)
    if exists(word):
        raise InvalidArgumentError(
            f"{word!r} is ambiguous: it is a repository name and a local "
            f"{'path' if '/' in word else 'file'} that exists; write ./{word} for the local "
            f"one, or ::{word} for the repository at the default root"
        )
    return RepoLocation(None, parsed)
