"""The second-order certificate: the Riemannian Hessian's smallest eigenvalues (THEORY §4).

At a regular point (no degenerate pairs ``z_kn ≈ 0, g_kn ≈ λ``, every active Gram
``G_{S_n}`` invertible) the reduced objective ``F`` is smooth and a first-order
stationary ``(D, b)`` is a strict local minimum iff the Riemannian Hessian is
positive definite on the tangent space. With degenerate pairs, near the point
``F_{S⁺} ≤ F ≤ F_{S⁻}`` (``S⁻``: strict supports; ``S⁺``: degenerate pairs added;
all three share value and gradient), so the curvature of ``F`` is bracketed by
``λ_min(Hess F_{S⁺}) ≤ λ_min(Hess F_{S⁻})``: the first positive proves a strict
local minimum, the second negative points to a saddle.

How each claim is proved (``_second_order_result``): up to ``dense_max`` tangent
dimensions the Hessian is assembled from Hessian-vector products in an orthonormal
tangent basis and a Cholesky factorisation with a rounding margin proves a lower
bound on λ_min (``_verify``); a saddle is proved by evaluating ``F`` along the
eigenvector (``_descent``). Above ``dense_max`` Lanczos estimates λ_min.

Dead atoms (used by no point) and masked atoms are left out of the tangent
space: ``F`` does not depend on them near a regular point (flat directions).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Real

from .._streaming import is_streamable
from .._typing import ArrayLike, Chunks
from ..models._dictionary import Dictionary
from ..solvers._inputs import data_lam_codes
from ._descent import proved_decrease
from ._first_order import default_certify_tol, first_order_measures
from ._hessian import (
    RiemannianHessian,
    frozen_support,
    riemannian_hessian,
    rounding_terms,
)
from ._lanczos import Eigs, smallest_eigs
from ._second_order_result import SecondOrder
from ._stationarity import Stationarity, degenerate_pairs, strict_support
from ._verify import assemble, proved_lower_bound

_DEFAULT_CHUNK = 4096  # points per HVP chunk: big enough for BLAS, bounded memory
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


@eqx.filter_jit
def _supports(dictionary, X, codes, lam, tol):
    """Strict supports ``S⁻``, ``S⁺ = S⁻ ∪`` degenerate pairs (``_stationarity``)."""
    mask = dictionary.mask
    Z = jnp.where(mask, codes, 0)
    g = (X - dictionary.bias - Z @ dictionary.atoms) @ dictionary.atoms.T
    strong = strict_support(Z, lam, tol, mask)
    plus = strong | degenerate_pairs(Z, g, lam, tol, mask)
    return Z, strong, plus, jnp.sum(plus & ~strong), jnp.max(jnp.sum(plus, axis=1))


@eqx.filter_jit
def _measures(fs, H, dictionary, strong, gtol):
    """Gram conditioning, dead atoms, the rounding scale and the radial gradient."""
    mask = dictionary.mask
    ginv_norm = jnp.linalg.norm(fs.Ginv, axis=(-2, -1))
    min_gram = 1 / jnp.max(jnp.where(fs.weight > 0, ginv_norm, 0))
    n_singular = jnp.sum((fs.weight > 0) & ~((ginv_norm * gtol < 1) & jnp.isfinite(ginv_norm)))
    n_dead = jnp.sum(mask & ~jnp.any(strong, axis=0))
    terms = jax.vmap(rounding_terms, in_axes=(None, None, 0, 0, 0, 0, 0, 0, None))
    rounding = jnp.sum(
        terms(dictionary.atoms, dictionary.bias, fs.X, fs.weight, fs.z, fs.idx, fs.active,
              fs.Ginv, fs.n_points)
    )  # fmt: skip
    radial = jnp.max(jnp.abs(jnp.sum(dictionary.atoms * H.grad_atoms, axis=1)))
    return min_gram, n_singular, n_dead, rounding, radial


def _prepare(dictionary, X, lam, Z, chunk, tol):
    Z, strong, plus, n_deg, cap = _supports(dictionary, X, Z, lam, jnp.asarray(tol, X.dtype))
    n_deg, cap = int(n_deg), max(1, int(cap))
    fs = frozen_support(dictionary, X, Z, lam, strong, cap, chunk)
    used = dictionary.mask & jnp.any(strong, axis=0)
    H = riemannian_hessian(fs, dictionary, lam, used)
    gtol = jnp.asarray(gram_tol(dictionary.dtype), dictionary.dtype)
    min_gram, n_singular, n_dead, rounding, radial = jax.device_get(
        _measures(fs, H, dictionary, strong, gtol)
    )
    H_plus, rounding_plus = H, rounding
    if n_deg:
        fs_plus = frozen_support(dictionary, X, Z, lam, plus, cap, chunk)
        H_plus = riemannian_hessian(
            fs_plus, dictionary, lam, dictionary.mask & jnp.any(plus, axis=0)
        )
        rounding_plus = jax.device_get(_measures(fs_plus, H_plus, dictionary, plus, gtol)[3])
    n_used = dictionary.n_atoms - int(n_dead) - int(jnp.sum(~dictionary.mask))
    prep = Prepared(
        n_deg, int(n_singular), float(min_gram), int(n_dead), n_used, float(rounding),
        float(rounding_plus), float(radial),
    )  # fmt: skip
    return prep, H, H_plus


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


def second_order(
    dictionary: Dictionary,
    X: Real[ArrayLike, "N d"] | Chunks,
    lam,
    *,
    codes: Real[ArrayLike, "N K"] | Chunks | None = None,
    chunk_size: int | None = None,
    n_eigs: int = 1,
    tol: float = 1e-4,
    max_iter: int = 400,
    key=None,
    first_order_tol: float | None = None,
    dense_max: int = DENSE_MAX,
    progress: bool = False,
    _first: Stationarity | None = None,
) -> SecondOrder:
    """Second-order certificate of ``(D, b)`` for ``F(D, b) = min_{Z≥0} L`` (THEORY §4).

    Finds the smallest eigenvalues of the Riemannian Hessian on the tangent space of
    ``Ob(d, K)`` (× ``R^d`` when ``dictionary.free_bias``), checks regularity and
    states a verdict in which every sentence is proved or labelled an estimate.
    Up to ``dense_max`` tangent dimensions the Hessian is assembled from HVPs and a
    Cholesky factorisation with a rounding margin proves ``lower_bound``; above it
    Lanczos with full reorthogonalisation estimates λ_min. A negative eigenvalue is
    checked by evaluating ``F`` along its eigenvector.

    Args:
        dictionary: the dictionary at which to certify.
        X: data ``(N, d)``.
        lam: λ > 0.
        codes: optimal codes ``(N, K)`` (default: ``sparse_code`` at tight tolerance).
        chunk_size: points per chunk in the HVPs (bounded memory for large N).
        n_eigs: how many of the smallest eigenpairs to return.
        tol: relative accuracy of the Lanczos eigenvalues.
        max_iter: Lanczos iterations at most (memory ``max_iter × K d``).
        key: PRNG key of the Lanczos start (default ``jax.random.key(0)``).
        first_order_tol: the tolerance of the shared first-order vocabulary
            (degenerate pairs, stationarity), default ``certify``'s: 1e-6 (float64)
            or 1e-3 (float32).
        dense_max: largest tangent dimension that is assembled and proved.
        progress: progress bars over the data passes and Lanczos steps (streamed X only).

    A ``numpy.memmap``, a list of ``(n_i, d)`` chunks or an iterator of chunks as
    ``X`` is streamed (``second_order_stream``): memory bounded by ``chunk_size``.

    Returns:
        A ``SecondOrder`` with ``min_eigenvalue``, ``lower_bound``, ``verified``,
        ``eigenvectors``, ``regular``, ``verdict`` and ``table()``.

    Example:
        >>> res = jaxsae.second_order(D, X, 0.1)
        >>> res.verified, res.verdict
        (True, 'strict local minimum (verified: Riemannian Hessian positive definite, ...')
    """
    if n_eigs < 1 or max_iter < 1:
        raise ValueError(f"n_eigs and max_iter must be ≥ 1, got {n_eigs} and {max_iter}.")
    if not 0 < tol < 1:
        raise ValueError(f"tol is a relative accuracy in (0, 1), got {tol}.")
    if int(dense_max) < 0:
        raise ValueError(f"dense_max must be ≥ 0, got {dense_max}.")
    if is_streamable(X):  # memmap / chunk list / iterator: bounded memory
        from ._second_order_stream import second_order_stream

        return second_order_stream(
            dictionary, X, lam, codes=codes, chunk_size=chunk_size, n_eigs=n_eigs, tol=tol,
            max_iter=max_iter, key=key, first_order_tol=first_order_tol, dense_max=dense_max,
            progress=progress, _first=_first,
        )  # fmt: skip
    key = jax.random.key(0) if key is None else key
    X, lam, Z = data_lam_codes(dictionary, X, lam, codes, chunk_size)
    N = X.shape[0]
    ftol = default_certify_tol(dictionary.dtype) if first_order_tol is None else first_order_tol
    chunk = min(N, _DEFAULT_CHUNK if chunk_size is None else int(chunk_size))
    first = (
        first_order_measures(dictionary, X, lam, Z, ftol, chunk_size) if _first is None else _first
    )
    prep, H, H_plus = _prepare(dictionary, X, lam, Z, chunk, float(ftol))
    if prep.n_used == 0 and not dictionary.free_bias:
        raise ValueError("No atom is used by any point: the tangent space is empty. Lower lam.")
    K, d = dictionary.atoms.shape
    dim = int(H.tangent.dimension())
    cap = int(H.fs.idx.shape[-1])
    if dim <= dense_max:
        batch = hvp_batch(chunk, cap, d)

        def spectrum(H, k, rounding):
            basis = np.asarray(H.tangent.basis(int(jnp.sum(H.tangent.space))))
            return dense_spectrum(lambda V: _mvs(H, V), basis, k, N, rounding, prep.radial,
                                  dictionary.dtype, batch)  # fmt: skip

        e, lower, error = spectrum(H, n_eigs, prep.rounding)
        e_plus = e
        if H_plus is not H:  # the proof is about S⁺ (F ≥ F_{S⁺} near the point)
            e_plus, lower, error = spectrum(H_plus, 1, prep.rounding_plus)
        method = "dense"
    else:
        e = _lanczos(H, n_eigs, tol, max_iter, key)
        e_plus = e if H_plus is H else _lanczos(H_plus, 1, tol, max_iter, key)
        lower, error, method = -np.inf, np.nan, "lanczos"
    decrease = (np.nan, np.nan)
    if wants_descent_check(e, first, prep, lower):
        vec = e.vectors[0]
        decrease = proved_decrease(
            dictionary, X, lam, vec[: K * d].reshape(K, d), vec[K * d :], chunk
        )
    return build(
        e, e_plus, lower, error, prep, first, K, d, method=method, dimension=dim,
        dense_max=int(dense_max), tol=tol, decrease=decrease,
    )  # fmt: skip


@eqx.filter_jit
def _mvs(H: RiemannianHessian, V):
    return jax.vmap(H.flat_mv)(V)


def _lanczos(H: RiemannianHessian, n_eigs, tol, max_iter, key) -> Eigs:
    t = H.tangent
    return smallest_eigs(
        H.flat_mv, t.flat_project, t.atoms.size + t.atoms.shape[1], int(t.dimension()),
        n_eigs=n_eigs, tol=tol, max_iter=max_iter, key=key, dtype=t.atoms.dtype,
    )  # fmt: skip


def hessian_operator(
    dictionary: Dictionary, X: Real[ArrayLike, "N d"], lam, *, codes=None, chunk_size=None
) -> RiemannianHessian:
    """The matrix-free Riemannian Hessian of THEORY §4 at ``(D, b)``.

    ``H.mv(Xi, bdot)`` applies it to a tangent direction (``(K, d)`` atoms part,
    ``(d,)`` bias part; inputs are projected onto the tangent space first);
    ``H.operator()`` wraps it as a symmetric ``lineax.FunctionLinearOperator``.
    Uses the strict frozen supports ``S⁻`` (valid at a regular point).
    """
    X, lam, Z = data_lam_codes(dictionary, X, lam, codes, chunk_size)
    chunk = min(X.shape[0], _DEFAULT_CHUNK if chunk_size is None else int(chunk_size))
    tol = float(default_certify_tol(dictionary.dtype))
    return _prepare(dictionary, X, lam, Z, chunk, tol)[1]


class DenseHessian(eqx.Module):
    """The Riemannian Hessian as a matrix in an orthonormal tangent basis (small problems).

    ``matrix[i, j] = ⟨b_i, Hess F[b_j]⟩`` with ``basis`` rows ``b_i`` (flat vectors:
    the ``(K, d)`` atom part then the ``(d,)`` bias part).
    """

    matrix: Float[Array, "p p"]
    basis: Float[Array, "p n"]
    operator: RiemannianHessian

    @property
    def eigenvalues(self) -> Float[Array, " p"]:
        return jnp.linalg.eigvalsh(self.matrix)


def second_order_dense(
    dictionary: Dictionary, X: Real[ArrayLike, "N d"], lam, *, codes=None, chunk_size=None
) -> DenseHessian:
    """The full Riemannian Hessian (THEORY §4) in a tangent basis, for small problems.

    Uses the strict supports ``S⁻``; the operator is the one ``second_order`` uses.
    Size ``p = (used atoms)·(d − 1) (+ d with a free bias)``.
    """
    H = hessian_operator(dictionary, X, lam, codes=codes, chunk_size=chunk_size)
    return _dense(H, int(jnp.sum(H.tangent.space)))


@eqx.filter_jit
def _dense(H: RiemannianHessian, n_used: int) -> DenseHessian:
    B = H.tangent.basis(n_used)
    M = B @ jax.vmap(H.flat_mv)(B).T
    return DenseHessian(0.5 * (M + M.T), B, H)
