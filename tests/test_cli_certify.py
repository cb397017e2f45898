"""End-to-end tests of ``jaxsae certify`` on tiny files (run in-process)."""

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import jaxsae
from jaxsae.cli._main import main

SAE_DIR = Path(__file__).parent / "fixtures" / "saelens" / "standard"
d, K, N, LAM = 8, 6, 400, 0.1  # the shapes of test_certify.py: compiled code is shared


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, d))
    D = jaxsae.Dictionary(jnp.asarray(rng.standard_normal((K, d))))
    np.save(tmp_path / "X.npy", X)
    jaxsae.save_dictionary(D, tmp_path / "dict.safetensors")
    return tmp_path, X, D


def test_certify_dictionary_writes_json(files, capsys):
    tmp, X, D = files
    out = tmp / "cert.json"
    argv = ["certify", "--dictionary", str(tmp / "dict.safetensors"), "--data", str(tmp / "X.npy")]
    rc = main([*argv, "--lam", str(LAM), "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "First-order certificate" in printed and "verdict:" in printed
    cert = json.loads(out.read_text())
    assert not list(tmp.glob(".cert.json.*"))  # no temporary file left behind
    for field in ("objective", "code_gap", "code_kkt", "wide_bound", "max_residual_norm"):
        assert field in cert["summary"]
    for field in ("atom_grad_norm", "atom_alignment", "firing_rate", "nested_pairs", "verdict"):
        assert field in cert
    # independent numbers: the objective at optimal codes and the (W) closed form
    Z = jaxsae.sparse_code(D, jnp.asarray(X), LAM).codes
    expect = float(jaxsae.objective(D, jnp.asarray(X), Z, LAM))
    assert cert["summary"]["objective"] == pytest.approx(expect, rel=1e-10)
    t = np.linalg.norm(X, axis=1)
    huber = np.where(t <= LAM, 0.5 * t * t, LAM * t - 0.5 * LAM**2).mean()
    assert cert["summary"]["wide_bound"] == pytest.approx(huber, rel=1e-12)
    assert len(cert["atom_alignment"]) == K
    assert cert["summary"]["max_residual_norm"] == pytest.approx(
        float(np.linalg.norm(X - np.asarray(Z) @ np.asarray(D.atoms), axis=1).max()), rel=1e-10
    )


@pytest.mark.slow
def test_certify_sae_reports_amortisation_gap(tmp_path, capsys):
    X = np.random.default_rng(1).standard_normal((40, d))
    np.save(tmp_path / "X.npy", X)
    out = tmp_path / "cert.json"
    argv = ["certify", "--sae", str(SAE_DIR), "--data", str(tmp_path / "X.npy"), "--lam", "0.05"]
    assert main([*argv, "--out", str(out), "--chunk-size", "16"]) == 0
    cert = json.loads(out.read_text())
    sae = jaxsae.load_sae(SAE_DIR).astype(jnp.float64)
    D, Zs = jaxsae.sae_dictionary(sae), jaxsae.sae_codes(sae, jnp.asarray(X))
    Zopt = jaxsae.sparse_code(D, jnp.asarray(X), 0.05).codes
    gap = jaxsae.objective(D, jnp.asarray(X), Zs, 0.05) - jaxsae.objective(
        D, jnp.asarray(X), Zopt, 0.05
    )
    assert cert["summary"]["amortisation_gap"] == pytest.approx(float(gap), rel=1e-8)
    assert cert["summary"]["objective"] == pytest.approx(
        float(jaxsae.objective(D, jnp.asarray(X), Zs, 0.05)), rel=1e-10
    )
    assert "amortisation gap" in capsys.readouterr().out


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("jaxsae certify: error:")
    return err


def test_bad_inputs_exit_2_with_one_line(files, capsys, tmp_path, unchecked):
    tmp, X, _ = files
    dict_path, data = str(tmp / "dict.safetensors"), str(tmp / "X.npy")
    assert (
        main(
            ["certify", "--dictionary", dict_path, "--data", str(tmp / "nope.npy"), "--lam", "0.1"]
        )
        == 2
    )
    assert "does not exist" in _error_line(capsys)
    assert main(["certify", "--dictionary", dict_path, "--data", data, "--lam", "-1"]) == 2
    assert "lam" in _error_line(capsys)
    np.save(tmp / "X3.npy", X[:, :3])
    assert (
        main(["certify", "--dictionary", dict_path, "--data", str(tmp / "X3.npy"), "--lam", "0.1"])
        == 2
    )
    assert "features" in _error_line(capsys)
    assert main(["certify", "--sae", str(tmp), "--data", data, "--lam", "0.1"]) == 2
    _error_line(capsys)
    bad_out = str(tmp / "missing_folder" / "c.json")
    assert (
        main(
            ["certify", "--dictionary", dict_path, "--data", data, "--lam", "0.1", "--out", bad_out]
        )
        == 2
    )
    assert "does not exist" in _error_line(capsys)
    with pytest.raises(SystemExit) as exc:
        main(["certify", "--dictionary", dict_path, "--data", data])  # no --lam
    assert exc.value.code == 2
