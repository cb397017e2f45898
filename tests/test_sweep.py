"""sweep (vmapped widths × λ × seeds), Hungarian matching, family trees, `jaxsae sweep`."""

import csv
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

import jaxsae
from jaxsae.cli._main import main
from jaxsae.learning import _dl_driver

WIDTHS, LAMS = [2, 4], [0.05, 0.1]


def _data():
    rng = np.random.default_rng(3)
    truth = rng.standard_normal((4, 6))
    truth /= np.linalg.norm(truth, axis=1, keepdims=True)
    Z = rng.exponential(1.0, (120, 4)) * (rng.random((120, 4)) < 0.35)
    return Z @ truth + 0.02 * rng.standard_normal((120, 6))


@pytest.fixture(scope="module")
def swept():
    X = _data()
    res = jaxsae.sweep(jnp.asarray(X), widths=WIDTHS, lams=LAMS, seeds=[0])
    return X, res


def test_dictionary_sweep_has_no_sae(swept):
    with pytest.raises(ValueError, match="dictionaries, not SAEs"):
        swept[1].sae(0)


def test_sweep_equals_loop_of_runs(swept):
    X, res = swept
    assert len(res) == 4 and bool(np.all(res.converged))
    for i in (1,):  # width 2 (masked inside K_max = 4), λ = 0.1
        r = res.rows()[i]
        D, hist = jaxsae.learn_dictionary(
            jnp.asarray(X), r["width"], r["lam"], key=jax.random.key(r["seed"])
        )
        np.testing.assert_allclose(
            np.asarray(res.dictionary(i).atoms), np.asarray(D.atoms), atol=1e-8
        )
        assert abs(r["objective"] - float(hist.objective[-1])) < 1e-10
    # The table's columns against independent computations.
    for i, r in enumerate(res.rows()):
        D = res.dictionary(i)
        Z = np.asarray(jaxsae.sparse_code(D, jnp.asarray(X), r["lam"], tol=1e-14).codes)
        Xhat = Z @ np.asarray(D.atoms)
        assert abs(r["objective"] - float(jaxsae.objective(D, X, Z, r["lam"]))) < 1e-9
        t = np.linalg.norm(X, axis=1)
        huber = np.where(t <= r["lam"], 0.5 * t**2, r["lam"] * t - 0.5 * r["lam"] ** 2).mean()
        assert abs(r["bound"] - huber) < 1e-12 and r["gap"] >= 0
        ev = 1 - np.mean(np.sum((X - Xhat) ** 2, 1)) / (
            np.mean(np.sum(X**2, 1)) - np.sum(X.mean(0) ** 2)
        )
        assert abs(r["explained_variance"] - ev) < 1e-8
        assert abs(r["l0"] - (Z > 0).sum(1).mean()) < 1e-12
        assert r["dead"] == int(np.sum(Z.sum(0) == 0))
    # The padded view codes like the run's own width: its masked atoms stay silent.
    P = res.dictionary(1, padded=True)
    assert P.n_atoms == max(WIDTHS) and int(np.sum(np.asarray(P.mask))) == res.rows()[1]["width"]
    Zp = np.asarray(jaxsae.sparse_code(P, jnp.asarray(X), LAMS[1]).codes)
    Zw = np.asarray(jaxsae.sparse_code(res.dictionary(1), jnp.asarray(X), LAMS[1]).codes)
    np.testing.assert_allclose(Zp[:, : Zw.shape[1]], Zw, atol=1e-9)
    assert not Zp[:, Zw.shape[1] :].any()
    # Wider is better at each λ (the sweep is not a copy of one run).
    obj = np.asarray(res.objective)
    assert obj[2] < obj[0] and obj[3] < obj[1]


def test_sweep_compiles_once(swept, traces):
    X, res = swept
    watch, count = traces
    watch(_dl_driver, "_alternating")
    watch(_dl_driver, "_lbfgs")
    jaxsae.sweep(jnp.asarray(X), widths=WIDTHS, lams=[0.05, 0.1], seeds=[0])
    first = count()
    res2 = jaxsae.sweep(jnp.asarray(X), widths=WIDTHS, lams=[0.06, 0.11], seeds=[0])
    assert count() == first > 0  # new λ values, same shapes: no retrace
    assert not np.allclose(np.asarray(res2.objective), np.asarray(res.objective))


def test_sweep_arguments(unchecked):
    X = jnp.asarray(_data())
    with pytest.raises(ValueError, match="learner must be a sweep learner"):
        jaxsae.sweep(X, widths=[2], lams=[0.1], learner="sae")
    with pytest.raises(ValueError, match="lam"):
        jaxsae.sweep(X, widths=[2], lams=[-0.1])


@pytest.mark.parametrize("shape", [(7, 7), (5, 9), (9, 4)])
def test_hungarian_matches_scipy(shape):
    rng = np.random.default_rng(sum(shape))
    for _ in range(5):
        C = rng.standard_normal(shape)
        rows, cols = jaxsae.phenomena.hungarian(C)
        r2, c2 = linear_sum_assignment(C)
        assert len(rows) == min(shape) == len(set(cols.tolist()))
        assert abs(C[rows, cols].sum() - C[r2, c2].sum()) < 1e-12


def _unit(v):
    return v / np.linalg.norm(v)


def test_family_tree_on_constructed_hierarchy():
    e = np.eye(4)
    a, b = e[0], e[1]
    b1, b2 = _unit(e[1] + 0.4 * e[2]), _unit(e[1] - 0.4 * e[2])
    a1, a2 = _unit(e[0] + 0.4 * e[3]), _unit(e[0] - 0.4 * e[3])
    L0 = np.stack([a, b])
    L1 = np.stack([b2, a, b1])  # b split into b1, b2; shuffled
    L2 = np.stack([b1, a2, b2, a1])  # then a split into a1, a2
    dicts = [jaxsae.Dictionary(jnp.asarray(L)) for L in (L0, L1, L2)]
    # Data: category b divides along e2, category a does not (yet): b splits first.
    rng = np.random.default_rng(0)
    c = rng.uniform(1, 2, 60)[:, None]
    X = np.concatenate([c[:20] * a, c[20:40] * b1, c[40:] * b2])
    tree = jaxsae.family_tree(dicts, jnp.asarray(X), 0.1)
    assert tree.widths == [2, 3, 4]
    # Level 1: a continues, one of b1/b2 continues b, the other is new; both have parent b.
    np.testing.assert_array_equal(tree.parents[1], [1, 0, 1])
    assert tree.continued[1].sum() == 2 and tree.continued[1][1]
    np.testing.assert_array_equal(tree.split[0], [1])
    # Level 2: b1 and b2 continue (indices 2 and 0 of level 1), a splits.
    np.testing.assert_array_equal(tree.parents[2], [2, 1, 0, 1])
    np.testing.assert_array_equal(tree.split[1], [1])
    np.testing.assert_allclose(tree.cosines[2], [1, a2 @ a, 1, a1 @ a], atol=1e-12)
    # Split scores (THEORY §5) predict the first split: b, whose points divide along e2.
    s = tree.scores[0]
    assert tree.predicted[0] == 1 and s[1] > 10 * max(s[0], 1e-12)
    assert tree.hits() >= 0.5


def test_cli_sweep_end_to_end(tmp_path, swept):
    X, res = swept
    np.save(tmp_path / "X.npy", X)
    out = tmp_path / "out"
    rc = main(
        [
            "sweep",
            "--data",
            str(tmp_path / "X.npy"),
            "--widths",
            "2,4",
            "--lams",
            "0.05,0.1",
            "--seeds",
            "0",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    table = json.loads((out / "sweep.json").read_text())
    with open(out / "sweep.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(table["rows"]) == len(rows) == 4
    for r, c, ref in zip(table["rows"], rows, res.rows()):
        assert (r["width"], r["lam"]) == (ref["width"], ref["lam"])
        assert abs(r["objective"] - ref["objective"]) < 1e-10
        assert abs(float(c["objective"]) - r["objective"]) < 1e-12
    for name in ("sweep.png", "tree_lam0.05.png", "tree_lam0.1.png"):
        assert (out / name).stat().st_size > 1000
    assert (
        main(
            [
                "sweep",
                "--data",
                str(tmp_path / "X.npy"),
                "--widths",
                "a",
                "--lams",
                "0.1",
                "--out",
                str(out),
            ]
        )
        == 2
    )
