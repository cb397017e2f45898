"""Re-readable data sources and an on-disk code cache for the streamed learner.

Learning passes over the data many times (one pass per alternating step and
per line-search trial), so a streamed source must be readable again and again:
a ``numpy.memmap``, a list of ``(n_i, d)`` chunks, or a zero-argument callable
that returns a fresh iterable of chunks. A one-shot iterator is refused.

The codes ``Z`` (N × K) do not fit in memory when N is large; ``CodeCache``
keeps them in an anonymous temporary file, one fixed-size chunk per slot, read
and written with positioned I/O, so host memory is bounded by one chunk. The
file is scratch space deleted on close (never an output, hence not written
atomically like the files under ``jaxsae/io``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from .._validate import float_dtype


def source_of(X) -> Callable:
    """A zero-argument function returning a fresh iterable over the data ``X``."""
    if isinstance(X, Iterator):
        raise ValueError(
            "learn_dictionary and sweep pass over streamed data many times, so a one-shot "
            "iterator (e.g. a generator) cannot be used. Pass a numpy.memmap "
            "(np.load(path, mmap_mode='r')), a list of (n_i, d) chunks, or a zero-argument "
            "callable that returns a fresh iterator each time it is called "
            "(e.g. lambda: my_chunks())."
        )
    if callable(X):
        return _checked_callable(X)
    return lambda: X


def _checked_callable(fn):
    def fresh():
        it = fn()
        if isinstance(it, np.ndarray) or hasattr(it, "__iter__"):
            return it
        raise ValueError(
            f"the data callable must return an iterable of (n_i, d) chunks, got {type(it).__name__}."
        )

    return fresh


def is_stream_input(X) -> bool:
    """Streamed inputs for the learner: memmaps, lists of chunks, iterators, callables."""
    from .._streaming import is_streamable

    if isinstance(X, np.ndarray) and not isinstance(X, np.memmap):
        return False
    return is_streamable(X) or (callable(X) and not hasattr(X, "shape"))


def describe(source) -> tuple[int, object]:
    """``(d, dtype)`` from the array's shape, or the first chunk of a fresh pass."""
    data = source()
    if hasattr(data, "shape"):
        if len(data.shape) != 2 or data.shape[0] == 0:
            raise ValueError(
                f"X must have shape (N, d) with N ≥ 1 (one data point per row), got {data.shape}."
            )
        return data.shape[1], float_dtype(data.dtype)
    for piece in data:
        piece = np.asarray(piece)
        if piece.ndim != 2:
            raise ValueError(
                f"streamed data must be (N, d) or chunks of shape (n_i, d), got shape {piece.shape}."
            )
        return piece.shape[1], float_dtype(piece.dtype)
    raise ValueError("the data is empty (0 points). Pass at least one data point.")


def data_sums(Xc, valid):
    """``Σ x_n`` and ``Σ‖x_n‖²`` of a chunk's valid rows, in float64 where x64 is on
    (the starting bias must not depend on the chunking)."""
    Xv = jnp.where(valid[:, None], Xc, 0).astype(jax.dtypes.canonicalize_dtype(jnp.float64))
    return {"xsum": jnp.sum(Xv, axis=0), "xsq": jnp.sum(Xv * Xv)}


class CodeCache:
    """Codes ``(n_chunks · chunk_size, K)`` in a temporary file, one chunk per slot.

    An unwritten slot reads as zeros (a cold start), so the cache grows with the
    first pass and N need not be known in advance.
    """

    def __init__(self, chunk_size: int, n_atoms: int, dtype):
        self.shape = (int(chunk_size), int(n_atoms))
        self.dtype = np.dtype(dtype)
        self.nbytes = self.shape[0] * self.shape[1] * self.dtype.itemsize
        self._file = tempfile.TemporaryFile(prefix="jaxsae-codes-")

    def read(self, i: int) -> np.ndarray:
        data = os.pread(self._file.fileno(), self.nbytes, i * self.nbytes)
        if len(data) < self.nbytes:
            return np.zeros(self.shape, self.dtype)
        return np.frombuffer(data, self.dtype).reshape(self.shape)

    def write(self, i: int, Z) -> None:
        buf = np.ascontiguousarray(np.asarray(Z), self.dtype)
        if buf.shape != self.shape:
            raise ValueError(f"codes chunk has shape {buf.shape}, expected {self.shape}.")
        os.pwrite(self._file.fileno(), buf.tobytes(), i * self.nbytes)

    def slots(self):
        """Every slot in order, without end (a companion stream of a pass's chunks)."""
        i = 0
        while True:
            yield self.read(i)
            i += 1

    def close(self) -> None:
        self._file.close()
