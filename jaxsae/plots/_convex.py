"""Figures for the convex candidate path (THEORY §6): used atoms and objective vs γ.

The only place the convex layer touches matplotlib; files are written atomically.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .._atomic import atomic_path  # noqa: E402


def candidate_path_figure(gammas, n_used, objective, *, wide_value=None, n_points=None):
    """Two panels: number of used candidate atoms vs γ, and the objective vs γ.

    Args:
        gammas, n_used, objective: one value per γ.
        wide_value: the wide-limit bound F_∞ of (W), drawn as a reference line.
        n_points: N, drawn as "one atom per point" on the left panel.
    """
    g = np.asarray(gammas, dtype=float)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax0.plot(g, np.asarray(n_used), "o-")
    if n_points is not None:
        ax0.axhline(n_points, color="gray", ls=":", label="one atom per point")
        ax0.legend()
    ax0.set_xlabel("γ (price per used atom)")
    ax0.set_ylabel("used atoms")
    ax0.set_title("Used atoms vs γ")
    ax1.plot(g, np.asarray(objective, dtype=float), "o-", label="objective")
    if wide_value is not None:
        ax1.axhline(float(wide_value), color="gray", ls=":", label="wide limit F_∞ (W)")
    ax1.set_xlabel("γ")
    ax1.set_ylabel("objective (per-point mean)")
    ax1.set_title("Objective vs γ")
    ax1.legend()
    fig.tight_layout()
    return fig


def save_figure(fig, path) -> None:
    """Save ``fig`` atomically (format from the suffix) and close it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=110, bbox_inches="tight")
    plt.close(fig)
