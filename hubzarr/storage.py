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
  used. No symbolic link inside the root is ever followed (every path is resolved relative to
  folder descriptors, with openat2's ``RESOLVE_NO_SYMLINKS`` where Linux has it): it needs a
  POSIX system (``dir_fd``, ``O_NOFOLLOW``).
- :class:`FsspecStorage` serves every other fsspec filesystem (memory, S3, GCS; HTTP read-only,
  with each key segment quoted so the server sees literally the key).

Keys are checked on what a backend will resolve (:func:`check_path`), and roots before any
I/O (:func:`check_root`): a root that could hold credentials is refused without being echoed.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import ctypes
import errno
import math
import mmap
import os
import platform
import re
import shutil
import stat
import sys
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit
from urllib.request import url2pathname

from hubzarr.errors import (
    AccessDeniedError,
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
    ReadOnlyError,
    StorageError,
)
from hubzarr.retry import retry_transient

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


def _decodings(segment: str) -> Iterator[str]:
    """``segment``, then what percent-decoding it again and again gives, until nothing changes.

    A web server (or a proxy before it) decodes a request's path once, some decode twice;
    every stage is what some backend may resolve.
    """
    yield segment
    while "%" in segment:
        decoded = unquote(segment, errors="surrogateescape")
        if decoded == segment:
            return
        segment = decoded
        yield segment


def _bad_segment(segment: str) -> bool:
    if segment in ("", ".", ".."):
        return True
    if "%" not in segment:  # the common case, on every chunk read: no decoding to do
        return False
    return any(
        s in ("", ".", "..") or "/" in s or "\\" in s or "\x00" in s for s in _decodings(segment)
    )


def check_path(path: str, *, temporary: bool = False) -> str:
    """Refuse a relative storage path that could leave its folder, on any backend.

    Every backend gets the path's segments literally (HTTP roots quote each one), but a
    segment is also refused if percent-decoding it, once or repeatedly, gives something a
    server would resolve: ``%2e%2e`` is ``..`` to a web server, ``%252e%252e`` to one behind a
    decoding proxy, ``..%2f`` holds a separator.

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
        If a segment is empty, ``.`` or ``..``, or decodes (``%XX``, repeatedly) to one of
        those or to something holding ``/``, a backslash or a NUL; or if the path holds a
        backslash, a NUL or ends with the temporary-file suffix.
    """
    if (
        any(_bad_segment(s) for s in path.split("/"))
        or "\\" in path
        or "\x00" in path
        or (path.endswith(TMP_SUFFIX) and not temporary)
    ):
        raise InvalidArgumentError(
            f"refusing storage key {path!r}: keys are '/'-separated, relative, with no empty, "
            "'.' or '..' segments, none of which percent-decodes ('%2e%2e', '%2f', ...) to "
            "such a segment, a '/' or a backslash; rename the key"
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
    except _RefusedEntryError as exc:
        raise StorageError(
            f"refusing {path!r} under {url}: {exc.path!r} is {exc.what}; hubzarr never follows "
            "a link inside a local hub root, nor reads anything there but regular files and "
            "folders, so that nothing outside the root is read, written or deleted; put the "
            "file or folder itself in its place, or remove it"
        ) from exc
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


def reading_in_caller() -> bool:
    """Whether the current thread runs a read coroutine itself (inside :func:`reads_in_caller`),
    so that a storage wrapper must not suspend either."""
    return _in_caller.get()


@contextlib.contextmanager
def reads_in_caller() -> Iterator[None]:
    """Let reads of a storage with :attr:`Storage.caller_reads` run in the calling thread.

    Local reads then block the caller instead of hopping to a worker thread, so a read
    coroutine never suspends and a thread can run it to the end by itself
    (:meth:`hubzarr.session.Session.read_here`): the bulk readers' decoding threads read
    their own chunks, with no event loop in between.
    """
    token = _in_caller.set(True)
    try:
        yield
    finally:
        _in_caller.reset(token)


#: Set while a thread reads from the local cache alone (see :func:`reads_from_cache`).
_cache_only: ContextVar[bool] = ContextVar("hubzarr_reads_from_cache", default=False)


class NotCachedError(Exception):
    """Raised by a caching storage inside :func:`reads_from_cache` where a read would need the
    storage behind it (internal: never reaches a user)."""


def reading_from_cache() -> bool:
    """Whether the current thread may read only what a local cache holds
    (:func:`reads_from_cache`)."""
    return _cache_only.get()


@contextlib.contextmanager
def reads_from_cache() -> Iterator[None]:
    """Let reads run in the calling thread from the local cache alone.

    A caching storage (:attr:`Storage.caches`) then answers from its cache, without
    suspending, or raises :class:`NotCachedError` where it would ask the storage behind it:
    the bulk readers' decoding threads read cached chunks themselves, as they read local
    files, and send only the misses over the network
    (:meth:`hubzarr.session.Session.read_cached`).
    """
    tokens = _in_caller.set(True), _cache_only.set(True)
    try:
        yield
    finally:
        _cache_only.reset(tokens[1])
        _in_caller.reset(tokens[0])


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
    #: Whether reads go through a local cache that can answer them inside
    #: :func:`reads_from_cache`.
    caches: bool = False
    #: Whether emptying superseded objects (:meth:`empty`) gains more than it costs: on local
    #: disks an object's data lingers in the page cache and must be written back, and takes
    #: space until garbage collection; on object stores emptying would cost a request.
    reclaims_superseded: bool = False

    @property
    def identity(self) -> str:
        """What names this root's objects on any machine, with no credential in it: its URL
        (object stores add their endpoint: one bucket name on two services names two buckets).
        A cache keys objects by it."""
        return self.url

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
        self, paths: Sequence[str], then: Callable[[int, bytes], T], *, parallel: int = 1
    ) -> tuple[int, T] | None:
        """Read the first of ``paths`` that exists; return its position ``i`` and
        ``then(i, its bytes)``.

        Returns ``None`` if none exists. Object stores read the first ``parallel`` paths
        concurrently (one round trip instead of several, at the price of requests that may turn
        out unneeded); the rest are tried one after another. Local storage does the reads and
        ``then`` in one worker thread: one hop per chunk, as zarr's own LocalStore.
        """
        head = list(paths[:parallel]) if parallel > 1 else []
        found = await asyncio.gather(*(self.read(p) for p in head))
        for i, raw in enumerate(found):
            if raw is not None:
                return i, then(i, raw)
        for i in range(len(head), len(paths)):
            raw = await self.read(paths[i])
            if raw is not None:
                return i, then(i, raw)
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

    async def create_copy(
        self, path: str, source: Storage, source_path: str, check: Callable[[memoryview], Any]
    ) -> int | None:
        """Create ``path`` (put-if-absent, not flushed) with the bytes of ``source_path`` at
        ``source``, once ``check`` accepted them (it raises to refuse); return the size, or
        ``None`` if the source object does not exist.

        Backends may copy without the bytes passing through Python (local to local: the
        kernel copies, and ``check`` reads the copy before it is published).

        Raises
        ------
        AlreadyExistsError
            If ``path`` exists; it is left unchanged.
        """
        check_path(path)  # before anything is read
        raw = await source.read(source_path)
        if raw is None:
            return None
        check(memoryview(raw))
        await self.create(path, raw, durable=False, unique=False)
        return len(raw)

    async def empty(self, path: str) -> None:
        """Drop the object's data but keep its name (a zero-byte object); an absent object is
        not an error. For superseded generations (see :mod:`hubzarr.session`)."""
        self._writable(path)
        if await self.exists(path):
            await self.write(path, b"")

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


# -- local storage -------------------------------------------------------------------------
#
# Inside a local root no symbolic link is followed (the root itself, and its parents, may be
# links): a link planted in a repository could otherwise make a read return another root's
# data, or a write or a deletion land outside the root. Every operation opens the root once,
# then each folder below it with O_NOFOLLOW relative to its parent's descriptor, and the final
# file with O_NOFOLLOW too, so a link swapped in at any moment is refused, never followed.
# Temporary files, links, renames, folders and deletions are all made relative to the folder's
# descriptor. Only regular files are read: a FIFO planted in the root would block a reader.

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_ROOT_FLAGS = os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC
_FOLDER_FLAGS = _ROOT_FLAGS | os.O_NOFOLLOW
# O_NONBLOCK: opening a FIFO returns at once (it is then refused); regular files ignore it.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC
_TEMPORARY_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC
# What opening a link with O_NOFOLLOW answers: ENOTDIR with O_DIRECTORY (Linux), ELOOP
# (Linux, macOS) or EMLINK (FreeBSD) otherwise.
_LINK_ERRNOS = frozenset({errno.ENOTDIR, errno.ELOOP, errno.EMLINK})


class _RefusedEntryError(Exception):
    """An entry inside a local root that hubzarr neither follows nor reads (see above)."""

    def __init__(self, path: str, what: str) -> None:
        super().__init__(path, what)
        #: Its path relative to the root.
        self.path = path
        #: What it is, as a sentence ends: "a symbolic link", "not a regular file".
        self.what = what


_LINK = "a symbolic link"
_SPECIAL = "not a regular file (a FIFO, socket or device)"


def _is_link(folder: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _open_root(root: str, create: bool) -> int | None:
    """Open the root folder (following links: the root may be one); ``None`` if absent."""
    try:
        return os.open(root, _ROOT_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        if not create:
            return None
    os.makedirs(root, exist_ok=True)
    return os.open(root, _ROOT_FLAGS)


# openat2 (Linux 5.6+) resolves a whole relative path in one call and fails with ELOOP at any
# link on the way (RESOLVE_NO_SYMLINKS): the common case costs two calls fewer per folder than
# the walk below, which remains for other systems, to name the link found, and to make folders.
_NR_OPENAT2 = 437  # the same on every architecture with the common syscall table
_OPENAT2_MACHINES = frozenset({"x86_64", "aarch64", "arm64", "riscv64", "ppc64le", "s390x"})
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
_AT_FDCWD = -100


class _OpenHow(ctypes.Structure):
    _fields_ = (
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    )


def _how(flags: int) -> Any:
    return ctypes.pointer(_OpenHow(flags, 0, _RESOLVE_NO_SYMLINKS | _RESOLVE_BENEATH))


# Without O_NOFOLLOW: with O_DIRECTORY a final link would answer ENOTDIR, as a file does;
# RESOLVE_NO_SYMLINKS answers ELOOP for a link anywhere, the last component included.
_READ_HOW = _how(_READ_FLAGS & ~os.O_NOFOLLOW)
_FOLDER_HOW = _how(_ROOT_FLAGS)
_HOW_SIZE = ctypes.sizeof(_OpenHow)


def _openat2_syscall() -> Any:
    """libc's ``syscall`` if openat2 works here (not too old a kernel, not filtered by a
    seccomp profile), else ``None``."""
    if sys.platform != "linux" or platform.machine() not in _OPENAT2_MACHINES:
        return None
    try:
        call = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None
    call.restype = ctypes.c_long
    call.argtypes = (
        ctypes.c_long,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.POINTER(_OpenHow),
        ctypes.c_size_t,
    )
    fd = call(_NR_OPENAT2, _AT_FDCWD, b".", _FOLDER_HOW, _HOW_SIZE)
    if fd < 0:
        return None
    os.close(fd)
    return call


_openat2 = _openat2_syscall()


def _beneath(top: int, rel: str, how: Any) -> int:
    """Open ``rel`` inside the open folder ``top`` with openat2, through no link."""
    fd = int(_openat2(_NR_OPENAT2, top, os.fsencode(rel), how, _HOW_SIZE))
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), rel)
    return fd


def _open_child(folder: int, segments: Sequence[str], i: int, create: bool) -> int | None:
    """Open folder ``segments[i]`` inside the open ``folder`` without following a link.

    ``None`` if it is absent or a file (and not ``create``); with ``create`` a missing folder is
    made and a file in the way raises ``NotADirectoryError``.
    """
    name = segments[i]
    try:
        try:
            return os.open(name, _FOLDER_FLAGS, dir_fd=folder)
        except FileNotFoundError:
            if not create:
                return None
            with contextlib.suppress(FileExistsError):  # another writer made it meanwhile
                os.mkdir(name, dir_fd=folder)
            return os.open(name, _FOLDER_FLAGS, dir_fd=folder)
    except OSError as exc:
        if exc.errno not in _LINK_ERRNOS:
            raise
        if _is_link(folder, name):
            raise _RefusedEntryError("/".join(segments[: i + 1]), _LINK) from None
        if create:
            raise
        return None


def _walk_folders(top: int, segments: Sequence[str], create: bool) -> int | None:
    """Open ``segments`` (at least one) inside the open folder ``top`` one by one, without
    following a link; ``top`` stays open. ``None`` if a folder is absent or a file."""
    fd = top
    try:
        for i in range(len(segments)):
            child = _open_child(fd, segments, i, create)
            if fd != top:
                os.close(fd)
            fd = top
            if child is None:
                return None
            fd = child
        opened, fd = fd, top
        return opened
    finally:
        if fd != top:
            os.close(fd)


def _open_folder(root: str, segments: Sequence[str], *, create: bool = False) -> int | None:
    """Open ``root/segments...`` without following a link below the root.

    Returns its descriptor (the caller closes it), or ``None`` if a folder on the way is absent
    or a file; with ``create``, missing folders are made.

    Raises
    ------
    _RefusedEntryError
        If a folder on the way is a link.
    """
    top = _open_root(root, create)
    if top is None or not segments:
        return top
    try:
        if _openat2 is not None:
            try:
                return _beneath(top, "/".join(segments), _FOLDER_HOW)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR) and not create:
                    return None
                if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    raise
                # A link on the way (the walk names it), or folders to make.
        return _walk_folders(top, segments, create)
    finally:
        os.close(top)


def _split(rel: str) -> tuple[list[str], str]:
    *folders, name = rel.split("/")
    return folders, name


def _open_in(top: int, rel: str) -> int | None:
    """Open ``rel`` for reading inside the open folder ``top``, through no link."""
    if _openat2 is not None:
        try:
            return _beneath(top, rel, _READ_HOW)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            if exc.errno != errno.ELOOP:
                raise
            # A link on the way: the walk names it.
    folders, name = _split(rel)
    folder = _walk_folders(top, folders, False) if folders else top
    if folder is None:
        return None
    try:
        return os.open(name, _READ_FLAGS, dir_fd=folder)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if _is_link(folder, name):
            raise _RefusedEntryError(rel, _LINK) from None
        if exc.errno in (errno.ENOTDIR, errno.EISDIR):
            return None
        raise
    finally:
        if folder != top:
            os.close(folder)


def _open_file(root: str, rel: str) -> tuple[int, int] | None:
    """Open the regular file ``root/rel`` for reading; return (descriptor, size) or ``None``."""
    top = _open_root(root, False)
    if top is None:
        return None
    try:
        fd = _open_in(top, rel)
    finally:
        os.close(top)
    if fd is None:
        return None
    try:
        st = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    if stat.S_ISREG(st.st_mode):
        return fd, st.st_size
    os.close(fd)
    if stat.S_ISDIR(st.st_mode):
        return None  # a folder is no object
    raise _RefusedEntryError(rel, _SPECIAL)


def _local_read(root: str, rel: str) -> bytes | None:
    opened = _open_file(root, rel)
    if opened is None:
        return None
    with open(opened[0], "rb", buffering=0) as f:
        return f.read()


_buffers = threading.local()
#: Files up to this size are read on the calling thread (the event loop's); larger ones in a
#: worker thread.
_INLINE_READ = 64 * 2**10


def _local_read_reusing(root: str, rel: str) -> memoryview | None:
    """Read a file into a buffer this thread reuses: valid until the thread's next such read.

    For the caller-driven bulk reads: a fresh bytes object per chunk costs the kernel a page
    fault per 4 KiB when it is first written, about as much as the copy itself.
    """
    opened = _open_file(root, rel)
    if opened is None:
        return None
    fd, size = opened
    with open(fd, "rb", buffering=0) as f:
        buf: bytearray | None = getattr(_buffers, "buf", None)
        if buf is None or len(buf) < size + 1:
            buf = bytearray(max(size + 1, 2 * len(buf) if buf else 0))
            _buffers.buf = buf
        view = memoryview(buf)
        filled = 0
        while n := f.readinto(view[filled:]):
            filled += n
            if filled == len(view):  # the file grew since the fstat
                rest = _local_read(root, rel)
                return None if rest is None else memoryview(rest)
        return view[:filled]


def _local_size(root: str, rel: str) -> int | None:
    folders, name = _split(rel)
    folder = _open_folder(root, folders)
    if folder is None:
        return None
    try:
        st = os.stat(name, dir_fd=folder, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None
    finally:
        os.close(folder)
    if stat.S_ISLNK(st.st_mode):
        raise _RefusedEntryError(rel, _LINK)
    if stat.S_ISDIR(st.st_mode):
        return None
    if not stat.S_ISREG(st.st_mode):
        raise _RefusedEntryError(rel, _SPECIAL)
    return st.st_size


def _local_write(root: str, rel: str, data: Parts, durable: bool, create: bool) -> None:
    parts = _as_parts(data)
    folders, name = _split(rel)
    folder = _open_folder(root, folders, create=True)
    assert folder is not None
    try:
        _write_in(folder, rel, name, parts, durable, create)
    finally:
        os.close(folder)


def _link(folder: int, tmp: str, name: str, rel: str) -> None:
    """Publish the temporary file ``tmp`` as ``name`` unless ``name`` exists (put-if-absent:
    ``FileExistsError``; a link planted there is refused, not taken for an object)."""
    try:
        os.link(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except FileExistsError:
        if _is_link(folder, name):
            raise _RefusedEntryError(rel, _LINK) from None
        raise


def _local_copy(
    root: str, rel: str, source_root: str, source_rel: str, check: Callable[[memoryview], Any]
) -> int | None:
    """Copy ``source_root/source_rel`` to a temporary file beside ``root/rel`` in the kernel,
    let ``check`` read the copy (mapped, not read into memory), then link it into place."""
    opened = _open_file(source_root, source_rel)
    if opened is None:
        return None
    source, size = opened
    folders, name = _split(rel)
    try:
        folder = _open_folder(root, folders, create=True)
        assert folder is not None
        try:
            tmp = f"{name}.{uuid.uuid4().hex}{TMP_SUFFIX}"
            flags = (_TEMPORARY_FLAGS & ~os.O_WRONLY) | os.O_RDWR  # mapped for the check
            fd = os.open(tmp, flags, 0o666, dir_fd=folder)
            try:
                _copy_range(source, fd, size)
                if size:
                    with mmap.mmap(fd, size, prot=mmap.PROT_READ) as mapped:
                        _check_mapped(mapped, check)
                else:
                    check(memoryview(b""))
                os.close(fd)
                fd = -1
                _link(folder, tmp, name, rel)
            finally:
                if fd >= 0:
                    os.close(fd)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp, dir_fd=folder)
        finally:
            os.close(folder)
    finally:
        os.close(source)
    return size


def _check_mapped(mapped: mmap.mmap, check: Callable[[memoryview], Any]) -> None:
    """``check(view of mapped)``; the views it made are gone before the map closes, even when
    it raises (its traceback would keep them alive, and a map with views cannot close)."""
    view = memoryview(mapped)
    failure: BaseException | None = None
    try:
        check(view)
    except BaseException as exc:  # re-raised below, once the views are released
        failure = exc.with_traceback(None)
    view.release()
    if failure is not None:
        raise failure


def _copy_range(source: int, target: int, size: int) -> None:
    """Copy ``size`` bytes between two files, in the kernel where it can."""
    done = 0
    try:
        while done < size:
            copied = os.copy_file_range(source, target, size - done)
            if not copied:
                break
            done += copied
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            raise
    if done < size:  # another filesystem, or no copy_file_range: through a buffer
        os.lseek(source, done, os.SEEK_SET)
        os.lseek(target, done, os.SEEK_SET)
        while chunk := os.read(source, 2**20):
            os.write(target, chunk)


def _write_in(
    folder: int,
    rel: str,
    name: str,
    parts: Sequence[bytes | memoryview],
    durable: bool,
    create: bool,
) -> None:
    # A rename replaces a link rather than writing through it, harmless but a silent change
    # of what the link meant: refuse it as reads do.
    if not create and _is_link(folder, name):
        raise _RefusedEntryError(rel, _LINK)
    tmp = f"{name}.{uuid.uuid4().hex}{TMP_SUFFIX}"
    fd = os.open(tmp, _TEMPORARY_FLAGS, 0o666, dir_fd=folder)
    try:
        with open(fd, "wb") as f:
            for part in parts:
                f.write(part)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if create:
            try:
                _link(folder, tmp, name, rel)
            finally:
                os.unlink(tmp, dir_fd=folder)
        else:
            os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=folder)
        raise
    if durable:
        os.fsync(folder)


def _local_empty(root: str, rel: str) -> None:
    folders, name = _split(rel)
    folder = _open_folder(root, folders)
    if folder is None:
        return
    try:
        fd = os.open(name, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC, dir_fd=folder)
    except FileNotFoundError:
        return
    except OSError as exc:
        if _is_link(folder, name):
            raise _RefusedEntryError(rel, _LINK) from None
        raise StorageError(f"cannot empty {rel!r}: {exc}") from exc
    finally:
        os.close(folder)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _RefusedEntryError(rel, _SPECIAL)
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def _local_delete(root: str, rel: str) -> None:
    folders, name = _split(rel)
    folder = _open_folder(root, folders)
    if folder is None:
        return
    try:
        os.unlink(name, dir_fd=folder)  # a link itself is removed, never what it points at
    except FileNotFoundError:
        pass
    finally:
        os.close(folder)


def _local_delete_prefix(root: str, rel: str) -> None:
    folders, name = _split(rel)
    folder = _open_folder(root, folders)
    if folder is None:
        return
    try:
        try:
            st = os.stat(name, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            os.unlink(name, dir_fd=folder)  # the link only: what it points at is not ours
            return
        # rmtree on a descriptor removes links inside as entries and never descends into
        # them; it refuses a folder swapped for a link after the stat above.
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(name, dir_fd=folder)
    finally:
        os.close(folder)


def _walk(folder: int, prefix: str, temporaries: bool, out: dict[str, tuple[int, float]]) -> None:
    """Add the regular files under the open ``folder`` (closed here) to ``out``."""
    try:
        subfolders: list[str] = []
        with os.scandir(folder) as entries:
            for entry in entries:
                # Links and special files are not ours: neither listed nor entered.
                if entry.is_dir(follow_symlinks=False):
                    subfolders.append(entry.name)
                elif entry.is_file(follow_symlinks=False) and (
                    temporaries or not entry.name.endswith(TMP_SUFFIX)
                ):
                    with contextlib.suppress(FileNotFoundError):
                        st = entry.stat(follow_symlinks=False)
                        out[prefix + entry.name] = (st.st_size, st.st_mtime)
        for name in subfolders:
            try:
                child = os.open(name, _FOLDER_FLAGS, dir_fd=folder)
            except OSError:
                continue  # removed, or replaced by a link, since the listing
            _walk(child, f"{prefix}{name}/", temporaries, out)
    finally:
        os.close(folder)


def _local_list(root: str, rel: str, temporaries: bool = False) -> dict[str, tuple[int, float]]:
    folder = _open_folder(root, rel.split("/") if rel else [])
    out: dict[str, tuple[int, float]] = {}
    if folder is not None:
        _walk(folder, "", temporaries, out)
    return out


def _local_list_dir(root: str, rel: str) -> builtins.list[str]:
    folder = _open_folder(root, rel.split("/") if rel else [])
    if folder is None:
        return []
    try:
        with os.scandir(folder) as entries:
            return sorted(
                e.name
                for e in entries
                if not e.name.endswith(TMP_SUFFIX)
                and (e.is_dir(follow_symlinks=False) or e.is_file(follow_symlinks=False))
            )
    finally:
        os.close(folder)


class LocalStorage(Storage):
    """Storage in a local folder, through the operating system.

    No symbolic link inside the root is followed: reading, writing or deleting through one
    raises :class:`~hubzarr.errors.StorageError` naming it, and listings skip links (and
    anything else that is not a regular file or a folder). The root itself may be a link, and
    so may its parents.

    Parameters
    ----------
    root : pathlib.Path
        The folder holding the hub; created on first write.
    """

    #: Modification times come from this machine's clock, to the nanosecond.
    clock_slack_s = 0.0
    caller_reads = True
    reclaims_superseded = True

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().absolute()
        self._root_str = str(self.root)
        self.url = self.root.as_uri()

    async def read(self, path: str) -> bytes | None:
        with _translating(self.url, path):
            rel = check_path(path)
            if _in_caller.get():
                return _local_read(self._root_str, rel)
            # Opening takes a few calls on local metadata; a small file (a record, a seal) is
            # read here too, cheaper than a hop to a worker thread, a large one over there.
            opened = _open_file(self._root_str, rel)
            if opened is None:
                return None
            fd, size = opened
            with open(fd, "rb", buffering=0) as f:
                if size <= _INLINE_READ:
                    return f.read()
                return await asyncio.to_thread(f.read)

    async def read_first(
        self, paths: Sequence[str], then: Callable[[int, bytes], T], *, parallel: int = 1
    ) -> tuple[int, T] | None:
        root = self._root_str

        def work(read: Callable[[str, str], bytes | memoryview | None]) -> tuple[int, T] | None:
            for i, path in enumerate(paths):
                raw = read(root, check_path(path))  # only as far as needed
                if raw is not None:
                    return i, then(i, raw)  # type: ignore[arg-type]
            return None

        with _translating(self.url, paths[0] if paths else ""):
            if _in_caller.get():
                # The bytes are consumed (checked, decoded) before this thread reads again.
                return work(_local_read_reusing)
            return await asyncio.to_thread(work, _local_read)

    async def size(self, path: str) -> int | None:
        # A few calls on local metadata take microseconds, less than a hop to a worker thread;
        # the write fence asks this once per burst of chunk writes.
        with _translating(self.url, path):
            return _local_size(self._root_str, check_path(path))

    async def exists(self, path: str) -> bool:
        return await self.size(path) is not None

    async def write(self, path: str, data: Parts, *, durable: bool = False) -> None:
        with _translating(self.url, path):
            rel = check_path(path)
            await asyncio.to_thread(_local_write, self._root_str, rel, data, durable, False)

    async def create(
        self, path: str, data: Parts, *, durable: bool = True, unique: bool = True
    ) -> None:
        with _translating(self.url, path):
            rel = check_path(path)
            try:
                await asyncio.to_thread(_local_write, self._root_str, rel, data, durable, True)
            except FileExistsError as exc:
                raise AlreadyExistsError(f"{path!r} already exists under {self.url}") from exc

    async def create_copy(
        self, path: str, source: Storage, source_path: str, check: Callable[[memoryview], Any]
    ) -> int | None:
        if not isinstance(source, LocalStorage):
            return await super().create_copy(path, source, source_path, check)
        with _translating(self.url, path):
            rel, source_rel = check_path(path), check_path(source_path)
            try:
                return await asyncio.to_thread(
                    _local_copy, self._root_str, rel, source._root_str, source_rel, check
                )
            except FileExistsError as exc:
                raise AlreadyExistsError(f"{path!r} already exists under {self.url}") from exc

    async def empty(self, path: str) -> None:
        # A truncation drops the page cache's dirty pages with the data: no write-back. Done
        # here: truncating a 2 MiB chunk's dirty pages took 80 us on this machine, a hop to a
        # worker thread 140 us (and the write-head benchmark gained 3%).
        rel = check_path(path)
        with _translating(self.url, path):
            _local_empty(self._root_str, rel)

    async def delete(self, path: str) -> None:
        rel = check_path(path, temporary=True)
        with _translating(self.url, path):
            await asyncio.to_thread(_local_delete, self._root_str, rel)

    async def delete_prefix(self, prefix: str) -> None:
        rel = check_path(prefix)
        with _translating(self.url, prefix):
            await asyncio.to_thread(_local_delete_prefix, self._root_str, rel)

    def _folder(self, prefix: str) -> str:
        return check_path(prefix) if prefix else ""

    async def list(self, prefix: str) -> dict[str, int]:
        rel = self._folder(prefix)
        with _translating(self.url, prefix):
            found = await asyncio.to_thread(_local_list, self._root_str, rel)
        return {p: size for p, (size, _) in found.items()}

    async def list_detailed(
        self, prefix: str, *, temporaries: bool = False
    ) -> dict[str, tuple[int, float]]:
        rel = self._folder(prefix)
        with _translating(self.url, prefix):
            return await asyncio.to_thread(_local_list, self._root_str, rel, temporaries)

    async def list_dir(self, prefix: str) -> builtins.list[str]:
        rel = self._folder(prefix)
        with _translating(self.url, prefix):
            return await asyncio.to_thread(_local_list_dir, self._root_str, rel)


#: Protocols whose servers answer byte-range GETs (HTTP servers need not).
_RANGED = frozenset({"s3", "s3a", "gs", "gcs", "memory"})
#: Protocols of read-only web servers, whose request URLs hubzarr builds itself.
_WEB = frozenset({"http", "https"})
#: How many listed entries are sized at once where a listing gives no sizes (HTTP).
_SIZING_CONCURRENCY = 16


def _requote(url: str) -> str:
    """``url`` with its path percent-encoded where needed (spaces, non-ASCII), keeping the
    escapes it holds: HTTP request URLs are sent exactly as built."""
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    return scheme + sep + host + slash + quote(path, safe=_PATH_SAFE)


#: What a URL path may hold unescaped (RFC 3986 pchar and '/'), and '%' of escapes it holds.
_PATH_SAFE = "/%!$&'()*+,;=:@~"

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
    # A web server's Last-Modified header (RFC 9110 date), from the HEAD that sized the entry.
    value = info.get("Last-Modified")
    if isinstance(value, str):
        with contextlib.suppress(TypeError, ValueError):
            parsed = parsedate_to_datetime(value)
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
        self._web = protocol in _WEB
        if self._web:
            # The client sends request URLs as built here: yarl would otherwise decode
            # '%2e%2e' and collapse dot segments (and treat '#' or '?' in a key as the end of
            # the path).
            options = {**options, "encoded": True}
        self._options = options
        import fsspec  # local roots never need it

        self._cls = fsspec.get_filesystem_class(protocol)
        self._async = bool(getattr(self._cls, "async_impl", False))
        self._fs: Any = None
        self._fs_pid = 0
        base = str(self._cls._strip_protocol(url)).rstrip("/")
        self._base = _requote(base) if self._web else base

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
    def identity(self) -> str:
        client = self._options.get("client_kwargs")
        endpoint = self._options.get("endpoint_url") or (
            client.get("endpoint_url") if isinstance(client, dict) else None
        )
        if not endpoint:
            return self.url
        # Scheme, host, port and path only: a user:password@ in an endpoint never shows.
        parts = urlsplit(str(endpoint))
        port = f":{parts.port}" if parts.port else ""
        return f"{self.url} at {parts.scheme}://{parts.hostname or ''}{port}{parts.path}"

    @property
    def fs(self) -> Any:
        """The fsspec filesystem (created on first use, and again in a forked child: an
        asynchronous one holds its parent's event loop and connections, and refuses)."""
        if self._fs is None or self._fs_pid != os.getpid():
            self._fs, self._fs_pid = self._cls(**self._options), os.getpid()
        return self._fs

    def _full(self, path: str) -> str:
        if not path:
            return self._base
        check_path(path)
        if self._web:
            # Each segment quoted whole ('/', '%', '?', '#' included): the server sees
            # literally the key, and nothing in it is decoded or collapsed on the way.
            path = "/".join(quote(s, safe="") for s in path.split("/"))
        return f"{self._base}/{path}"

    def _relative(self, name: str) -> str | None:
        """A listed name (relative to a listed folder) as a storage path, or ``None`` if it
        cannot be one: a web server's listing links are percent-encoded, and a hostile or
        odd listing may name anything."""
        if self._web:
            segments = [unquote(s, errors="surrogateescape") for s in name.split("/")]
            if any("/" in s for s in segments):
                return None
            name = "/".join(segments)
        try:
            return check_path(name, temporary=True)
        except InvalidArgumentError:
            return None

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

        async def once() -> Any:
            if self._async:
                coro = getattr(fs, "_" + method)(*args, **kwargs)
                return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, fs.loop))
            return await asyncio.to_thread(getattr(fs, method), *args, **kwargs)

        try:
            return await retry_transient(once, _is_transient)
        except FileNotFoundError as exc:
            if _error_code(exc)[0] == "NoSuchBucket" or "bucket does not exist" in str(exc):
                raise NotFoundError(
                    f"the bucket {self._bucket()!r} of the hub root {self.url} does not "
                    "exist; create it, or run 'hub configure' which offers to"
                ) from exc
            if missing is _RAISE:
                raise
            return missing

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
            if info.get("size") is None:  # a web server that sent no Content-Length
                data = await self._call("cat_file", self._full(path), missing=None)
                return None if data is None else len(data)
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
            if self.protocol == "memory":
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
        listed: dict[str, dict[str, Any]] = {}
        for p, info in found.items():
            if not p.startswith(base + "/") or info.get("type") == "directory":
                continue
            rel = self._relative(p[start:])
            if rel is not None and not rel.endswith(TMP_SUFFIX):
                listed[rel] = info
        unsized = [p for p, info in listed.items() if info.get("size") is None]
        if unsized:
            with self._translating(prefix):
                await self._size_entries(prefix, listed, unsized)
        return listed

    async def _size_entries(
        self, prefix: str, listed: dict[str, dict[str, Any]], paths: list[str]
    ) -> None:
        """Complete the entries of the listing of ``prefix`` that have no size (a web server's
        folder index has none): a HEAD each, a few at a time; an entry gone meanwhile is
        dropped.

        Sizes matter: tombstones are told apart from data by their size.
        """
        limit = asyncio.Semaphore(_SIZING_CONCURRENCY)

        async def one(path: str) -> None:
            async with limit:
                full = self._full(f"{prefix}/{path}" if prefix else path)
                info = await self._call("info", full, missing=None)
                if info is not None and info.get("size") is None:  # no Content-Length either
                    data = await self._call("cat_file", full, missing=None)
                    info = None if data is None else {**info, "size": len(data)}
            if info is None or info.get("type") == "directory":
                del listed[path]
            else:
                listed[path] = {**listed[path], **info}

        await asyncio.gather(*(one(p) for p in paths))

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
        names = {self._relative(str(e).rstrip("/").rsplit("/", 1)[-1]) for e in entries}
        return sorted(n for n in names if n is not None and not n.endswith(TMP_SUFFIX))


#: Connections an S3 client keeps open: requests in flight to one bucket.
OBJECT_STORE_CONNECTIONS = 64

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


#: A URL scheme (RFC 3986). A root whose part before '://' is not one is refused.
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*", re.ASCII)
#: Schemes whose roots are URLs: one of them followed by ':' but not '//' is a mistyped URL
#: (that would otherwise be taken for a local folder named like it, in the current folder).
_URL_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs", "http", "https", "memory", "file"})
#: S3 bucket names: 3-63 lowercase letters, digits, '.' and '-', a letter or digit at each end.
_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", re.ASCII)
#: GCS bucket names: 3-222 lowercase letters, digits, '-', '_' and '.', a letter or digit at
#: each end; 3-63 without dots, each dot-separated component at most 63.
_GCS_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]", re.ASCII)
_IPV4 = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}", re.ASCII)
#: A web server: a host name or IPv4 address, or an IPv6 address in brackets; a port.
_WEB_HOST = re.compile(
    r"(?:[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?|\[[0-9A-Fa-f:.]+\])"
    r"(?::[0-9]{1,5})?",
    re.ASCII,
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]", re.ASCII)

_NO_SECRETS = (
    "put credentials in the backend's own configuration (environment variables, a profile, "
    "or 'hub configure'), and give the root as s3://bucket/prefix, gs://bucket/prefix or "
    "https://host/path"
)


def _valid_bucket(scheme: str, bucket: str) -> str | None:
    """Say what is wrong with the bucket (or host) of a root URL; ``None`` if nothing."""
    if scheme in ("s3", "s3a"):
        if not _S3_BUCKET.fullmatch(bucket) or ".." in bucket or _IPV4.fullmatch(bucket):
            return (
                "does not name a valid S3 bucket (3 to 63 lowercase letters, digits, '.' and "
                "'-', starting and ending with a letter or digit, not an IP address)"
            )
    elif scheme in ("gs", "gcs"):
        parts = bucket.split(".")
        if (
            not _GCS_BUCKET.fullmatch(bucket)
            or (len(parts) == 1 and len(bucket) > 63)
            or any(not 1 <= len(p) <= 63 for p in parts)
            or _IPV4.fullmatch(bucket)
        ):
            return (
                "does not name a valid GCS bucket (3 to 63 lowercase letters, digits, '-', '_' "
                "and '.', up to 222 with dots and 63 between them, starting and ending with a "
                "letter or digit)"
            )
    elif scheme in _WEB and not _WEB_HOST.fullmatch(bucket):
        return "does not name a valid web server (host[:port])"
    return None


def check_root(root: str, *, where: str = "") -> str:
    """Refuse a hub root that is empty, or that could hold credentials; return it otherwise.

    A root that could hold a secret is refused however it is spelled, and the message shows
    no part of it after the scheme: a secret may hold ``/`` (as AWS secret keys often do),
    which ends a URL's host part early, so any ``@`` is refused, not only a well-formed
    ``user:password@``.

    Parameters
    ----------
    root : str
        A folder path or a root URL.
    where : str
        Where the root came from, for messages (``" in $HUBZARR_ROOT"``).

    Returns
    -------
    str
        ``root``, unchanged.

    Raises
    ------
    InvalidArgumentError
        If ``root`` is empty or blank (it would mean the current folder); if a URL holds
        ``@``, a query or a fragment anywhere (``user:secret@``, a signed URL's token), a
        control character or a space; if its bucket is not a valid S3 or GCS bucket name or
        its host is not a host name; if a ``file://`` URL names a host; if the part before
        ``://`` is not a URL scheme; or if it starts like a URL (``s3:``) without ``//``.
    """
    what = f"the hub root{where}"
    if not root.strip():
        raise InvalidArgumentError(
            f"{what} is empty; give a folder path or a URL such as 's3://bucket/prefix' "
            "(an empty root would silently mean the current folder)"
        )
    scheme, sep, rest = root.partition("://")
    if not sep:
        typed, colon, _ = root.partition(":")
        if colon and typed.lower() in _URL_SCHEMES:
            raise InvalidArgumentError(
                f"{what} starts with '{typed.lower()}:' but not '{typed.lower()}://'; write the "
                f"URL as {typed.lower()}://..., or give a folder path"
            )
        return root
    if not _SCHEME.fullmatch(scheme):
        raise InvalidArgumentError(
            f"{what} is neither a folder path nor a URL (the part before '://' is no URL "
            "scheme); give a folder path or a URL such as 's3://bucket/prefix'"
        )
    scheme = scheme.lower()
    shown = f"{what} ({scheme}://...)"
    if scheme == "file":
        host = rest.split("/", 1)[0]
        if host not in ("", "localhost") or "?" in rest or "#" in rest:
            raise InvalidArgumentError(
                f"{shown} must be file:///path/to/folder, with no host, user, query or "
                "fragment; give the folder path itself"
            )
        return root
    if "@" in rest or "?" in rest or "#" in rest:
        raise InvalidArgumentError(
            f"{shown} must not hold credentials, a query or a fragment ('@', '?' or '#', as in "
            f"user:password@bucket, or a signed URL's token); {_NO_SECRETS}"
        )
    if _CONTROL.search(rest):
        raise InvalidArgumentError(f"{shown} holds a control character; remove it")
    problem = _valid_bucket(scheme, rest.split("/", 1)[0])
    if problem is not None:
        raise InvalidArgumentError(f"{shown} {problem}; check the URL")
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
        import fsspec  # local roots never need it

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
        # aiobotocore keeps 10 connections by default: 10 requests in flight at most, where
        # hubzarr sends tens to hide the latency of each.
        config = dict(options.get("config_kwargs") or {})
        config.setdefault("max_pool_connections", OBJECT_STORE_CONNECTIONS)
        options["config_kwargs"] = config
    return FsspecStorage(parts.scheme, root, options, read_only=parts.scheme in ("http", "https"))
