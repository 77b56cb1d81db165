"""A failed operation changes nothing stored: a failed xarray write leaves the branch as it
was, a failed create leaves no repository and no folder, and a handle opened before its
repository was deleted neither reads nor writes, in this process or another."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from _procs import write_after_delete
from zarr.core.buffer import default_buffer_prototype

import hubzarr

NAME = "loss/data"


def _files(root: str) -> dict[str, bytes]:
    """Every file under a local root, with its content."""
    base = Path(root)
    return {
        str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()
    }


def _folders(root: str) -> set[str]:
    base = Path(root)
    return {str(p.relative_to(base)) for p in base.rglob("*") if p.is_dir()}


def _dataset(n: int = 6, value: float = 1.0) -> xr.Dataset:
    return xr.Dataset(
        {"t": (("x", "y"), np.full((n, 4), value)), "u": (("x",), np.arange(n, dtype="int64"))},
        coords={"x": np.arange(n)},
    ).chunk({"x": 2})


def _failing(n: int = 6) -> xr.Dataset:
    """A dataset whose second dask block raises when computed: the rehearsal passes (it
    computes nothing), the real write fails halfway."""

    def block(x: np.ndarray[Any, Any], block_info: Any = None) -> np.ndarray[Any, Any]:
        if block_info[None]["chunk-location"][0] == 1:
            raise RuntimeError("the source failed")
        return x + 5

    values = da.map_blocks(block, da.zeros((n, 4), chunks=(2, 4)), dtype="float64")
    return xr.Dataset({"t": (("x", "y"), values)}, coords={"x": np.arange(n)})


def _to_hub(hub: hubzarr.Hub, ds: xr.Dataset, name: str, **kwargs: Any) -> None:
    hubzarr.to_hub(ds, name, root=hub.root, **kwargs)


def _open(hub: hubzarr.Hub, name: str) -> xr.Dataset:
    return hubzarr.open_dataset(name, root=hub.root)


def _state(hub: hubzarr.Hub, name: str) -> dict[str, Any]:
    ds = _open(hub, name).load()
    return {k: v.values.tolist() for k, v in ds.variables.items()} | {"attrs": ds.attrs}


@pytest.fixture
def written(local_root: str) -> hubzarr.Hub:
    hub = hubzarr.Hub(local_root)
    _to_hub(hub, _dataset(), NAME)
    hub.tag(NAME, "v1")
    _to_hub(hub, _dataset(value=2.0).assign_attrs(title="head"), NAME, mode="w")
    return hub


#: Variable names xarray lets through and the store refuses.
BAD = ["nul\x00", "%2e%2e"]


@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize("mode", ["w", "a"])
def test_a_variable_the_store_refuses_changes_nothing(
    written: hubzarr.Hub, mode: str, bad: str
) -> None:
    root = str(written.root)
    before, state = _files(root), _state(written, NAME)
    with pytest.raises(hubzarr.InvalidArgumentError, match="refusing"):
        _to_hub(written, _dataset().rename({"t": bad}), NAME, mode=mode)
    assert _files(root) == before
    assert _state(written, NAME) == state


@pytest.mark.parametrize("bad", BAD)
def test_a_new_repository_whose_write_is_refused_is_not_created(local_root: str, bad: str) -> None:
    hub = hubzarr.Hub(local_root)
    _to_hub(hub, _dataset(), "loss/other")
    before = _files(local_root)
    with pytest.raises(hubzarr.InvalidArgumentError, match="refusing"):
        _to_hub(hub, _dataset().rename({"u": bad}), NAME)
    assert hub.ls() == ["loss/other"]
    assert _files(local_root) == before


@pytest.mark.parametrize("mode", ["w", "a", "r+"])
def test_a_write_that_fails_halfway_leaves_the_branch_as_it_was(
    written: hubzarr.Hub, mode: str
) -> None:
    state = _state(written, NAME)
    tagged = _state(written, f"{NAME}:v1")
    kwargs: dict[str, Any] = {"region": {"x": slice(0, 6)}} if mode == "r+" else {}
    failing = _failing()
    if mode == "r+":
        failing = failing.drop_vars("x")
    with pytest.raises(RuntimeError, match="the source failed"):
        _to_hub(written, failing, NAME, mode=mode, **kwargs)
    assert _state(written, NAME) == state
    assert _state(written, f"{NAME}:v1") == tagged
    assert written.verify(NAME).ok
    # Nothing stays half-done: a good write of the same shape now works.
    _to_hub(written, _dataset(value=3.0), NAME, mode="w")
    assert _state(written, NAME)["t"] == [[3.0] * 4] * 6


def test_an_append_that_fails_halfway_leaves_the_branch_as_it_was(written: hubzarr.Hub) -> None:
    state = _state(written, NAME)
    more = _failing().assign_coords(x=np.arange(6, 12))
    with pytest.raises(RuntimeError, match="the source failed"):
        _to_hub(written, more, NAME, append_dim="x")
    assert _state(written, NAME) == state
    assert _open(written, NAME).sizes["x"] == 6


def test_a_new_repository_whose_write_fails_halfway_is_not_left(local_root: str) -> None:
    hub = hubzarr.Hub(local_root)
    with pytest.raises(RuntimeError, match="the source failed"):
        _to_hub(hub, _failing(), NAME)
    assert hub.ls() == []
    assert not [f for f in _files(local_root) if f.startswith("loss/data/")]
    _to_hub(hub, _dataset(), NAME)  # the name is free
    assert _open(hub, NAME).sizes["x"] == 6


def test_a_failed_create_on_an_existing_name_leaves_no_folder(local_root: str) -> None:
    hub = hubzarr.Hub(local_root)
    hub.array((4,), name=NAME, dtype="int8")[:] = 1
    before, folders = _files(local_root), _folders(local_root)
    for _ in range(3):
        with pytest.raises(hubzarr.AlreadyExistsError):
            hub.array((4,), name=NAME, dtype="int8")
        with pytest.raises(hubzarr.AlreadyExistsError):
            hub.store(NAME, mode="w-")
    assert _files(local_root) == before
    assert _folders(local_root) == folders


# -- handles opened before a deletion ---------------------------------------------------------


def _incarnation_folders(root: str) -> list[str]:
    base = Path(root) / "loss" / "data"
    return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.exists() else []


def test_an_array_handle_opened_before_a_delete_neither_writes_nor_reads(hub: hubzarr.Hub) -> None:
    arr = hub.array((8,), name=NAME, dtype="int16", chunks=(2,))
    arr[:] = 3
    hub.tag(NAME, "v1")
    tagged = hub.load(f"{NAME}:v1")
    hub.delete(NAME)
    with pytest.raises(hubzarr.NotFoundError, match="deleted"):
        arr[0] = 1
    with pytest.raises(hubzarr.NotFoundError, match="deleted"):
        arr[:]
    with pytest.raises(hubzarr.NotFoundError, match="deleted"):
        tagged[:]
    with pytest.raises(hubzarr.NotFoundError):
        hub.load(NAME)
    assert hub.ls() == []


def test_a_deleted_repositorys_folder_does_not_come_back(local_root: str) -> None:
    hub = hubzarr.Hub(local_root)
    arr = hub.array((8,), name=NAME, dtype="int16", chunks=(2,))
    arr[:] = 3
    group = hub.group("loss/grouped")
    group.create_array("a", (4,), dtype="int8")
    hub.delete(NAME)
    hub.delete("loss/grouped")
    assert _incarnation_folders(local_root) == []
    for write in (
        lambda: arr.__setitem__(slice(0, 8), 1),
        lambda: arr.store.set_sync("9", default_buffer_prototype().buffer.from_bytes(b"x")),
        lambda: group.create_array("b", (4,), dtype="int8"),
        lambda: group.attrs.__setitem__("x", 1),
    ):
        with pytest.raises(hubzarr.HubError):
            write()
    assert _incarnation_folders(local_root) == []
    assert not (Path(local_root) / "loss" / "grouped").exists() or not [
        p for p in (Path(local_root) / "loss" / "grouped").rglob("*") if p.is_file()
    ]


def test_an_old_handle_does_not_write_into_a_repository_created_again(hub: hubzarr.Hub) -> None:
    arr = hub.array((4,), name=NAME, dtype="int8")
    arr[:] = 1
    hub.delete(NAME)
    again = hub.array((4,), name=NAME, dtype="int8")
    with pytest.raises(hubzarr.NotFoundError, match="deleted"):
        arr[:] = 7
    np.testing.assert_array_equal(again[:], [0] * 4)
    np.testing.assert_array_equal(hub.load(NAME)[:], [0] * 4)


def test_a_handle_in_another_process_neither_writes_nor_reads_after_a_delete(
    local_root: str,
) -> None:
    hub = hubzarr.Hub(local_root)
    hub.array((4,), name=NAME, dtype="int8", chunks=(2,))
    ctx = multiprocessing.get_context("spawn")
    opened, deleted, results = ctx.Event(), ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=write_after_delete, args=(local_root, opened, deleted, results))
    proc.start()
    try:
        assert opened.wait(timeout=120)
        hub.delete(NAME)
        deleted.set()
        assert results.get(timeout=120) == ["NotFoundError", "NotFoundError"]
    finally:
        proc.join(timeout=60)
    assert proc.exitcode == 0
    assert _incarnation_folders(local_root) == []
    assert hub.ls() == []
    assert os.path.exists(local_root)
