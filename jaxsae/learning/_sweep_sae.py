"""``sweep(method="sae")``: many vanilla SAEs (widths × λ × seeds) trained as one program.

Each run is a ``models.SAE`` (ReLU) of the largest width ``K_max`` whose latents beyond its
width are masked (zero codes, no gradient), trained with Adam on

    (1/B) Σ_n [ ½‖x_n − x̂_n‖² + λ Σ_k z_kn ],   ‖W_dec[k]‖ = 1 (projected after each step),

which is THEORY §0's objective with the encoder's codes in place of the optimal
ones. All runs share one minibatch order (per-epoch permutations) and one vmapped
Adam step, so the whole grid compiles once. Where the data lives is a strategy
(``jaxsae._streaming.pass_for``), not a second implementation:

1. one pass gives the data mean (the initial decoder bias) and ``Σ‖x‖²``;
2. training scans the minibatches in segments: resident data is one segment of
   every step, each minibatch gathered on the device; a memmap or a list of chunks
   is read by row index on the host, ``S = chunk_size // B`` steps at a time
   (sorted reads, memmap pages dropped), and the segment's ``(S, B, d)`` rows
   scanned by the same step;
3. one more pass sums, for all runs at once, what the table needs: the loss,
   ``‖R‖²``, active counts, ``c_k = Σ_n z_kn r_n``, ``‖z_k‖₁`` (THEORY §2) and the
   terms ``h_λ(‖x_n − b‖)`` of (W).

Streamed memory: a chunk or segment (``max(chunk_size, B)`` rows) on host and
device, plus one epoch's permutation of N ``int32`` row indices.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._rows import Rows
from .._streaming import DEFAULT_CHUNK, Resident, Streamed, Summed, add_trees
from .._validate import check_lam
from ..certificates._wide import wide_bound_terms
from ..models._activations import ReLU
from ..models._objective import atom_first_order
from ..models._penalties import L1
from ..models._sae import SAE
from ._dl_sweep_result import SweepResult
from ._sae_step import LinearSchedule, TrainState, _update


def _codes(sae: SAE, X, mask):
    """The encoder's codes of the rows of ``X``; latents beyond the run's width are masked."""
    return jnp.where(mask, jax.vmap(sae.encode)(X), 0)


def _init(b_dec, K_max: int, seed: int) -> TrainState:
    """One run's ReLU SAE (unit decoder rows) from ``key(seed)``, ``b_dec`` at the data
    mean, and its ``train_sae`` state."""
    sae = SAE.init(
        b_dec.shape[0], K_max, ReLU(), key=jax.random.key(seed), dtype=b_dec.dtype, decoder_norm=1.0
    )
    sae = eqx.tree_at(lambda s: s.b_dec, sae, b_dec)
    zeros = jnp.zeros((K_max,), jnp.int32)
    opt_state = optax.scale_by_adam().init(eqx.filter(sae, eqx.is_inexact_array))
    key = jax.random.key_data(jax.random.key(seed))
    return TrainState(sae, opt_state, jnp.zeros((), jnp.int32), key, zeros, zeros)


def _grid_arrays(grid, b_dec):
    """Stacked initial training states, masks ``(R, K_max)`` and λ ``(R,)`` of the grid."""
    K_max = max(w for w, _, _ in grid)
    states = jax.tree.map(lambda *a: jnp.stack(a), *[_init(b_dec, K_max, s) for _, _, s in grid])
    masks = jnp.asarray([[j < w for j in range(K_max)] for w, _, _ in grid])
    lams = jnp.asarray([lam for _, lam, _ in grid], b_dec.dtype)
    return states, masks, lams


def _epoch_keys(steps: int, B: int, N: int):
    """One key per epoch; epoch e visits the points in ``permutation(keys[e], N)`` order."""
    return jax.random.split(jax.random.key(0), -(-steps * B // N))


@eqx.filter_jit
def _train_segment(states, masks, lams, source, batches, lr):
    """Scan ``train_sae``'s step (Adam at a constant ``lr``, ``L1()`` with the decoder
    projected to unit rows), vmapped over the runs, over a segment of minibatches.

    ``source`` None: ``batches`` are the rows ``(S, B, d)``; else ``batches`` are row
    indices ``(S, B)`` into the resident ``source`` (gathered on the device)."""
    lr = jnp.asarray(lr, lams.dtype)
    constant = LinearSchedule(lr, 0 * lr, 0 * lr, 0 * lr)
    rest = (jnp.zeros((), jnp.int32), constant, optax.scale_by_adam(), L1(), None)

    def step(states, b):
        Xb = b if source is None else source[b]
        one = lambda s, m, lam: _update((lam, *rest), s, Xb, mask=m)[0]  # noqa: E731
        return jax.vmap(one)(states, masks, lams), None

    return jax.lax.scan(step, states, batches)[0]


def _acc(x):
    """Sums in float64 where x64 is on (the table must not depend on the chunking)."""
    return x.astype(jax.dtypes.canonicalize_dtype(jnp.float64))


def _stats_chunk(Xc, valid):
    Xv = _acc(jnp.where(valid[:, None], Xc, 0))
    return {"xsum": jnp.sum(Xv, axis=0), "xsq": jnp.sum(Xv * Xv)}


def _table_chunk(Xc, valid, params, masks, lams):
    """Per run, the chunk's sums behind ``_measure`` and (W); runs vmapped."""

    def run(p, mask, lam):
        Z = jnp.where(valid[:, None], _codes(p, Xc, mask), 0)
        R = jnp.where(valid[:, None], Xc - jax.vmap(p.decode)(Z), 0)
        rr = jnp.sum(R * R, axis=-1)
        return {
            "loss": jnp.sum(_acc(0.5 * rr + lam * jnp.sum(Z, axis=-1))),
            "err": jnp.sum(_acc(rr)),
            "active": jnp.sum(Z > 0),
            "C": _acc(Z).T @ _acc(R),
            "l1": jnp.sum(_acc(Z), axis=0),
            "bound": jnp.sum(_acc(jnp.where(valid, wide_bound_terms(Xc - p.b_dec, lam), 0))),
        }

    return jax.vmap(run)(params, masks, lams)


def sweep_sae(X, grid, *, steps: int, batch_size: int, lr: float, tol: float, chunk_size=None,
              progress: bool = False, streamed: bool = False, dtype=None) -> SweepResult:  # fmt: skip
    """Train the SAE grid ``[(width, λ, seed), ...]`` on ``X`` and tabulate it (module doc).

    ``X``: a validated array, or (``streamed``) a memmap / list of chunks."""
    chunk = DEFAULT_CHUNK if chunk_size is None else int(chunk_size)
    if streamed:
        rows = Rows(X, "sweep(learner=SAETrainer())", dtype)  # random access, or one clear error
        source, dtype, d = rows.source, rows.dtype, rows.d
        how = Streamed(chunk, desc="sweep (sae)")
    else:  # scanned in chunks: the table pass holds (runs, chunk, K_max) codes, not (runs, N, K_max)
        rows, source, dtype, d = None, X, X.dtype, X.shape[1]
        how = Resident(min(chunk, X.shape[0]))
    for _, lam, _ in grid:
        check_lam(lam, dtype)
    if int(batch_size) < 1:
        raise ValueError(f"sae_batch_size must be a positive integer, got {batch_size}.")
    stats, _, N = how.run(Summed(_stats_chunk), add_trees, (source,), (), dtype)
    states, masks, lams = _grid_arrays(grid, (stats["xsum"] / N).astype(dtype))
    B = min(int(batch_size), N)
    S = steps if how.resident else max(1, min(steps, how.chunk_size // B))
    bar = _bar(progress, steps)
    for idx in _segments(_epoch_keys(steps, B, N), N, B, steps, S):
        if how.resident:
            batches = jnp.asarray(idx)
        else:
            batches = jnp.asarray(rows.gather(idx.reshape(-1)).reshape(*idx.shape, d))
        states = _train_segment(states, masks, lams, source if how.resident else None, batches, lr)
        if bar is not None:
            bar.update(idx.shape[0])
    if bar is not None:
        bar.close()
    params = states.sae
    sums, _, _ = how.run(Summed(_table_chunk), add_trees, (source,), (params, masks, lams), dtype)
    return _tabulate(grid, params, masks, lams, sums, stats, N, tol)


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


def _first_order(W_dec, C, l1, mask, lam, N):
    """Max Riemannian gradient norm and max alignment error of (A), from ``C`` and ``‖z_k‖₁``."""
    grad, align, _ = atom_first_order(W_dec, C, l1, lam, N, mask & (l1 > 0))
    return jnp.max(jnp.where(mask, jnp.linalg.norm(grad, axis=1), 0)), jnp.max(align)


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


def _table(grid, params: SAE, masks, lams, m: dict, bound, tol: float) -> SweepResult:
    """The ``SweepResult`` from the runs' ``_measure`` entries ``m`` and bounds (W)."""
    return SweepResult(
        width=jnp.asarray([w for w, _, _ in grid]),
        lam=lams,
        seed=jnp.asarray([s for _, _, s in grid]),
        objective=m["objective"],
        bound=bound,
        gap=m["objective"] - bound,
        l0=m["l0"],
        explained_variance=m["explained_variance"],
        dead=m["dead"],
        grad_norm=m["grad_norm"],
        alignment=m["alignment"],
        converged=(m["grad_norm"] <= tol) & (m["alignment"] <= tol),
        atoms=params.W_dec,
        bias=params.b_dec,
        mask=masks,
        free_bias=True,
        W_enc=params.W_enc,
        b_enc=jnp.where(masks, params.b_enc, 0),
    )


def _bar(enabled: bool, steps: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=steps, desc="sweep (sae)", unit="step", leave=False)
