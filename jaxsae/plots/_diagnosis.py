"""Figures of a diagnosis: (A) per atom, the effective λ per latent, the nearest optimum."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def alignment_figure(alignment, tol: float, *, title: str = "(A) alignment error per atom"):
    """Atoms ranked by ``‖d_k − c_k/(λ‖z_k‖₁)‖`` (log scale), with the tolerance."""
    a = np.asarray(alignment, float)
    order = np.argsort(-a)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.bar(np.arange(a.size), np.maximum(a[order], 1e-17), color="tab:blue", width=1.0)
    ax.axhline(tol, color="tab:red", ls="--", label=f"tol {tol:.0e}")
    ax.set_yscale("log")
    ax.set_xlabel("atoms, ranked (worst first)")
    ax.set_ylabel("alignment error (A)")
    if a.size <= 40:
        ax.set_xticks(np.arange(a.size), [str(k) for k in order], fontsize=7)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    return fig


def effective_lam_figure(median, q25, q75, lam: float, *, title: str = "Effective λ per latent"):
    """Per latent, the median of ``g_kn = d_kᵀ r_n`` over its active points with its
    quartiles (sorted by median), against λ (where an optimum puts every one of them)."""
    med = np.asarray(median, float)
    keep = np.flatnonzero(np.isfinite(med))
    order = keep[np.argsort(med[keep])]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    x = np.arange(order.size)
    lo, hi = med[order] - np.asarray(q25)[order], np.asarray(q75)[order] - med[order]
    ax.errorbar(x, med[order], yerr=[lo, hi], fmt="o", ms=3, lw=0.8, label="median, quartiles")
    ax.axhline(lam, color="tab:red", ls="--", label=f"λ = {lam:.4g}")
    ax.set_xlabel("latents with an active point, sorted by median")
    ax.set_ylabel("g_kn over active points")
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    return fig


def nearest_figure(cosine, before, after, moved_cos: float, *, title: str = "Nearest optimum"):
    """Left: cos(model atom, nearest-optimum atom), ranked; right: firing rates before and
    after (atoms that die sit on the x-axis)."""
    cos = np.asarray(cosine, float)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    order = np.argsort(cos)
    a.bar(np.arange(cos.size), cos[order], width=1.0, color="tab:green")
    a.axhline(moved_cos, color="tab:red", ls="--", label=f"moved below {moved_cos:g}")
    a.set_ylim(min(0.0, cos.min() - 0.05), 1.02)
    a.set_xlabel("atoms, ranked (most moved first)")
    a.set_ylabel("cos(model atom, optimum atom)")
    a.legend(loc="lower right")
    before, after = np.asarray(before, float), np.asarray(after, float)
    b.scatter(before, after, s=10, c=np.where(cos < moved_cos, "tab:red", "tab:blue"))
    top = max(before.max(initial=0), after.max(initial=0)) * 1.05 or 1.0
    b.plot([0, top], [0, top], color="gray", lw=0.8)
    b.set_xlabel("firing rate, model")
    b.set_ylabel("firing rate, nearest optimum")
    b.set_title("red: moved atoms", fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
