"""Proved lower bounds on the smallest eigenvalue of a symmetric matrix (THEORY §4).

A Ritz value only *estimates* λ_min. A proof that a symmetric ``H`` has
``λ_min(H) > s`` comes from a Cholesky factorisation: if ``M`` is the computed
(floating-point) matrix with ``‖H − M‖₂ ≤ E`` and the floating-point Cholesky of
``fl(M − (s + E + c)·I)`` runs to completion, then ``λ_min(H) > s``, where ``c``
bounds the backward error of the factorisation. Rump (BIT 46, 2006,
"Verification of positive definiteness") shows that

    c = γ_{n+1} / (1 − 2γ_{n+1}) · tr|A| (+ an underflow term),   γ_k = k·u/(1 − k·u),

suffices for ``A = M − (s + E)I`` (``u`` the unit roundoff, ``n`` the order): a
successful Cholesky of ``fl(A − cI)`` proves ``A`` positive definite. Here
``c`` is taken 10% larger and uses ``n + 2``, covering the rounding of forming
the shifted diagonal.
"""

from __future__ import annotations

import numpy as np

_U = float(np.finfo(np.float64).eps) / 2  # unit roundoff of float64


def rump_shift(A: np.ndarray) -> float:
    """The Cholesky backward-error shift ``c`` for the symmetric float64 matrix ``A``."""
    n = A.shape[0]
    g = (n + 2) * _U / (1 - (n + 2) * _U)
    return 1.1 * g / (1 - 2 * g) * float(np.sum(np.abs(np.diag(A)))) + 8 * n * (2 * n + 2) * 5e-324


def _cholesky_succeeds(A: np.ndarray) -> bool:
    if not np.isfinite(A).all():
        return False
    try:
        np.linalg.cholesky(A)
    except np.linalg.LinAlgError:
        return False
    return True


def proved_lower_bound(M, error: float, estimate: float) -> float:
    """A proved ``s`` with ``λ_min(H) > s`` for every symmetric ``H``, ``‖H − M‖₂ ≤ error``.

    Tries a few candidates just below ``estimate`` (an approximate λ_min of ``M``),
    each proved by the Cholesky test of the module docstring, and returns the
    largest that succeeds; ``-inf`` if none does (e.g. a non-finite matrix).

    Args:
        M: ``(n, n)`` symmetric float64 matrix (symmetrise first).
        error: a bound on ``‖H − M‖₂`` (0 for ``H = M`` exactly as stored).
        estimate: an approximate smallest eigenvalue of ``M`` (e.g. from ``eigh``).
    """
    M = np.asarray(M, np.float64)
    n = M.shape[0]
    if n == 0:
        return np.inf
    scale = float(np.sum(np.abs(np.diag(M)))) + n * abs(estimate) + n * error
    c0 = rump_shift(np.diag(np.full(n, scale / n)))
    slack = max(abs(estimate), c0, error, 1e-300)
    for s in (
        estimate - 2 * c0 - 1e-10 * slack,
        estimate - 10 * (c0 + error) - 1e-6 * slack,
        estimate - 100 * (c0 + error) - 1e-2 * slack,
    ):
        A = M - (s + error) * np.eye(n)
        c = rump_shift(A)
        if _cholesky_succeeds(A - c * np.eye(n)):
            return float(s)
    return -np.inf


def assemble(mvs, basis: np.ndarray, batch: int) -> tuple[np.ndarray, float]:
    """``M = Bᵀ-coordinates of the operator``: ``M[i, j] = ⟨b_i, H b_j⟩`` for the rows
    ``b_i`` of an orthonormal ``basis``, from batched products ``mvs((k, n)) → (k, n)``.

    Returns the symmetrised float64 ``M`` and ``‖M − Mᵀ‖_F`` of the raw products (a
    lower bound on their rounding error, since the exact operator is symmetric).
    """
    p = basis.shape[0]
    out = np.empty((p, p), np.float64)
    for lo in range(0, p, batch):
        hi = min(lo + batch, p)
        HB = np.asarray(mvs(basis[lo:hi]), np.float64)
        out[:, lo:hi] = basis.astype(np.float64) @ HB.T
    asym = float(np.linalg.norm(out - out.T))
    return 0.5 * (out + out.T), asym
