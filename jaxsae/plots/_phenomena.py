"""Figures for the phenomena notebooks: a prediction against its measurement.

matplotlib is imported here only (never by the numerical core). Figures are
written atomically (``jaxsae._atomic.atomic_path``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._atomic import atomic_path


def figure_dir(default: str = "notebooks/figures") -> Path:
    """The folder figures go to: ``$JAXSAE_FIGURES`` or ``default`` (created if missing)."""
    path = Path(os.environ.get("JAXSAE_FIGURES", default))
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_figure(fig, path) -> Path:
    """Save ``fig`` to ``path`` atomically (format from the suffix) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def prediction_vs_measurement(
    x,
    predicted,
    measured,
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    labels: tuple[str, str] = ("predicted", "measured"),
    extra: dict | None = None,
    ax=None,
):
    """Plot a predicted curve (line) and measured values (markers) against ``x``.

    ``extra`` maps a label to more measured values (e.g. an SAE next to the joint
    optimum). Returns the figure.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3.5))
    else:
        fig = ax.figure
    x = np.asarray(x)
    ax.plot(x, np.asarray(predicted), "-", color="0.3", label=labels[0])
    ax.plot(x, np.asarray(measured), "o", label=labels[1])
    for i, (name, vals) in enumerate((extra or {}).items()):
        ax.plot(x, np.asarray(vals), "sx^v"[i % 4], label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(frameon=False)
    return fig


def bars(values: dict, *, ylabel: str, title: str = "", ax=None):
    """A bar chart of named numbers (e.g. shares for the joint optimum and an SAE)."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(4, 3.2))
    else:
        fig = ax.figure
    names = list(values)
    ax.bar(names, [float(values[n]) for n in names], color=["C0", "C1", "C2", "C3"][: len(names)])
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return fig
