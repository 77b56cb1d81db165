"""Settings: which hub root, default namespace and connection settings to use.

A setting is taken from, in order: the explicit argument, the environment
(``HUBZARR_ROOT``, ``HUBZARR_NAMESPACE``), the config file written by ``hub configure``
(``$HUBZARR_CONFIG``, else ``config.json`` in the platform's user config folder, from
platformdirs: ``$XDG_CONFIG_HOME/hubzarr`` or ``~/.config/hubzarr`` on Linux), and finally the
embedded default: a folder
``~/.hubzarr`` and the namespace ``library`` (as Docker Hub names its official images, so
``hub.load("imagenet")`` means ``library/imagenet``).

An environment variable set to the empty string counts as unset (``HUBZARR_ROOT= hub ls``
is how a shell unsets it for one command). A root given explicitly, in the environment or in
the config file is checked where it is used (:func:`resolve_root`): an empty or blank one is
refused instead of meaning the current folder, and one that could hold credentials is refused
without being echoed.

The config file also holds the non-secret connection settings of an object-store root
(``endpoint_url``, ``region``, ``profile``, ``anon``); :func:`resolve_storage_options` turns
them into the fsspec filesystem's options. Secrets never go into it: S3 keys are written to the
AWS shared credentials file under a profile (:func:`save_aws_credentials`), which the config
names; a GCS service-account key stays where it is and the config holds its path.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import stat
import uuid
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs

from hubzarr.errors import (
    AccessDeniedError,
    FormatError,
    InvalidArgumentError,
    StorageError,
)
from hubzarr.names import parse_name

__all__ = [
    "DEFAULT_AWS_PROFILE",
    "DEFAULT_CACHE_SIZE",
    "DEFAULT_NAMESPACE",
    "CacheSettings",
    "Settings",
    "aws_credentials_path",
    "check_settings",
    "check_token_file",
    "config_path",
    "create_bucket",
    "default_root",
    "load_settings",
    "mask_key_id",
    "parse_size",
    "probe_root",
    "read_aws_key_id",
    "resolve_cache",
    "resolve_namespace",
    "resolve_root",
    "resolve_storage_options",
    "root_bucket",
    "save_aws_credentials",
    "save_settings",
]

DEFAULT_NAMESPACE = "library"
#: The AWS profile ``hub configure`` writes keys under when no ``--profile`` is given.
DEFAULT_AWS_PROFILE = "hubzarr"

#: URL schemes of the object stores that connection settings apply to, by family.
_FAMILIES = {"s3": "s3", "s3a": "s3", "gs": "gs", "gcs": "gs"}
#: An AWS profile name: what the AWS tools accept in a section header, less odd characters.
_PROFILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+=,-]*")
#: An access key id or secret: printable ASCII without spaces.
_KEY = re.compile(r"[\x21-\x7e]+")


@dataclass(frozen=True, slots=True)
class Settings:
    """What ``hub configure`` stores: nothing secret.

    Attributes
    ----------
    root : str or None
        The hub root URL or folder.
    namespace : str or None
        The namespace that bare names belong to.
    endpoint_url : str or None
        The object store's endpoint, for S3-compatible services (MinIO, Ceph, R2, ...) or a
        GCS emulator.
    region : str or None
        The bucket's region (S3), or the location new buckets get (GCS).
    profile : str or None
        S3: the AWS profile holding the credentials. GCS: the path of a service-account JSON
        key file.
    anon : bool or None
        Access public buckets without credentials.
    cache : bool or None
        Use the local cache of immutable objects for every root (``True``), for none
        (``False``), or by default only for remote roots (``None``).
    cache_dir : str or None
        The cache's folder (default: the platform's user cache folder).
    cache_size : int or None
        The cache's size limit in bytes (default 10 GiB); 0 caches nothing.
    """

    root: str | None = None
    namespace: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    anon: bool | None = None
    cache: bool | None = None
    cache_dir: str | None = None
    cache_size: int | None = None


_FIELD_TYPES: dict[str, type] = {"anon": bool, "cache": bool, "cache_size": int} | {
    f.name: str for f in fields(Settings) if f.name not in ("anon", "cache", "cache_size")
}


def config_path() -> Path:
    """Return the path of the config file (which may not exist)."""
    explicit = os.environ.get("HUBZARR_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    return Path(platformdirs.user_config_dir("hubzarr", appauthor=False)) / "config.json"


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
        k in _FIELD_TYPES and (v is None or type(v) is _FIELD_TYPES[k]) for k, v in data.items()
    ):
        raise FormatError(
            f"config file {path} must be a JSON object with string fields 'root', 'namespace', "
            "'endpoint_url', 'region', 'profile', 'cache_dir', booleans 'anon' and 'cache' and "
            "an integer 'cache_size'; fix it or rerun 'hub configure'"
        )
    return Settings(**data)


def check_settings(settings: Settings) -> None:
    """Refuse settings that :func:`save_settings` would not write.

    Raises
    ------
    InvalidArgumentError
        If the namespace breaks the name grammar, the endpoint is not an http(s) URL without
        credentials, or a setting is empty or holds control characters.
    """
    if settings.namespace is not None:
        parse_name("x", default_user=settings.namespace)
    if settings.endpoint_url is not None:
        parts = urlsplit(settings.endpoint_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidArgumentError(
                f"endpoint URL {settings.endpoint_url!r} must be an http:// or https:// URL, "
                "such as 'http://localhost:9000'"
            )
        if parts.username is not None or parts.password is not None:
            raise InvalidArgumentError(
                "an endpoint URL must not hold credentials (user:password@); give them with "
                "'hub configure --access-key-id ... --secret-access-key ...'"
            )
    if settings.cache_size is not None and settings.cache_size < 0:
        raise InvalidArgumentError(
            f"the cache size must be a number of bytes >= 0, not {settings.cache_size}"
        )
    for name in ("root", "region", "profile", "cache_dir"):
        value = getattr(settings, name)
        if value is not None and (not value or any(ord(c) < 32 for c in value)):
            raise InvalidArgumentError(
                f"the {name} setting must be a non-empty string without control characters"
            )


def save_settings(settings: Settings) -> Path:
    """Write the config file, readable only by the user; return its path.

    Raises
    ------
    InvalidArgumentError
        As :func:`check_settings`.
    """
    check_settings(settings)
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

    Whichever is used is checked with :func:`hubzarr.storage.check_root`: an empty or blank
    root is refused (it would silently mean the current folder), and so is one that could hold
    credentials, without echoing it. ``HUBZARR_ROOT`` set to the empty string counts as unset,
    as a shell's ``HUBZARR_ROOT= hub ls`` means; set to blanks, it is refused.

    Raises
    ------
    InvalidArgumentError
        If ``root`` is neither a string nor a path, or the root in use is refused by
        :func:`~hubzarr.storage.check_root` (the message says where it came from).
    FormatError
        If the config file is needed and malformed.
    """
    from hubzarr.storage import check_root

    if root is not None:
        if not isinstance(root, str | os.PathLike):
            raise InvalidArgumentError(
                f"root must be a URL or a folder path, not {type(root).__name__}"
            )
        path = os.fspath(root)
        if not isinstance(path, str):
            raise InvalidArgumentError(f"root must be a URL or a folder path, not {path!r}")
        return check_root(path)
    env = os.environ.get("HUBZARR_ROOT")
    if env:
        return check_root(env, where=" in $HUBZARR_ROOT")
    configured = load_settings().root
    if configured is not None:
        return check_root(configured, where=f" in the config file {config_path()}")
    return default_root()


#: The cache's size limit unless configured otherwise.
DEFAULT_CACHE_SIZE = 10 * 2**30
#: Roots whose reads cross a network: the cache is on for them by default.
_REMOTE_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs", "http", "https"})
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGTP]?)(I?)(B?)\s*", re.IGNORECASE)


def parse_size(text: str | int, *, what: str = "a size") -> int:
    """Parse a number of bytes: ``1048576``, ``500M``, ``10GB``, ``10 GiB``.

    ``K``, ``M``, ``G``, ``T``, ``P`` alone or with ``iB`` are powers of 1024; with ``B`` alone
    (``GB``), powers of 1000.

    Raises
    ------
    InvalidArgumentError
        If ``text`` is negative or not a size.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise InvalidArgumentError(f"{what} must be >= 0 bytes, not {text}")
        return text
    match = _SIZE.fullmatch(str(text))
    if match is None or (match[3] and not match[2]):
        raise InvalidArgumentError(
            f"{what} must be a number of bytes such as 1048576, 500M, 10GB or 10GiB, not {text!r}"
        )
    number, unit, binary, byte = match[1], match[2].upper(), match[3], match[4]
    power = "KMGTP".index(unit) + 1 if unit else 0
    base = 1000 if byte and not binary else 1024
    return int(float(number) * base**power)


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """Where the local cache of immutable objects lies, how large it may grow, for which roots.

    Attributes
    ----------
    enabled : bool or None
        On for every root, off for every root, or ``None``: on for remote roots only.
    directory : pathlib.Path
        The cache's folder.
    size_limit : int
        Bytes the cache may hold, across all processes; 0 caches nothing.
    """

    enabled: bool | None
    directory: Path
    size_limit: int

    def applies_to(self, root: str) -> bool:
        """Whether reads from ``root`` go through the cache."""
        if self.size_limit == 0 or self.enabled is False:
            return False
        if self.enabled:
            return True
        return "://" in root and root.split("://", 1)[0].lower() in _REMOTE_SCHEMES


def resolve_cache() -> CacheSettings:
    """Return the cache settings in effect: ``HUBZARR_CACHE_DIR`` and ``HUBZARR_CACHE_SIZE``,
    else the config file, else the platform's user cache folder and 10 GiB.

    Raises
    ------
    InvalidArgumentError
        If ``HUBZARR_CACHE_SIZE`` is not a size.
    FormatError
        If the config file is needed and malformed.
    """
    settings = load_settings()
    directory = (
        os.environ.get("HUBZARR_CACHE_DIR")
        or settings.cache_dir
        or platformdirs.user_cache_dir("hubzarr", appauthor=False)
    )
    size = os.environ.get("HUBZARR_CACHE_SIZE")
    limit = (
        parse_size(size, what="$HUBZARR_CACHE_SIZE")
        if size
        else settings.cache_size
        if settings.cache_size is not None
        else DEFAULT_CACHE_SIZE
    )
    return CacheSettings(settings.cache, Path(directory).expanduser(), limit)


def resolve_namespace() -> str:
    """Return the namespace bare names belong to."""
    return os.environ.get("HUBZARR_NAMESPACE") or load_settings().namespace or DEFAULT_NAMESPACE


def root_bucket(root: str) -> tuple[str, str] | None:
    """Return ``(family, bucket)`` of an S3 or GCS root URL, or ``None`` for any other root.

    ``family`` is ``"s3"`` (``s3://``, ``s3a://``) or ``"gs"`` (``gs://``, ``gcs://``).
    """
    if "://" not in root:
        return None
    parts = urlsplit(root)
    family = _FAMILIES.get(parts.scheme.lower())
    if family is None or not parts.hostname:
        return None
    return family, parts.hostname


def _settings_apply(root: str, settings: Settings) -> bool:
    """Whether the configured connection settings are meant for ``root``.

    They are for the configured root's bucket, and for the root in ``HUBZARR_ROOT`` (when it is
    of the same kind of store as the configured root).
    """
    location = root_bucket(root)
    if location is None:
        return False
    configured = root_bucket(settings.root) if settings.root else None
    if configured == location:
        return True
    env = os.environ.get("HUBZARR_ROOT")
    return (
        bool(env)
        and root == env
        and (settings.root is None or (configured is not None and configured[0] == location[0]))
    )


def resolve_storage_options(root: str, explicit: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the fsspec options to open ``root`` with.

    Parameters
    ----------
    root : str
        The hub root, already resolved (see :func:`resolve_root`).
    explicit : dict, optional
        Options given by the caller; they win (a copy is returned). An empty dict counts as
        none given, so an object unpickled without its credentials resolves them again.

    Returns
    -------
    dict
        ``explicit``, or, for an S3 or GCS root in the configured root's bucket (or the root
        in ``HUBZARR_ROOT``), the options built from the configured connection settings:
        s3fs's ``profile``, ``anon`` and ``client_kwargs={"endpoint_url", "region_name"}``,
        or gcsfs's ``token`` (the key file, or ``"anon"``), ``endpoint_url`` and
        ``default_location``. Otherwise empty: the backend's own defaults apply.

    Raises
    ------
    FormatError
        If the config file is needed and malformed.
    """
    if explicit:
        return dict(explicit)
    location = root_bucket(root)
    if location is None:
        return {}
    settings = load_settings()
    if not _settings_apply(root, settings):
        return {}
    options: dict[str, Any] = {}
    if location[0] == "s3":
        if settings.anon:
            options["anon"] = True
        elif settings.profile:
            options["profile"] = settings.profile
        client = {"endpoint_url": settings.endpoint_url, "region_name": settings.region}
        client = {k: v for k, v in client.items() if v}
        if client:
            options["client_kwargs"] = client
    else:
        if settings.anon:
            options["token"] = "anon"
        elif settings.profile:
            options["token"] = str(Path(settings.profile).expanduser())
        if settings.endpoint_url:
            options["endpoint_url"] = settings.endpoint_url
        if settings.region:
            options["default_location"] = settings.region
    return options


# -- secrets: the backends' own files ------------------------------------------------------


def aws_credentials_path() -> Path:
    """Return the AWS shared credentials file: ``$AWS_SHARED_CREDENTIALS_FILE`` or the default.

    The default is ``~/.aws/credentials``, where the AWS tools (and so s3fs) look.
    """
    explicit = os.environ.get("AWS_SHARED_CREDENTIALS_FILE")
    return Path(explicit).expanduser() if explicit else Path.home() / ".aws" / "credentials"


def _read_credentials(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return parser
    except (OSError, UnicodeDecodeError) as exc:
        # The message names the file only: its content holds secrets.
        raise FormatError(
            f"cannot read the AWS credentials file {path} ({type(exc).__name__}); fix it or "
            "set AWS_SHARED_CREDENTIALS_FILE to another file"
        ) from None
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as exc:
        line = getattr(exc, "lineno", None)
        where = f" near line {line}" if line else ""
        raise FormatError(
            f"the AWS credentials file {path} is not a valid INI file{where}; fix it or set "
            "AWS_SHARED_CREDENTIALS_FILE to another file"
        ) from None
    return parser


def _check_profile_name(profile: str) -> None:
    if not _PROFILE.fullmatch(profile) or profile == configparser.DEFAULTSECT:
        raise InvalidArgumentError(
            f"invalid AWS profile name {profile!r}: use letters, digits and _.@+=,-"
        )


def save_aws_credentials(profile: str, access_key_id: str, secret_access_key: str) -> Path:
    """Write an access key under ``profile`` in the AWS shared credentials file.

    Other profiles are kept (comments are not); a session token left in the profile is
    removed, since it belonged to other keys. The file is written atomically and readable by
    the user only (``0600``), in a folder created ``0700`` if absent.

    Parameters
    ----------
    profile : str
        The profile name.
    access_key_id, secret_access_key : str
        The key pair; never shown in any message.

    Returns
    -------
    pathlib.Path
        The credentials file (see :func:`aws_credentials_path`).

    Raises
    ------
    InvalidArgumentError
        If the profile name or a key is malformed (empty, with spaces or control characters).
    FormatError
        If the existing credentials file cannot be parsed.
    StorageError
        If the file cannot be written.
    """
    _check_profile_name(profile)
    pairs = (("access key id", access_key_id), ("secret access key", secret_access_key))
    for label, value in pairs:
        if not _KEY.fullmatch(value):
            raise InvalidArgumentError(
                f"the {label} must be non-empty printable ASCII without spaces"
            )
    path = Path(os.path.realpath(aws_credentials_path()))
    parser = _read_credentials(path)
    if not parser.has_section(profile):
        parser.add_section(profile)
    parser.remove_option(profile, "aws_session_token")
    parser.set(profile, "aws_access_key_id", access_key_id)
    parser.set(profile, "aws_secret_access_key", secret_access_key)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        if not path.parent.exists():
            path.parent.mkdir(mode=0o700, parents=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            parser.write(f)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(
            f"cannot write the AWS credentials file {path}: {exc.strerror or exc}"
        ) from None
    return path


def read_aws_key_id(profile: str) -> tuple[str | None, bool]:
    """Return the access key id of ``profile`` in the AWS credentials file, and whether a secret
    is there too (``(None, False)`` if the file or profile is absent).

    Raises
    ------
    FormatError
        If the credentials file cannot be parsed.
    """
    parser = _read_credentials(aws_credentials_path())
    if not parser.has_section(profile):
        return None, False
    key_id = parser.get(profile, "aws_access_key_id", fallback=None)
    return key_id or None, bool(parser.get(profile, "aws_secret_access_key", fallback=None))


def mask_key_id(key_id: str) -> str:
    """Show an access key id as its first and last four characters (``AKIA...MPLE``).

    Ids shorter than 12 characters are shown as ``****``.
    """
    return f"{key_id[:4]}...{key_id[-4:]}" if len(key_id) >= 12 else "****"


def check_token_file(path: str) -> tuple[str, bool]:
    """Check that a GCS service-account key file exists and is readable.

    Parameters
    ----------
    path : str
        The file; ``~`` is expanded.

    Returns
    -------
    tuple of (str, bool)
        The absolute path, and whether the group or others may read it (it holds a private
        key: it should be ``0600``).

    Raises
    ------
    InvalidArgumentError
        If the path is not a readable regular file.
    """
    full = Path(path).expanduser().absolute()
    try:
        st = full.stat()
        with open(full, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise InvalidArgumentError(
            f"cannot read the token file {full}: {exc.strerror or exc}; give the path of a "
            "service-account JSON key file"
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise InvalidArgumentError(f"the token file {full} is not a regular file")
    return str(full), bool(st.st_mode & 0o044)


# -- checking a root ---------------------------------------------------------------------


def probe_root(root: str, options: dict[str, Any]) -> str:
    """Write, read back and delete a small object at the root, to check access.

    Parameters
    ----------
    root : str
        The hub root.
    options : dict
        Its fsspec options (see :func:`resolve_storage_options`).

    Returns
    -------
    str
        The probe object's path, relative to the root.

    Raises
    ------
    NotFoundError
        If the root's bucket does not exist.
    AccessDeniedError
        If the credential in use may not write, read or delete there.
    ReadOnlyError
        If the root is read-only (HTTP).
    StorageError
        If the backend fails otherwise, or reads back other bytes.
    InvalidArgumentError
        If the root is not a usable folder or URL.
    """
    from zarr.core.sync import sync

    from hubzarr.storage import open_storage

    storage = open_storage(root, options)
    path = f".hubzarr-probe-{uuid.uuid4().hex[:16]}"
    payload = f"hubzarr probe {path}\n".encode()

    async def probe() -> None:
        await storage.write(path, payload)
        try:
            back = await storage.read(path)
        finally:
            await storage.delete(path)
        if back != payload:
            raise StorageError(
                f"the probe object {path!r} under {storage.url} read back "
                f"{'nothing' if back is None else 'other bytes'} after a write"
            )

    sync(probe())
    return path


def create_bucket(root: str, options: dict[str, Any]) -> str:
    """Create the bucket of an S3 or GCS root; return its name.

    An S3 bucket is created with no location constraint when the region is ``us-east-1`` (AWS
    refuses one naming that region); an existing bucket is not an error.

    Raises
    ------
    InvalidArgumentError
        If the root is not an S3 or GCS URL.
    AccessDeniedError
        If the credential in use may not create buckets.
    StorageError
        If the backend fails otherwise.
    """
    from hubzarr.storage import FsspecStorage, describe_credentials, open_storage

    location = root_bucket(root)
    if location is None:
        raise InvalidArgumentError(f"{root} is not an s3:// or gs:// URL: it has no bucket")
    family, bucket = location
    options = dict(options)
    client = dict(options.get("client_kwargs") or {})
    if family == "s3" and client.get("region_name") == "us-east-1":
        del client["region_name"]
        options["client_kwargs"] = client
    storage = open_storage(root, options)
    assert isinstance(storage, FsspecStorage)
    try:
        storage.fs.mkdir(bucket)
    except FileExistsError:
        pass
    except PermissionError as exc:
        raise AccessDeniedError(
            f"creating the bucket {bucket!r} was refused using {describe_credentials(options)}"
            f" ({exc}); create it with the provider's console or tools"
        ) from exc
    except Exception as exc:
        raise StorageError(
            f"could not create the bucket {bucket!r} for {root}: {type(exc).__name__}: {exc}"
        ) from exc
    return bucket
