"""``jaxsae diagnose`` on the SAEs people have (a SAELens folder, a Gemma Scope
``params.npz``, an EleutherAI sparsify folder) writes the three report files with the
fields the issue lists, and its numbers agree with the Python API's."""

import json
from pathlib import Path

import numpy as np
import pytest

import jaxsae
from jaxsae.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
FIELDS = ("lam", "amortisation_gap", "effective_lam", "alignment_error", "nested_pairs",
          "dense_latents", "antipodal_pairs", "wide_gap", "nearest_optimum", "verdicts")  # fmt: skip
NEAREST = ("stationary", "max_alignment_error", "atom_cosine", "died", "objective_before",
           "objective_after")  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "X.npy"
    np.save(path, rng.standard_normal((96, 8)).astype(np.float32))
    return path


def _gemma(folder: Path) -> Path:
    rng = np.random.default_rng(1)
    folder.mkdir()
    # d_in = 8 and 16 latents, as the SAELens and sparsify fixtures: one compilation serves all
    np.savez(folder / "params.npz", W_enc=rng.standard_normal((8, 16)).astype(np.float32),
             W_dec=rng.standard_normal((16, 8)).astype(np.float32),
             b_enc=np.zeros(16, np.float32), b_dec=np.zeros(8, np.float32),
             threshold=np.full(16, 0.5, np.float32))  # fmt: skip
    return folder


@pytest.mark.parametrize("kind", ["saelens", "gemma_scope", "sparsify"])
def test_diagnose_writes_report_files_for_each_format(tmp_path, data, capsys, kind):
    sae = {
        "saelens": FIXTURES / "saelens" / "standard",
        "gemma_scope": tmp_path / "gemma",
        "sparsify": FIXTURES / "sparsify" / "k3_latents16",
    }[kind]
    if kind == "gemma_scope":
        _gemma(sae)
    out = tmp_path / "report"
    argv = ["diagnose", "--sae", str(sae), "--data", str(data), "--out", str(out),
            "--max-steps", "30", "--quiet"]  # fmt: skip
    if kind == "saelens":
        argv += ["--lam", "0.2"]
    assert main(argv) == 0
    for name in ("report.html", "report.md", "report.json", "alignment.png", "nearest.png"):
        assert (out / name).stat().st_size > 0
    rep = json.loads((out / "report.json").read_text())
    assert set(FIELDS) <= set(rep) and set(NEAREST) <= set(rep["nearest_optimum"])
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "<h2>Verdicts</h2>" in html
    said = capsys.readouterr().out
    if kind == "saelens":
        assert rep["lam"] == 0.2 and rep["lam_source"] == "given with --lam"
    else:  # TopK (sparsify) and JumpReLU (Gemma Scope) have no λ: estimated, and said so
        assert rep["lam_source"].startswith("estimated") and "(estimated" in said
    # the numbers are the API's: the amortisation gap from the library's own certificate
    model = jaxsae.load_sae(sae).astype(np.float64)
    X = np.load(data).astype(np.float64)
    cert = jaxsae.certify(jaxsae.sae_dictionary(model), X, rep["lam"],
                          codes=jaxsae.sae_codes(model, X))  # fmt: skip
    assert rep["amortisation_gap"] == pytest.approx(float(cert.amortisation_gap), rel=1e-9)
    K = len(rep["alignment_error"])
    assert len(rep["effective_lam"]["median"]) == K == len(rep["nearest_optimum"]["atom_cosine"])


def test_diagnose_bad_input_gets_one_line(tmp_path, data, capsys):
    assert (
        main(
            ["diagnose", "--sae", str(tmp_path), "--data", str(data), "--out", str(tmp_path / "o")]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("jaxsae diagnose: error:") and "holds no SAE" in err
    assert len(err.splitlines()) == 1


def test_token_contexts_stay_inside_their_window():
    from jaxsae.cli._diagnose import _Contexts

    tok = {
        "strings": np.array(["to", "be", "or", "not", "to", "be"]),
        "window": np.array([0, 0, 0, 0, 1, 1]),
    }
    ctx = _Contexts(tok, width=2)
    assert ctx[2] == "to be [or] not"  # row 4 is in the next window: not shown
    assert ctx[4] == "[to] be"
