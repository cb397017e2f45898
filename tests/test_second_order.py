"""Second-order certificate (THEORY §4) against finite differences of the true F.

F is evaluated independently: codes re-solved by ``sparse_code`` at a tight
tolerance and ``objective``. The Hessian of ``F ∘ R`` at 0 for the (second-order)
normalisation retraction ``R(Ξ) = normalize(D + Ξ)`` equals the Riemannian Hessian.
All tests share one problem size (d=4, K=3, N=60) so they share compilations.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsae
from jaxsae.certificates._second_order import second_order, second_order_dense
from jaxsae.certificates._verify import proved_lower_bound

D_, K_, N_, LAM = 4, 3, 60, 0.1
CHUNK = 16  # Lanczos runs stream 4 padded chunks; the dense Hessians use one chunk


def _problem(seed=2):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(K_, D_))
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    Z = (0.5 + np.abs(rng.normal(size=(N_, K_)))) * (rng.random((N_, K_)) < 0.5)
    X = Z @ A + 0.05 * rng.normal(size=(N_, D_))
    return A, X


def _true_F(atoms, bias, X, free_bias=False):
    del free_bias  # codes and objective do not depend on it (and one compilation serves both)
    D = jaxsae.Dictionary(atoms, bias)
    sol = jaxsae.sparse_code(D, X, LAM, tol=1e-14)
    return float(jaxsae.objective(D, X, sol.codes, LAM)), np.asarray(sol.codes) > 0


def _alternating_minimum(atoms, X, iters=100):
    """Alternating minimisation: exact codes, then Gauss–Seidel (A') atom updates."""
    atoms = np.array(atoms, dtype=float)
    Z = None
    for _ in range(iters):
        D = jaxsae.Dictionary(atoms)
        Z = np.asarray(jaxsae.sparse_code(D, X, LAM, init=Z, tol=1e-14).codes)
        atoms = np.asarray(D.atoms).copy()
        for k in range(K_):
            Y = X - Z @ atoms + np.outer(Z[:, k], atoms[k])
            den = (Z[:, k] ** 2).sum() + LAM * Z[:, k].sum()
            if den > 0:
                a = Z[:, k] @ Y / den
                atoms[k] = a / np.linalg.norm(a)
    return atoms


def atoms_n(D):
    return np.asarray(D.atoms)


def _fd_hessian(atoms, bias, X, basis, free_bias, t=1e-3):
    """Dense Hessian of Ξ ↦ F(normalize(D + Ξ), b + ḃ) by polarisation + Richardson."""
    K, d = atoms.shape
    F0, S0 = _true_F(atoms, bias, X, free_bias)

    def F_at(v, s):
        A = atoms + s * v[: K * d].reshape(K, d)
        A = A / np.linalg.norm(A, axis=1, keepdims=True)
        F, S = _true_F(A, bias + s * v[K * d :], X, free_bias)
        assert np.array_equal(S, S0), "support changed: step too large for this test point"
        return F

    def q(v):
        def second(h):
            return (F_at(v, h) - 2 * F0 + F_at(v, -h)) / h**2

        return (4 * second(t / 2) - second(t)) / 3

    B = np.asarray(basis)
    p = B.shape[0]
    H = np.zeros((p, p))
    for i in range(p):
        H[i, i] = q(B[i])
        for j in range(i):
            H[i, j] = H[j, i] = (q(B[i] + B[j]) - q(B[i] - B[j])) / 4
    return H


@pytest.mark.parametrize("free_bias", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_hessian_matches_finite_differences_at_generic_point(free_bias):
    # non-stationary point: atoms (and bias) blocks and the general curvature term
    # −(d_kᵀ∇_kF)ξ_k, checked on a random 6-dimensional subspace of the tangent space
    A, X = _problem()
    rng = np.random.default_rng(6)  # a point with support margin 1.5e-2
    atoms = A + 0.2 * rng.normal(size=A.shape)
    bias = 0.05 * rng.normal(size=D_)
    D = jaxsae.Dictionary(atoms, bias, free_bias=free_bias)
    dense = second_order_dense(D, X, LAM)
    B = np.asarray(dense.basis)
    # the basis is orthonormal and tangent: d_kᵀ ξ_k = 0
    np.testing.assert_allclose(B @ B.T, np.eye(B.shape[0]), atol=1e-12)
    Xi = B[:, : K_ * D_].reshape(-1, K_, D_)
    assert np.abs(np.einsum("pkd,kd->pk", Xi, np.asarray(D.atoms))).max() < 1e-12
    assert B.shape[0] == K_ * (D_ - 1) + (D_ if free_bias else 0)
    Q = np.linalg.qr(rng.normal(size=(B.shape[0], 6)))[0]
    H_fd = _fd_hessian(np.asarray(D.atoms), np.asarray(D.bias), X, Q.T @ B, free_bias)
    H = Q.T @ np.asarray(dense.matrix) @ Q
    assert np.linalg.norm(H - H_fd) <= 1e-5 * np.linalg.norm(H_fd)
    # away from stationarity the curvature term is not λ‖z_k‖₁/N: the FD check
    # above validated the general form
    gA = np.asarray(dense.operator.grad_atoms)
    assert np.linalg.norm(gA - np.sum(gA * atoms_n(D), 1, keepdims=True) * atoms_n(D)) > 1e-3


def test_optimum_is_a_verified_strict_local_minimum_and_lanczos_matches_eigh():
    A, X = _problem()
    atoms = _alternating_minimum(A, X)
    D = jaxsae.Dictionary(atoms)
    res = second_order(D, X, LAM, n_eigs=3, key=jax.random.key(3), chunk_size=CHUNK)
    dense = second_order_dense(D, X, LAM)
    H_fd = _fd_hessian(np.asarray(D.atoms), np.asarray(D.bias), X, dense.basis, False)
    ev_fd = np.linalg.eigvalsh(H_fd)
    ev = np.asarray(dense.eigenvalues)
    np.testing.assert_allclose(ev, ev_fd, rtol=1e-5, atol=1e-6 * ev_fd.max())
    # the verified path assembles the same matrix: its spectrum is eigh's to rounding
    assert res.method == "dense" and res.tangent_dimension == K_ * (D_ - 1)
    np.testing.assert_allclose(np.asarray(res.eigenvalues), ev[:3], rtol=1e-12)
    np.testing.assert_allclose(res.largest_eigenvalue, ev[-1], rtol=1e-12)
    assert res.regular and res.stationary and res.verified
    # the proved bound lies below λ_min of the assembled matrix, within its rounding
    # margin (~1e-12 here), and agrees with finite differences of the true F to 1e-5
    assert ev[0] > res.lower_bound > ev[0] - 1e-9 > 0
    np.testing.assert_allclose(res.lower_bound, ev_fd[0], rtol=1e-5)
    assert res.verdict.startswith("strict local minimum (verified")
    # the matrix-free path gives the same eigenvalues and says "estimate"
    lz = second_order(D, X, LAM, n_eigs=3, key=jax.random.key(3), chunk_size=CHUNK, dense_max=0)
    assert lz.method == "lanczos" and not lz.verified and lz.lower_bound == -np.inf
    np.testing.assert_allclose(np.asarray(lz.eigenvalues), ev[:3], rtol=1e-6)
    assert "an estimate" in lz.verdict and "strict local minimum (" not in lz.verdict
    # at stationarity the curvature term is λ‖z_k‖₁/N: −d_kᵀ∇_kF = λ‖z_k‖₁/N
    Z = np.asarray(jaxsae.sparse_code(D, X, LAM, tol=1e-14).codes)
    radial = -np.sum(np.asarray(dense.operator.grad_atoms) * atoms, axis=1)
    np.testing.assert_allclose(radial, LAM * Z.sum(0) / N_, rtol=1e-8)
    # eigenvector is a unit tangent vector with Rayleigh quotient λ_min
    v = np.asarray(res.eigenvectors[0])
    assert abs(np.linalg.norm(v) - 1) < 1e-10
    assert np.abs(np.sum(v * atoms, axis=1)).max() < 1e-10


def _saddle_problem():
    """Atom e1 midway between clusters at ±60° (a saddle) plus atoms e3, e4 on their clusters."""
    rng = np.random.default_rng(0)
    s = rng.uniform(0.8, 1.2, size=20)
    c = np.array([0.5, np.sqrt(3) / 2, 0, 0])
    pts = [np.outer(s, c)]
    pts.append(pts[0] * np.array([1, -1, 1, 1]))  # mirror e2 → −e2
    eps = rng.uniform(0.01, 0.05, size=5)
    a = rng.uniform(0.8, 1.2, size=5)
    for i, j in ((2, 3), (3, 2)):
        P = np.zeros((10, 4))
        P[:5, i] = a
        P[5:, i] = a
        P[:5, j] = eps
        P[5:, j] = -eps
        pts.append(P)
    X = np.concatenate(pts)
    assert X.shape == (N_, D_)
    return np.eye(4)[[0, 2, 3]], X


def test_saddle_negative_curvature_lowers_objective():
    atoms, X = _saddle_problem()
    D = jaxsae.Dictionary(atoms)
    res = second_order(D, X, LAM, n_eigs=2, chunk_size=CHUNK)
    assert res.regular and res.stationary and res.verified
    lmin = float(res.min_eigenvalue)
    assert lmin < 0 and res.verdict.startswith("saddle (verified")
    assert res.lower_bound < lmin  # a proved lower bound, negative here
    # the decrease the verdict states is F's own, re-evaluated here
    t = res.decrease_step
    F0, _ = _true_F(atoms, np.zeros(D_), X)
    At = atoms + t * np.asarray(res.eigenvectors[0])
    Ft, _ = _true_F(At / np.linalg.norm(At, axis=1, keepdims=True), np.zeros(D_), X)
    np.testing.assert_allclose(F0 - Ft, res.decrease, rtol=1e-9)
    assert f"{res.decrease:.3g}" in res.verdict
    ev = np.asarray(second_order_dense(D, X, LAM).eigenvalues)
    np.testing.assert_allclose(np.asarray(res.eigenvalues), ev[:2], rtol=1e-6)
    V = np.asarray(res.eigenvectors[0])
    assert abs(V[0, 1]) > 0.99  # atom e1 tilts toward one cluster (along e2)
    F0, _ = _true_F(atoms, np.zeros(D_), X)
    for t in (0.3, 0.05):
        A = atoms + t * V
        F, _ = _true_F(A / np.linalg.norm(A, axis=1, keepdims=True), np.zeros(D_), X)
        assert F < F0
    # second-order prediction of the decrease along the eigenvector
    t = 1e-2
    A = atoms + t * V
    F, _ = _true_F(A / np.linalg.norm(A, axis=1, keepdims=True), np.zeros(D_), X)
    np.testing.assert_allclose(F - F0, 0.5 * t**2 * lmin, rtol=2e-2)


def test_degenerate_pair_is_reported():
    atoms, X = _saddle_problem()
    D = jaxsae.Dictionary(atoms)
    # a mirrored pair of points whose correlation with atom e3 is exactly λ while
    # their code is 0 (they add nothing to the gradient: still stationary)
    X = np.array(X)
    X[[0, 20]] = [0.0, 0.0, LAM, 0.0]
    res = second_order(D, X, LAM, chunk_size=CHUNK)
    assert not res.regular and res.n_degenerate == 2 and res.stationary
    # atom e1 still has negative curvature: a saddle, proved by F
    assert res.verdict.startswith("saddle (verified") and res.verified
    assert "degenerate point (2 degenerate pairs; curvature λ_min ∈ [" in res.verdict
    assert float(res.lower_eigenvalue) <= float(res.min_eigenvalue) + 1e-12


def test_strict_local_minimum_at_a_degenerate_point():
    """Points x = λ d_k have z = 0 and g_k = λ exactly. They add no gradient, and on
    S⁺ their block vanishes on the tangent space ((I − d_kd_kᵀ)x = 0), so F ≥ F_{S⁺}
    is still strictly convex: a verified strict local minimum at a degenerate point,
    with the bracket λ_min ∈ [a, b] equal to the regular problem's λ_min (up to N)."""
    A, X = _problem()
    atoms = _alternating_minimum(A, X)
    D = jaxsae.Dictionary(atoms)
    regular = second_order(D, X, LAM, chunk_size=CHUNK)
    Xd = np.concatenate([X, LAM * np.asarray(D.atoms)[[0, 1]]])
    res = second_order(D, Xd, LAM, chunk_size=CHUNK)
    assert res.n_degenerate == 2 and not res.regular and res.stationary
    assert res.verified and res.verdict.startswith("strict local minimum (verified")
    assert "on S⁺" in res.verdict and "degenerate point (2 degenerate pairs" in res.verdict
    scale = N_ / (N_ + 2)  # the per-point mean over two more points
    np.testing.assert_allclose(
        float(res.lower_eigenvalue), scale * float(regular.min_eigenvalue), rtol=1e-9
    )
    np.testing.assert_allclose(
        float(res.min_eigenvalue), scale * float(regular.min_eigenvalue), rtol=1e-9
    )
    assert 0 < res.lower_bound <= float(res.lower_eigenvalue)


def test_proved_lower_bound_on_constructed_spectra():
    """A matrix with λ_min = +1e-9 is proved positive definite only when the margin
    allows; λ_min = −1e-9 never is; every bound lies below the true λ_min."""
    rng = np.random.default_rng(5)
    Q = np.linalg.qr(rng.normal(size=(20, 20)))[0]
    for lmin in (1e-9, -1e-9, 0.3, -0.3):
        ev = np.r_[lmin, rng.uniform(0.5, 2.0, 19)]
        M = (Q * ev) @ Q.T
        M = 0.5 * (M + M.T)
        exact = np.linalg.eigvalsh(M)[0]  # λ_min of the stored matrix (±1e-15)
        free = proved_lower_bound(M, 0.0, exact)
        assert free < exact
        assert (free > 0) == (lmin > 0)  # 1e-9 clears the Cholesky margin (~1e-13) ...
        assert proved_lower_bound(M, 1e-8, exact) < 0 or lmin > 1e-8  # ... but not 1e-8
        assert proved_lower_bound(M, 1e-8, exact) <= exact - 1e-8
    assert proved_lower_bound(np.full((3, 3), np.nan), 0.0, 1.0) == -np.inf


def test_operator_is_symmetric_and_linear(getkey):
    A, X = _problem()
    D = jaxsae.Dictionary(A)
    dense = second_order_dense(D, X, LAM)
    op = dense.operator.operator()
    u = (jax.random.normal(getkey(), (K_, D_)), jax.random.normal(getkey(), (D_,)))
    w = (jax.random.normal(getkey(), (K_, D_)), jax.random.normal(getkey(), (D_,)))
    Hu, Hw = op.mv(u), op.mv(w)
    pu = dense.operator.tangent.project(*u)
    pw = dense.operator.tangent.project(*w)

    def inner(a, b):
        return float(jnp.sum(a[0] * b[0]) + jnp.sum(a[1] * b[1]))

    assert abs(inner(pu, Hw) - inner(pw, Hu)) < 1e-12 * (1 + abs(inner(pu, Hw)))
    # in the basis, the operator equals the dense matrix
    B = np.asarray(dense.basis)
    cu = B @ np.asarray(dense.operator.tangent.flatten(*pu))
    Hu_flat = np.asarray(dense.operator.tangent.flatten(*Hu))
    np.testing.assert_allclose(B @ Hu_flat, np.asarray(dense.matrix) @ cu, atol=1e-12)


@pytest.mark.slow
def test_float32_agrees_with_float64():
    A, X = _problem()
    atoms = _alternating_minimum(A, X)
    ev64 = np.asarray(second_order(jaxsae.Dictionary(atoms), X, LAM, n_eigs=3).eigenvalues)
    D32 = jaxsae.Dictionary(np.asarray(atoms, np.float32))
    res32 = second_order(D32, np.asarray(X, np.float32), LAM, n_eigs=3)
    assert res32.eigenvalues.dtype == np.float32
    np.testing.assert_allclose(np.asarray(res32.eigenvalues), ev64, rtol=2e-3, atol=1e-4)
    assert res32.verdict.startswith("strict local minimum")  # proved with float32's margin


@pytest.mark.slow  # compiles certify's first-order pipeline too
def test_certify_attaches_second_order():
    A, X = _problem()
    atoms = _alternating_minimum(A, X, iters=60)
    cert = jaxsae.certify(jaxsae.Dictionary(atoms), X, LAM, second_order=True)
    so = cert.second_order
    ev = np.asarray(second_order_dense(jaxsae.Dictionary(atoms), X, LAM).eigenvalues)
    np.testing.assert_allclose(float(so.min_eigenvalue), ev[0], rtol=1e-6)
    assert so.regular and "strict local minimum" in so.verdict and "λ_min" in so.table()
