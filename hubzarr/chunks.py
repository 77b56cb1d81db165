"""How an array's chunks are named and encoded: everything needed to decode or encode one.

Pure, no I/O: a :class:`Layout` is built from an array's validated zarr (format 2) metadata and
holds no credentials, so it travels with dask tasks. Decoding checks what a codec does not:
that a chunk decodes to exactly a chunk's worth of bytes.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import numcodecs
import numpy as np
import numpy.typing as npt
from numcodecs.abc import Codec
from numcodecs.compat import ensure_contiguous_ndarray
from zarr.core.metadata.v2 import ArrayV2Metadata

from hubzarr.errors import CorruptChunkError

__all__ = ["Layout", "scratch_buffer"]


@dataclass(frozen=True, slots=True)
class Layout:
    """How one array's chunks are named and encoded.

    Attributes
    ----------
    path : str
        The array's key in its repository's group (``""`` for a repository that is one array).
    shape, chunks : tuple of int
        The array's shape and chunk shape.
    dtype : numpy.dtype
        The array's dtype (an object dtype for xarray's string variables).
    fill_value : Any
        The value of never-written elements.
    order : {"C", "F"}
        The memory order of a chunk's elements.
    separator : {".", "/"}
        What separates chunk coordinates in a chunk's key.
    compressor : numcodecs codec or None
        The compressor.
    filters : tuple of numcodecs codecs
        The filters, in the order they encode.
    """

    path: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: np.dtype[Any]
    fill_value: Any
    order: str
    separator: str
    compressor: Codec | None
    filters: tuple[Codec, ...]

    @classmethod
    def from_metadata(cls, meta: object, path: str) -> Layout:
        """The layout of the array at ``path`` whose zarr metadata, as validated by
        :mod:`hubzarr.metadata`, is ``meta`` (format 2 only)."""
        assert isinstance(meta, ArrayV2Metadata)  # hubzarr.metadata opens format 2 only
        dtype = np.dtype(meta.dtype.to_native_dtype())
        fill = np.asarray(meta.fill_value if meta.fill_value is not None else 0, dtype=dtype)
        return cls(
            path=path,
            shape=tuple(meta.shape),
            chunks=tuple(meta.chunks),
            dtype=dtype,
            fill_value=fill[()],
            order=meta.order,
            separator=meta.dimension_separator or ".",
            compressor=meta.compressor,
            filters=tuple(meta.filters or ()),
        )

    @property
    def chunk_nbytes(self) -> int:
        """Bytes of one decoded chunk (edge chunks are stored whole too)."""
        return math.prod(self.chunks) * self.dtype.itemsize

    @property
    def strings(self) -> bool:
        """Whether chunks hold Python strings (xarray's ``str`` variables): no fixed size."""
        return self.dtype.hasobject

    def key(self, coords: tuple[int, ...]) -> str:
        """The store key of the chunk at grid position ``coords``."""
        name = self.separator.join(map(str, coords)) if coords else "0"
        return f"{self.path}/{name}" if self.path else name

    def _broken(self, coords: tuple[int, ...], why: str) -> CorruptChunkError:
        return CorruptChunkError(
            f"chunk {self.key(coords)!r} does not decode to {self.chunk_nbytes} bytes of "
            f"{self.dtype} ({why}); run `hub verify` on the repository and rewrite that region"
        )

    def _decode_codecs(self, payload: memoryview) -> Any:
        """Run the compressor, then the filters last first, as zarr decodes."""
        data: Any = payload
        if self.compressor is not None:
            data = self.compressor.decode(data)
        for codec in reversed(self.filters):
            data = codec.decode(data)
        return data

    def problem(self, payload: memoryview) -> str | None:
        """Say what is wrong with a stored chunk's payload, if it does not decode to a chunk.

        Every codec runs, filters included: a filter's own error (an astype that cannot
        convert, say) is as fatal to a read as the compressor's.
        """
        try:
            data = self._decode_codecs(payload)
            if self.strings:
                return None  # Python strings: decoding them was the check
            size = ensure_contiguous_ndarray(data).nbytes
        except Exception as exc:
            return f"does not decompress ({type(exc).__name__}: {exc})"
        if size != self.chunk_nbytes:
            return f"decompresses to {size} bytes, not the chunk's {self.chunk_nbytes}"
        return None

    def decode_into(
        self, payload: memoryview, out: npt.NDArray[Any], coords: tuple[int, ...]
    ) -> bool:
        """Decode a whole chunk straight into ``out`` if the codecs allow; return whether done.

        ``out`` must be C-contiguous with the chunk's shape and this layout's dtype. Only a
        Blosc compressor without filters, in C order, decodes in place (its header states the
        decoded size, which is checked first).

        Raises
        ------
        CorruptChunkError
            If Blosc cannot decode the chunk at ``coords`` (its header is right, the rest not).
        """
        if self.filters or self.order != "C" or not isinstance(self.compressor, numcodecs.Blosc):
            return False
        if _blosc_nbytes(payload) != out.nbytes:
            return False  # decode() says what is wrong
        try:
            self.compressor.decode(payload, out=out)
        except Exception as exc:  # the codec's own error: the bytes are not what they should be
            raise self._broken(coords, f"{type(exc).__name__}: {exc}") from exc
        return True

    def decode(
        self, payload: memoryview, coords: tuple[int, ...], scratch: npt.NDArray[np.uint8]
    ) -> npt.NDArray[Any]:
        """Decode a chunk into ``scratch`` (reused) and return it as an array of chunk shape.

        Raises
        ------
        CorruptChunkError
            If the chunk does not decode to a chunk's worth of bytes.
        """
        size = self.chunk_nbytes
        flat = scratch[:size].view(self.dtype)
        try:
            if not self.filters and isinstance(self.compressor, numcodecs.Blosc):
                nbytes = _blosc_nbytes(payload)
                if nbytes != size:
                    raise self._broken(coords, f"its header says {nbytes} bytes")
                self.compressor.decode(payload, out=flat)
            else:
                data = self._decode_codecs(payload)
                raw = ensure_contiguous_ndarray(data).view(np.uint8).reshape(-1)
                if raw.nbytes != size:
                    raise self._broken(coords, f"it decodes to {raw.nbytes} bytes")
                flat.view(np.uint8)[:] = raw
        except CorruptChunkError:
            raise
        except Exception as exc:  # a codec's own error: the bytes are not what they should be
            raise self._broken(coords, f"{type(exc).__name__}: {exc}") from exc
        return flat.reshape(self.chunks, order=self.order)  # type: ignore[call-overload,no-any-return]

    def encode(self, chunk: npt.NDArray[Any]) -> bytes:
        """Encode a whole chunk as zarr (format 2) stores it."""
        data: Any = np.asarray(chunk, dtype=self.dtype, order=self.order)  # type: ignore[call-overload]
        data = data.reshape(-1, order=self.order)
        for codec in self.filters:
            data = codec.encode(data)
        if self.compressor is not None:
            data = self.compressor.encode(data)
        return bytes(ensure_contiguous_ndarray(data).view(np.uint8).reshape(-1))

    def is_fill(self, chunk: npt.NDArray[Any]) -> bool:
        """Whether every value of ``chunk`` is the fill value (NaN equals NaN)."""
        if chunk.dtype.kind in "fc":
            return bool(
                np.array_equal(chunk, np.broadcast_to(self.fill_value, chunk.shape), equal_nan=True)
            )
        return bool(np.all(chunk == self.fill_value))


def _blosc_nbytes(payload: memoryview) -> int:
    """The decoded size a Blosc frame's 16-byte header states (bytes 4-7, little-endian)."""
    if len(payload) < 16:
        return -1
    return int.from_bytes(payload[4:8], "little")


_scratch = threading.local()


def scratch_buffer(nbytes: int) -> npt.NDArray[np.uint8]:
    """A buffer of at least ``nbytes`` that this thread reuses (no page faults per chunk)."""
    buf: npt.NDArray[np.uint8] | None = getattr(_scratch, "buf", None)
    if buf is None or buf.nbytes < nbytes:
        buf = np.empty(nbytes, dtype=np.uint8)
        _scratch.buf = buf
    return buf
