"""The shrinkage component of a residual, ``λ D_S G_S⁻¹ 1`` of (R)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Real

from .._typing import ArrayLike
from ..solvers._cholesky import cho_solve, cholesky


def shrinkage_component(
    atoms: Real[ArrayLike, "K d"], z: Real[ArrayLike, " K"], lam, cap: int
) -> tuple[Float[Array, " d"], Array, Array]:
    """``s = λ D_S G_S⁺ 1`` for one point with active set ``S = {k : z_k > 0}`` (R).

    With KKT codes ``D_Sᵀ r = λ1``, so ``s`` is the orthogonal projection of the
    residual on ``span(D_S)``: ``r = s + r⊥`` (THEORY §3). Only the ``cap``
    largest codes are considered (a unique solution has ``|S| ≤ d``).

    Returns:
        ``(s, singular, overflow)``: the component, whether ``G_S`` is
        numerically singular (a non-regular point; flagged when a Cholesky
        pivot² is below √eps, a sufficient sign),
        and whether ``|S| > cap`` (then ``s`` is only approximate).
    """
    _, idx = jax.lax.top_k(z, cap)
    active = z[idx] > 0
    Dc = atoms[idx]
    eps = jnp.finfo(Dc.dtype).eps
    both = active[:, None] & active[None, :]
    # A tiny ridge keeps exactly singular G_S (duplicate atoms) finite; at KKT codes
    # λ1 lies in range(G_S), so the ridge solution tends to the pseudo-inverse one.
    Gm = jnp.where(both, Dc @ Dc.T, jnp.eye(cap, dtype=Dc.dtype)) + 10 * cap * eps * jnp.eye(
        cap, dtype=Dc.dtype
    )
    L = cholesky(Gm)  # far cheaper than eigh on CPU (batched small solves)
    rhs = jnp.where(active, lam, 0).astype(Dc.dtype)
    w = cho_solve(L, rhs)
    # min pivot² ≥ λ_min(G_S): a small pivot proves a (numerically) singular G_S.
    singular = jnp.min(jnp.diagonal(L) ** 2) <= jnp.sqrt(eps)
    overflow = jnp.sum(z > 0) > jnp.sum(active)
    return w @ Dc, singular, overflow
