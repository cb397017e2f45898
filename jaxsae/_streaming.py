"""Streaming reductions over data that may not fit in memory, on one or many devices.

Everything in jaxsae that reduces over points (certificates, the Hessian
operator, full-batch learning, metrics) is a sum of per-point terms. This module
feeds such sums from an in-memory array, a ``numpy.memmap`` or an iterable of
chunks, one fixed-size chunk at a time (the last one padded and masked, so the
per-chunk function compiles once), so peak memory is bounded by the chunk size,
not by N. When several devices are present the chunk's point axis is sharded
over a 1-d ``jax.sharding.Mesh`` (axis ``"data"``) and XLA inserts the
reductions; no communication is written by hand.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DEFAULT_CHUNK = 8192


def data_mesh(devices=None) -> Mesh | None:
    """A 1-d mesh over ``devices`` (default: all) with axis ``"data"``; None for one device."""
    devices = jax.devices() if devices is None else list(devices)
    if len(devices) <= 1:
        return None
    return Mesh(np.asarray(devices), ("data",))


def is_streamable(X) -> bool:
    """True for inputs that should be streamed rather than moved to the device whole."""
    if isinstance(X, np.memmap) or isinstance(X, Iterator):
        return True
    # a list of (n_i, d) chunks, but not a nested list of numbers (one point per row)
    return isinstance(X, list | tuple) and len(X) > 0 and np.ndim(X[0]) == 2


def iter_chunks(
    X, chunk_size: int, n_features: int | None = None
) -> Iterator[tuple[np.ndarray, int]]:
    """Yield ``(chunk, n_valid)`` with ``chunk`` of shape ``(chunk_size, d)``.

    ``X`` is an array / memmap ``(N, d)`` or an iterable of ``(n_i, d)`` arrays
    (re-chunked to ``chunk_size``). The last chunk is zero-padded; ``n_valid``
    says how many rows are real.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}.")
    release = _page_release(X)
    pieces = (
        (X[i : i + chunk_size] for i in range(0, X.shape[0], chunk_size))
        if hasattr(X, "shape")
        else X
    )
    buffer: list[np.ndarray] = []
    filled = 0
    for piece in pieces:
        piece = np.asarray(piece)
        if piece.ndim != 2 or (n_features is not None and piece.shape[1] != n_features):
            want = "d" if n_features is None else f"{n_features}"
            raise ValueError(
                f"data chunks must have shape (n, {want}) (points × features), got {piece.shape}; "
                "the number of features must match the dictionary's."
            )
        while piece.shape[0]:
            take = min(chunk_size - filled, piece.shape[0])
            buffer.append(piece[:take])
            piece = piece[take:]
            filled += take
            if filled == chunk_size:
                chunk = np.concatenate(buffer)
                release(buffer)
                yield chunk, chunk_size
                buffer, filled = [], 0
    if filled:
        chunk = np.concatenate(buffer)
        release(buffer)
        pad = np.zeros((chunk_size - filled, chunk.shape[1]), chunk.dtype)
        yield np.concatenate([chunk, pad]), filled


def _page_release(X) -> Callable[[list], None]:
    """For a ``numpy.memmap``: a function that drops the pages of copied pieces.

    Pages of a file mapping that were read stay in the process's resident set
    (they count in RSS) until the kernel needs the memory, so a pass over a
    2 GB memmap would show 2 GB of RSS. ``MADV_DONTNEED`` unmaps them from this
    process after each chunk is copied (they stay in the page cache), keeping
    the resident set bounded by the chunk size.
    """
    base = getattr(X, "_mmap", None)
    # Copy-on-write maps ("c") keep private changes in the pages: never drop those.
    private = getattr(X, "mode", "r") in ("c", "copyonwrite")
    if not isinstance(X, np.memmap) or base is None or private or not hasattr(base, "madvise"):
        return lambda pieces: None
    start = np.frombuffer(base, dtype=np.uint8).ctypes.data
    size, page = len(base), mmap.PAGESIZE

    def release(pieces):
        for piece in pieces:
            if piece.size == 0 or not piece.flags.c_contiguous:
                continue
            lo = piece.ctypes.data - start
            hi = min(lo + piece.nbytes, size)
            lo = max(lo // page * page, 0)
            if hi > lo:
                base.madvise(mmap.MADV_DONTNEED, lo, hi - lo)

    return release


def stream_sum(
    fn: Callable,
    X,
    chunk_size: int = DEFAULT_CHUNK,
    *,
    args: tuple = (),
    dtype=None,
    mesh: Mesh | None | bool = None,
    progress: bool = False,
    desc: str = "streaming",
    combine: Callable | None = None,
):
    """``Σ_chunks fn(X_chunk, valid, *args)`` accumulated as a pytree.

    Args:
        fn: a function of ``(Xc (chunk_size, d), valid (chunk_size,) bool, *args)``
            returning a pytree of arrays that are *sums over the chunk's valid points*.
            It is jitted once (fixed chunk shape).
        X: an array, ``numpy.memmap`` or iterable of chunks.
        chunk_size: points per chunk (rounded up to a multiple of the device count).
        args: further (device) arguments, replicated.
        dtype: cast chunks to this dtype (default: the dtype of ``args[0]`` leaves or X's).
        mesh: a 1-d ``"data"`` mesh to shard chunks over (default ``None``: all devices
            when there are several; ``False``: the default device only).
        progress: show a tqdm progress bar.
        combine: how two partial results merge (default: leaf by leaf ``+``); e.g.
            ``lambda a, b: (add(a[0], b[0]), maximum(a[1], b[1]))`` for sums and maxima.

    Returns:
        The accumulated pytree and the number of points seen.
    """
    mesh = data_mesh() if mesh is None else (None if mesh is False else mesh)
    n_dev = 1 if mesh is None else mesh.devices.size
    chunk_size = -(-chunk_size // n_dev) * n_dev
    jitted = _jitted(fn)
    total, count = None, 0
    n_total = X.shape[0] if hasattr(X, "shape") else None
    bar = _progress(progress, n_total, desc)
    for chunk, n_valid in iter_chunks(X, chunk_size):
        if dtype is not None:
            chunk = chunk.astype(dtype, copy=False)
        valid = np.arange(chunk_size) < n_valid
        if mesh is None:
            Xc, vc = jnp.asarray(chunk), jnp.asarray(valid)
        else:
            Xc = jax.device_put(chunk, NamedSharding(mesh, P("data", None)))
            vc = jax.device_put(valid, NamedSharding(mesh, P("data")))
        part = jitted(Xc, vc, *args)
        if count == 0:
            release_freed_memory()  # the first chunk compiled ``fn``
        if total is None:
            total = part
        else:
            total = jax.tree.map(jnp.add, total, part) if combine is None else combine(total, part)
        count += n_valid
        if bar is not None:
            bar.update(n_valid)
    if bar is not None:
        bar.close()
    if total is None:
        raise ValueError("the data is empty (0 points). Pass at least one data point.")
    return total, count


_JIT_CACHE: dict = {}


def _jitted(fn):
    # One compiled function per Python function object, so repeated streams reuse it.
    if fn not in _JIT_CACHE:
        _JIT_CACHE[fn] = jax.jit(fn)
    return _JIT_CACHE[fn]


def _progress(enabled: bool, total, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="pt", unit_scale=True, leave=False)


def release_freed_memory() -> None:
    """Hand the C heap's free pages back to the operating system (glibc ``malloc_trim``).

    Compiling a program makes XLA allocate and free a few hundred MB, and glibc
    keeps those freed pages in the process, so the resident set after a compile
    stays near the compiler's peak. Streaming passes call this once, after
    their first (compiling) chunk, so that the memory the pass itself needs is
    not stacked on top of the compiler's leftovers. A no-op without glibc.
    """
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _libc():
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return lib if hasattr(lib, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _libc()
