"""The learner's streamed data strategy: a memmap, a list of chunks, or a callable.

``StreamedData`` gives ``_dl_driver``'s two phases their data, with every
reduction over the data turned into one pass over fixed-size chunks
(``_dl_stream_steps``), so device and host memory are bounded by the chunk size:

1. Alternating warm-up: one pass computes FISTA codes per chunk (warm-started
   from the previous step's codes) and accumulates the sufficient statistics
   ``A = Σ z zᵀ``, ``B = Σ z (x − b)ᵀ``; the exact atom pass (A') then uses only
   ``A`` and ``B``. ``ReseedDead`` needs the highest-residual points: when an
   atom is dead, a second pass keeps a reservoir of the K largest residuals.
2. Riemannian L-BFGS on F: every line-search trial is one pass computing
   certified codes per chunk and the sums that give F, its envelope gradient
   and the alignment of (A); the step is ``_dl_steps.lbfgs_step``, the same as
   for resident data, with its backtracking loop on the host.

Codes (N × K) live in ``CodeCache`` temporary files (the accepted point's and
the trial's), read and written one chunk at a time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._streaming import DEFAULT_CHUNK, Streamed, Summed, add_trees, iter_chunks
from .._validate import float_dtype
from ..solvers._iterate import Host
from ._dl_manifold import stack
from ._dl_policy import KeepDead, ReseedDead
from ._dl_setup import init_rows, initial_point, unit_rows
from ._dl_steps import _freeze, init_state, lbfgs_step
from ._dl_stream_source import CodeCache, data_sums, describe, source_of
from ._dl_stream_steps import (
    alternating_chunk,
    atoms_from_stats,
    certified_chunk,
    measures,
    merge_top,
    reseed,
    top_residuals,
)


@dataclasses.dataclass(frozen=True)
class Stream:
    """A re-readable data source with its chunking (host-side)."""

    source: Callable
    chunk_size: int
    d: int
    dtype: object

    def run(self, fn, combine, args, codes=None, sink=None, desc="learn_dictionary"):
        """A ``Streamed`` pass over the data (and cached codes, chunk by chunk)."""
        data = (self.source(),) if codes is None else (self.source(), codes.slots())
        widths = (self.d,) if codes is None else (self.d, None)
        how = Streamed(self.chunk_size, desc=desc)
        return how.run(fn, combine, data, args, self.dtype, widths, sink=sink)


def open_stream(X, chunk_size, dtype=None) -> Stream:
    """``X`` as a re-readable stream; ``dtype``: the working dtype (default the data's;
    chunks are cast as they are read)."""
    source = source_of(X)
    chunk_size = DEFAULT_CHUNK if chunk_size is None else int(chunk_size)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}.")
    d, own = describe(source)
    return Stream(source, chunk_size, d, own if dtype is None else float_dtype(dtype))


class _Kernel(eqx.Module):
    """A learner kernel ``fn(P, Xc, valid, [Zc,] *rest) -> [(codes,)] sums`` as a chunk
    statistic of a pass; ``reads``: it takes the cached codes; ``writes``: it returns
    new codes first (the pass's per-point output, written to the cache)."""

    fn: Callable = eqx.field(static=True)
    reads: bool = eqx.field(static=True)
    writes: bool = eqx.field(static=True)

    def __call__(self, chunks, w, start, P, *rest):  # ``fn`` is compiled: no second jit
        del start
        extra = chunks[1:] if self.reads else ()
        out = self.fn(P, chunks[0], w > 0, *extra, *rest)
        return (out[1], out[0]) if self.writes else (out, ())


def stream_pass(stream: Stream, kernel, args, cache_in=None, cache_out=None):
    """``Σ_chunks`` of a kernel's sums; codes read from ``cache_in``, written to ``cache_out``.

    ``kernel(P, Xc, valid, [Zc,] *rest)`` with ``args = (P, *rest)``; with ``cache_out``
    it returns ``(codes, sums)``, else ``sums``.
    """
    sink = None if cache_out is None else (lambda i, Z: cache_out.write(i, jax.device_get(Z)))
    fn = _Kernel(kernel, cache_in is not None, cache_out is not None)
    sums, _, n = stream.run(fn, add_trees, args, cache_in, sink)
    return sums, n


def data_statistics(stream: Stream):
    """``(N, Σ x_n)`` in one pass (float64 sums where x64 is on)."""
    stats, _, n = stream.run(Summed(data_sums), add_trees, ())
    return n, stats["xsum"]


def stream_data_init(stream: Stream, n_atoms: int, n: int, bias, *, key):
    """``data_init`` over a stream: the same K points (one permutation of N) as in memory."""
    idx = np.asarray(init_rows(key, n, n_atoms))
    rows = np.zeros((n_atoms, stream.d), stream.dtype)
    for i, (Xc, n_valid) in enumerate(iter_chunks(stream.source(), stream.chunk_size, stream.d)):
        lo = i * stream.chunk_size
        hit = (idx >= lo) & (idx < lo + n_valid)
        rows[hit] = Xc[idx[hit] - lo]
    return unit_rows(jnp.asarray(rows) - (0 if bias is None else bias), n, key=key)


def stream_initial_point(stream: Stream, n_atoms, init, bias: bool, *, key):
    """``(P, mask)`` as ``initial_point`` would give for the same data in memory."""
    if not (isinstance(init, str) and init == "data"):
        return initial_point(jnp.zeros((0, stream.d), stream.dtype), n_atoms, init, bias, key=key)
    if int(n_atoms) < 1:
        raise ValueError(f"n_atoms must be a positive integer, got {n_atoms}.")
    n, xsum = data_statistics(stream)
    b = (xsum / n).astype(stream.dtype) if bias else jnp.zeros((stream.d,), stream.dtype)
    atoms = stream_data_init(stream, int(n_atoms), n, b if bias else None, key=key)
    return stack(atoms, b), jnp.ones((int(n_atoms),), bool)


def _set_measures(state, P, out):
    F, g, norms, align = out
    return eqx.tree_at(
        lambda s: (s.P, s.value, s.grad, s.grad_norm, s.align),
        state,
        (P, F, g, jnp.max(norms), jnp.max(align)),
    )


def _alternating(stream, state, lam, mask, cfg, cache):
    P = state.P
    sums, n = stream_pass(stream, alternating_chunk, (P, lam, mask, cfg.inner_steps), cache, cache)
    new = _set_measures(state, P, measures(P, sums, n, lam, mask, jnp.asarray(cfg.free_bias)))
    P_new = atoms_from_stats(P, sums, n, mask, jnp.asarray(cfg.free_bias))
    dead = np.asarray(mask & (sums["l1"] == 0))
    if cfg.policy.reseeds and dead.any():
        m = min(P.shape[0] - 1, n)
        fn = _Kernel(top_residuals, reads=True, writes=False)
        (_, top), _, _ = stream.run(fn, merge_top, (P_new, mask, m), cache)
        P_new = reseed(cfg.policy, P_new, sums["l1"], top, mask)
    return _freeze(state, eqx.tree_at(lambda s: s.P, new, P_new))


class StreamedData:
    """The learner's data strategy for a stream (see ``_dl_driver``): each phase-1 step
    and each L-BFGS trial point is one pass; codes live in two ``CodeCache`` files (the
    accepted point's and the trial's), swapped when a trial is accepted.
    Host-side (not a pytree); ``close()`` when done."""

    desc = "learn_dictionary (streamed)"

    def __init__(self, stream: Stream):
        self.stream, self.dtype, self.caches = stream, stream.dtype, ()

    def initial_point(self, n_atoms, init, bias: bool, *, key):
        return stream_initial_point(self.stream, n_atoms, init, bias, key=key)

    def initial_state(self, P, memory: int):
        K, chunk = P.shape[0] - 1, self.stream.chunk_size
        self.caches = (CodeCache(chunk, K, P.dtype), CodeCache(chunk, K, P.dtype))
        return init_state(P, jnp.zeros((0, self.stream.d), P.dtype), memory)

    def alternating(self, state, lam, mask, cfg):
        return _alternating(self.stream, state, lam, mask, cfg, self.caches[0])

    def lbfgs(self, state, lam, mask, cfg, start: bool):
        current, trial_cache = self.caches

        def trial(Pt):
            args = (Pt, lam, mask, cfg.code_tol, cfg.max_code_steps)
            sums, n = stream_pass(self.stream, certified_chunk, args, current, trial_cache)
            return _set_measures(
                state, Pt, measures(Pt, sums, n, lam, mask, jnp.asarray(cfg.free_bias))
            )

        new, accepted = lbfgs_step(state, trial, Host(), tol=jnp.asarray(cfg.tol, state.P.dtype),
                                   max_backtracks=cfg.max_backtracks, start=jnp.asarray(start))  # fmt: skip
        if bool(accepted):
            self.caches = (trial_cache, current)  # the trial's codes are the new point's
        return new

    def close(self):
        for c in self.caches:
            c.close()


def open_streamed(X, chunk_size, dead_atoms, checkpoint_dir, dtype=None) -> StreamedData:
    """The streamed strategy for ``learn_dictionary``, or one clear error for what it lacks."""
    if checkpoint_dir is not None:
        raise ValueError(
            "checkpoint_dir is not supported for streamed data (a memmap, a list of chunks or a "
            "callable). Pass checkpoint_dir=None, or load the data into memory "
            "(np.asarray(X)) to checkpoint."
        )
    if dead_atoms is not None and not isinstance(dead_atoms, KeepDead | ReseedDead):
        raise ValueError(
            "streamed learning supports dead_atoms=jaxsae.ReseedDead() (the default) or "
            f"jaxsae.KeepDead(), got {type(dead_atoms).__name__}; other policies need the whole "
            "code matrix. Load the data into memory (np.asarray(X)) to use them."
        )
    return StreamedData(open_stream(X, chunk_size, dtype))
