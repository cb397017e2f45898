"""Figure of the family tree of atoms across widths (THEORY §5).

One row per width; an edge joins each atom to its parent, darker for a higher
cosine; atoms created by a split are red, the atom with the largest split score
of each level is ringed (the prediction of which atom splits first).
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
    ax.set_title(title)
    if L > 1:
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig
