"""Exact active-set polishing of nonnegative-lasso codes (THEORY §1).

On a support ``S`` the optimal codes solve ``G_SS z_S = D_Sᵀ y − λ1``. From an
approximate iterate, a primal–dual active-set (PDAS) iteration restricted to a
fixed-size candidate set (the current support plus the strongest KKT violators)
drops negative codes and adds violating atoms until the support is stable.
The support is identified in a cheap dtype (float32) and the codes are then
solved once more, exactly, in the working dtype, where a final PDAS check
corrects any change. Everything is batched over points with fixed shapes, so
it jits, vmaps and chunks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def candidate_indices(Z, g_minus_lam, mask, cap: int):
    """The ``cap`` most promising atoms of each point: active first, then violators.

    Returns the indices, which are valid (unmasked), and which are active now.

    Scores are ranked in float32 (``top_k`` is much cheaper there); ranking only
    picks candidates, it never decides optimality.
    """
    Z = Z.astype(jnp.float32)
    gml = jnp.where(mask, g_minus_lam.astype(jnp.float32), 0)
    span = jnp.max(jnp.abs(gml), axis=-1, keepdims=True) + 1
    score = jnp.where(Z > 0, Z + 2 * span, gml)
    score = jnp.where(mask, score, -jnp.inf)
    top, idx = jax.lax.top_k(score, cap)
    return idx, jnp.isfinite(top), top >= 2 * span


def gather_gram(G, idx):
    """``G[idx_i, idx_j]`` for index sets ``idx`` of shape ``(..., c)`` → ``(..., c, c)``."""
    return G[idx[..., :, None], idx[..., None, :]]


def solve_on_support(Gc, rhs, active):
    """Solve ``G_SS z_S = rhs_S`` with ``z = 0`` off ``S`` (masked Cholesky; batched)."""
    a = active.astype(Gc.dtype)
    eye = jnp.eye(Gc.shape[-1], dtype=Gc.dtype)
    M = Gc * a[..., :, None] * a[..., None, :] + eye * (1 - a)[..., None, :]
    L = jax.lax.linalg.cholesky(M, symmetrize_input=False)
    y = jax.lax.linalg.triangular_solve(L, (rhs * a)[..., :, None], left_side=True, lower=True)
    x = jax.lax.linalg.triangular_solve(L, y, left_side=True, lower=True, transpose_a=True)
    return x[..., 0] * a


def pdas(Gc, bc, active, valid, priority, max_iter: int, max_add: int = 4):
    """PDAS on the candidate sets until no support changes (at most ``max_iter`` solves).

    ``priority`` (``(..., c)``, e.g. the starting codes) orders active atoms for
    removal when an active Gram block is singular. Returns the final support and
    the codes solved on it (``(..., c)`` each).
    """

    def body(state):
        active, zprev, _, k = state
        zc = solve_on_support(Gc, bc, active)
        # A singular active Gram block (more atoms than its rank) gives NaN: that
        # point keeps its previous support and codes and stops changing.
        ok = jnp.all(jnp.isfinite(zc), axis=-1, keepdims=True)
        zc = jnp.where(ok, zc, zprev)
        gc = bc - jnp.einsum("...ij,...j->...i", Gc, zc)
        # Add only the few strongest violators per solve: adding all at once
        # overshoots (and can exceed the rank of the candidate Gram block).
        viol = jnp.where(valid & ~active & (gc > 0), gc, -jnp.inf)
        kth = jax.lax.top_k(viol, min(max_add, viol.shape[-1]))[0][..., -1:]
        new = valid & ((active & (zc > 0)) | (jnp.isfinite(viol) & (viol >= kth)))
        # On failure drop the weakest active atom (by ``priority``) and retry.
        weakest = jnp.argmin(jnp.where(active, priority, jnp.inf), axis=-1, keepdims=True)
        drop = jnp.arange(active.shape[-1]) == weakest
        new = jnp.where(ok, new, active & ~drop)
        return new, zc, jnp.any(new != active), k + 1

    def cond(state):
        _, _, changed, k = state
        return changed & (k < max_iter)

    zc0 = jnp.zeros(bc.shape, bc.dtype)
    active, zc, _, _ = jax.lax.while_loop(cond, body, (active & valid, zc0, jnp.array(True), 0))
    return active, zc


def polish(Z, g_minus_lam, B, G, lam, mask, cap: int, n_iter: int, ident_dtype, ident_iter: int):
    """Exact codes on the supports identified from ``Z`` (batched over points).

    With a cheaper ``ident_dtype`` than the working dtype, ``ident_iter`` PDAS
    solves in ``ident_dtype`` find the support and ``n_iter`` more in the working
    dtype make it exact (``n_iter = 1``: a single solve, checked by the caller's
    duality gap). Otherwise ``n_iter`` PDAS solves in the working dtype.

    Args:
        Z: ``(N, K)`` nonnegative iterate; g_minus_lam: ``(N, K)`` its ``g − λ``
            (any precision; it only ranks candidates); B: ``(N, K)`` ``= Y Dᵀ``;
            G: ``(K, K)`` Gram.
        cap: candidate-set size (static).
    Returns:
        ``(N, K)`` codes (zero off the candidates).
    """
    idx, valid, active = candidate_indices(Z, g_minus_lam, mask, cap)
    Gc = gather_gram(G, idx)
    bc = jnp.take_along_axis(B, idx, axis=-1) - lam
    zc0 = jnp.take_along_axis(Z, idx, axis=-1)
    if jnp.dtype(ident_dtype) != Gc.dtype:
        Gci, bci = Gc.astype(ident_dtype), bc.astype(ident_dtype)
        active, _ = pdas(Gci, bci, active, valid, zc0.astype(ident_dtype), ident_iter)
    active, zc = pdas(Gc, bc, active, valid, zc0, n_iter)
    zc = jnp.where(valid & active, jnp.maximum(zc, 0), 0)
    rows = jnp.arange(Z.shape[0])[:, None]
    return jnp.zeros_like(Z).at[rows, idx].set(zc, unique_indices=True)
