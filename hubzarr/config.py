"""Settings: which hub root and default namespace to use.

A setting is taken from, in order: the explicit argument, the environment
(``HUBZARR_ROOT``, ``HUBZARR_NAMESPACE``), the config file written by ``hub configure``
(``$HUBZARR_CONFIG``, else ``$XDG_CONFIG_HOME/hubzarr/config.json``, else
``~/.config/hubzarr/config.json``), and finally the embedded default: a folder
``~/.hubzarr`` and the namespace ``library`` (as Docker Hub names its official images, so
``hub.load("imagenet")`` means ``library/imagenet``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from hubzarr.errors import FormatError, InvalidArgumentError
from hubzarr.names import parse_name

__all__ = [
    "DEFAULT_NAMESPACE",
    "Settings",
    "config_path",
    "default_root",
    "load_settings",
    "resolve_namespace",
    "resolve_root",
    "save_settings",
]

DEFAULT_NAMESPACE = "library"


@dataclass(frozen=True, slots=True)
class Settings:
    """What ``hub configure`` stores.

    Attributes
    ----------
    root : str or None
        The hub root URL or folder.
    namespace : str or None
        The namespace that bare names belong to.
    """

    root: str | None = None
    namespace: str | None = None


def config_path() -> Path:
    """Return the path of the config file (which may not exist)."""
    explicit = os.environ.get("HUBZARR_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "hubzarr" / "config.json"


def default_root() -> str:
    """Return the embedded default root: the folder ``~/.hubzarr``."""
    return str(Path.home() / ".hubzarr")


def load_settings() -> Settings:
    """Read the config file; an absent file gives empty settings.

    Raises
    ------
    FormatError
        If the file exists but is not a JSON object of the expected fields.
    """
    path = config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Settings()
    except UnicodeDecodeError as exc:
        raise FormatError(
            f"config file {path} is not UTF-8 text ({exc}); fix it or rerun 'hub configure'"
        ) from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise FormatError(
            f"config file {path} is not valid JSON ({exc}); fix it or rerun 'hub configure'"
        ) from exc
    if not isinstance(data, dict) or not all(
        k in {"root", "namespace"} and (v is None or isinstance(v, str)) for k, v in data.items()
    ):
        raise FormatError(
            f"config file {path} must be a JSON object with string fields 'root' and "
            "'namespace'; fix it or rerun 'hub configure'"
        )
    return Settings(**data)


def save_settings(settings: Settings) -> Path:
    """Write the config file, readable only by the user; return its path.

    Raises
    ------
    InvalidArgumentError
        If the namespace breaks the name grammar.
    """
    if settings.namespace is not None:
        parse_name("x", default_user=settings.namespace)
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({k: v for k, v in asdict(settings).items() if v is not None}, f, indent=2)
    os.replace(tmp, path)
    return path


def resolve_root(root: str | os.PathLike[str] | None = None) -> str:
    """Return the hub root to use: ``root``, ``HUBZARR_ROOT``, the config file, or the default.

    Raises
    ------
    InvalidArgumentError
        If ``root`` is neither a string nor a path.
    """
    if root is not None:
        if not isinstance(root, str | os.PathLike):
            raise InvalidArgumentError(
                f"root must be a URL or a folder path, not {type(root).__name__}"
            )
        return os.fspath(root)
    return os.environ.get("HUBZARR_ROOT") or load_settings().root or default_root()


def resolve_namespace() -> str:
    """Return the namespace bare names belong to."""
    return os.environ.get("HUBZARR_NAMESPACE") or load_settings().namespace or DEFAULT_NAMESPACE
