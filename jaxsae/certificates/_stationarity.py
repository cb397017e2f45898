"""One vocabulary for both certificates: supports, degenerate pairs and stationarity.

The first-order certificate (``certify``) and the second-order one
(``second_order``) report the same quantities with the same definitions and the
same tolerance, so one report never disagrees with itself (THEORY §1, §2, §4):

- **strict support** ``S⁻``: ``z_kn > tol·λ``;
- **degenerate pair**: ``z_kn ≤ tol·λ`` and ``|λ − g_kn| ≤ tol·λ`` (``S⁺ = S⁻ ∪``
  degenerate pairs); an entry with ``z = 0`` and ``g > λ(1 + tol)`` is a KKT
  violation, not a degenerate pair;
- **code KKT residual**: ``max_{k,n} |min(z_kn, λ − g_kn)| / λ`` (units of λ);
- **atom gradient**: ``max_k ‖(I − d_kd_kᵀ) c_k‖ / N`` over live atoms, the largest
  per-atom Riemannian gradient norm of L (``c_k = Σ_n z_kn r_n``);
- **alignment error (A)**: ``max_k ‖d_k − c_k/(λ‖z_k‖₁)‖`` over live atoms;
- **stationarity**: the largest of the code KKT residual, the alignment error and,
  with a free bias, ``‖Σ_n r_n‖/(Nλ)``; stationary when it is ``≤ tol``.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp


def strict_support(Z, lam, tol, mask):
    """``S⁻``: the entries ``z_kn > tol·λ`` of unmasked atoms."""
    return mask & (Z > tol * lam)


def degenerate_pairs(Z, G, lam, tol, mask):
    """Degenerate pairs ``z_kn ≤ tol·λ``, ``|λ − g_kn| ≤ tol·λ`` (``G``: correlations ``g``)."""
    return mask & (Z <= tol * lam) & (jnp.abs(lam - G) <= tol * lam)


class Stationarity(eqx.Module):
    """The first-order numbers both certificates report (definitions in the module doc).

    Attributes:
        objective: ``L(D, Z, b)`` of the codes used (per-point mean).
        dual_objective: ``L − mean duality gap``: a lower bound on ``F(D, b)`` (§1).
        code_kkt: max code KKT residual (units of λ).
        n_degenerate: number of degenerate pairs.
        atom_gradient: max per-atom Riemannian gradient norm over live atoms.
        alignment: max alignment error (A) over live atoms.
        bias_gradient: ``‖Σ_n r_n‖/N``.
        free_bias, lam, tol: whether the bias is judged; λ; the tolerance.
    """

    objective: float
    dual_objective: float
    code_kkt: float
    n_degenerate: int
    atom_gradient: float
    alignment: float
    bias_gradient: float
    free_bias: bool
    lam: float
    tol: float

    @property
    def value(self) -> float:
        """The stationarity residual judged against ``tol``."""
        out = max(self.code_kkt, self.alignment)
        return max(out, self.bias_gradient / self.lam) if self.free_bias else out

    @property
    def stationary(self) -> bool:
        return self.value <= self.tol

    def reason(self) -> str:
        """Why it is not stationary (the largest offending term), in the report's words."""
        if self.code_kkt > self.tol:
            return f"code KKT residual {self.code_kkt:.2g} > tol {self.tol:.0e}"
        if self.alignment > self.tol:
            return f"alignment error (A) {self.alignment:.2g} > tol {self.tol:.0e}"
        return f"bias gradient {self.bias_gradient:.2g} > tol·λ"

    def rows(self) -> list[tuple[str, str]]:
        """Table rows, with the labels ``certify``'s table uses."""
        return [
            ("code KKT residual max (/λ)", f"{self.code_kkt:.2e}"),
            ("degenerate pairs (z ≈ 0, g ≈ λ, tol·λ)", f"{self.n_degenerate}"),
            ("max alignment error (A), live atoms", f"{self.alignment:.2e}"),
            ("max_k ‖grad_k L‖ (Riemannian, per atom)", f"{self.atom_gradient:.2e}"),
            ("stationarity (max of the above /λ; tol)", f"{self.value:.2e} ({self.tol:.0e})"),
        ]
