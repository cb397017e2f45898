"""Figure of the family tree of atoms across widths (THEORY §5).

One row per width; an edge joins each atom to its parent, darker for a higher
cosine (a key says so); atoms created by a split are red, the atom with the largest
split score of each level is ringed (the prediction of which atom splits first). Atoms
carry their indices when a level has at most 40; the legend sits outside the tree.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _layout(tree):
    """x-positions per level: children ordered under their parents, evenly spread."""
    xs = [np.linspace(0, 1, tree.widths[0] + 2)[1:-1]]
    for i in range(1, len(tree.widths)):
        p = np.asarray(tree.parents[i])
        order = np.lexsort((~np.asarray(tree.continued[i]), xs[i - 1][p]))
        x = np.empty(len(p))
        x[order] = np.linspace(0, 1, len(p) + 2)[1:-1]
        xs.append(x)
    return xs


def family_tree_figure(tree, *, title: str = "Family tree of atoms across widths"):
    """Draw a ``FamilyTree``; returns a matplotlib ``Figure``."""
    xs = _layout(tree)
    L = len(tree.widths)
    fig, ax = plt.subplots(figsize=(max(6, 0.15 * max(tree.widths)), 1.2 + 1.0 * L))
    for i in range(L):
        y = L - 1 - i
        if i > 0:
            for k, (p, c) in enumerate(zip(tree.parents[i], tree.cosines[i])):
                ax.plot(
                    [xs[i - 1][p], xs[i][k]],
                    [y + 1, y],
                    color="k",
                    alpha=float(np.clip(c, 0.1, 1)),
                    lw=1,
                )
        new = ~np.asarray(tree.continued[i])
        ax.scatter(xs[i][~new], np.full((~new).sum(), y), s=18, color="tab:blue", zorder=3)
        ax.scatter(
            xs[i][new],
            np.full(new.sum(), y),
            s=24,
            color="tab:red",
            zorder=3,
            label="new (split)" if i == 1 else None,
        )
        if tree.widths[i] <= 40:
            for k in range(tree.widths[i]):
                ax.annotate(str(k), (xs[i][k], y), xytext=(0, 6), textcoords="offset points",
                            ha="center", fontsize=6, color="0.25")  # fmt: skip
        if i < L - 1 and tree.predicted[i] >= 0:
            k = tree.predicted[i]
            ax.scatter(
                [xs[i][k]],
                [y],
                s=120,
                facecolors="none",
                edgecolors="tab:orange",
                lw=2,
                zorder=4,
                label="largest split score" if i == 0 else None,
            )
    ax.set_yticks(range(L), [f"K={w}" for w in reversed(tree.widths)])
    ax.set_xticks([])
    ax.set_ylim(-0.5, L - 0.5)
    ax.set_title(title)
    if L > 1:
        from matplotlib.lines import Line2D

        handles, labels = ax.get_legend_handles_labels()
        for c in (1.0, 0.5):
            handles.append(Line2D([], [], color="k", alpha=c, lw=1))
            labels.append(f"edge: cos to parent {c:g}")
        ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  borderaxespad=0)  # fmt: skip
    fig.tight_layout()
    return fig
