"""Cheap approximate codes for the alternating warm-up of ``learn_dictionary``.

The warm-up only needs codes good enough to move the atoms the right way, so it
runs a fixed number of accelerated projected-gradient (FISTA) iterations on the
Gram form ``½zᵀGz − (Dᵀy − λ)ᵀz``, ``z ≥ 0`` (THEORY §1), warm-started from the
previous codes: a few ``(N, K) × (K, K)`` products per outer step, no small
solves. Every iterate is feasible, so ``L(D, Z) ≥ F(D)``: the warm-up objective
is an upper bound on the reduced objective. The polishing phase then uses
certified codes from ``sparse_code``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def lipschitz(G, n_iter: int = 30):
    """An upper estimate of ``λ_max(G)`` by power iteration (2% margin)."""
    v = jnp.ones(G.shape[0], G.dtype) / jnp.sqrt(G.shape[0])

    def body(_, v):
        w = G @ v
        return w / jnp.maximum(jnp.linalg.norm(w), jnp.finfo(G.dtype).tiny)

    v = jax.lax.fori_loop(0, n_iter, body, v)
    return 1.02 * jnp.maximum(v @ G @ v, jnp.finfo(G.dtype).tiny)


def approximate_codes(atoms, Y, lam, mask, Z, n_steps: int):
    """``n_steps`` FISTA iterations (with gradient restart) from ``Z`` for data ``Y = X − b``."""
    G = jnp.where(mask[:, None] & mask[None, :], atoms @ atoms.T, 0)
    shift = jnp.where(mask, Y @ atoms.T - lam, -jnp.inf)
    step = 1 / lipschitz(G)
    Z = jnp.where(mask, jnp.maximum(Z, 0), 0)

    def body(_, carry):
        Z, Zprev, t = carry
        beta = (t - 1) / (t + 1 + 2 * jnp.sqrt(t))
        V = Z + beta[:, None] * (Z - Zprev)
        Znew = jnp.maximum(V - (V @ G - shift) * step, 0)
        restart = jnp.sum((V - Znew) * (Znew - Z), axis=1) > 0
        tnew = jnp.where(restart, 1.0, 0.5 * (1 + jnp.sqrt(1 + 4 * t * t))).astype(t.dtype)
        return Znew, jnp.where(restart[:, None], Znew, Z), tnew

    t0 = jnp.ones(Z.shape[0], Z.dtype)
    Z, _, _ = jax.lax.fori_loop(0, n_steps, body, (Z, Z, t0))
    return Z
