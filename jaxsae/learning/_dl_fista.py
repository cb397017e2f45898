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

import jax.numpy as jnp

from ..solvers._fista import fista, fista_start, lipschitz, nonnegative


def approximate_codes(atoms, Y, lam, mask, Z, n_steps: int):
    """``n_steps`` FISTA iterations (gradient restart per point) from ``Z`` for data ``Y = X − b``."""
    G = jnp.where(mask[:, None] & mask[None, :], atoms @ atoms.T, 0)
    shift = jnp.where(mask, Y @ atoms.T - lam, -jnp.inf)
    Z = jnp.where(mask, jnp.maximum(Z, 0), 0)
    start = fista_start(Z, per_row=True)
    return fista(lambda V: V @ G - shift, nonnegative, start, 1 / lipschitz(G), n_steps).Z
