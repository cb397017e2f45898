"""GS10 λ → 0 checks for bases (THEORY §4) against scipy's LP and NNLS solvers."""

import numpy as np
import pytest
from scipy.optimize import linprog, nnls

from jaxsae.certificates._gs10 import gs10_check

K_, N_ = 4, 400


def _lp(B, c):
    """min ‖u‖_∞ s.t. B u = c, as an LP in (u, t): min t, −t ≤ u_i ≤ t."""
    m = B.shape[1]
    if m == 0:
        return 0.0 if np.allclose(c, 0) else np.inf
    cost = np.r_[np.zeros(m), 1.0]
    A_ub = np.block([[np.eye(m), -np.ones((m, 1))], [-np.eye(m), -np.ones((m, 1))]])
    A_eq = np.c_[B, np.zeros(len(c))]
    r = linprog(
        cost,
        A_ub=A_ub,
        b_ub=np.zeros(2 * m),
        A_eq=A_eq,
        b_eq=c,
        bounds=[(None, None)] * m + [(0, None)],
        method="highs",
    )
    return r.fun if r.status == 0 else np.inf


def _bernoulli_gaussian(rng, p=0.3, nonneg=False):
    Z = rng.normal(size=(N_, K_)) * (rng.random((N_, K_)) < p)
    return np.abs(Z) if nonneg else Z


def _orthonormal(rng):
    return np.linalg.qr(rng.normal(size=(K_, K_)))[0]


def test_orthonormal_bernoulli_gaussian_passes_and_lp_below_pinv():
    rng = np.random.default_rng(0)
    D, Z = _orthonormal(rng), _bernoulli_gaussian(rng)
    chk = gs10_check(D, Z, lp_solver=_lp)
    pinv, lp = np.asarray(chk.pinv_value), np.asarray(chk.lp_value)
    # pinv ≥ LP optimum (B⁺c is feasible), both < 1 at large N
    assert np.all(lp <= pinv + 1e-9) and np.all(pinv < 1)
    assert chk.local_minimum and bool(np.all(chk.passes))
    # the pinv value is the ∞-norm of the minimum-norm solution: check with numpy
    for k in range(K_):
        silent = Z[:, k] == 0
        oth = [j for j in range(K_) if j != k]
        B = Z[silent][:, oth].T
        G = D @ D.T
        c = np.sign(Z[:, k]) @ Z[:, oth] - G[oth, k] * np.abs(Z[:, oth]).sum(0)
        np.testing.assert_allclose(pinv[k], np.abs(np.linalg.pinv(B) @ c).max(), rtol=1e-8)


def test_nested_support_fails():
    rng = np.random.default_rng(1)
    D, Z = _orthonormal(rng), _bernoulli_gaussian(rng)
    Z[:, 0] = rng.normal(size=N_)  # atom 0 fires on every point: it contains every support
    chk = gs10_check(D, Z, lp_solver=_lp)
    assert np.isinf(float(chk.lp_value[0])) and np.isinf(float(chk.pinv_value[0]))
    assert not chk.local_minimum


def test_pinv_is_sufficient_and_lp_lower_at_small_n():
    # with few points the pinv test is only sufficient: LP ≤ pinv always
    n_finite, n_strict = 0, 0
    for seed in range(5):
        rng = np.random.default_rng(10 + seed)
        D, Z = _orthonormal(rng), _bernoulli_gaussian(rng)[:12]
        chk = gs10_check(D, Z, lp_solver=_lp)
        lp, pinv = np.asarray(chk.lp_value), np.asarray(chk.pinv_value)
        finite = np.isfinite(pinv)
        assert np.all(lp[finite] <= pinv[finite] + 1e-9)
        assert np.all(np.isinf(lp) <= np.isinf(pinv))
        n_finite += int(finite.sum())
        n_strict += int(np.sum(lp[finite] < pinv[finite] - 1e-6))
    assert n_finite > 0 and n_strict > 0  # the comparison was exercised


def _in_cone_scipy(B, a, margin=1e-6):
    B1 = B.sum(1)
    t = margin * np.linalg.norm(a) / max(np.linalg.norm(B1), 1e-300)
    res = nnls(B, a - t * B1, maxiter=10 * B.shape[1])[1] if B.shape[1] else np.linalg.norm(a)
    full = B.shape[1] >= B.shape[0] and np.linalg.matrix_rank(B) == B.shape[0]
    return full and res <= 1e-6 * np.linalg.norm(a)


@pytest.mark.parametrize("nested", [False, True])
def test_nonnegative_cone_condition_matches_scipy_nnls(nested):
    rng = np.random.default_rng(2)
    D = np.abs(_orthonormal(rng)) + 0.3
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    Z = _bernoulli_gaussian(rng, nonneg=True)
    if nested:  # atom 1 fires only where atom 0 fires: row 1 of B_0 is zero
        Z[:, 1] *= Z[:, 0] > 0
    chk = gs10_check(D, Z, nonnegative=True)
    G = D @ D.T
    for k in range(K_):
        oth = [j for j in range(K_) if j != k]
        B = Z[Z[:, k] == 0][:, oth].T
        a = Z[:, oth].sum(0) * (1 - G[oth, k])
        assert bool(chk.passes[k]) == _in_cone_scipy(B, a)
    assert chk.local_minimum == (not nested)
