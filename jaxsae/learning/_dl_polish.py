"""Exact codes on a fixed support, for the envelope gradient of ``learn_dictionary``.

``sparse_code`` certifies codes by their duality gap, which bounds the error of
the codes only by ``√gap``; a warm start already within tolerance comes back
unchanged. The reduced gradient ``−(1/N) Σ r_n z_nᵀ`` and the alignment of (A)
need the codes exact to rounding, so after each solve every point is re-solved
on its support ``S`` (THEORY §1: ``G_SS z_S = D_Sᵀ y − λ1``) and the result is kept
where it is nonnegative and its duality gap stays within the certified bound.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..solvers._cholesky import spd_solve
from ..solvers._kkt import kkt_from_parts
from ..solvers._lars_ffi import available as kernel_available, resolve


def _point(z, b, G, lam, mask, cap: int):
    top, idx = jax.lax.top_k(jnp.where(mask, z, 0), cap)
    a = (top > 0).astype(G.dtype)
    Gc = G[idx][:, idx] * a[:, None] * a[None, :] + jnp.diag(1 - a)
    zc = spd_solve(Gc, (b[idx] - lam) * a) * a
    return jnp.zeros_like(z).at[idx].set(zc, unique_indices=True)


def exact_on_support(Z, Y, atoms, lam, mask, tol):
    """Codes ``Z`` re-solved exactly on their supports where that stays certified.

    Args:
        Z: ``(N, K)`` certified codes; ``Y``: ``(N, d)`` centred data ``X − b``;
        atoms: ``(K, d)``; tol: the relative gap tolerance the codes met.
    """
    G = jnp.where(mask[:, None] & mask[None, :], atoms @ atoms.T, 0)
    cap = min(atoms.shape[0], atoms.shape[1], 64)
    if kernel_available():  # CPU: the compiled per-point solve (no batched factorisations)
        Zp, _ = resolve(Y @ atoms.T, G, jnp.where(mask, Z, 0), lam, cap=cap)
    else:
        point = jax.vmap(_point, in_axes=(0, 0, None, None, None, None))
        Zp = point(Z, Y @ atoms.T, G, lam, mask, cap)

    def gap(Z):
        R = Y - Z @ atoms
        return kkt_from_parts(Z, R @ atoms.T, R, lam, mask).gap

    bound = jnp.maximum(gap(Z), tol * 0.5 * jnp.sum(Y * Y, axis=1))
    gp = gap(Zp)
    ok = (gp <= bound) & jnp.all(Zp >= 0, axis=1) & jnp.isfinite(gp)
    return jnp.where(ok[:, None], Zp, Z)
