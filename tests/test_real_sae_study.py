"""The real-SAE study (``notebooks/real_sae_study.py``) at small size: one layer, widths 8
and 16, 360 tokens. Its own asserts check what THEORY proves (certified dictionaries at
optima, §7's numbers 0.17000 / 0.139296 / F∞ = 0.123062); here we check its figures.

In a file of its own so that ``--dist loadfile`` runs it beside the other notebooks: it
takes ~70 s alone on 2 quiet cores (~100 s beside another test worker), two thirds of it
compiling (MiniLM, the vmapped sweep, six diagnoses at two widths, two certified
dictionaries, the synthetic-control sweep). A certified dictionary reuses the programs
its width's SAE compiled (``free_bias`` is a value)."""

from test_notebooks import run_notebook

FIGURES = [
    "distance_to_optimum.png",
    "absorption_vs_width.png",
    "family_tree.png",
    "antipodal_and_residuals.png",
    "synthetic_control.png",
]


def test_real_sae_study_runs_and_writes_figures(tmp_path):
    run_notebook("real_sae_study", FIGURES, tmp_path)
