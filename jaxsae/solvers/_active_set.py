"""Exact active-set polishing of nonnegative-lasso codes (THEORY §1).

On a support ``S`` the optimal codes solve ``G_SS z_S = D_Sᵀ y − λ1``. Starting
from an approximate iterate, a primal–dual active-set (PDAS) iteration restricted
to a fixed-size candidate set (the current support plus the strongest KKT
violators) drops negative codes and adds violating atoms until the support is
stable; the codes are then exact to rounding. Everything is per point and
fixed-shape, so it vmaps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl


def candidate_indices(z, g_minus_lam, mask, cap: int):
    """The ``cap`` most promising atoms of one point: active first, then violators."""
    span = jnp.max(jnp.abs(jnp.where(mask, g_minus_lam, 0))) + 1
    score = jnp.where(z > 0, z + 2 * span, g_minus_lam)
    score = jnp.where(mask, score, -jnp.inf)
    top, idx = jax.lax.top_k(score, cap)
    return idx, jnp.isfinite(top), top > 0


def solve_on_support(Gc, rhs, active):
    """Solve ``G_SS z_S = rhs_S`` with ``z = 0`` off ``S`` (a masked Cholesky solve)."""
    a = active.astype(Gc.dtype)
    M = Gc * a[:, None] * a[None, :] + jnp.diag(1 - a)
    factor = jsl.cho_factor(M, lower=True)
    return jsl.cho_solve(factor, rhs * a) * a


def pdas_point(z, b, G, lam, mask, cap: int, n_iter: int):
    """Polish one point's codes; returns the candidate codes scattered into ``(K,)``.

    Args:
        z: ``(K,)`` current nonnegative codes.
        b: ``(K,)`` ``Dᵀy``.
        G: ``(K, K)`` Gram matrix.
        cap: candidate-set size (static).
        n_iter: PDAS iterations (static).
    """
    g_minus_lam = b - G @ z - lam
    idx, valid, active = candidate_indices(z, g_minus_lam, mask, cap)
    Gc = G[idx][:, idx]
    bc = b[idx] - lam

    def body(_, active):
        zc = solve_on_support(Gc, bc, active)
        gc = bc - Gc @ zc
        return valid & ((active & (zc > 0)) | (~active & (gc > 0)))

    active = jax.lax.fori_loop(0, n_iter, body, active & valid)
    zc = jnp.maximum(solve_on_support(Gc, bc, active), 0)
    return jnp.zeros_like(z).at[idx].set(jnp.where(valid, zc, 0), unique_indices=True)
