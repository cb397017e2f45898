"""SAE activations as strategy objects: ``ReLU``, ``TopK(k)``, ``JumpReLU``.

Each acts on the pre-activations ``pre = (x − b_dec) W_enc + b_enc`` of *one*
example (shape ``(d_sae,)``) and follows SAELens's forward definitions
(ANCHORS.md): ReLU ``f = max(pre, 0)``; TopK keeps the ``k`` largest entries of
``max(pre, 0)``; JumpReLU ``f = max(pre, 0) · 1[pre > θ]``.

JumpReLU's threshold θ is a parameter (an array, trained directly). Its gradient
uses the straight-through pseudo-derivatives of Rajamanoharan et al. (2024)
with a rectangle kernel ``K(u) = 1[|u| < ½]`` of bandwidth ε:

    ∂/∂θ JumpReLU_θ(z) = −(θ/ε) K((z − θ)/ε),   ∂/∂θ H(z − θ) = −(1/ε) K((z − θ)/ε),

the latter being the exact derivative of the kernel-smoothed step
``H_ε(z − θ) = clip((z − θ)/ε + ½, 0, 1)``.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Real

from .._typing import ArrayLike


def _rect(u):
    return (jnp.abs(u) < 0.5).astype(u.dtype)


@jax.custom_jvp
def jumprelu(pre, threshold, bandwidth):
    """``max(pre, 0) · 1[pre > θ]`` with the straight-through gradient in θ."""
    return jnp.where(pre > threshold, jnp.maximum(pre, 0), 0)


@jumprelu.defjvp
def _jumprelu_jvp(primals, tangents):
    pre, threshold, bandwidth = primals
    dpre, dthreshold, _ = tangents
    out = jumprelu(pre, threshold, bandwidth)
    gate = ((pre > threshold) & (pre > 0)).astype(pre.dtype)
    dtheta = -(threshold / bandwidth) * _rect((pre - threshold) / bandwidth)
    return out, gate * dpre + dtheta * dthreshold


@jax.custom_jvp
def heaviside_step(pre, threshold, bandwidth):
    """``H(pre − θ) = 1[pre > θ]`` with the straight-through gradient in θ (none in pre)."""
    return (pre > threshold).astype(pre.dtype)


@heaviside_step.defjvp
def _heaviside_jvp(primals, tangents):
    pre, threshold, bandwidth = primals
    _, dthreshold, _ = tangents
    out = heaviside_step(pre, threshold, bandwidth)
    dtheta = -(1 / bandwidth) * _rect((pre - threshold) / bandwidth)
    return out, dtheta * dthreshold


class AbstractActivation(eqx.Module):
    """The nonlinearity of an SAE: pre-activations ``(d_sae,)`` → codes ``(d_sae,)``.

    ``sparsity`` names the penalty an SAE with this activation trains with by
    default (``_penalties.default_penalty``): ``"l1"``, ``"l0"`` or ``"none"``.
    """

    sparsity: eqx.AbstractClassVar[str]

    @abc.abstractmethod
    def __call__(self, pre: Real[ArrayLike, " K"]) -> Float[Array, " K"]: ...

    @abc.abstractmethod
    def for_width(self, d_sae: int, dtype) -> "AbstractActivation":
        """This activation with its parameters shaped for ``d_sae`` latents in ``dtype``."""

    @abc.abstractmethod
    def fold(self, norms: Real[ArrayLike, " K"]) -> "AbstractActivation":
        """The activation after latent ``k`` is rescaled by ``norms[k]`` (decoder folding)."""

    def step(self, pre) -> Float[Array, " K"]:
        """``H(pre − θ)`` per latent, the count an ``L0()`` penalty trains (JumpReLU only)."""
        raise ValueError(
            f"L0() needs a JumpReLU SAE, not {type(self).__name__}; use L1() or "
            "DecoderNormL1() for ReLU, NoPenalty() for TopK."
        )

    def describe(self) -> str:
        """A short stable name (for fingerprints of a training run)."""
        return repr(self)


class ReLU(AbstractActivation):
    """``f = max(pre, 0)`` (SAELens ``standard``)."""

    sparsity: ClassVar[str] = "l1"

    def __call__(self, pre):
        return jnp.maximum(pre, 0)

    def for_width(self, d_sae, dtype):
        return self

    def fold(self, norms):
        return self


class TopK(AbstractActivation):
    """Keep the ``k`` largest entries of ``max(pre, 0)``, zero the rest (SAELens ``topk``).

    ``k`` fixes shapes, so it is static.
    """

    sparsity: ClassVar[str] = "none"
    k: int = eqx.field(static=True)

    def __check_init__(self):
        if not (isinstance(self.k, int) and self.k >= 1):
            raise ValueError(f"TopK needs an integer k ≥ 1, got {self.k!r}.")

    def __call__(self, pre):
        if self.k > pre.shape[-1]:
            raise ValueError(
                f"TopK(k={self.k}) needs at least k latents, the SAE has {pre.shape[-1]}."
            )
        values, index = jax.lax.top_k(pre, self.k)
        return jnp.zeros_like(pre).at[index].set(jnp.maximum(values, 0))

    def for_width(self, d_sae, dtype):
        if self.k > d_sae:
            raise ValueError(
                f"TopK(k={self.k}) needs k ≤ d_sae = {d_sae}; lower k or widen the SAE."
            )
        return self

    def fold(self, norms):
        raise ValueError(
            "a TopK SAE cannot be folded into another TopK SAE: rescaling latents changes which k "
            "are largest. Use jaxsae.sae_codes / jaxsae.sae_dictionary, which fold the codes instead."
        )


class JumpReLU(AbstractActivation):
    """``f = max(pre, 0) · 1[pre > θ]`` (SAELens ``jumprelu``), θ a trained parameter.

    Attributes:
        threshold: θ, shape ``(d_sae,)`` (a scalar is broadcast by ``SAE.init``).
        bandwidth: ε of the rectangle kernel of the straight-through gradient
            (a scalar array; not trained — gradients stop at it).

    Example:
        >>> act = jaxsae.JumpReLU(threshold=0.001, bandwidth=0.001)
    """

    sparsity: ClassVar[str] = "l0"
    threshold: Float[Array, " K"]
    bandwidth: Float[Array, ""]

    def __init__(self, threshold=1e-3, bandwidth=1e-3):
        self.threshold = jnp.asarray(threshold)
        self.bandwidth = jnp.asarray(bandwidth)

    def __check_init__(self):
        if not jnp.issubdtype(self.threshold.dtype, jnp.floating):
            raise ValueError(
                f"JumpReLU threshold must be floating, got dtype {self.threshold.dtype}."
            )
        if self.bandwidth.ndim != 0:
            raise ValueError(
                f"JumpReLU bandwidth must be a scalar, got shape {self.bandwidth.shape}."
            )

    def __call__(self, pre):
        bandwidth = jax.lax.stop_gradient(self.bandwidth.astype(pre.dtype))
        return jumprelu(pre, self.threshold.astype(pre.dtype), bandwidth)

    def step(self, pre):
        """``H(pre − θ)`` with its straight-through θ-gradient (the L0 count, per latent)."""
        bandwidth = jax.lax.stop_gradient(self.bandwidth.astype(pre.dtype))
        return heaviside_step(pre, self.threshold.astype(pre.dtype), bandwidth)

    def for_width(self, d_sae, dtype):
        if self.threshold.ndim not in (0, 1) or (
            self.threshold.ndim == 1 and self.threshold.shape[0] != d_sae
        ):
            raise ValueError(
                f"JumpReLU threshold must be a scalar or have shape ({d_sae},), got {self.threshold.shape}."
            )
        return JumpReLU(
            jnp.broadcast_to(self.threshold, (d_sae,)).astype(dtype), self.bandwidth.astype(dtype)
        )

    def fold(self, norms):
        return JumpReLU(self.threshold * norms, self.bandwidth)

    def describe(self) -> str:
        return "JumpReLU"  # θ is trained: the initial values are in the SAE's hash
