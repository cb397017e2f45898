"""SAE modules: forward semantics (NumPy and SAELens fixtures), JumpReLU straight-through
gradients, folding, the dictionary view, the amortisation gap and the §7b metrics."""

from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import jaxsae

FIXTURES = Path(__file__).parent / "fixtures" / "saelens"


def random_sae(key, activation, d_in=6, d_sae=10, dtype=jnp.float64, apply_b_dec_to_input=True):
    k1, k2, k3, k4, k5 = jax.random.split(key, 5)
    W_dec = jax.random.normal(k1, (d_sae, d_in), dtype)
    W_dec = W_dec * (
        jax.random.uniform(k2, (d_sae, 1), dtype, 0.3, 2.0)
        / jnp.linalg.norm(W_dec, axis=1)[:, None]
    )
    return jaxsae.SAE(
        W_enc=jax.random.normal(k3, (d_in, d_sae), dtype),
        b_enc=0.3 * jax.random.normal(k4, (d_sae,), dtype),
        W_dec=W_dec,
        b_dec=0.5 * jax.random.normal(k5, (d_in,), dtype),
        activation=activation.for_width(d_sae, dtype),
        apply_b_dec_to_input=apply_b_dec_to_input,
    )


def numpy_forward(sae, X, kind, k=None):
    """ANCHORS.md's forward definition, in NumPy."""
    W_enc, b_enc, W_dec, b_dec = (
        np.asarray(getattr(sae, n), np.float64) for n in ("W_enc", "b_enc", "W_dec", "b_dec")
    )
    Xp = X - b_dec if sae.apply_b_dec_to_input else X
    pre = Xp @ W_enc + b_enc
    if kind == "relu":
        f = np.maximum(pre, 0)
    elif kind == "topk":
        f = np.zeros_like(pre)
        idx = np.argsort(-pre, axis=1)[:, :k]
        np.put_along_axis(f, idx, np.maximum(np.take_along_axis(pre, idx, 1), 0), 1)
    else:
        theta = np.asarray(sae.activation.threshold, np.float64)
        f = np.where(pre > theta, np.maximum(pre, 0), 0)
    return f, f @ W_dec + b_dec


CASES = [
    ("relu", lambda: jaxsae.ReLU(), None),
    ("topk", lambda: jaxsae.TopK(3), 3),
    ("jumprelu", lambda: jaxsae.JumpReLU(jnp.linspace(0.0, 1.0, 10), 1e-3), None),
]


@pytest.mark.parametrize("kind,make,k", CASES)
@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_forward_matches_numpy_definition(getkey, kind, make, k, apply_b_dec):
    sae = random_sae(getkey(), make(), apply_b_dec_to_input=apply_b_dec)
    X = np.asarray(jax.random.normal(getkey(), (20, 6), jnp.float64))
    f_ref, out_ref = numpy_forward(sae, X, kind, k)
    f = jax.vmap(sae.encode)(jnp.asarray(X))
    np.testing.assert_allclose(f, f_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(jax.vmap(sae)(jnp.asarray(X)), out_ref, rtol=1e-12, atol=1e-12)
    if kind != "relu":  # the activation must actually sparsify beyond ReLU here
        assert np.sum(f_ref != 0) < np.sum(numpy_forward(sae, X, "relu")[0] != 0)


@pytest.mark.parametrize(
    "folder", sorted(p.name for p in FIXTURES.iterdir()) if FIXTURES.exists() else []
)
def test_forward_matches_saelens_fixtures(folder):
    sae = jaxsae.load_sae(FIXTURES / folder)
    expected = np.load(FIXTURES / folder / "expected.npz", allow_pickle=False)
    assert str(sae.dtype) == str(expected["dtype"])
    x = jnp.asarray(expected["x"]).astype(sae.dtype)
    tol = 1e-12 if sae.dtype == jnp.float64 else 2e-5
    scale = np.abs(expected["sae_out"]).max()
    np.testing.assert_allclose(
        jax.vmap(sae.encode)(x), expected["feature_acts"], atol=tol * scale, rtol=tol
    )
    np.testing.assert_allclose(jax.vmap(sae)(x), expected["sae_out"], atol=tol * scale, rtol=tol)
    # the fixtures are non-trivial: some latents fire and some do not
    assert 0 < np.mean(expected["feature_acts"] != 0) < 1


def test_fixture_cases_present():
    names = {p.name for p in FIXTURES.iterdir()}
    assert {"standard", "topk", "jumprelu", "legacy_topk", "standard_float64"} <= names


def smoothed_step(pre, theta, eps):
    """``H`` convolved with the rectangle kernel of bandwidth ε."""
    return np.clip((pre - theta) / eps + 0.5, 0, 1)


def test_jumprelu_threshold_gradient_is_fd_of_smoothed_step(getkey):
    eps = 0.1
    K = 40
    theta = np.asarray(jax.random.uniform(getkey(), (K,), jnp.float64, 0.2, 1.0))
    # pre-activations inside and outside the kernel window, away from its edges
    offsets = np.linspace(-0.12, 0.12, K)
    offsets = offsets[np.abs(np.abs(offsets) - eps / 2) > 1e-3]
    theta = theta[: offsets.size]
    pre = theta + offsets
    w = np.asarray(jax.random.normal(getkey(), (offsets.size,), jnp.float64))
    act = jaxsae.JumpReLU(jnp.asarray(theta), eps)

    h = 1e-6
    fd = (smoothed_step(pre, theta + h, eps) - smoothed_step(pre, theta - h, eps)) / (2 * h)
    assert np.sum(fd != 0) > 5 and np.sum(fd == 0) > 5

    g_step = jax.grad(lambda a: jnp.sum(w * a.step(jnp.asarray(pre))))(act).threshold
    np.testing.assert_allclose(g_step, w * fd, rtol=1e-6, atol=1e-8)
    # JumpReLU_θ(z) = z·H(z − θ): the paper's pseudo-derivative replaces z by θ in the window
    g_act = jax.grad(lambda a: jnp.sum(w * a(jnp.asarray(pre))))(act).threshold
    np.testing.assert_allclose(g_act, w * theta * fd, rtol=1e-6, atol=1e-8)
    # straight-through in the input: the gradient in z is the gate 1[z > θ]
    g_pre = jax.grad(lambda z: jnp.sum(w * act(z)))(jnp.asarray(pre))
    np.testing.assert_allclose(g_pre, w * (pre > theta), rtol=0, atol=0)
    # and the forward pass is the exact step, not the smoothed one
    np.testing.assert_array_equal(act.step(jnp.asarray(pre)), (pre > theta).astype(float))


def test_l0_penalty_gradient_through_sae(getkey):
    sae = random_sae(getkey(), jaxsae.JumpReLU(0.5, 0.2))
    x = jax.random.normal(getkey(), (6,), jnp.float64)
    pre = np.asarray(sae.pre_activation(x))
    theta = np.asarray(sae.activation.threshold)
    grad = jax.grad(lambda s: jaxsae.L0()(s, s.pre_activation(x), s.encode(x)))(sae)
    h = 1e-6
    fd = (smoothed_step(pre, theta + h, 0.2) - smoothed_step(pre, theta - h, 0.2)) / (2 * h)
    np.testing.assert_allclose(grad.activation.threshold, fd, atol=1e-7)
    # the L0 term has no gradient in the encoder (straight-through only in θ)
    np.testing.assert_array_equal(grad.W_enc, 0)


def test_init_is_saelens_like(getkey):
    sae = jaxsae.SAE.init(12, 30, jaxsae.ReLU(), key=getkey(), dtype=jnp.float64)
    np.testing.assert_allclose(sae.decoder_norms(), 0.1, rtol=1e-12)
    np.testing.assert_array_equal(sae.W_enc, sae.W_dec.T)
    np.testing.assert_array_equal(sae.b_enc, 0)
    np.testing.assert_array_equal(sae.b_dec, 0)
    sae = jaxsae.SAE.init(12, 30, jaxsae.JumpReLU(0.01), key=getkey(), decoder_norm=1.0)
    assert sae.dtype == jnp.float32 and sae.activation.threshold.shape == (30,)
    assert sae.activation.threshold.dtype == jnp.float32
    np.testing.assert_allclose(sae.decoder_norms(), 1.0, rtol=1e-6)


@pytest.mark.parametrize("kind,make,k", CASES)
def test_dictionary_view_reconstructs_the_sae(getkey, kind, make, k):
    sae = random_sae(getkey(), make())
    X = jax.random.normal(getkey(), (25, 6), jnp.float64)
    D = jaxsae.sae_dictionary(sae)
    Z = jaxsae.sae_codes(sae, X)
    np.testing.assert_allclose(jnp.linalg.norm(D.atoms, axis=1), 1, rtol=1e-14)
    recon = jax.vmap(D.decode)(Z)
    np.testing.assert_allclose(recon, jax.vmap(sae)(X), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(Z, jax.vmap(sae.encode)(X) * sae.decoder_norms(), rtol=1e-14)
    if kind != "topk":
        folded = jaxsae.fold_decoder_norms(sae)
        np.testing.assert_allclose(folded.decoder_norms(), 1, rtol=1e-14)
        np.testing.assert_allclose(jax.vmap(folded)(X), jax.vmap(sae)(X), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(jax.vmap(folded.encode)(X), Z, rtol=1e-12, atol=1e-12)
    else:
        with pytest.raises(ValueError, match="cannot be folded"):
            jaxsae.fold_decoder_norms(sae)


def test_dictionary_view_masks_zero_decoder_rows(getkey):
    sae = random_sae(getkey(), jaxsae.ReLU())
    sae = eqx.tree_at(lambda s: s.W_dec, sae, sae.W_dec.at[2].set(0))
    D = jaxsae.sae_dictionary(sae)
    assert not bool(D.mask[2]) and int(D.mask.sum()) == 9
    X = jax.random.normal(getkey(), (5, 6), jnp.float64)
    np.testing.assert_allclose(
        jax.vmap(D.decode)(jaxsae.sae_codes(sae, X)), jax.vmap(sae)(X), atol=1e-12
    )


def brute_lasso_objective(D, X, lam):
    """L(D, Z*) from scipy's L-BFGS-B on each point's bound-constrained lasso."""
    A, b = np.asarray(D.atoms), np.asarray(D.bias)
    total = 0.0
    for x in np.asarray(X):
        y = x - b

        def f(z, y=y):
            r = y - z @ A
            return 0.5 * r @ r + lam * z.sum(), -(A @ r) + lam

        res = scipy.optimize.minimize(
            f, np.zeros(A.shape[0]), jac=True, method="L-BFGS-B",
            bounds=[(0, None)] * A.shape[0], options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 5000},
        )  # fmt: skip
        total += res.fun
    return total / X.shape[0]


def test_amortisation_gap_matches_direct_computation(getkey):
    sae = random_sae(getkey(), jaxsae.ReLU(), d_in=6, d_sae=6)
    X = jax.random.normal(getkey(), (12, 6), jnp.float64)
    lam = 0.2
    ag = jaxsae.amortisation_gap(sae, X, lam)
    D = jaxsae.sae_dictionary(sae)
    Zs = np.asarray(jax.vmap(sae.encode)(X)) * np.asarray(sae.decoder_norms())
    R = np.asarray(X) - np.asarray(sae.b_dec) - Zs @ np.asarray(D.atoms)
    L_sae = np.mean(0.5 * np.sum(R * R, axis=1) + lam * Zs.sum(axis=1))
    np.testing.assert_allclose(ag.sae_objective, L_sae, rtol=1e-12)
    L_opt = brute_lasso_objective(D, X, lam)
    np.testing.assert_allclose(ag.optimal_objective, L_opt, rtol=1e-7)
    np.testing.assert_allclose(ag.gap, L_sae - L_opt, rtol=1e-6, atol=1e-9)
    assert float(ag.gap) > 0 and float(ag.optimal_gap) < 1e-10
    G = R @ np.asarray(D.atoms).T
    np.testing.assert_allclose(ag.kkt.complementarity, np.minimum(Zs, lam - G), atol=1e-12)


def test_amortisation_gap_zero_for_optimal_encoder(getkey):
    # Orthonormal decoder, W_enc = W_decᵀ, b_enc = −λ: the ReLU encoder is the exact lasso solution.
    Q, _ = np.linalg.qr(np.asarray(jax.random.normal(getkey(), (6, 6), jnp.float64)))
    lam = 0.3
    sae = jaxsae.SAE(
        W_enc=jnp.asarray(Q.T), b_enc=jnp.full((6,), -lam), W_dec=jnp.asarray(Q), b_dec=jnp.zeros(6),
        activation=jaxsae.ReLU(),
    )  # fmt: skip
    X = jax.random.normal(getkey(), (12, 6), jnp.float64)
    ag = jaxsae.amortisation_gap(sae, X, lam)
    assert abs(float(ag.gap)) < 1e-12 and float(ag.kkt.max()) < 1e-12


def test_metrics_match_definitions(getkey):
    X = np.asarray(jax.random.normal(getkey(), (50, 4), jnp.float64)) + 2.0
    Xh = 0.8 * X + 0.1 * np.asarray(jax.random.normal(getkey(), (50, 4), jnp.float64))
    Z = np.array(jax.random.normal(getkey(), (50, 7), jnp.float64))
    Z[:, 3] = 0
    Z = np.maximum(Z, 0)
    ev_ref = 1 - np.mean(np.sum((X - Xh) ** 2, 1)) / (
        np.mean(np.sum(X * X, 1)) - np.sum(X.mean(0) ** 2)
    )
    np.testing.assert_allclose(jaxsae.explained_variance(X, Xh), ev_ref, rtol=1e-12)
    np.testing.assert_allclose(jaxsae.fvu(X, Xh), 1 - ev_ref, rtol=1e-10)
    np.testing.assert_allclose(
        jaxsae.shrinkage(X, Xh), np.mean(np.sum(Xh**2, 1)) / np.mean(np.sum(X * Xh, 1))
    )
    np.testing.assert_allclose(jaxsae.l0(Z), np.count_nonzero(Z) / 50)
    np.testing.assert_allclose(jaxsae.firing_rate(Z), (Z != 0).mean(0))
    np.testing.assert_array_equal(jaxsae.dead_latents(Z), np.arange(7) == 3)
    np.testing.assert_array_equal(jaxsae.dense_latents(Z, 0.45), (Z != 0).mean(0) > 0.45)


def test_float32_strict_promotion_and_jit(getkey):
    sae = random_sae(getkey(), jaxsae.JumpReLU(0.1), dtype=jnp.float32)
    X = jax.random.normal(getkey(), (8, 6), jnp.float32)
    out = eqx.filter_jit(lambda s, X: jax.vmap(s)(X))(sae, X)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(
        out, jax.vmap(sae.astype(jnp.float64))(X.astype(jnp.float64)), rtol=1e-4, atol=1e-4
    )
    Z = jaxsae.sae_codes(sae, X)
    assert Z.dtype == jnp.float32


def test_errors_are_clear(getkey, unchecked):
    sae = random_sae(getkey(), jaxsae.ReLU())
    with pytest.raises(ValueError, match="one example of shape"):
        sae(jnp.ones((2, 6)))
    with pytest.raises(ValueError, match="k ≤ d_sae"):
        jaxsae.SAE.init(4, 3, jaxsae.TopK(5), key=getkey())
    with pytest.raises(ValueError, match="W_dec must have shape"):
        jaxsae.SAE(W_enc=jnp.ones((3, 4)), b_enc=jnp.ones(4), W_dec=jnp.ones((3, 4)), b_dec=jnp.ones(3),
                   activation=jaxsae.ReLU())  # fmt: skip
    with pytest.raises(ValueError, match="features"):
        jaxsae.sae_codes(sae, jnp.ones((3, 5)))
