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
    # the block-coordinate rounds alone (the homotopy path would certify every point in
    # its first round, leaving the stragglers' code untested), then the default path
    for homotopy, rounds_needed in ((False, True), (None, False)):
        sol = jaxsae.sparse_code(D, X, 0.3, support_cap=8, homotopy=homotopy)
        assert sol.result == jaxsae.RESULTS.successful
        assert (int(sol.steps.max()) > 1) == rounds_needed  # the straggler rounds ran
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


# --- the homotopy (issue 16): the compiled kernel, its pure-JAX twin, hard cases --------


def _paths(atoms, X, lam):
    """The compiled LARS kernel and the pure-JAX homotopy on the same points (private:
    the coder picks one by backend, so only here can both run side by side)."""
    from jaxsae.solvers import _homotopy, _lars_ffi

    A = np.asarray(atoms)
    B, G = jnp.asarray(X @ A.T), jnp.asarray(A @ A.T)
    mask, todo = jnp.ones(len(A), bool), jnp.ones(len(X), bool)
    cap = min(A.shape)
    kw = dict(cap=cap, max_steps=8 * cap + 64)
    return _lars_ffi.lars(B, G, mask, todo, lam, **kw), _homotopy.homotopy(
        B, G, mask, todo, lam, **kw
    )


def _hard_cases():
    rng = np.random.default_rng(7)
    base = rng.normal(size=(6, 4))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    near = base[0] + 0.045 * rng.normal(size=4)  # cos(base[0], near) ≈ 0.999
    cases = {
        "duplicate atoms": np.vstack([base, base[:2]]),
        "cos 0.999": np.vstack([base, near / np.linalg.norm(near)]),
        "basis": np.eye(4),
    }
    X = np.abs(rng.normal(size=(40, 4))) + 0.1
    return cases, X


@pytest.mark.parametrize("case", ["duplicate atoms", "cos 0.999", "basis"])
def test_homotopy_solves_degenerate_dictionaries_like_brute_force(case):
    cases, X = _hard_cases()
    A = cases[case]
    D = jaxsae.Dictionary(A)
    sol = jaxsae.sparse_code(D, X, 0.05)
    assert bool(sol.converged.all()) and float(sol.gap.max()) < 1e-12
    # the objective (unique even where the codes are not) equals brute force's
    obj = np.asarray(jaxsae.kkt_residual(D, X, sol.codes, 0.05).primal)
    for n, x in enumerate(X[:12]):
        z = brute_force(np.asarray(D.atoms), x, 0.05) if case != "duplicate atoms" else None
        if z is not None:
            r = x - z @ np.asarray(D.atoms)
            np.testing.assert_allclose(obj[n], 0.5 * r @ r + 0.05 * z.sum(), rtol=1e-12)


def test_homotopy_edge_points_supports_of_size_d_and_kinks():
    rng = np.random.default_rng(3)
    A = rng.normal(size=(6, 5))
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    D = jaxsae.Dictionary(A)
    lam = 0.2
    X = np.vstack([
        0.05 * rng.normal(size=(3, 5)),  # λ above every correlation: all-zero codes
        (3 + np.abs(rng.normal(size=(3, 5)))) @ A[:5],  # large points: support of size d = 5
        lam * A[:2],  # exactly on a kink: z = 0, g = λ for atom 0 / 1
    ])  # fmt: skip
    sol = jaxsae.sparse_code(D, X, lam)
    Z = np.asarray(sol.codes)
    assert bool(sol.converged.all()) and float(sol.kkt.max()) < 1e-12
    assert np.all(Z[:3] == 0) and float(np.max(sol.gap[:3])) == 0.0
    assert (Z[3:6] > 0).sum(1).max() == 5  # as many active atoms as dimensions
    # on the kink the exact code is 0; x = λd_k rounds to b_k = λ(1 ± ε), so ≤ a few ε·λ
    assert np.abs(Z[6:]).max() <= 8 * np.finfo(float).eps * lam
    for n in range(len(X)):
        np.testing.assert_allclose(Z[n], brute_force(A, X[n], lam), atol=1e-12)


def test_kernel_equals_pure_jax_homotopy_to_1e12():
    rng = np.random.default_rng(4)
    for d, k, lam in ((16, 64, 0.1), (24, 96, 0.05), (8, 8, 0.05)):
        A = rng.normal(size=(k, d))
        A /= np.linalg.norm(A, axis=1, keepdims=True)
        X = (np.abs(rng.normal(size=(120, k))) * (rng.random((120, k)) < 0.2)) @ A
        (Z1, s1, p1), (Z2, s2, p2) = _paths(A, X + 0.05 * rng.normal(size=X.shape), lam)
        assert np.all(np.asarray(s1) == 0) and np.all(np.asarray(s2) == 0)
        np.testing.assert_array_equal(np.asarray(p1), np.asarray(p2))  # the same path
        np.testing.assert_allclose(np.asarray(Z1), np.asarray(Z2), atol=1e-12, rtol=0)


def test_overcomplete_small_lambda_every_point_certified():
    """A freshly initialised SAELens-like decoder (d = 24, K = 96, rows of norm 1 after
    folding) at λ = 0.05: supports near d, where the pure rounds left 8 of 64 points
    uncertified. The homotopy certifies all of them; the rounds alone still may not."""
    rng = np.random.default_rng(0)
    A = rng.uniform(-1, 1, size=(96, 24)) / np.sqrt(24)  # kaiming-uniform-like, then folded
    D = jaxsae.Dictionary(A)
    X = rng.normal(size=(64, 24))
    sol = jaxsae.sparse_code(D, X, 0.05)
    assert bool(sol.converged.all()) and float(sol.gap.max()) < 1e-12 * 0.5 * np.max(
        np.sum(X**2, 1)
    )
    sizes = np.asarray((sol.codes > 0).sum(1))
    assert sizes.max() >= 20  # supports really are near d = 24
    # an independent check of optimality: L-BFGS-B on the same problem is no lower
    z = sol.codes[0]
    G, b = np.asarray(D.atoms) @ np.asarray(D.atoms).T, np.asarray(D.atoms) @ X[0]
    f = lambda v: (0.5 * v @ G @ v - (b - 0.05) @ v, G @ v - (b - 0.05))  # noqa: E731
    ref = minimize(f, np.zeros(96), jac=True, method="L-BFGS-B", bounds=[(0, None)] * 96,
                   options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 20000})  # fmt: skip
    assert f(np.asarray(z))[0] <= ref.fun + 1e-12


def test_pure_rounds_still_available(solved):
    D, atoms, X, sol = solved
    old = jaxsae.sparse_code(D, X, LAM, homotopy=False)
    np.testing.assert_allclose(np.asarray(old.codes), np.asarray(sol.codes), atol=1e-12)


def test_pure_jax_path_through_sparse_code(solved, monkeypatch):
    """Where the kernel is not built (GPU/TPU), sparse_code follows the pure-JAX path."""
    D, atoms, X, sol = solved
    monkeypatch.setattr(_lasso, "path_available", lambda: False)
    jax_sol = jaxsae.sparse_code(D, X, LAM)
    assert bool(jax_sol.converged.all())
    np.testing.assert_allclose(np.asarray(jax_sol.codes), np.asarray(sol.codes), atol=1e-12)
