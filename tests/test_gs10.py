"""GS10 λ → 0 checks for bases (THEORY §4) against independent facts.

- scipy's exact LP (HiGHS) for ``min{‖u‖_∞ : Bu = c}`` and the cone depth;
- a point on the boundary of the cone (must be undecided) and one just outside it
  (must be disproved; the decrease is re-evaluated here in 50-digit arithmetic);
- random perturbations, generic (signed) or feasible by construction (nonnegative),
  that must not lower the objective wherever a local minimum is claimed.

The tests build ``B_k`` and the target vectors from THEORY's formulas themselves;
none uses the library's acceptance rule.
"""

from decimal import Decimal, getcontext

import numpy as np
import pytest
from scipy.optimize import linprog

from jaxsae import gs10_check

K_, N_ = 4, 400


def _bernoulli_gaussian(rng, n=N_, p=0.3, nonneg=False):
    Z = rng.normal(size=(n, K_)) * (rng.random((n, K_)) < p)
    return np.abs(Z) if nonneg else Z


def _orthonormal(rng):
    return np.linalg.qr(rng.normal(size=(K_, K_)))[0]


def _pieces(D, Z, k, nonneg):
    """THEORY §4: B_k, and c_k (signed) or a_k (nonnegative)."""
    G = D @ D.T
    oth = [j for j in range(D.shape[0]) if j != k]
    B = Z[Z[:, k] == 0][:, oth].T
    l1 = np.abs(Z[:, oth]).sum(0)
    if nonneg:
        return B, l1 * (1 - G[oth, k])
    return B, np.sign(Z[:, k]) @ Z[:, oth] - G[oth, k] * l1


def _scipy_min_inf_norm(B, c):
    m = B.shape[1]
    if m == 0:
        return 0.0 if np.allclose(c, 0) else np.inf
    A_ub = np.block([[np.eye(m), -np.ones((m, 1))], [-np.eye(m), -np.ones((m, 1))]])
    r = linprog(
        np.r_[np.zeros(m), 1.0], A_ub=A_ub, b_ub=np.zeros(2 * m), A_eq=np.c_[B, np.zeros(len(c))],
        b_eq=c, bounds=[(None, None)] * m + [(0, None)], method="highs",
    )  # fmt: skip
    return r.fun if r.status == 0 else np.inf


def _scipy_depth(B, a):
    """max t s.t. Bw = a, w ≥ t·1 (t free, capped at 1), on the problem scaled as the library's."""
    r, m = B.shape
    scale = max(np.abs(B).max(initial=0.0), np.linalg.norm(a))
    B, a = B / scale, a / scale
    A_ub = np.c_[-np.eye(m), np.ones((m, 1))]  # t − w_i ≤ 0
    res = linprog(
        np.r_[np.zeros(m), -1.0], A_ub=A_ub, b_ub=np.zeros(m), A_eq=np.c_[B, np.zeros(r)],
        b_eq=a, bounds=[(None, None)] * m + [(None, 1.0)], method="highs",
    )  # fmt: skip
    return -res.fun if res.status == 0 else -np.inf


def _norm_rows(A):
    return A / np.linalg.norm(A, axis=1, keepdims=True)


def test_signed_lp_value_is_scipys_and_pass_iff_below_one():
    rng = np.random.default_rng(0)
    statuses = []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        D = _orthonormal(rng)
        Z = _bernoulli_gaussian(rng, n=[400, 40, 16][seed % 3])
        chk = gs10_check(D, Z)
        for k in range(K_):
            ref = _scipy_min_inf_norm(*_pieces(D, Z, k, False))
            lp, status = float(chk.lp_value[k]), int(chk.status[k])
            if np.isfinite(ref) and np.isfinite(lp):  # solved where pinv did not suffice
                np.testing.assert_allclose(lp, ref, rtol=1e-7)  # the LP's own accuracy, 1e-9
            assert (status == 1) == (ref < 1 - 1e-7) or abs(ref - 1) < 1e-7
            assert (
                float(chk.pinv_value[k]) >= ref - 1e-9
            )  # B⁺c is feasible: pinv is only sufficient
            statuses.append(status)
    assert 1 in statuses and -1 in statuses  # both answers were exercised


def test_signed_nested_support_is_disproved_with_a_real_descent():
    rng = np.random.default_rng(1)
    D, Z = _orthonormal(rng), _bernoulli_gaussian(rng)
    Z[:, 0] = rng.normal(size=N_)  # atom 0 fires on every point: B_0 has no columns
    chk = gs10_check(D, Z)
    assert chk.not_local_minimum and int(chk.status[0]) == -1
    assert np.isinf(float(chk.lp_value[0]))
    # evaluate the objective ourselves along the returned direction
    X = Z @ D
    eps = float(chk.step[0])
    atoms = _norm_rows(D + eps * np.asarray(chk.direction[0]))
    Z_eps = np.linalg.solve(atoms.T, X.T).T
    assert np.abs(Z).sum() - np.abs(Z_eps).sum() > 0.5 * float(chk.decrease[0])


def test_signed_pass_is_never_beaten_by_random_perturbations():
    rng = np.random.default_rng(2)
    D, Z = _orthonormal(rng), _bernoulli_gaussian(rng)
    chk = gs10_check(D, Z)
    assert chk.local_minimum
    X, F0 = Z @ D, np.abs(Z).sum()
    for _ in range(200):
        Xi = rng.normal(size=D.shape)
        Xi -= np.sum(Xi * D, axis=1, keepdims=True) * D  # tangent
        atoms = _norm_rows(D + 1e-5 * Xi / np.linalg.norm(Xi))
        assert np.abs(np.linalg.solve(atoms.T, X.T)).sum() >= F0 - 1e-10


def _cone_world(s):
    """D = I₃: B_0 has columns (1, 1), (2, 1); a_0 = (5 + s, 6) meets the ray (2, 1) at s = 7.
    Atoms 1 and 2 have their cone vectors well inside (ratios 8/6 in (1/2, 2), 12/8 in (1/2, 7))."""
    return np.array(
        [[0, 1, 1], [0, 2, 1], [1, s, 0], [1, 0, 1], [2, 0, 1], [1, 0, 2], [1, 1, 0], [2, 1, 0]],
        dtype=float,
    )


def _decrease_50_digits(D, Z, direction, eps):
    """1ᵀZ1 − 1ᵀZ(ε)1 and min Z(ε) with Z(ε) = X D(ε)⁻¹, in 50-digit decimals (3×3 only)."""
    getcontext().prec = 50
    dec = lambda a: [[Decimal(repr(float(v))) for v in row] for row in a]  # noqa: E731
    Dn, Vn, Zn = dec(D), dec(direction), dec(Z)
    e = Decimal(repr(eps))
    rows = [[Dn[i][j] + e * Vn[i][j] for j in range(3)] for i in range(3)]
    rows = [[v / sum(x * x for x in r).sqrt() for v in r] for r in rows]
    X = [[sum(Zn[n][i] * Dn[i][j] for i in range(3)) for j in range(3)] for n in range(len(Zn))]
    # solve Z(ε) A = X for each row: Gaussian elimination on Aᵀ z = x
    At = [[rows[i][j] for i in range(3)] for j in range(3)]
    out = []
    for x in X:
        M = [At[r][:] + [x[r]] for r in range(3)]
        for c in range(3):
            p = max(range(c, 3), key=lambda r: abs(M[r][c]))
            M[c], M[p] = M[p], M[c]
            for r in range(3):
                if r != c:
                    f = M[r][c] / M[c][c]
                    M[r] = [a - f * b for a, b in zip(M[r], M[c])]
        out.append([M[r][3] / M[r][r] for r in range(3)])
    total0 = sum(sum(r) for r in Zn)
    return float(total0 - sum(sum(r) for r in out)), float(min(min(r) for r in out))


def test_cone_interior_boundary_and_just_outside():
    D = np.eye(3)
    inside = gs10_check(D, _cone_world(6.0), nonnegative=True)
    assert inside.local_minimum and np.asarray(inside.status).tolist() == [1, 1, 1]
    boundary = gs10_check(D, _cone_world(7.0), nonnegative=True)
    assert not boundary.local_minimum and int(boundary.status[0]) == 0
    assert boundary.verdict.startswith("undecided")
    # a_0 lies 2e-6 outside the cone: dist((5 + s, 6), ray (2, 1)) = (s − 7)/√5
    outside = gs10_check(D, _cone_world(7 + 2e-6 * np.sqrt(5)), nonnegative=True)
    assert outside.not_local_minimum and int(outside.status[0]) == -1
    Z = _cone_world(7 + 2e-6 * np.sqrt(5))
    dec, zmin = _decrease_50_digits(D, Z, np.asarray(outside.direction[0]), float(outside.step[0]))
    assert zmin >= 0  # the perturbed codes stay feasible
    np.testing.assert_allclose(dec, float(outside.decrease[0]), rtol=1e-3)
    assert dec > 0


def _random_cone_world(rng, n=60):
    D = _norm_rows(np.abs(_orthonormal(rng)) + 0.3)
    return D, _bernoulli_gaussian(rng, n=n, p=0.45, nonneg=True)


def test_cone_answers_agree_with_scipys_depth():
    proved = disproved = 0
    for seed in range(40):
        rng = np.random.default_rng(100 + seed)
        D, Z = _random_cone_world(rng, n=[60, 20, 12][seed % 3])
        chk = gs10_check(D, Z, nonnegative=True)
        for k in range(K_):
            B, a = _pieces(D, Z, k, True)
            depth = _scipy_depth(B, a) if np.linalg.matrix_rank(B) == K_ - 1 else -np.inf
            status = int(chk.status[k])
            if status == 1:
                assert depth > 0
                np.testing.assert_allclose(float(chk.lp_value[k]), depth, atol=1e-7)
                proved += 1
            elif status == -1:
                assert depth < 1e-9
                disproved += 1
            if depth > 1e-6:  # clearly interior: always proved (no "97 of 209" misses)
                assert status == 1
    assert proved > 20 and disproved > 5


def test_cone_pass_is_never_beaten_by_feasible_perturbations():
    rng = np.random.default_rng(7)
    for _ in range(20):
        D, Z = _random_cone_world(rng)
        if gs10_check(D, Z, nonnegative=True).local_minimum:
            break
    else:
        pytest.fail("no strict local minimum among the random worlds")
    X, F0, G = Z @ D, Z.sum(), D @ D.T
    tried = 0
    for _ in range(60):
        A = np.zeros((K_, K_))
        for k in range(K_):  # a feasible row y_k: B_kᵀ y ≤ −10⁻³‖b_n‖ (scipy, random objective)
            B, _ = _pieces(D, Z, k, True)
            oth = [j for j in range(K_) if j != k]
            r = linprog(
                rng.normal(size=K_ - 1), A_ub=B.T, b_ub=-1e-3 * np.linalg.norm(B, axis=0),
                bounds=[(-1, 1)] * (K_ - 1), method="highs",
            )  # fmt: skip
            if r.status == 0:
                A[k, oth] = r.x * rng.random()
        if not A.any():
            continue
        A[np.diag_indices(K_)] = -np.einsum("jk,kj->j", G, A) + np.diag(A)  # diag(GA) = 0
        atoms = _norm_rows(D + 1e-5 * (A.T @ D))
        Z_eps = np.linalg.solve(atoms.T, X.T).T
        assert np.all(Z_eps[Z == 0] >= -1e-12)  # the direction is feasible
        assert Z_eps.sum() >= F0 - 1e-10
        tried += 1
    assert tried > 30


def test_bad_input_messages(unchecked):
    with pytest.raises(ValueError, match="square"):
        gs10_check(np.ones((3, 4)), np.ones((5, 3)))
    with pytest.raises(ValueError, match="Z ≥ 0"):
        gs10_check(np.eye(3), -np.ones((5, 3)), nonnegative=True)
