"""Phenomena of THEORY §7: each test is a prediction checked against a measurement."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.special

import jaxsae
import jaxsae.data.synthetic as syn
from jaxsae import phenomena as ph

# One problem shape for every learned dictionary here (N, d, K) = (400, 4, 4), so
# learn_dictionary compiles once for the whole file.
N, DIM, K = 400, 4, 4


def _learn_best(X, lam, seeds=(0, 1), n_atoms=K):
    """The best (lowest objective) of a few first-order-certified learned dictionaries."""
    best = None
    for s in seeds:
        D, hist = jaxsae.learn_dictionary(X, n_atoms, lam, key=jax.random.key(s))
        assert float(hist.grad_norm[-1]) < 1e-8  # first-order stationary
        F = float(hist.objective[-1])
        if best is None or F < best[0]:
            best = (F, D, hist.codes)
    return best


# --- absorption --------------------------------------------------------------


def _obj(atoms, X, lam):
    D = jaxsae.Dictionary(atoms)
    sol = jaxsae.sparse_code(D, X, lam)
    assert float(sol.gap.max()) < 1e-12
    return float(jaxsae.objective(D, X, sol.codes, lam))


@pytest.mark.parametrize("alpha,beta", [(1.0, 0.8), (1.0, 1.0), (0.7, 1.2)])
def test_absorption_costs_match_formula(getkey, alpha, beta):
    """Two atoms cost λ(α+β) − λ², one absorbed atom λ√(α²+β²) − λ²/2 per point, for
    λ < min(α, β); at every λ the exact saving is absorption_gain (Huber costs)."""
    w = syn.parent_child(key=getkey(), n_points=40, dim=DIM, alpha=alpha, beta=beta)
    p, c = w.features[0], w.features[1:]
    separate = jnp.concatenate([w.features, w.features[:1]])  # same width: p, c1, c2 (+ p)
    absorbed = jnp.concatenate(
        [p[None], ph.absorbed_directions(p, c, alpha=alpha, beta=beta), p[None]]
    )
    norm = np.hypot(alpha, beta)
    for frac in (0.2, 0.5, 0.9):
        lam = frac * min(alpha, beta)
        F_sep, F_abs = _obj(separate, w.X, lam), _obj(absorbed, w.X, lam)
        np.testing.assert_allclose(F_sep, lam * (alpha + beta) - lam**2, rtol=1e-10)
        np.testing.assert_allclose(F_abs, lam * norm - lam**2 / 2, rtol=1e-10)
        assert bool(ph.absorption_predicted(alpha=alpha, beta=beta, lam=lam)) == (F_abs < F_sep)
        assert F_abs < F_sep  # inside the two-atom regime absorption always wins
        np.testing.assert_allclose(
            float(ph.absorption_gain(alpha=alpha, beta=beta, lam=lam)), F_sep - F_abs, rtol=1e-9
        )
    # Beyond the two-atom regime the formula no longer applies; the Huber saving does.
    for lam in (1.1 * min(alpha, beta), 1.1 * max(alpha, beta), 0.99 * norm, 1.2 * norm):
        gain = float(ph.absorption_gain(alpha=alpha, beta=beta, lam=lam))
        np.testing.assert_allclose(
            gain, _obj(separate, w.X, lam) - _obj(absorbed, w.X, lam), rtol=1e-9, atol=1e-13
        )
        assert (gain > 1e-12) == (lam < norm)
        assert bool(ph.absorption_predicted(alpha=alpha, beta=beta, lam=lam)) == (lam < norm)


def test_no_absorption_boundary_below_the_norm(getkey):
    """THEORY §7 (corrected): the retracted threshold 2(α+β−√(α²+β²)) is ≥ min(α, β) for
    all α, β > 0, so it never binds where its two-atom cost holds; the exact saving is > 0
    for every λ < ‖x‖ and 0 from ‖x‖ on, which is absorption_critical_lam."""
    a, b = jax.random.uniform(getkey(), (2, 2000), minval=0.01, maxval=10.0)
    retracted = 2 * (a + b - jnp.hypot(a, b))
    assert bool(jnp.all(retracted >= jnp.minimum(a, b) * (1 - 1e-12)))
    np.testing.assert_allclose(
        ph.absorption_critical_lam(alpha=a, beta=b), jnp.hypot(a, b), rtol=1e-15
    )
    lam = jax.random.uniform(getkey(), (2000,)) * jnp.hypot(a, b) * 0.999
    assert bool(jnp.all(ph.absorption_gain(alpha=a, beta=b, lam=lam) > 0))
    above = jnp.hypot(a, b) * (1 + jax.random.uniform(getkey(), (2000,)))
    np.testing.assert_allclose(ph.absorption_gain(alpha=a, beta=b, lam=above), 0, atol=1e-12)
    assert not bool(jnp.any(ph.absorption_predicted(alpha=a, beta=b, lam=above)))


@pytest.mark.parametrize("lam_scale", [0.5, 1.1])
def test_learned_optimum_absorbs(getkey, lam_scale):
    """Parent with 3 children and parent-alone points, K = 4 atoms. Prediction: the
    children's atoms are the absorbed directions (αp+βc)/‖αp+βc‖ — below the retracted
    threshold λ* = 2(α+β−‖x‖) of an earlier THEORY (λ = 0.5·min(α,β)) and above it
    (λ = 1.1·λ*), since the exact saving is positive for λ < ‖x‖; the parent atom is
    silent wherever a child fires; the objective meets the wide-limit bound (W)."""
    alpha, beta = 1.0, 0.8
    lam_star = 2 * (alpha + beta - np.hypot(alpha, beta))
    lam = lam_scale * (min(alpha, beta) if lam_scale < 1 else lam_star)
    w = syn.parent_child(
        key=getkey(), n_points=N, dim=DIM, alpha=alpha, beta=beta, n_children=3, p_alone=0.25
    )
    F, D, Z = _learn_best(w.X, lam)
    predicted = ph.absorbed_directions(w.features[0], w.features[1:], alpha=alpha, beta=beta)
    cos = np.asarray(ph.cosines(D, predicted))
    assert cos.max(axis=1).min() >= 0.99
    np.testing.assert_allclose(F, float(jaxsae.wide_bound(w.X, lam)), rtol=1e-9)
    A = ph.absorption(D, Z, w)
    best_parent = float(np.asarray(ph.cosines(D, w.features[:1])).max())
    if lam < alpha:  # the parent keeps an atom for its lone points, silent where a child fires
        assert best_parent >= 0.99
        np.testing.assert_allclose(A.rate, [1.0])  # fully absorbed (lower is better)
    else:  # λ > α: lone parents are not coded, the parent has no atom of its own
        np.testing.assert_allclose(best_parent, alpha / np.hypot(alpha, beta), atol=1e-3)


# --- dense signed directions: antipodal pairs ----------------------------------


@pytest.mark.parametrize("gaussian", [True, False])
def test_dense_direction_gives_antipodal_pair(getkey, gaussian):
    """t v with t = ±a or N(0, a²), plus 2 rare sparse features, K = 4. Prediction: an
    antipodal pair ±v, never co-firing, each atom firing on P(±t > λ) of the points."""
    lam, a = 0.3, 1.0
    w = syn.dense_signed(
        key=getkey(), n_points=N, dim=DIM, amplitude=a, gaussian=gaussian, n_sparse=2, p_sparse=0.05
    )
    _, D, Z = _learn_best(w.X, lam)
    pairs = ph.antipodal_pairs(D, Z, tau=0.9)
    assert pairs.pairs.shape == (1, 2)
    assert pairs.cos[0] <= -0.99
    assert pairs.cofiring[0] == 0.0
    i, j = pairs.pairs[0]
    v = np.asarray(w.features[0])
    sign = np.sign(np.asarray(D.atoms[i]) @ v)  # which of the two is +v
    t = np.asarray(w.codes[:, 0])
    sample_pred = np.array([np.mean(sign * t > lam), np.mean(-sign * t > lam)])
    # same draws, so only points whose t sits at the kink can differ: measured 1 of
    # 400 (Gaussian) and 0 (binary); allow 2 points
    np.testing.assert_allclose(pairs.rates[0], sample_pred, atol=2 / N + 1e-12)
    closed = (
        ph.antipodal_rate_gaussian(sigma=a, lam=lam)
        if gaussian
        else ph.antipodal_rate_binary(amplitude=a, lam=lam)
    )
    np.testing.assert_allclose(pairs.rates[0], float(closed), atol=0.06)  # sampling error at N=400


def test_antipodal_rate_closed_forms():
    lam, sigma = 0.37, 1.3
    np.testing.assert_allclose(
        ph.antipodal_rate_gaussian(sigma=sigma, lam=lam),
        scipy.special.ndtr(-lam / sigma),
        rtol=1e-12,
    )
    assert float(ph.antipodal_rate_binary(amplitude=0.5, lam=0.4)) == 0.5
    assert float(ph.antipodal_rate_binary(amplitude=0.3, lam=0.4)) == 0.0


def test_antipodal_codes_are_the_lasso_codes(getkey):
    """Codes of t v on the pair (+v, −v) from sparse_code equal ((t−λ)_+, (−t−λ)_+)."""
    Q = np.linalg.qr(np.asarray(jax.random.normal(getkey(), (DIM, DIM))))[0].T
    v = jnp.asarray(Q[0])
    t = jax.random.normal(getkey(), (40,))
    D = jaxsae.Dictionary(jnp.stack([v, -v, jnp.asarray(Q[1]), jnp.asarray(Q[2])]))
    sol = jaxsae.sparse_code(D, t[:, None] * v, 0.25)
    assert bool(sol.converged.all())
    np.testing.assert_allclose(sol.codes[:, :2], ph.antipodal_codes(t, 0.25), atol=1e-12)
    np.testing.assert_allclose(sol.codes[:, 2:], 0)


def test_antipodal_codes_exact_pair_alone(getkey):
    """The pair [v, −v] alone (G singular off its diagonal blocks): codes ((t−λ)_+, (−t−λ)_+)."""
    v = jnp.array([0.6, 0.8, 0.0])
    t = jax.random.normal(getkey(), (20,))
    sol = jaxsae.sparse_code(jaxsae.Dictionary(jnp.stack([v, -v])), t[:, None] * v, 0.25)
    assert bool(sol.converged.all())
    np.testing.assert_allclose(sol.codes, ph.antipodal_codes(t, 0.25), atol=1e-12)


# --- hierarchical splitting across widths --------------------------------------


@pytest.mark.slow
def test_first_split_follows_split_score(getkey):
    """Two parents with two exclusive children each; parent 1's children are larger.
    Prediction from the K=2 optimum: the atom with the largest split score splits first
    when K=3, along its split direction, into the (A') centroids of its two sides."""
    w = syn.hierarchy(
        key=getkey(),
        n_points=N,
        dim=6,
        n_parents=2,
        n_children=2,
        p_parent=0.5,
        alpha=1.0,
        beta=jnp.array([0.4, 0.8]),
    )
    lam = 0.1
    _, D2, Z2 = _learn_best(w.X, lam, seeds=(0, 1, 2), n_atoms=2)
    _, D3, _ = _learn_best(w.X, lam, seeds=(0, 1, 2), n_atoms=3)
    pred = ph.split_prediction(D2, w.X, lam, codes=Z2, key=getkey())
    k = int(pred.atom)
    # the splitting atom is parent 1's (the one with the larger children)
    assert int(ph.best_atoms(D2, w.features[3:4])[0]) == k
    parents = ph.split_parents(D2, D3)
    kids = np.flatnonzero(parents == k)
    assert kids.size == 2
    diff = np.asarray(D3.atoms[kids[0]] - D3.atoms[kids[1]])
    v = np.asarray(pred.directions[k])
    assert abs(diff @ v) / np.linalg.norm(diff) >= 0.9
    C = np.abs(np.asarray(pred.children @ D3.atoms[kids].T))
    assert min(C.max(0).min(), C.max(1).min()) >= 0.9


# --- a vanilla SAE on the same worlds ---------------------------------------------


@pytest.mark.slow  # trains an SAE (compiles train_sae and amortisation_gap); ~40 s
def test_sae_certificates_quantify_distance_to_joint_optimum(getkey):
    """A ReLU SAE trained on the dense ±a world: its codes are not the lasso codes of
    its own dictionary (amortisation gap > 0, KKT violated) and its objective is above
    the wide-limit bound (W); (R) fails for its residuals. Reported, not asserted to be 0."""
    lam = 0.3
    w = syn.dense_signed(
        key=getkey(), n_points=N, dim=DIM, amplitude=1.0, n_sparse=2, p_sparse=0.05
    )
    sae = jaxsae.SAE.init(DIM, K, jaxsae.ReLU(), key=getkey(), dtype=w.X.dtype, decoder_norm=1.0)
    out = jaxsae.train_sae(
        sae, w.X, lam=lam, steps=300, batch_size=100, key=getkey(), lr=1e-2, progress=False
    )
    ag = jaxsae.amortisation_gap(out.sae, w.X, lam)
    D = jaxsae.sae_dictionary(out.sae)
    # the gap is a difference of two objectives computed independently
    Z_sae = jaxsae.sae_codes(out.sae, w.X)
    np.testing.assert_allclose(
        float(ag.gap),
        float(
            jaxsae.objective(D, w.X, Z_sae, lam) - jaxsae.objective(D, w.X, ag.optimal_codes, lam)
        ),
        rtol=1e-9,
    )
    assert float(ag.gap) > 0 and float(ag.kkt.max()) > 1e-3
    # (W) bounds every dictionary with this bias from below: the distance to any optimum
    F_inf = float(jaxsae.wide_bound(w.X, lam, D.bias))
    assert float(ag.sae_objective) > float(ag.optimal_objective) >= F_inf
    print(
        f"SAE: L={float(ag.sae_objective):.5f}, lasso codes {float(ag.optimal_objective):.5f}, "
        f"(W) bound {F_inf:.5f}, amortisation gap {float(ag.gap):.2e}, KKT {float(ag.kkt.max()):.2e}"
    )
    dec = ph.residual_decomposition(D, w.X, Z_sae, lam)
    assert float(dec.orthogonality) > 1e-3  # SAE residuals are not of the form (R)


# --- residual structure (R) ------------------------------------------------------


@pytest.mark.parametrize("n_atoms", [K, pytest.param(7, marks=pytest.mark.slow)])
def test_residual_decomposition_at_optimal_codes(getkey, n_atoms):
    """(R) holds at certified codes for any dictionary: r = λ D_S G_S⁻¹ 1 + r⊥ with r⊥ ⟂
    span(D_S), i.e. the shrinkage part is the projection of r on span(D_S)."""
    lam = 0.15
    atoms = jax.random.normal(getkey(), (n_atoms, DIM))
    # n_atoms = 7 > DIM: overcomplete, supports and Gram blocks vary from point to point
    D = jaxsae.Dictionary(atoms)
    X = jax.random.normal(getkey(), (40, DIM))
    sol = jaxsae.sparse_code(D, X, lam)
    dec = ph.residual_decomposition(D, X, sol.codes, lam)
    assert float(dec.orthogonality) < 1e-9
    R = np.asarray(X - sol.codes @ D.atoms)
    A, Zc = np.asarray(D.atoms), np.asarray(sol.codes)
    proj = np.zeros_like(R)
    for n in range(R.shape[0]):
        S = Zc[n] > 0
        if S.any():  # projection of r_n on span(D_S) by least squares
            coef, *_ = np.linalg.lstsq(A[S].T, R[n], rcond=None)
            proj[n] = A[S].T @ coef
            np.testing.assert_allclose(A[S] @ np.asarray(dec.shrinkage[n]), lam, atol=1e-9)
    np.testing.assert_allclose(dec.shrinkage, proj, atol=1e-9)
    np.testing.assert_allclose(dec.shrinkage + dec.orthogonal, R, atol=1e-12)
    share = (proj**2).sum() / (R**2).sum()
    np.testing.assert_allclose(float(dec.share), share, rtol=1e-9)
    assert 0 < share < 1


def test_residual_decomposition_orthonormal_closed_form(getkey):
    """For orthonormal active atoms the shrinkage component is λ Σ_{k∈S} d_k."""
    Q = np.linalg.qr(np.asarray(jax.random.normal(getkey(), (DIM, DIM))))[0].T
    D = jaxsae.Dictionary(Q)
    X = jax.random.normal(getkey(), (40, DIM))
    lam = 0.3
    sol = jaxsae.sparse_code(D, X, lam)
    dec = ph.residual_decomposition(D, X, sol.codes, lam)
    expected = lam * (np.asarray(sol.codes) > 0) @ Q
    np.testing.assert_allclose(dec.shrinkage, expected, atol=1e-12)
    assert 0 < (np.asarray(sol.codes) > 0).mean() < 1


# --- measurements vs independent references --------------------------------------


@pytest.mark.parametrize("shape", [(5, 5), (3, 7), (7, 3), (1, 4)])
def test_mcc_matches_scipy(getkey, shape):
    F, Kk = shape
    G = jax.random.normal(getkey(), (F, 6))
    A = jax.random.normal(getkey(), (Kk, 6))
    m = ph.mcc(A, G)
    C = np.abs(np.asarray(ph.cosines(A, G)))
    r, c = scipy.optimize.linear_sum_assignment(-C)
    np.testing.assert_allclose(m.score, C[r, c].mean(), rtol=1e-12)
    assert len(set(m.atoms.tolist())) == len(m.atoms) == min(F, Kk)


def test_hungarian_matches_scipy_on_many_problems():
    rng = np.random.default_rng(0)
    for t in range(200):
        n, m = rng.integers(1, 8, 2)
        C = rng.normal(size=(n, m))
        if t % 2:
            C = np.round(C)  # ties
        r, c = ph.hungarian(C)
        r2, c2 = scipy.optimize.linear_sum_assignment(C)
        np.testing.assert_allclose(C[r, c].sum(), C[r2, c2].sum(), atol=1e-12)


def test_mmcs_brute_force_and_mask(getkey):
    G = jax.random.normal(getkey(), (4, 5))
    A = jax.random.normal(getkey(), (6, 5))
    Gn = np.asarray(G) / np.linalg.norm(G, axis=1, keepdims=True)
    An = np.asarray(A) / np.linalg.norm(A, axis=1, keepdims=True)
    brute = np.mean([max(g @ a for a in An) for g in Gn])
    np.testing.assert_allclose(float(ph.mmcs(A, G)), brute, rtol=1e-12)
    mask = jnp.array([True, False, True, False, True, True])
    D = jaxsae.Dictionary(A, mask=mask)
    brute_m = np.mean([max(g @ a for a in An[np.asarray(mask)]) for g in Gn])
    np.testing.assert_allclose(float(ph.mmcs(D, G)), brute_m, rtol=1e-12)
    assert float(ph.mmcs(G, G)) == pytest.approx(1.0, abs=1e-12)


def test_dark_matter_r2_matches_numpy_lstsq(getkey):
    X = jax.random.normal(getkey(), (200, 5))
    W = jax.random.normal(getkey(), (5, 5))
    E = 0.3 * X @ W + 0.1 * jax.random.normal(getkey(), (200, 5)) + 0.2
    r2 = float(ph.dark_matter_r2(X, X - E))
    Xa = np.hstack([np.asarray(X), np.ones((200, 1))])
    coef, *_ = np.linalg.lstsq(Xa, np.asarray(E), rcond=None)
    res = np.asarray(E) - Xa @ coef
    ref = 1 - (res**2).sum() / ((np.asarray(E) - np.asarray(E).mean(0)) ** 2).sum()
    np.testing.assert_allclose(r2, ref, rtol=1e-10)
    assert 0.5 < r2 < 1


def test_antipodal_detection_and_cofiring():
    v = np.array([1.0, 0.0, 0.0])
    atoms = np.stack([v, -v, [0.0, 1.0, 0.0], [0.0, -0.8, 0.6]])
    Z = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [0, 1, 1, 1], [0, 0, 0, 1]], float)
    P = ph.antipodal_pairs(jaxsae.Dictionary(atoms), Z, tau=0.7)
    np.testing.assert_array_equal(P.pairs, [[0, 1], [2, 3]])
    np.testing.assert_allclose(P.cos, [-1.0, -0.8])
    np.testing.assert_allclose(P.cofiring, [0.25, 0.25])
    np.testing.assert_allclose(P.rates, [[0.5, 0.5], [0.25, 0.5]])
    assert ph.antipodal_pairs(jaxsae.Dictionary(atoms), Z, tau=0.9).pairs.shape == (1, 2)


def test_absorption_measure_by_hand(getkey):
    """A hand-made dictionary: parent atom p, one child absorbed, one not."""
    w = syn.parent_child(key=getkey(), n_points=40, dim=DIM, alpha=1.0, beta=0.8, p_alone=0.2)
    p, c = w.features[0], w.features[1:]
    a1 = ph.absorbed_directions(p, c[:1], alpha=1.0, beta=0.8)
    # a fourth, masked atom keeps the (N, d, K) shape of the other tests (one compilation)
    D = jaxsae.Dictionary(
        jnp.concatenate([p[None], a1, c[1:2], c[:1]]), mask=jnp.array([True, True, True, False])
    )
    lam = 0.2
    Z = jaxsae.sparse_code(D, w.X, lam).codes
    A = ph.absorption(D, Z, w)
    codes = np.asarray(w.codes)
    kid1, kid2 = codes[:, 1] > 0, codes[:, 2] > 0
    # child 1's points use only a1 (parent silent), child 2's use p and c2
    np.testing.assert_allclose(A.rate, [kid1.sum() / (kid1.sum() + kid2.sum())])
    # fraction: on child-1 points the main latent carries 0 of a = α and a1 carries
    # α − λ·α/‖x‖ of it (code ‖x‖−λ times cos), clipped at a; elsewhere 0.
    norm = np.hypot(1.0, 0.8)
    per = (norm - lam) * (1.0 / norm) / 1.0
    np.testing.assert_allclose(A.fraction, [per * kid1.mean()], rtol=1e-9)
    np.testing.assert_allclose(A.full_rate, [kid1.mean()])


# --- dtypes, jit and vmap ---------------------------------------------------------------


def test_float32_matches_float64(getkey):
    X = jax.random.normal(getkey(), (40, DIM))
    A = jax.random.normal(getkey(), (K, DIM))
    D64 = jaxsae.Dictionary(A)
    Z = jaxsae.sparse_code(D64, X, 0.3).codes
    d64 = ph.residual_decomposition(D64, X, Z, 0.3)
    d32 = ph.residual_decomposition(
        D64.astype(jnp.float32), X.astype(jnp.float32), Z.astype(jnp.float32), 0.3
    )
    assert d32.shrinkage.dtype == jnp.float32
    np.testing.assert_allclose(d32.shrinkage, d64.shrinkage, atol=1e-4)
    np.testing.assert_allclose(float(d32.share), float(d64.share), rtol=1e-4)
    G = jax.random.normal(getkey(), (3, DIM))
    np.testing.assert_allclose(
        float(ph.mmcs(A.astype(jnp.float32), G.astype(jnp.float32))),
        float(ph.mmcs(A, G)),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        float(ph.dark_matter_r2(X.astype(jnp.float32), (0.5 * X).astype(jnp.float32))),
        float(ph.dark_matter_r2(X, 0.5 * X)),
        atol=1e-5,
    )
    lam32 = jnp.float32(0.4)
    assert (
        ph.absorption_gain(alpha=jnp.float32(1.0), beta=jnp.float32(0.8), lam=lam32).dtype
        == jnp.float32
    )


def test_predictions_vmap_over_lam_equals_loop():
    lams = jnp.linspace(0.05, 1.5, 7)
    f = lambda lam: (  # noqa: E731
        ph.absorption_gain(alpha=1.0, beta=0.8, lam=lam),
        ph.antipodal_rate_gaussian(sigma=1.0, lam=lam),
        ph.absorption_predicted(alpha=1.0, beta=0.8, lam=lam),
    )
    batched = jax.vmap(f)(lams)
    for i, lam in enumerate(lams):
        for b, one in zip(batched, f(lam)):
            np.testing.assert_allclose(np.asarray(b[i]), np.asarray(one), rtol=1e-14)


def test_absorption_in_a_free_composition_world(getkey):
    """Composition keeps every parent's atom active (rate 0); one atom per combination
    p_j + βc_i makes parent j's best-matched atom (its first combination, by argmax order)
    silent on the points of its other C − 1 children: rate (C − 1)/C under uniform counts."""
    P, C, lam = 2, 3, 0.1
    w = syn.free_composition(key=getkey(), n_parents=P, n_children=C, n_points=60)
    comp = jaxsae.Dictionary(w.features)
    A = ph.absorption(comp, jaxsae.sparse_code(comp, w.X, lam).codes, w)
    np.testing.assert_array_equal(A.parents, [0, 1])
    np.testing.assert_allclose(A.rate, [0.0, 0.0])
    F = np.asarray(w.features)
    combos = np.asarray([F[j] + 0.8 * F[P + i] for j in range(P) for i in range(C)])
    absorbing = jaxsae.Dictionary(combos / np.linalg.norm(combos, axis=1, keepdims=True))
    A = ph.absorption(absorbing, jaxsae.sparse_code(absorbing, w.X, lam).codes, w)
    np.testing.assert_allclose(A.rate, [(C - 1) / C] * P, atol=1e-12)
    np.testing.assert_array_equal(A.main_atom, [0, C])
