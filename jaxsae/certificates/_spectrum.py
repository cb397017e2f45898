"""The spectral step of the second-order certificate (THEORY §4), for any Hessian.

A Hessian here is a Module with ``tangent`` (``_hessian.Tangent``), ``cap`` (the
largest frozen support), ``flat_mvs(V)`` (products with the rows of ``V``) and
``eigs(...)`` (its Lanczos driver). ``_second_order`` builds one from resident
data (inverse Grams kept), ``_second_order_streamed`` one whose every product is a
pass over streamed data; :func:`spectral_certificate` proves or estimates the
smallest eigenvalue of either the same way:

- up to ``dense_max`` tangent dimensions the Hessian is assembled from products in
  an orthonormal tangent basis and a Cholesky factorisation with a rounding margin
  proves a lower bound on λ_min (``_verify``);
- above it Lanczos estimates λ_min (labelled an estimate);
- a negative eigenvalue at a first-order point is checked by evaluating ``F`` along
  its eigenvector (``_descent``): a proved saddle.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from ._descent import proved_decrease
from ._lanczos import Eigs
from ._second_order_result import SecondOrder
from ._stationarity import Stationarity
from ._verify import assemble, proved_lower_bound

DEFAULT_HVP_CHUNK = 4096  # points per HVP chunk: big enough for BLAS, bounded memory
# Tangent dimensions up to which the Hessian is assembled and proved. Measured on
# 2 CPU cores (benchmarks/second_order.py, "dense" rows): 4096 dims, N = 8192,
# d = 64 assemble, factorise and prove in tens of seconds.
DENSE_MAX = 4096


def gram_tol(dtype) -> float:
    """A Gram counts as singular when ``1/‖G_S⁻¹‖_F`` is below this."""
    return 1e-10 if jnp.dtype(dtype) == jnp.float64 else 1e-5


class Prepared(eqx.Module):
    """What the spectrum needs, from one pass (or one set of streamed passes)."""

    n_degenerate: int
    n_singular: int
    min_gram: float
    n_dead: int
    n_used: int
    rounding: float  # Σ_n of ``rounding_terms`` on S⁻
    rounding_plus: float  # ... on S⁺
    radial: float  # max_k |d_kᵀ∇_k F|


def hvp_batch(chunk: int, cap: int, d: int) -> int:
    """Directions per batched product, so that a batch holds ``≲ 2²⁵`` numbers."""
    return int(max(1, min(256, 2**25 // max(1, chunk * cap * d))))


def dense_spectrum(mvs, basis, n_eigs: int, n_points: int, rounding: float, radial: float,
                   dtype, batch: int):  # fmt: skip
    """``(Eigs, lower_bound, error_bound)`` from the assembled Hessian (module docstring).

    ``error_bound = max(‖M − Mᵀ‖_F, u√p·rounding/N + u(N + d)·radial)``: the
    observed asymmetry, and the first-order a-priori bound of ``rounding_terms``
    (``u``: unit roundoff of the working dtype)."""
    p, n = basis.shape
    M, asym = assemble(mvs, basis, batch)
    theta, Y = np.linalg.eigh(M)
    k = min(n_eigs, p)
    vectors = (Y[:, :k].T @ basis.astype(np.float64)).astype(dtype)
    Hy = np.concatenate([np.asarray(mvs(vectors[i : i + batch])) for i in range(0, k, batch)])
    residuals = np.linalg.norm(Hy - theta[:k, None] * vectors, axis=1)
    u = float(np.finfo(np.dtype(dtype)).eps) / 2
    error = max(asym, u * np.sqrt(p) * rounding / n_points + u * (n_points + n) * radial)
    lower = proved_lower_bound(M, error, float(theta[0]))
    eigs = Eigs(
        jnp.asarray(theta[:k], dtype), jnp.asarray(vectors), jnp.asarray(residuals, dtype), p,
        True, float(theta[-1]),
    )  # fmt: skip
    return eigs, lower, error


def build(e: Eigs, e_plus: Eigs, lower: float, error: float, prep: Prepared, first: Stationarity,
          K: int, d: int, *, method: str, dimension: int, dense_max: int, tol: float,
          decrease=(np.nan, np.nan)) -> SecondOrder:  # fmt: skip
    """The ``SecondOrder`` of the eigenpairs on ``S⁻`` (``e``) and ``S⁺`` (``e_plus``)."""
    regular = prep.n_degenerate == 0 and prep.n_singular == 0
    verified = (
        first.stationary and prep.n_singular == 0 and (lower > 0 or bool(np.isfinite(decrease[0])))
    )
    return SecondOrder(
        min_eigenvalue=e.values[0],
        eigenvalues=e.values,
        eigenvectors=e.vectors[:, : K * d].reshape(-1, K, d),
        bias_eigenvectors=e.vectors[:, K * d :],
        residuals=e.residuals,
        largest_eigenvalue=e.largest,
        lower_eigenvalue=e_plus.values[0],
        lower_bound=float(lower),
        verified=bool(verified),
        method=method,
        tangent_dimension=int(dimension),
        dense_max=int(dense_max),
        error_bound=float(error),
        decrease=float(decrease[0]),
        decrease_step=float(decrease[1]),
        regular=regular,
        n_degenerate=prep.n_degenerate,
        n_singular=prep.n_singular,
        min_gram_eigenvalue=prep.min_gram,
        n_dead=prep.n_dead,
        first_order=first,
        steps=e.steps,
        converged=e.converged,
        tol=float(tol),
    )


def wants_descent_check(e: Eigs, first: Stationarity, prep: Prepared, lower: float) -> bool:
    """Evaluate F along ``eigenvectors[0]`` only where a saddle is possible and matters."""
    theta = float(e.values[0])
    return first.stationary and prep.n_singular == 0 and not lower > 0 and theta < 0


def spectral_certificate(H, H_plus, prep: Prepared, first: Stationarity, dictionary, X, lam, *,
                         n_points: int, chunk: int, n_eigs: int, tol: float, max_iter: int, key,
                         dense_max: int, progress: bool = False) -> SecondOrder:  # fmt: skip
    """The ``SecondOrder`` of ``H`` (frozen supports ``S⁻``) and ``H_plus`` (``S⁺``)."""
    K, d = dictionary.atoms.shape
    dim = int(H.tangent.dimension())
    if dim <= dense_max:
        batch = hvp_batch(chunk, H.cap, d)

        def spectrum(H, k, rounding):
            basis = np.asarray(H.tangent.basis(int(jnp.sum(H.tangent.space))))
            return dense_spectrum(H.flat_mvs, basis, k, n_points, rounding, prep.radial,
                                  dictionary.dtype, batch)  # fmt: skip

        e, lower, error = spectrum(H, n_eigs, prep.rounding)
        e_plus = e
        if H_plus is not H:  # the proof is about S⁺ (F ≥ F_{S⁺} near the point)
            e_plus, lower, error = spectrum(H_plus, 1, prep.rounding_plus)
        method = "dense"
    else:
        e = H.eigs(n_eigs, tol, max_iter, key, progress, "Lanczos")
        e_plus = e
        if H_plus is not H:  # one-sided bound: degenerate pairs added to the supports (§4)
            e_plus = H_plus.eigs(1, tol, max_iter, key, progress, "Lanczos S⁺")
        lower, error, method = -np.inf, np.nan, "lanczos"
    decrease = (np.nan, np.nan)
    if wants_descent_check(e, first, prep, lower):
        vec = np.asarray(e.vectors[0])
        decrease = proved_decrease(
            dictionary, X, lam, vec[: K * d].reshape(K, d), vec[K * d :], chunk
        )
    return build(
        e, e_plus, lower, error, prep, first, K, d, method=method, dimension=dim,
        dense_max=int(dense_max), tol=tol, decrease=decrease,
    )  # fmt: skip
