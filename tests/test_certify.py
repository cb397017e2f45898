"""Tests of ``jaxsae.certify`` against independent computations (THEORY §1–§3, §6).

One small problem (d=8, K=6, N=400, λ=0.1) is driven to a stationary point by
a tiny alternating minimiser written here (exact codes, then the exact sphere
update (A') atom by atom); most checks reuse it, so shapes (and compiles) are
shared.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsae
from jaxsae.certificates._shrinkage import shrinkage_component

d, K, N, LAM = 8, 6, 400, 0.1


@jax.jit
def _atom_sweep(atoms, X, Z):
    """Each atom in turn by (A'): the normalised code-weighted sum of its partial residuals."""
    R = X - Z @ atoms
    for k in range(atoms.shape[0]):
        Y = R + Z[:, k : k + 1] * atoms[k]  # partial residuals y^(k)
        v = Z[:, k] @ Y
        new = v / jnp.linalg.norm(v)
        R = Y - Z[:, k : k + 1] * new
        atoms = atoms.at[k].set(new)
    return atoms


def _alternate(atoms, X, lam, n_iter):
    """Alternating minimisation: optimal codes (sparse_code), then the atoms by (A')."""
    for _ in range(n_iter):
        Z = jaxsae.sparse_code(jaxsae.Dictionary(atoms), X, lam).codes
        atoms = _atom_sweep(atoms, X, Z)
    return atoms


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    true = rng.standard_normal((K, d))
    true /= np.linalg.norm(true, axis=1, keepdims=True)
    Zt = rng.uniform(0, 1, (N, K)) * (rng.uniform(size=(N, K)) < 0.3)
    X = jnp.asarray(Zt @ true + 0.05 * rng.standard_normal((N, d)))
    A0 = true + 0.3 * rng.standard_normal((K, d))
    A0 = jnp.asarray(A0 / np.linalg.norm(A0, axis=1, keepdims=True))
    early = _alternate(A0, X, LAM, 3)
    late = _alternate(early, X, LAM, 200)
    return X, jaxsae.Dictionary(early), jaxsae.Dictionary(late)


def _riemannian_grad(D, X, lam):
    """Riemannian gradient of L in the atoms at fixed optimal codes, by autodiff
    through the normalisation ``a/‖a‖`` (whose Jacobian at a unit atom is the
    tangent projector): independent of the certificate's ``c_k`` sums."""
    Z = jax.lax.stop_gradient(jaxsae.sparse_code(D, X, lam).codes)
    return jax.grad(lambda A: jaxsae.objective(jaxsae.Dictionary(A), X, Z, lam))(D.atoms), Z


def test_alignment_and_gradient_at_converged_and_early_iterate(problem):
    X, early, late = problem
    cert = jaxsae.certify(late, X, LAM)
    assert float(cert.atom_alignment.max()) <= 1e-9
    assert float(cert.atom_grad_norm.max()) <= 1e-9
    assert float(cert.code_kkt) <= 1e-9
    assert "first-order stationary to" in cert.verdict
    grad, Z = _riemannian_grad(late, X, LAM)
    np.testing.assert_allclose(cert.atom_grad_norm, jnp.linalg.norm(grad, axis=1), atol=1e-12)
    # d_kᵀ ∇_k L = −λ‖z_k‖₁/N, with ‖z_k‖₁ from the solver's codes directly.
    np.testing.assert_allclose(cert.atom_radial, -LAM * Z.sum(0) / N, rtol=1e-9)
    np.testing.assert_allclose(cert.code_l1, Z.sum(0), rtol=1e-10)
    np.testing.assert_allclose(cert.firing_rate, np.mean(np.asarray(Z) > 0, axis=0), rtol=1e-15)
    np.testing.assert_allclose(cert.objective, jaxsae.objective(late, X, Z, LAM), rtol=1e-12)

    bad = jaxsae.certify(early, X, LAM)
    grad_e, _ = _riemannian_grad(early, X, LAM)
    np.testing.assert_allclose(bad.atom_grad_norm, jnp.linalg.norm(grad_e, axis=1), rtol=1e-9)
    assert float(bad.atom_alignment.max()) > 1e-3
    assert float(bad.atom_grad_norm.max()) > 1e-5
    k = int(jnp.argmax(bad.atom_alignment))
    assert f"not stationary: atom {k} alignment error" in bad.verdict


def test_pairwise_identity_holds_at_optimum(problem):
    X, early, late = problem
    cert = jaxsae.certify(late, X, LAM)
    Z = np.asarray(jaxsae.sparse_code(late, X, LAM).codes)
    R = np.asarray(X) - Z @ np.asarray(late.atoms)
    G = R @ np.asarray(late.atoms).T
    # (P) by explicit loops over pairs: both sides, independent of the K×K matmuls.
    for j in range(K):
        for k in range(K):
            if j == k:
                continue
            only_j = (Z[:, j] > 0) & (Z[:, k] == 0)
            lhs = np.sum(Z[only_j, j] * (LAM - G[only_j, k]))
            rhs = LAM * (1 - late.atoms[j] @ late.atoms[k]) * Z[:, j].sum()
            assert abs(lhs - rhs) / N <= 1e-9
            np.testing.assert_allclose(cert.pair_violation[j, k], (lhs - rhs) / N, atol=1e-12)
    assert float(jnp.abs(cert.pair_violation).max()) <= 1e-9
    assert not bool(cert.nested.any())
    assert float(jnp.abs(jaxsae.certify(early, X, LAM).pair_violation).max()) > 1e-6


def test_nested_support_is_flagged_and_descent_direction_lowers_objective():
    """Parent e1 alone on half the points, parent + child e2 on the other half.

    Atoms e1..e6 in d = 8 (same shapes as the main problem, so no recompile);
    atoms 2..5 see no data and are dead.
    """
    rng = np.random.default_rng(1)
    a = rng.uniform(1, 2, N)
    b = np.where(np.arange(N) >= N // 2, rng.uniform(0.5, 1.5, N), 0)
    X = jnp.asarray(np.pad(np.stack([a, b], axis=1), ((0, 0), (0, d - 2))))
    E = jnp.eye(d)[:K]
    D = jaxsae.Dictionary(E)
    cert = jaxsae.certify(D, X, LAM)
    assert cert.nested_pairs() == [(1, 0)]  # the child (atom 1) fires only where the parent does
    assert "nested pair" in cert.verdict
    assert np.asarray(cert.dead).tolist() == [False, False, True, True, True, True]
    zc = np.where(b > 0, b - LAM, 0)  # closed-form child codes (orthonormal atoms)
    np.testing.assert_allclose(cert.code_l1[1], zc.sum(), rtol=1e-12)
    # (P) for (child, parent): the left side is an empty sum, so the violation is −λ‖z_c‖₁/N.
    np.testing.assert_allclose(cert.pair_violation[1, 0], -LAM * zc.sum() / N, rtol=1e-12)

    def F(t):  # rotate the child toward the parent; codes re-optimised (the parent's drop)
        Dt = jaxsae.Dictionary(E.at[1].set(jnp.cos(t) * E[1] + jnp.sin(t) * E[0]))
        sol = jaxsae.sparse_code(Dt, X, LAM)
        return float(jaxsae.objective(Dt, X, sol.codes, LAM)), np.asarray(sol.codes)

    F0, Z0 = F(0.0)
    t = 1e-4
    Ft, Zt = F(t)
    assert Ft < F0
    # The finite-difference slope equals −‖Riemannian gradient‖ = −λ‖z_c‖₁/N.
    np.testing.assert_allclose((Ft - F0) / t, -float(cert.atom_grad_norm[1]), rtol=1e-3)
    np.testing.assert_allclose(cert.atom_grad_norm[1], LAM * zc.sum() / N, rtol=1e-12)
    child = b > 0
    assert Zt[child, 0].sum() < Z0[child, 0].sum()  # the parent's code on the child's points drops


def test_degenerate_pairs_counted_against_closed_form():
    """Orthonormal atoms: z_kn = (x_nk − λ)₊ and g_kn = min(x_nk, λ), so an entry is
    degenerate (z = 0, g = λ) exactly when x_nk = λ."""
    rng = np.random.default_rng(3)
    Xn = rng.uniform(-1, 1, (N, d))
    hit = rng.uniform(size=(N, K)) < 0.05
    Xn[:, :K] = np.where(hit, LAM, Xn[:, :K])
    cert = jaxsae.certify(jaxsae.Dictionary(jnp.eye(d)[:K]), jnp.asarray(Xn), LAM)
    near = np.abs(Xn[:, :K] - LAM) <= 1e-6 * LAM
    assert int(cert.n_degenerate) == int(near.sum()) > 0
    assert "degenerate" in cert.verdict
    np.testing.assert_allclose(cert.code_l1, np.maximum(Xn[:, :K] - LAM, 0).sum(0), rtol=1e-12)


def _huber_np(t, lam):
    return np.where(t <= lam, 0.5 * t * t, lam * t - 0.5 * lam * lam)


def test_wide_bound_closed_form(problem):
    X, _, late = problem
    bias = 0.1 * jnp.arange(d, dtype=X.dtype)
    Xn = np.asarray(X)
    for lam in (0.1, 3.0):
        expect = np.mean(_huber_np(np.linalg.norm(Xn - np.asarray(bias), axis=1), lam))
        np.testing.assert_allclose(jaxsae.wide_bound(X, lam, bias), expect, rtol=1e-13)
    cert = jaxsae.certify(late, X, LAM)
    np.testing.assert_allclose(cert.wide_bound, jaxsae.wide_bound(X, LAM), rtol=1e-13)
    assert float(cert.wide_gap) >= 0


def test_wide_bound_attained_when_every_point_has_its_own_atom(problem):
    """Points are positive multiples of the 6 atoms: each point's direction is an atom."""
    X, _, late = problem
    rng = np.random.default_rng(2)
    scale = rng.uniform(0.05, 2.0, N)  # some below λ (then the code is 0)
    Xo = jnp.asarray(scale[:, None] * np.asarray(late.atoms)[np.arange(N) % K])
    cert = jaxsae.certify(late, Xo, LAM)
    np.testing.assert_allclose(cert.objective, cert.wide_bound, rtol=1e-12)
    assert float(cert.max_residual_norm) <= LAM * (1 + 1e-9)
    assert "globally optimal over all widths" in cert.verdict


def test_global_certificate_fails_and_added_atom_lowers_objective(problem):
    X, _, late = problem
    cert = jaxsae.certify(late, X, LAM)
    assert "first-order stationary" in cert.verdict  # a stationary point of width 6 ...
    R = np.asarray(X) - np.asarray(jaxsae.sparse_code(late, X, LAM).codes) @ np.asarray(late.atoms)
    norms = np.linalg.norm(R, axis=1)
    np.testing.assert_allclose(cert.max_residual_norm, norms.max(), rtol=1e-12)
    assert int(cert.worst_point) == int(norms.argmax())
    assert float(cert.max_residual_norm) > LAM  # ... that (W) shows is not globally optimal
    assert "not globally optimal" in cert.verdict
    # The fresh atom a = r_n/‖r_n‖ with codes (aᵀr_m − λ)₊, other codes fixed (THEORY §5).
    a = np.asarray(cert.add_atom)
    np.testing.assert_allclose(a, R[norms.argmax()] / norms.max(), rtol=1e-12)
    za = np.maximum(R @ a - LAM, 0)
    wider = jaxsae.Dictionary(jnp.concatenate([late.atoms, cert.add_atom[None]]))
    Z7 = jnp.concatenate([jaxsae.sparse_code(late, X, LAM).codes, jnp.asarray(za)[:, None]], axis=1)
    L7 = float(jaxsae.objective(wider, X, Z7, LAM))
    np.testing.assert_allclose(cert.add_atom_gain, (norms.max() - LAM) ** 2 / (2 * N), rtol=1e-10)
    np.testing.assert_allclose(L7, float(cert.objective) - np.sum(za**2) / (2 * N), rtol=1e-12)
    assert L7 <= float(cert.objective) - float(cert.add_atom_gain) + 1e-15
    assert L7 >= float(cert.wide_bound)


def test_residual_decomposition_matches_least_squares(problem):
    X, _, late = problem
    cert = jaxsae.certify(late, X, LAM)
    Z = np.asarray(jaxsae.sparse_code(late, X, LAM).codes)
    A = np.asarray(late.atoms)
    R = np.asarray(X) - Z @ A
    s2 = 0.0
    for n in range(N):
        S = np.flatnonzero(Z[n] > 0)
        if S.size == 0:
            assert float(cert.shrinkage_norm[n]) == 0
            continue
        w, *_ = np.linalg.lstsq(A[S].T, R[n], rcond=None)
        proj = A[S].T @ w  # projection of r_n on span(D_S)
        u, *_ = np.linalg.lstsq(A[S], np.full(S.size, LAM), rcond=None)  # λ D_S G_S⁻¹ 1
        s2 += proj @ proj
        np.testing.assert_allclose(cert.shrinkage_norm[n], np.linalg.norm(u), rtol=1e-10)
        np.testing.assert_allclose(cert.shrinkage_norm[n], np.linalg.norm(proj), atol=1e-9)
        if n < 20:
            s, _, _ = shrinkage_component(late.atoms, jnp.asarray(Z[n]), LAM, K)
            np.testing.assert_allclose(s, u, atol=1e-12)
            np.testing.assert_allclose(s, proj, atol=1e-9)
        bound = LAM * S.size / np.linalg.norm(A[S].sum(0))
        np.testing.assert_allclose(cert.cofire_bound[n], bound, rtol=1e-12)
        assert np.linalg.norm(R[n]) >= bound * (1 - 1e-9)
    np.testing.assert_allclose(cert.residual_norm, np.linalg.norm(R, axis=1), rtol=1e-12)
    np.testing.assert_allclose(cert.shrinkage_share, s2 / np.sum(R * R), rtol=1e-8)
    assert 0 < float(cert.shrinkage_share) < 1


def test_chunked_jit_vmap_over_lambda_and_masks_equal_eager(problem):
    X, early, _ = problem
    lams = jnp.array([0.1, 0.2])
    masks = jnp.array([[True] * K, [True, True, False, True, False, True]])

    @jax.jit
    @jax.vmap
    def batched(lam, mask):  # chunks of 128 do not divide N = 400: the padded tail must not count
        return jaxsae.certify(early.with_mask(mask), X, lam, chunk_size=128)

    out = batched(lams, masks)
    for i in range(2):
        Dm = early.with_mask(masks[i])
        ref = jaxsae.certify(Dm, X, lams[i])
        Z = jaxsae.sparse_code(Dm, X, lams[i]).codes
        np.testing.assert_allclose(ref.objective, jaxsae.objective(Dm, X, Z, lams[i]), rtol=1e-12)
        for name in ("objective", "code_gap", "wide_bound", "bias_grad_norm", "max_residual_norm"):
            np.testing.assert_allclose(
                getattr(out, name)[i], getattr(ref, name), rtol=1e-9, atol=1e-14
            )
        for name in ("atom_alignment", "atom_grad_norm", "code_l1", "firing_rate", "pair_violation",
                     "cofire", "residual_norm", "shrinkage_norm", "add_atom"):  # fmt: skip
            np.testing.assert_allclose(
                getattr(out, name)[i], getattr(ref, name), rtol=1e-8, atol=1e-12
            )
        assert int(out.worst_point[i]) == int(ref.worst_point)
    off = ~np.asarray(masks[1])
    assert not np.asarray(out.firing_rate[1])[off].any()
    assert not np.asarray(out.pair_violation[1])[off].any()
    with pytest.raises(ValueError, match="batched"):
        _ = out.verdict


@pytest.mark.slow
def test_given_codes_report_amortisation_gap(problem):
    X, _, late = problem
    Z = jaxsae.sparse_code(late, X, LAM).codes
    Zs = jnp.maximum(Z + 0.01 * jnp.sin(jnp.arange(N * K, dtype=X.dtype)).reshape(N, K), 0)
    cert = jaxsae.certify(late, X, LAM, codes=Zs, chunk_size=128)
    expect = jaxsae.objective(late, X, Zs, LAM) - jaxsae.objective(late, X, Z, LAM)
    np.testing.assert_allclose(cert.amortisation_gap, expect, rtol=1e-9)
    assert 0 <= float(cert.amortisation_gap_error) <= 1e-12  # Z* certified by its duality gap
    np.testing.assert_allclose(cert.objective, jaxsae.objective(late, X, Zs, LAM), rtol=1e-12)
    # the mean duality gap bounds the amortisation gap from above (§1)
    assert float(cert.code_gap) >= float(cert.amortisation_gap) > 0
    assert "amortisation gap" in cert.verdict
    with pytest.raises(ValueError, match="codes must have shape"):
        jaxsae.certify(late, X, LAM, codes=Zs[:, :3])


@pytest.mark.slow
def test_float32_matches_float64(problem):
    X, _, late = problem
    c64 = jaxsae.certify(late, X, LAM)
    c32 = jaxsae.certify(late.astype(jnp.float32), X.astype(jnp.float32), LAM)
    # stated tolerances for float32: objective and (W) to 1e-5 relative, alignment ≤ 1e-3
    np.testing.assert_allclose(c32.objective, c64.objective, rtol=1e-5)
    np.testing.assert_allclose(c32.wide_bound, c64.wide_bound, rtol=1e-6)
    assert float(c32.atom_alignment.max()) <= 1e-3
    np.testing.assert_allclose(c32.firing_rate, c64.firing_rate, atol=2 / N)
    assert "first-order stationary" in c32.verdict


def test_input_errors(problem, unchecked):
    X, _, late = problem
    with pytest.raises(ValueError, match="features"):
        jaxsae.certify(late, X[:, :3], LAM)
    with pytest.raises(ValueError, match="lam"):
        jaxsae.certify(late, X, -1.0)
    with pytest.raises(ValueError, match="chunk_size"):
        jaxsae.certify(late, X, LAM, chunk_size=0)


def _sections_agree(cert):
    """The first- and second-order sections of one report use one vocabulary."""
    so, s = cert.second_order, cert.summary()
    fo = so.first_order
    assert fo.n_degenerate == so.n_degenerate == int(s["n_degenerate"])
    np.testing.assert_allclose(fo.code_kkt, s["code_kkt"], rtol=1e-12)
    np.testing.assert_allclose(fo.atom_gradient, s["atom_grad_norm_max"], rtol=1e-12)
    np.testing.assert_allclose(fo.alignment, s["atom_alignment_max"], rtol=1e-12)
    np.testing.assert_allclose(fo.value, float(cert.stationarity), rtol=1e-12)
    assert fo.stationary == ("first-order stationary to" in cert.verdict)
    text = cert.table()
    for label, value in fo.rows()[:4]:  # the same label shows the same number in both
        assert text.count(label) == 2 and text.count(value) >= 2, label
    assert so.verdict in cert.verdict
    assert "first order only" not in cert.verdict  # the verdict list is built once


def test_report_sections_agree_at_an_optimum_and_for_given_codes(problem):
    """certify(second_order=True) at a stationary point, and with perturbed given codes
    (KKT violated, degenerate pairs by the shared definition): the two sections never
    disagree, field by field; at the optimum the second order is a verified minimum."""
    X, _, late = problem
    cert = jaxsae.certify(late, X, LAM, second_order=True)
    _sections_agree(cert)
    assert cert.second_order.verified and "strict local minimum (verified" in cert.verdict
    js = cert.to_json()["second_order"]
    assert js["verified"] is True and js["lower_bound"] > 0
    Z = np.asarray(jaxsae.sparse_code(late, X, LAM).codes)
    Z = np.maximum(Z * (1 + 0.05 * np.random.default_rng(0).standard_normal(Z.shape)), 0)
    bad = jaxsae.certify(late, X, LAM, codes=Z, second_order=True)
    _sections_agree(bad)
    assert not bad.second_order.verified
    assert "not first-order stationary (code KKT residual" in bad.second_order.verdict


def test_cofire_bound_counts_against_numpy(problem):
    """‖r_n‖ ≥ λ|S|/‖Σ_{k∈S} d_k‖ at KKT codes (§2): no violation at the optimum; given
    codes that co-fire with too small a residual are counted exactly as numpy counts them."""
    X, _, late = problem
    cert = jaxsae.certify(late, X, LAM)
    assert int(cert.n_cofire_violations) == 0
    A = np.asarray(late.atoms)
    Z = np.asarray(jaxsae.sparse_code(late, X, LAM).codes) * 1.3  # overshoot: residuals shrink
    given = jaxsae.certify(late, X, LAM, codes=Z)
    R = np.asarray(X) - Z @ A
    S = Z > 0
    bound = LAM * S.sum(1) / np.maximum(np.linalg.norm(S @ A, axis=1), 1e-300)
    want = int(np.sum(S.any(1) & (np.linalg.norm(R, axis=1) < (1 - float(given.tol)) * bound)))
    assert want > 10 and int(given.n_cofire_violations) == want
    assert given.summary()["n_cofire_violations"] == want
    assert f"{want} point(s) violate the co-firing bound" in given.verdict
    assert "points below the co-firing bound" in given.table()


@pytest.mark.slow
def test_cofiring_antipodal_pair_is_flagged(problem):
    """Atoms d and −d: optimal codes never fire both on one point (§2); given codes that do are flagged."""
    X, _, late = problem
    atoms = late.atoms.at[1].set(-late.atoms[0])
    D = jaxsae.Dictionary(atoms)
    Z = jaxsae.sparse_code(D, X, LAM).codes
    assert not bool(jnp.any((Z[:, 0] > 0) & (Z[:, 1] > 0)))
    Zs = Z.at[:5, 0].add(0.5).at[:5, 1].add(0.5)  # co-firing on 5 points, same reconstruction
    cert = jaxsae.certify(D, X, LAM, codes=Zs, chunk_size=128)
    assert cert.antipodal_pairs() == [(0, 1)]
    np.testing.assert_allclose(cert.cofire[0, 1], np.sum((Zs[:, 0] > 0) & (Zs[:, 1] > 0)), rtol=0)
    assert "antipodal pair(s) co-fire" in cert.verdict
    # the co-firing costs exactly λ·(0.5 + 0.5) per point on 5 of N points
    np.testing.assert_allclose(cert.amortisation_gap, LAM * 5 / N, rtol=1e-9)


def test_new_lambda_does_not_retrace(problem, monkeypatch):
    """λ is an array argument: a second call with the same shapes must not trace again."""
    from jaxsae.certificates import _first_order

    traces = []
    original = _first_order._assemble
    monkeypatch.setattr(_first_order, "_assemble", lambda *a: traces.append(1) or original(*a))
    X, _, late = problem
    jaxsae.certify(late, X, 0.1)
    first = len(traces)
    cert = jaxsae.certify(late, X, 0.37)
    assert first <= 1 and len(traces) == first
    np.testing.assert_allclose(cert.lam, 0.37)


@pytest.mark.slow
def test_support_cap_overflow_is_counted(problem):
    X, _, late = problem
    Z = np.asarray(jaxsae.sparse_code(late, X, LAM).codes)
    cert = jaxsae.certify(late, X, LAM, support_cap=1)
    sizes = (Z > 0).sum(1)
    assert int(cert.n_overflow) == int((sizes > 1).sum()) > 0
    single = sizes == 1  # exact there: λ d_k for the one active atom
    np.testing.assert_allclose(np.asarray(cert.shrinkage_norm)[single], LAM, rtol=1e-12)
    with pytest.raises(ValueError, match="support_cap"):
        jaxsae.certify(late, X, LAM, support_cap=0)


@pytest.mark.slow
def test_duplicate_atoms_singular_gram_not_nested(problem):
    """Atom 1 := atom 0 and atom 0's codes split evenly over the two: same objective,
    singular G_S on those points, (R) equal to the pseudo-inverse value, and no
    nesting defect (nesting forces equal atoms, which these are)."""
    X, _, late = problem
    ref = jaxsae.certify(late, X, LAM)
    D = jaxsae.Dictionary(late.atoms.at[1].set(late.atoms[0]), mask=jnp.arange(K) != 2)
    Z = jaxsae.sparse_code(late.with_mask(D.mask.at[1].set(False)), X, LAM).codes
    Zs = Z.at[:, 1].set(Z[:, 0] / 2).at[:, 0].set(Z[:, 0] / 2)
    cert = jaxsae.certify(D, X, LAM, codes=Zs, chunk_size=128)
    fires = np.asarray(Z[:, 0] > 0)
    assert int(cert.n_singular) == int(fires.sum()) > 0
    assert cert.nested_pairs() == []
    np.testing.assert_allclose(cert.amortisation_gap, 0, atol=1e-12)
    ref_masked = jaxsae.certify(late.with_mask(D.mask.at[1].set(False)), X, LAM)
    np.testing.assert_allclose(
        cert.shrinkage_norm, ref_masked.shrinkage_norm, rtol=1e-9, atol=1e-12
    )
    assert float(ref.objective) <= float(ref_masked.objective)


def test_optimal_codes_given_equal_solved_and_keep_the_gap_interval(problem):
    """``diagnose`` solves the optimal codes once and passes them (``optimal_codes``, and
    as solved codes with ``amortise=False``): the certificates equal ``certify``'s own
    solves, streamed too; codes that are not optimal still give an interval that holds
    the exact gap."""
    X, early, _ = problem
    Zopt = jaxsae.sparse_code(early, X, LAM).codes
    Zs = jnp.maximum(Zopt + 0.02 * jnp.cos(jnp.arange(N * K, dtype=X.dtype)).reshape(N, K), 0)
    Zbad = jnp.maximum(Zopt + 0.005 * jnp.sin(jnp.arange(N * K, dtype=X.dtype)).reshape(N, K), 0)

    def cert(X=X, **kw):
        return jaxsae.certify(early, X, LAM, chunk_size=150, **kw)

    def pieces(A):
        return [np.asarray(A[i : i + 150]) for i in range(0, N, 150)]

    judged = cert(codes=Zs)
    pairs = [(cert(codes=Zs, optimal_codes=Zopt), judged),
             (cert(codes=Zopt, amortise=False), cert()),
             (cert(pieces(X), codes=pieces(Zs), optimal_codes=pieces(Zopt)), judged)]  # fmt: skip
    for out, ref in pairs:
        assert out.codes_given == ref.codes_given and out.verdict == ref.verdict
        for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(ref), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-14)
    exact = jaxsae.objective(early, X, Zs, LAM) - jaxsae.objective(early, X, Zopt, LAM)
    loose = cert(codes=Zs, optimal_codes=Zbad)
    lo, err = float(loose.amortisation_gap), float(loose.amortisation_gap_error)
    assert err > 1e-6 and lo <= float(exact) - 1e-7 and float(exact) <= lo + err
    with pytest.raises(ValueError, match="together with codes"):
        cert(optimal_codes=Zopt)
    with pytest.raises(ValueError, match="optimal_codes must have shape"):
        cert(codes=Zs, optimal_codes=Zopt[:, :3])
