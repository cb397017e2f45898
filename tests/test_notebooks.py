"""Each phenomenon notebook runs at small size in the default suite; its own asserts
check predictions against measurements, and here we check that its figures were written."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = {
    "residual_structure": ["residual_structure.png"],
    "absorption_splitting": ["absorption.png", "splitting.png"],
    "antipodal_pairs": ["antipodal_pairs.png"],
    "wide_limit": ["wide_limit.png"],
    "real_sae_study": [
        "distance_to_optimum.png",
        "absorption_vs_width.png",
        "family_tree.png",
        "antipodal_and_residuals.png",
        "synthetic_control.png",
    ],
}


# The real-SAE study at small size (one layer, widths 8 and 16, 360 tokens) takes ~90 s on
# 2 cores, nearly all of it compiling: the harvest's MiniLM, the vmapped sweep, six
# diagnoses at two widths, two certified dictionaries and the synthetic-control sweep.
CASES = sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", CASES)
def test_notebook_runs_and_writes_figures(name, tmp_path):
    env = dict(
        os.environ, JAXSAE_NOTEBOOK_SIZE="small", JAXSAE_FIGURES=str(tmp_path), MPLBACKEND="Agg"
    )
    proc = subprocess.run(
        [sys.executable, str(ROOT / "notebooks" / f"{name}.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for fig in NOTEBOOKS[name]:
        path = tmp_path / fig
        assert path.exists(), f"{name} did not write {fig}"
        assert path.stat().st_size > 5000  # a real PNG, not an empty file
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
