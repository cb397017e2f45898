"""``sweep(method="sae")`` on a memmap or a list of chunks: the in-memory program, fed in segments.

The in-memory SAE sweep (``_sweep_sae.py``) trains every run in one ``lax.scan``
over minibatches ``X[idx]`` with X on the device. Here the data stays on the
host and is read by row index:

1. One streamed pass (``stream_sum``) gives the data mean (the initial decoder
   bias), ``Σ‖x‖²`` for the explained variance, and refuses non-finite data.
2. Training uses the same minibatch order as the in-memory sweep (the same
   per-epoch permutations) in segments of ``S = chunk_size // B`` steps: a
   segment's ``S·B`` rows are read from the memmap/chunks in sorted order
   (memmap pages dropped after the read), put back in batch order, sent to
   the device as ``(S, B, d)`` and scanned by the same vmapped Adam step
   (``_sweep_sae._step``). The segment program has a fixed S; the last, shorter
   segment (``steps mod S`` steps) compiles once more — no padded steps.
3. One more streamed pass sums, for all runs at once (vmapped inside the chunk
   function), what ``_measure`` and the wide bound (W) need: the loss, ‖R‖²,
   active counts, ``c_k = Σ_n z_kn r_n``, ``‖z_k‖₁`` (THEORY §2) and the terms
   ``h_λ(‖x_n − b‖)`` of (W).

Memory: a chunk or segment (``max(chunk_size, B)`` rows) on host and device,
plus one epoch's permutation of N ``int32`` row indices (4N bytes, 1/d of the
data's float32 size), which reproducing the in-memory order requires.
"""

from __future__ import annotations

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._streaming import DEFAULT_CHUNK, _page_release, stream_sum
from .._validate import check_lam
from ..certificates._wide import wide_bound_terms
from ._dl_stream_source import float_dtype
from ._dl_sweep_result import SweepResult, parse_list
from ._sweep_sae import _codes, _epoch_keys, _first_order, _grid_arrays, _step, _table


class _Rows:
    """Random access to the rows of a memmap ``(N, d)`` or a list of ``(n_i, d)`` chunks."""

    def __init__(self, X):
        if not isinstance(X, np.ndarray | list | tuple):
            raise ValueError(
                "sweep(method='sae') draws random minibatches, so streamed data needs random "
                f"access to its rows; got a {type(X).__name__}, which can only be read in order. "
                "Pass a numpy.memmap (np.load(path, mmap_mode='r')) or a list of (n_i, d) arrays "
                "(write the chunks to a .npy file first if they come from a generator)."
            )
        pieces = [X] if isinstance(X, np.ndarray) else list(X)
        pieces = [
            p if hasattr(p, "shape") and hasattr(p, "dtype") else np.asarray(p) for p in pieces
        ]
        d = pieces[0].shape[-1]
        for p in pieces:
            if p.ndim != 2 or p.shape[1] != d:
                raise ValueError(
                    "X must be (N, d) or a list of (n_i, d) chunks with the same number of "
                    f"features d = {d} (points × features); got a piece of shape {tuple(p.shape)}."
                )
        self.pieces, self.d = pieces, d
        self.offsets = np.cumsum([0] + [p.shape[0] for p in pieces])
        self.n = int(self.offsets[-1])
        if self.n == 0:
            raise ValueError("the data is empty (0 points). Pass at least one data point.")
        dtype = float_dtype(np.result_type(*[np.dtype(p.dtype) for p in pieces]))
        self.dtype = jnp.dtype(jax.dtypes.canonicalize_dtype(dtype))
        self.source = X

    def gather(self, idx: np.ndarray) -> np.ndarray:
        """``X[idx]`` as a host array of the working dtype, read in sorted row order."""
        order = np.argsort(idx, kind="stable")
        rows = idx[order]
        which = np.searchsorted(self.offsets, rows, side="right") - 1
        out = []
        for j in np.unique(which):
            lo, hi = np.searchsorted(which, [j, j + 1])
            out.append(_take(self.pieces[j], rows[lo:hi] - self.offsets[j]))
        sorted_rows = np.concatenate(out).astype(self.dtype, copy=False)
        batch = np.empty_like(sorted_rows)
        batch[order] = sorted_rows
        return batch


_BLOCK = 64  # rows read from a memmap between two page releases
_AROUND = 1 << 18  # bytes either side of a block that page faults may have mapped too


def _take(piece, local: np.ndarray) -> np.ndarray:
    """``piece[local]`` for sorted ``local``; a memmap's pages are dropped as they are read.

    A page fault on a file mapping also maps the neighbouring cached pages (fault-around,
    64 KiB by default), so reading a segment's scattered rows at once would map most of
    the file (measured: +180 MiB peak RSS for a 205 MB file). Reading ``_BLOCK`` rows at a
    time and releasing their span, widened by ``_AROUND``, keeps the resident set small.
    """
    if not isinstance(piece, np.ndarray):  # e.g. a JAX array: index it where it lives
        return np.asarray(piece[local])
    release = _page_release(piece)
    pad = -(-_AROUND // max(1, piece.strides[0]))
    out = np.empty((local.shape[0], piece.shape[1]), piece.dtype)
    for i in range(0, local.shape[0], _BLOCK):
        block = local[i : i + _BLOCK]
        out[i : i + _BLOCK] = piece[block]
        release([piece[max(0, block[0] - pad) : block[-1] + 1 + pad]])
    return out


def _segments(keys, N: int, B: int, steps: int, S: int):
    """Consecutive ``(≤S, B)`` index blocks of the in-memory order ``concat(perms)[: steps·B]``."""
    perm, epoch = None, -1
    for start in range(0, steps, S):
        n = min(S, steps - start)
        pos, end, parts = start * B, (start + n) * B, []
        while pos < end:
            e = pos // N
            if e != epoch:
                perm, epoch = np.asarray(jax.random.permutation(keys[e], N)), e
            take = min(end, (e + 1) * N) - pos
            parts.append(perm[pos - e * N : pos - e * N + take])
            pos += take
        yield np.concatenate(parts).reshape(n, B)


@eqx.filter_jit
def _train_segment(params, opt_state, masks, lams, Xs, lr):
    """Scan the vmapped Adam step of every run over the minibatches ``Xs`` ``(S, B, d)``."""
    opt = optax.adam(lr)

    def step(carry, Xb):
        return _step(carry, Xb, masks, lams, opt), None

    return jax.lax.scan(step, (params, opt_state), Xs)[0]


def _stats_chunk(Xc, valid):
    Xv = jnp.where(valid[:, None], Xc, 0)
    return {"xsum": jnp.sum(Xv, axis=0), "xsq": jnp.sum(Xv * Xv), "bad": jnp.sum(~jnp.isfinite(Xc))}


def _table_chunk(Xc, valid, params, masks, lams):
    """Per run, the chunk's sums behind ``_measure`` and (W); runs vmapped."""

    def run(p, mask, lam):
        Z = jnp.where(valid[:, None], _codes(p, Xc, mask), 0)
        R = jnp.where(valid[:, None], Xc - p.b_dec - Z @ p.W_dec, 0)
        rr = jnp.sum(R * R, axis=-1)
        return {
            "loss": jnp.sum(0.5 * rr + lam * jnp.sum(Z, axis=-1)),
            "err": jnp.sum(rr),
            "active": jnp.sum(Z > 0),
            "C": Z.T @ R,
            "l1": jnp.sum(Z, axis=0),
            "bound": jnp.sum(jnp.where(valid, wide_bound_terms(Xc - p.b_dec, lam), 0)),
        }

    return jax.vmap(run)(params, masks, lams)


def _add_on_host(a, b):
    """Accumulate chunk sums on the host in float64 / int64 (N may be large)."""

    def add(x, y):
        wide = np.int64 if np.dtype(x.dtype).kind in "iub" else np.float64
        return np.asarray(x, wide) + np.asarray(y, wide)

    return jax.tree.map(add, a, b)


def sweep_sae_stream(
    X, *, widths, lams, seeds, steps: int, batch_size: int, lr: float, tol: float,
    chunk_size: int | None, progress: bool,
) -> SweepResult:  # fmt: skip
    """``sweep(X, method="sae")`` for a memmap or a list of chunks; equals the in-memory sweep.

    See the module docstring for the passes; the table is that of ``sweep_sae``.
    """

    rows = _Rows(X)
    widths = parse_list(widths, "widths", int)
    if min(widths) < 1:
        raise ValueError(f"widths must be positive integers, got {widths}.")
    grid = list(
        itertools.product(widths, parse_list(lams, "lams", float), parse_list(seeds, "seeds", int))
    )
    dtype = rows.dtype
    for _, lam, _ in grid:
        check_lam(lam, dtype)
    chunk = DEFAULT_CHUNK if chunk_size is None else int(chunk_size)
    if chunk < 1 or int(batch_size) < 1:
        raise ValueError(
            f"chunk_size and sae_batch_size must be positive integers, got {chunk_size} and "
            f"{batch_size}."
        )
    stats, N = stream_sum(_stats_chunk, rows.source, chunk, dtype=dtype, combine=_add_on_host)
    if stats["bad"]:
        raise ValueError(
            f"the data has {int(stats['bad'])} non-finite values (NaN/Inf). "
            "Remove or impute them before the sweep."
        )
    xsum = jnp.asarray(stats["xsum"], dtype)
    params, masks, lam_arr = _grid_arrays(grid, xsum / N)
    opt_state = jax.vmap(optax.adam(lr).init)(params)
    B = min(int(batch_size), N)
    S = max(1, min(steps, chunk // B))
    bar = _bar(progress, steps)
    for idx in _segments(_epoch_keys(steps, B, N), N, B, steps, S):
        Xs = rows.gather(idx.reshape(-1)).reshape(*idx.shape, rows.d)
        params, opt_state = _train_segment(params, opt_state, masks, lam_arr, jnp.asarray(Xs), lr)
        if bar is not None:
            bar.update(idx.shape[0])
    if bar is not None:
        bar.close()
    sums, _ = stream_sum(
        _table_chunk, rows.source, chunk, args=(params, masks, lam_arr), dtype=dtype,
        combine=_add_on_host,
    )  # fmt: skip
    return _tabulate(grid, params, masks, lam_arr, sums, stats, N, tol)


def _tabulate(grid, params, masks, lams, sums, stats, N: int, tol: float) -> SweepResult:
    dtype = lams.dtype
    s = {k: jnp.asarray(np.asarray(v), dtype) for k, v in sums.items()}
    xsum, xsq = (jnp.asarray(np.asarray(stats[k]), dtype) for k in ("xsum", "xsq"))
    var = xsq / N - jnp.sum((xsum / N) ** 2)
    grad_norm, alignment = jax.vmap(_first_order, in_axes=(0, 0, 0, 0, 0, None))(
        params.W_dec, s["C"], s["l1"], masks, lams, N
    )
    m = {
        "objective": s["loss"] / N,
        "l0": s["active"] / N,
        "explained_variance": 1 - (s["err"] / N) / var,
        "dead": jnp.sum(masks & (s["l1"] == 0), axis=-1),
        "grad_norm": grad_norm,
        "alignment": alignment,
    }
    return _table(grid, params, masks, lams, m, s["bound"] / N, tol)


def _bar(enabled: bool, steps: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=steps, desc="sweep (sae)", unit="step", leave=False)
