"""The second-order certificate's result and its words (THEORY §4, §8).

Every sentence of ``SecondOrder.verdict`` is either proved by what was computed
or says "estimate":

- *strict local minimum (verified)*: the Riemannian Hessian, assembled densely
  from Hessian-vector products in an orthonormal tangent basis, was proved
  positive definite by a Cholesky factorisation with a rounding margin
  (``_verify.proved_lower_bound``): ``λ_min ≥ lower_bound > 0``, at a first-order
  stationary point (to ``first_order.tol``) whose supports are regular, or on the
  ``S⁺`` supports at a degenerate point, where ``F ≥ F_{S⁺}`` near the point;
- *saddle (verified)*: ``F`` itself, evaluated along the eigenvector of the most
  negative Ritz value, fell below the dual lower bound on ``F`` at the point
  (``decrease`` at ``decrease_step``): a proof by evaluation;
- *estimate*: above ``dense_max`` tangent dimensions only Lanczos ran; a Ritz
  value θ with residual ρ shows that *some* eigenvalue lies in ``[θ − ρ, θ + ρ]``,
  not that none lies below, so a positive θ is reported as an estimate.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._stationarity import Stationarity


class SecondOrder(eqx.Module):
    """Result of ``second_order`` (THEORY §4, per-point-mean convention of §0).

    Attributes:
        min_eigenvalue: smallest eigenvalue of the Riemannian Hessian on the strict
            supports ``S⁻`` (an estimate: dense ``eigh`` or a Lanczos Ritz value).
        eigenvalues: the ``n_eigs`` smallest, ascending; ``residuals``: ``‖Hy − θy‖``.
        eigenvectors: ``(n_eigs, K, d)`` unit tangent directions of the atoms;
            ``bias_eigenvectors``: ``(n_eigs, d)`` their bias parts.
        largest_eigenvalue: the largest eigenvalue (dense) or Ritz value seen.
        lower_eigenvalue: λ_min on the ``S⁺`` supports (degenerate pairs added);
            equals ``min_eigenvalue`` at a regular point. At a degenerate point the
            curvature of F lies in ``[lower_eigenvalue, min_eigenvalue]``.
        lower_bound: a *proved* lower bound on λ_min of the ``S⁺`` Riemannian
            Hessian (``-inf`` when none was proved, e.g. above ``dense_max``).
        verified: whether the verdict's conclusion (strict local minimum or saddle)
            is proved (module docstring).
        method: ``"dense"`` (assembled, ``eigh``, Cholesky proof) or ``"lanczos"``.
        tangent_dimension: dimension of the tangent space (``dense_max``: the cut-off).
        error_bound: the bound on ‖H − M‖ used by the proof (dense only, else NaN).
        decrease, decrease_step: ``F(D, b) − F(D_t, b_t)`` proved along
            ``eigenvectors[0]`` at step ``t`` (NaN when not evaluated or not proved).
        regular, n_degenerate, n_singular: no degenerate pairs and no singular active
            Gram; their counts (``n_degenerate`` by ``_stationarity``'s definition).
        min_gram_eigenvalue: a lower bound ``1/max_n‖G_{S_n}⁻¹‖_F`` on the active Grams.
        n_dead: unmasked atoms used by no point (excluded: flat directions).
        first_order: the ``Stationarity`` numbers of the codes, as ``certify`` reports them.
        steps, converged, tol: iterations (Lanczos steps or the dimension), whether
            the eigenvalues met the relative accuracy ``tol``.
    """

    min_eigenvalue: Float[Array, ""]
    eigenvalues: Float[Array, " n_eigs"]
    eigenvectors: Float[Array, "n_eigs K d"]
    bias_eigenvectors: Float[Array, "n_eigs d"]
    residuals: Float[Array, " n_eigs"]
    largest_eigenvalue: float
    lower_eigenvalue: Float[Array, ""]
    lower_bound: float
    verified: bool
    method: str = eqx.field(static=True)
    tangent_dimension: int = eqx.field(static=True)
    dense_max: int = eqx.field(static=True)
    error_bound: float
    decrease: float
    decrease_step: float
    regular: bool
    n_degenerate: int
    n_singular: int
    min_gram_eigenvalue: float
    n_dead: int
    first_order: Stationarity
    steps: int
    converged: bool
    tol: float

    @property
    def stationary(self) -> bool:
        return self.first_order.stationary

    @property
    def verdict(self) -> str:
        """One line stating what was proved, or labelled an estimate."""
        lmin = float(self.min_eigenvalue)
        notes = f"; {self.n_dead} dead atom(s) excluded (flat directions)" if self.n_dead else ""
        if not self.converged:
            notes += f"; Lanczos not converged to rel. {self.tol:g} after {self.steps} steps"
        if (line := self._inapplicable(lmin, notes)) is not None:
            return line
        where = self._point()
        if self.lower_bound > 0:
            on = "" if self.regular else " on S⁺"
            return (
                f"strict local minimum (verified: Riemannian Hessian{on} positive definite, "
                f"λ_min ≥ {self.lower_bound:.4g} > 0 proved by Cholesky with rounding margin "
                f"{self.error_bound:.1e}, {where}; first-order stationary to "
                f"{self.first_order.value:.1e}){notes}"
            )
        if np.isfinite(self.decrease):
            return (
                f"saddle (verified: F decreases by {self.decrease:.3g} at step "
                f"{self.decrease_step:g} along eigenvectors[0]; λ_min ≈ {lmin:.4g}, {where}){notes}"
            )
        if self.method == "lanczos":
            return self._estimate(lmin, where, notes)
        return (
            f"undecided: λ_min ≈ {lmin:.3g} (proved ≥ {self.lower_bound:.3g}) is not proved "
            f"positive and F did not decrease measurably along its eigenvector {where}{notes}"
        )

    def _inapplicable(self, lmin: float, notes: str) -> str | None:
        """The verdict when the second-order test does not apply (not stationary, or a
        singular active Gram), else ``None``."""
        if not self.stationary:
            irregular = (
                ""
                if self.regular
                else (
                    f"; not regular ({self.n_degenerate} degenerate pairs, {self.n_singular} "
                    "singular active Grams)"
                )
            )
            return (
                f"not first-order stationary ({self.first_order.reason()}): the second-order "
                f"test does not apply; Riemannian Hessian λ_min ≈ {lmin:.4g} on the frozen "
                f"supports (an estimate){irregular}{notes}"
            )
        if self.n_singular:
            return (
                f"not regular: {self.n_singular} point(s) with a singular active Gram; "
                f"λ_min ≈ {lmin:.4g} on the frozen supports (no conclusion){notes}"
            )
        return None

    def _point(self) -> str:
        """Where the curvature was measured: a regular point, or a degenerate one with the
        range of λ_min over the S⁺/S⁻ frozen supports."""
        if self.regular:
            return "at a regular point"
        low = float(self.lower_eigenvalue)
        return (
            f"at a degenerate point ({self.n_degenerate} degenerate pairs; curvature "
            f"λ_min ∈ [{low:.4g}, {float(self.min_eigenvalue):.4g}] over the S⁺/S⁻ frozen supports)"
        )

    def _estimate(self, lmin: float, where: str, notes: str) -> str:
        """The verdict of a Lanczos estimate (above ``dense_max``): never a proof."""
        res = float(jnp.max(self.residuals))
        low = float(self.lower_eigenvalue)
        what = (
            f"an estimate (Lanczos Ritz value, residual {res:.1e}; not verified: tangent "
            f"dimension {self.tangent_dimension} > dense_max {self.dense_max})"
        )
        if low > res:
            return (
                f"λ_min ≈ {low:.4g} > 0, {what}: consistent with a strict local minimum "
                f"{where}{notes}"
            )
        return (
            f"undecided: λ_min ≈ {lmin:.4g}, {what}; F did not decrease measurably along its "
            f"eigenvector {where}{notes}"
        )

    def table(self) -> str:
        """A plain-text table of the numbers behind the verdict."""
        how = (
            f"dense ({self.tangent_dimension} dims, eigh + Cholesky proof)"
            if self.method == "dense"
            else f"Lanczos ({self.steps} steps; {self.tangent_dimension} dims > {self.dense_max})"
        )
        rows = [
            ("method", how),
            ("λ_min on S⁻ (Riemannian Hessian)", f"{float(self.min_eigenvalue):.6g}"),
            ("λ_min on S⁺ (degenerate pairs active)", f"{float(self.lower_eigenvalue):.6g}"),
            ("proved lower bound on λ_min (S⁺)", f"{self.lower_bound:.6g}"),
            ("smallest eigenvalues", ", ".join(f"{float(v):.6g}" for v in self.eigenvalues)),
            ("largest eigenvalue", f"{self.largest_eigenvalue:.6g}"),
            ("eigen-residual ‖Hy − θy‖", f"{float(jnp.max(self.residuals)):.3g}"),
            ("rounding margin of the proof", f"{self.error_bound:.3g}"),
            ("F decrease along eigenvectors[0]", f"{self.decrease:.3g}"),
            ("regular point", str(self.regular)),
            ("points whose active Gram G_S is singular", str(self.n_singular)),
            ("min active-Gram eigenvalue ≥", f"{self.min_gram_eigenvalue:.3g}"),
            ("dead atoms (fire on no point)", str(self.n_dead)),
            *self.first_order.rows(),
        ]
        width = max(len(k) for k, _ in rows)
        head = ["Second-order certificate", "-" * (width + 30)]
        return "\n".join(
            head + [f"{k:<{width}}  {v}" for k, v in rows] + [f"verdict: {self.verdict}"]
        )
