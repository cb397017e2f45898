"""The dictionary: unit-norm atoms on the oblique manifold, a bias and an atom mask."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Real

from .._typing import ArrayLike
from .._validate import as_float_array, check_finite, check_rank, is_concrete

_UNIT_TOL = 1e-6


class Dictionary(eqx.Module):
    """A dictionary ``D`` of ``K`` unit-norm atoms in ``R^d`` (THEORY §0).

    Atoms are the *rows* of ``atoms`` (shape ``(K, d)``), as SAELens's ``W_dec``,
    so data ``X`` is ``(N, d)`` and codes ``Z`` are ``(N, K)`` everywhere.

    Attributes:
        atoms: ``(K, d)`` unit-norm rows: ``D ∈ Ob(d, K)``.
        bias: ``(d,)`` decoder bias ``b`` (zeros when not given).
        mask: ``(K,)`` boolean; masked-out atoms (``False``) never get codes.
            Masks are how several widths are batched under ``vmap``.
        free_bias: whether ``b`` is a free parameter of the problem (the
            certificates then also check the bias gradient ``−(1/N) Σ r_n``). A
            boolean *array*, not a static field: programs that do not depend on it
            (codes, first-order passes, evaluation) compile once for both values.

    Construction checks shapes and finiteness. Rows that are not unit norm are
    normalised when ``normalize=True`` (default) and rejected otherwise, with the
    offending rows named. Zero rows are always rejected.

    Example:
        >>> import jax.numpy as jnp, jaxsae
        >>> D = jaxsae.Dictionary(jnp.eye(3))
        >>> D.n_atoms, D.n_features
        (3, 3)
    """

    atoms: Float[Array, "K d"]
    bias: Float[Array, " d"]
    mask: Bool[Array, " K"]
    free_bias: Bool[Array, ""]

    def __init__(
        self,
        atoms,
        bias=None,
        mask=None,
        *,
        free_bias: bool | Bool[Array, ""] = False,
        normalize: bool = True,
    ):
        atoms = as_float_array(atoms, "atoms")
        check_rank(atoms, 2, "atoms", "(K, d): one atom per row")
        if jnp.dtype(atoms.dtype).itemsize < 4:
            raise ValueError(
                f"atoms are {atoms.dtype}; jaxsae computes in float32 or float64 (half precision "
                "cannot hold its certificates). Pass atoms.astype(np.float32)."
            )
        K, d = atoms.shape
        if K == 0 or d == 0:
            raise ValueError(
                f"atoms must have at least one atom and one feature, got shape {(K, d)}."
            )
        check_finite(atoms, "atoms", "Dictionary atoms must be finite numbers.")
        norms = jnp.linalg.norm(atoms, axis=1)
        keep = None  # a valid concrete mask, so masked-out zero rows can be allowed
        if mask is not None and is_concrete(mask) and np.shape(mask) == (K,):
            keep = np.asarray(mask) if np.asarray(mask).dtype == np.bool_ else None
        if is_concrete(norms):
            n = np.asarray(norms)
            zero = np.flatnonzero((n == 0) & (True if keep is None else keep))
            if zero.size:
                raise ValueError(
                    f"atoms has {zero.size} zero row(s) (e.g. row {int(zero[0])}); an atom must have "
                    "nonzero norm. Drop those rows (atoms[np.linalg.norm(atoms, axis=1) > 0]) or "
                    "mask them out (mask=np.linalg.norm(atoms, axis=1) > 0)."
                )
            if keep is not None and (n == 0).any():  # masked zero rows: a placeholder unit atom
                atoms = jnp.where((n == 0)[:, None], jnp.eye(1, d, dtype=atoms.dtype), atoms)
                norms = jnp.where(n == 0, 1, norms)
                n = np.where(n == 0, 1, n)
            off = np.flatnonzero(np.abs(n - 1) > _UNIT_TOL * max(1, d) ** 0.5)
            if off.size and not normalize:
                raise ValueError(
                    f"atoms rows {off[:5].tolist()}{'...' if off.size > 5 else ''} are not unit norm "
                    f"(norms {n[off[:3]].round(6).tolist()}). Pass normalize=True to rescale them, "
                    "or fold the norms into the codes first (see jaxsae.sae_dictionary)."
                )
        if normalize:
            atoms = atoms / norms[:, None]
        self.atoms = atoms
        self.bias = _checked_bias(bias, d, atoms.dtype)
        self.mask = _checked_mask(mask, K)
        self.free_bias = _checked_flag(free_bias)

    @property
    def n_atoms(self) -> int:
        return self.atoms.shape[-2]

    @property
    def n_features(self) -> int:
        return self.atoms.shape[-1]

    @property
    def dtype(self):
        return self.atoms.dtype

    def decode(self, z: Real[ArrayLike, " K"]) -> Float[Array, " d"]:
        """Reconstruction ``b + D z`` of one code vector (masked atoms ignored)."""
        return self.bias + jnp.where(self.mask, z, 0) @ self.atoms

    def gram(self) -> Float[Array, "K K"]:
        """The Gram matrix ``G = DᵀD`` (in row form ``atoms @ atoms.T``)."""
        return self.atoms @ self.atoms.T

    def astype(self, dtype) -> "Dictionary":
        """The same dictionary in another floating dtype (e.g. float64 for certificates)."""
        return eqx.tree_at(
            lambda D: (D.atoms, D.bias), self, (self.atoms.astype(dtype), self.bias.astype(dtype))
        )

    def with_mask(self, mask) -> "Dictionary":
        """The same dictionary with another atom mask (a boolean ``(K,)`` array)."""
        mask = jnp.asarray(mask)
        if mask.shape != (self.n_atoms,) or mask.dtype != jnp.bool_:
            raise ValueError(f"mask must be a boolean array of shape ({self.n_atoms},).")
        return eqx.tree_at(lambda D: D.mask, self, mask)


def _checked_flag(free_bias):
    flag = jnp.asarray(free_bias)
    if flag.shape != () or flag.dtype != jnp.bool_:
        raise ValueError(f"free_bias must be True or False, got {free_bias!r}.")
    return flag


def _checked_bias(bias, d: int, dtype):
    if bias is None:
        return jnp.zeros((d,), dtype)
    bias = as_float_array(bias, "bias", dtype=dtype)
    if bias.shape != (d,):
        raise ValueError(
            f"bias must have shape ({d},) to match atoms of dimension {d}, got {tuple(bias.shape)}."
        )
    check_finite(bias, "bias")
    return bias


def _checked_mask(mask, K: int):
    if mask is None:
        return jnp.ones((K,), bool)
    mask = jnp.asarray(mask)
    if mask.shape != (K,):
        raise ValueError(
            f"mask must have shape ({K},) (one flag per atom), got {tuple(mask.shape)}."
        )
    if mask.dtype != jnp.bool_:
        raise ValueError(f"mask must be boolean, got dtype {mask.dtype}. Use mask.astype(bool).")
    return mask
