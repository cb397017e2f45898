"""The real-SAE study (``notebooks/real_sae_study.py``) at small size: one layer, widths 8
and 16, 360 tokens. Its own asserts check what THEORY proves (certified dictionaries at
optima, §7's numbers 0.17000 / 0.139296 / F∞ = 0.123062); here we check its figures.

In a file of its own so that ``--dist loadfile`` runs it beside the other notebooks. Its
time is mostly compiling (MiniLM, the vmapped sweep, six diagnoses at two widths, two
certified dictionaries, the synthetic-control sweep). Programs are shared where the work is
the same: a certified dictionary reuses its width's SAE programs (``free_bias`` is a
value), a diagnosis solves its optimal codes once for every pass with ``sparse_code``'s own
program, and the §7 control learns and codes every K as one masked width. Measured
2026-12-08 alone on 2 cores, alternated with the code before those changes: 79-89 s
against 120-123 s (the machine was slow that day: the same old code took 71 s on
2026-12-02); 68-81 s in the suite beside another worker."""

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
