"""The joint objective L of THEORY §0 and the Huber function of (W)."""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float, Real

from .._typing import ArrayLike
from .._validate import as_float_array, check_data, check_lam, check_rank
from ._dictionary import Dictionary
from ._sae_dictionary import as_dictionary


def residuals(
    dictionary: Dictionary, X: Real[ArrayLike, "N d"], Z: Real[ArrayLike, "N K"]
) -> Float[Array, "N d"]:
    """Residuals ``r_n = x_n − b − D z_n`` (masked atoms contribute nothing)."""
    Zm = jnp.where(dictionary.mask, Z, 0)
    return X - dictionary.bias - Zm @ dictionary.atoms


def checked_problem(dictionary, X, Z, lam):
    """``(X, Z, λ)`` validated against ``dictionary`` (shapes, dtype, finite, λ > 0): the
    inputs of every function of one dictionary, data and codes."""
    X = check_data(X, dictionary.n_features, dictionary.dtype)
    Z = as_float_array(Z, "Z").astype(dictionary.dtype)
    check_rank(Z, 2, "Z", "(N, K)")
    if Z.shape != (X.shape[0], dictionary.n_atoms):
        raise ValueError(
            f"Z must have shape (N, K) = ({X.shape[0]}, {dictionary.n_atoms}), got {tuple(Z.shape)}."
        )
    lam = check_lam(lam, dictionary.dtype)
    return X, Z, lam


def objective(
    dictionary: Dictionary | Real[ArrayLike, "K d"],
    X: Real[ArrayLike, "N d"],
    Z: Real[ArrayLike, "N K"],
    lam,
) -> Float[Array, ""]:
    """The joint objective (THEORY §0), a per-point mean so λ means the same at every N:

        L(D, Z, b) = (1/N) Σ_n [ ½‖x_n − b − D z_n‖² + λ 1ᵀ z_n ].

    Args:
        dictionary: the dictionary ``(D, b)``; masked atoms are treated as absent.
        X: data, ``(N, d)``.
        Z: codes, ``(N, K)`` (the objective does not check ``Z ≥ 0``).
        lam: λ > 0, a scalar.

    Returns:
        The scalar ``L``.
    """
    dictionary = as_dictionary(dictionary, X, fn="jaxsae.objective")
    X, Z, lam = checked_problem(dictionary, X, Z, lam)
    R = residuals(dictionary, X, Z)
    l1 = jnp.sum(jnp.where(dictionary.mask, Z, 0), axis=1)
    return jnp.mean(0.5 * jnp.sum(R * R, axis=1) + lam * l1)


def huber(t: Real[ArrayLike, "..."], lam) -> Float[Array, "..."]:
    """The Huber function of (W): ``h_λ(t) = ½t²`` for ``t ≤ λ``, ``λt − ½λ²`` above."""
    return jnp.where(t <= lam, 0.5 * t * t, lam * t - 0.5 * lam * lam)


def atom_first_order(atoms, C, l1, lam, n_points, live):
    """The first-order residuals of the atoms (THEORY §2, (A)) from ``C`` and ``‖z_k‖₁``.

    With ``c_k = Σ_n z_kn r_n`` (rows of ``C``) and optimal codes, the envelope
    gradient is ``∇_k F = −c_k/N``; on the sphere its Riemannian part is
    ``−(I − d_k d_kᵀ) c_k / N``, and (A) says ``d_k = c_k/(λ‖z_k‖₁)`` for every
    used atom. The one place these formulas are written: the certificate, the
    dictionary learners (resident and streamed) and the SAE sweep call it.

    Returns:
        ``(gradient (K, d), alignment (K,), radial (K,))``: the Riemannian gradient
        rows, ``‖d_k − c_k/(λ‖z_k‖₁)‖`` (0 where not ``live``) and ``d_kᵀc_k``.
    """
    radial = jnp.sum(atoms * C, axis=1)
    gradient = -(C - radial[:, None] * atoms) / n_points
    target = C / (lam * jnp.where(live, l1, 1))[:, None]
    alignment = jnp.where(live, jnp.linalg.norm(atoms - target, axis=1), 0)
    return gradient, alignment, radial
