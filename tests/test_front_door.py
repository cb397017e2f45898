"""The front door as a new user meets it: bad input gets one clear line, λ travels
with a saved model, and the commands say whether they did what was asked."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsae
from jaxsae.cli import main


def _train(data_file, out, *extra):
    return main(["train", "--data", str(data_file), "--out", str(out), "--quiet", *extra])


@pytest.mark.parametrize("lam", [-1.0, 0.0])
def test_train_sae_refuses_lam_at_most_zero(lam):
    sae = jaxsae.SAE.init(6, 8, jaxsae.ReLU(), key=jax.random.key(0))
    X = jnp.ones((16, 6))
    with pytest.raises(ValueError, match="lam must be a finite number > 0"):
        jaxsae.train_sae(sae, X, lam=lam, steps=2, batch_size=8, key=jax.random.key(0))
    topk = jaxsae.SAE.init(6, 8, jaxsae.TopK(2), key=jax.random.key(0))
    with pytest.raises(ValueError, match="would be ignored"):
        jaxsae.train_sae(topk, X, lam=0.1, steps=2, batch_size=8, key=jax.random.key(0))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--sae", "relu", "--width", "8", "--lam", "-1"], "--lam must be a number > 0"),
        (["--sae", "relu", "--width", "8", "--lam", "0"], "--lam must be a number > 0"),
        (["--sae", "relu", "--width", "8", "--lam", "0.1", "--steps", "0"], "--steps must be ≥ 1"),
        (["--sae", "topk", "--k", "2", "--width", "8", "--lam", "0.1"], "has no λ"),
    ],
)
def test_train_cli_bad_arguments_get_one_line(tmp_path, data_file, capsys, args, message):
    assert _train(data_file, tmp_path / "out", *args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_train_dictionary_says_whether_it_converged_and_strict_exits_1(tmp_path, data_file, capsys):
    """Not converged: the line says so and --strict exits 1. (The converged line is checked
    against a certificate in test_cli_train_convert.)"""
    out = tmp_path / "d.safetensors"
    base = ["--dictionary", "--width", "4", "--lam", "0.1", "--steps", "2"]
    assert _train(data_file, out, *base, "--strict") == 1
    line = capsys.readouterr().out
    assert "not converged (max Riemannian gradient" in line and "stopped at --steps 2" in line
    assert _train(data_file, out, *base) == 0  # without --strict: saved, rc 0
    assert "not converged" in capsys.readouterr().out and out.exists()


def test_lam_travels_with_a_dictionary_and_certify_says_which_it_used(tmp_path, data_file, capsys):
    import json

    stats = {"center": True, "unit_mean_norm": True, "scale": 0.5, "mean": [0.0] * 6}
    data_file.with_suffix(".json").write_text(json.dumps({"transform": stats}))  # as `jaxsae data`
    out = tmp_path / "d.safetensors"
    assert (
        _train(data_file, out, "--dictionary", "--width", "4", "--lam", "0.1", "--steps", "300")
        == 0
    )
    record = jaxsae.saved_objective(out)
    assert record["lam"] == 0.1 and "THEORY §0" in record["objective"]
    assert record["data_transform"] == {"data": str(data_file), "transform": stats}
    capsys.readouterr()
    j1, j2 = tmp_path / "c1.json", tmp_path / "c2.json"
    assert (
        main(
            [
                "certify",
                "--dictionary",
                str(out),
                "--data",
                str(data_file),
                "--out",
                str(j1),
                "--quiet",
            ]
        )
        == 0
    )
    assert f"λ = 0.1 (recorded in {out})" in capsys.readouterr().out
    assert main(["certify", "--dictionary", str(out), "--data", str(data_file), "--lam", "0.1",
                 "--out", str(j2), "--quiet"]) == 0  # fmt: skip
    assert "λ = 0.1 (given with --lam)" in capsys.readouterr().out

    a, b = json.loads(j1.read_text()), json.loads(j2.read_text())
    assert a["summary"] == b["summary"] and a["lam_source"] != b["lam_source"]


def test_lam_travels_with_an_sae_through_save_load_certify(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((64, 6))
    sae = jaxsae.SAE.init(6, 8, jaxsae.ReLU(), key=jax.random.key(0), dtype=jnp.float64)
    out = jaxsae.train_sae(sae, X, lam=0.05, steps=4, batch_size=16, key=jax.random.key(1),
                           progress=False)  # fmt: skip
    assert out.objective == {"lam": 0.05, "penalty": "L1"}
    jaxsae.save_sae(out.sae, tmp_path / "s", **out.objective, data_transform={"center": False})
    record = jaxsae.saved_objective(tmp_path / "s")
    assert record["lam"] == 0.05 and record["data_transform"] == {"center": False}
    assert jaxsae.saved_lam(None, tmp_path / "s") == (0.05, f"recorded in {tmp_path / 's'}")
    # A JumpReLU's weight multiplies an L0 count: no λ of the joint problem is recorded.
    jump = jaxsae.SAE.init(6, 8, jaxsae.JumpReLU(), key=jax.random.key(0))
    jaxsae.save_sae(jump, tmp_path / "j", lam=0.3, penalty="L0")
    record = jaxsae.saved_objective(tmp_path / "j")
    assert record["lam"] is None and record["penalty_weight"] == 0.3
    with pytest.raises(ValueError, match="penalty L0, which has no λ"):
        jaxsae.saved_lam(None, tmp_path / "j")
    jaxsae.save_sae(jump, tmp_path / "n")
    assert jaxsae.saved_objective(tmp_path / "n") is None
    with pytest.raises(ValueError, match="has no recorded λ; pass --lam"):
        jaxsae.saved_lam(None, tmp_path / "n")


def test_a_dictionary_argument_may_be_an_array_and_mistakes_are_named(unchecked):
    rng = np.random.default_rng(2)
    A, X = rng.standard_normal((8, 4)), rng.standard_normal((20, 4))
    ref = jaxsae.sparse_code(jaxsae.Dictionary(A), X, 0.1).codes
    np.testing.assert_array_equal(np.asarray(jaxsae.sparse_code(A, X, 0.1).codes), np.asarray(ref))
    # the array's rows are normalised atoms: the objective at those codes is the Dictionary's
    assert float(jaxsae.objective(A, X, ref, 0.1)) == float(
        jaxsae.objective(jaxsae.Dictionary(A), X, ref, 0.1)
    )
    with pytest.raises(ValueError, match=r"Swap them: jaxsae.sparse_code\(dictionary, X"):
        jaxsae.sparse_code(X, jaxsae.Dictionary(A), 0.1)
    sae = jaxsae.SAE.init(4, 8, jaxsae.ReLU(), key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"got an SAE. .*jaxsae.sae_dictionary\(sae\)"):
        jaxsae.certify(sae, X, 0.1)
    with pytest.raises(ValueError, match="X has 5 features but the SAE has 4"):
        jaxsae.amortisation_gap(sae, np.ones((3, 5)), 0.1)
    with pytest.raises(ValueError, match=r"takes a jaxsae.Dictionary or a \(K, d\) array"):
        jaxsae.sparse_code(A[0], X, 0.1)


def test_import_jaxsae_brings_data_and_history_mse_is_the_full_squared_error():
    assert callable(jaxsae.data.image_patches) and callable(jaxsae.data.synthetic.hierarchy)
    rng = np.random.default_rng(3)
    X = jnp.asarray(rng.standard_normal((32, 6)))
    sae = jaxsae.SAE.init(6, 8, jaxsae.ReLU(), key=jax.random.key(0), dtype=jnp.float64)
    out = jaxsae.train_sae(sae, X, lam=0.05, steps=1, batch_size=32, key=jax.random.key(1),
                           lr=0.0, progress=False, log_every=1)  # fmt: skip
    # lr = 0: the logged batch is all of X at the initial (unit-decoder) SAE.
    start = jaxsae.train_sae(sae, X, lam=0.05, steps=0, batch_size=32, key=jax.random.key(1),
                             progress=False).sae  # fmt: skip
    err = np.sum((np.asarray(X) - np.asarray(jax.vmap(start)(X))) ** 2, axis=1).mean()
    np.testing.assert_allclose(out.history["mse"][0], err, rtol=1e-12)


def test_patches_warns_before_a_large_file(tmp_path, capsys, monkeypatch):
    from jaxsae.cli import _data

    monkeypatch.setattr(_data, "_WARN_GB", 0.0)
    assert main(["data", "patches", "--n", "20", "--out", str(tmp_path / "p.npy")]) == 0
    assert "warning: writing 20 × 64 float32 values" in capsys.readouterr().err


def test_convex_progress_path_is_the_same_path():
    X = np.random.default_rng(4).standard_normal((30, 3))
    g = jnp.array([0.0, 0.5])
    a = jaxsae.candidate_path(X, 0.3, g)
    b = jaxsae.candidate_path(X, 0.3, g, progress=True)
    np.testing.assert_array_equal(np.asarray(a.codes), np.asarray(b.codes))
    np.testing.assert_array_equal(np.asarray(a.steps), np.asarray(b.steps))
