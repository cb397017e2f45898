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

import abc
import ctypes
import ctypes.util
import mmap
import time
from collections.abc import Callable, Iterator
from typing import ClassVar

import equinox as eqx
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


class Pass(eqx.Module):
    """Where the data of a pass lives, and how the pass visits it chunk by chunk.

    Every reduction over points in jaxsae is written once as *chunk statistics →
    combine → finish*: a function ``fn(chunks, w, start, *args) -> (acc,
    per_point)`` of one fixed-size chunk (``chunks``: a tuple of ``(chunk_size, ·)``
    arrays, rows of X and of any per-point companions such as codes; ``w``:
    1 for real rows, 0 for padding; ``start``: the chunk's first row), and an
    associative ``combine(acc_a, acc_b)``. A ``Pass`` decides where the chunks
    come from: :class:`Resident` scans over device arrays inside one compiled
    program, :class:`Streamed` loops on the host over memmaps or chunk lists
    (memory bounded by the chunk size) and may shard each chunk over a mesh.
    ``fn`` must be a compiled function (``eqx.filter_jit``) for the streamed
    strategy, and ``combine`` either compiled or a host function (e.g. float64
    sums in NumPy); the resident one traces both into its own program.
    """

    chunk_size: int = eqx.field(static=True)
    resident: ClassVar[bool]  # the data is on the device (passes can be compiled whole)

    @abc.abstractmethod
    def run(self, fn: Callable, combine: Callable, data: tuple, args: tuple = (), dtype=None,
            widths: tuple | None = None):  # fmt: skip
        """``(acc, per_point, n)``: the combined statistics, the per-point outputs
        concatenated over the ``n`` real rows, and ``n``. Chunks are cast to
        ``dtype`` (default: that of the first floating array in ``args``);
        ``widths`` (streamed data) are the column counts each input must have."""

    def run_then(self, fn, combine, finish, data, args=(), finish_args=(), dtype=None,
                 widths=None):  # fmt: skip
        """``finish(acc, per_point, n, *finish_args)`` after :meth:`run` (``n`` an array).

        Resident data runs the pass and ``finish`` in one compiled program; streamed
        data runs ``finish`` (a compiled function) once on the combined statistics."""
        acc, per_point, n = self.run(fn, combine, data, args, dtype, widths)
        return finish(acc, per_point, jnp.asarray(n), *finish_args)


class Resident(Pass):
    """Device arrays, reduced by ``lax.scan`` over chunks (traceable: call it under ``jit``)."""

    resident: ClassVar[bool] = True

    def run(self, fn, combine, data, args=(), dtype=None, widths=None):
        del widths  # device arrays: shapes were checked by the caller
        return _resident_run(self, fn, combine, data, args, dtype)

    def run_then(self, fn, combine, finish, data, args=(), finish_args=(), dtype=None,
                 widths=None):  # fmt: skip
        del widths
        return _resident_then(self, fn, combine, finish, data, args, finish_args, dtype)


@eqx.filter_jit
def _resident_run(self, fn, combine, data, args, dtype):
    """:meth:`Resident.run`, compiled (``fn`` and ``combine`` are static)."""
    if dtype is not None:
        data = tuple(jnp.asarray(a, dtype) for a in data)
    N = data[0].shape[0]
    c = max(1, min(self.chunk_size, N))
    n = -(-N // c)
    pad = n * c - N

    def stack(a):
        a = jnp.pad(a, ((0, pad),) + ((0, 0),) * (a.ndim - 1))
        return a.reshape(n, c, *a.shape[1:])

    chunks = tuple(stack(a) for a in data)
    w = stack(jnp.ones((N,), data[0].dtype))
    starts = jnp.arange(n, dtype=jnp.int32) * c
    shapes = jax.eval_shape(lambda: fn(tuple(a[0] for a in chunks), w[0], starts[0], *args))
    acc0 = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes[0])

    def step(acc, inp):
        i, xs, wc, start = inp
        part, per_point = fn(xs, wc, start, *args)
        merged = combine(acc, part)
        acc = jax.tree.map(lambda m, p: jnp.where(i == 0, p, m), merged, part)
        return acc, per_point

    acc, per_point = jax.lax.scan(step, acc0, (jnp.arange(n), chunks, w, starts))
    per_point = jax.tree.map(lambda a: a.reshape(n * c, *a.shape[2:])[:N], per_point)
    return acc, per_point, N


@eqx.filter_jit
def _resident_then(how, fn, combine, finish, data, args, finish_args, dtype):
    acc, per_point, n = how.run(fn, combine, data, args, dtype)
    return finish(acc, per_point, jnp.asarray(n), *finish_args)


class Streamed(Pass):
    """Chunks read on the host from arrays, memmaps, chunk lists or iterators.

    Memory is bounded by ``chunk_size`` (pages of a memmap are released after each
    copy); with a ``mesh`` each chunk's rows are sharded over its ``"data"`` axis
    and the arguments replicated, and XLA reduces across devices. Non-finite data
    is refused with the rows it is in.
    """

    resident: ClassVar[bool] = False
    mesh: Mesh | None = eqx.field(static=True, default=None)
    progress: bool = eqx.field(static=True, default=False)
    desc: str = eqx.field(static=True, default="streaming")

    def run(self, fn, combine, data, args=(), dtype=None, widths=None, sink=None):
        """:meth:`Pass.run`; with ``sink``, each chunk's per-point outputs (padded rows
        included) go to ``sink(chunk_index, per_point)`` instead of being kept."""
        n_dev = 1 if self.mesh is None else self.mesh.devices.size
        c = -(-self.chunk_size // n_dev) * n_dev
        dtype = _args_dtype(args, data[0]) if dtype is None else dtype
        if self.mesh is not None:
            arrays, rest = eqx.partition(args, eqx.is_array)
            args = eqx.combine(jax.device_put(arrays, NamedSharding(self.mesh, P())), rest)
        acc, per_point, n = None, [], 0
        total = data[0].shape[0] if hasattr(data[0], "shape") else None
        bar = _progress(self.progress, total, self.desc)
        widths = (None,) * len(data) if widths is None else widths
        streams = [iter_chunks(a, c, k) for a, k in zip(data, widths, strict=True)]
        for i, pieces in enumerate(zip(*streams, strict=False)):
            n_valid = pieces[0][1]
            finite = np.isfinite(pieces[0][0][:n_valid]).all(axis=1)
            if not finite.all():
                raise ValueError(
                    f"the data has a non-finite value (NaN/Inf) in row {n + int(np.argmin(finite))} "
                    f"(streamed chunk {i}, rows {n}..{n + n_valid - 1}). Remove or impute it first."
                )
            w = (np.arange(c) < n_valid).astype(dtype)
            chunks = tuple(self._put(p.astype(dtype, copy=False), 2) for p, _ in pieces)
            t = time.perf_counter()
            part, pp = fn(chunks, self._put(w, 1), jnp.asarray(n, jnp.int32), *args)
            if acc is None:
                if time.perf_counter() - t > 0.25:  # the first chunk compiled ``fn``
                    release_freed_memory()
                acc = part
            else:
                acc = combine(acc, part)
            if sink is not None:
                sink(i, pp)
            else:
                per_point.append(jax.tree.map(lambda a, k=n_valid: np.asarray(a)[:k], pp))
            n += n_valid
            if bar is not None:
                bar.update(n_valid)
        if bar is not None:
            bar.close()
        if acc is None:
            raise ValueError("the data is empty (0 points). Pass at least one data point.")
        if per_point:
            per_point = jax.tree.map(lambda *a: jnp.asarray(np.concatenate(a)), *per_point)
        if self.mesh is not None:
            acc = jax.tree.map(jnp.asarray, jax.device_get(acc))
        return acc, per_point, n

    def _put(self, a, rank: int):
        if self.mesh is None:
            return jnp.asarray(a)
        spec = P("data", None) if rank == 2 else P("data")
        return jax.device_put(a, NamedSharding(self.mesh, spec))


def resolve_mesh(mesh) -> Mesh | None:
    """``None``: all devices when there are several; ``False``: one device; a mesh with a
    ``"data"`` axis as given. Anything else is one clear error."""
    if mesh is False:
        return None
    if isinstance(mesh, Mesh):
        if "data" not in mesh.axis_names:
            raise ValueError(
                f"mesh has axes {mesh.axis_names}, not 'data'. Build one with jaxsae.data_mesh()."
            )
        return mesh
    if mesh is not None:
        raise ValueError(
            f"mesh must be a jax.sharding.Mesh, None or False, got {type(mesh).__name__}."
        )
    return data_mesh()


def pass_for(X, chunk_size=None, *, mesh=None, progress=False, desc="streaming") -> Pass:
    """The strategy for ``X``: :class:`Streamed` for memmaps, chunk lists and iterators
    and :class:`Resident` for arrays, both with default chunk ``DEFAULT_CHUNK`` rows (a
    resident array is scanned chunk by chunk, so a pass's temporaries stay bounded)."""
    if chunk_size is not None and int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}.")
    if is_streamable(X):
        chunk = DEFAULT_CHUNK if chunk_size is None else int(chunk_size)
        return Streamed(chunk, resolve_mesh(mesh), bool(progress), desc)
    n = int(np.shape(X)[0])
    return Resident(max(1, min(DEFAULT_CHUNK if chunk_size is None else int(chunk_size), n)))


def _args_dtype(args, X):
    for leaf in jax.tree.leaves(args):
        if eqx.is_array(leaf) and jnp.issubdtype(leaf.dtype, jnp.floating):
            return leaf.dtype
    return np.dtype(getattr(X, "dtype", np.float32))


class Summed(eqx.Module):
    """``fn(Xc, valid, *args)`` (sums over the chunk's valid rows) as a chunk statistic
    of a :class:`Pass`, with no per-point outputs. Equal for equal ``fn``, so a pass
    compiles once per ``fn``."""

    fn: Callable = eqx.field(static=True)

    @eqx.filter_jit
    def __call__(self, chunks, w, start, *args):
        del start
        return self.fn(chunks[0], w > 0, *args), ()


@jax.jit  # arrays only: jax.jit's dispatch is the cheapest (it runs once per chunk)
def add_trees(a, b):
    """The default ``combine``: leaf by leaf ``+``."""
    return jax.tree.map(jnp.add, a, b)


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
    """``Σ_chunks fn(X_chunk, valid, *args)`` over a :class:`Streamed` pass.

    Args:
        fn: a function of ``(Xc (chunk_size, d), valid (chunk_size,) bool, *args)``
            returning a pytree of arrays that are *sums over the chunk's valid points*.
            Compiled once per function object (fixed chunk shape).
        X: an array, ``numpy.memmap`` or iterable of chunks.
        chunk_size: points per chunk (rounded up to a multiple of the device count).
        args: further (device) arguments, replicated.
        dtype: cast chunks to this dtype (default: the dtype of ``args``' float leaves or X's).
        mesh: as in :func:`resolve_mesh`.
        progress: show a tqdm progress bar.
        combine: how two partial results merge (default: leaf by leaf ``+``); e.g.
            ``lambda a, b: (add(a[0], b[0]), maximum(a[1], b[1]))`` for sums and maxima.

    Returns:
        The accumulated pytree and the number of points seen.
    """
    acc, _, n = Streamed(chunk_size, resolve_mesh(mesh), progress, desc).run(
        Summed(fn), add_trees if combine is None else combine, (X,), args, dtype
    )
    return acc, n


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
