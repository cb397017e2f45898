"""Split scores, split_atom and add_atom_gain (THEORY §5) against brute force and re-solved codes."""

import jax
import numpy as np

import jaxsae
from jaxsae.certificates._splitting import add_atom_gain, split_atom, split_scores

D_, K_, N_, LAM = 3, 3, 80, 0.1


def _problem():
    rng = np.random.default_rng(0)
    A = np.abs(rng.normal(size=(K_, D_))) + 0.2
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    Z = (0.3 + np.abs(rng.normal(size=(N_, K_)))) * (rng.random((N_, K_)) < 0.5)
    X = Z @ A + 0.15 * rng.normal(size=(N_, D_))
    D = jaxsae.Dictionary(A + 0.1 * rng.normal(size=A.shape))
    codes = jaxsae.sparse_code(D, X, LAM, tol=1e-14).codes
    return D, X, codes


def _F(D, X, init=None):
    sol = jaxsae.sparse_code(D, X, LAM, tol=1e-14, init=init)
    assert float(sol.gap.max()) < 1e-13  # certified codes: F is exact to the gap
    return float(jaxsae.objective(D, X, sol.codes, LAM))


def test_split_scores_match_brute_force_over_the_circle():
    D, X, codes = _problem()
    s, V = split_scores(D, X, LAM, codes=codes, key=jax.random.key(1))
    atoms, Z = np.asarray(D.atoms), np.asarray(codes)
    R = X - Z @ atoms
    for k in range(K_):
        # orthonormal basis of d_k⊥ and every direction on that circle, 0.05° apart
        P = np.linalg.svd(np.eye(D_) - np.outer(atoms[k], atoms[k]))[0][:, :2]
        th = np.linspace(0, np.pi, 3600, endpoint=False)
        Vs = np.stack([np.cos(th), np.sin(th)], 1) @ P.T
        brute = (np.abs(Vs @ R.T) @ Z[:, k]).max() / N_
        assert brute * (1 - 1e-5) <= float(s[k]) <= brute * (1 + 1e-5)
        v = np.asarray(V[k])
        assert abs(v @ atoms[k]) < 1e-12 and abs(np.linalg.norm(v) - 1) < 1e-12
        np.testing.assert_allclose(float(s[k]), np.abs(R @ v) @ Z[:, k] / N_, rtol=1e-12)


def test_split_prediction_matches_measured_decrease():
    D, X, codes = _problem()
    s, V = split_scores(D, X, LAM, codes=codes, key=jax.random.key(1))
    F0 = _F(D, X)
    drops = []
    for k in range(K_):
        errs = []
        for eps in (1e-2, 1e-3):
            D2, Z2 = split_atom(D, X, LAM, k, V[k], eps, codes=codes)
            assert D2.n_atoms == K_ + 1
            # warm start: from zero codes sparse_code stalls on the near-duplicate pair
            dL = _F(D2, X, init=Z2) - F0
            # warm-start codes of the split are feasible: objective ≤ F0 − ε s_k + O(ε²)
            dL_assigned = float(jaxsae.objective(D2, X, Z2, LAM)) - F0
            assert dL <= dL_assigned + 1e-14
            errs.append(abs(dL / (-eps * float(s[k])) - 1))
            if eps == 1e-3:
                drops.append(-dL)
        assert errs[1] < 2e-2 and errs[1] < errs[0] / 3  # first order, error O(ε)
    assert int(np.argmax(drops)) == int(np.argmax(np.asarray(s)))


def _fibonacci_sphere(n):
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    th = np.pi * (1 + 5**0.5) * i
    return np.stack([np.cos(th) * np.sin(phi), np.sin(th) * np.sin(phi), np.cos(phi)], 1)


def test_add_atom_gain_is_exact_decrease_and_near_brute_force():
    D, X, codes = _problem()
    gain, a = add_atom_gain(D, X, LAM, codes=codes)
    Z, atoms = np.asarray(codes), np.asarray(D.atoms)
    R = X - Z @ atoms
    # exact: append a with codes (aᵀr − λ)_+ and measure L
    D2 = jaxsae.Dictionary(np.vstack([atoms, np.asarray(a)]))
    Z2 = np.hstack([Z, np.maximum(R @ np.asarray(a) - LAM, 0)[:, None]])
    L0 = float(jaxsae.objective(D, X, Z, LAM))
    L2 = float(jaxsae.objective(D2, X, Z2, LAM))
    np.testing.assert_allclose(L0 - L2, float(gain), rtol=1e-10)
    # near the best atom on a fine grid of the sphere
    A = _fibonacci_sphere(40000)
    brute = (0.5 * np.maximum(A @ R.T - LAM, 0) ** 2).mean(1).max()
    assert float(gain) >= brute * (1 - 1e-3)
    assert float(gain) > 0


def test_add_atom_gain_zero_iff_residuals_within_lambda():
    D, X, _ = _problem()
    big = float(np.linalg.norm(X, axis=1).max())
    # λ ≥ max‖x_n‖: every code is 0, r_n = x_n, and no atom can gain
    for lam, positive in ((big * 1.01, False), (big * 0.9, True)):
        codes = jaxsae.sparse_code(D, X, lam, tol=1e-14).codes
        R = X - np.asarray(codes) @ np.asarray(D.atoms)
        assert (np.linalg.norm(R, axis=1).max() > lam) == positive
        gain, _ = add_atom_gain(D, X, lam, codes=codes)
        assert (float(gain) > 0) == positive
