"""The numpy-like array facade: basic indexing, safe casts, reductions.

:class:`HubArray` wraps a ``zarr.Array`` opened on a :class:`hubzarr.stores.HubStore`. It adds
what zarr lets through: it refuses unsafe casts (``1.7`` into ``int32``, ``2**40`` into
``int32``) and unsupported indices, each with an error from :mod:`hubzarr.errors` (the rules
themselves are in :mod:`hubzarr.spec` and :mod:`hubzarr.indexing`); partial-chunk writes are a
compare-and-swap, so concurrent writers lose no update; reductions and ``.dask`` run on
hubzarr's own graphs (:mod:`hubzarr.bulk`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import zarr
from zarr.core.sync import sync

from hubzarr.bulk import LazyArray, assign, check_chunks_decode, check_histogram, read_selection
from hubzarr.chunks import Layout
from hubzarr.errors import ConflictError, HubError, InvalidArgumentError
from hubzarr.indexing import Shaped, normalize_index
from hubzarr.metadata import open_zarr_array
from hubzarr.retry import CONFLICTS, compare_and_swap
from hubzarr.spec import cast_value, check_ddof, check_flag
from hubzarr.stores import HubStore, StoredNode, conditional_writes

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["HubArray"]

#: Selections touching at least this many chunks are read by hubzarr's own path
#: (:func:`hubzarr.bulk.read_selection`); smaller ones, and xarray's string variables, by
#: zarr's.
_OWN_READ_FROM = 2


class HubArray(StoredNode, Shaped):
    """A numpy-like array stored in a hubzarr repository.

    Create one with :func:`hubzarr.array` or open one with :func:`hubzarr.load`. Reads return
    numpy arrays and touch only the chunks they need; writes are stored when the assignment
    returns.

    Parameters
    ----------
    store : HubStore
        The repository at a ref.
    zarray : zarr.Array, optional
        The zarr array on ``store``, if already open.
    path : str
        Where the array lies in the repository: ``""`` for a repository that is one array,
        else its key in the group (``"images"``, ``"train/labels"``).
    """

    def __init__(
        self, store: HubStore, zarray: zarr.Array[Any] | None = None, path: str = ""
    ) -> None:
        self._store = store
        self._zarray = zarray
        self._path = path

    def __getstate__(self) -> dict[str, Any]:
        return {"store": self._store, "path": self._path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._store = state["store"]
        self._path = state.get("path", "")
        self._zarray = None

    # -- what it is ----------------------------------------------------------------------

    @property
    def zarr(self) -> zarr.Array[Any]:
        """The underlying ``zarr.Array`` (format 2) on the hub store."""
        if self._zarray is None:
            self._zarray = open_zarr_array(self._store, self._path)
        return self._zarray

    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape."""
        return tuple(self.zarr.shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        """The array's numpy dtype."""
        return np.dtype(self.zarr.dtype)

    @property
    def chunks(self) -> tuple[int, ...]:
        """The chunk shape."""
        return tuple(self.zarr.chunks)

    @property
    def layout(self) -> Layout:
        """How the array's chunks are named and encoded (shape, chunks, dtype, codecs)."""
        return Layout.from_metadata(self.zarr.metadata, self._path)

    def __repr__(self) -> str:
        mode = " read-only" if self.read_only else ""
        path = f" path={self._path!r}" if self._path else ""
        return (
            f"<HubArray {self.name}{path} version={self.version}{mode} shape={self.shape} "
            f"dtype={self.dtype} chunks={self.chunks}>"
        )

    # -- pictures ------------------------------------------------------------------------

    def show(
        self,
        index: int | slice | Sequence[int] | None = None,
        *,
        path: str | None = None,
        labels: Any = None,
        class_names: Sequence[str] | None = None,
    ) -> Image.Image:
        """Draw samples as one picture: a grid of tiles with captions (Pillow, the
        ``hubzarr[images]`` extra). How the shape is read (grayscale, RGB, RGBA, channels
        first, volumes as slices) and how values become pixels is in :mod:`hubzarr.show`.

        Parameters
        ----------
        index : int, slice or sequence of int, optional
            The samples along the first axis: ``5``, ``slice(0, 16)``, ``[3, 7, 9]``;
            default the first 16 (4 volumes).
        path : str, optional
            Also write the picture to this file (``"out.png"``).
        labels : HubArray or numpy.ndarray, optional
            One label a sample, written in each caption.
        class_names : sequence of str, optional
            The name of each class: label ``i`` is ``class_names[i]``.

        Returns
        -------
        PIL.Image.Image
            The picture.

        Raises
        ------
        InvalidArgumentError
            If Pillow is not installed, the shape or dtype is not image-like (a 0-d or 1-d
            array), the index is malformed, the labels do not hold one value a sample, the
            selection is too large, or ``path`` cannot be written.
        InvalidIndexError
            If a sample is out of range or none is selected.
        CorruptChunkError
            If a chunk is corrupt or does not decode.
        """
        from hubzarr import show

        image = show.render(self, index, labels=labels, class_names=class_names)
        if path is not None:
            show.save(image, path)
        return image

    def _repr_html_(self) -> str:
        """A notebook's view: name, version, shape, dtype, chunks, size, and a thumbnail of
        the first samples when the array looks like images (at most 16 MiB of chunks read)."""
        from hubzarr import show

        return show.array_html(
            self.name, self._path, self.version, self, picture=show.thumbnail(self)
        )

    # -- reading and writing -------------------------------------------------------------

    def __getitem__(self, key: Any) -> npt.NDArray[Any]:
        return self._read(key, follow=True)

    def _read(self, key: Any, *, follow: bool = False) -> npt.NDArray[Any]:
        """Read ``key``; ``follow``: at a branch, follow it to its current head first."""
        selection, _, flips = normalize_index(key, self.shape)
        layout = self.layout
        axes = [
            item if isinstance(item, int) else range(*item.indices(n))
            for item, n in zip(selection, self.shape, strict=True)
        ]
        if not layout.strings and _chunks_touched(axes, layout.chunks) >= _OWN_READ_FROM:
            # hubzarr's own read path: concurrent fetches, decoding straight into the result.
            out = read_selection(self, axes, follow=follow)
            return np.flip(out, axis=flips) if flips else out
        if follow:
            self._store.session.follow_head()
        target = self.zarr
        try:
            out = np.asarray(target[selection])
        except HubError:
            raise
        except Exception as exc:
            self._name_the_broken_chunk(selection, exc)
            raise
        return np.flip(out, axis=flips) if flips else out

    def _name_the_broken_chunk(self, selection: tuple[int | slice, ...], exc: Exception) -> None:
        """Raise :class:`CorruptChunkError` naming the chunk of ``selection`` that does not
        decode, if one does not: zarr runs the codecs itself and lets their errors through
        as they are (a RuntimeError from Blosc, a ValueError from a reshape), naming no key.

        Only on that failure path: each chunk the selection touches is read again and decoded
        as the bulk readers decode (with the same checks), so the cost of the read is paid
        twice, once.
        """
        check_chunks_decode(self, selection, exc)

    def __setitem__(self, key: Any, value: Any) -> None:
        target = self.zarr
        self._store.session.check_writable()
        if _is_dask(value):
            assign(self, key, value)
            return
        selection, out_shape, flips = normalize_index(key, self.shape)
        data = cast_value(value, self.dtype)
        try:
            data = np.broadcast_to(data, out_shape)
        except ValueError:
            raise InvalidArgumentError(
                f"cannot assign a value of shape {data.shape} to a selection of shape "
                f"{out_shape}; the shapes must broadcast"
            ) from None
        if flips:
            data = np.flip(data, axis=flips)

        # zarr reads a chunk the selection covers only in part, merges, and writes it back.
        # Under conditional_writes each such write succeeds only if the chunk is still the
        # one read (compare-and-swap on write-once generations); otherwise another writer or a
        # seal got there first and the whole assignment is repeated from fresh reads. Writing
        # the same values again is harmless, so no update of anyone is ever lost.
        async def write() -> None:
            with conditional_writes():
                await target.async_array.setitem(selection, data)

        def exhausted() -> ConflictError:
            return ConflictError(
                f"{self.name}: other writers kept changing the chunks of {key!r} during "
                f"{CONFLICTS.attempts} attempts to write part of them; some chunks may already "
                "hold the new values and the assignment is safe to repeat: try it again"
            )

        try:
            sync(
                compare_and_swap(
                    write, before_retry=self._store.session.refresh, exhausted=exhausted
                )
            )
        except HubError:
            raise
        except Exception as exc:
            # A chunk written in part is read and decoded first, by zarr's codecs.
            self._name_the_broken_chunk(selection, exc)
            raise

    # -- bulk computation ----------------------------------------------------------------

    @property
    def lazy(self) -> _LazyIndexer:
        """Lazy selections: ``array.lazy[0:10, 100:200].mean()`` reads only what it needs.

        ``array.lazy[index]`` takes any basic index (integers, slices with steps, Ellipsis)
        and returns a :class:`hubzarr.bulk.LazyArray` with ``.dask``, reductions and
        ``.compute()``; nothing is read until then.
        """
        return _LazyIndexer(self)

    def _whole(self) -> LazyArray:
        return LazyArray.whole(self)

    @property
    def dask(self) -> Any:
        """A ``dask.array.Array`` over this array, built by hubzarr (see
        :attr:`hubzarr.bulk.LazyArray.dask`): blocks of whole chunks, fetched concurrently and
        decoded in place. It reads the version the array is at when the graph is built.
        """
        return self._whole().dask

    def sum(self, *, progress: bool = False) -> Any:
        """Sum of all values, in one parallel pass: exact for integers, float64 for floats.

        ``progress=True`` shows a progress bar (on stderr, or dask.distributed's).

        Raises
        ------
        InvalidArgumentError
            If ``progress`` is not a bool (checked before anything is read).
        CorruptChunkError
            If a chunk is corrupt or does not decode.
        """
        check_flag(progress, "progress")
        return self._whole().sum(progress=progress)

    def mean(self, *, progress: bool = False) -> Any:
        """Mean of all values, in one parallel pass, accumulated in float64.

        Raises
        ------
        InvalidArgumentError
            If ``progress`` is not a bool (checked before anything is read).
        CorruptChunkError
            If a chunk is corrupt or does not decode.
        """
        check_flag(progress, "progress")
        return self._whole().mean(progress=progress)

    def var(self, *, ddof: int = 0, progress: bool = False) -> Any:
        """Variance of all values, in one parallel pass (parallel moments, float64).

        Raises
        ------
        InvalidArgumentError
            If ``ddof`` is not a non-negative integer or ``progress`` not a bool (checked
            before anything is read).
        CorruptChunkError
            If a chunk is corrupt or does not decode.
        """
        check_ddof(ddof)
        check_flag(progress, "progress")
        return self._whole().var(ddof=ddof, progress=progress)

    def std(self, *, ddof: int = 0, progress: bool = False) -> Any:
        """Standard deviation of all values, in one parallel pass (parallel moments, float64).

        Raises
        ------
        InvalidArgumentError
            If ``ddof`` is not a non-negative integer or ``progress`` not a bool (checked
            before anything is read).
        CorruptChunkError
            If a chunk is corrupt or does not decode.
        """
        check_ddof(ddof)
        check_flag(progress, "progress")
        return self._whole().std(ddof=ddof, progress=progress)

    def min(self, *, progress: bool = False) -> Any:
        """Smallest value, in one parallel pass.

        Raises
        ------
        InvalidArgumentError
            If ``progress`` is not a bool (checked before anything is read), or the array
            is complex.
        CorruptChunkError
            If a chunk is corrupt or does not decode.
        """
        check_flag(progress, "progress")
        return self._whole().min(progress=progress)

    def max(self, *, progress: bool = False) -> Any:
        """Largest value, in one parallel pass.

        Raises
        ------
        InvalidArgumentError
            If ``progress`` is not a bool (checked before anything is read), or the array
            is complex.
        CorruptChunkError
            If a chunk is corrupt or does not decode.
        """
        check_flag(progress, "progress")
        return self._whole().max(progress=progress)

    def histogram(
        self,
        bins: Any = 10,
        range: tuple[float, float] | None = None,
        *,
        progress: bool = False,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[Any]]:
        """Histogram of all values, as :func:`numpy.histogram` (see
        :meth:`hubzarr.bulk.LazyArray.histogram`).

        Raises
        ------
        InvalidArgumentError
            If ``bins``, ``range`` or ``progress`` are unusable (checked before anything is
            read), or the array is complex.
        CorruptChunkError
            If a chunk is corrupt or does not decode.
        """
        check_histogram(bins, range, progress)
        return self._whole().histogram(bins, range, progress=progress)

    def prefetch(
        self, selection: Any = ..., *, progress: Callable[[int, int], None] | None = None
    ) -> int:
        """Read the stored chunks a selection touches, 32 at a time, without decoding them:
        through the local cache (:mod:`hubzarr.cache`), they are then read from local disk.

        Parameters
        ----------
        selection : index
            A numpy basic index (default: the whole array).
        progress : callable, optional
            Called as ``progress(done, total)`` as chunks arrive.

        Returns
        -------
        int
            How many chunks were read (never-written chunks are not counted).

        Raises
        ------
        InvalidIndexError
            If ``selection`` is not a basic index within the array.
        CorruptChunkError
            If a chunk fails its checksum.
        """
        import itertools

        from hubzarr.indexing import axis_pieces

        picked = normalize_index(selection, self.shape).selection
        axes = [s if isinstance(s, int) else range(s.start, s.stop, s.step) for s in picked]
        grid = [
            sorted({p.chunk for p in axis_pieces(a, c)})
            for a, c in zip(axes, self.chunks, strict=True)
        ]
        keys = [self.layout.key(coords) for coords in itertools.product(*grid)]
        session, done, found = self._store.session, 0, 0

        async def fetch_all() -> None:
            nonlocal done, found
            limit = asyncio.Semaphore(32)

            async def fetch(key: str) -> None:
                nonlocal done, found
                async with limit:
                    payload = await session.read(key)
                found += payload is not None
                done += 1
                if progress is not None:
                    progress(done, len(keys))

            await asyncio.gather(*(fetch(key) for key in keys))
            settle = getattr(self._store.storage, "settle", None)  # a cache's queued writes
            if settle is not None:
                await settle()

        sync(fetch_all())
        return found


def _chunks_touched(axes: Sequence[int | range], chunks: Sequence[int]) -> int:
    """How many chunks a selection (one ``int`` or positive-step ``range`` per axis) touches."""
    count = 1
    for axis, size in zip(axes, chunks, strict=True):
        if isinstance(axis, int):
            continue
        if len(axis) == 0:
            return 0
        first, last = axis[0] // size, axis[-1] // size
        count *= min(last - first + 1, len(axis))
    return count


def _is_dask(value: Any) -> bool:
    return hasattr(value, "__dask_graph__") and hasattr(value, "dtype") and hasattr(value, "shape")


class _LazyIndexer:
    """``array.lazy[index]``."""

    def __init__(self, array: HubArray) -> None:
        self._array = array

    def __getitem__(self, key: Any) -> LazyArray:
        return self._array._whole()[key]
