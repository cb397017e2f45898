"""Predictions of THEORY §7: absorption, antipodal pairs, the shrinkage part of (R).

Each function states what the theory predicts before anything is learned; the
measurements in ``_measurements.py`` check those predictions on learned
dictionaries.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Real

from .._typing import ArrayLike
from .._validate import as_float_array, check_data, check_lam
from ..certificates._splitting import split_scores
from ..models._dictionary import Dictionary
from ..models._objective import checked_problem, huber
from ..solvers._lasso import sparse_code


def _arr(x, name):
    return as_float_array(x, name)


@jax.jit
def absorption_predicted(*, alpha, beta, lam) -> Bool[Array, "..."]:
    """Whether one absorbed atom codes ``x = αp + βc`` more cheaply than ``p`` and ``c``
    (THEORY §7): the saving :func:`absorption_gain` is positive, i.e. ``α, β > 0`` and
    ``λ < ‖x‖ = √(α² + β²)``.

    There is no absorption boundary in λ below ``‖x‖``: the absorbed atom meets the
    wide-limit bound (W) on its points. What limits absorption is width (THEORY §7:
    a world of ``M`` parent–child combinations needs ``M`` atoms to absorb them all;
    where composition starts to win as ``K/M`` shrinks is an open, measured question).
    Broadcasts over arrays (so ``vmap`` over λ is free).

    Example:
        >>> jaxsae.absorption_predicted(alpha=1.0, beta=0.8, lam=0.5)
        Array(True, dtype=bool)
    """
    alpha, beta, lam = _arr(alpha, "alpha"), _arr(beta, "beta"), _arr(lam, "lam")
    return (alpha > 0) & (beta > 0) & (lam < jnp.sqrt(alpha * alpha + beta * beta))


@jax.jit  # floats are traced values: a new α, β or λ never recompiles
def absorption_critical_lam(*, alpha, beta) -> Float[Array, "..."]:
    """The λ from which absorption saves nothing: ``‖x‖ = √(α² + β²)`` (THEORY §7).

    For every ``λ < ‖x‖`` absorbing ``x = αp + βc`` into one atom saves
    :func:`absorption_gain` ``> 0`` per point; from ``λ ≥ ‖x‖`` on no code is
    active either way and both cost ``½‖x‖²``. (An earlier version of THEORY gave a
    threshold ``2(α + β − ‖x‖)`` above which separate atoms would win; it was derived
    from a cost that only holds for ``λ < min(α, β)``, where it never binds.)
    """
    alpha, beta = _arr(alpha, "alpha"), _arr(beta, "beta")
    return jnp.sqrt(alpha * alpha + beta * beta)


@jax.jit  # floats are traced values: a new α, β or λ never recompiles
def absorption_gain(*, alpha, beta, lam) -> Float[Array, "..."]:
    """Exact per-point saving of absorption at every λ: ``h_λ(α) + h_λ(β) − h_λ(√(α²+β²))``.

    With orthonormal ``p, c`` the nonnegative lasso decouples, so coding
    ``x = αp + βc`` with the two atoms costs ``h_λ(α) + h_λ(β)`` (``h_λ`` the Huber
    function of (W)) and with the absorbed atom ``h_λ(‖x‖)`` (THEORY §7). It is
    ``> 0`` for every ``λ < ‖x‖`` when ``α, β > 0`` and zero from ``λ ≥ ‖x‖`` on,
    where nothing is coded (``absorption_critical_lam``).
    """
    alpha, beta, lam = _arr(alpha, "alpha"), _arr(beta, "beta"), _arr(lam, "lam")
    norm = jnp.sqrt(alpha * alpha + beta * beta)
    return huber(alpha, lam) + huber(beta, lam) - huber(norm, lam)


@jax.jit  # floats are traced values: a new α, β or λ never recompiles
def absorbed_directions(
    parent: Real[ArrayLike, " d"], children: Real[ArrayLike, "C d"], *, alpha, beta
) -> Float[Array, "C d"]:
    """The absorbed child atoms ``(αp + βc)/‖αp + βc‖``, one row per child (THEORY §7)."""
    v = alpha * parent[None, :] + beta * children
    return v / jnp.linalg.norm(v, axis=-1, keepdims=True)


@jax.jit  # floats are traced values: a new α, β or λ never recompiles
def antipodal_rate_binary(*, amplitude, lam) -> Float[Array, "..."]:
    """Predicted firing rate of each atom of the pair ``±v`` for ``t = ±a`` (equiprobable).

    At the optimum the point ``t v`` has code ``(|t| − λ)_+`` on the atom with
    sign ``t`` (THEORY §7), so each atom fires with probability
    ``P(t > λ) = ½·1[a > λ]``.
    """
    a, lam = _arr(amplitude, "amplitude"), _arr(lam, "lam")
    return jnp.where(a > lam, 0.5, 0.0).astype(jnp.result_type(a, lam))


@jax.jit  # floats are traced values: a new α, β or λ never recompiles
def antipodal_rate_gaussian(*, sigma, lam) -> Float[Array, "..."]:
    """Predicted firing rate of each atom of ``±v`` for ``t ~ N(0, σ²)``:
    ``P(t > λ) = ½ erfc(λ / (σ√2))`` (THEORY §7)."""
    sigma, lam = _arr(sigma, "sigma"), _arr(lam, "lam")
    return 0.5 * jax.scipy.special.erfc(lam / (sigma * jnp.sqrt(2.0)))


@jax.jit  # floats are traced values: a new α, β or λ never recompiles
def antipodal_codes(t: Real[ArrayLike, " N"], lam) -> Float[Array, "N 2"]:
    """Predicted codes on the pair ``(+v, −v)`` of points ``t_n v``: ``((t−λ)_+, (−t−λ)_+)``."""
    return jnp.stack([jnp.maximum(t - lam, 0), jnp.maximum(-t - lam, 0)], axis=-1)


class ResidualDecomposition(eqx.Module):
    """The split (R) of residuals at KKT codes: ``r_n = λ D_S G_S⁻¹ 1 + r_n^⊥``.

    Attributes:
        shrinkage: ``(N, d)`` ``λ D_S G_S⁻¹ 1`` (zero for points with no active atom).
        orthogonal: ``(N, d)`` ``r_n − shrinkage_n``; ``⟂ span(D_S)`` at KKT codes.
        residual: ``(N, d)`` ``r_n = x_n − b − D z_n``.
        point_share: ``(N,)`` ``‖shrinkage_n‖² / ‖r_n‖²`` (0 where ``r_n = 0``).
        share: scalar ``Σ‖shrinkage_n‖² / Σ‖r_n‖²``: the share of residual energy
            in the shrinkage component.
        orthogonality: scalar ``max_{n,k∈S_n} |d_kᵀ r_n^⊥| / λ`` (0 at exact KKT).
    """

    shrinkage: Float[Array, "N d"]
    orthogonal: Float[Array, "N d"]
    residual: Float[Array, "N d"]
    point_share: Float[Array, " N"]
    share: Float[Array, ""]
    orthogonality: Float[Array, ""]


@eqx.filter_jit
def _decompose(dictionary, X, Z, lam, threshold):
    atoms, mask = dictionary.atoms, dictionary.mask
    Zm = jnp.where(mask, Z, 0)
    R = X - dictionary.bias - Zm @ atoms
    active = Zm > threshold
    G = atoms @ atoms.T
    eye = jnp.eye(G.shape[0], dtype=G.dtype)

    def one(act):
        both = act[:, None] & act[None, :]
        # Inactive rows/columns become the identity, so the solve is the active block's.
        Gs = jnp.where(both, G, eye)
        w = jnp.linalg.solve(Gs, act.astype(G.dtype))
        return lam * (jnp.where(act, w, 0) @ atoms)

    S = jax.vmap(one)(active)
    Rp = R - S
    e_r = jnp.sum(R * R, axis=1)
    e_s = jnp.sum(S * S, axis=1)
    tiny = jnp.finfo(R.dtype).tiny
    point = jnp.where(e_r > tiny, e_s / jnp.where(e_r > tiny, e_r, 1), 0)
    share = jnp.sum(e_s) / jnp.maximum(jnp.sum(e_r), tiny)
    orth = jnp.max(jnp.where(active, jnp.abs(Rp @ atoms.T), 0), initial=0) / lam
    return ResidualDecomposition(S, Rp, R, point, share, orth)


def residual_decomposition(
    dictionary: Dictionary,
    X: Real[ArrayLike, "N d"],
    Z: Real[ArrayLike, "N K"],
    lam,
    *,
    threshold=0.0,
) -> ResidualDecomposition:
    """Decompose residuals into the shrinkage component and the rest, (R) of THEORY §3:

        r_n = λ D_S G_S⁻¹ 1 + r_n^⊥,   S = S_n = {k : z_kn > threshold}.

    At KKT codes ``D_Sᵀ r_n = λ1``, so ``r_n^⊥ ⟂ span(D_S)`` and the two parts are
    orthogonal; ``orthogonality`` measures how far given codes are from that.

    Args:
        dictionary: ``(D, b, mask)``; the active Gram blocks must be invertible.
        X: data ``(N, d)``; Z: codes ``(N, K)``; lam: λ > 0.
        threshold: codes above it count as active (0 for exact codes).

    Example:
        >>> sol = jaxsae.sparse_code(D, X, 0.1)
        >>> dec = jaxsae.residual_decomposition(D, X, sol.codes, 0.1)
        >>> float(dec.share)   # share of residual energy fixed by the supports alone
    """
    X, Z, lam = checked_problem(dictionary, X, Z, lam)
    thr = jnp.asarray(threshold, dictionary.dtype)
    return _decompose(dictionary, X, Z, lam, thr)


class SplitPrediction(eqx.Module):
    """Which atom splits first as the width grows, and into what (THEORY §5).

    Attributes:
        atom: index ``k*`` of the largest split score.
        scores: ``(K,)`` split scores ``s_k`` (``jaxsae.split_scores``).
        directions: ``(K, d)`` split directions ``v_k`` (unit, ``⟂ d_k``).
        children: ``(2, d)`` predicted atoms after splitting ``k*``: by (A') each
            copy is the code-weighted centroid of the partial data
            ``y_n = r_n + z_kn d_k`` of the points on its side of ``v``
            (``sign(vᵀ r_n)``), normalised.
    """

    atom: Array
    scores: Float[Array, " K"]
    directions: Float[Array, "K d"]
    children: Float[Array, "2 d"]


def split_prediction(
    dictionary: Dictionary, X: Real[ArrayLike, "N d"], lam, *, codes=None, key=None
) -> SplitPrediction:
    """Predict the first split of a dictionary as it widens (THEORY §5).

    The atom with the largest split score ``s_k = max_{v ⟂ d_k} (1/N) Σ_n z_kn |vᵀr_n|``
    splits first, along ``v_k``; its two children are predicted by (A') from the
    points on each side of ``v_k``.

    Example:
        >>> pred = jaxsae.phenomena.split_prediction(D, X, 0.1, codes=Z)
        >>> int(pred.atom), pred.children   # compare with the (K+1)-atom optimum
    """
    X = check_data(X, dictionary.n_features, dictionary.dtype)
    lam = check_lam(lam, dictionary.dtype)
    if codes is None:
        codes = sparse_code(dictionary, X, lam).codes
    scores, V = split_scores(dictionary, X, lam, codes=codes, key=key)
    return _children(dictionary, X, codes, scores, V)


@eqx.filter_jit
def _children(dictionary, X, codes, scores, V):
    Z = jnp.where(dictionary.mask, codes, 0)
    R = X - dictionary.bias - Z @ dictionary.atoms
    k = jnp.argmax(scores)
    zk, dk, v = Z[:, k], dictionary.atoms[k], V[k]
    Y = R + zk[:, None] * dk
    side = (R @ v) >= 0
    plus = jnp.sum(jnp.where(side, zk, 0)[:, None] * Y, axis=0)
    minus = jnp.sum(jnp.where(side, 0, zk)[:, None] * Y, axis=0)
    kids = jnp.stack([plus, minus])
    return SplitPrediction(k, scores, V, kids / jnp.linalg.norm(kids, axis=1, keepdims=True))
