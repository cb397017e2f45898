"""A BERT encoder in Equinox: the network behind all-MiniLM-L6-v2.

The forward pass follows Hugging Face ``BertModel`` in inference mode (no
dropout): embeddings (word + position + token type, then LayerNorm), then
blocks of post-LayerNorm self-attention and a GELU (erf) MLP. Weights of all
blocks are stacked along a leading axis and run with ``lax.scan``, so the
compile time does not grow with depth and every hidden state comes out at once.

The model acts on one sequence; batch with ``jax.vmap``.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, Real

from .._typing import ArrayLike


class Dense(eqx.Module):
    """``x ↦ W x + b`` with ``W`` stored ``(out, in)`` as in PyTorch (a leading ``layers``
    axis when the encoder's layers are stacked for ``lax.scan``)."""

    weight: Float[Array, "*layers out in"]
    bias: Float[Array, "*layers out"]

    def __call__(self, x: Real[ArrayLike, "... in"]) -> Float[Array, "... out"]:
        return x @ self.weight.T + self.bias


class LayerNorm(eqx.Module):
    """LayerNorm over the last axis (biased variance, as PyTorch)."""

    weight: Float[Array, "*layers d"]
    bias: Float[Array, "*layers d"]
    eps: float = eqx.field(static=True, default=1e-12)

    def __call__(self, x: Real[ArrayLike, "... d"]) -> Float[Array, "... d"]:
        mean = x.mean(-1, keepdims=True)
        var = jnp.square(x - mean).mean(-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + self.eps) * self.weight + self.bias


class BertBlock(eqx.Module):
    """One transformer block; in a :class:`BertEncoder` every leaf has a leading layer axis."""

    query: Dense
    key: Dense
    value: Dense
    attn_out: Dense
    attn_norm: LayerNorm
    up: Dense
    down: Dense
    out_norm: LayerNorm
    num_heads: int = eqx.field(static=True)

    def __call__(
        self, h: Real[ArrayLike, "T d"], mask: Bool[ArrayLike, " T"]
    ) -> Float[Array, "T d"]:
        T, d = h.shape
        split = lambda x: x.reshape(T, self.num_heads, d // self.num_heads)
        q, k, v = split(self.query(h)), split(self.key(h)), split(self.value(h))
        scores = jnp.einsum("qhc,khc->hqk", q, k) / (d // self.num_heads) ** 0.5
        # Padded keys get the most negative number, as Hugging Face does.
        scores = jnp.where(mask[None, None, :], scores, jnp.finfo(scores.dtype).min)
        context = jnp.einsum("hqk,khc->qhc", jax.nn.softmax(scores, axis=-1), v).reshape(T, d)
        h = self.attn_norm(h + self.attn_out(context))
        return self.out_norm(h + self.down(jax.nn.gelu(self.up(h), approximate=False)))


class BertEncoder(eqx.Module):
    """BERT encoder returning every hidden state.

    ``encoder(ids, mask)[i]`` is Hugging Face's ``hidden_states[i]``: 0 is the
    embedding output, ``i ≥ 1`` the output of block ``i``.

    Example:
        >>> model, tokenizer = jaxsae.data.load_minilm()
        >>> hidden = model(ids, mask)          # (layers + 1, T, 384)
        >>> hidden = jax.vmap(model)(ids, masks)  # a batch
    """

    word_embeddings: Float[Array, "vocab d"]
    position_embeddings: Float[Array, "positions d"]
    token_type_embeddings: Float[Array, "types d"]
    embed_norm: LayerNorm
    blocks: BertBlock  # stacked: leaves have a leading (layers,) axis

    @property
    def num_layers(self) -> int:
        return int(self.blocks.query.weight.shape[0])

    def truncate(self, layers: int) -> BertEncoder:
        """The same encoder with only the first ``layers`` blocks (cheaper for low layers)."""
        if not 0 <= layers <= self.num_layers:
            raise ValueError(f"layers must be in 0..{self.num_layers}, got {layers}.")
        blocks = jax.tree.map(lambda a: a[:layers], self.blocks)
        return eqx.tree_at(lambda m: m.blocks, self, blocks)

    def __call__(
        self,
        ids: Int[ArrayLike, " T"],
        mask: Bool[ArrayLike, " T"] | Int[ArrayLike, " T"] | None = None,
    ) -> Float[Array, "layers_plus_1 T d"]:
        if ids.ndim != 1:
            raise ValueError(
                f"ids must be one sequence of shape (T,), got {tuple(ids.shape)}; "
                "use jax.vmap(model)(ids, mask) for a batch."
            )
        T = ids.shape[0]
        if T > self.position_embeddings.shape[0]:
            raise ValueError(
                f"sequence of {T} tokens exceeds the model's {self.position_embeddings.shape[0]} positions."
            )
        mask = jnp.ones(T, bool) if mask is None else mask.astype(bool)
        h = self.word_embeddings[ids] + self.position_embeddings[:T] + self.token_type_embeddings[0]
        h = self.embed_norm(h)

        def step(h, block):
            h = block(h, mask)
            return h, h

        _, hs = jax.lax.scan(step, h, self.blocks)
        return jnp.concatenate([h[None], hs], axis=0)
