"""The root is a boundary: links inside a local root, special files, and hub roots that hold
credentials or nothing at all.

Inside a local root no symbolic link is followed (the root itself may be one), so nothing a
planted link says makes hubzarr read another root's data, write or delete outside the root. A
root URL that could hold a secret is refused without being echoed, on every way a root comes
in; an empty root is refused instead of meaning the current folder.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner
from zarr.core.sync import sync

import hubzarr
import hubzarr.storage
from hubzarr.cli import app
from hubzarr.config import config_path, resolve_root
from hubzarr.errors import HubError, InvalidArgumentError, StorageError
from hubzarr.storage import LocalStorage, check_root, open_storage

NAME = "x/arr"


def _files(folder: Path) -> dict[str, bytes]:
    """Every regular file under ``folder`` (links not followed), with its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def _make(root: Path, values: list[int]) -> hubzarr.Hub:
    hub = hubzarr.Hub(str(root))
    arr = hub.array((4,), name=NAME, dtype="int32", chunks=(2,))
    arr[:] = values
    hub.tag(NAME, "v1")
    return hub


def _version_folder(root: Path, hub: hubzarr.Hub, ref: str = "v1") -> Path:
    """The local folder holding the objects written while ``ref``'s version was open."""
    version = hub.load(f"{NAME}:{ref}", mode="r").version
    (folder,) = root.glob(f"{NAME}/*/data/{version}")
    return folder


def _move_behind_a_link(folder: Path, outside: Path) -> Path:
    """Move ``folder`` to ``outside`` and leave a symbolic link to it in its place."""
    shutil.move(str(folder), str(outside))
    folder.symlink_to(outside, target_is_directory=True)
    return outside


# -- links inside a local root -------------------------------------------------------------


@pytest.fixture(params=["openat2", "walk"])
def resolution(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Resolve local paths with openat2 where the kernel has it, and with the portable walk
    from folder to folder (what other systems use) in the second run."""
    if request.param == "walk":
        monkeypatch.setattr(hubzarr.storage, "_openat2", None)
    return str(request.param)


@pytest.mark.usefixtures("resolution")
def test_a_linked_chunk_of_another_root_is_not_read(tmp_path: Path) -> None:
    other = _make(tmp_path / "other", [1, 2, 3, 4])
    hub = _make(tmp_path / "hub", [5, 6, 7, 8])
    mine = _version_folder(tmp_path / "hub", hub) / "0"
    mine.unlink()
    mine.symlink_to(_version_folder(tmp_path / "other", other) / "0")

    reader = hubzarr.Hub(str(tmp_path / "hub"))
    with pytest.raises(StorageError, match="symbolic link") as info:
        reader.load(f"{NAME}:v1")[:]
    assert f"{NAME}/" in str(info.value) and (tmp_path / "hub").as_uri() in str(info.value)
    with pytest.raises(StorageError, match="symbolic link"):
        hubzarr.load(f"{NAME}:v1", root=str(tmp_path / "hub"))[0:2]
    try:
        report = reader.verify(f"{NAME}:v1")
    except HubError:
        pass
    else:
        assert not report.ok
    assert reader.load(f"{NAME}:v1")[2:].tolist() == [7, 8]  # the chunk of its own still reads


@pytest.mark.usefixtures("resolution")
def test_a_linked_folder_inside_the_root_is_not_read(tmp_path: Path) -> None:
    hub = _make(tmp_path / "hub", [5, 6, 7, 8])
    _move_behind_a_link(_version_folder(tmp_path / "hub", hub), tmp_path / "copy")
    reader = hubzarr.Hub(str(tmp_path / "hub"))
    with pytest.raises(StorageError, match="symbolic link"):
        reader.load(f"{NAME}:v1")[:]
    try:
        report = reader.verify(f"{NAME}:v1")
    except HubError:
        pass
    else:
        assert not report.ok


@pytest.mark.usefixtures("resolution")
def test_a_linked_user_folder_is_neither_listed_nor_opened(tmp_path: Path) -> None:
    _make(tmp_path / "hub", [5, 6, 7, 8])
    _move_behind_a_link(tmp_path / "hub" / "x", tmp_path / "elsewhere")
    hub = hubzarr.Hub(str(tmp_path / "hub"))
    assert hub.ls() == []
    with pytest.raises(StorageError, match="symbolic link"):
        hub.load(NAME)


@pytest.mark.parametrize("linked", ["data", "head"])
@pytest.mark.usefixtures("resolution")
def test_a_write_through_a_linked_folder_lands_nothing_outside(tmp_path: Path, linked: str) -> None:
    hub = _make(tmp_path / "hub", [5, 6, 7, 8])
    arr = hub.load(NAME)
    arr[0:2] = [9, 9]  # the head's data folder now exists
    head = _version_folder(tmp_path / "hub", hub, "main")
    folder = head.parent if linked == "data" else head
    outside = _move_behind_a_link(folder, tmp_path / "outside")
    before = _files(outside)
    with pytest.raises(StorageError, match="symbolic link"):
        hubzarr.Hub(str(tmp_path / "hub")).load(NAME)[2:4] = [1, 1]
    assert _files(outside) == before


@pytest.mark.usefixtures("resolution")
async def test_storage_never_follows_a_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    (outside / "sub").mkdir()
    (outside / "sub" / "deep").write_bytes(b"deep")
    storage = LocalStorage(tmp_path / "hub")
    await storage.write("a/own", b"own")
    (tmp_path / "hub" / "a" / "file-link").symlink_to(outside / "secret")
    (tmp_path / "hub" / "a" / "dir-link").symlink_to(outside, target_is_directory=True)
    before = _files(outside)

    assert await storage.list("a") == {"own": 3}
    assert set(await storage.list_detailed("", temporaries=True)) == {"a/own"}
    assert await storage.list_dir("a") == ["own"]
    for path in ("a/file-link", "a/dir-link/secret", "a/dir-link/sub/deep"):
        with pytest.raises(StorageError, match="symbolic link") as info:
            await storage.read(path)
        assert repr(path) in str(info.value)
        assert storage.url in str(info.value)
        with pytest.raises(StorageError, match="symbolic link"):
            await storage.size(path)
        with pytest.raises(StorageError, match="symbolic link"):
            await storage.exists(path)
        with pytest.raises(StorageError, match="symbolic link"):
            await storage.write(path, b"overwritten")
        with pytest.raises(StorageError, match="symbolic link"):
            await storage.create(path, b"overwritten")
    with pytest.raises(StorageError, match="symbolic link"):
        await storage.write("a/dir-link/new", b"new")
    with pytest.raises(StorageError, match="symbolic link"):
        await storage.read_first(["a/dir-link/secret"], lambda i, raw: raw)
    with pytest.raises(StorageError, match="symbolic link"):
        await storage.delete("a/dir-link/secret")
    with pytest.raises(StorageError, match="symbolic link"):
        await storage.delete_prefix("a/dir-link/sub")
    with pytest.raises(StorageError, match="symbolic link"):
        await storage.list("a/dir-link")
    assert _files(outside) == before

    # Deleting a link removes the link, never what it points at.
    await storage.delete_prefix("a/dir-link")
    await storage.delete("a/file-link")
    assert _files(outside) == before
    assert sorted(os.listdir(tmp_path / "hub" / "a")) == ["own"]


@pytest.mark.usefixtures("resolution")
async def test_a_special_file_is_refused_not_waited_on(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "hub")
    await storage.write("a/own", b"own")
    fifo = tmp_path / "hub" / "a" / "fifo"
    os.mkfifo(fifo)
    assert await storage.list("a") == {"own": 3}
    outcome: list[BaseException | bytes | None] = []

    def read() -> None:
        try:
            outcome.append(sync(storage.read("a/fifo")))
        except BaseException as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=60)  # a guard only: a refusal returns at once
    if reader.is_alive():  # blocked opening the FIFO: open its other end to release it
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join()
    assert len(outcome) == 1
    assert isinstance(outcome[0], StorageError), outcome
    assert "not a regular file" in str(outcome[0])


@pytest.mark.usefixtures("resolution")
def test_a_root_that_is_a_link_works(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    (tmp_path / "parent-link").symlink_to(tmp_path, target_is_directory=True)
    for root in (tmp_path / "link" / "hub", tmp_path / "parent-link" / "real" / "hub2"):
        hub = _make(root, [1, 2, 3, 4])
        arr = hub.load(NAME)
        arr[0] = 7
        assert hub.ls() == [NAME]
        assert hub.load(f"{NAME}:v1")[:].tolist() == [1, 2, 3, 4]
        assert hubzarr.Hub(str(root)).load(NAME)[:].tolist() == [7, 2, 3, 4]
        assert hub.verify(NAME).ok
        hub.gc(NAME, grace=0, dry_run=False)
        assert hub.load(NAME)[:].tolist() == [7, 2, 3, 4]
    assert sorted(os.listdir(real)) == ["hub", "hub2"]


# -- roots that hold credentials -----------------------------------------------------------

KEY_ID = "AKIAEXAMPLEKEY"
SECRET = "Sec9/ret+Xyz"
#: Spellings of a root that hold a secret, each of which must be refused without an echo.
SECRET_ROOTS = [
    f"s3://{KEY_ID}:{SECRET}@bucket/prefix",
    f"s3://{KEY_ID}:{SECRET}@bucket",
    f"S3://{KEY_ID}:{SECRET}@bucket/prefix",
    f"s3a://{KEY_ID}:{SECRET}@bucket/prefix",
    f"s3://{KEY_ID}:{SECRET.replace('/', '%2F')}@bucket/prefix",
    f"s3://{KEY_ID}:{SECRET}",  # no bucket at all: the secret is taken for its name
    f"s3:{KEY_ID}:{SECRET}@bucket/prefix",  # no '//': would be a local folder
    f"gs://{KEY_ID}:{SECRET}@bucket/prefix",
    f"gcs://{KEY_ID}:{SECRET}@bucket/prefix",
    f"https://{KEY_ID}:{SECRET}@example.com/hub",
    f"http://{KEY_ID}@example.com/{SECRET}",
    f"memory://{KEY_ID}:{SECRET}@hub",
    f"file://{KEY_ID}:{SECRET}@localhost/tmp/hub",
    f"s3://bucket/prefix?X-Amz-Credential={KEY_ID}&X-Amz-Signature={SECRET}",
    f"https://example.com/hub?token={KEY_ID}{SECRET}",
    f"https://example.com/hub#{KEY_ID}{SECRET}",
    f"gs://bucket/prefix?{KEY_ID}={SECRET}",
]


def _leaks(text: str) -> bool:
    return any(part in text for part in (KEY_ID, SECRET, "Sec9", "ret+Xyz", "ret%2BXyz"))


@pytest.fixture
def empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current folder, to show that a refused root creates nothing in it."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


@pytest.mark.parametrize("root", SECRET_ROOTS)
def test_a_root_holding_a_secret_is_refused_without_an_echo(root: str, empty_cwd: Path) -> None:
    attempts = [
        lambda: check_root(root),
        lambda: open_storage(root),
        lambda: resolve_root(root),
        lambda: hubzarr.Hub(root),
        lambda: hubzarr.HubStore(root, "x/y"),
        lambda: hubzarr.load("x/y", root=root),
    ]
    for attempt in attempts:
        with pytest.raises(InvalidArgumentError) as info:
            attempt()
        assert not _leaks(str(info.value)), info.value
        assert not _leaks(repr(info.value)), info.value
    assert os.listdir(empty_cwd) == []


@pytest.mark.parametrize("root", SECRET_ROOTS)
def test_a_secret_root_from_the_environment_or_config_is_refused(
    root: str, empty_cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUBZARR_ROOT", root)
    with pytest.raises(InvalidArgumentError, match=r"\$HUBZARR_ROOT") as info:
        hubzarr.Hub()
    assert not _leaks(str(info.value))
    with pytest.raises(InvalidArgumentError):
        hubzarr.HubStore(name="x/y")
    monkeypatch.delenv("HUBZARR_ROOT")
    path = config_path()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"root": root}))
    with pytest.raises(InvalidArgumentError, match="config file") as info:
        hubzarr.Hub()
    assert not _leaks(str(info.value))
    assert os.listdir(empty_cwd) == []


@pytest.mark.parametrize("root", SECRET_ROOTS)
def test_the_cli_never_shows_a_secret_root(
    root: str, empty_cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    for args in (
        ["ls", "--root", root],
        ["info", "x/y", "--root", root],
        ["log", "x/y", "--root", root],
        ["verify", "x/y", "--root", root],
        ["gc", "x/y", "--yes", "--root", root],
        ["demo", "--root", root],
        ["configure", "--root", root, "--no-check"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr.startswith("error: "), result.output
        assert "Traceback" not in result.output
        assert not _leaks(result.output), result.output
    assert not config_path().exists()

    monkeypatch.setenv("HUBZARR_ROOT", root)
    for args in (
        ["ls"],
        ["configure", "--show"],
        ["configure", "--namespace", "alice"],
        ["configure", "--root", str(empty_cwd.parent / "hub"), "--no-check"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        assert not _leaks(result.output), result.output
    assert not config_path().exists()
    assert os.listdir(empty_cwd) == []


@pytest.mark.parametrize(
    "root",
    [
        "s3://ab/prefix",  # too short
        "s3://" + "a" * 64,  # too long
        "s3://Bucket/prefix",  # uppercase
        "s3://my_bucket/prefix",  # '_' is for GCS only
        "s3://-bucket/prefix",
        "s3://bucket-/prefix",
        "s3://my..bucket/prefix",
        "s3://192.168.10.1/prefix",  # an IP address
        "s3:///prefix",  # no bucket
        "gs://ab/prefix",
        "gs://" + "a" * 64,  # one component over 63
        "gs://" + ".".join(["a" * 60] * 4),  # over 222 with dots
        "gs://Bucket/prefix",
        "gs://_bucket/prefix",
        "gs://bucket!/prefix",
        "gcs://bucket name/prefix",
        "https:///hub",  # no host
        "https://exa mple.com/hub",
    ],
)
def test_a_malformed_bucket_or_host_is_refused_without_an_echo(root: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        check_root(root)
    rest = root.split("://", 1)[1].split("/", 1)[0]
    assert rest == "" or rest not in str(info.value)


@pytest.mark.parametrize(
    "root",
    [
        "s3://bucket/prefix",
        "s3://my-bucket.v2/prefix/deeper",
        "s3a://abc",
        "gs://my_bucket/prefix",
        "gs://data.example.com/hub",
        "gcs://" + ".".join(["a" * 63] * 3),
        "https://example.com:8443/hub",
        "http://127.0.0.1:8000",
        "http://[::1]:8000/hub",
        "memory://hub",
        "memory:///abs/hub",
        "file:///tmp/hub",
        "file://localhost/tmp/hub",
        "/tmp/odd:name@with-at",
        "relative/hub",
    ],
)
def test_well_formed_roots_are_accepted(root: str) -> None:
    assert check_root(root) is root


# -- empty roots -----------------------------------------------------------------------------


@pytest.mark.parametrize("root", ["", " ", "\t\n"])
def test_an_empty_root_is_refused(root: str, empty_cwd: Path) -> None:
    for attempt in (
        lambda: check_root(root),
        lambda: resolve_root(root),
        lambda: hubzarr.Hub(root),
        lambda: hubzarr.HubStore(root, "x/y"),
        lambda: hubzarr.array((2,), name="x/y", root=root),
    ):
        with pytest.raises(InvalidArgumentError, match="hub root is empty"):
            attempt()
    assert os.listdir(empty_cwd) == []


@pytest.mark.parametrize(
    "args",
    [
        ["demo", "--samples", "1"],
        ["ls"],
        ["info", "x/y"],
        ["log", "x/y"],
        ["tag", "x/y", "v1"],
        ["branch", "x/y", "dev"],
        ["gc", "x/y", "--yes"],
        ["verify", "x/y"],
    ],
)
def test_an_empty_root_option_is_refused(args: list[str], empty_cwd: Path) -> None:
    runner = CliRunner()
    for root in ("", "  "):
        result = runner.invoke(app, [*args, "--root", root])
        assert result.exit_code == 1, result.output
        assert result.stdout == ""
        assert result.stderr.startswith("error: "), result.output
        assert "hub root is empty" in result.stderr
        assert "Traceback" not in result.output
    assert os.listdir(empty_cwd) == []


def test_a_blank_root_variable_is_refused(empty_cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUBZARR_ROOT", "  ")
    with pytest.raises(InvalidArgumentError, match=r"hub root in \$HUBZARR_ROOT is empty"):
        hubzarr.Hub()
    result = CliRunner().invoke(app, ["ls"])
    assert result.exit_code == 1
    assert "HUBZARR_ROOT" in result.stderr
    assert os.listdir(empty_cwd) == []


def test_configure_refuses_a_blank_root(empty_cwd: Path) -> None:
    result = CliRunner().invoke(app, ["configure", "--root", "  ", "--no-check"])
    assert result.exit_code == 1
    assert "hub root is empty" in result.stderr
    assert not config_path().exists()
    # An empty value clears the setting, as for every option of configure.
    CliRunner().invoke(app, ["configure", "--root", str(empty_cwd / "hub"), "--no-check"])
    result = CliRunner().invoke(app, ["configure", "--root", "", "--no-check"])
    assert result.exit_code == 0, result.output
    assert "root" not in json.loads(config_path().read_text())
