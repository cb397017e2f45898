"""CLI end to end: `train` and `convert` write what they say; user errors exit 2 in one line."""

import numpy as np
import pytest

import jaxsae
from jaxsae.cli import main


def test_train_dictionary_writes_a_stationary_dictionary(tmp_path, data_file, capsys):
    out = tmp_path / "d.safetensors"
    rc = main(
        [
            "train",
            "--data",
            str(data_file),
            "--dictionary",
            "--width",
            "4",
            "--lam",
            "0.1",
            "--steps",
            "200",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    D = jaxsae.load_dictionary(out)
    X = np.load(data_file)
    cert = jaxsae.certify(D, X, 0.1)
    assert D.n_atoms == 4
    assert float(np.max(cert.atom_grad_norm)) < 1e-6
    line = capsys.readouterr().out  # what the line claims, checked by the certificate above
    assert "saved" in line and "first-order stationary" in line and "≤ tol 1e-10" in line


def test_train_sae_then_convert_both_ways(tmp_path, data_file):
    sae_dir = tmp_path / "sae"
    rc = main(
        [
            "train",
            "--data",
            str(data_file),
            "--sae",
            "relu",
            "--width",
            "8",
            "--lam",
            "0.05",
            "--steps",
            "50",
            "--batch-size",
            "64",
            "--out",
            str(sae_dir),
            "--quiet",
        ]
    )
    assert rc == 0
    sae = jaxsae.load_sae(sae_dir)
    assert sae.W_dec.shape == (8, 6)
    dict_file = tmp_path / "from_sae.safetensors"
    assert main(["convert", "--sae", str(sae_dir), "--to-dictionary", str(dict_file)]) == 0
    D = jaxsae.load_dictionary(dict_file)
    norms = np.linalg.norm(np.asarray(sae.W_dec), axis=1)
    np.testing.assert_allclose(
        np.asarray(D.atoms), np.asarray(sae.W_dec) / norms[:, None], rtol=1e-6
    )
    # Dictionary -> SAE: the encoder is the soft threshold ReLU(Dᵀ(x − b) − λ).
    back = tmp_path / "sae_back"
    assert (
        main(["convert", "--dictionary", str(dict_file), "--to-sae", str(back), "--lam", "0.1"])
        == 0
    )
    sae2 = jaxsae.load_sae(back)
    x = np.load(data_file)[0].astype(np.float32)
    expected = np.maximum(np.asarray(D.atoms) @ (x - np.asarray(D.bias)) - 0.1, 0)
    np.testing.assert_allclose(np.asarray(sae2.encode(x)), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            [
                "train",
                "--data",
                "{missing}",
                "--dictionary",
                "--width",
                "3",
                "--lam",
                "0.1",
                "--out",
                "o",
            ],
            "does not exist",
        ),
        (
            ["train", "--data", "{data}", "--dictionary", "--width", "3", "--out", "o"],
            "--lam is required",
        ),
        (["train", "--data", "{data}", "--sae", "topk", "--width", "3", "--out", "o"], "needs --k"),
        (
            [
                "train",
                "--data",
                "{data}",
                "--dictionary",
                "--width",
                "3",
                "--lam",
                "-1",
                "--out",
                "o",
            ],
            "lam must be",
        ),
        (["convert", "--dictionary", "{missing}", "--to-sae", "o"], "does not exist"),
        (["convert", "--sae", "{tmp}", "--to-dictionary", "o"], "sae_weights.safetensors"),
    ],
)
def test_user_errors_exit_2_with_one_line(tmp_path, data_file, capsys, argv, message):
    subs = {
        "{missing}": str(tmp_path / "missing.npy"),
        "{data}": str(data_file),
        "{tmp}": str(tmp_path),
    }
    argv = [subs.get(a, a) for a in argv]
    argv = [str(tmp_path / a) if a == "o" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert message in err
