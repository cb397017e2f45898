"""Optimality of codes: KKT residuals and the duality gap of THEORY §1."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Real

from .._typing import ArrayLike
from ..models._dictionary import Dictionary
from ..models._objective import checked_problem
from ..models._sae_dictionary import as_dictionary


def point_gap(z, g, r_sq, lam, mask):
    """Per-point duality gap of the nonnegative lasso, without cancellation.

    With ``r = y − Dz``, ``g = Dᵀr`` and the dual point ``u = s·r``,
    ``s = min(1, λ / max_k g_k)`` (``s = 1`` when ``max_k g_k ≤ 0``; THEORY §1),

        P(z) − Q(u) = Σ_k z_k (λ − s g_k) + ½ (1 − s)² ‖r‖²,

    an exact rewriting of ``½‖r‖² + λ1ᵀz − ½‖y‖² + ½‖y − u‖²`` in which every
    term is nonnegative for feasible ``z``; it bounds ``P(z) − P*`` from above.

    Args: ``z``, ``g``: ``(..., K)``; ``r_sq``: ``(...)``; ``mask``: ``(K,)``.
    Returns: ``(gap, s)``.
    """
    gmax = jnp.max(jnp.where(mask, g, -jnp.inf), axis=-1)
    s = jnp.where(gmax > lam, lam / jnp.where(gmax > lam, gmax, 1), 1)
    zm = jnp.where(mask, z, 0)
    gap = jnp.sum(zm * (lam - s[..., None] * g), axis=-1) + 0.5 * (1 - s) ** 2 * r_sq
    return gap, s


class KKTResidual(eqx.Module):
    """Named optimality residuals of codes ``Z`` for a dictionary (THEORY §1).

    All entries of masked atoms are zero. Usable inside ``jit`` and ``vmap``.

    Attributes:
        complementarity: ``(N, K)`` ``ρ_kn = min(z_kn, λ − g_kn)``; zero iff KKT holds.
        primal_infeasibility: ``(N, K)`` ``max(−z_kn, 0)``.
        dual_infeasibility: ``(N, K)`` ``max(g_kn − λ, 0)``.
        gap: ``(N,)`` duality gap ``P(z_n) − Q(s r_n) ≥ P(z_n) − P*``.
        primal: ``(N,)`` per-point lasso objective ``½‖r_n‖² + λ1ᵀz_n``.
        correlation: ``(N, K)`` ``g_kn = d_kᵀ r_n``.
        lam: the λ the residuals were measured at.
    """

    complementarity: Float[Array, "N K"]
    primal_infeasibility: Float[Array, "N K"]
    dual_infeasibility: Float[Array, "N K"]
    gap: Float[Array, " N"]
    primal: Float[Array, " N"]
    correlation: Float[Array, "N K"]
    lam: Float[Array, ""]

    @property
    def kkt(self) -> Float[Array, " N"]:
        """Per point ``max_k |ρ_kn| / λ`` (the scale-free KKT residual)."""
        return jnp.max(jnp.abs(self.complementarity), axis=-1) / self.lam

    def max(self) -> Float[Array, ""]:
        """``max_{k,n} |ρ_kn| / λ``."""
        return jnp.max(self.kkt)

    def mean(self) -> Float[Array, ""]:
        """``mean_{k,n} |ρ_kn| / λ`` (over unmasked and masked entries alike)."""
        return jnp.mean(jnp.abs(self.complementarity)) / self.lam


def kkt_from_parts(Z, G, R, lam, mask) -> KKTResidual:
    """Residuals from codes ``Z``, correlations ``G = R Dᵀ`` and residuals ``R``."""
    Zm = jnp.where(mask, Z, 0)
    Gm = jnp.where(mask, G, 0)
    comp = jnp.where(mask, jnp.minimum(Zm, lam - Gm), 0)
    r_sq = jnp.sum(R * R, axis=-1)
    gap, _ = point_gap(Zm, Gm, r_sq, lam, mask)
    return KKTResidual(
        complementarity=comp,
        primal_infeasibility=jnp.maximum(-Zm, 0),
        dual_infeasibility=jnp.where(mask, jnp.maximum(Gm - lam, 0), 0),
        gap=gap,
        primal=0.5 * r_sq + lam * jnp.sum(Zm, axis=-1),
        correlation=Gm,
        lam=jnp.asarray(lam),
    )


def kkt_residual(
    dictionary: Dictionary | Real[ArrayLike, "K d"],
    X: Real[ArrayLike, "N d"],
    Z: Real[ArrayLike, "N K"],
    lam,
) -> KKTResidual:
    """KKT residuals and duality gaps of codes ``Z`` for ``min_{z≥0} ½‖y−Dz‖² + λ1ᵀz`` (THEORY §1).

    KKT (necessary and sufficient): ``z_kn ≥ 0``, ``g_kn ≤ λ``, ``z_kn(λ − g_kn) = 0``
    with ``g_kn = d_kᵀ(x_n − b − D z_n)``.

    Example:
        >>> res = jaxsae.kkt_residual(D, X, sol.codes, 0.1)
        >>> float(res.max()), float(res.gap.max())   # both ~0 at the optimum
    """
    dictionary = as_dictionary(dictionary, X, fn="jaxsae.kkt_residual")
    X, Z, lam = checked_problem(dictionary, X, Z, lam)
    Zm = jnp.where(dictionary.mask, Z, 0)
    R = X - dictionary.bias - Zm @ dictionary.atoms
    return kkt_from_parts(Z, R @ dictionary.atoms.T, R, lam, dictionary.mask)
