"""A small dense linear-programming solver (NumPy): Mehrotra's predictor–corrector.

Bounded standard form ``min cᵀx  s.t.  A x = b, 0 ≤ x ≤ u`` (``u`` may be ``inf``)
with the dual ``max bᵀy − uᵀz  s.t.  Aᵀy + s − z = c, s, z ≥ 0``. Bounds are
handled inside the Newton step, so the normal equations are ``m × m`` with ``m``
the number of equality rows, whatever the number of variables. The GS10 checks
(``certificates/_gs10.py``) write their LPs with one row per atom and one
variable per point, so ``m`` stays below the dimension.

Nothing downstream trusts this solver: every verdict built on an LP solution is
re-checked from the returned point (a residual bound or an evaluation of the
objective), so an inaccurate solve can only make a verdict "undecided".
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class LPSolution(NamedTuple):
    """Primal ``x``, dual ``y``, the objective and whether the relative residuals and
    gap fell below ``tol`` within ``max_iter`` iterations."""

    x: np.ndarray
    y: np.ndarray
    objective: float
    converged: bool
    iterations: int


class _State(NamedTuple):
    x: np.ndarray
    w: np.ndarray  # u − x on bounded variables (0 elsewhere)
    y: np.ndarray
    s: np.ndarray
    z: np.ndarray  # dual of x ≤ u (0 on unbounded variables)


def _solve_normal(A, theta, rhs):
    """``(A diag(θ) Aᵀ) v = rhs`` by Cholesky, with a tiny ridge if it is singular."""
    M = (A * theta) @ A.T
    ridge = 1e-14 * max(float(np.max(np.abs(np.diag(M)), initial=0.0)), 1.0)
    for _ in range(6):
        try:
            L = np.linalg.cholesky(M + ridge * np.eye(M.shape[0]))
            return np.linalg.solve(L.T, np.linalg.solve(L, rhs))
        except np.linalg.LinAlgError:
            ridge *= 100
    return np.linalg.lstsq(M, rhs, rcond=None)[0]


def _max_step(v, dv):
    """Largest ``α ∈ (0, 1]`` with ``v + α dv ≥ 0``."""
    neg = dv < 0
    return min(1.0, float(np.min(-v[neg] / dv[neg]))) if neg.any() else 1.0


def linprog(c, A, b, u=None, *, tol: float = 1e-9, max_iter: int = 200) -> LPSolution:
    """Solve ``min cᵀx s.t. Ax = b, 0 ≤ x ≤ u`` (dense, float64) by Mehrotra's method.

    Args:
        c: ``(n,)`` costs. A: ``(m, n)`` equality constraints. b: ``(m,)``.
        u: ``(n,)`` upper bounds (``inf`` for none; default: none).
        tol: relative primal/dual residual and gap at which to stop.

    Returns:
        An ``LPSolution``; ``converged`` is False when ``max_iter`` was reached or the
        iterates diverged (e.g. an infeasible or unbounded problem).
    """
    c, A, b = (np.asarray(v, np.float64) for v in (c, A, b))
    n = c.shape[0]
    u = np.full(n, np.inf) if u is None else np.asarray(u, np.float64)
    bounded = np.isfinite(u)
    ub = np.where(bounded, u, 0.0)
    x = np.where(bounded, 0.5 * ub, 1.0)
    st = _State(x, ub - np.where(bounded, x, 0), np.zeros(A.shape[0]), np.ones(n), bounded * 1.0)
    norms = (1 + np.linalg.norm(b), 1 + np.linalg.norm(ub), 1 + np.linalg.norm(c))
    converged, iterations = False, 0
    with np.errstate(all="ignore"):  # a diverging (infeasible) iterate just stops
        while iterations < max_iter:
            iterations += 1
            st, converged, stop = _iterate(A, b, c, ub, bounded, st, norms, tol)
            if stop:
                break
    return LPSolution(st.x, st.y, float(c @ st.x), converged, iterations)


def _iterate(A, b, c, u, bounded, st: _State, norms, tol):
    """One predictor–corrector step: ``(state, converged, stop)``."""
    x, w, y, s, z = st
    rp = b - A @ x
    ru = np.where(bounded, u - x - w, 0.0)
    rd = c - A.T @ y - s + z
    n_comp = x.size + int(bounded.sum())
    mu = float(x @ s + w @ z) / n_comp
    primal, dual = float(c @ x), float(b @ y - u @ z)
    small = (
        np.linalg.norm(rp) / norms[0] < tol
        and np.linalg.norm(ru) / norms[1] < tol
        and np.linalg.norm(rd) / norms[2] < tol
        and abs(primal - dual) / (1 + abs(primal)) < tol
    )
    if small:
        return st, True, True
    if not (np.isfinite(mu) and mu > 0):
        return st, False, True
    wz = np.where(bounded, z / np.where(bounded, w, 1.0), 0.0)
    theta = 1 / (s / x + wz)

    def direction(rxs, rwz):
        inv_w = np.where(bounded, 1 / np.where(bounded, w, 1.0), 0.0)
        rhat = rd - rxs / x + inv_w * (rwz - z * ru)
        dy = _solve_normal(A, theta, rp + A @ (theta * rhat))
        dx = theta * (A.T @ dy - rhat)
        ds = (rxs - s * dx) / x
        dw = np.where(bounded, ru - dx, 0.0)
        dz = inv_w * (rwz - z * dw)
        return dx, dw, dy, ds, dz

    dx, dw, dy, ds, dz = direction(-x * s, -w * z)  # affine-scaling predictor
    ap = min(_max_step(x, dx), _max_step(w, dw))
    ad = min(_max_step(s, ds), _max_step(z, dz))
    mu_aff = float((x + ap * dx) @ (s + ad * ds) + (w + ap * dw) @ (z + ad * dz)) / n_comp
    sigma = (mu_aff / mu) ** 3
    dx, dw, dy, ds, dz = direction(  # corrector
        sigma * mu - x * s - dx * ds, np.where(bounded, sigma * mu - w * z - dw * dz, 0.0)
    )
    ap = 0.995 * min(_max_step(x, dx), _max_step(w, dw))
    ad = 0.995 * min(_max_step(s, ds), _max_step(z, dz))
    new = _State(x + ap * dx, w + ap * dw, y + ad * dy, s + ad * ds, z + ad * dz)
    finite = all(np.isfinite(v).all() for v in new)
    return (new if finite else st), False, not finite
