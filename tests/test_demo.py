"""`jaxsae demo --quick` completes and its report holds the figures and certified verdicts."""

import json

import numpy as np

from jaxsae.cli import main

FIGURES = [
    "atoms",
    "per_atom_certificate",
    "hessian_spectrum",
    "sae_vs_optimum",
    "firing_rates",
    "width_sweep",
    "patch_atoms",
]


def test_quick_demo_writes_report_with_figures_and_verdicts(tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    assert f"{out}/report.md" in capsys.readouterr().out
    text = (out / "report.md").read_text()
    for name in FIGURES:
        png = out / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"({name}.png)" in text
    data = json.loads((out / "report.json").read_text())
    # The verdicts in the text are the computed ones, not a caption's words.
    so = data["second_order"]
    d_verdict = data["dictionary_certificate"]["verdict"]
    assert d_verdict.splitlines()[1].startswith("first-order stationary to")
    assert f"second order: {so['verdict']}" in d_verdict and so["verdict"] in text
    assert "first order only" not in d_verdict  # the second order ran
    if so["verified"] and so["lower_bound"] > 0:  # the caption says what was proved
        assert so["verdict"].startswith("strict local minimum (verified")
        assert min(so["eigenvalues"]) >= so["lower_bound"] > 0
        assert "strict local minimum" in text.split("(hessian_spectrum.png)")[0].splitlines()[-1]
    else:
        assert "strict local minimum (verified" not in text
    # The learned dictionary's certificate is tight; the SAE's is not, and says so.
    d = data["dictionary_certificate"]
    s = data["sae_certificate"]
    assert d["summary"]["code_gap_max"] < 1e-12
    assert s["summary"]["amortisation_gap"] > 0
    sweep = data["width_sweep"]
    objective = np.asarray(sweep["objective"])
    assert np.all(objective >= sweep["wide_bound"] - 1e-12)  # (W) bounds every width
    assert np.all(np.diff(objective) < 0)  # wider optimum, lower objective
