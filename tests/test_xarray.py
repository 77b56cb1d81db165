"""xarray: open_dataset at any version (hubzarr's dask graphs where xarray leaves values as
stored), to_hub in every mode with refused datasets changing nothing, xarray.open_zarr on the
store through its virtual consolidated metadata, and the ``hubzarr`` engine."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import dask
import dask.array as da
import numcodecs
import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import Backend
from numcodecs.registry import codec_registry
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

import hubzarr
from hubzarr.errors import (
    AlreadyExistsError,
    FormatError,
    InvalidArgumentError,
    NotFoundError,
    ReadOnlyError,
)
from hubzarr.spec import DEFAULT_COMPRESSOR, default_chunks
from hubzarr.xarray import HubBackendEntrypoint

NAME = "lab/climate"


def _dataset(start: int = 0, days: int = 6) -> xr.Dataset:
    """Two float variables of one shape (one numpy, one dask), ints, strings, attributes."""
    time = np.arange(start, start + days)
    values = np.arange(days * 3, dtype="float32").reshape(days, 3) + start * 10
    return xr.Dataset(
        {
            "temperature": (("time", "site"), values),
            "pressure": (("time", "site"), da.from_array(values * 2, chunks=(2, 3))),
            "count": (("time",), time.astype("int16")),
        },
        coords={"time": time, "site": ["a", "b", "c"], "label": ("site", ["x", "yy", "zzz"])},
        attrs={"title": "demo"},
    )


def _snapshot(hub: hubzarr.Hub) -> dict[str, bytes]:
    return {p: sync(hub.storage.read(p)) or b"" for p in sync(hub.storage.list(""))}


def _graph_names(variable: xr.DataArray) -> set[str]:
    return {str(key[0] if isinstance(key, tuple) else key) for key in variable.data.dask}


def _from_hub(variable: xr.DataArray) -> bool:
    return any(name.startswith("hubzarr") for name in _graph_names(variable))


# -- reading ---------------------------------------------------------------------------------


def test_a_dataset_round_trips_at_a_branch_a_tag_and_a_version(hub: hubzarr.Hub) -> None:
    ds = _dataset()
    group = hubzarr.to_hub(ds, NAME, root=hub.root)
    assert isinstance(group, hubzarr.HubGroup) and group.name == f"{NAME}:main"
    version = hub.tag(NAME, "v1")
    changed = ds.copy(deep=True)
    changed["temperature"] = changed["temperature"] + 100
    hubzarr.to_hub(changed[["temperature"]], NAME, mode="a", root=hub.root)
    now = hubzarr.open_dataset(NAME, root=hub.root)
    for variable in ("temperature", "pressure", "count", "label"):
        assert now[variable].chunks is not None  # dask-backed, lazy
    xr.testing.assert_identical(now.load(), changed.load())
    for ref in ("v1", version):
        then = hubzarr.open_dataset(f"{NAME}:{ref}", root=hub.root)
        # Two variables of one shape at one version: their graphs must not be confused.
        np.testing.assert_array_equal((then.pressure - 2 * then.temperature).values, 0)
        xr.testing.assert_identical(then.load(), ds.load())


def test_variables_read_as_stored_use_hubzarrs_graph(hub: hubzarr.Hub) -> None:
    ds = _dataset()
    ds["scaled"] = (("time",), np.linspace(0, 1, 6))
    ds["scaled"].encoding = {
        "scale_factor": 0.01,
        "add_offset": 1.0,
        "dtype": "int16",
        "_FillValue": -1,
    }
    ds["when"] = (("time",), np.arange("2024-01-01", "2024-01-07", dtype="datetime64[D]"))
    ds["masked"] = (("time",), np.array([1.0, np.nan, 3.0, 4.0, np.nan, 6.0]))
    ds["masked"].encoding = {"_FillValue": -9999.0}
    hubzarr.to_hub(ds, NAME, root=hub.root)
    opened = hubzarr.open_dataset(NAME, root=hub.root)
    assert {v for v in opened.data_vars if _from_hub(opened[v])} == {
        "temperature",
        "pressure",
        "count",
    }
    for transformed in ("scaled", "when", "masked"):
        assert not _from_hub(opened[transformed])
    reference = xr.open_zarr(hubzarr.store(NAME, root=hub.root))
    xr.testing.assert_identical(opened.load(), reference.load())
    np.testing.assert_allclose(opened.scaled.values, ds.scaled.values, atol=0.01)
    assert np.isnan(opened.masked.values[1]) and opened.masked.values[0] == 1.0


def test_a_fill_value_that_xarray_masks_keeps_xarrays_values(hub: hubzarr.Hub) -> None:
    """hubzarr's own arrays fill with 0, which xarray (format 2) reads as missing."""
    group = hub.group(NAME)
    arr = group.create_array("zeros", (4,), dtype="float32", chunks=(2,))
    arr.zarr.attrs["_ARRAY_DIMENSIONS"] = ["x"]
    arr[:2] = [5, 0]
    opened = hubzarr.open_dataset(NAME, root=hub.root)
    assert not _from_hub(opened.zeros)
    np.testing.assert_array_equal(opened.zeros.values, [5, np.nan, np.nan, np.nan])
    raw = hubzarr.open_dataset(NAME, root=hub.root, mask_and_scale=False)
    assert _from_hub(raw.zeros)
    np.testing.assert_array_equal(raw.zeros.values, [5, 0, 0, 0])


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [({}, ((2, 2, 2), (3,))), ({"time": 6}, ((6,), (3,))), ("auto", ((6,), (3,)))],
)
def test_the_chunks_asked_for_are_the_chunks_given(
    hub: hubzarr.Hub, chunks: Any, expected: tuple[tuple[int, ...], ...]
) -> None:
    hubzarr.to_hub(_dataset(), NAME, root=hub.root)
    opened = hubzarr.open_dataset(NAME, chunks=chunks, root=hub.root)
    assert opened.pressure.chunks == expected
    assert _from_hub(opened.pressure)
    xr.testing.assert_identical(opened.load(), _dataset().load())


def test_open_dataset_takes_a_subgroup_and_xarray_options(hub: hubzarr.Hub) -> None:
    hubzarr.to_hub(_dataset(), NAME, group="daily", root=hub.root)
    opened = hubzarr.open_dataset(NAME, group="daily", root=hub.root, drop_variables=["count"])
    assert "count" not in opened and set(opened.data_vars) == {"temperature", "pressure"}
    assert _group_keys(hub) == ["daily"]


def _group_keys(hub: hubzarr.Hub) -> list[str]:
    group = hub.load(NAME)
    assert isinstance(group, hubzarr.HubGroup)
    return group.keys()


def test_what_is_not_a_dataset_is_refused_clearly(hub: hubzarr.Hub) -> None:
    hub.array((3,), "lab/single")
    with pytest.raises(NotFoundError, match="holds an array, not a group"):
        hubzarr.open_dataset("lab/single", root=hub.root)
    hub.group(NAME).create_array("images", (2, 2))
    with pytest.raises(InvalidArgumentError, match="_ARRAY_DIMENSIONS"):
        hubzarr.open_dataset(NAME, root=hub.root)
    with pytest.raises(NotFoundError):
        hubzarr.open_dataset(f"{NAME}:nope", root=hub.root)
    with pytest.raises(NotFoundError):
        hubzarr.open_dataset(NAME, group="missing", root=hub.root)


def test_damaged_variable_metadata_is_a_format_error_and_no_codec_runs(
    hub: hubzarr.Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    hubzarr.to_hub(_dataset(), NAME, root=hub.root)
    store = hubzarr.store(NAME, mode="r+", root=hub.root)
    doc = sync(store.get("count/.zarray", default_buffer_prototype()))
    assert doc is not None
    edited = doc.to_bytes().replace(b'"filters": null', b'"filters": [{"id": "pickle"}]')
    store.set_sync("count/.zarray", default_buffer_prototype().buffer.from_bytes(edited))

    def tripwire(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a pickle codec was instantiated")

    monkeypatch.setattr(codec_registry["pickle"], "__init__", tripwire)
    for opener in (
        lambda: hubzarr.open_dataset(NAME, root=hub.root),
        lambda: xr.open_dataset(NAME, engine="hubzarr", root=hub.root),
    ):
        with pytest.raises(FormatError, match=r"count/\.zarray.*'pickle'") as info:
            opener()
        assert sync(store.session.resolved()).version in str(info.value)


# -- xarray directly, on the store -----------------------------------------------------------


def test_xarray_open_zarr_reads_the_store_directly_at_any_version(hub: hubzarr.Hub) -> None:
    ds = _dataset()
    hubzarr.to_hub(ds, NAME, root=hub.root)
    hub.tag(NAME, "v1")
    hubzarr.to_hub(_dataset(6, 2), NAME, append_dim="time", root=hub.root)
    # No consolidation warning (warnings are errors here): .zmetadata is served by the store.
    head = xr.open_zarr(hubzarr.store(NAME, root=hub.root))
    assert head.sizes["time"] == 8
    xr.testing.assert_identical(
        xr.open_zarr(hubzarr.store(f"{NAME}:v1", root=hub.root)).load(), ds.load()
    )
    xr.testing.assert_identical(
        xr.open_dataset(f"{NAME}:v1", engine="hubzarr", root=hub.root, chunks={}).load(),
        ds.load(),
    )


def test_consolidated_metadata_is_virtual_and_never_stale(hub: hubzarr.Hub) -> None:
    hubzarr.to_hub(_dataset(), NAME, group="daily", root=hub.root)
    store = hubzarr.store(NAME, mode="r+", root=hub.root)
    prototype = default_buffer_prototype()

    def metadata(key: str = ".zmetadata") -> dict[str, Any]:
        raw = store.get_sync(key, prototype=prototype)
        assert raw is not None
        return dict(json.loads(raw.to_bytes())["metadata"])

    assert "daily/pressure/.zarray" in metadata()
    assert "pressure/.zarray" in metadata("daily/.zmetadata")
    assert sync(store.exists(".zmetadata")) and sync(store.exists("daily/.zmetadata"))
    assert not sync(store.exists("daily/pressure/.zmetadata"))
    listed = sync(_list(store))
    assert ".zmetadata" in listed and "daily/.zmetadata" in listed
    # A variable written by zarr alone shows at once; writing .zmetadata stores nothing.
    zarr.create_array(store, name="daily/extra", shape=(2,), dtype="int8", zarr_format=2)
    assert "daily/extra/.zarray" in metadata()
    zarr.consolidate_metadata(store, zarr_format=2)
    assert not [p for p in sync(hub.storage.list(NAME)) if p.endswith(".zmetadata")]
    assert "daily/extra/.zarray" in metadata()
    assert sync(store.getsize(".zmetadata")) == len(store.get_sync(".zmetadata").to_bytes())  # type: ignore[union-attr]
    single = hubzarr.store("lab/single", mode="w-", root=hub.root)
    zarr.create_array(single, shape=(2,), dtype="int8", zarr_format=2)
    assert store.get_sync(".zmetadata") is not None
    assert single.get_sync(".zmetadata") is None and not sync(single.exists(".zmetadata"))


async def _list(store: hubzarr.HubStore) -> list[str]:
    return [key async for key in store.list()]


def test_the_engine_is_registered_and_claims_nothing(hub: hubzarr.Hub) -> None:
    assert "hubzarr" in xr.backends.list_engines()
    assert not HubBackendEntrypoint().guess_can_open(NAME)
    assert not HubBackendEntrypoint().guess_can_open("data.zarr")
    hubzarr.to_hub(_dataset(), NAME, root=hub.root)
    lazy = xr.open_dataset(NAME, engine="hubzarr", root=hub.root)
    xr.testing.assert_identical(lazy.load(), _dataset().load())


# -- writing ---------------------------------------------------------------------------------


def test_to_hub_modes(hub: hubzarr.Hub) -> None:
    root = hub.root
    hubzarr.to_hub(_dataset(), NAME, root=root)
    hub.tag(NAME, "v1")
    hubzarr.to_hub(_dataset(6, 3), NAME, append_dim="time", root=root)  # mode "a"
    assert hubzarr.open_dataset(NAME, root=root).sizes["time"] == 9
    extra = xr.Dataset({"wind": (("site",), np.array([1.0, 2.0, 3.0]))})
    hubzarr.to_hub(extra, NAME, mode="a", root=root)
    patch = _dataset(0, 2).drop_vars(["site", "label"])[["temperature", "pressure", "count"]]
    hubzarr.to_hub(patch * 0 - 1, NAME, region={"time": slice(0, 2)}, root=root)  # mode "r+"
    now = hubzarr.open_dataset(NAME, root=root).load()
    np.testing.assert_array_equal(now.temperature.values[:2], -1)
    np.testing.assert_array_equal(now.temperature.values[2:6], _dataset().temperature.values[2:])
    np.testing.assert_array_equal(now.wind.values, [1, 2, 3])
    only = _dataset(9, 1)
    only["wind"] = (("site",), np.array([7.0, 8.0, 9.0]))
    hubzarr.to_hub(only, NAME, mode="a-", append_dim="time", root=root)
    now = hubzarr.open_dataset(NAME, root=root).load()
    assert now.sizes["time"] == 10 and list(now.wind.values) == [1, 2, 3]  # "a-": not rewritten
    hubzarr.to_hub(extra, NAME, mode="w", root=root)
    assert set(hubzarr.open_dataset(NAME, root=root).variables) == {"wind"}
    xr.testing.assert_identical(
        hubzarr.open_dataset(f"{NAME}:v1", root=root).load(), _dataset().load()
    )
    assert hub.verify(NAME).ok


def test_to_hub_creates_with_w_and_a_too(hub: hubzarr.Hub) -> None:
    hubzarr.to_hub(_dataset(), "lab/w", mode="w", root=hub.root)
    hubzarr.to_hub(_dataset(), "lab/a:dev", mode="a", root=hub.root)
    assert [e.refs for e in hub.log("lab/a")] == [("dev",)]
    for name in ("lab/w", "lab/a:dev"):
        xr.testing.assert_identical(
            hubzarr.open_dataset(name, root=hub.root).load(), _dataset().load()
        )


def test_new_variables_get_hubzarrs_compressor_and_chunks(hub: hubzarr.Hub) -> None:
    ds = xr.Dataset(
        {
            "big": (("t", "y", "x"), np.zeros((40, 256, 256), dtype="float32")),
            "chosen": (("t",), np.zeros(40)),
            "lazy": (("t",), da.zeros(40, chunks=10)),
        }
    )
    zstd = numcodecs.Zstd(level=3)
    hubzarr.to_hub(ds, NAME, root=hub.root, encoding={"chosen": {"compressors": zstd}})
    group = hub.load(NAME)
    assert isinstance(group, hubzarr.HubGroup)
    meta = {k: a.zarr.metadata.to_dict() for k, a in group.arrays()}
    assert meta["big"]["compressor"] == DEFAULT_COMPRESSOR.get_config()
    assert meta["lazy"]["compressor"] == DEFAULT_COMPRESSOR.get_config()
    assert meta["chosen"]["compressor"]["id"] == "zstd"
    assert tuple(meta["big"]["chunks"]) == default_chunks((40, 256, 256), np.dtype("float32"))
    assert tuple(meta["lazy"]["chunks"]) == (10,)  # a dask variable keeps its chunks


def test_a_dask_dataset_is_computed_in_parallel_through_the_store(hub: hubzarr.Hub) -> None:
    data = da.random.default_rng(0).random((64, 32), chunks=(4, 32)).astype("float32")
    ds = xr.Dataset({"v": (("t", "x"), data)})
    expected = data.compute()
    with dask.config.set(scheduler="threads", num_workers=4):
        hubzarr.to_hub(ds, NAME, root=hub.root)
    written = [p for p in sync(hub.storage.list(NAME)) if "/v/" in p and ".z" not in p]
    assert len(written) == 16
    np.testing.assert_array_equal(hubzarr.open_dataset(NAME, root=hub.root).v.values, expected)


def test_writing_at_a_tag_or_version_is_refused_and_changes_nothing(hub: hubzarr.Hub) -> None:
    hubzarr.to_hub(_dataset(), NAME, root=hub.root)
    version = hub.tag(NAME, "v1")
    before = _snapshot(hub)
    for ref in ("v1", version):
        for mode in ("w", "a"):
            with pytest.raises(ReadOnlyError, match="Branch from it"):
                hubzarr.to_hub(_dataset(), f"{NAME}:{ref}", mode=mode, root=hub.root)
    with pytest.raises(AlreadyExistsError, match="mode='w'") as info:
        hubzarr.to_hub(_dataset(), NAME, root=hub.root)
    assert isinstance(info.value, FileExistsError)
    with pytest.raises(NotFoundError):
        hubzarr.to_hub(_dataset(), "lab/missing", mode="r+", root=hub.root)
    with pytest.raises(NotFoundError):
        hubzarr.to_hub(_dataset(), f"{NAME}:nope", mode="a", root=hub.root)
    assert _snapshot(hub) == before


def _misaligned(ds: xr.Dataset) -> xr.Dataset:
    out = ds.copy()
    out["zlast"] = (("time",), da.from_array(np.arange(6.0), chunks=(1, 5)))
    return out


REFUSED: dict[str, tuple[Callable[[], xr.Dataset], dict[str, Any], type[Exception], str]] = {
    "append with other dimensions": (
        lambda: xr.Dataset({"temperature": (("time", "other"), np.zeros((2, 5)))}),
        {"append_dim": "time"},
        ValueError,
        "different dimension names",
    ),
    "append along a missing dimension": (
        lambda: _dataset(6, 2),
        {"append_dim": "depth"},
        ValueError,
        "does not match any existing",
    ),
    "append of another dtype": (
        lambda: _dataset(6, 2).assign(count=(("time",), np.array(["a", "b"]))),
        {"append_dim": "time"},
        ValueError,
        "count",
    ),
    "encoding for an existing variable": (
        _dataset,
        {"mode": "a", "encoding": {"temperature": {"chunks": (1, 3)}}},
        ValueError,
        "already exists, but encoding",
    ),
    "a bad encoding after a good new variable": (
        lambda: xr.Dataset({"aaa": ("n", np.zeros(2)), "zzz": ("n", np.zeros(2))}),
        {"mode": "a", "encoding": {"zzz": {"bogus": 1}}},
        ValueError,
        "unexpected encoding",
    ),
    "misaligned dask chunks after a good new variable": (
        lambda: _misaligned(xr.Dataset({"aaa": ("time", np.zeros(6))})),
        {"mode": "a", "encoding": {"zlast": {"chunks": (2,)}}},
        ValueError,
        "overlap multiple Dask chunks",
    ),
    "a new variable in mode r+": (
        lambda: xr.Dataset({"new": (("time",), np.zeros(2))}),
        {"region": {"time": slice(0, 2)}},
        ValueError,
        "non-pre-existing",
    ),
    "mode w with a bad encoding": (
        _dataset,
        {"mode": "w", "encoding": {"count": {"bogus": 1}}},
        ValueError,
        "unexpected encoding",
    ),
    "an unknown mode": (_dataset, {"mode": "x"}, InvalidArgumentError, "mode must be"),
    "compute chosen by the caller": (
        _dataset,
        {"mode": "a", "compute": False},
        InvalidArgumentError,
        "sets compute",
    ),
    "a pickling compressor": (
        lambda: xr.Dataset({"new": ("n", np.zeros(2))}),
        {"mode": "a", "encoding": {"new": {"compressors": numcodecs.Pickle()}}},
        InvalidArgumentError,
        "pickle",
    ),
    "not a dataset": (lambda: _dataset().temperature, {"mode": "a"}, InvalidArgumentError, "Data"),
}


@pytest.mark.parametrize(("make", "kwargs", "error", "match"), REFUSED.values(), ids=REFUSED)
def test_a_dataset_that_does_not_fit_is_refused_and_nothing_changes(
    hub: hubzarr.Hub,
    make: Callable[[], xr.Dataset],
    kwargs: dict[str, Any],
    error: type[Exception],
    match: str,
) -> None:
    hubzarr.to_hub(_dataset(), NAME, root=hub.root)
    before = _snapshot(hub)
    with pytest.raises(error, match=match):
        hubzarr.to_hub(make(), NAME, root=hub.root, **kwargs)
    assert _snapshot(hub) == before
    xr.testing.assert_identical(hubzarr.open_dataset(NAME, root=hub.root).load(), _dataset().load())


def test_a_refused_new_repository_is_not_created(hub: hubzarr.Hub) -> None:
    with pytest.raises(ValueError, match="unexpected encoding"):
        hubzarr.to_hub(_dataset(), NAME, root=hub.root, encoding={"count": {"bogus": 1}})
    with pytest.raises(ValueError, match="does not match any existing"):
        hubzarr.to_hub(_dataset(), NAME, root=hub.root, append_dim="time")
    assert hub.ls() == [] and _snapshot(hub) == {}


# -- on S3 -----------------------------------------------------------------------------------


def test_datasets_on_local_and_s3(local_or_s3: Backend) -> None:
    options = local_or_s3.options
    kwargs: dict[str, Any] = {"root": local_or_s3.root, "storage_options": options}
    hubzarr.to_hub(_dataset(), NAME, **kwargs)
    local_or_s3.hub().tag(NAME, "v1")
    hubzarr.to_hub(_dataset(6, 2), NAME, append_dim="time", **kwargs)
    then = hubzarr.open_dataset(f"{NAME}:v1", **kwargs)
    assert _from_hub(then.pressure)
    xr.testing.assert_identical(then.load(), _dataset().load())
    store = hubzarr.HubStore(local_or_s3.root, NAME, storage_options=options, read_only=True)
    assert xr.open_zarr(store).sizes["time"] == 8
    engine = xr.open_dataset(f"{NAME}:v1", engine="hubzarr", chunks={}, **kwargs)
    xr.testing.assert_identical(engine.load(), _dataset().load())
    assert local_or_s3.hub().verify(NAME).ok
