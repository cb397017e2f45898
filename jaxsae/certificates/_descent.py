"""A proof of descent by evaluation: ``F`` along a direction (THEORY §4).

A negative Ritz value with its eigenvector proves a saddle once ``F`` itself is
seen to fall: ``F(D_t, b_t) ≤ L(D_t, Z_t, b_t)`` for any codes ``Z_t ≥ 0`` (an upper
bound), and ``F(D, b) ≥`` the dual objective of §1 at the point (a lower bound).
When the upper bound at ``D_t = normalise(D + tΞ)`` lies below the lower bound at
``D`` by more than the rounding of the two sums, ``D`` is not a local minimum.
Both bounds are evaluated in float64 whenever x64 is enabled.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._streaming import iter_chunks
from ..models._dictionary import Dictionary
from ..solvers._kkt import kkt_from_parts
from ..solvers._lasso import sparse_code

STEPS = (0.3, 0.1, 0.03, 0.01, 0.003, 0.001)


@eqx.filter_jit
def _bound_sums(dictionary: Dictionary, Xc, lam, n_valid):
    """``(Σ primal, Σ dual)`` of a chunk's valid rows at certified codes."""
    Z = sparse_code(dictionary, Xc, lam).codes
    Y = Xc - dictionary.bias
    R = Y - jnp.where(dictionary.mask, Z, 0) @ dictionary.atoms
    kkt = kkt_from_parts(Z, R @ dictionary.atoms.T, R, lam, dictionary.mask)
    valid = jnp.arange(Xc.shape[0]) < n_valid
    return jnp.sum(jnp.where(valid, kkt.primal, 0)), jnp.sum(jnp.where(valid, kkt.gap, 0))


def objective_bounds(dictionary: Dictionary, X, lam, chunk: int) -> tuple[float, float]:
    """``(upper, lower)`` bounds on ``F(D, b)`` (per-point means): the objective at
    certified codes and the dual objective (THEORY §1). ``X``: array, memmap or chunks."""
    primal = gap = 0.0
    n = 0
    for Xc, k in iter_chunks(X, chunk, dictionary.n_features):
        p, g = _bound_sums(dictionary, jnp.asarray(Xc, dictionary.dtype), lam, k)
        primal, gap, n = primal + float(p), gap + float(g), n + k
    return primal / n, (primal - gap) / n


def proved_decrease(
    dictionary: Dictionary, X, lam, atoms_dir, bias_dir, chunk: int
) -> tuple[float, float]:
    """``(F(D, b) − F(D_t, b_t), t)`` proved at the first step ``t`` of ``STEPS`` where the
    upper bound on ``F`` at ``D_t`` falls below the lower bound at ``D`` by more than
    ``8u(N + d + K)(|lower| + |upper|)``; ``(nan, nan)`` if no step does."""
    wide = jnp.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))
    D = dictionary.astype(wide)
    lam = jnp.asarray(lam, wide)
    atoms_dir, bias_dir = jnp.asarray(atoms_dir, wide), jnp.asarray(bias_dir, wide)
    u = float(np.finfo(wide).eps) / 2
    _, f_low = objective_bounds(D, X, lam, chunk)
    n = X.shape[0] if hasattr(X, "shape") else sum(np.shape(c)[0] for c in X)
    size = n + D.n_features + D.n_atoms
    for t in STEPS:
        atoms = jnp.where(D.mask[:, None], D.atoms + t * atoms_dir, D.atoms)
        bias = jnp.where(D.free_bias, D.bias + t * bias_dir, D.bias)
        Dt = Dictionary(atoms, bias, D.mask, free_bias=D.free_bias)
        f_high, _ = objective_bounds(Dt, X, lam, chunk)
        if f_low - f_high > 8 * u * size * (abs(f_low) + abs(f_high)):
            return f_low - f_high, t
    return np.nan, np.nan
