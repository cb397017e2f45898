"""sweep(learner=SAETrainer()): one program for a grid of SAEs; equals separate runs; honest table."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsae
from jaxsae.learning._sweep_sae import sweep_sae


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((6, 8))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    Z = rng.uniform(0.5, 1.5, (400, 6)) * (rng.uniform(size=(400, 6)) < 0.2)
    return jnp.asarray(Z @ feats + 0.01 * rng.standard_normal((400, 8)))


def test_vmapped_sae_sweep_equals_separate_runs(data):
    grid = [(3, 0.05, 0), (6, 0.1, 1)]
    kw = dict(steps=60, batch_size=64, lr=1e-2, tol=1e-6)
    together = sweep_sae(data, grid, **kw)
    for i, run in enumerate(grid):
        alone = sweep_sae(data, [run], **kw)
        w = run[0]
        # alone has K_max = its own width; together pads to 6 — the first w rows agree.
        np.testing.assert_allclose(
            np.asarray(together.objective[i]), np.asarray(alone.objective[0]), rtol=1e-9
        )
        np.testing.assert_allclose(
            np.asarray(together.atoms[i, :w]), np.asarray(alone.atoms[0, :w]), rtol=1e-8, atol=1e-10
        )


def test_sae_sweep_table_is_bounded_by_the_optimum_and_the_wide_limit(data):
    res = jaxsae.sweep(
        data,
        widths=[2, 6],
        lams=[0.1],
        seeds=[0],
        learner=jaxsae.SAETrainer(steps=300, batch_size=64, lr=1e-2),
        progress=False,
    )
    assert len(res) == 2
    for i in range(2):
        D = res.dictionary(i)
        # Encoder codes are feasible for the joint problem: L(D, Z_enc) ≥ F(D) ≥ F_∞ (W).
        sol = jaxsae.sparse_code(D, data, 0.1)
        F = float(jaxsae.objective(D, data, sol.codes, 0.1))
        assert float(res.objective[i]) >= F - 1e-12
        assert F >= float(res.bound[i]) - 1e-12
        np.testing.assert_allclose(
            float(res.bound[i]), float(jaxsae.wide_bound(data, 0.1, D.bias)), rtol=1e-12
        )
        np.testing.assert_allclose(np.linalg.norm(np.asarray(D.atoms), axis=1), 1, rtol=1e-12)
        assert 0 < float(res.l0[i]) <= int(res.width[i])
        assert 0 < float(res.explained_variance[i]) <= 1
        # sae(i) is the run itself: its own encoder reproduces the table's objective.
        sae = res.sae(i)
        assert sae.W_enc.shape == (8, int(res.width[i]))
        Z = jax.vmap(sae.encode)(data)
        np.testing.assert_allclose(
            float(jaxsae.objective(D, data, Z, 0.1)), float(res.objective[i]), rtol=1e-10
        )
    # The wider SAE fits better, and an SAE is not a certified stationary point.
    assert float(res.objective[1]) < float(res.objective[0])
    assert not bool(res.converged.any())
    assert float(res.alignment.max()) > 1e-3


def test_cli_sweep_method_sae_writes_table(tmp_path, data):
    from jaxsae.cli import main

    np.save(tmp_path / "x.npy", np.asarray(data))
    rc = main(
        [
            "sweep",
            "--data",
            str(tmp_path / "x.npy"),
            "--widths",
            "2,4",
            "--lams",
            "0.1",
            "--method",
            "sae",
            "--sae-steps",
            "50",
            "--out",
            str(tmp_path / "out"),
            "--quiet",
        ]
    )
    assert rc == 0
    import json

    rows = json.loads((tmp_path / "out" / "sweep.json").read_text())["rows"]
    assert [r["width"] for r in rows] == [2, 4]
    assert all(r["objective"] >= r["bound"] for r in rows)
    assert (tmp_path / "out" / "sweep.png").exists()
