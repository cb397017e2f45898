"""Second calls with the same shapes never recompile (STYLE: values are arrays).

Each public entry point's jitted core is re-jitted around equinox's trace counter
(``eqx.debug.assert_max_traces``, the ``traces`` fixture); the entry point is called
twice with new λ and new tolerances (Python floats), and the second call must add
no trace. The cores are private names: patching them is the only way to count.
"""

import jax
import jax.numpy as jnp
import numpy as np

import jaxsae
from jaxsae import _streaming
from jaxsae.certificates import _first_order, _hessian, _second_order
from jaxsae.convex import _candidates, _wide_limit
from jaxsae.learning import _dl_driver
from jaxsae.solvers import _lasso


def _problem(seed=0, n=60, d=5, k=4):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(k, d))
    Z = rng.uniform(0.3, 1, (n, k)) * (rng.random((n, k)) < 0.4)
    return jaxsae.Dictionary(A), jnp.asarray(Z @ (A / np.linalg.norm(A, axis=1, keepdims=True)))


def _twice(traces, targets, call, values):
    watch, count = traces
    for module, name in targets:
        watch(module, name)
    call(*values[0])
    first = count()
    out = call(*values[1])
    assert count() == first > 0, (targets, first, count())
    return out


def test_sparse_code_and_certify(traces):
    D, X = _problem()
    _twice(
        traces, [(_lasso, "_sparse_code")],
        lambda lam, tol: jaxsae.sparse_code(D, X, lam, tol=tol), [(0.1, 1e-10), (0.2, 1e-11)],
    )  # fmt: skip
    _twice(
        traces, [(_streaming, "_resident_then")],
        lambda lam, tol: jaxsae.certify(D, X, lam, tol=tol, antipodal_cos=tol * 1e5),
        [(0.1, 1e-6), (0.15, 1e-7)],
    )  # fmt: skip
    chunks = [np.asarray(X[:25]), np.asarray(X[25:])]
    _twice(
        traces, [(_first_order, "_chunk_stats")],
        lambda lam, tol: jaxsae.certify(D, chunks, lam, tol=tol, chunk_size=16),
        [(0.1, 1e-6), (0.15, 1e-7)],
    )  # fmt: skip


def test_free_and_fixed_bias_share_one_compilation(traces):
    """``free_bias`` is a value: a fixed-bias dictionary certifies with the program its
    free-bias twin compiled, and only the free one judges the bias gradient."""
    D, X = _problem(4)
    X = X + 0.3  # the zero bias is not the optimal one: ‖Σ r_n‖/N > 0
    free = jaxsae.Dictionary(D.atoms, free_bias=True)
    certs = _twice(
        traces, [(_streaming, "_resident_then")],
        lambda D: (jaxsae.certify(D, X, 0.1),), [(free,), (D,)],
    )  # fmt: skip
    cert = certs[0]
    c_free = jaxsae.certify(free, X, 0.1)
    assert not bool(cert.free_bias) and bool(c_free.free_bias)
    np.testing.assert_allclose(c_free.bias_grad_norm, cert.bias_grad_norm, rtol=1e-14)
    # same codes and atoms; only the free bias adds ‖Σ r‖/(Nλ) to what is judged
    np.testing.assert_allclose(c_free.code_kkt, cert.code_kkt, atol=1e-13)
    assert float(c_free.bias_grad_norm) > 0.1
    want = max(float(cert.stationarity), float(c_free.bias_grad_norm) / 0.1)
    np.testing.assert_allclose(c_free.stationarity, want, rtol=1e-13)
    _twice(
        traces, [(_dl_driver, "_alternating"), (_dl_driver, "_lbfgs")],
        lambda bias: jaxsae.learn_dictionary(X, 4, 0.1, bias=bias, key=jax.random.key(0),
                                             max_steps=5, warm_steps=2, progress=False),
        [(True,), (False,)],
    )  # fmt: skip


def test_second_order(traces):
    D, X = _problem(1)
    lam = 0.1  # the support sizes (a static cap) must not change between the calls
    _twice(
        traces,
        [(_second_order, "_supports"), (_second_order, "_measures"), (_hessian, "_flat_mvs")],
        lambda lam, tol: jaxsae.second_order(D, X, lam, first_order_tol=tol),
        [(lam, 1e-6), (lam * (1 + 1e-9), 2e-6)],
    )  # fmt: skip


def test_learn_dictionary(traces):
    _, X = _problem(2)
    kw = dict(key=jax.random.key(0), max_steps=5, warm_steps=2, progress=False)
    _twice(
        traces, [(_dl_driver, "_alternating"), (_dl_driver, "_lbfgs")],
        lambda lam, tol: jaxsae.learn_dictionary(X, 4, lam, tol=tol, code_tol=tol * 1e-4, **kw),
        [(0.1, 1e-8), (0.12, 1e-9)],
    )  # fmt: skip


def test_convex_and_wide_limit(traces):
    _, X = _problem(3, n=20)
    _twice(
        traces, [(_candidates, "_solve")],
        lambda lam, tol: jaxsae.solve_candidate_problem(X, None, lam, 0.5 * lam, tol=tol),
        [(0.1, 1e-8), (0.2, 1e-9)],
    )  # fmt: skip
    _twice(
        traces, [(_wide_limit, "_solve_bias")],
        lambda lam, tol: jaxsae.wide_limit(X, lam, bias=True, tol=tol),
        [(0.1, 1e-10), (0.2, 1e-11)],
    )  # fmt: skip


def test_predictions_are_jitted_on_values():
    """The prediction functions are ``jax.jit`` with traced floats: one cache entry."""
    fns = [
        lambda v: jaxsae.absorption_gain(alpha=1.0, beta=v, lam=0.1),
        lambda v: jaxsae.absorption_critical_lam(alpha=1.0, beta=v),
        lambda v: jaxsae.antipodal_rate_gaussian(sigma=v, lam=0.1),
        lambda v: jaxsae.antipodal_rate_binary(amplitude=v, lam=0.1),
    ]
    raw = [
        jaxsae.absorption_gain, jaxsae.absorption_critical_lam, jaxsae.antipodal_rate_gaussian,
        jaxsae.antipodal_rate_binary,
    ]  # fmt: skip
    for f, j in zip(fns, raw):
        f(0.8)
        size = j._cache_size()
        f(0.7)
        assert j._cache_size() == size
