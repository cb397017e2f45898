"""Figures for reports: atoms, firing rates, per-atom certificates, spectra, widths.

Every function takes plain arrays and returns a matplotlib ``Figure``; this is
the only layer that imports matplotlib (with the non-interactive Agg backend).
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def atoms_figure(atoms, *, max_atoms: int = 64, title: str = "Atoms"):
    """Atoms as image tiles when ``d`` is a square (patches), else as a heat map."""
    atoms = np.asarray(atoms)[:max_atoms]
    K, d = atoms.shape
    side = int(round(math.sqrt(d)))
    if side * side == d:
        cols = int(math.ceil(math.sqrt(K)))
        rows = int(math.ceil(K / cols))
        fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.8, rows * 0.8))
        for ax in np.ravel(axes):
            ax.axis("off")
        for k, ax in zip(range(K), np.ravel(axes)):
            lim = np.abs(atoms[k]).max() or 1
            ax.imshow(atoms[k].reshape(side, side), cmap="RdBu_r", vmin=-lim, vmax=lim)
        fig.suptitle(title)
        return fig
    fig, ax = plt.subplots(figsize=(min(12, 2 + d * 0.15), min(8, 1 + K * 0.12)))
    lim = np.abs(atoms).max() or 1
    im = ax.imshow(atoms, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_xlabel("feature")
    ax.set_ylabel("atom")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def firing_figure(rates_by_name: dict, *, title: str = "Firing rates"):
    """Histogram of per-atom firing rates (fraction of points where z_k > 0)."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(0, 1, 41)
    for name, rates in rates_by_name.items():
        ax.hist(np.asarray(rates), bins=bins, alpha=0.6, label=name)
    ax.set_xlabel("firing rate |A_k| / N")
    ax.set_ylabel("atoms")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title(title)
    return fig


def per_atom_figure(
    series: dict, *, tol: float | None = None, title: str = "Per-atom certificates"
):
    """Per-atom residuals on a log scale (e.g. Riemannian gradient, alignment error (A))."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    floor = 1e-18
    for name, values in series.items():
        v = np.maximum(np.abs(np.asarray(values, dtype=float)), floor)
        ax.semilogy(np.arange(v.size), v, ".", label=name)
    if tol is not None:
        ax.axhline(tol, color="k", ls="--", lw=1, label=f"tolerance {tol:g}")
    ax.set_xlabel("atom k")
    ax.set_ylabel("residual")
    ax.legend(fontsize=8)
    ax.set_title(title)
    return fig


def spectrum_figure(eigenvalues, *, title: str = "Smallest Riemannian-Hessian eigenvalues"):
    """The computed smallest eigenvalues of the Riemannian Hessian (THEORY §4)."""
    ev = np.sort(np.asarray(eigenvalues, dtype=float))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    colors = ["tab:red" if e < 0 else "tab:blue" for e in ev]
    ax.bar(np.arange(ev.size), ev, color=colors)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("index (ascending)")
    ax.set_ylabel("eigenvalue (per-point mean)")
    ax.set_title(title)
    return fig


def width_figure(
    widths, curves: dict, *, bound: float | None = None, title: str = "Objective vs width"
):
    """Objective against dictionary width, with the wide-limit bound (W) as a line."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, values in curves.items():
        ax.plot(widths, values, "o-", label=name)
    if bound is not None:
        ax.axhline(bound, color="k", ls="--", label="wide-limit bound F∞ (W)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(widths), [str(w) for w in widths])
    ax.minorticks_off()
    ax.set_xlabel("width K")
    ax.set_ylabel("objective (per-point mean)")
    ax.legend()
    ax.set_title(title)
    return fig


def paired_bars_figure(values: dict, *, names: tuple[str, str], title: str):
    """One panel per quantity (each on its own axis: they are not comparable), two bars
    each: ``values[quantity] = (first, second)``. Small positive quantities (errors,
    residuals) use a log axis when they span more than two decades."""
    fig, axes = plt.subplots(1, len(values), figsize=(3.2 * len(values), 3.2))
    for ax, (quantity, pair) in zip(np.atleast_1d(axes), values.items()):
        v = np.asarray(pair, float)
        ax.bar(names, v, color=["tab:purple", "tab:green"])
        if np.all(v > 0) and v.max() / v.min() > 100:
            ax.set_yscale("log")
        ax.set_title(quantity, fontsize=9)
        plt.setp(ax.get_xticklabels(), rotation=15, ha="right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
