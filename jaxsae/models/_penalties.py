"""Sparsity penalties of SAE training, as strategy objects.

The training loss of one example is THEORY §0's ``½‖x − x̂‖² + λ · penalty``
(an SAELens ``l1_coefficient`` α is ``λ = α/2``, the same conversion as §0).

- ``L1()``: ``Σ_k z_k`` with the decoder rows kept at unit norm (projected after
  every step); the loss is then exactly ``L(D, Z_sae, b)`` for ``D`` the decoder.
- ``DecoderNormL1()``: ``Σ_k z_k ‖W_dec[k]‖`` with a free decoder; after folding
  the norms into the codes (THEORY §0) it is the same problem.
- ``L0()``: ``Σ_k H(pre_k − θ_k)`` for JumpReLU, with the straight-through
  θ-gradient of Rajamanoharan et al. (2024).
- ``NoPenalty()``: for TopK, where ``k`` sets the sparsity.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp

from ._activations import AbstractActivation
from ._sae import SAE


class AbstractPenalty(eqx.Module):
    """``penalty(sae, pre, z)``: the sparsity cost of one example's codes ``z``."""

    unit_decoder: eqx.AbstractClassVar[bool]
    needs_lam: ClassVar[bool] = True  # a weight λ must be given

    @abc.abstractmethod
    def __call__(self, sae: SAE, pre, z): ...


class L1(AbstractPenalty):
    """``Σ_k z_k``; training keeps ``‖W_dec[k]‖ = 1`` (the unit-norm parametrisation)."""

    unit_decoder: ClassVar[bool] = True

    def __call__(self, sae, pre, z):
        return jnp.sum(z)


class DecoderNormL1(AbstractPenalty):
    """``Σ_k z_k ‖W_dec[k]‖`` (SAELens ``standard`` training); no decoder constraint."""

    unit_decoder: ClassVar[bool] = False

    def __call__(self, sae, pre, z):
        return z @ sae.decoder_norms()


class L0(AbstractPenalty):
    """``Σ_k H(pre_k − θ_k)`` for a JumpReLU SAE (straight-through gradient in θ)."""

    unit_decoder: ClassVar[bool] = False

    def __call__(self, sae, pre, z):
        return jnp.sum(sae.activation.step(pre))


class NoPenalty(AbstractPenalty):
    """No sparsity term (TopK SAEs: ``k`` fixes the L0). Decoder rows kept at unit norm."""

    unit_decoder: ClassVar[bool] = True
    needs_lam: ClassVar[bool] = False

    def __call__(self, sae, pre, z):
        return jnp.zeros((), z.dtype)


_BY_SPARSITY = {"l1": L1, "l0": L0, "none": NoPenalty}


def default_penalty(activation: AbstractActivation) -> AbstractPenalty:
    """The penalty an SAE with ``activation`` trains with by default: ``L1()`` for
    ReLU, ``L0()`` for JumpReLU, ``NoPenalty()`` for TopK (``activation.sparsity``)."""
    return _BY_SPARSITY[activation.sparsity]()
