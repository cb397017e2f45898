"""Optimal one-to-one matching (Hungarian algorithm) in NumPy, for MCC (THEORY §7b)."""

from __future__ import annotations

import numpy as np


def hungarian(cost) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost assignment of the rows of ``cost`` (n, m) to distinct columns.

    Shortest augmenting paths with potentials (Kuhn–Munkres, O(n²m)). When
    ``n > m`` the transpose is solved, so ``min(n, m)`` pairs are returned, as
    ``scipy.optimize.linear_sum_assignment`` does.

    Returns:
        ``(rows, cols)``: matched index arrays, sorted by row.
    """
    C = np.asarray(cost, dtype=np.float64)
    if C.ndim != 2:
        raise ValueError(f"cost must be a 2-d array (n, m), got shape {C.shape}.")
    if not np.isfinite(C).all():
        raise ValueError("cost must be finite; replace NaN/Inf entries (e.g. with a large number).")
    if C.shape[0] > C.shape[1]:
        cols, rows = hungarian(C.T)
        order = np.argsort(rows)
        return rows[order], cols[order]
    n, m = C.shape
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    owner = np.zeros(m + 1, dtype=np.int64)  # owner[j] = row (1-based) matched to column j
    way = np.zeros(m + 1, dtype=np.int64)
    for i in range(1, n + 1):
        owner[0] = i
        j0 = 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = owner[j0]
            free = ~used[1:]
            cur = C[i0 - 1] - u[i0] - v[1:]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            cand = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(cand)) + 1
            delta = cand[j1 - 1]
            u[owner[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if owner[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
    cols = np.flatnonzero(owner[1:])
    rows = owner[1:][cols] - 1
    order = np.argsort(rows)
    return rows[order], cols[order]
