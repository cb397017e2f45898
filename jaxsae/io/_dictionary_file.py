"""Dictionary files: a small safetensors format of jaxsae's own.

``atoms`` ``(K, d)``, ``bias`` ``(d,)`` and ``mask`` ``(K,)`` (uint8) tensors, with
metadata ``{"format": "jaxsae.dictionary", "version": "1", "free_bias": "0|1"}``.
A dictionary can also be exported as a SAELens ``standard`` SAE (see the SAE
file functions) whose decoder is the dictionary; that direction loses nothing.
"""

from __future__ import annotations

import os

import numpy as np

from ..models._dictionary import Dictionary
from ._atomic import atomic_path

FORMAT = "jaxsae.dictionary"


def save_dictionary(dictionary: Dictionary, path: str | os.PathLike) -> None:
    """Save a dictionary to ``path`` (``.safetensors``), atomically; dtype preserved."""
    from safetensors.numpy import save_file

    tensors = {
        "atoms": np.ascontiguousarray(np.asarray(dictionary.atoms)),
        "bias": np.ascontiguousarray(np.asarray(dictionary.bias)),
        "mask": np.asarray(dictionary.mask).astype(np.uint8),
    }
    meta = {"format": FORMAT, "version": "1", "free_bias": str(int(dictionary.free_bias))}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_dictionary(path: str | os.PathLike) -> Dictionary:
    """Load a dictionary saved by :func:`save_dictionary`.

    Raises ``ValueError`` for missing, truncated or foreign files (e.g. a SAELens
    ``sae_weights.safetensors``: use ``load_sae`` and ``sae_dictionary`` for those).
    """
    from safetensors import SafetensorError, safe_open

    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"dictionary file {path} does not exist.")
    try:
        with safe_open(path, framework="numpy") as fh:
            meta = fh.metadata() or {}
            names = set(fh.keys())
            tensors = {k: fh.get_tensor(k) for k in names}
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(
            f"{path} is not a readable safetensors file ({err}). Is it truncated?"
        ) from err
    if meta.get("format") != FORMAT:
        hint = (
            " It looks like a SAELens SAE: use --sae DIR / jaxsae.load_sae."
            if "W_dec" in names
            else ""
        )
        raise ValueError(
            f"{path} is not a jaxsae dictionary file (format={meta.get('format')!r}).{hint}"
        )
    if not {"atoms", "bias", "mask"} <= names:
        raise ValueError(f"{path} is missing tensors {sorted({'atoms', 'bias', 'mask'} - names)}.")
    return Dictionary(
        tensors["atoms"],
        tensors["bias"],
        tensors["mask"].astype(bool),
        free_bias=meta.get("free_bias") == "1",
        normalize=False,
    )
