"""The Python API: the default root and namespace, listing and deleting repositories, the Hub
object, and the zarr store that zarr and xarray use."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from zarr.core.sync import sync

import hubzarr
from hubzarr.config import Settings, save_settings

# -- which root, which namespace ---------------------------------------------------------


def test_module_functions_use_hubzarr_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    env_root = tmp_path / "from-env"
    monkeypatch.setenv("HUBZARR_ROOT", str(env_root))
    arr = hubzarr.array((4,), "env/arr", dtype="int32")
    arr[:] = [1, 2, 3, 4]
    assert (env_root / "env" / "arr" / "repo.json").is_file()
    assert not (isolated_env / ".hubzarr").exists()
    assert hubzarr.ls() == ["env/arr"]
    assert hubzarr.Hub(str(env_root)).ls() == ["env/arr"]
    version = hubzarr.tag("env/arr", "v1")
    hubzarr.branch("env/arr:v1", "dev")
    assert [e.id for e in hubzarr.log("env/arr:v1")] == [version]
    np.testing.assert_array_equal(hubzarr.load("env/arr:dev")[:], [1, 2, 3, 4])
    np.testing.assert_array_equal(zarr.open_array(hubzarr.store("env/arr:v1"))[:], [1, 2, 3, 4])
    hubzarr.delete("env/arr")
    assert hubzarr.ls() == []


def test_an_explicit_root_wins_over_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUBZARR_ROOT", str(tmp_path / "from-env"))
    explicit = str(tmp_path / "explicit")
    hubzarr.array((2,), "x/arr", root=explicit)
    assert hubzarr.ls(root=explicit) == ["x/arr"]
    assert hubzarr.ls() == []
    assert hubzarr.Hub().root == str(tmp_path / "from-env")


def test_module_functions_use_the_config_file_root_when_the_environment_is_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    config_root = tmp_path / "from-config"
    save_settings(Settings(root=str(config_root)))
    hubzarr.array((3,), "cfg/arr", dtype="uint8")[:] = 9
    assert (config_root / "cfg" / "arr" / "repo.json").is_file()
    assert not (isolated_env / ".hubzarr").exists()
    assert hubzarr.ls() == ["cfg/arr"]
    np.testing.assert_array_equal(hubzarr.load("cfg/arr")[:], [9, 9, 9])
    # The environment wins over the config file.
    monkeypatch.setenv("HUBZARR_ROOT", str(tmp_path / "from-env"))
    assert hubzarr.ls() == []
    with pytest.raises(hubzarr.NotFoundError):
        hubzarr.load("cfg/arr")


def test_the_default_root_is_a_folder_in_home(isolated_env: Path) -> None:
    hubzarr.array((2,), "home/arr")
    assert (isolated_env / ".hubzarr" / "home" / "arr" / "repo.json").is_file()
    assert hubzarr.Hub().ls() == ["home/arr"]


def test_bare_names_use_the_library_namespace(memory_root: str) -> None:
    hubzarr.array((2,), "bare", dtype="int8", root=memory_root)[:] = [5, 6]
    assert hubzarr.ls(root=memory_root) == ["library/bare"]
    np.testing.assert_array_equal(hubzarr.load("library/bare", root=memory_root)[:], [5, 6])
    np.testing.assert_array_equal(hubzarr.load("bare", root=memory_root)[:], [5, 6])
    assert hubzarr.load("bare:main", root=memory_root).name == "library/bare:main"


def test_bare_names_use_hubzarr_namespace(
    memory_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUBZARR_NAMESPACE", "team")
    hubzarr.array((2,), "bare", dtype="int8", root=memory_root)[:] = [7, 8]
    assert hubzarr.ls(root=memory_root) == ["team/bare"]
    np.testing.assert_array_equal(hubzarr.load("bare", root=memory_root)[:], [7, 8])
    hubzarr.tag("bare", "v1", root=memory_root)
    np.testing.assert_array_equal(hubzarr.load("team/bare:v1", root=memory_root)[:], [7, 8])
    monkeypatch.delenv("HUBZARR_NAMESPACE")
    with pytest.raises(hubzarr.NotFoundError):
        hubzarr.load("bare", root=memory_root)


def test_bare_names_use_the_config_file_namespace(memory_root: str) -> None:
    save_settings(Settings(namespace="lab"))
    hubzarr.array((2,), "bare", root=memory_root)
    assert hubzarr.ls(root=memory_root) == ["lab/bare"]


# -- ls, delete, load --------------------------------------------------------------------


def test_ls_lists_repositories_sorted_and_by_prefix(hub: hubzarr.Hub) -> None:
    for name in ("b/zeta", "a/y", "ab/w", "a/x", "b/alpha"):
        hub.array((2,), name)
    assert hub.ls() == ["a/x", "a/y", "ab/w", "b/alpha", "b/zeta"]
    assert hub.ls("a") == ["a/x", "a/y", "ab/w"]
    assert hub.ls("a/") == ["a/x", "a/y"]
    assert hub.ls("a/x") == ["a/x"]
    assert hub.ls("b/a") == ["b/alpha"]
    assert hub.ls("c") == []
    assert hubzarr.ls("b", root=hub.root) == ["b/alpha", "b/zeta"]


def test_ls_lists_only_repositories(hub: hubzarr.Hub) -> None:
    hub.array((2,), "real/arr")
    sync(hub.storage.write("stray/folder/notes.txt", b"not a repository"))
    sync(hub.storage.write("real/junk/data.bin", b"\x00"))
    sync(hub.storage.write("loose.txt", b"a file at the root"))
    assert hub.ls() == ["real/arr"]
    assert hub.ls("stray") == []


def test_ls_of_an_empty_or_missing_root_is_empty(tmp_path: Path) -> None:
    assert hubzarr.ls(root=str(tmp_path / "nothing-here")) == []


def test_delete_removes_a_repository(hub: hubzarr.Hub) -> None:
    hub.array((2,), "del/keep")[:] = 1
    hub.array((2,), "del/gone")[:] = 2
    hub.tag("del/gone", "v1")
    hub.delete("del/gone")
    assert hub.ls() == ["del/keep"]
    assert sync(hub.storage.list("del/gone")) == {}
    with pytest.raises(hubzarr.NotFoundError):
        hub.load("del/gone")
    with pytest.raises(hubzarr.NotFoundError):
        hub.load("del/gone:v1")
    np.testing.assert_array_equal(hub.load("del/keep")[:], [1, 1])
    # The name is free again, and the new repository starts empty.
    fresh = hub.array((3,), "del/gone", dtype="int8")
    np.testing.assert_array_equal(fresh[:], [0, 0, 0])
    with pytest.raises(hubzarr.NotFoundError):
        hub.load("del/gone:v1")


def test_module_delete(memory_root: str) -> None:
    hubzarr.array((2,), "del/arr", root=memory_root)
    hubzarr.delete("del/arr", root=memory_root)
    assert hubzarr.ls(root=memory_root) == []


def test_delete_with_a_ref_is_refused(hub: hubzarr.Hub) -> None:
    hub.array((2,), "del/arr")
    hub.tag("del/arr", "v1")
    for name in ("del/arr:main", "del/arr:v1"):
        with pytest.raises(hubzarr.InvalidArgumentError, match="without a ref"):
            hub.delete(name)
    assert hub.ls() == ["del/arr"]
    hub.load("del/arr:v1")


def test_delete_of_a_missing_repository(hub: hubzarr.Hub) -> None:
    hub.array((2,), "del/arr")
    with pytest.raises(hubzarr.NotFoundError) as info:
        hub.delete("del/other")
    assert isinstance(info.value, LookupError)
    assert hub.ls() == ["del/arr"]


def test_load_of_a_missing_repository_names_close_matches(hub: hubzarr.Hub) -> None:
    hub.array((2,), "team/images")
    hub.array((2,), "zoo/penguins")
    with pytest.raises(hubzarr.NotFoundError) as info:
        hub.load("team/imgaes")
    assert isinstance(info.value, LookupError)
    assert "team/imgaes" in str(info.value)
    assert "did you mean team/images" in str(info.value)
    assert "zoo/penguins" not in str(info.value)
    with pytest.raises(hubzarr.NotFoundError) as info:
        hub.load("other/thing")
    assert "did you mean" not in str(info.value)
    assert hub.ls() == ["team/images", "zoo/penguins"]


# -- describe ------------------------------------------------------------------------------


def test_describe_summarises_a_repository(hub: hubzarr.Hub) -> None:
    arr = hub.array((4, 2), "sum/arr", dtype="int32", chunks=(1, 2))
    first = hub.describe("sum/arr")
    listed = sync(hub.storage.list("sum/arr"))
    assert first == hubzarr.RepoSummary(
        name="sum/arr",
        nbytes=sum(listed.values()),
        objects=len(listed),
        versions=1,
        branches=("main",),
        tags=(),
        last_change=first.last_change,
    )
    assert first.last_change is not None
    assert first.last_change.utcoffset() == timedelta(0)

    arr[:] = np.arange(8).reshape(4, 2)
    hub.tag("sum/arr", "v1")
    hub.branch("sum/arr:v1", "dev")
    hub.tag("sum/arr", "v2")
    hub.delete_tag("sum/arr", "v2")  # a deleted ref is no longer listed
    second = hub.describe("sum/arr")
    listed = sync(hub.storage.list("sum/arr"))
    assert (second.nbytes, second.objects) == (sum(listed.values()), len(listed))
    assert second.objects > first.objects + 4
    # v1's version, v2's (until gc), and the heads of main and dev.
    assert second.versions == len(hub.log("sum/arr")) + 1 == 4
    assert (second.branches, second.tags) == (("dev", "main"), ("v1",))
    assert second.last_change is not None and second.last_change >= first.last_change
    assert hubzarr.describe("sum/arr", root=hub.root) == second


def test_describe_all_is_ls_with_summaries(hub: hubzarr.Hub) -> None:
    for name in ("b/two", "a/one", "ab/three"):
        hub.array((2,), name)
    hub.tag("a/one", "v1")
    summaries = hub.describe_all()
    assert [s.name for s in summaries] == hub.ls() == ["a/one", "ab/three", "b/two"]
    assert summaries == [hub.describe(name) for name in hub.ls()]
    assert [s.tags for s in summaries] == [("v1",), (), ()]
    assert [s.name for s in hubzarr.describe_all("a/", root=hub.root)] == ["a/one"]
    assert hub.describe_all("c") == []
    with pytest.raises(hubzarr.InvalidArgumentError):
        hub.describe_all(3)  # type: ignore[arg-type]


def test_describe_all_leaves_out_what_no_name_reaches(hub: hubzarr.Hub) -> None:
    from hubzarr.names import parse_name
    from hubzarr.summaries import summarize_all
    from hubzarr.versions import Repository

    hub.array((2,), "real/arr")
    sync(hub.storage.write("Hand/Made/repo.json", b"{}"))  # no name can address it
    assert [s.name for s in hub.describe_all()] == ["real/arr"]
    # A repository deleted after it was listed is left out, not an error.
    gone = Repository(hub.storage, parse_name("gone/arr", default_user="gone"))
    real = Repository(hub.storage, parse_name("real/arr", default_user="real"))
    assert [s.name for s in sync(summarize_all([gone, real]))] == ["real/arr"]


def test_describe_refuses_refs_and_missing_repositories(hub: hubzarr.Hub) -> None:
    hub.array((2,), "sum/arr")
    hub.tag("sum/arr", "v1")
    with pytest.raises(hubzarr.InvalidArgumentError, match="without a ref"):
        hub.describe("sum/arr:v1")
    with pytest.raises(hubzarr.NotFoundError, match="did you mean sum/arr"):
        hub.describe("sum/ar")
    with pytest.raises(hubzarr.InvalidNameError):
        hub.describe("../sum")


# -- Hub ---------------------------------------------------------------------------------


def test_hub_repr_shows_the_root(root: str) -> None:
    assert repr(hubzarr.Hub(root)) == f"Hub({root!r})"
    assert hubzarr.Hub(root).root == root


@pytest.mark.parametrize(
    "url", ["s3://AKID:SECRET@bucket/x", "gs://user:SECRET@bucket", "memory://u:SECRET@host/x"]
)
def test_a_root_with_credentials_is_refused_without_echoing_them(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(hubzarr.InvalidArgumentError) as info:
        hubzarr.Hub(url)
    assert "SECRET" not in str(info.value)
    assert "SECRET" not in repr(info.value)
    with pytest.raises(hubzarr.InvalidArgumentError) as info:
        hubzarr.ls(root=url)
    assert "SECRET" not in str(info.value)
    monkeypatch.setenv("HUBZARR_ROOT", url)
    with pytest.raises(hubzarr.InvalidArgumentError) as info:
        hubzarr.array((2,), "x/arr")
    assert "SECRET" not in str(info.value)


# -- the zarr store ----------------------------------------------------------------------


def test_zarr_reads_an_array_through_the_store(hub: hubzarr.Hub) -> None:
    arr = hub.array((6, 5), "st/arr", dtype="int16", chunks=(4, 2))
    data = np.arange(30, dtype="int16").reshape(6, 5)
    arr[:] = data
    opened = zarr.open_array(hub.store("st/arr"))
    np.testing.assert_array_equal(opened[:], data)
    assert opened.chunks == (4, 2)
    hub.tag("st/arr", "v1")
    arr[:] = 0
    np.testing.assert_array_equal(zarr.open_array(hub.store("st/arr:v1"))[:], data)
    np.testing.assert_array_equal(zarr.open_array(hub.store("st/arr"))[:], 0)


def test_a_store_opened_read_only_refuses_writes(hub: hubzarr.Hub) -> None:
    hub.array((4,), "st/arr", dtype="int16")[:] = 3
    store = hub.store("st/arr")
    assert store.read_only
    opened = zarr.open_array(store)
    with pytest.raises(hubzarr.ReadOnlyError, match="mode='r\\+'"):
        opened[:] = 1
    np.testing.assert_array_equal(hub.load("st/arr")[:], [3, 3, 3, 3])
    writable = hub.store("st/arr", mode="r+")
    zarr.open_array(writable, mode="r+")[:] = 1
    np.testing.assert_array_equal(hub.load("st/arr")[:], [1, 1, 1, 1])


def test_store_w_minus_creates_an_empty_repository_once(hub: hubzarr.Hub) -> None:
    store = hub.store("st/new", mode="w-")
    assert not store.read_only
    assert hub.ls() == ["st/new"]
    assert [e.refs for e in hub.log("st/new")] == [("main",)]
    with pytest.raises(hubzarr.NotFoundError, match="holds no array"):
        hub.load("st/new")
    with pytest.raises(hubzarr.AlreadyExistsError) as info:
        hub.store("st/new", mode="w-")
    assert isinstance(info.value, FileExistsError)
    zarr.create_array(store, shape=(3,), dtype="int8", zarr_format=2, fill_value=0)[:] = 4
    np.testing.assert_array_equal(hub.load("st/new")[:], [4, 4, 4])
    hub.store("st/other:dev", mode="w-")
    assert [e.refs for e in hub.log("st/other")] == [("dev",)]


def test_store_modes(hub: hubzarr.Hub) -> None:
    with pytest.raises(hubzarr.NotFoundError):
        hub.store("st/missing")
    with pytest.raises(hubzarr.NotFoundError):
        hub.store("st/missing", mode="r+")
    with pytest.raises(hubzarr.InvalidArgumentError, match="mode"):
        hub.store("st/missing", mode="w")
    assert hub.ls() == []


def test_xarray_round_trips_and_tags_keep_old_values(hub: hubzarr.Hub) -> None:
    ds = xr.Dataset(
        {"temperature": (("time", "site"), np.arange(12.0).reshape(4, 3))},
        coords={"time": np.arange(4), "site": ["a", "b", "c"]},
        attrs={"title": "demo"},
    )
    ds.to_zarr(hub.store("x/ds", mode="w-"), zarr_format=2, consolidated=False)
    back = xr.open_zarr(hub.store("x/ds"), consolidated=False)
    xr.testing.assert_identical(back.load(), ds)

    hub.tag("x/ds", "v1")
    changed = ds.copy(deep=True)
    changed["temperature"] = changed["temperature"] * 10 + 1
    changed.to_zarr(hub.store("x/ds", mode="r+"), mode="r+", zarr_format=2, consolidated=False)

    now = xr.open_zarr(hub.store("x/ds"), consolidated=False).load()
    xr.testing.assert_identical(now, changed)
    then = xr.open_zarr(hub.store("x/ds:v1"), consolidated=False).load()
    xr.testing.assert_identical(then, ds)


# -- typed loading, injected storage, the package face ---------------------------------------


def test_load_array_and_load_group_return_what_they_say(memory_root: str) -> None:
    hub = hubzarr.Hub(memory_root)
    hub.array((3,), "typed/arr", dtype="int8")[:] = [1, 2, 3]
    hub.group("typed/grp").create_array("x", (2,), dtype="int8")
    arr = hub.load_array("typed/arr", mode="r")
    assert isinstance(arr, hubzarr.HubArray) and arr.read_only
    assert arr[:].tolist() == [1, 2, 3]
    grp = hub.load_group("typed/grp")
    assert isinstance(grp, hubzarr.HubGroup) and grp.keys() == ["x"]
    with pytest.raises(hubzarr.NotFoundError, match=r"holds a group.*load_group\('typed/grp'\)"):
        hub.load_array("typed/grp")
    with pytest.raises(hubzarr.NotFoundError, match=r"holds an array.*load_array\('typed/arr'\)"):
        hubzarr.load_group("typed/arr", root=memory_root)


def test_an_injected_storage_serves_everything_the_hub_opens(memory_root: str) -> None:
    from counting import CountingStorage

    from hubzarr.storage import open_storage

    counter = CountingStorage(open_storage(memory_root))
    hub = hubzarr.Hub(storage=counter)  # the root is the storage's
    assert hub.root == memory_root
    arr = hub.array((4,), "inject/arr", dtype="int16", chunks=(2,))
    arr[:] = [1, 2, 3, 4]
    hub.tag("inject/arr", "v1")
    reader = hub.reader("inject/arr:v1")
    assert sorted(sync(reader.keys())) == [".zarray", ".zattrs", "0", "1"]
    written = {path for op, path in counter.paths if op == "create"}
    assert any(path.endswith("/0") for path in written)
    assert any("/refs/tags/v1.json" in path for path in written)
    assert hubzarr.Hub(memory_root).load_array("inject/arr:v1")[:].tolist() == [1, 2, 3, 4]
    with pytest.raises(hubzarr.InvalidArgumentError, match="Storage"):
        hubzarr.Hub(memory_root, storage="memory://elsewhere")  # type: ignore[arg-type]


def test_options_after_the_name_are_keyword_only(memory_root: str) -> None:
    hub = hubzarr.Hub(memory_root)
    with pytest.raises(TypeError):
        hub.array((2,), "kw/arr", "int8")  # type: ignore[misc]
    arr = hub.array((2,), "kw/arr", dtype="int8")
    with pytest.raises(TypeError):
        hub.tag("kw/arr", "v1", "a message")  # type: ignore[misc]
    hub.tag("kw/arr", "v1", message="a message")
    assert hub.log("kw/arr:v1")[0].message == "a message"
    assert arr.dtype == np.int8


def test_quick_commands_import_neither_zarr_nor_numpy_nor_dask(tmp_path: Path) -> None:
    """``hub --help``, ``hub ls`` (``-l``, ``--json``), ``hub log`` and ``hub rm`` start without
    the heavy libraries (what made them take most of a second)."""
    import subprocess
    import sys

    root = str(tmp_path / "hub")
    hubzarr.Hub(root).array((2,), "quick/arr")
    hubzarr.Hub(root).array((2,), "quick/gone")
    hubzarr.tag("quick/arr", "v1", root=root)
    script = (
        "import sys\n"
        "from hubzarr.cli import app\n"
        "root = ['--root', sys.argv[1]]\n"
        "for args in (['--help'], ['ls', *root], ['ls', '-l', '--json', *root], "
        "['ls', '-l', *root], ['log', 'quick/arr:v1', *root], "
        "['log', '--json', 'quick/arr:v1', *root], ['rm', '--yes', 'quick/gone', *root]):\n"
        "    try:\n"
        "        app(args)\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code in (0, None), exit.code\n"
        "print(sorted(m for m in ('zarr', 'numpy', 'dask', 'xarray') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, root], capture_output=True, text=True, check=True
    ).stdout
    assert "quick/arr" in out
    assert out.strip().splitlines()[-1] == "[]"
