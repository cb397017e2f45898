"""The wide-limit lower bound F_∞ of (W), shared by the certificates and the convex layer."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Real

from .._typing import ArrayLike
from .._validate import as_float_array, check_data, check_lam
from ..models._objective import huber


def wide_bound_terms(Y: Real[ArrayLike, "N d"], lam) -> Float[Array, " N"]:
    """Per-point terms ``h_λ(‖y_n‖)`` of (W) for centred data ``Y = X − b``."""
    return huber(jnp.sqrt(jnp.sum(Y * Y, axis=-1)), lam)


@eqx.filter_jit
def _wide_bound(X, lam, bias):
    return jnp.mean(wide_bound_terms(X - bias, lam))


def wide_bound(
    X: Real[ArrayLike, "N d"], lam, bias: Real[ArrayLike, " d"] | None = None
) -> Float[Array, ""]:
    """The wide-limit bound of (W): ``F_∞ = (1/N) Σ_n h_λ(‖x_n − b‖)``.

    ``h_λ`` is the Huber function (``½t²`` for ``t ≤ λ``, ``λt − ½λ²`` above).
    For every width K and every dictionary with unit atoms and this bias,
    ``F(D, b) ≥ F_∞(b)``, with equality when every point with ``‖x_n − b‖ > λ``
    has its own atom ``(x_n − b)/‖x_n − b‖`` (THEORY §6). ``F_∞`` is convex in
    ``b``; it is jit- and vmap-friendly in ``λ`` and ``b``.

    Args:
        X: data ``(N, d)``.
        lam: λ > 0 (scalar; may be traced).
        bias: decoder bias ``b`` ``(d,)``; zeros when omitted.

    Returns:
        The scalar ``F_∞`` in the dtype of ``X``.

    Example:
        >>> jaxsae.wide_bound(X, 0.1)   # no dictionary of any width does better
    """
    X = as_float_array(X, "X")
    d = X.shape[-1] if X.ndim == 2 else -1
    X = check_data(X, d, X.dtype)
    lam = check_lam(lam, X.dtype)
    if bias is None:
        bias = jnp.zeros((d,), X.dtype)
    else:
        bias = as_float_array(bias, "bias", dtype=X.dtype)
        if bias.shape != (d,):
            raise ValueError(
                f"bias must have shape ({d},) to match X with {d} features, "
                f"got {tuple(bias.shape)}."
            )
    return _wide_bound(X, lam, bias)
