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
}


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebook_runs_and_writes_figures(name, tmp_path):
    run_notebook(name, NOTEBOOKS[name], tmp_path)


def run_notebook(name, figures, tmp_path):
    """Run ``notebooks/{name}.py`` at small size; check it exits 0 and writes ``figures``."""
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
    for fig in figures:
        path = tmp_path / fig
        assert path.exists(), f"{name} did not write {fig}"
        assert path.stat().st_size > 5000  # a real PNG, not an empty file
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
