"""The wide limit (W): closed form, attainment, and the free-bias convex problem."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

import jaxsae


def _huber_np(t, lam):
    return np.where(t <= lam, 0.5 * t * t, lam * t - 0.5 * lam * lam)


def _F(X, b, lam):
    return float(np.mean(_huber_np(np.linalg.norm(X - b, axis=1), lam)))


def _data(seed, N=60, d=5):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, d)) * rng.uniform(0.2, 2.0, (N, 1)) + 0.7


@pytest.mark.parametrize("lam", [0.05, 0.8, 3.0])
def test_value_is_closed_form_and_attained(lam):
    X = _data(0)
    b = np.linspace(-0.3, 0.4, X.shape[1])
    for bias in (False, b):
        wl = jaxsae.wide_limit(X, lam, bias=bias)
        bb = np.zeros(X.shape[1]) if bias is False else b
        t = np.linalg.norm(X - bb, axis=1)
        assert float(wl.value) == pytest.approx(_F(X, bb, lam), rel=1e-13)
        np.testing.assert_allclose(np.asarray(wl.codes), np.maximum(t - lam, 0), atol=1e-14)
        np.testing.assert_array_equal(np.asarray(wl.used), t > lam)
        # The one-atom-per-point dictionary with these codes attains F_∞ exactly.
        D = wl.dictionary()
        L = float(jaxsae.objective(D, X, wl.code_matrix(), lam))
        assert L == pytest.approx(_F(X, bb, lam), rel=1e-12)
        # Its residuals have norm min(‖x_n − b‖, λ) (THEORY §6).
        R = np.asarray(jaxsae.residuals(D, jnp.asarray(X), wl.code_matrix()))
        np.testing.assert_allclose(np.linalg.norm(R, axis=1), np.minimum(t, lam), atol=1e-12)
        # …and the codes satisfy the lasso KKT conditions for that dictionary (THEORY §1).
        assert float(jaxsae.kkt_residual(D, X, wl.code_matrix(), lam).max()) < 1e-12


def test_bound_below_any_dictionary_and_codes(getkey):
    # L(D, Z) ≥ F(D) ≥ F_∞ for every unit-atom D of any width and every Z ≥ 0.
    X = _data(1)
    lam = 0.3
    wl = jaxsae.wide_limit(X, lam)
    for K in (5, 60):
        D = jaxsae.Dictionary(jax.random.normal(getkey(), (K, X.shape[1]), jnp.float64))
        for scale in (0.05, 1.0):
            Z = scale * jax.random.exponential(getkey(), (X.shape[0], K), jnp.float64) / K
            assert float(jaxsae.objective(D, X, Z, lam)) >= float(wl.value)


@pytest.mark.parametrize("lam", [0.1, 1.0, 2.5])
def test_free_bias_matches_scipy_and_gradient_vanishes(lam):
    X = _data(2, N=80, d=4)
    wl = jaxsae.wide_limit(X, lam, bias=True)
    assert bool(wl.result == jaxsae.RESULTS.successful)
    b = np.asarray(wl.bias)
    ref = minimize(
        lambda v: _F(X, v, lam),
        X.mean(0),
        method="Nelder-Mead",
        options=dict(xatol=1e-12, fatol=1e-15, maxiter=40000, maxfev=40000),
    )
    ref = minimize(lambda v: _F(X, v, lam), ref.x, method="BFGS", options=dict(gtol=1e-12))
    # Never worse than scipy, and equal to it to its accuracy.
    assert float(wl.value) <= ref.fun + 1e-14
    assert float(wl.value) == pytest.approx(ref.fun, rel=1e-10)
    # Brute-force gradient check: central differences of F_∞ at b vanish.
    h = 1e-6
    fd = np.array([(_F(X, b + h * e, lam) - _F(X, b - h * e, lam)) / (2 * h) for e in np.eye(4)])
    assert np.abs(fd).max() < 1e-8
    # The reported gradient is −(1/N) Σ ψ(x_n − b) computed independently.
    V = X - b
    t = np.linalg.norm(V, axis=1, keepdims=True)
    psi = np.where(t <= lam, V, lam * V / t)
    assert float(wl.grad_norm) == pytest.approx(np.linalg.norm(psi.mean(0)), abs=1e-14)
    assert float(wl.grad_norm) < 1e-12
    # The certified gap bounds the true sub-optimality and is tiny.
    assert 0 <= float(wl.gap) < 1e-12 * float(wl.value)


def test_gap_bounds_suboptimality_at_a_poor_bias():
    X = _data(3, N=50, d=3)
    lam = 0.4
    best = jaxsae.wide_limit(X, lam, bias=True)
    # max_steps=1 from the mean: one Newton step, not yet optimal; the gap must cover it.
    for steps in (1,):
        rough = jaxsae.wide_limit(X, lam, bias=True, max_steps=steps, tol=1e-300)
        sub = float(rough.value) - float(best.value)
        assert sub >= -1e-15
        assert float(rough.gap) >= sub - 1e-15
    # A fixed far-away bias: the dual built there must still be a lower bound.
    far = X.mean(0) + 3.0
    from jaxsae.convex._wide_limit import _certificate

    gn, gap = _certificate(jnp.asarray(X), jnp.asarray(far), jnp.asarray(lam))
    assert float(gap) >= _F(X, far, lam) - float(best.value) - 1e-14


def test_float32_and_vmap_over_lam():
    X = _data(4)
    lams = jnp.asarray([0.1, 0.5, 2.0])
    vals = jax.vmap(lambda lam: jaxsae.wide_limit(X, lam).value)(lams)
    for lam, v in zip(np.asarray(lams), np.asarray(vals)):
        assert v == pytest.approx(_F(X, 0, lam), rel=1e-13)
    wl32 = jaxsae.wide_limit(X.astype(np.float32), 0.5, bias=True)
    wl64 = jaxsae.wide_limit(X, 0.5, bias=True)
    assert wl32.value.dtype == jnp.float32
    assert float(wl32.value) == pytest.approx(float(wl64.value), rel=1e-5)


def test_bad_input_messages(unchecked):
    X = _data(5)
    with pytest.raises(ValueError, match="shape"):
        jaxsae.wide_limit(X, 0.1, bias=np.zeros(3))
    with pytest.raises(ValueError, match="lam"):
        jaxsae.wide_limit(X, -1.0)
