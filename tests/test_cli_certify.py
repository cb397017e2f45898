"""End-to-end tests of ``jaxsae certify`` on tiny files (run in-process)."""

import json
from pathlib import Path

import jax
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
    # no --lam, and the file records none (it was saved without lam=)
    assert main(["certify", "--dictionary", dict_path, "--data", data]) == 2
    assert "has no recorded λ; pass --lam" in _error_line(capsys)


def test_certify_streams_a_memmap_from_the_command_line(files, monkeypatch, capsys):
    """``jaxsae certify`` hands ``certify`` the memory map itself (streamed, bounded memory),
    not a copy in memory, and the SAE's codes as a lazy view computed chunk by chunk."""
    tmp, X, D = files
    seen = []
    real = jaxsae.certify

    def spy(dictionary, data, lam, **kw):
        seen.append((type(data), type(kw.get("codes"))))
        return real(dictionary, data, lam, **kw)

    monkeypatch.setattr(jaxsae, "certify", spy)
    argv = ["certify", "--dictionary", str(tmp / "dict.safetensors"), "--data", str(tmp / "X.npy")]
    assert main([*argv, "--lam", str(LAM), "--chunk-size", "64", "--out", str(tmp / "c.json")]) == 0
    assert seen[-1][0] is np.memmap
    cert = json.loads((tmp / "c.json").read_text())
    whole = real(D, jnp.asarray(X), LAM)
    assert cert["summary"]["objective"] == pytest.approx(float(whole.objective), rel=1e-12)
    assert cert["summary"]["atom_alignment_max"] == pytest.approx(
        float(np.max(np.asarray(whole.atom_alignment))), rel=1e-9
    )


def test_train_dictionary_and_sweep_stream_a_memmap_from_the_command_line(files, monkeypatch):
    """``jaxsae train --dictionary`` and ``jaxsae sweep`` pass the memory map itself (the
    streamed learner, in float64), and the dictionary is the in-memory run's."""
    tmp, X, _ = files
    seen = {}
    real_learn, real_sweep = jaxsae.learn_dictionary, jaxsae.sweep

    def learn(data, *a, **kw):
        seen["learn"] = (type(data), kw.get("dtype"))
        return real_learn(data, *a, **kw)

    def sweep(data, **kw):
        seen["sweep"] = (type(data), kw.get("dtype"))
        return real_sweep(data, **kw)

    monkeypatch.setattr(jaxsae, "learn_dictionary", learn)
    monkeypatch.setattr(jaxsae, "sweep", sweep)
    data, out = str(tmp / "X.npy"), str(tmp / "learned.safetensors")
    argv = ["train", "--data", data, "--dictionary", "--width", "3", "--lam", str(LAM)]
    assert main([*argv, "--steps", "30", "--out", out, "--quiet"]) == 0
    assert seen["learn"] == (np.memmap, jnp.float64)
    D = jaxsae.load_dictionary(out)
    ref, _ = real_learn(jnp.asarray(X), 3, LAM, key=jax.random.key(0), max_steps=30, progress=False)
    np.testing.assert_allclose(np.asarray(D.atoms), np.asarray(ref.atoms), atol=1e-8)
    argv = ["sweep", "--data", data, "--widths", "2", "--lams", str(LAM), "--max-steps", "5"]
    assert main([*argv, "--out", str(tmp / "sw"), "--quiet"]) == 0
    assert seen["sweep"] == (np.memmap, jnp.float64)


@pytest.mark.slow
def test_certify_cli_on_a_gigabyte_memmap_peaks_below_half_a_gigabyte_above_the_runtime(tmp_path):
    """Issue 17's measure: ``jaxsae certify`` on a 1 GB float32 ``.npy`` (10⁶ × 256) peaks
    below 0.5 GB of RSS above the runtime's own (the same command on 1000 rows)."""
    import resource
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    D = jaxsae.Dictionary(jnp.asarray(rng.standard_normal((32, 256))))
    jaxsae.save_dictionary(D, tmp_path / "d.safetensors")
    big = np.lib.format.open_memmap(tmp_path / "big.npy", "w+", np.float32, (1_000_000, 256))
    for i in range(0, big.shape[0], 100_000):
        big[i : i + 100_000] = rng.standard_normal((100_000, 256), dtype=np.float32)
    big.flush()
    np.save(tmp_path / "small.npy", np.asarray(big[:1000]))
    del big

    def peak(name):
        cmd = [sys.executable, "-c", (
            "import resource, sys; from jaxsae.cli._main import main; "
            f"rc = main(['certify', '--dictionary', {str(tmp_path / 'd.safetensors')!r}, "
            f"'--data', {str(tmp_path / name)!r}, '--lam', '0.1', '--chunk-size', '4096']); "
            "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)"
        )]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=3000)
        assert out.returncode == 0, out.stderr[-2000:]
        return int(out.stdout.split("PEAK")[-1]) * 1024

    del resource
    runtime, streamed = peak("small.npy"), peak("big.npy")
    print(f"runtime {runtime / 1e9:.3f} GB, 1 GB memmap {streamed / 1e9:.3f} GB")
    assert streamed - runtime < 0.5e9, (runtime, streamed)
