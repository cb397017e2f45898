"""KKT residuals and the duality gap of THEORY §1, against hand computations."""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxsae


def _primal(atoms, y, z, lam):
    r = y - z @ atoms
    return 0.5 * r @ r + lam * z.sum()


def _dual(y, u):
    return 0.5 * y @ y - 0.5 * (y - u) @ (y - u)


def test_hand_computed_example():
    # Atoms e1, e2; y = (2, 0.05); λ = 0.1; z = (1.5, 0.2):
    # r = g = (0.5, −0.15); ρ = min(z, λ − g) = (−0.4, 0.2); dual infeasibility (0.4, 0);
    # P = ½·0.2725 + 0.1·1.7 = 0.30625; s = λ/max g = 0.2, u = s r = (0.1, −0.03),
    # Q = ½(4.0025 − 3.6164) = 0.19305, gap = 0.1132.
    D = jaxsae.Dictionary(np.eye(2))
    res = jaxsae.kkt_residual(D, np.array([[2.0, 0.05]]), np.array([[1.5, 0.2]]), 0.1)
    np.testing.assert_allclose(np.asarray(res.correlation), [[0.5, -0.15]], atol=1e-15)
    np.testing.assert_allclose(np.asarray(res.complementarity), [[-0.4, 0.2]], atol=1e-15)
    np.testing.assert_allclose(np.asarray(res.dual_infeasibility), [[0.4, 0.0]], atol=1e-15)
    np.testing.assert_allclose(np.asarray(res.primal_infeasibility), [[0.0, 0.0]], atol=0)
    np.testing.assert_allclose(np.asarray(res.primal), [0.30625], rtol=1e-14)
    np.testing.assert_allclose(np.asarray(res.gap), [0.1132], rtol=1e-13)
    np.testing.assert_allclose(np.asarray(res.kkt), [4.0], rtol=1e-14)
    np.testing.assert_allclose(float(res.max()), 4.0, rtol=1e-14)
    np.testing.assert_allclose(float(res.mean()), (0.4 + 0.2) / 2 / 0.1, rtol=1e-14)


@pytest.mark.parametrize("scale", [0.0, 0.05, 1.0])
def test_gap_equals_primal_minus_dual(scale):
    # scale = 0: z = 0 and s < 1; small z: s < 1; large z: some max g ≤ λ points (s = 1).
    rng = np.random.default_rng(3)
    atoms = rng.standard_normal((9, 5))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    X = rng.standard_normal((6, 5))
    Z = scale * np.maximum(rng.standard_normal((6, 9)), 0)
    lam = 0.3
    res = jaxsae.kkt_residual(jaxsae.Dictionary(atoms), X, Z, lam)
    for n in range(6):
        r = X[n] - Z[n] @ atoms
        g = atoms @ r
        s = min(1.0, lam / g.max()) if g.max() > 0 else 1.0
        assert np.all(atoms @ (s * r) <= lam + 1e-12)  # u = s r is dual feasible
        direct = _primal(atoms, X[n], Z[n], lam) - _dual(X[n], s * r)
        np.testing.assert_allclose(float(res.gap[n]), direct, rtol=1e-10, atol=1e-13)
        assert float(res.gap[n]) >= 0


def test_residuals_vanish_at_the_optimum_and_gap_bounds_suboptimality():
    rng = np.random.default_rng(4)
    # Same shapes as tests/test_sparse_coding.py's tiny problem (one compilation).
    D = jaxsae.Dictionary(rng.standard_normal((8, 5)))
    X = rng.standard_normal((6, 5))
    lam = 0.2
    sol = jaxsae.sparse_code(D, X, lam)
    res = jaxsae.kkt_residual(D, X, sol.codes, lam)
    assert float(jnp.max(jnp.abs(res.complementarity))) < 1e-10
    assert float(jnp.max(res.primal_infeasibility)) == 0
    assert float(jnp.max(res.dual_infeasibility)) < 1e-10
    assert float(jnp.max(res.gap)) < 1e-12
    np.testing.assert_allclose(np.asarray(res.gap), np.asarray(sol.gap), atol=1e-15)
    # Any nonnegative Z: gap ≥ P(Z) − P* ≥ 0.
    for trial in range(20):
        Z = np.maximum(rng.standard_normal((6, 8)), 0) * rng.uniform(0, 1)
        bad = jaxsae.kkt_residual(D, X, Z, lam)
        subopt = np.asarray(bad.primal) - np.asarray(res.primal)
        assert np.all(subopt >= -1e-12)
        assert np.all(np.asarray(bad.gap) >= subopt - 1e-12), trial


def test_masked_entries_are_zero():
    rng = np.random.default_rng(5)
    mask = np.array([True, False, True, False])
    D = jaxsae.Dictionary(rng.standard_normal((4, 3)), mask=mask)
    Z = rng.uniform(0, 1, (5, 4))
    res = jaxsae.kkt_residual(D, rng.standard_normal((5, 3)), Z, 0.1)
    for field in (res.complementarity, res.dual_infeasibility, res.correlation):
        assert np.all(np.asarray(field)[:, ~mask] == 0)
    # Masked atoms are absent: the same numbers as the dictionary without them.
    X = rng.standard_normal((5, 3))
    res = jaxsae.kkt_residual(D, X, Z, 0.1)
    sub = jaxsae.kkt_residual(jaxsae.Dictionary(np.asarray(D.atoms)[mask]), X, Z[:, mask], 0.1)
    np.testing.assert_allclose(np.asarray(res.gap), np.asarray(sub.gap), rtol=1e-13)
    np.testing.assert_allclose(np.asarray(res.primal), np.asarray(sub.primal), rtol=1e-13)
    np.testing.assert_allclose(
        np.asarray(res.complementarity)[:, mask], np.asarray(sub.complementarity), atol=1e-15
    )


def test_bad_codes_shape():
    D = jaxsae.Dictionary(np.eye(3))
    with pytest.raises(ValueError, match=r"Z must have shape \(N, K\) = \(2, 3\), got \(2, 4\)"):
        jaxsae.kkt_residual(D, np.ones((2, 3)), np.ones((2, 4)), 0.1)
    with pytest.raises(ValueError, match="lam must be a finite number > 0"):
        jaxsae.kkt_residual(D, np.ones((2, 3)), np.ones((2, 3)), -1.0)
