"""Figures of a width × λ sweep: objective and gap to the bound (W) vs width, L0 vs λ.

Takes a ``SweepResult`` (or anything with its columns) and returns a matplotlib
``Figure``; seeds are averaged, with min–max bands.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _group(key, value):
    """Mean, min and max of ``value`` for each distinct ``key`` (over seeds)."""
    keys = np.asarray(sorted(set(key.tolist())))
    groups = [value[key == k] for k in keys]
    return keys, *(np.array([f(g) for g in groups]) for f in (np.mean, np.min, np.max))


def sweep_figure(result, *, title: str = "Sweep"):
    """Three panels: objective and F_∞ vs width; gap to (W) vs width (log); L0 vs λ."""
    width = np.asarray(result.width)
    lam = np.asarray(result.lam)
    obj, bound, gap, l0 = (
        np.asarray(getattr(result, c)) for c in ("objective", "bound", "gap", "l0")
    )
    converged = np.asarray(getattr(result, "converged", np.ones_like(width, bool)), bool)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for lm in sorted(set(lam.tolist())):
        sel = np.isclose(lam, lm)
        w, m, lo, hi = _group(width[sel], obj[sel])
        (line,) = axes[0].plot(w, m, "o-", label=f"λ={lm:g}")
        axes[0].fill_between(w, lo, hi, color=line.get_color(), alpha=0.2)
        axes[0].axhline(bound[sel].mean(), color=line.get_color(), ls="--", lw=1)
        w, m, lo, hi = _group(width[sel], np.maximum(gap[sel], 1e-300))
        axes[1].plot(w, m, "o-", color=line.get_color(), label=f"λ={lm:g}")
        axes[1].fill_between(w, lo, hi, color=line.get_color(), alpha=0.2)
        bad = sel & ~converged  # runs that stopped before the first-order tolerance
        for ax, v in ((axes[0], obj), (axes[1], np.maximum(gap, 1e-300))):
            ax.scatter(width[bad], v[bad], marker="x", s=40, color="tab:red", zorder=4,
                       label="not converged" if lm == min(lam) and bad.any() else None)  # fmt: skip
    for wd in sorted(set(width.tolist())):
        sel = width == wd
        x, m, lo, hi = _group(lam[sel], l0[sel])
        axes[2].errorbar(x, m, yerr=[m - lo, hi - m], fmt="o-", label=f"K={wd}")
    axes[0].set(xlabel="width K", ylabel="objective F (dashed: bound F∞ of (W))", xscale="log")
    axes[1].set(
        xlabel="width K", ylabel="F − F∞ (gap to the wide limit)", xscale="log", yscale="log"
    )
    axes[2].set(xlabel="λ", ylabel="L0 (mean active atoms)", xscale="log")
    ticks = sorted(set(width.tolist()))
    for ax in axes[:2]:  # the widths themselves, not 4×10⁰
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
