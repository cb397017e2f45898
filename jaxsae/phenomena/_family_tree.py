"""The family tree of atoms across widths: which atom splits into which (THEORY §5).

Between consecutive widths ``K_i < K_{i+1}`` the atoms are first matched one to
one by maximum total cosine (the Hungarian algorithm, ``hungarian``): matched
atoms *continue*. Every atom of the wider dictionary gets a parent — its
matched partner, or, for the atoms left over, the narrower atom with the
largest cosine. An atom whose wide-level children include a new (unmatched)
atom has *split*. With data and λ the split scores
``s_k = max_{v ⟂ d_k} (1/N) Σ_n z_kn |vᵀ r_n|`` of each narrower dictionary are
attached as predictions: THEORY §5 says the atom with the largest score splits
first.
"""

from __future__ import annotations

import equinox as eqx
import numpy as np

from ..certificates._splitting import split_scores
from ..models._dictionary import Dictionary
from ._matching import hungarian


class FamilyTree(eqx.Module):
    """Parents of atoms across a sequence of widths.

    Attributes:
        widths: ``[K_0, K_1, ...]`` (unmasked atoms of each dictionary).
        parents: per level ``i`` an int array ``(K_i,)``: the parent's index in
            level ``i − 1`` (``−1`` at level 0).
        cosines: per level, ``cos(d_k, parent)`` (1 at level 0).
        continued: per level, whether the atom was matched one to one (False for
            the atoms a split created; True at level 0).
        split: per level ``i < last``, the atoms of level ``i`` that gained a new child.
        scores: per level ``i < last``, split scores ``(K_i,)``, or ``None`` without data.
        predicted: per level ``i < last``, ``argmax`` of the scores (or ``−1``).
    """

    widths: list
    parents: list
    cosines: list
    continued: list
    split: list
    scores: list
    predicted: list

    def hits(self) -> float:
        """Share of levels whose top-scoring atom did split (NaN without scores)."""
        pairs = [(p, s) for p, s in zip(self.predicted, self.split) if p >= 0 and len(s)]
        return float(np.mean([p in set(s.tolist()) for p, s in pairs])) if pairs else float("nan")


def _unmasked(D: Dictionary) -> np.ndarray:
    A = np.asarray(D.atoms, np.float64)[np.asarray(D.mask)]
    return A / np.linalg.norm(A, axis=1, keepdims=True)


def match_levels(narrow: np.ndarray, wide: np.ndarray):
    """``(parent (K_w,), cosine (K_w,), continued (K_w,))`` of wide atoms in the narrow level."""
    C = wide @ narrow.T
    rows, cols = hungarian(-C)
    parent = np.argmax(C, axis=1)
    continued = np.zeros(len(wide), bool)
    parent[rows] = cols
    continued[rows] = True
    return parent, C[np.arange(len(wide)), parent], continued


def family_tree(dictionaries, X=None, lam=None, *, key=None) -> FamilyTree:
    """The family tree of splits across dictionaries of increasing width (THEORY §5).

    Args:
        dictionaries: a list of ``Dictionary`` (masked atoms are ignored), ordered
            by increasing number of unmasked atoms.
        X, lam: optional data and λ; when given, each narrower level gets its split
            scores (``jaxsae.split_scores``) as predictions of which atom splits.
        key: PRNG key for the split scores' random starts.

    Returns:
        A ``FamilyTree``.

    Example:
        >>> res = jaxsae.sweep(X, widths=[2, 4, 8], lams=[0.1])
        >>> tree = jaxsae.family_tree([res.dictionary(i) for i in range(3)], X, 0.1)
        >>> tree.parents[2], tree.predicted[1], tree.split[1]
    """
    if len(dictionaries) < 1 or not all(isinstance(D, Dictionary) for D in dictionaries):
        raise ValueError("dictionaries must be a non-empty list of jaxsae.Dictionary.")
    if (X is None) != (lam is None):
        raise ValueError("pass both X and lam (for split-score predictions) or neither.")
    levels = [_unmasked(D) for D in dictionaries]
    widths = [len(A) for A in levels]
    if any(b < a for a, b in zip(widths, widths[1:])):
        raise ValueError(f"dictionaries must be ordered by increasing width, got widths {widths}.")
    if len({A.shape[1] for A in levels}) != 1:
        raise ValueError("all dictionaries must have atoms of the same dimension d.")
    parents, cosines, continued = (
        [np.full(widths[0], -1)],
        [np.ones(widths[0])],
        [np.ones(widths[0], bool)],
    )
    split, scores, predicted = [], [], []
    for i in range(1, len(levels)):
        p, c, m = match_levels(levels[i - 1], levels[i])
        parents.append(p)
        cosines.append(c)
        continued.append(m)
        split.append(np.unique(p[~m]))
        if X is None:
            scores.append(None)
            predicted.append(-1)
        else:
            D = dictionaries[i - 1]
            s, _ = split_scores(D, X, lam, key=key)
            s = np.asarray(s)[np.asarray(D.mask)]
            scores.append(s)
            predicted.append(int(np.argmax(s)))
    return FamilyTree(widths, parents, cosines, continued, split, scores, predicted)
