"""The sparse autoencoder: one Equinox module, an activation strategy inside."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Real

from .._typing import ArrayLike
from ._activations import AbstractActivation


class SAE(eqx.Module):
    """A sparse autoencoder in SAELens's layout (ANCHORS.md), acting on one example.

    ``encode(x) = f((x − b_dec) W_enc + b_enc)`` (``x − b_dec`` only when
    ``apply_b_dec_to_input``), ``decode(z) = z W_dec + b_dec``, with ``f`` the
    activation (``ReLU()``, ``TopK(k)``, ``JumpReLU(θ, ε)``). Batch with ``jax.vmap``.

    Attributes:
        W_enc: ``(d_in, d_sae)``.
        b_enc: ``(d_sae,)``.
        W_dec: ``(d_sae, d_in)``; row ``k`` is atom ``k`` (not unit norm in general).
        b_dec: ``(d_in,)``; the decoder bias ``b`` of THEORY §0.
        activation: an ``AbstractActivation``.
        apply_b_dec_to_input: subtract ``b_dec`` before encoding (static).

    Example:
        >>> sae = jaxsae.SAE.init(16, 64, jaxsae.ReLU(), key=jax.random.key(0))
        >>> x_hat = sae(jnp.ones(16))
    """

    W_enc: Float[Array, "d_in d_sae"]
    b_enc: Float[Array, " d_sae"]
    W_dec: Float[Array, "d_sae d_in"]
    b_dec: Float[Array, " d_in"]
    activation: AbstractActivation
    apply_b_dec_to_input: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        d_in, d_sae = self.W_enc.shape if self.W_enc.ndim == 2 else (None, None)
        if d_in is None:
            raise ValueError(f"W_enc must be 2-d (d_in, d_sae), got shape {self.W_enc.shape}.")
        expect = {"b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
        for name, shape in expect.items():
            got = getattr(self, name).shape
            if got != shape:
                raise ValueError(
                    f"{name} must have shape {shape} for an SAE with d_in={d_in}, d_sae={d_sae}, got {got}."
                )
        dtypes = {getattr(self, n).dtype for n in ("W_enc", "b_enc", "W_dec", "b_dec")}
        if len(dtypes) != 1:
            raise ValueError(
                f"SAE parameters must share one dtype, got {sorted(map(str, dtypes))}."
            )

    @classmethod
    def init(
        cls,
        d_in: int,
        d_sae: int,
        activation: AbstractActivation,
        *,
        key,
        dtype=jnp.float32,
        decoder_norm: float = 0.1,
        apply_b_dec_to_input: bool = True,
    ) -> "SAE":
        """SAELens-like initialisation.

        ``W_dec`` rows are Kaiming-uniform (bound ``√(6/d_in)``) rescaled to
        norm ``decoder_norm`` (SAELens's training default 0.1; use 1.0 for the
        unit-norm ``L1()`` parametrisation), ``W_enc = W_decᵀ``, zero biases.
        """
        if not isinstance(activation, AbstractActivation):
            raise ValueError(
                f"activation must be a jaxsae activation (ReLU(), TopK(k), JumpReLU(...)), got {activation!r}."
            )
        if d_in < 1 or d_sae < 1:
            raise ValueError(f"d_in and d_sae must be ≥ 1, got d_in={d_in}, d_sae={d_sae}.")
        bound = math.sqrt(6.0 / d_in)
        W_dec = jax.random.uniform(key, (d_sae, d_in), dtype, -bound, bound)
        W_dec = W_dec * (decoder_norm / jnp.linalg.norm(W_dec, axis=1, keepdims=True))
        return cls(
            W_enc=W_dec.T,
            b_enc=jnp.zeros((d_sae,), dtype),
            W_dec=W_dec,
            b_dec=jnp.zeros((d_in,), dtype),
            activation=activation.for_width(d_sae, dtype),
            apply_b_dec_to_input=apply_b_dec_to_input,
        )

    @property
    def d_in(self) -> int:
        return self.W_enc.shape[-2]

    @property
    def d_sae(self) -> int:
        return self.W_enc.shape[-1]

    @property
    def dtype(self):
        return self.W_enc.dtype

    def pre_activation(self, x: Real[ArrayLike, " d_in"]) -> Float[Array, " d_sae"]:
        """``(x − b_dec) W_enc + b_enc`` for one example."""
        if x.shape != (self.d_in,):
            raise ValueError(
                f"SAE acts on one example of shape ({self.d_in},), got {x.shape}; "
                "use jax.vmap(sae)(X) for a batch."
            )
        x = x.astype(self.dtype)
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def encode(self, x: Real[ArrayLike, " d_in"]) -> Float[Array, " d_sae"]:
        """The codes ``f`` of one example."""
        return self.activation(self.pre_activation(x))

    def decode(self, z: Real[ArrayLike, " d_sae"]) -> Float[Array, " d_in"]:
        """``x̂ = z W_dec + b_dec``."""
        return z @ self.W_dec + self.b_dec

    def __call__(self, x: Real[ArrayLike, " d_in"]) -> Float[Array, " d_in"]:
        return self.decode(self.encode(x))

    def decoder_norms(self) -> Float[Array, " d_sae"]:
        """``‖W_dec[k]‖`` per latent."""
        return jnp.linalg.norm(self.W_dec, axis=-1)

    def astype(self, dtype) -> "SAE":
        """The same SAE with every floating parameter in ``dtype``."""
        return jax.tree.map(lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, self)


def fold_decoder_norms(sae: SAE) -> SAE:
    """The same function with unit-norm decoder rows (ANCHORS.md folding).

    ``W_dec[k] /= n_k``, ``W_enc[:, k] *= n_k``, ``b_enc[k] *= n_k`` and, for
    JumpReLU, ``θ_k *= n_k``; ``decode(encode(x))`` is unchanged. Zero rows are
    left alone. TopK SAEs cannot be folded (rescaling changes the top k).
    """
    n = sae.decoder_norms()
    n = jnp.where(n > 0, n, 1).astype(sae.dtype)
    return SAE(
        W_enc=sae.W_enc * n,
        b_enc=sae.b_enc * n,
        W_dec=sae.W_dec / n[:, None],
        b_dec=sae.b_dec,
        activation=sae.activation.fold(n),
        apply_b_dec_to_input=sae.apply_b_dec_to_input,
    )
