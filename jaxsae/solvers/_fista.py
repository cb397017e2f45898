"""One accelerated proximal gradient method (FISTA) and one Lipschitz estimate.

Every smooth-plus-prox problem in jaxsae goes through :func:`fista`: the block
steps of the sparse coder (``_bcd``), the warm-up codes of the dictionary learner
(``learning._dl_steps``) and the convex candidate problem (``convex._candidates``).
Each passes its gradient and its prox (nonnegative shift, group shrinkage):

    t⁺ = (1 + √(1 + 4t²))/2,   V = Z + ((t − 1)/t⁺)(Z − Z₋),   Z⁺ = prox(V − s∇f(V), s)

(Beck & Teboulle 2009), with the gradient restart of O'Donoghue & Candès (2015):
where ``⟨V − Z⁺, Z⁺ − Z⟩ > 0`` the momentum is dropped (per row when ``t`` has one
entry a row, over the whole iterate when ``t`` is a scalar).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp


class FistaState(NamedTuple):
    """The iterate ``Z``, the previous one and the momentum ``t`` (a scalar or one per row)."""

    Z: jax.Array
    Z_prev: jax.Array
    t: jax.Array


def fista_start(Z, *, per_row: bool) -> FistaState:
    """A cold momentum at ``Z``: ``t = 1`` per row (``per_row``) or for the whole iterate."""
    t = jnp.ones(Z.shape[:1] if per_row else (), Z.dtype)
    return FistaState(Z, Z, t)


def fista(
    grad: Callable, prox: Callable, state: FistaState, step, n_steps: int, *, restart: bool = True
) -> FistaState:
    """``n_steps`` FISTA iterations from ``state`` (see the module docstring).

    Args:
        grad: ``V → ∇f(V)``; prox: ``(V, s) → prox_{s·g}(V)``; step: ``s ≤ 1/L``.
        restart: the gradient restart (off for a fixed number of short block steps).
    """

    def expand(a, Z):
        return a.reshape(a.shape + (1,) * (Z.ndim - a.ndim))

    def body(_, s: FistaState) -> FistaState:
        Z, Z_prev, t = s
        t_next = 0.5 * (1 + jnp.sqrt(1 + 4 * t * t))
        V = Z + expand((t - 1) / t_next, Z) * (Z - Z_prev)
        Z_new = prox(V - step * grad(V), step)
        if not restart:
            return FistaState(Z_new, Z, t_next)
        axes = tuple(range(t.ndim, Z.ndim))
        again = jnp.sum((V - Z_new) * (Z_new - Z), axis=axes) > 0
        return FistaState(
            Z_new, jnp.where(expand(again, Z), Z_new, Z), jnp.where(again, jnp.ones_like(t), t_next)
        )

    return jax.lax.fori_loop(0, n_steps, body, state)


def nonnegative(V, step):
    """The prox of the indicator of ``z ≥ 0`` (the λ shift lives in the gradient)."""
    del step
    return jnp.maximum(V, 0)


def lipschitz(G, n_iter: int = 60, *, exact: bool = False):
    """``λ_max(G)`` of a symmetric PSD ``G``: the Lipschitz constant of ``z ↦ zG``.

    ``exact``: from ``eigvalsh`` with a rounding margin (small ``G``, e.g. the
    ``d × d`` Gram of the convex problem). Otherwise power iteration, an upper
    estimate with a 2% margin (the coders' ``K × K`` Grams; their stop rule is the
    duality gap, so a step a little too long costs speed, not correctness). The start vector is not constant (a constant one is in the null space of e.g.
    the Gram of ``[[1], [-1]]``), and the estimate is floored at ``max_k G_kk``,
    itself a lower bound on ``λ_max``, so it is never 0 for a nonzero ``G``.
    """
    if exact:
        top = jnp.linalg.eigvalsh(G)[-1]
        return top * (1 + 64 * jnp.finfo(G.dtype).eps) + jnp.finfo(G.dtype).tiny
    v = 1 + 0.5 * jnp.sin(jnp.arange(1, G.shape[0] + 1, dtype=G.dtype))
    v = v / jnp.linalg.norm(v)

    def body(_, v):
        w = G @ v
        return w / jnp.maximum(jnp.linalg.norm(w), jnp.finfo(G.dtype).tiny)

    v = jax.lax.fori_loop(0, n_iter, body, v)
    est = jnp.maximum(v @ G @ v, jnp.max(jnp.diagonal(G)))
    return 1.02 * jnp.maximum(est, jnp.finfo(G.dtype).tiny) + jnp.finfo(G.dtype).eps
