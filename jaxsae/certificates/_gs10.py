"""The λ → 0 checks for bases (GS10; THEORY §4): proved, disproved or undecided.

For a basis ``D`` (K = d atoms) and codes with ``X = ZD`` exactly (rows: points),
perturb the atoms along ``Ḋ = DA`` (tangent: ``diag(GA) = 0``); the codes follow as
``Ż = −AZ`` and the objective's directional derivative decouples by the rows of
``A``. For atom ``k`` let ``B_k = Z_{\\k, Λ_kᶜ}`` (the other atoms' codes on the
points where ``k`` is silent).

- Signed, ``min ‖Z‖₁ s.t. X = ZD``: with ``(c_k)_j = ⟨z_j, sign z_k⟩ − G_jk‖z_j‖₁``,
  the pair is a strict local minimum iff for every k
  ``min{‖u‖_∞ : B_k u = c_k} < 1`` (and ``B_k`` has full row rank).
- Nonnegative, ``min 1ᵀZ1 s.t. X = ZD, Z ≥ 0``: with
  ``a_k = (‖z_j‖₁(1 − d_jᵀd_k))_{j≠k}``, iff for every k ``a_k`` lies in the
  *interior* of the cone spanned by the columns of ``B_k``.

Each atom gets one of three answers, and each answer is a proof:

- **proved**: a point ``u`` (signed) or ``w`` (nonnegative) from an LP, with the
  bound ``σ_min(B_k)`` on how far the exact solution of ``B_k v = target`` can move:
  signed ``‖u‖_∞ + ‖c_k − B_k u‖/σ_min < 1 − tol``; nonnegative: the ball of
  radius ``σ_min·min(w) − ‖a_k − B_k w‖ > tol·scale`` around ``a_k`` lies in the
  cone. So the boundary of the cone, and points just outside it, never pass.
- **disproved**: a descent direction from the dual LP, checked by evaluating the
  objective along the curve ``D(ε) = normalise(D + εḊ)``, ``Z(ε) = X D(ε)⁻¹``
  (feasible, ``Z(ε) ≥ 0`` in the nonnegative case) with a decrease above the
  rounding of the evaluation: ``decrease`` and ``step`` record it.
- **undecided**: neither (e.g. exactly on the boundary, where first order is silent).

The pseudo-inverse value ``‖B_k⁺c_k‖_∞`` (the minimum-norm solution) is the fast
sufficient path of the signed test; the LPs are solved here (``solvers/_lp.py``).
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, Real

from .._typing import ArrayLike
from .._validate import as_float_array, check_finite, check_rank
from ..solvers._lp import linprog

PROVED, UNDECIDED, DISPROVED = 1, 0, -1
_WORDS = {PROVED: "proved", UNDECIDED: "undecided", DISPROVED: "disproved"}
_EPS = float(np.finfo(np.float64).eps)


class GS10Check(eqx.Module):
    """Per-atom GS10 λ → 0 answers (THEORY §4).

    Attributes:
        status: ``(K,)`` 1 = local-minimum condition proved for this atom, −1 =
            disproved (a verified descent direction), 0 = undecided.
        lp_value: ``(K,)`` signed: ``min{‖u‖_∞ : B_k u = c_k}`` (``inf`` if
            ``c_k ∉ range(B_k)``), solved only where the pinv test does not already
            prove the atom's condition (NaN there); nonnegative: ``max{t : a_k = B_k w, w ≥ t·1, t ≤ 1}``
            clipped to ``[−1, 1]``, on the problem scaled by ``max(‖a_k‖, max|B_k|)`` (``−inf``
            when ``B_k`` lacks full row rank).
        pinv_value: ``(K,)`` signed only: ``‖B_k⁺c_k‖_∞`` (``inf`` if ``c_k ∉ range(B_k)``).
        margin: ``(K,)`` the proved slack, relative: signed
            ``1 − ‖u‖_∞ − ‖c_k − B_k u‖/σ_min``; nonnegative: the radius of a ball
            around ``a_k`` inside the cone, over ``scale = max(‖a_k‖, max|B_k|)``.
            ``status`` is 1 iff ``margin > tol`` (−inf when nothing was proved).
        decrease: ``(K,)`` objective decrease verified along the descent direction
            (NaN where there is none); ``step``: the ``ε`` it was measured at.
        direction: ``(K, K, d)`` per atom ``k`` the tangent perturbation ``Ḋ`` of all
            atoms (rows) that lowers the objective (zeros where there is none).
        full_rank: ``(K,)`` whether ``B_k`` has full row rank (needed for a proof).
        nonnegative: which problem was checked; tol: the relative margin required.
    """

    status: Int[Array, " K"]
    lp_value: Float[Array, " K"]
    pinv_value: Float[Array, " K"]
    margin: Float[Array, " K"]
    decrease: Float[Array, " K"]
    step: Float[Array, " K"]
    direction: Float[Array, "K K d"]
    full_rank: Array
    nonnegative: bool = eqx.field(static=True)
    tol: float = eqx.field(static=True)

    @property
    def local_minimum(self) -> bool:
        """Proved: every atom's condition holds with margin (a strict local minimum)."""
        return bool(np.all(np.asarray(self.status) == PROVED))

    @property
    def not_local_minimum(self) -> bool:
        """Disproved: some atom has a verified descent direction."""
        return bool(np.any(np.asarray(self.status) == DISPROVED))

    @property
    def verdict(self) -> str:
        """One line: proved, disproved (with the decrease) or undecided, and nothing more."""
        status = np.asarray(self.status)
        problem = "nonnegative (cone)" if self.nonnegative else "signed (LP)"
        if self.local_minimum:
            return (
                f"strict local minimum (GS10 λ → 0, {problem}): every atom's condition holds "
                f"with margin ≥ {float(np.min(np.asarray(self.margin))):.3g} > tol {self.tol:g}"
            )
        if self.not_local_minimum:
            k = int(np.argmax(status == DISPROVED))
            return (
                f"not a local minimum (GS10 λ → 0, {problem}): moving the atoms along "
                f"direction[{k}] by ε = {float(self.step[k]):.1e} lowers the objective by "
                f"{float(self.decrease[k]):.3g} (evaluated)"
            )
        undecided = np.flatnonzero(status == UNDECIDED).tolist()
        return (
            f"undecided (GS10 λ → 0, {problem}): atoms {undecided} neither pass with margin "
            f"{self.tol:g} nor have a verified descent direction (e.g. on the cone's boundary)"
        )


def _parts(atoms, Z, k, nonnegative):
    """``B_k`` and the target (``a_k`` or ``c_k``) of atom ``k`` (NumPy, float64)."""
    K = atoms.shape[0]
    G = atoms @ atoms.T
    l1 = np.abs(Z).sum(0)
    others = np.array([j for j in range(K) if j != k], dtype=int)
    B = Z[Z[:, k] == 0][:, others].T
    if nonnegative:
        target = l1[others] * (1 - G[others, k])
    else:
        target = np.sign(Z[:, k]) @ Z[:, others] - G[others, k] * l1[others]
    return B, target, others, G


def _sigma_lower(B) -> float:
    """A lower bound on ``σ_min(B)`` (0 when ``B`` is not of full row rank)."""
    rows, cols = B.shape
    if rows == 0:
        return np.inf
    if cols < rows:
        return 0.0
    sv = np.linalg.svd(B, compute_uv=False)
    return max(float(sv[-1]) - 8 * _EPS * np.sqrt(rows * cols) * float(sv[0]), 0.0)


def _signed_margin(B, c, u, sigma) -> float:
    res = float(np.linalg.norm(c - B @ u))
    return 1 - float(np.max(np.abs(u), initial=0.0)) - (res / sigma if res else 0.0)


def _min_inf_norm(B, c, tau_max: float = 1e8):
    """``min{‖u‖_∞ : Bu = c}`` as ``max{τ : B(2x − 1) = τc, 0 ≤ x ≤ 1, 0 ≤ τ ≤ τ_max}``.

    Returns ``(u, ‖u‖_∞, y)``: ``u = (2x − 1)/τ`` (so ``‖u‖_∞ ≤ 1/τ``) and the dual ``y``,
    normalised to ``cᵀy = 1`` with ``‖Bᵀy‖₁ = τ``: when ``τ < 1`` it is a descent
    direction (``cᵀy > ‖Bᵀy‖₁``). One row per atom, one variable per point."""
    r, m = B.shape
    sol = linprog(
        np.r_[np.zeros(m), -1.0], np.c_[2 * B, -c], B @ np.ones(m), np.r_[np.ones(m), tau_max]
    )
    tau = sol.x[m]
    if not tau > 1e-12:  # c ∉ range(B): no u at all
        return np.full(m, np.inf), np.inf, sol.y
    u = (2 * sol.x[:m] - 1) / tau
    return u, float(np.max(np.abs(u), initial=0.0)), sol.y


def _cone_depth(B, a):
    """``max{t : Bw = a, w ≥ t·1, −1 ≤ t ≤ 1}`` with ``w = v + (τ − 1)1``, ``τ ∈ [0, 2]``."""
    r, m = B.shape
    B1 = B @ np.ones(m)
    sol = linprog(np.r_[np.zeros(m), -1.0], np.c_[B, B1], a + B1, np.r_[np.full(m, np.inf), 2.0])
    t = sol.x[m] - 1
    return sol.x[:m] + t, t


def _cone_descent(B, a, rho: float = 1e-8):
    """``max{aᵀy : Bᵀy ≤ −ρ‖b_n‖, ‖y‖_∞ ≤ 1}``, the dual of
    ``min{−ρ‖b‖ᵀw + 1ᵀ(p + q) : Bw + p − q = a, w, p, q ≥ 0}``.

    The small ``ρ`` keeps the direction strictly feasible, so the LP's rounding
    cannot push a silent code below zero along the curve."""
    r, m = B.shape
    cost = np.r_[-rho * np.linalg.norm(B, axis=0), np.ones(2 * r)]
    return linprog(cost, np.c_[B, np.eye(r), -np.eye(r)], a).y


def _decrease(Z, G, k, others, y, nonnegative):
    """Verified decrease of the objective along ``Ḋ = DA`` (row ``k`` of ``A`` is ``y``).

    Tangency fixes ``A_jj = −G_jk y_j``. With ``M = I + εAᵀ`` the new atoms are the
    rows of ``M D`` normalised by ``n_j``, and ``Z(ε) = Z M⁻¹ diag(n)``: column
    ``j ≠ k`` is ``z_j n_j/Δ_j`` (``Δ_j = 1 + εA_jj``) and column ``k`` is
    ``z_k − ε Σ_j z_j y_j/Δ_j``. Each term of ``F(0) − F(ε)`` is formed without
    cancellation; the decrease must exceed a bound on their rounding.
    Returns ``(decrease, ε)`` or ``(nan, nan)``.
    """
    absZ = np.abs(Z)
    l1 = absZ.sum(0)
    g = G[others, k]
    for eps in 10.0 ** -np.arange(1, 13):
        delta = 1 - eps * g * y
        if np.any(delta <= 0):
            continue
        # n_j² − Δ_j² = εy_j(2Δ_j g_j + εy_j): so Δ_j − n_j without cancellation.
        n2_minus = eps * y * (2 * delta * g + eps * y)
        n = np.sqrt(delta**2 + n2_minus)
        other_terms = l1[others] * (-n2_minus / (delta + n)) / delta  # ‖z_j‖₁(1 − n_j/Δ_j)
        w = Z[:, others] @ (y / delta)
        zk, new = Z[:, k], Z[:, k] - eps * w
        if nonnegative and np.any(new < 0):
            continue
        # |a| − |a − b| = (2ab − b²)/(|a| + |a − b|) with b = εw
        b = eps * w
        den = np.abs(zk) + np.abs(new)
        col_terms = np.where(den > 0, (2 * zk * b - b * b) / np.where(den > 0, den, 1), 0)
        terms = np.r_[other_terms, col_terms]
        total = float(terms.sum())
        rounding = (
            16
            * _EPS
            * (terms.size + Z.shape[1])
            * float(np.abs(terms).sum() + eps * (l1[others] @ np.abs(y)))
        )
        if total > rounding:
            return total, float(eps)
    return np.nan, np.nan


def _direction(atoms, G, k, others, y):
    """The tangent perturbation ``Ḋ`` (rows) of row ``k`` of ``A``: ``ḋ_j = A_kj d_k + A_jj d_j``."""
    out = np.zeros_like(atoms)
    out[others] = y[:, None] * atoms[k][None, :] - (G[others, k] * y)[:, None] * atoms[others]
    return out


def _check_atom(atoms, Z, k, nonnegative, tol):
    """``(status, lp_value, pinv_value, margin, decrease, step, direction, full_rank)``."""
    B, target, others, G = _parts(atoms, Z, k, nonnegative)
    r = B.shape[0]
    nan = np.nan
    none = (nan, nan, np.zeros_like(atoms))
    if r == 0:  # a single atom: nothing can move it within a basis
        return (PROVED, 0.0, 0.0, np.inf, *none, True)
    scale = max(float(np.max(np.abs(B), initial=0.0)), float(np.linalg.norm(target)), 1e-300)
    Bs, ts = B / scale, target / scale
    sigma = _sigma_lower(Bs)
    full = sigma > 0
    if nonnegative:
        pinv, lp, margin = nan, -np.inf, -np.inf
        if full:
            w, t = _cone_depth(Bs, ts)
            lp = float(t)
            margin = sigma * float(np.min(w)) - float(np.linalg.norm(ts - Bs @ w))
        descent = None if margin > tol else _cone_descent(Bs, ts)
    else:
        u = np.linalg.lstsq(Bs, ts, rcond=None)[0]
        feasible = np.linalg.norm(Bs @ u - ts) <= 1e-8 * (1 + np.linalg.norm(ts))
        pinv = float(np.max(np.abs(u), initial=0.0)) if feasible else np.inf
        margin = _signed_margin(Bs, ts, u, sigma) if full else -np.inf
        lp, descent = np.nan, None
        if margin <= tol:  # the pinv path is only sufficient: solve the LP
            u_lp, lp, descent = _min_inf_norm(Bs, ts)
            if full and np.isfinite(lp):
                margin = max(margin, _signed_margin(Bs, ts, u_lp, sigma))
    if margin > tol:
        return (PROVED, lp, pinv, margin, *none, full)
    dec, step = _decrease(Z, G, k, others, descent, nonnegative)
    if np.isfinite(dec):
        return (
            DISPROVED,
            lp,
            pinv,
            margin,
            dec,
            step,
            _direction(atoms, G, k, others, descent),
            full,
        )
    return (UNDECIDED, lp, pinv, margin, *none, full)


def gs10_check(
    atoms_basis: Real[ArrayLike, "K d"],
    Z: Real[ArrayLike, "N K"],
    *,
    nonnegative: bool = False,
    tol: float = 1e-9,
) -> GS10Check:
    """GS10's λ → 0 local-minimum conditions for a basis (THEORY §4), decided with proofs.

    Args:
        atoms_basis: ``(K, d)`` atoms (rows) with ``K = d`` (a basis).
        Z: ``(N, K)`` codes of the data ``X = Z D`` (signed, or nonnegative); exact
            zeros mark the silent entries.
        nonnegative: check the interior-cone condition of the nonnegative problem.
        tol: relative margin a proof must clear (module docstring).

    Returns:
        A ``GS10Check``: per atom ``status`` (proved / disproved / undecided) with
        the numbers behind it; ``local_minimum`` (proved), ``not_local_minimum``
        (disproved) and ``verdict``.

    Example:
        >>> chk = jaxsae.gs10_check(jnp.eye(8), Z)
        >>> chk.local_minimum, chk.verdict
    """
    atoms = as_float_array(atoms_basis, "atoms_basis")
    check_rank(atoms, 2, "atoms_basis", "(K, d): one atom per row")
    K, d = atoms.shape
    if K != d:
        raise ValueError(
            f"gs10_check is for bases: atoms_basis must be square (K = d), got {(K, d)}. "
            "For overcomplete dictionaries use second_order at λ > 0."
        )
    Zj = as_float_array(Z, "Z")
    check_rank(Zj, 2, "Z", "(N, K)")
    if Zj.shape[1] != K:
        raise ValueError(f"Z must have {K} columns (one per atom), got shape {tuple(Zj.shape)}.")
    check_finite(Zj, "Z")
    A = np.asarray(atoms, np.float64)
    A = A / np.linalg.norm(A, axis=1, keepdims=True)
    Zn = np.asarray(Zj, np.float64)
    if nonnegative and np.any(Zn < 0):
        raise ValueError(
            "nonnegative=True needs Z ≥ 0, but Z has negative entries. Pass nonnegative=False "
            "for the signed problem."
        )
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}.")
    rows = [_check_atom(A, Zn, k, bool(nonnegative), float(tol)) for k in range(K)]
    status, lp, pinv, margin, dec, step, direction, full = zip(*rows, strict=True)
    dt = atoms.dtype
    return GS10Check(
        status=jnp.asarray(status, jnp.int32),
        lp_value=jnp.asarray(lp, dt),
        pinv_value=jnp.asarray(pinv, dt),
        margin=jnp.asarray(margin, dt),
        decrease=jnp.asarray(dec, dt),
        step=jnp.asarray(step, dt),
        direction=jnp.asarray(np.stack(direction), dt),
        full_rank=jnp.asarray(full),
        nonnegative=bool(nonnegative),
        tol=float(tol),
    )
