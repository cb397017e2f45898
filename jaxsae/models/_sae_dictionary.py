"""The dictionary view of an SAE: folded atoms and folded codes (THEORY §0)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Real

from .._typing import ArrayLike
from .._validate import check_data
from ._dictionary import Dictionary
from ._sae import SAE


def _certificate_dtype(dtype):
    """The dtype of an SAE's dictionary view: its own, or float32 for half precision."""
    return jnp.dtype(dtype) if jnp.dtype(dtype).itemsize >= 4 else jnp.dtype(jnp.float32)


def as_dictionary(dictionary, X=None, *, fn: str = "this function") -> Dictionary:
    """The ``Dictionary`` argument of ``fn``: a ``Dictionary`` as is, a ``(K, d)`` array
    of atoms as ``Dictionary(atoms)`` (rows normalised, no bias); anything else, an SAE
    or arguments passed in the wrong order, is one ``ValueError`` saying what to pass."""
    if isinstance(dictionary, Dictionary):
        return dictionary
    if isinstance(X, Dictionary | SAE):
        raise ValueError(
            f"{fn} takes the dictionary first and the data second; the second argument is a "
            f"{type(X).__name__}. Swap them: {fn}(dictionary, X, ...)."
        )
    if isinstance(dictionary, SAE):
        raise ValueError(
            f"{fn} takes a jaxsae.Dictionary, got an SAE. Pass its decoder as a dictionary, "
            "jaxsae.sae_dictionary(sae), and its own codes as codes=jaxsae.sae_codes(sae, X) "
            "where the function takes codes (or use jaxsae.amortisation_gap / jaxsae.diagnose)."
        )
    if getattr(dictionary, "ndim", None) == 2:  # a (K, d) array of atoms, one per row
        return Dictionary(dictionary)
    raise ValueError(
        f"{fn} takes a jaxsae.Dictionary or a (K, d) array of atoms (one per row), got "
        f"{type(dictionary).__name__}{'' if getattr(dictionary, 'shape', None) is None else f' of shape {tuple(dictionary.shape)}'}."
    )


def _norms(sae: SAE):
    n = sae.decoder_norms()
    return n, n > 0


def sae_dictionary(sae: SAE, *, free_bias: bool = True) -> Dictionary:
    """The folded dictionary of an SAE (THEORY §0, ANCHORS.md folding).

    Atoms ``d_k = W_dec[k] / ‖W_dec[k]‖``, bias ``b = b_dec``. Latents whose
    decoder row is zero are masked out (they cannot reconstruct anything). With
    ``sae_codes``, ``b + D z`` equals the SAE's reconstruction.

    Example:
        >>> D = jaxsae.sae_dictionary(sae); Z = jaxsae.sae_codes(sae, X)
        >>> jaxsae.objective(D, X, Z, lam)
    """
    n, alive = _norms(sae)
    safe = jnp.where(alive[:, None], sae.W_dec, jnp.ones_like(sae.W_dec))
    atoms = safe / jnp.linalg.norm(safe, axis=1, keepdims=True)
    wide = _certificate_dtype(atoms.dtype)  # half-precision SAEs: certify in float32
    return Dictionary(
        atoms.astype(wide), sae.b_dec.astype(wide), alive, free_bias=free_bias, normalize=False
    )


@eqx.filter_jit
def _codes(sae: SAE, X):
    n, alive = _norms(sae)
    return jnp.where(alive, jax.vmap(sae.encode)(X) * n, 0)


def sae_codes(sae: SAE, X: Real[ArrayLike, "N d"]) -> Float[Array, "N K"]:
    """The SAE's codes in the folded dictionary's scale: ``z_k ← z_k ‖W_dec[k]‖`` (THEORY §0)."""
    X = check_data(X, sae.d_in, sae.dtype, model="SAE")
    return _codes(sae, X).astype(_certificate_dtype(sae.dtype))


class StreamedSAECodes:
    """``sae_codes(sae, X)`` for rows of a large ``X`` (e.g. a memmap), computed on demand.

    An ``(N, K)`` view: ``codes[i:j]`` encodes rows ``i:j`` of ``X``. Pass it as
    ``certify(..., codes=...)`` with a streamed ``X``: the SAE's codes are computed
    chunk by chunk beside the data and never held whole.
    """

    def __init__(self, sae: SAE, X):
        if len(X.shape) != 2 or X.shape[1] != sae.d_in:
            raise ValueError(
                f"X must have shape (N, {sae.d_in}) for this SAE, got {tuple(X.shape)}."
            )
        self.sae, self.X = sae, X
        self.shape = (int(X.shape[0]), int(sae.d_sae))
        self.dtype = _certificate_dtype(sae.dtype)

    def __getitem__(self, rows: slice):
        return np.asarray(sae_codes(self.sae, np.asarray(self.X[rows])))
