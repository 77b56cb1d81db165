"""The storage primitives: one contract, run on every backend, plus what is local-only."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import _procs
import fsspec
import pytest

from hubzarr.errors import (
    AlreadyExistsError,
    CorruptChunkError,
    HubError,
    InvalidArgumentError,
    ReadOnlyError,
    StorageError,
)
from hubzarr.storage import (
    TMP_SUFFIX,
    FsspecStorage,
    LocalStorage,
    Storage,
    check_path,
    check_root,
    open_storage,
    public_options,
)

BAD_PATHS = [
    "",
    ".",
    "..",
    "../x",
    "a/../b",
    "a/..",
    "./a",
    "a/./b",
    "a/.",
    "/x",
    "/",
    "a//b",
    "a/",
    "a\\b",
    "..\\x",
    "a\x00b",
    "x" + TMP_SUFFIX,
    "a/b" + TMP_SUFFIX,
    # Segments a web server (or a decoding proxy before it) resolves as '..', '.' or a separator.
    "%2e%2e",
    "a/%2E%2E/b",
    "%2e",
    ".%2e/x",
    "%2e./x",
    "%252e%252e/x",
    "%25252E%25252E/x",
    "a%2fb",
    "a%2F..%2F..%2Fb",
    "a%5cb",
    "a/%255c/b",
    "a/%00",
    "%2e%2e%2f%2e%2e%2fx",
]


class _FailingParts(Sequence[bytes]):
    """Parts whose second element fails, as a disk or a producer would halfway through."""

    def __init__(self, first: bytes) -> None:
        self.first = first

    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: Any) -> Any:
        if index == 0:
            return self.first
        if index == 1:
            raise OSError("simulated failure halfway through the write")
        raise IndexError(index)


class StorageContract:
    """What every :class:`Storage` must do; subclasses provide the ``root_url`` fixture."""

    @pytest.fixture
    def storage(self, root_url: str) -> Storage:
        return self.open(root_url)

    def open(self, url: str) -> Storage:
        """Open a storage at ``url`` with whatever options this backend needs."""
        return open_storage(url)

    def put_raw(self, storage: Storage, path: str, data: bytes) -> None:
        """Store an object at ``path`` without going through the checks of ``storage``."""
        raise NotImplementedError

    def raw_names(self, storage: Storage) -> list[str]:
        """Every object under the root, temporary files included, relative to the root."""
        raise NotImplementedError

    # -- read, size ------------------------------------------------------------------------

    async def test_read_missing_is_none(self, storage: Storage) -> None:
        assert await storage.read("missing") is None
        assert await storage.read("no/such/deep/object") is None
        assert await storage.size("missing") is None
        assert await storage.size("no/such/deep/object") is None

    async def test_read_and_size_of_a_folder_are_none(self, storage: Storage) -> None:
        await storage.write("folder/object", b"x")
        assert await storage.read("folder") is None
        assert await storage.size("folder") is None

    async def test_write_then_read(self, storage: Storage) -> None:
        await storage.write("a/b/c.json", b'{"k": 1}')
        assert await storage.read("a/b/c.json") == b'{"k": 1}'
        assert await storage.size("a/b/c.json") == 8

    async def test_empty_object_is_not_missing(self, storage: Storage) -> None:
        await storage.write("empty", b"")
        assert await storage.read("empty") == b""
        assert await storage.size("empty") == 0
        assert await storage.list_dir("") == ["empty"]

    async def test_read_returns_bytes(self, storage: Storage) -> None:
        await storage.write("x", memoryview(b"abc"))
        data = await storage.read("x")
        assert type(data) is bytes
        assert data == b"abc"

    # -- write -----------------------------------------------------------------------------

    async def test_write_replaces(self, storage: Storage) -> None:
        await storage.write("obj", b"0123456789" * 10)
        await storage.write("obj", b"short")
        assert await storage.read("obj") == b"short"
        assert await storage.size("obj") == 5
        await storage.write("obj", b"longer than before", durable=True)
        assert await storage.read("obj") == b"longer than before"

    async def test_write_of_several_parts_concatenates(self, storage: Storage) -> None:
        array = memoryview(bytes(range(256)))
        await storage.write("parts", [b"head:", memoryview(b"mid"), b"", array[10:20], b":tail"])
        assert await storage.read("parts") == b"head:mid" + bytes(range(10, 20)) + b":tail"
        await storage.write("tuple", (b"a", b"b"), durable=True)
        assert await storage.read("tuple") == b"ab"
        await storage.write("none", [])
        assert await storage.read("none") == b""

    async def test_failed_write_keeps_the_old_object(self, storage: Storage) -> None:
        await storage.write("obj", b"old content")
        with pytest.raises(StorageError):
            await storage.write("obj", _FailingParts(b"new"))
        assert await storage.read("obj") == b"old content"
        assert self.raw_names(storage) == ["obj"]

    async def test_write_does_not_touch_siblings(self, storage: Storage) -> None:
        await storage.write("d/a", b"a")
        await storage.write("d/b", b"b")
        await storage.write("d/a", b"A")
        assert await storage.read("d/b") == b"b"
        assert await storage.list("d") == {"a": 1, "b": 1}

    async def test_readers_never_see_a_torn_object(self, storage: Storage) -> None:
        one, two = b"1" * 256 * 1024, b"2" * 256 * 1024
        await storage.write("obj", one)
        seen: set[bytes | None] = set()

        async def writer(data: bytes) -> None:
            for _ in range(15):
                await storage.write("obj", data)

        async def reader() -> None:
            for _ in range(30):
                seen.add(await storage.read("obj"))

        await asyncio.gather(writer(one), writer(two), reader(), reader())
        assert seen <= {one, two}

    # -- create (put-if-absent) --------------------------------------------------------

    async def test_create_succeeds_once(self, storage: Storage) -> None:
        await storage.create("refs/tags/v1.json", b"first")
        with pytest.raises(AlreadyExistsError, match=r"refs/tags/v1\.json") as info:
            await storage.create("refs/tags/v1.json", b"second, longer content")
        assert isinstance(info.value, FileExistsError)
        assert isinstance(info.value, HubError)
        assert await storage.read("refs/tags/v1.json") == b"first"
        assert await storage.size("refs/tags/v1.json") == 5

    async def test_create_refuses_an_object_made_by_write(self, storage: Storage) -> None:
        await storage.write("obj", b"written")
        with pytest.raises(AlreadyExistsError):
            await storage.create("obj", b"created")
        assert await storage.read("obj") == b"written"

    async def test_create_of_several_parts_concatenates(self, storage: Storage) -> None:
        await storage.create("new/obj", [b"a", memoryview(b"bc"), b"d"])
        assert await storage.read("new/obj") == b"abcd"

    async def test_create_after_delete_succeeds(self, storage: Storage) -> None:
        await storage.create("obj", b"one")
        await storage.delete("obj")
        await storage.create("obj", b"two")
        assert await storage.read("obj") == b"two"

    async def test_failed_create_leaves_nothing(self, storage: Storage) -> None:
        with pytest.raises(OSError, match="halfway"):
            await storage.create("obj", _FailingParts(b"partial"))
        assert await storage.read("obj") is None
        assert self.raw_names(storage) == []
        await storage.create("obj", b"whole")
        assert await storage.read("obj") == b"whole"

    async def test_create_copy_copies_what_the_check_accepts(self, storage: Storage) -> None:
        seen: list[bytes] = []
        await storage.write("a/src", b"payload" * 1000)
        size = await storage.create_copy("b/dst", storage, "a/src", lambda v: seen.append(bytes(v)))
        assert size == 7000 and seen == [b"payload" * 1000]
        assert await storage.read("b/dst") == b"payload" * 1000
        assert await storage.create_copy("b/new", storage, "a/none", lambda v: None) is None
        assert await storage.read("b/new") is None

    async def test_create_copy_refuses_an_existing_object(self, storage: Storage) -> None:
        await storage.write("a/src", b"new")
        await storage.write("b/dst", b"old")
        with pytest.raises(AlreadyExistsError):
            await storage.create_copy("b/dst", storage, "a/src", lambda v: None)
        assert await storage.read("b/dst") == b"old"

    async def test_create_copy_refused_by_the_check_leaves_nothing(self, storage: Storage) -> None:
        await storage.write("a/src", b"bad")

        def refuse(view: memoryview) -> None:
            kept = view[1:]  # a view the raise carries away in its traceback
            raise CorruptChunkError(f"refused {bytes(kept)!r}")

        with pytest.raises(CorruptChunkError, match="refused b'ad'"):
            await storage.create_copy("b/dst", storage, "a/src", refuse)
        assert await storage.read("b/dst") is None
        assert sorted(self.raw_names(storage)) == ["a/src"]

    async def test_concurrent_creates_have_one_winner(self, storage: Storage) -> None:
        contents = [bytes([i]) * (1000 + i) for i in range(8)]
        outcomes = await asyncio.gather(
            *(storage.create("contested", c) for c in contents), return_exceptions=True
        )
        winners = [i for i, o in enumerate(outcomes) if o is None]
        assert len(winners) == 1, outcomes
        assert all(
            isinstance(o, AlreadyExistsError) for i, o in enumerate(outcomes) if i != winners[0]
        ), outcomes
        assert await storage.read("contested") == contents[winners[0]]

    async def test_objects_under_a_file_are_refused(self, storage: Storage) -> None:
        # "f" is an object, so "f/g" cannot be: a storage failure, not "already exists".
        await storage.write("f", b"file")
        with pytest.raises(StorageError):
            await storage.write("f/g", b"x")
        with pytest.raises(StorageError) as info:
            await storage.create("f/g", b"x")
        assert not isinstance(info.value, AlreadyExistsError)
        assert await storage.read("f") == b"file"
        assert await storage.read("f/g") is None

    # -- delete ----------------------------------------------------------------------------

    async def test_delete(self, storage: Storage) -> None:
        await storage.write("d/a", b"a")
        await storage.write("d/b", b"b")
        await storage.delete("d/a")
        assert await storage.read("d/a") is None
        assert await storage.read("d/b") == b"b"

    async def test_delete_missing_is_fine(self, storage: Storage) -> None:
        await storage.delete("missing")
        await storage.delete("no/such/folder/object")
        await storage.write("obj", b"x")
        await storage.delete("obj")
        await storage.delete("obj")
        assert await storage.read("obj") is None

    async def test_delete_prefix(self, storage: Storage) -> None:
        await storage.write("p/a", b"1")
        await storage.write("p/sub/deep/b", b"22")
        await storage.write("pq/c", b"333")  # shares the string prefix, not the folder
        await storage.write("other", b"4444")
        await storage.delete_prefix("p")
        assert await storage.read("p/a") is None
        assert await storage.read("p/sub/deep/b") is None
        assert await storage.list("p") == {}
        assert await storage.list_dir("") == ["other", "pq"]
        assert await storage.read("pq/c") == b"333"
        assert await storage.read("other") == b"4444"

    async def test_delete_prefix_of_a_nested_folder(self, storage: Storage) -> None:
        await storage.write("a/b/c/d", b"x")
        await storage.write("a/b/e", b"y")
        await storage.delete_prefix("a/b/c")
        assert await storage.list("a") == {"b/e": 1}

    async def test_delete_prefix_missing_is_fine(self, storage: Storage) -> None:
        await storage.delete_prefix("missing")
        await storage.delete_prefix("no/such/folder")
        await storage.write("kept", b"k")
        await storage.delete_prefix("missing")
        assert await storage.read("kept") == b"k"

    # -- list, list_dir --------------------------------------------------------------------

    async def test_list_is_recursive_and_relative(self, storage: Storage) -> None:
        await storage.write("r/a", b"1")
        await storage.write("r/sub/b", b"22")
        await storage.write("r/sub/deep/c", b"333")
        await storage.write("r/empty", b"")
        await storage.write("rx/not-under-r", b"no")
        await storage.write("top", b"no")
        assert await storage.list("r") == {"a": 1, "sub/b": 2, "sub/deep/c": 3, "empty": 0}
        assert await storage.list("r/sub") == {"b": 2, "deep/c": 3}

    async def test_list_missing_is_empty(self, storage: Storage) -> None:
        assert await storage.list("missing") == {}
        await storage.write("file", b"x")
        assert await storage.list("missing/deeper") == {}

    async def test_list_skips_temporary_files(self, storage: Storage) -> None:
        await storage.write("r/a", b"1")
        self.put_raw(storage, f"r/a.{uuid.uuid4().hex}{TMP_SUFFIX}", b"half-written")
        self.put_raw(storage, f"r/sub/b{TMP_SUFFIX}", b"half-written")
        assert await storage.list("r") == {"a": 1}
        assert await storage.list_dir("r") == ["a", "sub"]

    async def test_list_dir_gives_immediate_children(self, storage: Storage) -> None:
        await storage.write("u/repo1/repo.json", b"{}")
        await storage.write("u/repo2/deep/x", b"x")
        await storage.write("u/file", b"f")
        await storage.write("v/repo/repo.json", b"{}")
        assert await storage.list_dir("u") == ["file", "repo1", "repo2"]
        assert await storage.list_dir("u/repo2") == ["deep"]
        assert await storage.list_dir("") == ["u", "v"]

    async def test_list_dir_missing_is_empty(self, storage: Storage) -> None:
        assert await storage.list_dir("") == []
        assert await storage.list_dir("missing") == []
        await storage.write("file", b"x")
        assert await storage.list_dir("missing") == []

    async def test_list_dir_skips_temporary_files(self, storage: Storage) -> None:
        await storage.write("d/a", b"1")
        self.put_raw(storage, f"d/b.{uuid.uuid4().hex}{TMP_SUFFIX}", b"half-written")
        assert await storage.list_dir("d") == ["a"]

    async def test_sibling_root_is_invisible(self, storage: Storage, root_url: str) -> None:
        sibling = self.open(root_url + "x")
        await sibling.write("u/r", b"sibling")
        await storage.write("u/s", b"mine")
        assert await storage.list_dir("") == ["u"]
        assert await storage.list("u") == {"s": 4}
        assert await storage.read("u/r") is None
        assert await sibling.list("u") == {"r": 7}

    async def test_same_root_is_shared(self, storage: Storage, root_url: str) -> None:
        await storage.write("u/r", b"shared")
        assert await self.open(root_url).read("u/r") == b"shared"

    # -- paths -----------------------------------------------------------------------------

    @pytest.mark.parametrize("bad", [p for p in BAD_PATHS if p])
    async def test_every_primitive_refuses_bad_paths(self, storage: Storage, bad: str) -> None:
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: storage.read(bad),
            lambda: storage.size(bad),
            lambda: storage.write(bad, b"x"),
            lambda: storage.write(bad, b"x", durable=True),
            lambda: storage.create(bad, b"x"),
            lambda: storage.create_copy(bad, storage, "ok", lambda v: None),
            lambda: storage.delete_prefix(bad),
            lambda: storage.list(bad),
            lambda: storage.list_dir(bad),
        ]
        if not bad.endswith(TMP_SUFFIX):
            # Deleting a temporary file is allowed: gc removes those a killed writer left.
            calls.append(lambda: storage.delete(bad))
        for call in calls:
            with pytest.raises(InvalidArgumentError, match="refusing storage key"):
                await call()
        assert self.raw_names(storage) == []


class TestLocalStorage(StorageContract):
    @pytest.fixture
    def root_url(self, tmp_path: Path) -> str:
        return str(tmp_path / "hub")

    def put_raw(self, storage: Storage, path: str, data: bytes) -> None:
        assert isinstance(storage, LocalStorage)
        full = storage.root / path
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_bytes(data)

    def raw_names(self, storage: Storage) -> list[str]:
        assert isinstance(storage, LocalStorage)
        return sorted(
            p.relative_to(storage.root).as_posix() for p in storage.root.rglob("*") if p.is_file()
        )

    def test_opens_as_local_storage(self, storage: Storage, root_url: str) -> None:
        assert isinstance(storage, LocalStorage)
        assert storage.root == Path(root_url)
        assert storage.url == Path(root_url).as_uri()
        assert not storage.read_only

    def test_nothing_is_created_before_a_write(self, storage: Storage, root_url: str) -> None:
        assert not Path(root_url).exists()

    async def test_no_temporary_files_remain(self, storage: Storage) -> None:
        await storage.write("a/plain", b"1")
        await storage.write("a/plain", b"2")
        await storage.write("a/durable", [b"3", b"4"], durable=True)
        await storage.create("b/created", b"5")
        with pytest.raises(AlreadyExistsError):
            await storage.create("b/created", b"6")
        with pytest.raises(StorageError):
            await storage.write("a/plain", _FailingParts(b"7"))
        with pytest.raises(StorageError):
            await storage.create("b/failed", _FailingParts(b"8"))
        assert isinstance(storage, LocalStorage)
        names = sorted(
            p.relative_to(storage.root).as_posix() for p in storage.root.rglob("*") if p.is_file()
        )
        assert names == ["a/durable", "a/plain", "b/created"]
        assert not any(TMP_SUFFIX in name for name in os.listdir(storage.root / "a"))

    async def test_bad_path_writes_nothing_outside_the_root(
        self, storage: Storage, tmp_path: Path
    ) -> None:
        before = sorted(p.name for p in tmp_path.iterdir())
        with pytest.raises(InvalidArgumentError):
            await storage.write("../escaped", b"x")
        with pytest.raises(InvalidArgumentError):
            await storage.create("/tmp/escaped", b"x")
        assert sorted(p.name for p in tmp_path.iterdir()) == before
        assert not (tmp_path / "escaped").exists()

    async def test_writing_under_a_file_is_a_storage_error(self, storage: Storage) -> None:
        await storage.write("f", b"file")
        with pytest.raises(StorageError, match="'f/g'") as info:
            await storage.write("f/g", b"x")
        assert isinstance(info.value, OSError)
        assert isinstance(info.value.__cause__, NotADirectoryError)

    def test_create_race_between_processes(self, root_url: str) -> None:
        workers, trials = 8, 20
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(workers)
        results = ctx.Queue()
        procs = [
            ctx.Process(target=_procs.race_create, args=(root_url, w, trials, barrier, results))
            for w in range(workers)
        ]
        for p in procs:
            p.start()
        try:
            outcomes = [results.get(timeout=120) for _ in range(workers * trials)]
        finally:
            for p in procs:
                p.join(timeout=60)
        assert [p.exitcode for p in procs] == [0] * workers

        by_trial: dict[int, dict[int, str]] = {}
        for trial, worker, outcome in outcomes:
            by_trial.setdefault(trial, {})[worker] = outcome
        assert sorted(by_trial) == list(range(trials))
        race = Path(root_url) / "race"
        for trial, by_worker in sorted(by_trial.items()):
            assert sorted(by_worker) == list(range(workers))
            winners = [w for w, o in by_worker.items() if o == "won"]
            assert len(winners) == 1, (trial, by_worker)
            assert sorted(o for w, o in by_worker.items() if w != winners[0]) == ["exists"] * (
                workers - 1
            ), (trial, by_worker)
            assert (race / str(trial)).read_bytes() == _procs.payload(winners[0], trial)
        assert sorted(os.listdir(race), key=int) == [str(t) for t in range(trials)]


class TestMemoryStorage(StorageContract):
    @pytest.fixture
    def root_url(self) -> Iterator[str]:
        parent = f"/hubzarr-test-{uuid.uuid4().hex}"
        yield f"memory://{parent}/hub"
        fs = fsspec.filesystem("memory")
        if fs.exists(parent):
            fs.rm(parent, recursive=True)

    def put_raw(self, storage: Storage, path: str, data: bytes) -> None:
        assert isinstance(storage, FsspecStorage)
        base = storage.fs._strip_protocol(storage.url)
        storage.fs.pipe_file(f"{base}/{path}", data)

    def raw_names(self, storage: Storage) -> list[str]:
        assert isinstance(storage, FsspecStorage)
        base = storage.fs._strip_protocol(storage.url)
        if not storage.fs.exists(base):
            return []
        return sorted(p[len(base) + 1 :] for p in storage.fs.find(base))

    def test_opens_as_fsspec_storage(self, storage: Storage, root_url: str) -> None:
        assert isinstance(storage, FsspecStorage)
        assert storage.url == root_url
        assert not storage.read_only

    async def test_read_only_refuses_every_write(self, storage: Storage, root_url: str) -> None:
        await storage.write("obj", b"original")
        assert isinstance(storage, FsspecStorage)
        frozen = FsspecStorage("memory", root_url, {}, read_only=True)
        assert await frozen.read("obj") == b"original"
        assert await frozen.list_dir("") == ["obj"]
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: frozen.write("obj", b"changed"),
            lambda: frozen.write("new", b"x"),
            lambda: frozen.create("new", b"x"),
            lambda: frozen.delete("obj"),
            lambda: frozen.delete_prefix("obj"),
        ]
        for call in calls:
            with pytest.raises(ReadOnlyError, match="read-only") as info:
                await call()
            assert isinstance(info.value, PermissionError)
            assert isinstance(info.value, ValueError)
        assert await storage.read("obj") == b"original"
        assert await storage.read("new") is None


# -- check_path ----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", BAD_PATHS)
def test_check_path_refuses(bad: str) -> None:
    with pytest.raises(InvalidArgumentError, match="refusing storage key") as info:
        check_path(bad)
    assert repr(bad) in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "good",
    [
        "a",
        "a/b/c.json",
        "u/r/0123/data/v1/0.0.0",
        "a..b",
        "...",
        ".hidden",
        "a/.zarray",
        "x.hubzarr-tmp.json",
        "a/" + TMP_SUFFIX + "/b",
        "100%",
        "%",
        "a%zz/b",
        "%41",  # decodes to 'A': a name, sent as it is
        "a%20b",
        "%2e%2e%2e",  # '...' is a name
    ],
)
def test_check_path_accepts(good: str) -> None:
    assert check_path(good) is good


# -- check_root, open_storage, public_options ----------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "s3://user:secret@bucket",
        "s3://user:secret@bucket/prefix",
        "gs://token:secret@bucket",
        "https://secret@example.com/hub",
        "https://:secret@example.com/hub",
    ],
)
def test_check_root_refuses_credentials(url: str) -> None:
    with pytest.raises(InvalidArgumentError, match="credentials") as info:
        check_root(url)
    assert "secret" not in str(info.value)
    assert "secret" not in repr(info.value)
    assert info.value.__cause__ is None
    with pytest.raises(InvalidArgumentError) as info:
        open_storage(url)
    assert "secret" not in str(info.value)


@pytest.mark.parametrize(
    "root",
    [
        "s3://bucket/prefix",
        "memory://hub",
        "file:///tmp/hub",
        "/tmp/hub",
        "relative/hub",
        "/tmp/odd:name@with-at",
        "https://example.com/hub",
    ],
)
def test_check_root_accepts(root: str) -> None:
    assert check_root(root) is root


def test_open_storage_plain_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = open_storage(str(tmp_path / "hub"))
    assert isinstance(storage, LocalStorage)
    assert storage.root == tmp_path / "hub"
    monkeypatch.chdir(tmp_path)
    relative = open_storage("rel/hub")
    assert isinstance(relative, LocalStorage)
    assert relative.root == tmp_path / "rel" / "hub"
    assert relative.root.is_absolute()


def test_open_storage_expands_the_home_folder(isolated_env: Path) -> None:
    storage = open_storage("~/hub")
    assert isinstance(storage, LocalStorage)
    assert storage.root == isolated_env / "hub"


async def test_open_storage_file_url(tmp_path: Path) -> None:
    folder = tmp_path / "with space"
    url = folder.as_uri()
    assert "%20" in url
    storage = open_storage(url)
    assert isinstance(storage, LocalStorage)
    assert storage.root == folder
    await storage.write("a/b", b"via url")
    assert (folder / "a" / "b").read_bytes() == b"via url"
    assert await open_storage(str(folder)).read("a/b") == b"via url"


async def test_open_storage_memory_url() -> None:
    url = f"memory://hubzarr-test-{uuid.uuid4().hex}"
    storage = open_storage(url)
    assert isinstance(storage, FsspecStorage)
    assert storage.url == url
    fs = fsspec.filesystem("memory")
    try:
        await storage.write("a/b", b"in memory")
        assert fs.cat_file(f"{url}/a/b") == b"in memory"
    finally:
        if fs.exists(url):
            fs.rm(url, recursive=True)


def test_open_storage_http_is_read_only() -> None:
    storage = open_storage("https://example.com/hub")
    assert isinstance(storage, FsspecStorage)
    assert storage.read_only


@pytest.mark.parametrize("url", ["nosuchprotocol://bucket/x", "zzz://x"])
def test_open_storage_unknown_protocol(url: str) -> None:
    with pytest.raises(InvalidArgumentError, match="cannot open hub root") as info:
        open_storage(url)
    assert url in str(info.value)


def test_public_options_drop_credentials() -> None:
    options = {
        "key": "AKIA",
        "secret": "shh",
        "token": "t",
        "profile": "p",
        "anon": True,
        "endpoint_url": "http://localhost:9000",
        "region_name": "eu",
        "requester_pays": True,
        "project": "proj",
        "version_aware": True,
        "client_kwargs": {
            "endpoint_url": "http://minio:9000",
            "region_name": "eu",
            "aws_secret_access_key": "shh",
        },
    }
    assert public_options(options) == {
        "profile": "p",  # a name: the receiver looks its keys up itself
        "anon": True,
        "endpoint_url": "http://localhost:9000",
        "region_name": "eu",
        "requester_pays": True,
        "project": "proj",
        "version_aware": True,
        "client_kwargs": {"endpoint_url": "http://minio:9000", "region_name": "eu"},
    }
    assert public_options({}) == {}
    assert "secret" in options  # the input is left alone
