"""The penalty of the candidate problem (THEORY §6): its exact prox and its dual certificate.

Per candidate m (a column ``z_m`` of the batch-first codes ``Z`` (N, M)) the penalty is
``f(z_m) = λ 1ᵀz_m + γ ‖z_m‖₂ + ι(z_m ≥ 0)``; its conjugate is the indicator of
``‖(w − λ)_+‖₂ ≤ γ``, which is the dual constraint.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def group_prox(V, lam, gamma, step):
    """``prox_{step·f}`` column by column: shift by ``step·λ``, clip at 0, then group
    shrinkage ``w (1 − step·γ/‖w‖)_+``."""
    W = jnp.maximum(V - step * lam, 0)
    nrm = jnp.sqrt(jnp.sum(W * W, axis=0))
    shrink = jnp.maximum(1 - step * gamma / jnp.where(nrm > 0, nrm, 1), 0)
    return W * shrink


def _excess(A, s, lam, gamma):
    """``f(s) = max_m ‖(s a_m − λ)_+‖ − γ`` and a subgradient ``f'(s)`` (convex, nondecreasing)."""
    P = jnp.maximum(s * A - lam, 0)
    phi = jnp.sqrt(jnp.sum(P * P, axis=0))
    m = jnp.argmax(phi)
    dphi = jnp.sum(A[:, m] * P[:, m]) / jnp.where(phi[m] > 0, phi[m], 1)
    return phi[m] - gamma, dphi


def dual_scale(A, s_max, lam, gamma, n_iter: int = 10):
    """The largest ``s ∈ [0, s_max]`` with ``‖(s·a_m − λ)_+‖ ≤ γ`` for every column m of A.

    ``f(s) = max_m ‖(s a_m − λ)_+‖ − γ`` is convex and nondecreasing with ``f(0) = −γ ≤ 0``.
    Two bracketing sequences converge to its root: Newton from the right stays at or
    above it (a tangent lies below a convex f), the chord from a feasible left end
    stays at or below it (a chord lies above f); only points with ``f ≤ 0`` as
    computed are ever returned, so the scaled residual is dual feasible.
    """
    s_max = jnp.maximum(s_max, 0)
    f_hi, g_hi = _excess(A, s_max, lam, gamma)
    zero = jnp.zeros((), A.dtype)

    def body(_, state):
        lo, f_lo, hi, f_hi, g_hi = state
        active = f_hi > 0
        newton = jnp.clip(hi - f_hi / jnp.where(g_hi > 0, g_hi, 1), lo, hi)
        denom = f_hi - f_lo
        chord = jnp.clip(lo - f_lo * (hi - lo) / jnp.where(denom > 0, denom, 1), lo, hi)
        # Newton lands within rounding of the root when f is (piecewise) linear there
        # (always for γ = 0), so a point a hair below it is also tried as a lower end.
        back = jnp.clip(newton * (1 - 64 * jnp.finfo(A.dtype).eps), lo, hi)
        f_n, g_n = _excess(A, newton, lam, gamma)
        f_c, _ = _excess(A, chord, lam, gamma)
        f_b, _ = _excess(A, back, lam, gamma)
        cand = jnp.stack([lo, chord, back, newton])
        f_cand = jnp.stack([f_lo, f_c, f_b, f_n])
        best = jnp.argmax(jnp.where(f_cand <= 0, cand, -jnp.inf))
        lo_new, f_lo_new = cand[best], f_cand[best]
        hi_new = jnp.where(f_n > 0, newton, hi)
        f_hi_new = jnp.where(f_n > 0, f_n, f_hi)
        g_hi_new = jnp.where(f_n > 0, g_n, g_hi)
        keep = lambda new, old: jnp.where(active, new, old)  # noqa: E731
        return (
            keep(lo_new, lo),
            keep(f_lo_new, f_lo),
            keep(hi_new, hi),
            keep(f_hi_new, f_hi),
            keep(g_hi_new, g_hi),
        )

    f0 = -jnp.asarray(gamma, A.dtype)
    lo, _, hi, f_hi, _ = jax.lax.fori_loop(0, n_iter, body, (zero, f0, s_max, f_hi, g_hi))
    return jnp.where(f_hi <= 0, hi, lo)


def primal_dual(X, C, Z, lam, gamma):
    """Objective, dual value and duality gap (per-point means) of the candidate problem.

    ``P(Z) = (1/N)[½‖R‖² + λΣZ + γ Σ_m ‖z_m‖]`` with ``R = X − Z C``; the dual point
    is ``U = s R`` with ``s`` from :func:`dual_scale` (capped at the unconstrained
    maximiser ``⟨R, X⟩/‖R‖²``). The gap is evaluated without cancellation as

        N·gap = ½(1 − s)²‖R‖² + Σ_m [λ 1ᵀz_m + γ‖z_m‖ − s⟨z_m, a_m⟩],  A = R Cᵀ,

    each bracket ``≥ 0`` for a feasible s.
    """
    N = X.shape[0]
    R = X - Z @ C
    A = R @ C.T
    rr = jnp.sum(R * R)
    za = jnp.sum(Z * A)
    rx = rr + za
    s_max = jnp.where(rr > 0, rx / jnp.where(rr > 0, rr, 1), 0)
    s = dual_scale(A, s_max, lam, gamma)
    l1 = jnp.sum(Z)
    grp = jnp.sum(jnp.sqrt(jnp.sum(Z * Z, axis=0)))
    primal = (0.5 * rr + lam * l1 + gamma * grp) / N
    gap = (0.5 * (1 - s) ** 2 * rr + lam * l1 + gamma * grp - s * za) / N
    dual = (s * rx - 0.5 * s * s * rr) / N
    return primal, dual, jnp.maximum(gap, 0)


def dual_value(X, C, U, lam, gamma):
    """The dual objective ``(1/N)[⟨sU, X⟩ − ½‖sU‖²]`` at any guess ``U`` scaled into the
    feasible set by :func:`dual_scale`: a certified lower bound on the optimum."""
    uu = jnp.sum(U * U)
    ux = jnp.sum(U * X)
    s_max = jnp.where(uu > 0, ux / jnp.where(uu > 0, uu, 1), 0)
    s = dual_scale(U @ C.T, s_max, lam, gamma)
    return (s * ux - 0.5 * s * s * uu) / X.shape[0]
