"""The array facade: spec validation, safe casts, numpy-equal basic indexing, attributes,
reductions and dask, pickling, default chunks, huge arrays, and the versioning story."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
import textwrap
import tracemalloc
from typing import Any

import dask.array as da
import numcodecs
import numpy as np
import pytest
import zarr
from counting import counting_hub
from hypothesis import given, settings
from hypothesis import strategies as st
from zarr.core.sync import sync

import hubzarr
from hubzarr.spec import MAX_CHUNK_BYTES, check_chunks, default_chunks

SHAPE = (5, 6, 7)
CHUNKS = (2, 4, 3)  # uneven: every axis has a partial last chunk
BASE = np.arange(math.prod(SHAPE), dtype="int32").reshape(SHAPE)


def _listing(hub: hubzarr.Hub, prefix: str = "") -> dict[str, int]:
    """Every object under the hub root (or a prefix), with its size."""
    return sync(hub.storage.list(prefix))


def _existing(hub: hubzarr.Hub, name: str = "spec/existing") -> hubzarr.HubArray:
    arr = hub.array((6, 4), name, dtype="int32", chunks=(4, 4))
    arr[:] = np.arange(24).reshape(6, 4)
    return arr


# -- bad specs ---------------------------------------------------------------------------

BAD_SPECS: list[tuple[dict[str, Any], type[Exception]]] = [
    ({"shape": (-1,)}, hubzarr.InvalidArgumentError),
    ({"shape": (0,)}, hubzarr.InvalidArgumentError),
    ({"shape": (4, 0)}, hubzarr.InvalidArgumentError),
    ({"shape": (2.5,)}, hubzarr.InvalidArgumentError),
    ({"shape": (True,)}, hubzarr.InvalidArgumentError),
    ({"shape": "10"}, hubzarr.InvalidArgumentError),
    ({"shape": None}, hubzarr.InvalidArgumentError),
    ({"chunks": (0,)}, hubzarr.InvalidArgumentError),
    ({"chunks": (-1,)}, hubzarr.InvalidArgumentError),
    ({"chunks": (1.5,)}, hubzarr.InvalidArgumentError),
    ({"chunks": (True,)}, hubzarr.InvalidArgumentError),
    ({"chunks": (2, 2)}, hubzarr.InvalidArgumentError),
    ({"chunks": ()}, hubzarr.InvalidArgumentError),
    (
        {"shape": (10**6, 10**6), "dtype": "float64", "chunks": (20000, 20000)},
        hubzarr.InvalidArgumentError,
    ),
    ({"dtype": "object"}, hubzarr.InvalidArgumentError),
    ({"dtype": "U10"}, hubzarr.InvalidArgumentError),
    ({"dtype": [("a", "int32"), ("b", "float64")]}, hubzarr.InvalidArgumentError),
    ({"dtype": "nonsense"}, hubzarr.InvalidArgumentError),
    ({"dtype": "datetime64[s]"}, hubzarr.InvalidArgumentError),
    # numpy's extended precision: no zarr (format 2) dtype, and its bytes differ by machine.
    ({"dtype": "float128"}, hubzarr.InvalidArgumentError),
    ({"dtype": "complex256"}, hubzarr.InvalidArgumentError),
    ({"dtype": np.longdouble}, hubzarr.InvalidArgumentError),
    ({"dtype": np.dtype(np.clongdouble)}, hubzarr.InvalidArgumentError),
    ({"fill_value": None}, hubzarr.InvalidArgumentError),
    ({"dtype": "int32", "fill_value": 1.5}, hubzarr.UnsafeCastError),
    ({"dtype": "uint8", "fill_value": -1}, hubzarr.UnsafeCastError),
    ({"dtype": "int32", "fill_value": [1, 2]}, hubzarr.InvalidArgumentError),
    ({"compressor": numcodecs.Pickle()}, hubzarr.InvalidArgumentError),
    ({"compressor": "blosc"}, hubzarr.InvalidArgumentError),
]


def _spec(overrides: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {"shape": (10,), "dtype": "float32"}
    spec.update(overrides)
    return spec


@pytest.mark.parametrize(("overrides", "error"), BAD_SPECS, ids=lambda p: repr(p)[:40])
def test_a_bad_spec_is_refused_and_creates_nothing(
    hub: hubzarr.Hub, overrides: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error) as info:
        hub.array(name="spec/new", **_spec(overrides))
    assert isinstance(info.value, ValueError)
    assert hub.ls() == []
    assert _listing(hub) == {}


@pytest.mark.parametrize(("overrides", "error"), BAD_SPECS, ids=lambda p: repr(p)[:40])
def test_a_bad_spec_leaves_an_existing_repository_untouched(
    memory_root: str, overrides: dict[str, Any], error: type[Exception]
) -> None:
    hub = hubzarr.Hub(memory_root)
    arr = _existing(hub)
    before = _listing(hub)
    with pytest.raises(error):
        hub.array(name="spec/existing", overwrite=True, **_spec(overrides))
    assert _listing(hub) == before
    loaded = hub.load("spec/existing")
    assert loaded.shape == (6, 4) and loaded.dtype == np.int32
    np.testing.assert_array_equal(loaded[:], np.arange(24).reshape(6, 4))
    np.testing.assert_array_equal(arr[:], np.arange(24).reshape(6, 4))


def test_the_chunk_size_limit_is_what_check_chunks_enforces() -> None:
    dtype = np.dtype("uint8")
    assert check_chunks((MAX_CHUNK_BYTES,), (10**12,), dtype) == (MAX_CHUNK_BYTES,)
    with pytest.raises(hubzarr.InvalidArgumentError, match="MiB limit"):
        check_chunks((MAX_CHUNK_BYTES + 1,), (10**12,), dtype)
    # The whole chunk counts, also beyond the array's edge: zarr allocates all of it (a chunk
    # of 2**28 float32 for 10 elements took 1.3 GiB to write).
    with pytest.raises(hubzarr.InvalidArgumentError, match="MiB limit"):
        check_chunks((10**12,), (10,), dtype)


@pytest.mark.parametrize(
    "compressor", [None, numcodecs.Zstd(level=3), numcodecs.GZip(level=1)], ids=repr
)
def test_safe_compressors_work_and_round_trip(hub: hubzarr.Hub, compressor: Any) -> None:
    arr = hub.array((50, 3), "codec/arr", dtype="float64", chunks=(16, 3), compressor=compressor)
    data = np.linspace(0, 1, 150).reshape(50, 3)
    arr[:] = data
    loaded = hub.load("codec/arr")
    np.testing.assert_array_equal(loaded[:], data)
    expected = () if compressor is None else (compressor,)
    assert tuple(loaded.zarr.compressors) == expected


def test_the_default_compressor_is_blosc_lz4(hub: hubzarr.Hub) -> None:
    hub.array((8,), "codec/default")
    (codec,) = hub.load("codec/default").zarr.compressors
    assert isinstance(codec, numcodecs.Blosc) and codec.cname == "lz4"


def test_a_bool_array_can_be_created_with_the_default_fill_value(hub: hubzarr.Hub) -> None:
    # bool is a documented dtype and the default fill_value 0 maps exactly onto False.
    arr = hub.array((4,), "spec/flags", dtype="bool")
    np.testing.assert_array_equal(arr[:], [False] * 4)
    arr[1] = True
    np.testing.assert_array_equal(hub.load("spec/flags")[:], [False, True, False, False])


def test_a_scalar_shape_and_fill_value_are_accepted(hub: hubzarr.Hub) -> None:
    arr = hub.array(5, "spec/scalar", dtype="int16", fill_value=np.int16(-3))
    assert arr.shape == (5,)
    np.testing.assert_array_equal(arr[:], [-3] * 5)


# -- casting -----------------------------------------------------------------------------

REFUSED_CASTS: list[tuple[str, Any]] = [
    ("int32", 1.7),
    ("int32", 2**40),
    ("int32", 2.0**40),
    ("int32", -(2**31) - 1),
    ("uint8", -1),
    ("uint8", 300),
    ("uint64", -1),
    ("int64", 2**64),
    ("int16", np.nan),
    ("int16", np.inf),
    ("int16", np.array([1.0, 2.0, np.nan])),
    ("int8", np.array([1, 2, 3, 128])),  # only the last element is out of range
    ("float32", 1 + 2j),
    ("float32", np.array([1.0, 2.0], dtype="complex64")),
    ("float32", 1e39),
    ("float32", -1e39),
    ("float16", 70000.0),
    ("float32", "1.0"),
    ("float32", b"1"),
    ("float32", ["a", "b"]),
    ("float32", None),
    ("float32", np.datetime64("2020-01-01")),
    ("bool", 2),
    ("bool", np.array([0, 1, -1])),
    ("bool", np.array([0.0, 1.0])),
    # The edges of the integer range: a float just past the largest int64 (2**63 exactly) or
    # int32 (2**31 as a float32) must be refused like any other out-of-range value.
    ("int64", 2.0**63),
    ("int32", np.float32(2**31)),
    # Overflow to infinity is refused for floats; it must be for complex too.
    ("complex64", 1e39 + 0j),
]


@pytest.mark.parametrize(("dtype", "value"), REFUSED_CASTS, ids=repr)
def test_an_unsafe_cast_is_refused_and_changes_nothing(
    memory_root: str, dtype: str, value: Any
) -> None:
    hub, store_calls = counting_hub(memory_root)
    arr = hub.array((6,), "cast/arr", dtype=dtype, chunks=(4,), fill_value=np.zeros((), dtype))
    arr[:] = np.array([1, 0, 1, 1, 0, 1]).astype(dtype)
    before = arr[:]
    store_calls.reset()
    with pytest.raises(hubzarr.UnsafeCastError) as info:
        arr[:] = value
    assert isinstance(info.value, ValueError)
    with pytest.raises(hubzarr.UnsafeCastError):
        arr[2] = value if np.ndim(value) == 0 else np.asarray(value).flat[-1]
    assert not {"write", "create", "delete"} & set(store_calls.calls)
    np.testing.assert_array_equal(arr[:], before)
    np.testing.assert_array_equal(hub.load("cast/arr")[:], before)


ACCEPTED_CASTS: list[tuple[str, Any, Any]] = [
    ("int32", 2.0, [2, 2, 2, 2]),
    ("int32", np.float64(-7.0), [-7] * 4),
    ("int16", np.array([-32768, 0, 1, 32767], dtype="int64"), [-32768, 0, 1, 32767]),
    ("uint8", np.array([0, 255], dtype="int64")[[0, 1, 1, 0]], [0, 255, 255, 0]),
    ("int64", np.array([True, False, True, True]), [1, 0, 1, 1]),
    ("uint8", True, [1, 1, 1, 1]),
    ("float32", np.array([0.1, 1e38, -2.5, np.nan]), np.float32([0.1, 1e38, -2.5, np.nan])),
    ("float32", np.inf, [np.inf] * 4),
    ("float32", True, [1.0] * 4),
    ("float64", 2**53, [2.0**53] * 4),
    ("complex64", 1.5, [1.5 + 0j] * 4),
    ("bool", np.array([True, False, False, True]), [True, False, False, True]),
    ("bool", np.array([1, 0, 0, 1]), [True, False, False, True]),
]


@pytest.mark.parametrize(("dtype", "value", "expected"), ACCEPTED_CASTS, ids=repr)
def test_a_cast_that_changes_no_value_is_accepted(
    memory_root: str, dtype: str, value: Any, expected: Any
) -> None:
    hub = hubzarr.Hub(memory_root)
    arr = hub.array((4,), "cast/arr", dtype=dtype, chunks=(3,), fill_value=np.zeros((), dtype))
    arr[:] = value
    stored = hub.load("cast/arr")[:]
    assert stored.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(stored, np.asarray(expected, dtype=dtype))


# -- indexing ----------------------------------------------------------------------------


def _axis_items(size: int) -> st.SearchStrategy[Any]:
    bound = st.none() | st.integers(-size - 3, size + 3)
    step = st.sampled_from([-1, None, 2, -2, 1, -3, 4, -4])
    return st.builds(slice, bound, bound, step) | st.integers(-size, size - 1)


@st.composite
def basic_indices(draw: st.DrawFn) -> Any:
    """Ints (negative too), slices (any step sign, bounds past the ends), one Ellipsis, tuples
    shorter than the rank, or a bare item."""
    items = [draw(_axis_items(size)) for size in SHAPE]
    form = draw(st.sampled_from(["prefix", "ellipsis", "bare"]))
    if form == "bare":
        return items[0]
    if form == "prefix":
        return tuple(items[: draw(st.sampled_from(range(len(SHAPE), -1, -1)))])
    start = draw(st.integers(0, len(SHAPE)))
    stop = draw(st.integers(start, len(SHAPE)))
    return (*items[:start], Ellipsis, *items[stop:])


def _indexed_array(memory_root: str) -> hubzarr.HubArray:
    arr = hubzarr.Hub(memory_root).array(SHAPE, "index/arr", dtype="int32", chunks=CHUNKS)
    arr[:] = BASE
    return arr


def test_reads_equal_numpy(memory_root: str) -> None:
    arr = _indexed_array(memory_root)

    @settings(max_examples=80, deadline=None)
    @given(index=basic_indices())
    def check(index: Any) -> None:
        expected = np.asarray(BASE[index])
        np.testing.assert_array_equal(arr[index], expected, strict=True)

    check()


def test_assignments_equal_numpy(memory_root: str) -> None:
    arr = _indexed_array(memory_root)

    @settings(max_examples=60, deadline=None)
    @given(index=basic_indices(), data=st.data())
    def check(index: Any, data: st.DataObject) -> None:
        target = BASE[index].shape
        # Mostly a value of the selection's full shape; sometimes one that broadcasts.
        ranks = [len(target), len(target), *range(len(target))]
        keep = data.draw(st.sampled_from(ranks), label="value rank")
        value_shape = tuple(
            1 if data.draw(st.sampled_from([False, False, True]), label="broadcast") else n
            for n in target[len(target) - keep :]
        )
        value = -1 - np.arange(math.prod(value_shape), dtype="int32").reshape(value_shape)
        expected = BASE.copy()
        expected[index] = value
        arr[:] = BASE
        arr[index] = value
        np.testing.assert_array_equal(arr[:], expected, strict=True)

    check()


def test_reads_and_writes_with_negative_steps_and_far_bounds(memory_root: str) -> None:
    arr = _indexed_array(memory_root)
    for index in [(-1, -1, -1), (slice(None, None, -1),), (slice(100, -100, -3),), ()]:
        np.testing.assert_array_equal(arr[index], BASE[index], strict=True)
    assert arr[4:2].shape == (0, 6, 7)
    assert arr[..., 1:1].shape == (5, 6, 0)
    index = (slice(None, None, -1), slice(4, 0, -2), slice(-1, -100, -3))
    value = -np.arange(30, dtype="int32").reshape(5, 2, 3)
    expected = BASE.copy()
    expected[index] = value
    arr[index] = value
    np.testing.assert_array_equal(arr[:], expected, strict=True)
    np.testing.assert_array_equal(arr[index], value, strict=True)


BAD_INDICES: list[Any] = [
    5,
    -6,
    (0, 6),
    (0, 0, -8),
    (0, 0, 0, 0),
    (Ellipsis, 0, 0, 0, 0),
    (Ellipsis, Ellipsis),
    (0, Ellipsis, 1, Ellipsis),
    1.0,
    (0, 1.0),
    np.float64(1.0),
    [0, 1],
    True,
    np.bool_(False),
    (0, True),
    None,
    (None, 0),
    slice(None, None, 0),
    (0, slice(1, 4, 0)),
    slice(0.5, 2),
    "a",
    np.array([0, 1]),
    (slice(None), np.array([0, 1])),
]


@pytest.mark.parametrize("index", BAD_INDICES, ids=repr)
def test_an_unsupported_or_out_of_bounds_index_raises_invalid_index_error(
    memory_root: str, index: Any
) -> None:
    arr = _indexed_array(memory_root)
    with pytest.raises(hubzarr.InvalidIndexError) as info:
        arr[index]
    assert isinstance(info.value, IndexError)
    with pytest.raises(hubzarr.InvalidIndexError):
        arr[index] = 0
    np.testing.assert_array_equal(arr[:], BASE)


def test_a_value_that_does_not_broadcast_is_refused(memory_root: str) -> None:
    arr = _indexed_array(memory_root)
    for index, value in [
        (0, np.zeros((7, 6), "int32")),
        (slice(None), np.zeros((2, 6, 7), "int32")),
        ((0, 0), np.zeros(8, "int32")),
        ((0, 0, 0), np.zeros(2, "int32")),
    ]:
        with pytest.raises(hubzarr.InvalidArgumentError, match="broadcast"):
            arr[index] = value
    np.testing.assert_array_equal(arr[:], BASE)


# -- attributes --------------------------------------------------------------------------


def test_attributes(hub: hubzarr.Hub) -> None:
    arr = hub.array((10, 20, 3), "attr/arr", dtype="uint16", chunks=(4, 8, 3))
    assert arr.shape == (10, 20, 3)
    assert arr.dtype == np.dtype("uint16")
    assert arr.chunks == (4, 8, 3)
    assert arr.ndim == 3
    assert arr.size == 600
    assert arr.nbytes == 1200
    assert len(arr) == 10
    assert arr.name == "attr/arr:main"
    assert not arr.read_only
    assert isinstance(arr.zarr, zarr.Array)
    assert arr.zarr.shape == (10, 20, 3)
    text = repr(arr)
    for part in ("attr/arr", arr.version, "(10, 20, 3)", "uint16", "(4, 8, 3)"):
        assert part in text
    assert "read-only" not in text

    loaded = hub.load("attr/arr")
    assert (loaded.shape, loaded.dtype, loaded.chunks) == (arr.shape, arr.dtype, arr.chunks)
    assert loaded.name == "attr/arr"
    assert isinstance(loaded.zarr, zarr.Array)


def test_a_zero_dimensional_array_has_no_len(hub: hubzarr.Hub) -> None:
    arr = hub.array((), "attr/scalar", dtype="float64", fill_value=2.5)
    assert arr.shape == () and arr.ndim == 0 and arr.size == 1 and arr.nbytes == 8
    with pytest.raises(TypeError, match="0-d"):
        len(arr)
    assert arr[()] == 2.5
    arr[...] = 4.0
    assert hub.load("attr/scalar")[()] == 4.0


def test_version_is_the_tags_version_at_a_tag(hub: hubzarr.Hub) -> None:
    arr = _existing(hub, "attr/versioned")
    tagged = hub.tag("attr/versioned", "v1")
    at_tag = hub.load("attr/versioned:v1")
    assert at_tag.version == tagged
    assert at_tag.read_only
    text = repr(at_tag)
    assert tagged in text and "read-only" in text and "attr/versioned:v1" in text
    arr[0, 0] = 100
    assert hub.load("attr/versioned:v1").version == tagged
    assert arr.version != tagged


def test_version_at_a_branch_moves_on_when_the_head_is_tagged(hub: hubzarr.Hub) -> None:
    arr = _existing(hub, "attr/versioned")
    before = arr.version
    tagged = hub.tag("attr/versioned", "v1")
    assert tagged == before
    head = hub.log("attr/versioned")[0]
    assert not head.sealed
    # The docstring: "the head for a branch". The tagged version is sealed and no longer
    # the branch's head, so the array at the branch must not report it.
    assert arr.version == head.id
    assert tagged not in repr(arr)


def test_version_at_a_branch_follows_the_head_after_a_read(hub: hubzarr.Hub) -> None:
    arr = _existing(hub, "attr/versioned")
    tagged = hub.tag("attr/versioned", "v1")
    arr[0]
    assert arr.version == hub.log("attr/versioned")[0].id != tagged


# -- reductions and dask -----------------------------------------------------------------


def _sparse(hub: hubzarr.Hub, name: str = "calc/arr") -> tuple[hubzarr.HubArray, np.ndarray]:
    """A (10, 7) float64 array in (3, 4) chunks where most chunks were never written."""
    arr = hub.array((10, 7), name, dtype="float64", chunks=(3, 4), fill_value=-2.5)
    expected = np.full((10, 7), -2.5)
    rng = np.random.default_rng(7)
    for index in [(slice(0, 3), slice(0, 4)), (slice(9, 10), slice(4, 7)), (5, 5)]:
        value = rng.normal(size=expected[index].shape) * 10
        arr[index] = value
        expected[index] = value
    return arr, expected


def test_reductions_equal_numpy_including_unwritten_chunks(hub: hubzarr.Hub) -> None:
    arr, expected = _sparse(hub)
    written = {k.rsplit("/", 1)[-1] for k in _listing(hub, "calc/arr") if "/data/" in k}
    assert written - {".zarray", ".zattrs"} == {"0.0", "3.1", "1.1"}  # 3 of 8 chunks
    for op in ("mean", "std", "min", "max", "sum"):
        np.testing.assert_allclose(getattr(arr, op)(), getattr(expected, op)(), rtol=1e-12)


def test_integer_reductions_are_exact(memory_root: str) -> None:
    arr = hubzarr.Hub(memory_root).array((9,), "calc/ints", dtype="int64", chunks=(4,))
    arr[0:4] = [2**40, 3, -5, 7]
    data = np.array([2**40, 3, -5, 7, 0, 0, 0, 0, 0])
    assert (arr.sum(), arr.min(), arr.max()) == (data.sum(), data.min(), data.max())


def test_dask_view_has_the_arrays_data_and_chunks(hub: hubzarr.Hub) -> None:
    arr, expected = _sparse(hub)
    view = arr.dask
    assert isinstance(view, da.Array)
    assert view.dtype == arr.dtype and view.shape == arr.shape
    # Small chunks are merged into blocks of whole chunks.
    assert view.chunks == ((10,), (7,))
    np.testing.assert_array_equal(view.compute(), expected)
    np.testing.assert_array_equal(view[2:5, ::-1].compute(), expected[2:5, ::-1])


def test_dask_names_are_deterministic_at_a_tag_only(hub: hubzarr.Hub) -> None:
    arr, expected = _sparse(hub)
    assert arr.dask.name != arr.dask.name
    hub.tag("calc/arr", "v1")
    at_tag = hub.load("calc/arr:v1")
    assert at_tag.dask.name == at_tag.dask.name
    assert hub.load("calc/arr:v1").dask.name == at_tag.dask.name
    arr[:] = 0.0
    hub.tag("calc/arr", "v2")
    assert hub.load("calc/arr:v2").dask.name != at_tag.dask.name
    np.testing.assert_array_equal(at_tag.dask.compute(), expected)


# -- pickling ----------------------------------------------------------------------------


def test_an_array_round_trips_through_pickle(hub: hubzarr.Hub) -> None:
    arr, expected = _sparse(hub)
    clone = pickle.loads(pickle.dumps(arr))
    assert isinstance(clone, hubzarr.HubArray)
    assert (clone.name, clone.shape, clone.dtype, clone.chunks) == (
        arr.name,
        arr.shape,
        arr.dtype,
        arr.chunks,
    )
    np.testing.assert_array_equal(clone[:], expected)
    clone[0, 0] = 42.0  # still writable at the branch
    assert hub.load("calc/arr")[0, 0] == 42.0


def test_a_pickled_array_at_a_tag_keeps_reading_the_tag(hub: hubzarr.Hub) -> None:
    arr, expected = _sparse(hub)
    hub.tag("calc/arr", "v1")
    payload = pickle.dumps(hub.load("calc/arr:v1"))
    arr[:] = 1.0
    hub.tag("calc/arr", "v2")
    arr[0] = 3.0
    clone = pickle.loads(payload)
    np.testing.assert_array_equal(clone[:], expected)
    np.testing.assert_array_equal(clone.dask.compute(), expected)
    with pytest.raises(hubzarr.ReadOnlyError):
        clone[0, 0] = 0.0
    np.testing.assert_array_equal(hub.load("calc/arr:v1")[:], expected)


def test_a_pickled_array_at_a_tag_says_it_is_read_only_before_any_read(hub: hubzarr.Hub) -> None:
    _sparse(hub)
    hub.tag("calc/arr", "v1")
    clone = pickle.loads(pickle.dumps(hub.load("calc/arr:v1")))
    # The pickle carries the resolved (sealed) version, so nothing needs reading to know.
    assert clone.read_only
    assert "read-only" in repr(clone)


# -- default chunks ----------------------------------------------------------------------

_MIB = 2**20
DTYPES = [
    np.dtype(t)
    for t in ("bool", "int8", "uint16", "int32", "float32", "int64", "complex128", "clongdouble")
]


def test_default_chunks_give_one_image_per_chunk() -> None:
    assert default_chunks((100000, 512, 512, 3), np.dtype("uint8")) == (1, 512, 512, 3)
    assert default_chunks((10**6,), np.dtype("float32")) == (2 * _MIB // 4,)
    assert default_chunks((10,), np.dtype("float64")) == (10,)
    assert default_chunks((10, 4096, 4096), np.dtype("uint8")) == (1, 1024, 2048)
    assert default_chunks((), np.dtype("float64")) == ()


def test_the_default_chunks_of_an_image_stack_are_used(memory_root: str) -> None:
    arr = hubzarr.Hub(memory_root).array((100000, 512, 512, 3), "chunks/images", dtype="uint8")
    assert arr.chunks == (1, 512, 512, 3)


@settings(max_examples=300, deadline=None)
@given(
    shape=st.lists(st.integers(1, 10**7), min_size=1, max_size=4).map(tuple),
    dtype=st.sampled_from(DTYPES),
)
def test_default_chunks_properties(shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
    chunks = default_chunks(shape, dtype)
    assert len(chunks) == len(shape)
    assert all(type(c) is int and 1 <= c <= n for c, n in zip(chunks, shape, strict=True))
    chunk_bytes = math.prod(chunks) * dtype.itemsize
    array_bytes = math.prod(shape) * dtype.itemsize
    sample_bytes = math.prod(shape[1:]) * dtype.itemsize
    # MB-scale: at most 2 MiB, and not tiny unless the whole array is.
    assert chunk_bytes <= 2 * _MIB
    assert chunk_bytes >= min(array_bytes, _MIB // 4)
    if sample_bytes >= _MIB // 4:
        assert chunks[0] == 1  # a big sample gets a chunk (or several) of its own
        if sample_bytes > 2 * _MIB:
            assert chunk_bytes > _MIB  # split by halving: at least half the 2 MiB target
    else:
        assert chunks[1:] == shape[1:]  # small samples are grouped whole
        if chunks[0] < shape[0]:
            assert chunk_bytes + sample_bytes > 2 * _MIB  # grouped as many as fit
    assert check_chunks(chunks, shape, dtype) == chunks


# -- sizes nothing is allocated for ------------------------------------------------------


def test_a_petabyte_array_allocates_and_stores_nothing_but_metadata(hub: hubzarr.Hub) -> None:
    hub.array((2,), "warm/up")  # imports and first-use caches out of the measurement
    tracemalloc.start()
    try:
        big = hub.array((10**6, 10**6, 1000), "big/peta", dtype="uint8")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert big.nbytes == 10**15
    assert peak < 4 * _MIB
    data_keys = {k.rsplit("/", 1)[-1] for k in _listing(hub, "big/peta") if "/data/" in k}
    assert data_keys == {".zarray", ".zattrs"}

    counted, calls = counting_hub(hub.root)
    big = counted.load("big/peta")
    calls.reset()
    big[123_456, 999_999, 7] = 5
    data_writes = [p for op, p in calls.paths if op in ("write", "create") and "/data/" in p]
    assert len(data_writes) == 1
    row = 999_999 // big.chunks[1]
    after = {k.rsplit("/", 1)[-1] for k in _listing(hub, "big/peta") if "/data/" in k}
    assert after - data_keys == {f"123456.{row}.0"}
    np.testing.assert_array_equal(hub.load("big/peta")[123_456, 999_999, 5:9], [0, 0, 5, 0])


# -- writing from another process --------------------------------------------------------

_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import hubzarr

    root, step = sys.argv[1], sys.argv[2]
    if step == "create":
        arr = hubzarr.array((4, 3), "story/arr", dtype="int64", chunks=(2, 3), root=root)
        arr[:] = np.arange(12).reshape(4, 3)
    else:
        arr = hubzarr.load("story/arr", root=root)
        arr[1:3] = -1
    print(arr.version)
    """
)


def _run_writer(root: str, step: str) -> str:
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", _WRITER, root, step],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_story_across_processes(local_root: str) -> None:
    _run_writer(local_root, "create")
    hub = hubzarr.Hub(local_root)
    arr = hub.load("story/arr")
    original = np.arange(12).reshape(4, 3)
    np.testing.assert_array_equal(arr[:], original)
    tagged = hub.tag("story/arr", "v1")
    written_at = _run_writer(local_root, "write")
    assert written_at != tagged  # the other process wrote to the head after the tag
    expected = original.copy()
    expected[1:3] = -1
    np.testing.assert_array_equal(arr[:], expected)  # the reader follows the branch
    at_tag = hub.load("story/arr:v1")
    assert at_tag.version == tagged
    np.testing.assert_array_equal(at_tag[:], original)


# -- overwrite, read-only ----------------------------------------------------------------


def test_overwrite_replaces_the_branch_head_but_not_tags(hub: hubzarr.Hub) -> None:
    old = _existing(hub, "ow/arr")
    hub.tag("ow/arr", "v1")
    old[0] = 7
    new = hub.array((3, 5), "ow/arr", dtype="float64", fill_value=0.5, overwrite=True)
    assert new.shape == (3, 5) and new.dtype == np.float64
    np.testing.assert_array_equal(new[:], np.full((3, 5), 0.5))
    loaded = hub.load("ow/arr")
    assert (loaded.shape, loaded.dtype) == ((3, 5), np.float64)
    np.testing.assert_array_equal(loaded[:], np.full((3, 5), 0.5))
    at_tag = hub.load("ow/arr:v1")
    assert (at_tag.shape, at_tag.dtype) == ((6, 4), np.int32)
    np.testing.assert_array_equal(at_tag[:], np.arange(24).reshape(6, 4))
    assert hub.ls() == ["ow/arr"]


def test_overwrite_of_a_tag_is_read_only(hub: hubzarr.Hub) -> None:
    arr = _existing(hub, "ow/arr")
    hub.tag("ow/arr", "v1")
    with pytest.raises(hubzarr.ReadOnlyError) as info:
        hub.array((2,), "ow/arr:v1", dtype="int8", overwrite=True)
    assert isinstance(info.value, PermissionError)
    np.testing.assert_array_equal(hub.load("ow/arr:v1")[:], np.arange(24).reshape(6, 4))
    assert hub.load("ow/arr").shape == (6, 4)
    np.testing.assert_array_equal(hub.load("ow/arr")[:], np.arange(24).reshape(6, 4))
    np.testing.assert_array_equal(arr[:], np.arange(24).reshape(6, 4))


def test_creating_an_existing_repository_without_overwrite_fails(hub: hubzarr.Hub) -> None:
    _existing(hub, "ow/arr")
    for name in ("ow/arr", "ow/arr:main", "ow/arr:other"):
        with pytest.raises(hubzarr.AlreadyExistsError) as info:
            hub.array((2,), name, dtype="int8")
        assert isinstance(info.value, FileExistsError)
    loaded = hub.load("ow/arr")
    assert loaded.shape == (6, 4)
    np.testing.assert_array_equal(loaded[:], np.arange(24).reshape(6, 4))
    assert [e.refs for e in hub.log("ow/arr")] == [("main",)]


def test_writing_through_a_tag_is_refused_with_a_hint_to_branch(hub: hubzarr.Hub) -> None:
    _existing(hub, "ro/arr")
    hub.tag("ro/arr", "v1")
    at_tag = hub.load("ro/arr:v1")
    with pytest.raises(hubzarr.ReadOnlyError) as info:
        at_tag[0, 0] = 1
    assert isinstance(info.value, PermissionError)
    assert "hubzarr.branch('ro/arr:v1'" in str(info.value)
    np.testing.assert_array_equal(hub.load("ro/arr:v1")[:], np.arange(24).reshape(6, 4))
    # The hint works.
    hubzarr.branch("ro/arr:v1", "fix", root=hub.root)
    fixed = hub.load("ro/arr:fix")
    fixed[0, 0] = 1
    assert hub.load("ro/arr:fix")[0, 0] == 1


def test_mode_r_refuses_writes(hub: hubzarr.Hub) -> None:
    _existing(hub, "ro/arr")
    reader = hub.load("ro/arr", mode="r")
    assert reader.read_only
    with pytest.raises(hubzarr.ReadOnlyError) as info:
        reader[:] = 0
    assert isinstance(info.value, PermissionError)
    assert "mode='r+'" in str(info.value)
    np.testing.assert_array_equal(hub.load("ro/arr")[:], np.arange(24).reshape(6, 4))


@pytest.mark.parametrize("mode", ["w", "a", "w-", "", None])
def test_an_invalid_load_mode_is_refused(hub: hubzarr.Hub, mode: Any) -> None:
    _existing(hub, "ro/arr")
    with pytest.raises(hubzarr.InvalidArgumentError, match="mode"):
        hub.load("ro/arr", mode=mode)
