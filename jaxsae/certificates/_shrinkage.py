"""The shrinkage component of a residual, ``λ D_S G_S⁻¹ 1`` of (R)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def shrinkage_component(
    atoms: Float[Array, "K d"], z: Float[Array, " K"], lam, cap: int
) -> tuple[Float[Array, " d"], Array, Array]:
    """``s = λ D_S G_S⁺ 1`` for one point with active set ``S = {k : z_k > 0}`` (R).

    With KKT codes ``D_Sᵀ r = λ1``, so ``s`` is the orthogonal projection of the
    residual on ``span(D_S)``: ``r = s + r⊥`` (THEORY §3). Only the ``cap``
    largest codes are considered (a unique solution has ``|S| ≤ d``).

    Returns:
        ``(s, singular, overflow)``: the component, whether ``G_S`` is
        numerically singular (a non-regular point, the pseudo-inverse is used),
        and whether ``|S| > cap`` (then ``s`` is only approximate).
    """
    _, idx = jax.lax.top_k(z, cap)
    active = z[idx] > 0
    Dc = atoms[idx]
    both = active[:, None] & active[None, :]
    Gm = jnp.where(both, Dc @ Dc.T, jnp.eye(cap, dtype=Dc.dtype))
    evals, evecs = jnp.linalg.eigh(Gm)
    cutoff = cap * jnp.finfo(Dc.dtype).eps * 100
    inv = jnp.where(evals > cutoff, 1 / jnp.where(evals > cutoff, evals, 1), 0)
    rhs = jnp.where(active, lam, 0).astype(Dc.dtype)
    w = evecs @ (inv * (evecs.T @ rhs))
    singular = jnp.min(evals) <= jnp.sqrt(jnp.finfo(Dc.dtype).eps)
    overflow = jnp.sum(z > 0) > jnp.sum(active)
    return w @ Dc, singular, overflow
