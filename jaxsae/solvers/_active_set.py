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

from ._cholesky import spd_solve


def candidate_indices(Z, g_minus_lam, mask, cap: int, max_active: int):
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
    # Ranked by code, the first ``max_active`` (≤ d: the rank of any active Gram
    # block) active atoms start the active set.
    first = jnp.arange(cap) < max_active
    return idx, jnp.isfinite(top), (top >= 2 * span) & first


def gather_gram(G, idx):
    """``G[idx_i, idx_j]`` for index sets ``idx`` of shape ``(..., c)`` → ``(..., c, c)``."""
    return G[idx[..., :, None], idx[..., None, :]]


def solve_on_support(Gc, rhs, active):
    """Solve ``G_SS z_S = rhs_S`` with ``z = 0`` off ``S`` (masked Cholesky; batched)."""
    a = active.astype(Gc.dtype)
    eye = jnp.eye(Gc.shape[-1], dtype=Gc.dtype)
    M = Gc * a[..., :, None] * a[..., None, :] + eye * (1 - a)[..., None, :]
    return spd_solve(M, rhs * a) * a


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


def primal_active_set(Gc, bc, active, valid, z0, max_iter: int, max_add: int = 4):
    """Primal (Lawson–Hanson style) active set on the candidate sets: monotone.

    From feasible codes ``z0`` (nonnegative, zero off ``active``): solve on the
    active set; if some codes are negative, step back along the segment to the
    first one that hits zero and drop it; otherwise add the strongest violators.
    Every step lowers the objective, so unlike PDAS it cannot cycle. Used in the
    later rounds, where points that PDAS could not settle are revisited.
    """
    tiny = jnp.finfo(bc.dtype).tiny

    def body(state):
        active, z, _, k = state
        w = solve_on_support(Gc, bc, active)
        ok = jnp.all(jnp.isfinite(w), axis=-1, keepdims=True)
        neg = active & (w <= 0)
        any_neg = jnp.any(neg, axis=-1, keepdims=True)
        ratio = jnp.where(neg, z / jnp.maximum(z - w, tiny), jnp.inf)
        alpha = jnp.minimum(jnp.min(ratio, axis=-1, keepdims=True), 1)
        blocking = neg & (ratio <= alpha)
        znew = jnp.where(any_neg, z + alpha * (w - z), w)
        znew = jnp.where(active & ~blocking, jnp.maximum(znew, 0), 0)
        gc = bc - jnp.einsum("...ij,...j->...i", Gc, znew)
        viol = jnp.where(valid & ~active & (gc > 0), gc, -jnp.inf)
        kth = jax.lax.top_k(viol, min(max_add, viol.shape[-1]))[0][..., -1:]
        add = ~any_neg & jnp.isfinite(viol) & (viol >= kth)
        new = valid & ((active & ~blocking) | add)
        weakest = jnp.argmin(jnp.where(active, z, jnp.inf), axis=-1, keepdims=True)
        drop = jnp.arange(active.shape[-1]) == weakest
        new = jnp.where(ok, new, active & ~drop)
        znew = jnp.where(ok, znew, jnp.where(drop, 0, z))
        return new, znew, jnp.any(new != active), k + 1

    def cond(state):
        _, _, changed, k = state
        return changed & (k < max_iter)

    active = active & valid
    z0 = jnp.where(active, jnp.maximum(z0, 0), 0)
    active, z, _, _ = jax.lax.while_loop(cond, body, (active, z0, jnp.array(True), 0))
    return active, z


def polish(
    Z,
    g_minus_lam,
    B,
    G,
    lam,
    mask,
    cap: int,
    n_iter: int,
    ident_dtype,
    ident_iter: int,
    rank=None,
    monotone: bool = False,
):
    """Exact codes on the supports identified from ``Z`` (batched over points).

    With a cheaper ``ident_dtype`` than the working dtype, ``ident_iter`` PDAS
    solves in ``ident_dtype`` find the support and ``n_iter`` more in the working
    dtype make it exact (``n_iter = 1``: a single solve, checked by the caller's
    duality gap). Otherwise ``n_iter`` PDAS solves in the working dtype.

    Args:
        Z: ``(N, K)`` nonnegative iterate; g_minus_lam: ``(N, K)`` its ``g − λ``
            (any precision; it only ranks candidates); B: ``(N, K)`` ``= Y Dᵀ``;
            G: ``(K, K)`` Gram.
        cap: candidate-set size (static); rank: at most this many atoms start
            active (the data dimension d bounds the rank of ``G``); monotone: use
            ``primal_active_set`` instead of PDAS in the working dtype.
    Returns:
        ``(N, K)`` codes (zero off the candidates).
    """
    idx, valid, active = candidate_indices(
        Z, g_minus_lam, mask, cap, G.shape[0] if rank is None else rank
    )
    Gc = gather_gram(G, idx)
    bc = jnp.take_along_axis(B, idx, axis=-1) - lam
    zc0 = jnp.take_along_axis(Z, idx, axis=-1)
    if jnp.dtype(ident_dtype) != Gc.dtype:
        Gci, bci = Gc.astype(ident_dtype), bc.astype(ident_dtype)
        active, _ = pdas(Gci, bci, active, valid, zc0.astype(ident_dtype), ident_iter)
    if monotone:
        active, zc = primal_active_set(Gc, bc, active, valid, zc0, n_iter)
    else:
        active, zc = pdas(Gc, bc, active, valid, zc0, n_iter)
    zc = jnp.where(valid & active, jnp.maximum(zc, 0), 0)
    rows = jnp.arange(Z.shape[0])[:, None]
    return jnp.zeros_like(Z).at[rows, idx].set(zc, unique_indices=True)
