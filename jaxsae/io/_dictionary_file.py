"""Dictionary files: a small safetensors format of jaxsae's own.

``atoms`` ``(K, d)``, ``bias`` ``(d,)`` and ``mask`` ``(K,)`` (uint8) tensors, with
metadata ``{"format": "jaxsae.dictionary", "version": "1", "free_bias": "0|1",
"sha256": …}`` (the digest of the tensors, checked on load when present) and, when
saved with ``lam=``, ``"jaxsae_objective"``: what it was fitted for (``_provenance``).
A dictionary can also be exported as a SAELens ``standard`` SAE (see the SAE
file functions) whose decoder is the dictionary; that direction loses nothing.
"""

from __future__ import annotations

import json
import os

import numpy as np

from .._atomic import atomic_path
from ..models._dictionary import Dictionary
from ._checks import check_digest, finite_tensor, regular_file, tensors_digest
from ._provenance import KEY, objective_record

FORMAT = "jaxsae.dictionary"
VERSION = "1"


def save_dictionary(
    dictionary: Dictionary,
    path: str | os.PathLike,
    *,
    lam=None,
    data_transform: dict | None = None,
) -> None:
    """Save a dictionary to ``path`` (``.safetensors``), atomically; dtype preserved.

    Args:
        dictionary: the dictionary.
        path: the file.
        lam: the λ it was learned for (THEORY §0), recorded in the file's metadata with
            the objective's convention, so ``certify`` / ``diagnose`` use it when no λ
            is given (``jaxsae.saved_objective`` reads it back).
        data_transform: what was done to the data before learning (e.g.
            ``{"center": True, "scale": 0.37}``), recorded beside λ.
    """
    from safetensors.numpy import save_file

    if not isinstance(dictionary, Dictionary):
        raise ValueError(
            f"save_dictionary needs a jaxsae.Dictionary, got {type(dictionary).__name__}."
        )

    tensors = {
        "atoms": np.ascontiguousarray(np.asarray(dictionary.atoms)),
        "bias": np.ascontiguousarray(np.asarray(dictionary.bias)),
        "mask": np.asarray(dictionary.mask).astype(np.uint8),
    }
    meta = {"format": FORMAT, "version": VERSION, "free_bias": str(int(bool(dictionary.free_bias)))}
    meta["sha256"] = tensors_digest(tensors)  # any later change to the data is detected
    if lam is not None or data_transform is not None:
        meta[KEY] = json.dumps(objective_record(lam, data_transform=data_transform))
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _read(path):
    """``(metadata, tensors)`` of a safetensors file, or one ``ValueError`` line."""
    from safetensors import SafetensorError, safe_open

    path = regular_file(path, "dictionary file")
    try:
        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError, TypeError) as err:
        raise ValueError(
            f"{path} is not a readable safetensors file ({err}). Is it truncated?"
        ) from None
    return path, meta, tensors


def dictionary_metadata(path: str | os.PathLike) -> dict:
    """The metadata of a dictionary file (strings, as stored)."""
    return _read(path)[1]


def load_dictionary(path: str | os.PathLike) -> Dictionary:
    """Load a dictionary saved by :func:`save_dictionary`.

    Everything read is checked: a regular file, ``format`` and ``version`` exactly
    as written, ``free_bias`` ``"0"`` or ``"1"``, the three tensors with matching
    shapes, finite atoms and bias, a 0/1 mask, unit-norm atoms. Half-precision
    (float16, bfloat16) files are promoted to float32, the lowest precision jaxsae
    computes in, and their atoms renormalised. Every failure is one ``ValueError`` line (e.g. a SAELens
    ``sae_weights.safetensors``: use ``load_sae`` and ``sae_dictionary`` for those).
    """
    path, meta, tensors = _read(path)
    names = set(tensors)
    if meta.get("format") != FORMAT:
        hint = (
            " It looks like a SAELens SAE: use --sae DIR / jaxsae.load_sae."
            if "W_dec" in names
            else ""
        )
        raise ValueError(
            f"{path} is not a jaxsae dictionary file (format={meta.get('format')!r}).{hint}"
        )
    if meta.get("version") != VERSION:
        raise ValueError(
            f"{path} is a jaxsae dictionary file of version {meta.get('version')!r}; this jaxsae "
            f"reads version {VERSION!r}. Re-save it with the jaxsae that wrote it, or upgrade."
        )
    if meta.get("free_bias") not in ("0", "1"):
        raise ValueError(
            f"{path}: metadata free_bias must be '0' or '1', got {meta.get('free_bias')!r}."
        )
    if names != {"atoms", "bias", "mask"}:
        raise ValueError(
            f"{path} holds tensors {sorted(names)}; a dictionary file holds atoms, bias and mask."
        )
    check_digest(tensors, meta.get("sha256"), path)
    atoms, bias, mask = tensors["atoms"], tensors["bias"], tensors["mask"]
    if atoms.ndim != 2 or bias.shape != atoms.shape[1:] or mask.shape != atoms.shape[:1]:
        raise ValueError(
            f"{path}: shapes atoms {atoms.shape}, bias {bias.shape}, mask {mask.shape} do not fit "
            "together (expected (K, d), (d,), (K,))."
        )
    if mask.dtype not in (np.uint8, np.bool_) or not np.isin(mask, (0, 1)).all():
        raise ValueError(f"{path}: mask must hold 0/1 flags (uint8), got {mask.dtype} values.")
    if atoms.dtype.kind not in "fV" or bias.dtype != atoms.dtype:
        raise ValueError(
            f"{path}: atoms and bias must share one floating dtype, got {atoms.dtype}, {bias.dtype}."
        )
    atoms, bias = finite_tensor("atoms", atoms, path), finite_tensor("bias", bias, path)
    half = atoms.dtype.itemsize < 4  # float16 / bfloat16: jaxsae computes in float32 or float64
    if half:  # promoted, and renormalised: half precision holds unit norms to ~1e-3 only
        atoms, bias = atoms.astype(np.float32), bias.astype(np.float32)
    try:
        return Dictionary(
            atoms, bias, mask.astype(bool), free_bias=meta["free_bias"] == "1", normalize=half
        )
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
