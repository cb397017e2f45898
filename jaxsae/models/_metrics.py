"""Standard SAE measurements of THEORY §7b, on batches (``X``, ``X̂``: ``(N, d)``; ``Z``: ``(N, K)``).

Each is a plain function of arrays (jit- and vmap-friendly), so every module
reports the same definitions:

- ``explained_variance``: ``1 − E‖x − x̂‖² / (E‖x‖² − ‖E x‖²)`` (SAELens ≥ 6.45.1's
  definition, not the per-token "legacy" one); ``fvu`` is one minus it.
- ``l0``: mean number of nonzero codes per point.
- ``shrinkage``: ``E‖x̂‖² / E⟨x, x̂⟩`` (< 1 means shrinkage).
- ``firing_rate``, ``dead_latents``, ``dense_latents``: per-latent density.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Real

from .._typing import ArrayLike


def explained_variance(
    X: Real[ArrayLike, "N d"], X_hat: Real[ArrayLike, "N d"]
) -> Float[Array, ""]:
    """``1 − E‖x − x̂‖² / (E‖x‖² − ‖E x‖²)`` (THEORY §7b).

    The denominator is computed as ``E‖x − E x‖²`` (the same number, without
    cancellation).
    """
    err = jnp.mean(jnp.sum((X - X_hat) ** 2, axis=-1))
    centred = X - jnp.mean(X, axis=0)
    return 1 - err / jnp.mean(jnp.sum(centred * centred, axis=-1))


def fvu(X: Real[ArrayLike, "N d"], X_hat: Real[ArrayLike, "N d"]) -> Float[Array, ""]:
    """Fraction of variance unexplained, ``1 − explained_variance`` (THEORY §7b)."""
    return 1 - explained_variance(X, X_hat)


def l0(Z: Real[ArrayLike, "N K"]) -> Float[Array, ""]:
    """Mean number of nonzero codes per point (counts ``z ≠ 0``)."""
    return jnp.mean(jnp.sum(Z != 0, axis=-1).astype(Z.dtype))


def shrinkage(X: Real[ArrayLike, "N d"], X_hat: Real[ArrayLike, "N d"]) -> Float[Array, ""]:
    """``γ = E‖x̂‖² / E⟨x, x̂⟩`` (THEORY §7b); γ < 1 means the reconstructions shrink."""
    return jnp.mean(jnp.sum(X_hat * X_hat, axis=-1)) / jnp.mean(jnp.sum(X * X_hat, axis=-1))


def firing_rate(Z: Real[ArrayLike, "N K"]) -> Float[Array, " K"]:
    """Fraction of points on which each latent is nonzero."""
    return jnp.mean((Z != 0).astype(Z.dtype), axis=0)


def dead_latents(Z: Real[ArrayLike, "N K"]) -> Bool[Array, " K"]:
    """Latents that fire on no point of ``Z``."""
    return ~jnp.any(Z != 0, axis=0)


def dense_latents(Z: Real[ArrayLike, "N K"], threshold: float = 0.1) -> Bool[Array, " K"]:
    """Latents whose firing rate exceeds ``threshold`` (default 10%, THEORY §7b)."""
    return firing_rate(Z) > threshold
