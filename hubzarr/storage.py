"""Storage primitives over a hub root: read, atomic write, put-if-absent, list, delete.

Everything above this module speaks in paths relative to the hub root; this module is the only
one that touches a filesystem, and the only one that turns a backend's exceptions into
hubzarr's (:func:`_translating`).

Two implementations:

- :class:`LocalStorage` uses the operating system directly. A write goes to a temporary file in
  the same folder and is renamed over the target (``os.replace``), so readers never see a torn
  object and a crash never leaves a truncated one. Put-if-absent writes the temporary file,
  fsyncs it and hard-links it to the final name (``os.link`` fails if the name exists), then
  fsyncs the folder. fsspec's local ``pipe_file(mode="create")`` checks-then-writes and is not
  used.
- :class:`FsspecStorage` serves every other fsspec filesystem (memory today; S3, GCS and HTTP
  build on it).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import math
import os
import random
import shutil
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit
from urllib.request import url2pathname

import fsspec
from fsspec.implementations.memory import MemoryFileSystem

from hubzarr.errors import (
    AccessDeniedError,
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
    ReadOnlyError,
    StorageError,
)

__all__ = [
    "FsspecStorage",
    "LocalStorage",
    "Parts",
    "Storage",
    "as_bytes",
    "check_path",
    "check_root",
    "open_storage",
    "public_options",
]

_RAISE: Any = object()

#: Suffix of temporary files; listings skip them and no stored path may end with it.
TMP_SUFFIX = ".hubzarr-tmp"

#: What a write takes: one bytes-like object, or several written back to back, or a function
#: returning them (called where the write runs, in a worker thread for local storage, so costly
#: framing such as a checksum stays off the event loop).
Parts = (
    bytes
    | memoryview
    | Sequence[bytes | memoryview]
    | Callable[[], bytes | memoryview | Sequence[bytes | memoryview]]
)

T = TypeVar("T")


def check_path(path: str, *, temporary: bool = False) -> str:
    """Refuse a relative storage path that could leave its folder.

    Parameters
    ----------
    path : str
        A ``/``-separated path relative to the hub root.
    temporary : bool
        Allow a temporary file's name (garbage collection deletes those a killed writer left).

    Returns
    -------
    str
        ``path``, unchanged.

    Raises
    ------
    InvalidArgumentError
        If a segment is empty, ``.`` or ``..``, or the path holds a backslash, a NUL or the
        temporary-file suffix.
    """
    segments = path.split("/")
    if (
        any(s in ("", ".", "..") for s in segments)
        or "\\" in path
        or "\x00" in path
        or (path.endswith(TMP_SUFFIX) and not temporary)
    ):
        raise InvalidArgumentError(
            f"refusing storage key {path!r}: keys are '/'-separated, relative, with no empty, "
            "'.' or '..' segments"
        )
    return path


def _as_parts(data: Parts) -> Sequence[bytes | memoryview]:
    if callable(data):
        data = data()
    return (data,) if isinstance(data, bytes | memoryview) else data


def as_bytes(data: Parts) -> bytes:
    """Return what a write of ``data`` stores, as one bytes object."""
    return b"".join(_as_parts(data))


@contextlib.contextmanager
def _translating(url: str, path: str) -> Iterator[None]:
    """Map a backend exception raised inside the block to the hubzarr error tree."""
    try:
        yield
    except (StorageError, AlreadyExistsError, InvalidArgumentError, ReadOnlyError, NotFoundError):
        raise
    except PermissionError as exc:
        raise StorageError(
            f"permission denied for {path!r} under {url}: check that this account may "
            f"read and write there ({exc.strerror or exc})"
        ) from exc
    except Exception as exc:
        raise StorageError(
            f"storage operation on {path!r} under {url} failed: {type(exc).__name__}: {exc}"
        ) from exc


#: Set while a thread drives a read coroutine itself, without an event loop (see
#: :func:`reads_in_caller`).
_in_caller: ContextVar[bool] = ContextVar("hubzarr_reads_in_caller", default=False)


@contextlib.contextmanager
def reads_in_caller() -> Iterator[None]:
    """Let reads of a storage with :attr:`Storage.caller_reads` run in the calling thread.

    Local reads then block the caller instead of hopping to a worker thread, so a read
    coroutine never suspends and a thread can run it to the end by itself
    (:meth:`hubzarr.store.HubStore.read_payload_here`): the bulk readers' decoding threads read
    their own chunks, with no event loop in between.
    """
    token = _in_caller.set(True)
    try:
        yield
    finally:
        _in_caller.reset(token)


class Storage(ABC):
    """Asynchronous primitives over one hub root.

    Paths are relative to the root and checked with :func:`check_path` before use.
    """

    #: The root as a URL, safe to show (no credentials).
    url: str
    #: Whether the root refuses writes (HTTP).
    read_only: bool = False
    #: How far modification times may be off this machine's clock (resolution, skew).
    clock_slack_s: float = 2.0
    #: Whether reads (read, read_first, size, exists) complete without suspending inside
    #: :func:`reads_in_caller`.
    caller_reads: bool = False

    def _writable(self, path: str) -> None:
        if self.read_only:
            raise ReadOnlyError(
                f"cannot write {path!r}: the hub root {self.url} is read-only; copy the "
                "repository to a writable root to change it"
            )

    @abstractmethod
    async def read(self, path: str) -> bytes | None:
        """Return the object's bytes, or ``None`` if it does not exist."""

    async def read_first(
        self, paths: Sequence[str], then: Callable[[bytes], T], *, parallel: int = 1
    ) -> tuple[int, T] | None:
        """Read the first of ``paths`` that exists; return its position and ``then(its bytes)``.

        Returns ``None`` if none exists. Object stores read the first ``parallel`` paths
        concurrently (one round trip instead of several, at the price of requests that may turn
        out unneeded); the rest are tried one after another. Local storage does the reads and
        ``then`` in one worker thread: one hop per chunk, as zarr's own LocalStore.
        """
        head = list(paths[:parallel]) if parallel > 1 else []
        found = await asyncio.gather(*(self.read(p) for p in head))
        for i, raw in enumerate(found):
            if raw is not None:
                return i, then(raw)
        for i in range(len(head), len(paths)):
            raw = await self.read(paths[i])
            if raw is not None:
                return i, then(raw)
        return None

    @abstractmethod
    async def size(self, path: str) -> int | None:
        """Return the object's size in bytes, or ``None`` if it does not exist."""

    async def exists(self, path: str) -> bool:
        """Whether a small object exists, in the cheapest way the backend offers.

        On object stores one GET: fsspec's ``info`` would send a HEAD and, for a missing
        object, a LIST as well.
        """
        return await self.read(path) is not None

    @abstractmethod
    async def write(self, path: str, data: Parts, *, durable: bool = False) -> None:
        """Replace the object atomically; ``durable`` also flushes it to stable storage."""

    @abstractmethod
    async def create(
        self, path: str, data: Parts, *, durable: bool = True, unique: bool = True
    ) -> None:
        """Write the object only if it does not exist yet (put-if-absent).

        ``durable`` (the default) also flushes it to stable storage before it becomes visible;
        chunk objects skip that (their checksum catches one torn by a power loss). ``unique``
        says that no other writer ever creates this path with the same bytes, so finding those
        bytes there means our own write, whose acknowledgement was lost (see
        :class:`FsspecStorage`); pass ``False`` where equal bytes may be another's (chunk
        generations), and any existing object is a conflict.

        Raises
        ------
        AlreadyExistsError
            If the object exists; it is left unchanged.
        """

    @abstractmethod
    async def delete(self, path: str) -> None:
        """Delete the object; an absent object is not an error."""

    @abstractmethod
    async def delete_prefix(self, prefix: str) -> None:
        """Delete every object under the folder ``prefix`` (never the whole root)."""

    @abstractmethod
    async def list(self, prefix: str) -> dict[str, int]:
        """Return ``{path relative to prefix: size}`` for every object under the folder."""

    @abstractmethod
    async def list_dir(self, prefix: str) -> builtins.list[str]:
        """Return the names of the immediate children (objects and folders) of ``prefix``."""

    @abstractmethod
    async def list_detailed(
        self, prefix: str, *, temporaries: bool = False
    ) -> dict[str, tuple[int, float]]:
        """Return ``{path relative to prefix: (size, modification time)}`` under the folder.

        Times are seconds since the epoch; an object whose time the backend does not report
        gets ``inf`` (it never looks old). ``temporaries`` also lists the temporary files a
        crashed local writer left behind.
        """


def _local_read(path: str | Path) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


_buffers = threading.local()


def _local_read_reusing(path: str | Path) -> memoryview | None:
    """Read a file into a buffer this thread reuses: valid until the thread's next such read.

    For the caller-driven bulk reads: a fresh bytes object per chunk costs the kernel a page
    fault per 4 KiB when it is first written, about as much as the copy itself.
    """
    try:
        with open(path, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            buf: bytearray | None = getattr(_buffers, "buf", None)
            if buf is None or len(buf) < size + 1:
                buf = bytearray(max(size + 1, 2 * len(buf) if buf else 0))
                _buffers.buf = buf
            view = memoryview(buf)
            filled = 0
            while n := f.readinto(view[filled:]):
                filled += n
                if filled == len(view):  # the file grew since the fstat
                    rest = _local_read(path)
                    return None if rest is None else memoryview(rest)
            return view[:filled]
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def _local_size(path: Path) -> int | None:
    try:
        st = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return None if path.is_dir() else st.st_size


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _local_write(path: Path, data: Parts, durable: bool, create: bool) -> None:
    parts = _as_parts(data)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}{TMP_SUFFIX}")
    try:
        f = open(tmp, "xb")  # noqa: SIM115 - closed below, after the directory is made
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(tmp, "xb")  # noqa: SIM115
    try:
        with f:
            for part in parts:
                f.write(part)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if create:
            try:
                os.link(tmp, path)
            finally:
                tmp.unlink()
        else:
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(path.parent)


def _local_list(base: Path, temporaries: bool = False) -> dict[str, os.stat_result]:
    out: dict[str, os.stat_result] = {}
    for folder, _dirs, files in os.walk(base):
        rel = os.path.relpath(folder, base)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        for name in files:
            if name.endswith(TMP_SUFFIX) and not temporaries:
                continue
            with contextlib.suppress(FileNotFoundError):
                out[prefix + name] = os.stat(os.path.join(folder, name))
    return out


def _local_list_dir(base: Path) -> builtins.list[str]:
    try:
        return sorted(n for n in os.listdir(base) if not n.endswith(TMP_SUFFIX))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _local_delete_prefix(base: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(base)


class LocalStorage(Storage):
    """Storage in a local folder, through the operating system.

    Parameters
    ----------
    root : pathlib.Path
        The folder holding the hub; created on first write.
    """

    #: Modification times come from this machine's clock, to the nanosecond.
    clock_slack_s = 0.0
    caller_reads = True

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().absolute()
        self._root_str = str(self.root)
        self.url = self.root.as_uri()

    def _full_str(self, path: str) -> str:
        """:meth:`_full` as a string, without pathlib's parsing (for reads of chunks)."""
        return (
            os.path.join(self._root_str, *check_path(path).split("/")) if path else self._root_str
        )

    def _full(self, path: str) -> Path:
        return self.root.joinpath(*check_path(path).split("/")) if path else self.root

    async def read(self, path: str) -> bytes | None:
        with _translating(self.url, path):
            if _in_caller.get():
                return _local_read(self._full(path))
            return await asyncio.to_thread(_local_read, self._full(path))

    async def read_first(
        self, paths: Sequence[str], then: Callable[[bytes], T], *, parallel: int = 1
    ) -> tuple[int, T] | None:
        def work(read: Callable[[str], bytes | memoryview | None]) -> tuple[int, T] | None:
            for i, path in enumerate(paths):
                raw = read(self._full_str(path))  # only as far as needed
                if raw is not None:
                    return i, then(raw)  # type: ignore[arg-type]
            return None

        with _translating(self.url, paths[0] if paths else ""):
            if _in_caller.get():
                # The bytes are consumed (checked, decoded) before this thread reads again.
                return work(_local_read_reusing)
            return await asyncio.to_thread(work, _local_read)

    async def size(self, path: str) -> int | None:
        # One stat of local metadata takes microseconds, less than a hop to a worker thread;
        # the write fence asks this once per burst of chunk writes.
        with _translating(self.url, path):
            return _local_size(self._full(path))

    async def exists(self, path: str) -> bool:
        return await self.size(path) is not None

    async def write(self, path: str, data: Parts, *, durable: bool = False) -> None:
        with _translating(self.url, path):
            await asyncio.to_thread(_local_write, self._full(path), data, durable, False)

    async def create(
        self, path: str, data: Parts, *, durable: bool = True, unique: bool = True
    ) -> None:
        with _translating(self.url, path):
            try:
                await asyncio.to_thread(_local_write, self._full(path), data, durable, True)
            except FileExistsError as exc:
                raise AlreadyExistsError(f"{path!r} already exists under {self.url}") from exc

    async def delete(self, path: str) -> None:
        full = self.root.joinpath(*check_path(path, temporary=True).split("/"))
        with _translating(self.url, path):
            await asyncio.to_thread(full.unlink, True)

    async def delete_prefix(self, prefix: str) -> None:
        with _translating(self.url, prefix):
            await asyncio.to_thread(_local_delete_prefix, self._full(check_path(prefix)))

    async def list(self, prefix: str) -> dict[str, int]:
        with _translating(self.url, prefix):
            found = await asyncio.to_thread(_local_list, self._full(prefix))
        return {p: st.st_size for p, st in found.items()}

    async def list_detailed(
        self, prefix: str, *, temporaries: bool = False
    ) -> dict[str, tuple[int, float]]:
        with _translating(self.url, prefix):
            found = await asyncio.to_thread(_local_list, self._full(prefix), temporaries)
        return {p: (st.st_size, st.st_mtime) for p, st in found.items()}

    async def list_dir(self, prefix: str) -> builtins.list[str]:
        base = self._full(prefix)
        with _translating(self.url, prefix):
            return await asyncio.to_thread(_local_list_dir, base)


#: Protocols whose servers answer byte-range GETs (HTTP servers need not).
_RANGED = frozenset({"s3", "s3a", "gs", "gcs", "memory"})

#: How often an operation is tried when the backend fails transiently, and the first backoff.
_ATTEMPTS = 4
_BACKOFF_S = 0.05
#: Backend error codes that mean "try again" (S3's and GCS's throttling and 5xx family).
_TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "BadDigest",
    }
)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__]


def _error_code(exc: BaseException) -> tuple[str, int]:
    """Return the backend's (error code, HTTP status) found in ``exc``'s chain, or ("", 0)."""
    for e in _causes(exc):
        response = getattr(e, "response", None)
        if isinstance(response, dict) and "Error" in response:
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            return str(response["Error"].get("Code", "")), int(status or 0)
        if type(e).__name__ == "HttpError":  # gcsfs
            return "", int(getattr(e, "code", 0) or 0)
        if type(e).__name__ == "ClientResponseError":  # aiohttp (HTTP roots)
            return "", int(getattr(e, "status", 0) or 0)
    return "", 0


def _is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is worth retrying: throttling, 5xx, a dropped connection, a timeout."""
    if isinstance(exc, FileNotFoundError | FileExistsError | PermissionError):
        return False
    code, status = _error_code(exc)
    if code in _TRANSIENT_CODES or status >= 500 or status == 429:
        return True
    for e in _causes(exc):
        if isinstance(e, ConnectionError | TimeoutError | asyncio.TimeoutError):
            return True
        names = {t.__name__ for t in type(e).__mro__}
        if names & {
            "ClientConnectionError",
            "ClientPayloadError",
            "ServerDisconnectedError",
            "HTTPClientError",
            "ConnectionClosedError",
            "EndpointConnectionError",
            "ReadTimeoutError",
            "ConnectTimeoutError",
            "IncompleteReadError",
        }:
            return True
    return False


def _mtime(info: dict[str, Any]) -> float:
    """An fsspec listing entry's modification time in seconds since the epoch (``inf`` when
    the backend reports none, so the object never looks old)."""
    for field in ("LastModified", "mtime", "updated", "created"):
        value = info.get(field)
        if isinstance(value, datetime):
            return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
                return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    return math.inf


def describe_credentials(options: dict[str, Any]) -> str:
    """Say which credential a backend uses, without revealing any secret."""
    if options.get("anon") or options.get("token") == "anon":
        return "anonymous access"
    if options.get("profile"):
        return f"profile {options['profile']!r}"
    key = options.get("key")
    if isinstance(key, str) and key:
        shown = f"{key[:4]}...{key[-4:]}" if len(key) > 12 else "****"
        return f"access key {shown}"
    if options.get("token"):
        return "the token given in storage_options"
    return "credentials from the environment or the backend's default profile"


class FsspecStorage(Storage):
    """Storage on any fsspec filesystem: memory, S3, GCS, HTTP (read-only), ...

    Parameters
    ----------
    protocol : str
        The fsspec protocol.
    url : str
        The root URL, as the user gave it (it must hold no credentials).
    options : dict
        Options for the filesystem (credentials may be among them: never shown).
    read_only : bool
        Refuse every write (HTTP roots).

    Notes
    -----
    Asynchronous filesystems (S3, GCS, HTTP) run on fsspec's own I/O loop, which owns their
    HTTP sessions (and closes them at exit); callers on any event loop (zarr's, a test's) hand
    their coroutines over to it. Transient failures (5xx, throttling, dropped
    connections, timeouts) are retried with exponential backoff; a put-if-absent that
    finds the object already there reads it back, so a lost acknowledgement of our own write is
    not mistaken for a conflict.
    """

    # Put-if-absent on the in-memory filesystem: it lives in this process only, so a
    # process-wide lock around exists-then-write makes it atomic.
    _memory_lock = threading.Lock()

    def __init__(
        self, protocol: str, url: str, options: dict[str, Any], *, read_only: bool = False
    ) -> None:
        self.protocol = protocol
        self.url = url
        self.read_only = read_only
        self._options = options
        self._cls = fsspec.get_filesystem_class(protocol)
        self._async = bool(getattr(self._cls, "async_impl", False))
        self._fs: Any = None
        self._base = str(self._cls._strip_protocol(url)).rstrip("/")

    def __repr__(self) -> str:
        return f"FsspecStorage({self.url!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Credentials stay behind: the receiver resolves its own (environment, profile).
        return (
            type(self),
            (self.protocol, self.url, public_options(self._options)),
            {"read_only": self.read_only},
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.read_only = state["read_only"]

    @property
    def fs(self) -> Any:
        """The fsspec filesystem (created on first use)."""
        if self._fs is None:
            self._fs = self._cls(**self._options)
        return self._fs

    def _full(self, path: str) -> str:
        return f"{self._base}/{check_path(path)}" if path else self._base

    def _bucket(self) -> str:
        return self._base.split("/", 1)[0]

    async def _call(
        self,
        method: str,
        *args: Any,
        missing: Any = _RAISE,
        **kwargs: Any,
    ) -> Any:
        """Call a filesystem method, retrying transient failures with backoff.

        ``missing`` is returned when the object does not exist (a missing bucket is still an
        error).
        """
        fs = self.fs
        for attempt in range(_ATTEMPTS):
            try:
                if self._async:
                    coro = getattr(fs, "_" + method)(*args, **kwargs)
                    return await asyncio.wrap_future(
                        asyncio.run_coroutine_threadsafe(coro, fs.loop)
                    )
                return await asyncio.to_thread(getattr(fs, method), *args, **kwargs)
            except FileNotFoundError as exc:
                if _error_code(exc)[0] == "NoSuchBucket" or "bucket does not exist" in str(exc):
                    raise NotFoundError(
                        f"the bucket {self._bucket()!r} of the hub root {self.url} does not "
                        "exist; create it, or run 'hub configure' which offers to"
                    ) from exc
                if missing is _RAISE:
                    raise
                return missing
            except Exception as exc:
                if attempt + 1 == _ATTEMPTS or not _is_transient(exc):
                    raise
                # Exponential backoff with jitter: concurrent clients do not retry in lockstep.
                await asyncio.sleep(_BACKOFF_S * 2**attempt * (0.5 + random.random()))
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def _translating(self, path: str) -> Iterator[None]:
        try:
            with _translating(self.url, path):
                yield
        except StorageError as exc:
            causes = list(_causes(exc))
            missing = any(type(e).__name__ == "NoCredentialsError" for e in causes)
            denied = missing or any(isinstance(e, PermissionError) for e in causes)
            if not denied and _error_code(exc)[1] != 403:
                raise
            if missing:
                raise AccessDeniedError(
                    f"no credentials were found for {self.url}; set them with 'hub configure', "
                    "the backend's environment variables or profile, or use anon=True for a "
                    "public bucket"
                ) from exc.__cause__
            raise AccessDeniedError(
                f"access denied to {f'{path!r} in ' if path else ''}bucket {self._bucket()!r} "
                f"({self.url}) using "
                f"{describe_credentials(self._options)}; check that this credential may read "
                "and write there, or choose another with 'hub configure'"
            ) from exc.__cause__

    async def read(self, path: str) -> bytes | None:
        with self._translating(path):
            data: bytes | None = await self._call("cat_file", self._full(path), missing=None)
            return data

    async def exists(self, path: str) -> bool:
        if self.protocol not in _RANGED:
            return await super().exists(path)
        # A GET of the first byte: one request whatever the object's size (fsspec's info
        # sends a HEAD and, for a missing object, a LIST). hubzarr never stores empty objects.
        with self._translating(path):
            head = await self._call("cat_file", self._full(path), start=0, end=1, missing=None)
            return head is not None

    async def size(self, path: str) -> int | None:
        with self._translating(path):
            info = await self._call("info", self._full(path), missing=None)
            if info is None or info.get("type") == "directory":
                return None
            return int(info["size"])

    async def write(self, path: str, data: Parts, *, durable: bool = False) -> None:
        self._writable(path)
        with self._translating(path):
            await self._call("pipe_file", self._full(path), b"".join(_as_parts(data)))

    def _create_in_memory(self, full: str, data: bytes) -> bool:
        with self._memory_lock:
            if self.fs.exists(full):
                return False
            self.fs.pipe_file(full, data)
            return True

    async def create(
        self, path: str, data: Parts, *, durable: bool = True, unique: bool = True
    ) -> None:
        self._writable(path)
        full = self._full(path)
        exists = AlreadyExistsError(f"{path!r} already exists under {self.url}")
        with self._translating(path):
            payload = b"".join(_as_parts(data))
            if isinstance(self.fs, MemoryFileSystem):
                if not self._create_in_memory(full, payload):
                    raise exists
                return
            try:
                await self._call("pipe_file", full, payload, mode="create")
            except FileExistsError as exc:
                # "Already exists" may be our own write whose acknowledgement was lost and
                # retried by a layer below (aiohttp re-sends a PUT whose connection dropped,
                # botocore retries a 5xx, s3fs a SlowDown). Every created object is unique to
                # its writer or the same for all, so equal content means it is ours. Costs one
                # GET, only on a conflict.
                if unique and await self._call("cat_file", full, missing=None) == payload:
                    return
                raise exists from exc

    async def delete(self, path: str) -> None:
        self._writable(path)
        with self._translating(path):
            await self._call("rm_file", self._full(path), missing=None)

    async def delete_prefix(self, prefix: str) -> None:
        self._writable(prefix)
        with self._translating(prefix):
            await self._call("rm", self._full(check_path(prefix)), recursive=True, missing=None)

    async def _find(self, prefix: str) -> dict[str, dict[str, Any]]:
        base = self._full(prefix)
        with self._translating(prefix):
            found = await self._call("find", base, detail=True, missing={})
        start = len(base) + 1
        return {
            p[start:]: info
            for p, info in found.items()
            if p.startswith(base + "/")
            and not p.endswith(TMP_SUFFIX)
            and info.get("type") != "directory"
        }

    async def list(self, prefix: str) -> dict[str, int]:
        return {p: int(info["size"]) for p, info in (await self._find(prefix)).items()}

    async def list_detailed(
        self, prefix: str, *, temporaries: bool = False
    ) -> dict[str, tuple[int, float]]:
        # Object stores have no temporary files: every write is atomic.
        return {
            p: (int(info["size"]), _mtime(info)) for p, info in (await self._find(prefix)).items()
        }

    async def list_dir(self, prefix: str) -> builtins.list[str]:
        base = self._full(prefix)
        with self._translating(prefix):
            try:
                entries = await self._call("ls", base, detail=False, missing=[])
            except NotADirectoryError:
                return []
        names = {str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries}
        return sorted(n for n in names if n and not n.endswith(TMP_SUFFIX))


#: storage_options that may travel in a pickle: none of them is a credential (a profile is a
#: name; the receiver looks its keys up itself).
_PUBLIC_OPTIONS = frozenset(
    {
        "anon",
        "endpoint_url",
        "region_name",
        "requester_pays",
        "project",
        "version_aware",
        "profile",
        "max_concurrency",
        "use_listings_cache",
    }
)
_PUBLIC_CLIENT_KWARGS = frozenset({"endpoint_url", "region_name"})


def public_options(options: dict[str, Any]) -> dict[str, Any]:
    """Return the storage options that hold no credential (the ones safe to pickle or show)."""
    out = {k: v for k, v in options.items() if k in _PUBLIC_OPTIONS}
    client = options.get("client_kwargs")
    if isinstance(client, dict):
        kept = {k: v for k, v in client.items() if k in _PUBLIC_CLIENT_KWARGS}
        if kept:
            out["client_kwargs"] = kept
    return out


def check_root(root: str) -> str:
    """Refuse a hub root URL that embeds credentials; return it unchanged otherwise.

    Raises
    ------
    InvalidArgumentError
        If ``root`` holds ``user:password@``.
    """
    if "://" in root:
        parts = urlsplit(root)
        if parts.username is not None or parts.password is not None:
            raise InvalidArgumentError(
                "a hub root URL must not hold credentials (user:password@); put them in the "
                "backend's own configuration (environment variables, a profile, or "
                "'hub configure')"
            )
    return root


def open_storage(root: str, storage_options: dict[str, Any] | None = None) -> Storage:
    """Open the storage for a hub root.

    Parameters
    ----------
    root : str
        A folder path, a ``file://`` URL, or an fsspec URL (``memory://``, ``s3://``, ...).
    storage_options : dict, optional
        Passed to the fsspec filesystem.

    Returns
    -------
    Storage
        The storage for that root.

    Raises
    ------
    InvalidArgumentError
        If the URL embeds credentials, or its protocol is unknown to fsspec.
    """
    if "://" not in check_root(root):
        return LocalStorage(Path(root))
    parts = urlsplit(root)
    if parts.scheme == "file":
        return LocalStorage(Path(url2pathname(parts.path)))
    try:
        fsspec.get_filesystem_class(parts.scheme)
    except (ValueError, ImportError) as exc:
        raise InvalidArgumentError(
            f"cannot open hub root {root!r}: {exc}; use a folder path or a URL such as "
            "'memory://hub', 's3://bucket/prefix' or 'gs://bucket/prefix'"
        ) from exc
    options = dict(storage_options or {})
    # A cached listing would answer "is this head sealed?" from the past: never cache.
    options.setdefault("use_listings_cache", False)
    if parts.scheme in ("s3", "s3a"):
        # s3fs otherwise sends a HEAD before every GET of a whole object (to size a concurrent
        # download), doubling the requests and halving small-chunk throughput.
        options.setdefault("max_concurrency", 1)
    return FsspecStorage(parts.scheme, root, options, read_only=parts.scheme in ("http", "https"))
