"""sparse_code: exactness against independent solvers, certificates, transformations."""

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize
from sklearn.linear_model import Lasso

import jaxsae
from jaxsae.solvers import _lasso

K, D_, N, LAM = 8, 5, 6, 0.2  # the tiny problem (shared shapes: one compilation)


def tiny(seed=0):
    rng = np.random.default_rng(seed)
    atoms = rng.standard_normal((K, D_))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    Z = np.where(rng.uniform(size=(N, K)) < 0.4, rng.uniform(0.5, 1.5, (N, K)), 0)
    return atoms, Z @ atoms + 0.3 * rng.standard_normal((N, D_))


def brute_force(atoms, y, lam):
    """Exact minimiser by enumerating every support (the optimum is the
    unconstrained minimiser on its support, with positive codes)."""
    G, b = atoms @ atoms.T, atoms @ y
    best, best_z = 0.5 * y @ y, np.zeros(len(atoms))
    for size in range(1, min(len(atoms), len(y)) + 1):
        for S in itertools.combinations(range(len(atoms)), size):
            S = list(S)
            zS = np.linalg.solve(G[np.ix_(S, S)], b[S] - lam)
            if np.all(zS > 0):
                z = np.zeros(len(atoms))
                z[S] = zS
                r = y - z @ atoms
                p = 0.5 * r @ r + lam * z.sum()
                if p < best:
                    best, best_z = p, z
    return best_z


@pytest.fixture(scope="module")
def solved():
    atoms, X = tiny()
    D = jaxsae.Dictionary(atoms)
    return D, atoms, X, jaxsae.sparse_code(D, X, LAM)


def test_matches_brute_force(solved):
    D, atoms, X, sol = solved
    assert sol.result == jaxsae.RESULTS.successful
    exact = np.stack([brute_force(atoms, x, LAM) for x in X])
    np.testing.assert_allclose(np.asarray(sol.codes), exact, atol=1e-12)
    assert float(sol.gap.max()) < 1e-13 and float(sol.kkt.max()) < 1e-12


def test_matches_scipy_lbfgsb(solved):
    D, atoms, X, sol = solved
    for n, y in enumerate(X):

        def f(z, y=y):
            r = y - z @ atoms
            return 0.5 * r @ r + LAM * z.sum(), -(atoms @ r) + LAM

        out = minimize(
            f,
            np.zeros(K),
            jac=True,
            method="L-BFGS-B",
            bounds=[(0, None)] * K,
            options=dict(ftol=1e-16, gtol=1e-14, maxiter=10000),
        )
        np.testing.assert_allclose(np.asarray(sol.codes[n]), out.x, atol=1e-8)


def test_matches_sklearn_positive_lasso(solved):
    # sklearn: (1/(2 n_samples))‖y − Xw‖² + α‖w‖₁ with n_samples = d rows of Dᵀ, so α = λ/d.
    D, atoms, X, sol = solved
    for n, y in enumerate(X):
        model = Lasso(
            alpha=LAM / D_, positive=True, fit_intercept=False, tol=1e-14, max_iter=1_000_000
        )
        model.fit(atoms.T, y)
        np.testing.assert_allclose(np.asarray(sol.codes[n]), model.coef_, atol=1e-8)


def test_gap_bounds_suboptimality_of_random_iterates(solved):
    D, atoms, X, sol = solved
    p_star = np.asarray(jaxsae.kkt_residual(D, X, sol.codes, LAM).primal)
    rng = np.random.default_rng(1)
    for _ in range(10):
        Z = np.asarray(sol.codes) + rng.uniform(0, 0.3) * np.maximum(rng.standard_normal((N, K)), 0)
        res = jaxsae.kkt_residual(D, X, Z, LAM)
        assert np.all(np.asarray(res.gap) >= np.asarray(res.primal) - p_star - 1e-13)


def test_vmap_over_lambda_equals_loop(solved):
    D, atoms, X, _ = solved
    lams = jnp.array([0.05, 0.2, 0.6])
    batched = jax.vmap(lambda lam: jaxsae.sparse_code(D, X, lam).codes)(lams)
    for i, lam in enumerate(lams):
        np.testing.assert_allclose(
            np.asarray(batched[i]), np.asarray(jaxsae.sparse_code(D, X, lam).codes), atol=1e-12
        )
        exact = np.stack([brute_force(atoms, x, float(lam)) for x in X])
        np.testing.assert_allclose(np.asarray(batched[i]), exact, atol=1e-12)


def test_jit_equals_eager(solved):
    D, atoms, X, sol = solved
    jitted = jax.jit(lambda D, X, lam: jaxsae.sparse_code(D, X, lam).codes)(D, X, LAM)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(sol.codes), atol=1e-13)


def test_masked_atoms_get_zero_codes(solved):
    D, atoms, X, _ = solved
    mask = np.array([True, False, True, True, False, True, True, False])
    sol = jaxsae.sparse_code(D.with_mask(jnp.asarray(mask)), X, LAM)
    assert np.all(np.asarray(sol.codes)[:, ~mask] == 0)
    exact = np.stack([brute_force(atoms[mask], x, LAM) for x in X])
    np.testing.assert_allclose(np.asarray(sol.codes)[:, mask], exact, atol=1e-12)


def test_chunked_equals_unchunked(solved):
    D, atoms, X, sol = solved
    chunked = jaxsae.sparse_code(D, X, LAM, chunk_size=4)  # 2 chunks, the last one padded
    np.testing.assert_allclose(np.asarray(chunked.codes), np.asarray(sol.codes), atol=1e-13)
    np.testing.assert_array_equal(np.asarray(chunked.converged), True)


def test_warm_start_takes_at_most_one_round_without_recompiling(solved, monkeypatch):
    D, atoms, X, sol = solved
    traces = []
    inner = _lasso._solve_chunk
    monkeypatch.setattr(_lasso, "_solve_chunk", lambda *a, **k: traces.append(1) or inner(*a, **k))
    warm = jaxsae.sparse_code(D, X, LAM, init=sol.codes)  # a warm start is a new trace ...
    assert int(warm.steps.max()) <= 1
    np.testing.assert_allclose(np.asarray(warm.codes), np.asarray(sol.codes), atol=1e-13)
    near = jaxsae.sparse_code(D, X * 1.001, 0.21, init=np.asarray(sol.codes) * 1.01)
    assert len(traces) == 1  # ... and the second call with the same shapes reuses it
    assert int(near.steps.max()) <= 1 and float(near.gap.max()) < 1e-13


def test_float32_agrees_with_float64(solved):
    D, atoms, X, sol = solved
    sol32 = jaxsae.sparse_code(D.astype(jnp.float32), X.astype(np.float32), LAM)
    assert sol32.codes.dtype == jnp.float32
    assert sol32.result == jaxsae.RESULTS.successful
    # tol = 1e-5 relative gap in float32: codes within ~1e-3 of the float64 optimum.
    np.testing.assert_allclose(
        np.asarray(sol32.codes, np.float64), np.asarray(sol.codes), atol=2e-3
    )
    scale = 0.5 * np.sum(X * X, axis=1)
    assert np.all(np.asarray(sol32.gap) <= 1e-5 * scale + 1e-6)


@pytest.mark.slow
def test_larger_problem_certified_to_machine_precision():
    # Supports larger than the first round's candidate cap allows for some points,
    # correlated atoms: the later (straggler) rounds must finish the job.
    rng = np.random.default_rng(2)
    atoms = rng.standard_normal((96, 24))
    X = rng.standard_normal((64, 24)) * 2
    D = jaxsae.Dictionary(atoms)
    sol = jaxsae.sparse_code(D, X, 0.3, support_cap=8)
    assert sol.result == jaxsae.RESULTS.successful
    assert int(sol.steps.max()) > 1  # the straggler rounds were needed
    res = jaxsae.kkt_residual(D, X, sol.codes, 0.3)
    assert float(res.max()) < 1e-8 and float(res.gap.max()) < 1e-10


def test_implicit_gradients_match_finite_differences(solved):
    D, atoms, X, sol = solved
    rng = np.random.default_rng(3)
    w = jnp.asarray(rng.standard_normal((N, K)))
    bias = jnp.asarray(0.1 * rng.standard_normal(D_))

    def f(atoms, X, bias, lam):
        Dk = eqx.tree_at(lambda d: (d.atoms, d.bias), D, (atoms, bias))
        return jnp.sum(w * jaxsae.sparse_code(Dk, X, lam).codes)

    args = (jnp.asarray(atoms), jnp.asarray(X), bias, jnp.asarray(LAM))
    grads = jax.grad(f, argnums=(0, 1, 2, 3))(*args)
    eps = 1e-6
    for i, (a, g) in enumerate(zip(args, grads)):
        v = jnp.asarray(rng.standard_normal(a.shape))
        plus = [x + eps * v if j == i else x for j, x in enumerate(args)]
        minus = [x - eps * v if j == i else x for j, x in enumerate(args)]
        fd = (f(*plus) - f(*minus)) / (2 * eps)
        np.testing.assert_allclose(float(jnp.sum(g * v)), float(fd), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(
    "X, lam, message",
    [
        (np.ones((3, 4)), LAM, "X has 4 features but the dictionary has 5"),
        (np.ones(5), LAM, r"X must be a 2-d array of shape \(N, d\).*x\[None, :\]"),
        (np.ones((0, 5)), LAM, r"X is empty \(0 points\)"),
        (np.array([[1.0, np.nan, 0, 0, 0]]), LAM, r"X has 1 non-finite value\(s\)"),
        (np.array([[1.0, np.inf, 0, 0, 0]]), LAM, r"X has 1 non-finite value\(s\)"),
        (np.ones((2, 5)), 0.0, "lam must be a finite number > 0, got 0.0"),
        (np.ones((2, 5)), -0.1, "lam must be a finite number > 0"),
        (np.ones((2, 5)), np.nan, "lam must be a finite number > 0, got nan"),
        (np.ones((2, 5)), np.array([0.1, 0.2]), r"lam must be a scalar.*jax.vmap"),
    ],
)
def test_bad_input(solved, X, lam, message, unchecked):
    D = solved[0]
    with pytest.raises(ValueError, match=message):
        jaxsae.sparse_code(D, X, lam)


def test_bad_options(solved):
    D, atoms, X, _ = solved
    with pytest.raises(ValueError, match=r"init must have shape \(N, K\) = \(6, 8\)"):
        jaxsae.sparse_code(D, X, LAM, init=np.zeros((6, 7)))
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        jaxsae.sparse_code(D, X, LAM, chunk_size=0)
    with pytest.raises(ValueError, match="tol must be > 0"):
        jaxsae.sparse_code(D, X, LAM, tol=0.0)
