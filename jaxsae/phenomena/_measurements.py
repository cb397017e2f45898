"""Measurements against ground truth (THEORY §7b): MMCS, MCC, absorption, dense and
antipodal latents, the linear predictability of the error ("dark matter").

Functions whose output has a data-dependent size (pairs, matchings) return
NumPy arrays and run outside ``jit``; the rest are jitted JAX functions.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Real

from .._typing import ArrayLike
from .._validate import as_float_array, check_rank
from ..models._dictionary import Dictionary
from ._matching import hungarian


def _atoms(atoms) -> tuple[Array, Array]:
    """Unit atoms ``(K, d)`` and a mask from a Dictionary or a raw ``(K, d)`` array."""
    if isinstance(atoms, Dictionary):
        return atoms.atoms, atoms.mask
    A = as_float_array(atoms, "atoms")
    check_rank(A, 2, "atoms", "(K, d): one atom per row")
    return A / jnp.linalg.norm(A, axis=1, keepdims=True), jnp.ones(A.shape[0], bool)


def _unit(F, name="features"):
    F = as_float_array(F, name)
    check_rank(F, 2, name, "(F, d): one ground-truth direction per row")
    return F / jnp.linalg.norm(F, axis=1, keepdims=True)


def cosines(atoms, features) -> Float[Array, "F K"]:
    """``cos(g_f, d_k)`` for ground-truth features (rows) against atoms (columns)."""
    A, _ = _atoms(atoms)
    G = _unit(features).astype(A.dtype)
    if G.shape[1] != A.shape[1]:
        raise ValueError(
            f"features have dimension {G.shape[1]} but atoms have {A.shape[1]}; both are rows in R^d."
        )
    return G @ A.T


@eqx.filter_jit
def _mmcs(C, mask):
    return jnp.mean(jnp.max(jnp.where(mask, C, -jnp.inf), axis=1))


def mmcs(atoms, features) -> Float[Array, ""]:
    """Mean max cosine similarity, ground truth → dictionary (THEORY §7b):

        MMCS = (1/F) Σ_f max_k cos(g_f, d_k)   (signed cosine; masked atoms excluded).

    The direction matters: this asks whether every true feature has a close atom,
    not whether every atom is a true feature.
    """
    A, mask = _atoms(atoms)
    return _mmcs(cosines(A, features), mask)


class Matching(eqx.Module):
    """A one-to-one matching of ground-truth features to atoms.

    Attributes:
        score: mean ``|cos|`` over the matched pairs (MCC).
        features: matched feature indices; atoms: the matched atom indices.
        cos: the signed cosines of the matched pairs.
    """

    score: float
    features: np.ndarray
    atoms: np.ndarray
    cos: np.ndarray


def mcc(atoms, features) -> Matching:
    """Mean correlation coefficient after Hungarian matching (THEORY §7b):

        MCC = mean over matched pairs (f, k) of |cos(g_f, d_k)|,

    with the one-to-one matching of ``min(F, K)`` pairs that maximises the sum
    of ``|cos|`` (masked atoms excluded). Runs in NumPy, outside ``jit``.
    """
    A, mask = _atoms(atoms)
    C = np.asarray(cosines(A, features))
    keep = np.flatnonzero(np.asarray(mask))
    f, k = hungarian(-np.abs(C[:, keep]))
    cos = C[f, keep[k]]
    return Matching(float(np.mean(np.abs(cos))), f, keep[k], cos)


def best_atoms(atoms, features) -> Array:
    """For each ground-truth feature, the atom with the largest cosine (masked excluded)."""
    A, mask = _atoms(atoms)
    return jnp.argmax(jnp.where(mask, cosines(A, features), -jnp.inf), axis=1)


class Absorption(eqx.Module):
    """Absorption against a known hierarchy (THEORY §7, §7b). Lower is better.

    Attributes:
        parents: indices of the parent features measured.
        rate: per parent, among points where the parent and one of its
            children are both present, the share where the parent's
            best-matched atom is silent.
        fraction: per parent, mean over points where the parent is present of
            the absorption fraction (SAEBench style, see ``absorption``).
        full_rate: per parent, share of points where the parent is present,
            its matched atom is silent and one other latent carries at least
            ``full_threshold`` of the parent's projection.
        main_atom: per parent, the best-matched atom.
    """

    parents: np.ndarray
    rate: np.ndarray
    fraction: np.ndarray
    full_rate: np.ndarray
    main_atom: np.ndarray

    @property
    def mean_rate(self) -> float:
        return float(np.mean(self.rate)) if self.rate.size else 0.0

    @property
    def mean_fraction(self) -> float:
        return float(np.mean(self.fraction)) if self.fraction.size else 0.0


def absorption(
    dictionary: Dictionary,
    Z,
    world,
    *,
    cos_threshold: float = 0.1,
    full_threshold: float = 0.4,
) -> Absorption:
    """Absorption of each parent feature of a synthetic ``world`` (THEORY §7, §7b).

    Lower is better (no 1 − x flip). For a parent direction ``p̂`` with
    best-matched atom ``m`` (largest ``cos(p̂, d_k)``), on each point ``n`` where
    the parent is present (true code > 0):

    - ``a_n = (x_n − b)ᵀp̂`` the parent's projection; ``m_n = z_mn d_mᵀp̂`` what
      the main latent carries; ``o_n = Σ_{k≠m, cos(d_k,p̂) ≥ cos_threshold}
      z_kn d_kᵀp̂`` what other aligned latents carry;
    - fraction ``= clip(o_n, 0, (a_n − m_n)_+) / a_n``: the share of the
      projection the main latent failed to carry and other latents did.

    The simple rate (known hierarchy): among points where the parent and one of
    its children are present, the share with ``z_mn = 0``.
    """
    A, mask = dictionary.atoms, dictionary.mask
    Zm = np.asarray(jnp.where(mask, as_float_array(Z, "Z").astype(A.dtype), 0))
    Y = np.asarray(world.X.astype(A.dtype) - dictionary.bias)
    feats = np.asarray(_unit(world.features))
    codes = np.asarray(world.codes)
    child_of = np.asarray(world.child_of)
    Anp = np.asarray(A)
    C = feats @ Anp.T
    C[:, ~np.asarray(mask)] = -np.inf
    parents = np.flatnonzero(child_of.any(axis=1))
    rate, frac, full, main = [], [], [], []
    for p in parents:
        m = int(np.argmax(C[p]))
        main.append(m)
        kids = np.flatnonzero(child_of[p])
        both = (codes[:, p] > 0) & np.any(codes[:, kids] > 0, axis=1)
        silent = Zm[:, m] <= 0
        rate.append(float(np.mean(silent[both])) if both.any() else 0.0)
        present = codes[:, p] > 0
        a = Y[present] @ feats[p]
        proj = Zm[present] * (Anp @ feats[p])[None, :]
        others = (C[p] >= cos_threshold) & (np.arange(len(C[p])) != m)
        mn = proj[:, m]
        on = proj[:, others].sum(axis=1)
        safe = np.where(a > 0, a, 1.0)
        f = np.where(a > 0, np.clip(on, 0, np.maximum(a - mn, 0)) / safe, 0.0)
        frac.append(float(np.mean(f)) if f.size else 0.0)
        best_other = proj[:, others].max(axis=1, initial=0.0)
        fl = (Zm[present][:, m] <= 0) & (best_other >= full_threshold * a) & (a > 0)
        full.append(float(np.mean(fl)) if fl.size else 0.0)
    return Absorption(parents, np.array(rate), np.array(frac), np.array(full), np.array(main, int))


class AntipodalPairs(eqx.Module):
    """Pairs of atoms with ``cos(d_i, d_j) < −τ`` and their firing statistics.

    Attributes:
        pairs: ``(P, 2)`` atom indices ``i < j``.
        cos: ``(P,)`` their cosines.
        rates: ``(P, 2)`` firing rates of the two atoms.
        cofiring: ``(P,)`` share of points where both fire (0 at an optimum, (P)).
    """

    pairs: np.ndarray
    cos: np.ndarray
    rates: np.ndarray
    cofiring: np.ndarray


def antipodal_pairs(dictionary: Dictionary, Z, *, tau: float = 0.9) -> AntipodalPairs:
    """Detect antipodal atom pairs (``cos < −τ``, default τ = 0.9) with co-firing rates.

    By (P), antipodal atoms never fire on the same point at an optimum; a dense
    signed direction ``t v`` is predicted to produce such a pair (THEORY §7).
    """
    A, mask = np.asarray(dictionary.atoms), np.asarray(dictionary.mask)
    on = np.asarray(as_float_array(Z, "Z")) > 0
    C = A @ A.T
    i, j = np.nonzero(np.triu(C < -tau, k=1) & mask[:, None] & mask[None, :])
    rates = on.mean(axis=0)
    co = (on[:, i] & on[:, j]).mean(axis=0) if i.size else np.zeros(0)
    return AntipodalPairs(np.stack([i, j], axis=1), C[i, j], np.stack([rates[i], rates[j]], 1), co)


@eqx.filter_jit
def _r2(X, E):
    Xa = jnp.concatenate([X, jnp.ones((X.shape[0], 1), X.dtype)], axis=1)
    W, *_ = jnp.linalg.lstsq(Xa, E)
    fit = E - Xa @ W
    centred = E - jnp.mean(E, axis=0)
    return 1 - jnp.sum(fit * fit) / jnp.sum(centred * centred)


def dark_matter_r2(X: Real[ArrayLike, "N d"], X_hat: Real[ArrayLike, "N d"]) -> Float[Array, ""]:
    """Linear predictability of the error (Engels et al. 2024; THEORY §7b).

    Fits ``e_n ≈ W x_n + c`` (with intercept) to ``e = x − x̂`` by least squares and
    returns ``R² = 1 − Σ‖e − ê‖² / Σ‖e − ē‖²``.
    """
    X = as_float_array(X, "X")
    E = as_float_array(X_hat, "X_hat").astype(X.dtype)
    check_rank(X, 2, "X", "(N, d)")
    if E.shape != X.shape:
        raise ValueError(f"X_hat must have the shape of X {tuple(X.shape)}, got {tuple(E.shape)}.")
    return _r2(X, X - E)


def split_parents(narrow, wide) -> np.ndarray:
    """For each atom of a wider dictionary, its parent in a narrower one: the atom with
    the largest cosine (a family tree of splits across widths, THEORY §5)."""
    return np.asarray(best_atoms(narrow, _atoms(wide)[0]))
