"""hubzarr's own dask graphs: reads of selections, one-pass reductions, bulk writes."""

from __future__ import annotations

import pickle
from typing import Any

import dask
import dask.array as da
import numcodecs
import numpy as np
import pytest
import zarr
from conftest import Backend
from counting import CountingStorage, counting_hub

import hubzarr
from hubzarr import bulk
from hubzarr.records import split_generation
from hubzarr.stores import HubStore


def _filled(hub: hubzarr.Hub, name: str = "bulk/a", **kwargs: Any) -> tuple[Any, np.ndarray]:
    """A (23, 17, 5) float32 array in (4, 6, 5) chunks, some chunks never written."""
    kwargs.setdefault("chunks", (4, 6, 5))
    kwargs.setdefault("fill_value", -1.5)
    arr = hub.array((23, 17, 5), name, dtype="float32", **kwargs)
    rng = np.random.default_rng(3)
    expected = np.full((23, 17, 5), kwargs["fill_value"], dtype="float32")
    values = rng.normal(10, 3, size=(15, 17, 5)).astype("float32")
    arr[:15] = values
    expected[:15] = values
    arr[20, 3] = 7.0
    expected[20, 3] = 7.0
    return arr, expected


SELECTIONS = [
    (Ellipsis,),
    (slice(2, 19), slice(None), 1),
    (slice(None, None, -1),),
    (slice(20, 1, -3), slice(1, 16, 4), slice(None, None, 2)),
    (3,),
    (22, 16, 4),
    (slice(5, 5),),
    (Ellipsis, slice(-2, None)),
]


@pytest.mark.parametrize("index", SELECTIONS)
def test_a_lazy_selection_reads_what_numpy_would(hub: hubzarr.Hub, index: tuple[Any, ...]) -> None:
    arr, expected = _filled(hub)
    lazy = arr.lazy[index]
    want = expected[index]
    assert lazy.shape == want.shape and lazy.dtype == want.dtype
    got = lazy.dask.compute()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(lazy.compute(), want)
    np.testing.assert_array_equal(np.asarray(lazy), want)


@pytest.mark.parametrize("index", SELECTIONS)
def test_numpy_reads_of_many_chunks_take_hubzarrs_own_path(
    hub: hubzarr.Hub, index: tuple[Any, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, expected = _filled(hub)
    arr = hub.load_array("bulk/a")
    through_zarr: list[str] = []
    get = HubStore.get

    async def counted(self: HubStore, key: str, *args: Any, **kwargs: Any) -> Any:
        through_zarr.append(key)
        return await get(self, key, *args, **kwargs)

    monkeypatch.setattr(HubStore, "get", counted)
    np.testing.assert_array_equal(arr[index], expected[index])
    chunks = [k for k in through_zarr if not k.rpartition("/")[2].startswith(".")]
    # One chunk: zarr's path; more: hubzarr's (and none at all: nothing read).
    assert (chunks != []) == (index == (22, 16, 4))


def test_lazy_selections_compose(hub: hubzarr.Hub) -> None:
    arr, expected = _filled(hub)
    lazy = arr.lazy[::-2, 3:][1:7, ::3, 2]
    np.testing.assert_array_equal(lazy.dask.compute(), expected[::-2, 3:][1:7, ::3, 2])


def test_blocks_hold_whole_chunks_and_small_chunks_are_merged(
    hub: hubzarr.Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    arr, expected = _filled(hub)
    assert arr.dask.chunks == ((23,), (17,), (5,))  # all of it is far below a block
    monkeypatch.setattr(bulk, "BLOCK_BYTES", 4 * 17 * 5 * 4 * 2)  # two chunk rows
    view = arr.dask
    assert view.chunks == ((8, 8, 7), (17,), (5,))
    np.testing.assert_array_equal(view.compute(), expected)
    shifted = arr.lazy[3:].dask  # the first block runs to the first chunk edge
    assert shifted.chunks[0] == (5, 8, 7)
    np.testing.assert_array_equal(shifted.compute(), expected[3:])


def _chunks_read(counter: CountingStorage) -> list[str]:
    """The chunk keys whose objects were read through ``counter`` (any generation)."""
    names = {
        path.split("/data/", 1)[1].split("/", 1)[1]
        for op, path in counter.paths
        if "/data/" in path and op == "read"
    }
    return sorted({split_generation(name)[0] for name in names})


def test_only_the_chunks_a_selection_touches_are_read(hub: hubzarr.Hub) -> None:
    _, expected = _filled(hub)
    counted, counter = counting_hub(hub.root)
    arr = counted.load("bulk/a")
    counter.reset()
    np.testing.assert_array_equal(arr.lazy[5:9, 7].dask.compute(), expected[5:9, 7])
    assert _chunks_read(counter) == ["1.1.0", "2.1.0"]
    counter.reset()
    assert arr.lazy[13:17:3, 12:].sum() == pytest.approx(float(expected[13:17:3, 12:].sum()))
    assert _chunks_read(counter) == ["3.2.0", "4.2.0"]


def test_graphs_at_a_tag_keep_reading_the_tag(hub: hubzarr.Hub) -> None:
    arr, expected = _filled(hub)
    hub.tag("bulk/a", "v1")
    tagged = hub.load("bulk/a:v1")
    view = tagged.dask
    arr[:] = 0.0
    np.testing.assert_array_equal(view.compute(), expected)
    assert tagged.mean() == pytest.approx(expected.mean(dtype="float64"))
    assert hub.load("bulk/a").max() == 0.0


@pytest.mark.parametrize(
    ("compressor", "filters", "order"),
    [
        (numcodecs.Zstd(level=1), None, "C"),
        (None, None, "C"),
        (numcodecs.Blosc(cname="zstd"), [numcodecs.Delta(dtype="<f8")], "C"),
        (numcodecs.Blosc(), None, "F"),
    ],
    ids=["zstd", "raw", "delta-filter", "fortran"],
)
def test_every_codec_layout_decodes(
    local_root: str, compressor: Any, filters: Any, order: str
) -> None:
    """Arrays written by zarr itself with other codecs, filters and memory orders."""
    store = hubzarr.store("bulk/z", mode="w-", root=local_root).with_read_only(False)
    z = zarr.create_array(
        store,
        shape=(9, 11),
        chunks=(4, 4),
        dtype="float64",
        zarr_format=2,
        compressors=compressor,
        filters=filters,
        order=order,
        fill_value=3.0,
    )
    data = np.arange(99, dtype="float64").reshape(9, 11) ** 1.5
    z[:, :9] = data[:, :9]
    expected = data.copy()
    expected[:, 9:] = 3.0
    arr = hubzarr.load("bulk/z", root=local_root)
    np.testing.assert_array_equal(arr.dask.compute(), expected)
    np.testing.assert_array_equal(arr.lazy[7:1:-2, 3::3].dask.compute(), expected[7:1:-2, 3::3])
    np.testing.assert_array_equal(arr[7:1:-2, 3::3], expected[7:1:-2, 3::3])
    np.testing.assert_array_equal(arr[:], expected)
    assert arr.std() == pytest.approx(expected.std(), rel=1e-12)


def test_a_corrupt_chunk_is_reported_by_key(local_root: str) -> None:
    hub = hubzarr.Hub(local_root)
    arr = hub.array((8,), "bulk/c", dtype="float32", chunks=(4,))
    arr[:] = np.arange(8)
    store = hub.store("bulk/c")
    head = store.session.pinned
    assert head is not None
    # Replace one chunk with a valid object whose payload is not a chunk of 4 float32.
    bad = numcodecs.Blosc().encode(np.arange(3, dtype="float32"))
    zarr.core.sync.sync(hub.store("bulk/c", mode="r+").session.write("1", bad))
    with pytest.raises(hubzarr.CorruptChunkError, match="'1'"):
        arr.dask.compute()
    with pytest.raises(hubzarr.CorruptChunkError, match="'1'"):
        arr.mean()
    with pytest.raises(hubzarr.CorruptChunkError, match="'1'"):
        arr[:]


def test_a_corrupt_chunk_in_a_read_of_many_chunks_on_s3_stops_it_and_names_it(
    s3_backend: Backend,
) -> None:
    hub = s3_backend.hub()
    arr = hub.array((64, 4), "bulk/many", dtype="float32", chunks=(1, 4))
    arr[:] = np.arange(256, dtype="float32").reshape(64, 4)
    bad = numcodecs.Blosc().encode(np.arange(3, dtype="float32"))
    zarr.core.sync.sync(hub.store("bulk/many", mode="r+").session.write("37.0", bad))
    with pytest.raises(hubzarr.CorruptChunkError, match=r"'37\.0'"):
        arr[:]
    # The reads started beside it were let go: the next read, of other chunks, works.
    np.testing.assert_array_equal(arr[:37], np.arange(148, dtype="float32").reshape(37, 4))


# -- reductions ----------------------------------------------------------------------------


def test_reductions_equal_numpy_on_arrays_and_selections(hub: hubzarr.Hub) -> None:
    arr, expected = _filled(hub)
    for index in [(Ellipsis,), (slice(3, 21, 2), slice(None, None, -5)), (4, slice(2, 9))]:
        lazy, want = arr.lazy[index], expected[index].astype("float64")
        assert lazy.mean() == pytest.approx(want.mean(), rel=1e-12)
        assert lazy.sum() == pytest.approx(want.sum(), rel=1e-12)
        assert lazy.var() == pytest.approx(want.var(), rel=1e-10)
        assert lazy.std(ddof=1) == pytest.approx(want.std(ddof=1), rel=1e-10)
        assert lazy.min() == want.min() and lazy.max() == want.max()
        counts, edges = lazy.histogram(9)
        np.testing.assert_array_equal(counts, np.histogram(expected[index], 9)[0])
        np.testing.assert_array_equal(edges, np.histogram(expected[index], 9)[1])
    assert arr.mean() == pytest.approx(expected.mean(dtype="float64"), rel=1e-12)
    assert isinstance(arr.mean(), np.float64)
    assert isinstance(arr.max(), np.float32)


def test_histogram_with_range_and_edges(hub: hubzarr.Hub) -> None:
    arr, expected = _filled(hub)
    counts, edges = arr.histogram(5, range=(0.0, 20.0))
    want = np.histogram(expected, 5, range=(0.0, 20.0))
    np.testing.assert_array_equal(counts, want[0])
    np.testing.assert_array_equal(edges, want[1])
    counts, edges = arr.histogram([-2.0, 0.0, 7.0, 7.5, 30.0])
    np.testing.assert_array_equal(counts, np.histogram(expected, [-2.0, 0.0, 7.0, 7.5, 30.0])[0])


def test_moments_are_stable_far_from_zero(memory_root: str) -> None:
    """A large mean and a small spread: float32 sums or E[x^2] - E[x]^2 would lose it all."""
    arr = hubzarr.Hub(memory_root).array((200_000,), "bulk/far", dtype="float32", chunks=(8192,))
    values = (1e5 + np.random.default_rng(5).normal(0, 0.5, 200_000)).astype("float32")
    arr[:] = values
    exact = values.astype("float64")
    assert arr.mean() == pytest.approx(exact.mean(), rel=1e-13)
    assert arr.std() == pytest.approx(exact.std(), rel=1e-9)


def test_integer_and_bool_reductions_are_exact(memory_root: str) -> None:
    hub = hubzarr.Hub(memory_root)
    ints = hub.array((10,), "bulk/ints", dtype="int64", chunks=(3,))
    ints[:4] = [2**62, 2**62, 5, -1]
    assert ints.sum() == 2**63 + 4  # beyond int64: exact, as a Python int
    assert ints.lazy[2:].sum() == 4 and isinstance(ints.lazy[2:].sum(), np.int64)
    flags = hub.array((7,), "bulk/flags", dtype="bool", chunks=(2,), fill_value=False)
    flags[1:4] = True
    assert flags.sum() == 3 and flags.mean() == pytest.approx(3 / 7)
    assert flags.max() is np.True_ and flags.lazy[4:].max() is np.False_  # numpy bools


def test_nan_propagates_as_in_numpy(memory_root: str) -> None:
    arr = hubzarr.Hub(memory_root).array((6,), "bulk/nan", dtype="float64", chunks=(2,))
    arr[:] = [1.0, np.nan, 2.0, 3.0, 4.0, 5.0]
    assert np.isnan(arr.mean()) and np.isnan(arr.std()) and np.isnan(arr.max())
    assert arr.lazy[2:].mean() == pytest.approx(3.5)
    with pytest.raises(hubzarr.InvalidArgumentError, match="range="):
        arr.histogram(3)
    counts = arr.histogram(2, range=(0, 4))[0]  # NaN falls in no bin
    np.testing.assert_array_equal(counts, np.histogram(arr[:], 2, range=(0, 4))[0])


def test_empty_selections(memory_root: str) -> None:
    arr = hubzarr.Hub(memory_root).array((6,), "bulk/empty", dtype="float64", chunks=(2,))
    empty = arr.lazy[3:3]
    assert empty.sum() == 0.0 and np.isnan(empty.mean()) and np.isnan(empty.std())
    with pytest.raises(hubzarr.InvalidArgumentError, match="empty"):
        empty.min()


def test_bad_reduction_arguments_are_refused(memory_root: str) -> None:
    arr = hubzarr.Hub(memory_root).array((6,), "bulk/bad", dtype="float64", chunks=(2,))
    for bins in (0, [1.0], [[0.0, 1.0]], [2.0, 1.0], "ten"):
        with pytest.raises(hubzarr.InvalidArgumentError):
            arr.histogram(bins)
    with pytest.raises(hubzarr.InvalidArgumentError):
        arr.histogram(3, range=(2.0, 1.0))
    with pytest.raises(hubzarr.InvalidIndexError):
        arr.lazy[7]
    cplx = hubzarr.Hub(memory_root).array((4,), "bulk/cplx", dtype="complex64", chunks=(2,))
    cplx[:] = [1 + 1j, 2, 3j, -1]
    assert cplx.mean() == pytest.approx(np.mean([1 + 1j, 2, 3j, -1]))
    assert cplx.var() == pytest.approx(np.var(np.array([1 + 1j, 2, 3j, -1])))
    with pytest.raises(hubzarr.InvalidArgumentError, match="complex"):
        cplx.max()


BAD_REDUCTIONS: dict[str, Any] = {
    "var ddof a string": lambda a: a.var(ddof="1"),
    "std ddof a string": lambda a: a.std(ddof="1"),
    "var ddof a bool": lambda a: a.var(ddof=True),
    "std ddof negative": lambda a: a.std(ddof=-1),
    "var ddof a float": lambda a: a.var(ddof=1.0),
    "sum progress a string": lambda a: a.sum(progress="yes"),
    "mean progress 1": lambda a: a.mean(progress=1),
    "var progress None": lambda a: a.var(progress=None),
    "min progress a string": lambda a: a.min(progress="no"),
    "max progress 0": lambda a: a.max(progress=0),
    "histogram progress a string": lambda a: a.histogram(3, range=(0, 1), progress="x"),
    "histogram bins a float": lambda a: a.histogram(2.5),
    "histogram bins a bool": lambda a: a.histogram(True),
    "histogram bins strings": lambda a: a.histogram(["0", "1"]),
    "histogram bins bools": lambda a: a.histogram([False, True]),
    "histogram bins None": lambda a: a.histogram(None),
    "histogram range strings": lambda a: a.histogram(3, range=("0", "1")),
    "histogram range of three": lambda a: a.histogram(3, range=(0, 1, 2)),
    "histogram range a number": lambda a: a.histogram(3, range=5),
    "histogram range of bools": lambda a: a.histogram(3, range=(False, True)),
    "histogram range infinite": lambda a: a.histogram(3, range=(0, float("inf"))),
}


@pytest.mark.parametrize("call", BAD_REDUCTIONS.values(), ids=BAD_REDUCTIONS.keys())
@pytest.mark.parametrize("whole", [True, False], ids=["array", "selection"])
def test_bad_reduction_arguments_are_refused_before_reading(
    memory_root: str, call: Any, whole: bool
) -> None:
    hub, counter = counting_hub(memory_root)
    arr, _ = _filled(hub)
    target = hub.load("bulk/a") if whole else arr.lazy[2:9, ::2]
    counter.reset()
    with pytest.raises(hubzarr.InvalidArgumentError):
        call(target)
    assert _chunks_read(counter) == []


def test_good_reduction_arguments_of_numpy_types_are_accepted(memory_root: str) -> None:
    arr, expected = _filled(hubzarr.Hub(memory_root))
    assert arr.var(ddof=np.int64(1)) == pytest.approx(expected.var(ddof=1, dtype="float64"))
    assert arr.std(ddof=2, progress=np.False_) == pytest.approx(
        expected.std(ddof=2, dtype="float64")
    )
    edges = np.array([-2.0, 0.0, 10.0, 30.0], dtype="float32")
    counts, _ = arr.histogram(edges, range=[np.float32(0), 1])
    np.testing.assert_array_equal(counts, np.histogram(expected, bins=edges)[0])
    counts, cuts = arr.histogram(np.int8(4), range=(np.float64(-2), 20))
    np.testing.assert_array_equal(counts, np.histogram(expected, bins=4, range=(-2, 20))[0])
    assert cuts[0] == -2 and cuts[-1] == 20


def test_a_progress_bar_on_request(hub: hubzarr.Hub, capsys: pytest.CaptureFixture[str]) -> None:
    arr, expected = _filled(hub)
    assert arr.mean() == pytest.approx(expected.mean(dtype="float64"))
    assert "100%" not in capsys.readouterr().err
    assert arr.std(progress=True) == pytest.approx(expected.std(dtype="float64"), rel=1e-9)
    assert "100%" in capsys.readouterr().err


# -- bulk writes ---------------------------------------------------------------------------


def test_from_numpy_and_from_dask(hub: hubzarr.Hub) -> None:
    data = np.random.default_rng(1).normal(size=(30, 20)).astype("float32")
    data[10:20] = 0.0  # chunks of fill values are not stored in a new array
    arr = hubzarr.from_numpy(data, "bulk/np", chunks=(5, 20), root=hub.root)
    assert arr.chunks == (5, 20) and arr.dtype == np.float32
    np.testing.assert_array_equal(arr[:], data)
    stored = set(zarr.core.sync.sync(_keys(hub.store("bulk/np"))))
    assert {"0.0", "1.0", "4.0", "5.0"} <= stored and not {"2.0", "3.0"} & stored
    darr = da.from_array(data, chunks=(7, 6)) * 2
    other = hubzarr.from_dask(darr, "bulk/da", chunks=(4, 8), root=hub.root)
    np.testing.assert_array_equal(other[:], data * 2)
    with pytest.raises(hubzarr.AlreadyExistsError):
        hubzarr.from_dask(darr, "bulk/da", root=hub.root)
    np.testing.assert_array_equal(other[:], data * 2)


async def _keys(store: HubStore) -> list[str]:
    return [k async for k in store.list()]


def test_assigning_a_dask_array_to_an_unaligned_region(hub: hubzarr.Hub) -> None:
    arr, expected = _filled(hub)
    value = da.arange(13 * 9 * 5, chunks=100, dtype="float32").reshape(13, 9, 5)
    arr[3:16, 2:11] = value
    expected[3:16, 2:11] = value.compute()
    np.testing.assert_array_equal(arr[:], expected)
    arr[7] = da.full((17, 5), 4.0, dtype="float32", chunks=3)  # an integer index
    expected[7] = 4.0
    arr[:, 5:9, 0] = da.ones(4, dtype="float16", chunks=2)  # broadcast, safe cast
    expected[:, 5:9, 0] = 1.0
    np.testing.assert_array_equal(arr[:], expected)


def test_bad_dask_assignments_change_nothing(hub: hubzarr.Hub) -> None:
    arr, expected = _filled(hub)
    with pytest.raises(hubzarr.UnsafeCastError, match="astype"):
        arr[0:2] = da.zeros((2, 17, 5), dtype="float64", chunks=1)
    with pytest.raises(hubzarr.InvalidArgumentError, match="broadcast"):
        arr[0:2] = da.zeros((3, 17, 5), dtype="float32", chunks=1)
    with pytest.raises(hubzarr.InvalidIndexError, match="step-1"):
        arr[::2] = da.zeros((12, 17, 5), dtype="float32", chunks=4)
    hub.tag("bulk/a", "v1")
    with pytest.raises(hubzarr.ReadOnlyError):
        hub.load("bulk/a:v1")[0:2] = da.zeros((2, 17, 5), dtype="float32", chunks=1)
    np.testing.assert_array_equal(arr[:], expected)


def test_a_bulk_write_from_a_stale_handle_lands_in_the_new_head(hub: hubzarr.Hub) -> None:
    _, expected = _filled(hub)
    stale = hub.load("bulk/a")
    stale[0, 0, 0] = 1.0  # opened at the current head
    expected[0, 0, 0] = 1.0
    hub.tag("bulk/a", "v1")  # seals that head; writes must go to its successor
    stale[0:8] = da.zeros((8, 17, 5), dtype="float32", chunks=4)
    np.testing.assert_array_equal(hub.load("bulk/a:v1")[:], expected)
    expected[0:8] = 0.0
    np.testing.assert_array_equal(hub.load("bulk/a")[:], expected)


def test_bulk_writes_on_s3(local_or_s3: Backend) -> None:
    hub = local_or_s3.hub()
    data = np.arange(40 * 12, dtype="int32").reshape(40, 12)
    arr = hub.array((40, 12), "bulk/s3", dtype="int32", chunks=(8, 5))
    arr[2:37, 1:11] = da.from_array(data[2:37, 1:11], chunks=(9, 4))
    expected = np.zeros_like(data)
    expected[2:37, 1:11] = data[2:37, 1:11]
    np.testing.assert_array_equal(arr.dask.compute(), expected)
    assert arr.sum() == expected.sum()
    assert arr.lazy[5:30:3, ::-2].std() == pytest.approx(expected[5:30:3, ::-2].std())


def test_graphs_pickle_without_secrets(s3_backend: Backend) -> None:
    hub = s3_backend.hub()
    arr = hub.array((8,), "bulk/secret", dtype="float32", chunks=(4,))
    arr[:] = 1.0
    graph = dict(arr.dask.__dask_graph__())
    payload = pickle.dumps(graph)
    assert s3_backend.options["secret"].encode() not in payload
    assert s3_backend.options["key"].encode() not in payload
    writes = dask.delayed(bulk._Writer(arr, arr.layout))
    assert s3_backend.options["secret"].encode() not in pickle.dumps(writes)


def test_a_read_at_a_branch_head_is_one_request_per_chunk_and_sees_other_writers(
    s3_backend: Backend,
) -> None:
    hub = s3_backend.hub()
    arr = hub.array((40, 10), "bulk/head", chunks=(1, 10), dtype="int32")
    expected = np.arange(400, dtype="int32").reshape(40, 10)
    arr[:] = expected
    hub.tag("bulk/head", "v1")  # the head is empty now: every chunk lies in the tag's version
    reader = hub.load_array("bulk/head")
    np.testing.assert_array_equal(reader[:], expected)
    writer = s3_backend.hub().load_array("bulk/head")  # another handle (another process, too)
    writer[3] = -1
    writer[7] = -2
    expected[3], expected[7] = -1, -2
    server = s3_backend.server
    assert server is not None
    server.reset()
    np.testing.assert_array_equal(reader[:], expected)  # the writes returned before the read
    data = [r for r in server.requests if r.method == "GET" and "/data/" in r.path]
    assert len(data) == 40  # one per chunk: the head's two from the head, the rest inherited
    assert len(server.requests) <= 40 + 3  # and a listing, a seal check
