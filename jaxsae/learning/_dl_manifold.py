"""Geometry of the dictionary-learning variable on ``Ob(d, K) × R^d`` (THEORY §0, §2).

The learner stores the atoms and the bias in one ``(K + 1, d)`` array ``P``: rows
``0..K−1`` are the unit atoms (a product of spheres), the last row is the bias
(a flat factor). Tangent vectors have the same shape. Everything here is a
pure function of arrays, so it vmaps over runs (widths, λ, seeds).
"""

from __future__ import annotations

import jax.numpy as jnp

from ..models._objective import atom_first_order


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


def chunk_sums(atoms, Y, Z, lam, mask, valid):
    """Sums over points for F and its envelope gradient (THEORY §2, §4): ``Σ[½‖r_n‖² +
    λ1ᵀz_n]``, ``C = Zᵀ R``, ``Σ r_n`` and ``‖z_k‖₁`` for centred data ``Y = X − b``
    (masked atoms and invalid rows count nothing). Returns ``(Zm, R, sums)``."""
    Zm = jnp.where(mask & valid[:, None], Z, 0)
    R = Y - Zm @ atoms
    value = jnp.sum(0.5 * jnp.sum(R * R, axis=1) + lam * jnp.sum(Zm, axis=1))
    return Zm, R, {"value": value, "C": Zm.T @ R, "rsum": jnp.sum(R, axis=0), "l1": jnp.sum(Zm, 0)}


def measures(P, sums, n, lam, mask, free_bias):
    """``(F, Riemannian gradient (K+1, d), row norms (K+1,), alignment (K,))`` from sums.

    ``∇_k F = −c_k/N`` and ``∇_b F = −Σ r_n/N`` (envelope theorem, THEORY §4) with
    their Riemannian parts and the alignment error of (A) from
    ``models._objective.atom_first_order``; dead and masked atoms have alignment 0
    ((A) does not constrain them).
    """
    atoms, bias = P[:-1], P[-1]
    C = jnp.where(mask[:, None], sums["C"], 0)
    g_atoms, align, _ = atom_first_order(atoms, C, sums["l1"], lam, n, sums["l1"] > 0)
    gb = jnp.where(free_bias, -sums["rsum"] / n, jnp.zeros_like(bias))
    grad = jnp.concatenate([g_atoms, gb[None, :]], axis=0)
    return sums["value"] / n, grad, jnp.linalg.norm(grad, axis=1), align


def reduced_gradient(P, X, Z, lam, mask, free_bias):
    """:func:`measures` of resident data: the sums over all of ``X`` as one chunk."""
    valid = jnp.ones(X.shape[:1], bool)
    _, _, sums = chunk_sums(P[:-1], X - P[-1], Z, lam, mask, valid)
    return measures(P, sums, X.shape[0], lam, mask, free_bias)
