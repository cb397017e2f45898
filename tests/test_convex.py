"""The convex candidate problem of THEORY §6: cvxpy cross-checks, the dual certificate,
the wide limit at γ = 0, vmap over γ, the path, and the CLI."""

import json
import warnings

import cvxpy as cp
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsae
from jaxsae.cli._main import main
from jaxsae.convex import _candidates
from jaxsae.convex._group_prox import primal_dual

LAM = 0.1


def _instance(seed, N=14, d=5, M=4):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((3, d))
    X = centers[rng.integers(0, 3, N)] + 0.3 * rng.standard_normal((N, d))
    C = rng.standard_normal((M, d))
    return X, C / np.linalg.norm(C, axis=1, keepdims=True)


def _cvxpy(X, C, lam, gamma):
    N, M = X.shape[0], C.shape[0]
    Z = cp.Variable((N, M), nonneg=True)
    obj = 0.5 * cp.sum_squares(X - Z @ C) + lam * cp.sum(Z) + gamma * cp.sum(cp.norm(Z, 2, axis=0))
    prob = cp.Problem(cp.Minimize(obj / N))
    with warnings.catch_warnings():  # "inaccurate" at these tight tolerances still means ~1e-9
        warnings.simplefilter("ignore", UserWarning)
        prob.solve(
            solver="CLARABEL", tol_gap_abs=1e-11, tol_gap_rel=1e-11, tol_feas=1e-11, max_iter=500
        )
    assert prob.status in ("optimal", "optimal_inaccurate")
    return prob.value, Z.value


def _objective_np(X, C, Z, lam, gamma):
    R = X - Z @ C
    N = X.shape[0]
    return (0.5 * np.sum(R * R) + lam * Z.sum() + gamma * np.linalg.norm(Z, axis=0).sum()) / N


@pytest.mark.parametrize("gamma", [0.0, 0.2, 1.0, 5.0])
def test_matches_cvxpy_unique_codes(gamma):
    # M ≤ d with independent candidates: the loss is strongly convex in Z, codes are unique.
    X, C = _instance(0)
    ref, Zref = _cvxpy(X, C, LAM, gamma)
    sol = jaxsae.solve_candidate_problem(X, C, LAM, gamma, tol=1e-12)
    assert bool(sol.result == jaxsae.RESULTS.successful)
    # reached: ≤ 3e-12 relative to CLARABEL at 1e-11 (its own accuracy); 1e-9 leaves 300×
    assert float(sol.objective) == pytest.approx(ref, rel=1e-9)
    assert float(sol.objective) == pytest.approx(
        _objective_np(X, C, np.asarray(sol.codes), LAM, gamma), rel=1e-12
    )
    np.testing.assert_allclose(np.asarray(sol.codes), Zref, atol=1e-6 * max(1, np.abs(Zref).max()))
    # The dual value is a lower bound on the optimum, the gap an upper bound on the error.
    assert float(sol.dual) <= ref + 1e-9 * ref
    assert float(sol.objective) - ref <= float(sol.gap) + 1e-9 * ref
    used = np.linalg.norm(Zref, axis=0) > 1e-6
    np.testing.assert_array_equal(np.asarray(sol.used), used)
    assert int(sol.n_used) == used.sum()


@pytest.mark.parametrize("gamma", [0.0, 0.5])
def test_matches_cvxpy_many_candidates(gamma):
    # M > d: codes need not be unique, but the optimum and the fit Z C are.
    X, C = _instance(1, N=12, d=4, M=16)
    ref, Zref = _cvxpy(X, C, LAM, gamma)
    sol = jaxsae.solve_candidate_problem(X, C, LAM, gamma, tol=1e-11)
    assert float(sol.objective) == pytest.approx(ref, rel=1e-9)  # reached: 2e-11
    np.testing.assert_allclose(np.asarray(sol.codes) @ C, Zref @ C, atol=1e-6)  # reached: 1.2e-7


def test_gap_bounds_suboptimality_of_early_iterates(monkeypatch):
    X, C = _instance(2, N=12, d=4, M=16)
    gamma = 0.5
    ref, _ = _cvxpy(X, C, LAM, gamma)
    gaps = []
    traces = []
    inner = _candidates.run_fista
    monkeypatch.setattr(
        _candidates, "run_fista", lambda *a, **k: traces.append(1) or inner(*a, **k)
    )
    for steps in (20, 60, 200):
        sol = jaxsae.solve_candidate_problem(X, C, LAM, gamma, tol=1e-300, max_steps=steps)
        assert int(sol.steps) == steps
        assert bool(sol.result == jaxsae.RESULTS.max_steps_reached)
        sub = float(sol.objective) - ref
        assert sub >= -1e-9 * ref
        assert float(sol.gap) >= sub - 1e-9 * ref
        assert float(sol.dual) <= ref + 1e-9 * ref
        gaps.append(float(sol.gap))
    assert gaps[-1] < gaps[0]
    assert len(traces) <= 1  # max_steps and tol are data: same shapes never recompile
    # The certificate on arbitrary feasible codes (not FISTA iterates) is also a bound.
    rng = np.random.default_rng(0)
    for scale in (0.0, 0.1, 1.0):
        Z = scale * rng.exponential(size=(12, 16))
        P, D, gap = primal_dual(jnp.asarray(X), jnp.asarray(C), jnp.asarray(Z), LAM, gamma)
        assert float(P) == pytest.approx(_objective_np(X, C, Z, LAM, gamma), rel=1e-12)
        assert float(D) <= ref + 1e-12
        assert float(gap) == pytest.approx(float(P) - float(D), abs=1e-12 * max(1, float(P)))


def test_gamma_zero_is_the_wide_limit():
    X, _ = _instance(3, N=12, d=4)
    # From zeros (not the wide-limit start) the solver must find F_∞ of (W) on its own.
    sol = jaxsae.solve_candidate_problem(X, None, LAM, 0.0, init=np.zeros((12, 12)), tol=1e-10)
    F = float(jaxsae.wide_bound(X, LAM))
    assert bool(sol.result == jaxsae.RESULTS.successful)
    assert float(sol.objective) == pytest.approx(F, rel=1e-9)
    assert abs(float(sol.objective) - F) <= float(sol.gap) + 1e-15
    # One atom per point with code ‖x_n‖ − λ.
    t = np.linalg.norm(X, axis=1)
    np.testing.assert_allclose(np.diag(np.asarray(sol.codes)), np.maximum(t - LAM, 0), atol=1e-5)
    # The default start is the wide-limit solution, certified at step 0.
    warm = jaxsae.solve_candidate_problem(X, None, LAM, 0.0, tol=1e-10)
    assert int(warm.steps) == 0
    assert float(warm.objective) == pytest.approx(F, rel=1e-13)


def test_vmap_over_gamma_equals_loop_and_path():
    X, C = _instance(4, N=12, d=4, M=16)
    gammas = jnp.asarray([0.0, 0.3, 1.0])
    solve = lambda g: jaxsae.solve_candidate_problem(X, C, LAM, g, tol=1e-9)  # noqa: E731
    batched = jax.vmap(solve)(gammas)
    for i, g in enumerate(np.asarray(gammas)):
        one = solve(g)
        assert float(batched.objective[i]) == pytest.approx(float(one.objective), rel=1e-13)
        np.testing.assert_allclose(np.asarray(batched.codes[i]), np.asarray(one.codes), atol=1e-12)
        assert int(batched.steps[i]) == int(one.steps)
    path = jaxsae.candidate_path(X, LAM, gammas, candidates=C, tol=1e-9)
    assert path.codes.shape == (3, 12, 16)
    for i in range(3):
        assert float(path.objective[i]) == pytest.approx(float(batched.objective[i]), rel=1e-8)
        assert float(path.gap[i]) <= 1e-9 * float(path.objective[i])


def test_default_candidates_and_sphere(getkey):
    X, _ = _instance(5, N=10, d=4)
    C = np.asarray(jaxsae.default_candidates(X, n_sphere=3, key=getkey()))
    assert C.shape == (13, 4)
    np.testing.assert_allclose(C[:10], X / np.linalg.norm(X, axis=1, keepdims=True), atol=1e-15)
    np.testing.assert_allclose(np.linalg.norm(C, axis=1), 1, atol=1e-14)
    with pytest.raises(ValueError, match="key"):
        jaxsae.default_candidates(X, n_sphere=3)


def test_float32_agrees_with_float64():
    X, C = _instance(6)
    s64 = jaxsae.solve_candidate_problem(X, C, LAM, 0.5)
    s32 = jaxsae.solve_candidate_problem(X.astype(np.float32), C.astype(np.float32), LAM, 0.5)
    assert s32.codes.dtype == jnp.float32
    assert bool(s32.result == jaxsae.RESULTS.successful)
    assert float(s32.objective) == pytest.approx(float(s64.objective), rel=3e-4)


def test_bad_inputs(unchecked):
    X, C = _instance(7)
    with pytest.raises(ValueError, match="candidates"):
        jaxsae.solve_candidate_problem(X, C[:, :3], LAM, 0.1)
    with pytest.raises(ValueError, match="gamma"):
        jaxsae.solve_candidate_problem(X, C, LAM, -1.0)
    with pytest.raises(ValueError, match="gammas"):
        jaxsae.candidate_path(X, LAM, np.zeros((2, 2)))


def test_cli_end_to_end(tmp_path, capsys):
    X, _ = _instance(8, N=12, d=4)
    data = tmp_path / "x.npy"
    np.save(data, X)
    out = tmp_path / "rep"
    rc = main(
        ["convex", "--data", str(data), "--lam", "0.1", "--gammas", "0,0.5,2", "--out", str(out)]
    )
    assert rc == 0
    report = json.loads((out / "convex.json").read_text())
    rows = report["path"]
    assert [r["gamma"] for r in rows] == [0.0, 0.5, 2.0]
    assert report["wide_limit_bound"] == pytest.approx(float(jaxsae.wide_bound(X, 0.1)), rel=1e-12)
    assert rows[0]["objective"] == pytest.approx(report["wide_limit_bound"], rel=1e-9)
    for r in rows:
        assert r["converged"]
        ref, Zref = _cvxpy(X, X / np.linalg.norm(X, axis=1, keepdims=True), 0.1, r["gamma"])
        # the CLI solves to relative gap 1e-10 (its default); CLARABEL is good to ~1e-11
        assert r["objective"] == pytest.approx(ref, rel=1e-8)
    csv_lines = (out / "convex.csv").read_text().strip().splitlines()
    assert csv_lines[0].startswith("gamma,used_atoms,objective")
    assert len(csv_lines) == 4
    assert (out / "convex.png").read_bytes()[:4] == b"\x89PNG"
    assert "wide-limit bound" in capsys.readouterr().out
    rc = main(["convex", "--data", str(data), "--lam", "0.1", "--gammas", "a,b", "--out", str(out)])
    assert rc == 2
