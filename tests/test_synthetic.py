"""Synthetic worlds: the ground truth they report is the ground truth they sample."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsae.data.synthetic as syn


def _orthonormal(F):
    F = np.asarray(F)
    np.testing.assert_allclose(F @ F.T, np.eye(F.shape[0]), atol=1e-12)


def test_sparse_features_rates_and_reconstruction(getkey):
    p = jnp.array([0.05, 0.2, 0.5])
    w = syn.sparse_features(
        key=getkey(),
        n_points=20000,
        n_features=3,
        dim=5,
        p=p,
        magnitude_low=0.5,
        magnitude_high=1.5,
    )
    _orthonormal(w.features)
    np.testing.assert_allclose(w.X, w.codes @ w.features, atol=1e-12)
    rate = np.mean(np.asarray(w.codes) > 0, axis=0)
    # Binomial standard error at N=20000 is ≤ 0.0036; 5 sigma.
    np.testing.assert_allclose(rate, p, atol=0.018)
    on = np.asarray(w.codes)[np.asarray(w.codes) > 0]
    assert on.min() >= 0.5 and on.max() <= 1.5
    assert abs(on.mean() - 1.0) < 0.01


def test_sparse_features_correlation_raises_cofiring(getkey):
    key = getkey()
    kw = dict(key=key, n_points=20000, n_features=2, dim=3, p=0.1)
    on0 = np.asarray(syn.sparse_features(**kw, correlation=0.0).codes) > 0
    on1 = np.asarray(syn.sparse_features(**kw, correlation=0.8).codes) > 0
    both0, both1 = np.mean(on0.all(1)), np.mean(on1.all(1))
    assert abs(both0 - 0.01) < 0.004  # independent: p²
    assert both1 > 3 * both0
    np.testing.assert_allclose(on1.mean(0), [0.1, 0.1], atol=0.02)  # marginals kept


def test_hierarchy_structure(getkey):
    w = syn.hierarchy(
        key=getkey(),
        n_points=20000,
        dim=8,
        n_parents=2,
        n_children=3,
        p_parent=0.4,
        p_alone=0.25,
        alpha=1.0,
        beta=0.6,
    )
    assert w.parent.tolist() == [-1, 0, 0, 0, -1, 4, 4, 4]
    assert w.is_parent.tolist() == [True, False, False, False, True, False, False, False]
    _orthonormal(w.features)
    C = np.asarray(w.codes)
    for p0 in (0, 4):
        kids = C[:, p0 + 1 : p0 + 4] > 0
        assert kids.sum(1).max() == 1  # mutually exclusive children
        assert not np.any(kids.any(1) & (C[:, p0] == 0))  # a child never fires without its parent
        par = C[:, p0] > 0
        assert abs(par.mean() - 0.4) < 0.02
        assert abs(np.mean(~kids.any(1)[par]) - 0.25) < 0.03  # parent alone
    np.testing.assert_allclose(np.unique(C[C > 0]), [0.6, 1.0])
    lab = np.asarray(w.labels)
    np.testing.assert_array_equal(lab >= 0, (C[:, 1:4] > 0).any(1))
    np.testing.assert_array_equal(C[lab >= 0][np.arange((lab >= 0).sum()), lab[lab >= 0]], 0.6)


def test_hierarchy_too_many_features_is_an_error(getkey):
    with pytest.raises(ValueError, match="orthonormal features"):
        syn.hierarchy(key=getkey(), n_points=10, dim=4, n_parents=2, n_children=2)


def test_parent_child_points(getkey):
    w = syn.parent_child(key=getkey(), n_points=500, dim=4, alpha=1.0, beta=0.8, n_children=2)
    p, c = np.asarray(w.features[0]), np.asarray(w.features[1:])
    X = np.asarray(w.X)
    d1 = np.linalg.norm(X - (p + 0.8 * c[0]), axis=1)
    d2 = np.linalg.norm(X - (p + 0.8 * c[1]), axis=1)
    assert np.all(np.minimum(d1, d2) < 1e-12)
    assert 0.4 < np.mean(d1 < 1e-12) < 0.6


@pytest.mark.parametrize("gaussian", [False, True])
def test_dense_signed(getkey, gaussian):
    w = syn.dense_signed(
        key=getkey(),
        n_points=20000,
        dim=5,
        amplitude=2.0,
        gaussian=gaussian,
        n_sparse=2,
        p_sparse=0.1,
    )
    assert w.dense.tolist() == [True, False, False]
    _orthonormal(w.features)
    t = np.asarray(w.codes[:, 0])
    np.testing.assert_allclose(np.asarray(w.X) @ np.asarray(w.features[0]), t, atol=1e-12)
    if gaussian:
        assert abs(t.std() - 2.0) < 0.05 and abs(t.mean()) < 0.05
    else:
        np.testing.assert_allclose(np.abs(t), 2.0)
        assert abs(np.mean(t > 0) - 0.5) < 0.02
    assert abs(np.mean(np.asarray(w.codes[:, 1:]) > 0) - 0.1) < 0.01


def test_gaussian_mixture(getkey):
    w = syn.gaussian_mixture(
        key=getkey(), n_points=6000, dim=6, n_clusters=3, radius=2.0, spread=0.1
    )
    X, lab, F = np.asarray(w.X), np.asarray(w.labels), np.asarray(w.features)
    for c in range(3):
        pts = X[lab == c]
        np.testing.assert_allclose(pts.mean(0), 2.0 * F[c], atol=0.02)
        assert abs(np.sqrt(((pts - 2.0 * F[c]) ** 2).sum(1).mean() / 6) - 0.1) < 0.005
    np.testing.assert_array_equal(np.argmax(np.asarray(w.codes), 1), lab)


def test_float32_world(getkey):
    w = syn.parent_child(key=getkey(), n_points=10, dim=3, dtype=jnp.float32)
    assert w.X.dtype == jnp.float32 and w.features.dtype == jnp.float32
    w = syn.sparse_features(key=getkey(), n_points=10, n_features=2, dim=3, dtype=jnp.float32)
    assert w.X.dtype == jnp.float32


def test_worlds_are_jittable_and_deterministic(getkey):
    key = getkey()
    f = jax.jit(lambda k: syn.dense_signed(key=k, n_points=50, dim=3, n_sparse=1, gaussian=True).X)
    np.testing.assert_array_equal(
        f(key), syn.dense_signed(key=key, n_points=50, dim=3, n_sparse=1, gaussian=True).X
    )


def test_free_composition_counts_and_structure(getkey):
    w = syn.free_composition(key=getkey(), n_parents=2, n_children=3, n_points=20, profile="zipf")
    # zipf weights 1/m over M = 6 combinations, 20 points: round(20·(1/m)/H_6) each
    H = sum(1 / m for m in range(1, 7))
    expect = [max(1, round(20 / m / H)) for m in range(1, 7)]
    np.testing.assert_array_equal(np.bincount(np.asarray(w.labels)), expect)
    _orthonormal(w.features)
    codes = np.asarray(w.codes)
    np.testing.assert_allclose(np.asarray(w.X), codes @ np.asarray(w.features), atol=1e-12)
    m = np.asarray(w.labels)
    np.testing.assert_array_equal(codes[np.arange(len(m)), m // 3], 1.0)  # parent j = m // C
    np.testing.assert_array_equal(codes[np.arange(len(m)), 2 + m % 3], 0.8)  # child i = m % C
    assert (codes > 0).sum(axis=1).tolist() == [2] * len(m)
    assert np.asarray(w.is_parent).tolist() == [True, True, False, False, False]
    assert np.asarray(w.children).tolist() == [False, False, True, True, True]
    with pytest.raises(ValueError, match="profile"):
        syn.free_composition(key=getkey(), n_parents=2, n_children=2, profile="flat")
