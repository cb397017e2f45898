"""``diagnose`` in planted worlds where every answer is known in closed form.

World: atoms ±u₁, ±u₂ (orthonormal u in R⁶), points ``a d_k ± e`` with noise ``e ⟂
span(u)`` in twins. With a ReLU encoder ``W_enc = Dᵀ``, ``b_enc = −λ`` the codes are
``(a − λ) e_k`` exactly: the lasso solution (orthonormal active atom, KKT by hand),
``c_k = λ‖z_k‖₁ d_k`` (the twins cancel) and ``Σ r_n = 0`` (the ± atoms cancel), so the
decoder is a first-order optimum with exact encoder codes.
"""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxsae

LAM = 0.1


def _world():
    rng = np.random.default_rng(0)
    d = 6
    U = np.eye(d)[:2]
    atoms = np.concatenate([U, -U])  # +u1, +u2, −u1, −u2
    noise = 0.02 * rng.standard_normal((3, d))
    noise[:, :2] = 0
    X = [
        a * atom + s * e for atom in atoms for a in (0.5, 0.8, 1.1) for e in noise for s in (1, -1)
    ]
    return atoms, np.asarray(X)


def _sae(atoms, lam=LAM):
    K, d = atoms.shape
    return jaxsae.SAE(
        W_enc=jnp.asarray(atoms.T), b_enc=jnp.full(K, -lam), W_dec=jnp.asarray(atoms),
        b_dec=jnp.zeros(d), activation=jaxsae.ReLU(),
    )  # fmt: skip


def test_exact_optimum_every_answer_is_known():
    atoms, X = _world()
    dg = jaxsae.diagnose(_sae(atoms), X, LAM, max_steps=50)
    out = dg.to_json()
    assert abs(out["amortisation_gap"]) < 1e-14 and out["amortisation_gap_error"] < 1e-14
    np.testing.assert_allclose(out["effective_lam"]["median"], LAM, atol=1e-10)
    np.testing.assert_allclose(out["effective_lam"]["iqr"], 0, atol=1e-10)
    assert out["effective_lam"]["lam_kkt"] == pytest.approx(LAM, abs=1e-12)
    assert max(out["alignment_error"]) < 1e-10
    near = out["nearest_optimum"]
    assert near["stationary"] and near["died"] == [] and near["moved"] == []
    np.testing.assert_allclose(near["atom_cosine"], 1, atol=1e-10)
    assert abs(near["objective_after"] - near["objective_before"]) < 1e-12
    # every point sits on one atom: rates 1/4 each, false fires and misses none
    np.testing.assert_allclose(out["latents"]["firing_rate"], 0.25)
    assert sum(out["latents"]["false_fire_rate"]) == 0 and sum(out["latents"]["miss_rate"]) == 0
    # ±u are antipodal dense pairs; the symmetric-direction prediction is exact here
    assert out["antipodal_pairs"]["pairs"] == [[0, 2], [1, 3]]
    assert out["antipodal_pairs"]["cofiring"] == [0.0, 0.0]
    np.testing.assert_allclose(out["antipodal_pairs"]["predicted_rates"], 0.25)
    assert out["dense_latents"] == [0, 1, 2, 3] and out["nested_pairs"] == []
    assert out["cofire_violations"] == 0
    assert any("first-order stationary" in v for v in out["verdicts"])


def test_one_rotated_atom_moves_and_only_it_is_flagged():
    atoms, X = _world()
    theta = 0.3
    rotated = atoms.copy()
    rotated[0] = np.cos(theta) * atoms[0] + np.sin(theta) * np.eye(6)[4]
    dg = jaxsae.diagnose(_sae(rotated), X, LAM, max_steps=300, second_order=True)
    out = dg.to_json()
    # the second-order verdict is the library's own at the learned optimum
    at = jaxsae.second_order(dg.nearest["dictionary"], X, LAM)
    assert out["nearest_optimum"]["second_order"] == at.verdict
    align = np.asarray(out["alignment_error"])
    assert align[0] > 1e-2 and np.all(align[1:] < 1e-8)
    near = out["nearest_optimum"]
    assert near["stationary"] and near["moved"] == [0]
    assert len(near["largest_splits"]) == 4 and len(near["largest_splits"][0]["direction"]) == 6
    cos = np.asarray(near["atom_cosine"])
    np.testing.assert_allclose(cos[0], np.cos(theta), atol=1e-6)  # back to u₁
    np.testing.assert_allclose(cos[1:], 1, atol=1e-8)
    assert list(dg.flagged()) == [0, 1, 2, 3]  # all dense (±u pairs); only 0 has "moved"
    assert [k for k, why in dg.flagged().items() if any("moved" in w for w in why)] == [0]


def test_nested_child_is_an_absorption_candidate():
    p, c = np.eye(4)[0], np.eye(4)[1]
    X = np.asarray(
        [a * p for a in (0.5, 0.9)] * 3 + [a * p + b * c for a in (0.5, 0.9) for b in (0.4, 0.7)]
    )
    sae = _sae(np.stack([p, c]))
    labels = [f"row{i}" for i in range(len(X))]
    dg = jaxsae.diagnose(sae, X, LAM, nearest=False, top=3, tokens=labels)
    out = dg.to_json()
    # top-activating rows over all points: the largest codes, against NumPy's sort
    Z = np.maximum(X @ np.stack([p, c]).T - LAM, 0)
    for k in (0, 1):
        ex = out["examples"][str(k)]
        np.testing.assert_allclose(ex["codes"], np.sort(Z[:, k])[::-1][:3])
        np.testing.assert_allclose(Z[ex["rows"], k], ex["codes"])
        assert ex["tokens"] == [labels[r] for r in ex["rows"]]
    assert out["nested_pairs"] == [
        [1, 0]
    ]  # child c fires only where parent p fires (dead 2, 3: no)
    assert abs(out["amortisation_gap"]) < 1e-14  # orthonormal atoms: the encoder is exact
    assert "nearest_optimum" not in out
    assert dg.flagged() == {0: ["parent of 1", "dense"], 1: ["nested in 0", "dense"]}


def test_topk_sae_without_lam_uses_the_kkt_fit_and_says_so():
    atoms, X = _world()
    sae = _sae(atoms)
    # the same weights as a TopK(1) SAE: identical codes on this world
    topk = jaxsae.SAE(W_enc=sae.W_enc, b_enc=sae.b_enc, W_dec=sae.W_dec, b_dec=sae.b_dec,
                      activation=jaxsae.TopK(1))  # fmt: skip
    dg = jaxsae.diagnose(topk, X, nearest=False)
    assert dg.lam == pytest.approx(LAM, abs=1e-12)
    assert dg.lam_source.startswith("estimated: the λ minimising the KKT residual")
    assert dg.verdicts[0].startswith("λ = 0.1 (estimated")


def test_kkt_fit_lam_against_brute_force():
    from jaxsae.diagnosis._latents import kkt_fit_lam

    rng = np.random.default_rng(1)
    Z = np.maximum(rng.standard_normal((30, 5)), 0)
    G = rng.uniform(0, 0.3, (30, 5))
    lams = np.linspace(0.01, 0.5, 50)
    best, cost = kkt_fit_lam(Z, G, lams)
    brute = [sum(min(z, lam - g) ** 2 if z > 0 else max(g - lam, 0) ** 2
                 for z, g in zip(Z.ravel(), G.ravel(), strict=True)) for lam in lams]  # fmt: skip
    np.testing.assert_allclose(cost, brute, rtol=1e-12)
    assert best == lams[int(np.argmin(brute))]


def test_streamed_diagnosis_equals_in_memory(tmp_path):
    atoms, X = _world()
    np.save(tmp_path / "X.npy", X)
    mm = np.load(tmp_path / "X.npy", mmap_mode="r")
    sae = _sae(atoms)
    a = jaxsae.diagnose(sae, X, LAM, nearest=False).to_json()
    b = jaxsae.diagnose(sae, mm, LAM, nearest=False, chunk_size=16).to_json()

    def same(x, y):
        if isinstance(x, dict):
            assert x.keys() == y.keys()
            for k in x:
                same(x[k], y[k])
        else:
            np.testing.assert_allclose(
                np.asarray(x, float), np.asarray(y, float), rtol=1e-10, atol=1e-14
            )

    for key in ("amortisation_gap", "alignment_error", "wide_gap", "latents", "effective_lam"):
        same(a[key], b[key])
    assert a["examples"] == b["examples"]


def test_a_list_of_chunks_gets_one_line():
    atoms, X = _world()
    with pytest.raises(ValueError, match="not a list or iterator of chunks: np.save them"):
        jaxsae.diagnose(_sae(atoms), [X[:10], X[10:]], LAM)
