"""Geometry of the dictionary-learning variable on ``Ob(d, K) × R^d`` (THEORY §0, §2).

The learner stores the atoms and the bias in one ``(K + 1, d)`` array ``P``: rows
``0..K−1`` are the unit atoms (a product of spheres), the last row is the bias
(a flat factor). Tangent vectors have the same shape. Everything here is a
pure function of arrays, so it vmaps over runs (widths, λ, seeds).
"""

from __future__ import annotations

import jax.numpy as jnp


def stack(atoms, bias):
    """``P = [atoms; bias]``, shape ``(K + 1, d)``."""
    return jnp.concatenate([atoms, bias[None, :]], axis=0)


def tangent(P, V):
    """Project ``V`` onto the tangent space at ``P``: ``(I − d_k d_kᵀ) v_k`` per atom row."""
    atoms, va = P[:-1], V[:-1]
    va = va - jnp.sum(va * atoms, axis=1, keepdims=True) * atoms
    return jnp.concatenate([va, V[-1:]], axis=0)


def retract(P, V):
    """The retraction ``P + V`` with every atom row renormalised (the bias row is flat)."""
    Q = P + V
    atoms = Q[:-1] / jnp.linalg.norm(Q[:-1], axis=1, keepdims=True)
    return jnp.concatenate([atoms, Q[-1:]], axis=0)


def inner(U, V):
    """The (product, Euclidean) metric ``⟨U, V⟩``."""
    return jnp.sum(U * V)


def reduced_gradient(P, X, Z, lam, mask, free_bias: bool):
    """Value, Riemannian gradient and first-order measures of the reduced objective F.

    With optimal codes ``Z`` the envelope theorem (THEORY §4) gives
    ``∇_k F = −(1/N) c_k``, ``c_k = Σ_n z_kn r_n``, and ``∇_b F = −(1/N) Σ_n r_n``.
    The Riemannian gradient projects each atom's gradient onto its tangent space
    (THEORY §2). The alignment error of (A) is ``‖d_k − c_k / (λ‖z_k‖₁)‖`` for
    every used atom (zero for dead and masked atoms, which (A) does not constrain).

    Returns:
        ``(F, riemannian_gradient (K+1, d), row_gradient_norms (K+1,), alignment (K,))``.
    """
    atoms, bias = P[:-1], P[-1]
    N = X.shape[0]
    Zm = jnp.where(mask, Z, 0)
    R = X - bias - Zm @ atoms
    F = jnp.mean(0.5 * jnp.sum(R * R, axis=1) + lam * jnp.sum(Zm, axis=1))
    C = jnp.where(mask[:, None], Zm.T @ R, 0)
    gb = -jnp.mean(R, axis=0) if free_bias else jnp.zeros_like(bias)
    grad = tangent(P, jnp.concatenate([-C / N, gb[None, :]], axis=0))
    l1 = jnp.sum(Zm, axis=0)
    used = l1 > 0
    target = C / (lam * jnp.where(used, l1, 1))[:, None]
    align = jnp.where(used, jnp.linalg.norm(atoms - target, axis=1), 0)
    return F, grad, jnp.linalg.norm(grad, axis=1), align
