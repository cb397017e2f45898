"""Implicit differentiation of optimal nonnegative-lasso codes on their support.

At a solution with support ``S`` (and no degenerate pairs), the codes are the
smooth function ``z_S = G_SS⁻¹(D_Sᵀ y − λ1)`` of ``(D, b, x, λ)`` (THEORY §1), so

    G_SS ż_S = Ḋ_Sᵀ r + D_Sᵀ (ẏ − Ḋ z) − λ̇ 1,   ż_{Sᶜ} = 0,   ẏ = ẋ − ḃ.

``implicit_codes`` is the identity on the solver's output with this rule as its
JVP; JAX transposes it for reverse mode, so ``grad`` and ``vmap`` both work.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from ._active_set import gather_gram, solve_on_support


@partial(jax.custom_jvp, nondiff_argnums=(6,))
def implicit_codes(Z, atoms, bias, mask, X, lam, cap: int):
    """Return ``Z`` (already optimal); differentiate it implicitly (see module doc)."""
    del atoms, bias, mask, X, lam
    return Z


@implicit_codes.defjvp
def _implicit_codes_jvp(cap, primals, tangents):
    Z, atoms, bias, mask, X, lam = primals
    _, dA, db, _, dX, dlam = tangents
    Z = jax.lax.stop_gradient(Z)
    R = X - bias - Z @ atoms
    rhs = R @ dA.T + (dX - db - Z @ dA) @ atoms.T - dlam
    G = atoms @ atoms.T

    def point(z, rhs_n):
        top, idx = jax.lax.top_k(jnp.where(mask, z, 0), cap)
        active = top > 0
        dz = solve_on_support(gather_gram(G, idx), rhs_n[idx], active)
        return jnp.zeros_like(z).at[idx].set(dz, unique_indices=True)

    return Z, jax.vmap(point)(Z, rhs)
