"""Width: splitting an atom and adding an atom (THEORY §5).

Splitting atom ``k`` into ``d_k ± εv`` (``v ⟂ d_k``, unit), each of its points
taking the copy it correlates with better, changes the objective by

    ΔL = −(ε/N) Σ_n z_kn |vᵀ r_n| + O(ε²),

so the split score is ``s_k = max_{v ⟂ d_k} (1/N) Σ_n z_kn |vᵀ r_n|`` (an
L1-PCA problem, solved by the monotone fixed point
``v ← P⊥ Σ_n z_kn sign(vᵀ r_n) r_n``, normalised, from an L2-PCA start and
random starts). Adding a fresh atom ``a`` with codes ``(aᵀr_n − λ)_+`` gains
``(1/2N) Σ_n (aᵀ r_n − λ)_+²`` exactly (others held fixed).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Real

from .._typing import ArrayLike
from .._validate import as_float_array
from ..models._dictionary import Dictionary
from ..solvers._inputs import data_lam_codes


def _codes_and_residuals(dictionary, X, lam, codes, chunk_size):
    X, lam, codes = data_lam_codes(dictionary, X, lam, codes, chunk_size)
    Z = jnp.where(dictionary.mask, codes, 0)
    return X, lam, Z, X - dictionary.bias - Z @ dictionary.atoms


def _perp(V, atoms):
    return V - jnp.sum(V * atoms, axis=-1, keepdims=True) * atoms


def _normalise(W, V):
    n = jnp.linalg.norm(W, axis=-1, keepdims=True)
    return jnp.where(n > 0, W / jnp.where(n > 0, n, 1), V)


@eqx.filter_jit
def _split_scores(atoms, Z, R, key, n_starts: int, n_iter: int):
    N = R.shape[0]

    def score(V):  # (S, K, d) → (S, K)
        return jnp.einsum("nk,skn->sk", Z, jnp.abs(jnp.einsum("skd,nd->skn", V, R))) / N

    V = _normalise(_perp(jax.random.normal(key, (n_starts,) + atoms.shape, atoms.dtype), atoms), 0)

    def pca(_, V):  # power iteration on Σ_n z_kn P r_n r_nᵀ P for the first start
        W = jnp.einsum("nk,kn,nd->kd", Z, jnp.einsum("kd,nd->kn", V[0], R), R)
        return V.at[0].set(_normalise(_perp(W, atoms), V[0]))

    V = jax.lax.fori_loop(0, 30, pca, V)

    def l1(_, V):
        s = jnp.where(jnp.einsum("skd,nd->skn", V, R) >= 0, 1.0, -1.0).astype(R.dtype)
        return _normalise(_perp(jnp.einsum("nk,skn,nd->skd", Z, s, R), atoms), V)

    V = jax.lax.fori_loop(0, n_iter, l1, V)
    S = score(V)
    best = jnp.argmax(S, axis=0)
    return jnp.max(S, axis=0), jnp.take_along_axis(V, best[None, :, None], axis=0)[0]


def split_scores(
    dictionary: Dictionary,
    X: Real[ArrayLike, "N d"],
    lam,
    *,
    codes: Real[ArrayLike, "N K"] | None = None,
    key=None,
    n_starts: int = 4,
    n_iter: int = 50,
    chunk_size: int | None = None,
) -> tuple[Float[Array, " K"], Float[Array, "K d"]]:
    """Split scores ``s_k`` and directions ``v_k`` (THEORY §5).

    ``s_k = max_{v ⟂ d_k, ‖v‖=1} (1/N) Σ_n z_kn |vᵀ r_n|`` predicts the first-order
    decrease ``ΔL ≈ −ε s_k`` of splitting atom ``k`` into ``d_k ± εv_k``
    (``split_atom``). The L1-PCA fixed point runs from an L2-PCA start and
    ``n_starts − 1`` random starts; the best is kept. Masked and dead atoms score 0.

    Returns:
        ``(scores (K,), directions (K, d))``; directions are unit and tangent.

    Example:
        >>> s, V = jaxsae.split_scores(D, X, 0.1, key=jax.random.key(0))
        >>> k = int(s.argmax())   # the atom that splits first as the width grows
    """
    if n_starts < 1 or n_iter < 0:
        raise ValueError(f"n_starts must be ≥ 1 and n_iter ≥ 0, got {n_starts}, {n_iter}.")
    key = jax.random.key(0) if key is None else key
    _, _, Z, R = _codes_and_residuals(dictionary, X, lam, codes, chunk_size)
    return _split_scores(dictionary.atoms, Z, R, key, int(n_starts), int(n_iter))


def split_atom(
    dictionary: Dictionary,
    X: Real[ArrayLike, "N d"],
    lam,
    k: int,
    v: Real[ArrayLike, " d"],
    eps,
    *,
    codes: Real[ArrayLike, "N K"] | None = None,
) -> tuple[Dictionary, Float[Array, "N K+1"]]:
    """Split atom ``k`` into ``normalize(d_k + εv)`` (row ``k``) and ``normalize(d_k − εv)``
    (appended as row ``K``), THEORY §5.

    Returns the ``K + 1``-atom dictionary and warm-start codes in which each point
    of atom ``k`` moves its code ``z_kn`` to the copy it correlates with better
    (``sign(vᵀ r_n)``); re-solve them with ``sparse_code`` to measure ``ΔL``.
    """
    K, d = dictionary.atoms.shape
    if not 0 <= int(k) < K:
        raise ValueError(f"k must index an atom in [0, {K}), got {k}.")
    v = as_float_array(v, "v").astype(dictionary.dtype)
    if v.shape != (d,):
        raise ValueError(f"v must have shape ({d},) (a direction for atom {k}), got {v.shape}.")
    _, _, Z, R = _codes_and_residuals(dictionary, X, lam, codes, None)
    dk = dictionary.atoms[k]
    v = v - (v @ dk) * dk
    plus, minus = dk + eps * v, dk - eps * v
    atoms = dictionary.atoms.at[k].set(plus / jnp.linalg.norm(plus))
    atoms = jnp.concatenate([atoms, (minus / jnp.linalg.norm(minus))[None]])
    mask = jnp.concatenate([dictionary.mask, jnp.ones((1,), bool)])
    new = Dictionary(atoms, dictionary.bias, mask, free_bias=dictionary.free_bias)
    up = (R @ v) >= 0
    zk = Z[:, k]
    Z = Z.at[:, k].set(jnp.where(up, zk, 0))
    return new, jnp.concatenate([Z, jnp.where(up, 0, zk)[:, None]], axis=1)


@eqx.filter_jit
def _add_atom(R, lam, n_candidates: int, n_iter: int):
    norms = jnp.linalg.norm(R, axis=1)
    top, idx = jax.lax.top_k(norms, n_candidates)
    A = R[idx] / jnp.where(top > 0, top, 1)[:, None]

    def gain(A):
        return 0.5 * jnp.mean(jnp.maximum(A @ R.T - lam, 0) ** 2, axis=1)

    def step(_, A):  # ascent for a convex function on the sphere: monotone
        return _normalise(jnp.maximum(A @ R.T - lam, 0) @ R, A)

    A = jax.lax.fori_loop(0, n_iter, step, A)
    g = gain(A)
    best = jnp.argmax(g)
    return g[best], A[best]


def add_atom_gain(
    dictionary: Dictionary,
    X: Real[ArrayLike, "N d"],
    lam,
    *,
    codes: Real[ArrayLike, "N K"] | None = None,
    n_candidates: int = 16,
    n_iter: int = 30,
    chunk_size: int | None = None,
) -> tuple[Float[Array, ""], Float[Array, " d"]]:
    """Best gain of adding one atom, others fixed (THEORY §5, §6):

        gain(a) = (1/2N) Σ_n (aᵀ r_n − λ)_+²,

    the exact decrease of ``L`` when atom ``a`` joins with codes ``(aᵀr_n − λ)_+``.
    Candidates ``r_n/‖r_n‖`` of the ``n_candidates`` largest residuals are refined
    by the monotone ascent ``a ← normalize(Σ_n (aᵀr_n − λ)_+ r_n)``. The gain is
    positive iff some ``‖r_n‖ > λ``.

    Returns:
        ``(gain, atom)``.
    """
    X, lam, _, R = _codes_and_residuals(dictionary, X, lam, codes, chunk_size)
    n = int(min(max(1, n_candidates), X.shape[0]))
    return _add_atom(R, lam, n, int(n_iter))
