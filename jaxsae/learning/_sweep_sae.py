"""``sweep(method="sae")``: many vanilla SAEs (widths × λ × seeds) trained as one program.

Each run is a ``models.SAE`` (ReLU) of the largest width ``K_max`` whose latents beyond its
width are masked (zero codes, no gradient), trained with Adam on

    (1/B) Σ_n [ ½‖x_n − x̂_n‖² + λ Σ_k z_kn ],   ‖W_dec[k]‖ = 1 (projected after each step),

which is THEORY §0's objective with the encoder's codes in place of the optimal
ones. All runs share one minibatch order and one ``lax.scan`` over steps, vmapped
over the runs axis, so the whole grid compiles once.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from ..certificates._wide import wide_bound
from ..models._activations import ReLU
from ..models._objective import atom_first_order
from ..models._sae import SAE
from ._dl_sweep_result import SweepResult


def _codes(sae: SAE, X, mask):
    """The encoder's codes of the rows of ``X``; latents beyond the run's width are masked."""
    return jnp.where(mask, jax.vmap(sae.encode)(X), 0)


def _loss(sae: SAE, X, mask, lam):
    Z = _codes(sae, X, mask)
    R = X - jax.vmap(sae.decode)(Z)
    return jnp.mean(0.5 * jnp.sum(R * R, axis=-1) + lam * jnp.sum(Z, axis=-1))


def _init(b_dec, K_max: int, seed: int) -> SAE:
    """One run's ReLU SAE (unit decoder rows) from ``key(seed)``; ``b_dec`` starts at the
    data mean."""
    sae = SAE.init(
        b_dec.shape[0], K_max, ReLU(), key=jax.random.key(seed), dtype=b_dec.dtype, decoder_norm=1.0
    )
    return eqx.tree_at(lambda s: s.b_dec, sae, b_dec)


def _grid_arrays(grid, b_dec):
    """Stacked initial parameters, masks ``(R, K_max)`` and λ ``(R,)`` of the grid."""
    K_max = max(w for w, _, _ in grid)
    params = jax.tree.map(lambda *a: jnp.stack(a), *[_init(b_dec, K_max, s) for _, _, s in grid])
    masks = jnp.asarray([[j < w for j in range(K_max)] for w, _, _ in grid])
    lams = jnp.asarray([lam for _, lam, _ in grid], b_dec.dtype)
    return params, masks, lams


def _epoch_keys(steps: int, B: int, N: int):
    """One key per epoch; epoch e visits the points in ``permutation(keys[e], N)`` order."""
    return jax.random.split(jax.random.key(0), -(-steps * B // N))


def _step(carry, Xb, masks, lams, opt):
    """One Adam step of every run on the shared minibatch ``Xb`` ``(B, d)``."""

    def one(p, s, mask, lam, Xb):
        g = jax.grad(_loss)(p, Xb, mask, lam)
        with jax.numpy_dtype_promotion("standard"):
            updates, s = opt.update(g, s, p)
        p = eqx.apply_updates(p, updates)
        W = p.W_dec
        return eqx.tree_at(lambda q: q.W_dec, p, W / jnp.linalg.norm(W, axis=1, keepdims=True)), s

    p, s = carry
    return jax.vmap(one, in_axes=(0, 0, 0, 0, None))(p, s, masks, lams, Xb)


@eqx.filter_jit
def _train(params: SAE, X, masks, lams, batches, lr):
    """Train every run (leading axis of ``params``, ``masks``, ``lams``) over ``batches``."""
    opt = optax.adam(lr)
    opt_state = jax.vmap(opt.init)(params)

    def step(carry, idx):
        return _step(carry, X[idx], masks, lams, opt), None

    (params, _), _ = jax.lax.scan(step, (params, opt_state), batches)
    return params


def _measure(p: SAE, X, mask, lam):
    """Table entries of one run; the codes are the SAE encoder's (folded: unit decoder rows)."""
    Z = _codes(p, X, mask)
    R = X - jax.vmap(p.decode)(Z)
    N = X.shape[0]
    objective = jnp.mean(0.5 * jnp.sum(R * R, axis=-1) + lam * jnp.sum(Z, axis=-1))
    C = Z.T @ R  # c_k = Σ_n z_kn r_n  (THEORY §2)
    l1 = jnp.sum(Z, axis=0)
    grad_norm, alignment = _first_order(p.W_dec, C, l1, mask, lam, N)
    var = jnp.mean(jnp.sum(X * X, axis=-1)) - jnp.sum(jnp.mean(X, axis=0) ** 2)
    return {
        "objective": objective,
        "l0": jnp.mean(jnp.sum(Z > 0, axis=-1)).astype(X.dtype),
        "explained_variance": 1 - jnp.mean(jnp.sum(R * R, axis=-1)) / var,
        "dead": jnp.sum(mask & (l1 == 0)),
        "grad_norm": grad_norm,
        "alignment": alignment,
    }


def _first_order(W_dec, C, l1, mask, lam, N):
    """Max Riemannian gradient norm and max alignment error of (A), from ``C`` and ``‖z_k‖₁``."""
    grad, align, _ = atom_first_order(W_dec, C, l1, lam, N, mask & (l1 > 0))
    return jnp.max(jnp.where(mask, jnp.linalg.norm(grad, axis=1), 0)), jnp.max(align)


def sweep_sae(X, grid, *, steps: int, batch_size: int, lr: float, tol: float) -> SweepResult:
    """Train the SAE grid ``[(width, λ, seed), ...]`` and tabulate it (see module doc)."""
    N = X.shape[0]
    B = min(batch_size, N)
    params, masks, lams = _grid_arrays(grid, jnp.mean(X, axis=0))
    perms = jax.vmap(lambda k: jax.random.permutation(k, N))(_epoch_keys(steps, B, N))
    batches = perms.reshape(-1)[: steps * B].reshape(steps, B)
    params = _train(params, X, masks, lams, batches, lr)
    m = jax.vmap(_measure, in_axes=(0, None, 0, 0))(params, X, masks, lams)
    bound = jax.vmap(lambda lam, b: wide_bound(X, lam, b))(lams, params.b_dec)
    return _table(grid, params, masks, lams, m, bound, tol)


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
    )
