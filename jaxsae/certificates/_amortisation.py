"""The amortisation gap of an SAE encoder (THEORY §1, "Amortisation gap")."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Real

from .._typing import ArrayLike
from .._validate import check_data, check_lam
from ..models._objective import objective
from ..models._sae import SAE
from ..models._sae_dictionary import sae_codes, sae_dictionary
from ..solvers._kkt import KKTResidual, kkt_residual
from ..solvers._lasso import sparse_code


class AmortisationGap(eqx.Module):
    """How far an SAE's one-pass codes are from the optimal codes of its own dictionary.

    Attributes:
        gap: ``L(D, Z_sae) − L(D, Z*)`` (per-point mean objective, THEORY §0).
        sae_objective: ``L(D, Z_sae)``.
        optimal_objective: ``L(D, Z*)`` with ``Z*`` from ``jaxsae.sparse_code``.
        optimal_gap: the certified bound ``mean_n gap_n`` on ``L(D, Z*) − min_Z L``;
            the true amortisation gap lies in ``[gap, gap + optimal_gap]``.
        kkt: the ``KKTResidual`` of ``Z_sae`` (THEORY §1).
        codes: the folded SAE codes ``Z_sae`` ``(N, K)``.
        optimal_codes: ``Z*`` ``(N, K)``.
    """

    gap: Float[Array, ""]
    sae_objective: Float[Array, ""]
    optimal_objective: Float[Array, ""]
    optimal_gap: Float[Array, ""]
    kkt: KKTResidual
    codes: Float[Array, "N K"]
    optimal_codes: Float[Array, "N K"]


def amortisation_gap(
    sae: SAE,
    X: Real[ArrayLike, "N d"],
    lam,
    *,
    tol: float | None = None,
    max_steps: int = 200,
    chunk_size: int | None = None,
) -> AmortisationGap:
    """``L(D, Z_sae) − L(D, Z*)`` for the SAE's folded dictionary ``D`` (THEORY §1).

    ``D = sae_dictionary(sae)``, ``Z_sae = sae_codes(sae, X)`` (codes times decoder
    norms, THEORY §0) and ``Z*`` the certified lasso codes of ``jaxsae.sparse_code``
    (``tol``, ``max_steps``, ``chunk_size`` are its options). Also returns the KKT
    residuals of ``Z_sae``.

    Example:
        >>> ag = jaxsae.amortisation_gap(sae, X, 0.1)
        >>> float(ag.gap), float(ag.kkt.max())
    """
    D = sae_dictionary(sae)
    X = check_data(X, sae.d_in, sae.dtype, model="SAE")
    lam = check_lam(lam, sae.dtype)
    Z = sae_codes(sae, X)
    sol = sparse_code(D, X, lam, tol=tol, max_steps=max_steps, chunk_size=chunk_size)
    L_sae = objective(D, X, Z, lam)
    L_opt = objective(D, X, sol.codes, lam)
    return AmortisationGap(
        gap=L_sae - L_opt,
        sae_objective=L_sae,
        optimal_objective=L_opt,
        optimal_gap=jnp.mean(sol.gap),
        kkt=kkt_residual(D, X, Z, lam),
        codes=Z,
        optimal_codes=sol.codes,
    )
