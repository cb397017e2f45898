"""Load representations from disk: harvested activations, patches or any user array."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..io._arrays import load_array
from ..io._checks import read_text
from ._harvest import matches_sidecar, tokens_path


def load_representations(path: str | os.PathLike, *, key: str | None = None) -> np.ndarray:
    """A 2-d data array ``X`` (N, d), rows are points (THEORY §0), memory-mapped for ``.npy``.

    Reads ``.npy`` (memory-mapped, never pickles) or ``.safetensors`` (``key``
    names the tensor when there are several), as written by
    :func:`harvest_activations`, ``jaxsae data patches`` or the user.

    Raises:
        ValueError: missing or damaged file, or an array that is not (N, d) real numbers.
    """
    X = load_array(path, key=key)
    info = representation_info(path)
    if info is not None and "array" in info and not matches_sidecar(Path(path), info):
        raise ValueError(
            f"{path} does not match its sidecar {Path(path).with_suffix('.json')} (shape "
            f"{list(X.shape)} vs {info['array'].get('shape')}, or other rows): a harvest was "
            "interrupted between its two final renames. Rerun the same `jaxsae data` command "
            "to finish it."
        )
    if X.ndim != 2:
        raise ValueError(
            f"{path} holds an array of shape {tuple(X.shape)}; representations must be 2-d "
            "(N points, d features). Reshape it, e.g. X.reshape(-1, X.shape[-1])."
        )
    if np.dtype(X.dtype).kind not in "fiu":
        raise ValueError(f"{path} holds dtype {X.dtype}; save real numbers (float32 or float64).")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{path} holds an empty array of shape {tuple(X.shape)}.")
    return X


def representation_info(path: str | os.PathLike) -> dict | None:
    """The JSON sidecar next to a data file (``acts.npy`` → ``acts.json``), or None."""
    sidecar = Path(path).with_suffix(".json")
    if not sidecar.exists():
        return None
    text = read_text(sidecar, "sidecar")
    try:
        info = json.loads(text)
    except ValueError as err:
        raise ValueError(f"{sidecar} is not valid JSON ({err}); delete or fix it.") from None
    if not isinstance(info, dict):
        raise ValueError(f"{sidecar} must hold a JSON object, got {type(info).__name__}.")
    return info


def load_tokens(path: str | os.PathLike) -> dict:
    """The token sidecar of a harvested ``.npy`` (``jaxsae data minilm``): per row ``i`` of
    the activations, ``ids[i]``, ``strings[i]`` (the tokenizer's string), ``stream_index[i]``
    (its index in the corpus's token stream), ``window[i]`` and ``position[i]`` (its
    position in the model's input, ``[CLS]`` = 0). Checked against the ``.json`` sidecar.

    Example:
        >>> tok = jaxsae.data.load_tokens("acts.npy")
        >>> tok["strings"][:5]
    """
    import hashlib

    info = representation_info(path)
    file = tokens_path(path)
    if info is None or "tokens_sha256" not in info:
        raise ValueError(
            f"{path} has no token sidecar; harvest it again with `jaxsae data minilm` (this "
            "version writes one beside the activations)."
        )
    if not file.exists() or hashlib.sha256(file.read_bytes()).hexdigest() != info["tokens_sha256"]:
        raise ValueError(
            f"{file} is missing or does not match {Path(path).with_suffix('.json')}; rerun the "
            "same `jaxsae data minilm` command to rewrite it."
        )
    with open(file, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
        t = {k: npz[k] for k in npz.files}
    t["strings"] = t.pop("vocab")[t.pop("vocab_index")]
    return t
