"""The convex large-dictionary problem of THEORY §6, solved by FISTA with a dual certificate.

    min_{Z ≥ 0}  (1/N) [ ½‖X − Z C‖² + λ Σ Z + γ Σ_m ‖z_m‖₂ ]

(batch-first: candidates ``C`` are the rows of an ``(M, d)`` array, codes ``Z`` are
``(N, M)`` and ``z_m`` is column m: the activations of candidate m across points).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, Real

from .._typing import ArrayLike
from .._validate import (
    as_float_array,
    check_data,
    check_finite,
    check_lam,
    check_weight,
)
from ..solvers._fista import fista as run_fista, fista_start, lipschitz
from ..solvers._iterate import AbstractIterativeSolver, iterate
from ..solvers._results import RESULTS
from ._group_prox import dual_value, group_prox, primal_dual

_N_ANDERSON = 5  # residuals kept for dual extrapolation


class CandidateSolution(eqx.Module):
    """Codes on a candidate dictionary and their duality-gap certificate (THEORY §6).

    Attributes:
        codes: ``(N, M)`` nonnegative codes ``Z``.
        used: ``(M,)`` candidates with a nonzero code column (the atoms the
            solution keeps).
        n_used: the number of used candidates.
        objective: the primal value ``P(Z)`` (per-point mean).
        dual: the dual value at the scaled residual ``U = sR``; ``dual ≤ P* ≤ objective``.
        gap: ``objective − dual``, an upper bound on ``P(Z) − P*``.
        steps: FISTA iterations used.
        result: ``RESULTS.successful`` when ``gap ≤ tol · objective``.
        lam, gamma: the weights the problem was solved at.
    """

    codes: Float[Array, "N M"]
    used: Bool[Array, " M"]
    n_used: Int[Array, ""]
    objective: Float[Array, ""]
    dual: Float[Array, ""]
    gap: Float[Array, ""]
    steps: Int[Array, ""]
    result: RESULTS
    lam: Float[Array, ""]
    gamma: Float[Array, ""]

    @property
    def relative_gap(self) -> Float[Array, "*batch"]:
        """``gap / objective`` (the quantity ``tol`` bounds)."""
        return self.gap / jnp.maximum(self.objective, jnp.finfo(self.gap.dtype).tiny)


def default_tol(dtype) -> float:
    """Relative duality-gap tolerance: 1e-10 in float64, 1e-4 in float32."""
    return 1e-10 if jnp.dtype(dtype) == jnp.float64 else 1e-4


def default_candidates(
    X: Real[ArrayLike, "N d"], *, n_sphere: int = 0, key: Array | None = None
) -> Float[Array, "M d"]:
    """The default candidate dictionary: the normalised data points ``x_n/‖x_n‖``
    (a zero point gives an inert zero row), then ``n_sphere`` uniform samples of
    the unit sphere (needs ``key=``). ``M = N + n_sphere``; row n belongs to point n."""
    X = as_float_array(X, "X")
    X = check_data(X, X.shape[-1] if X.ndim == 2 else -1, X.dtype)
    t = jnp.sqrt(jnp.sum(X * X, axis=1, keepdims=True))
    C = X / jnp.where(t > 0, t, 1)
    if n_sphere < 0:
        raise ValueError(f"n_sphere must be ≥ 0, got {n_sphere}.")
    if n_sphere:
        if key is None:
            raise ValueError(
                "n_sphere > 0 samples the sphere at random: pass key=jax.random.key(seed)."
            )
        S = jax.random.normal(key, (n_sphere, X.shape[1]), X.dtype)
        C = jnp.concatenate([C, S / jnp.linalg.norm(S, axis=1, keepdims=True)])
    return C


def _anderson(Rs):
    """Anderson extrapolation of the last residuals ``Rs`` (K+1, N, d) (dual extrapolation,
    Massias et al. 2018): a better guess of the optimal dual point ``U* = R*``."""
    D = (Rs[1:] - Rs[:-1]).reshape(Rs.shape[0] - 1, -1)
    G = D @ D.T
    G = G + (jnp.finfo(Rs.dtype).eps * jnp.trace(G) + jnp.finfo(Rs.dtype).tiny) * jnp.eye(
        G.shape[0], dtype=G.dtype
    )
    c = jnp.linalg.solve(G, jnp.ones(G.shape[0], G.dtype))
    c = c / jnp.sum(c)
    return jnp.tensordot(c, Rs[1:], axes=1)


class _CandidateFista(AbstractIterativeSolver):
    """FISTA blocks of ``check_every`` steps, each followed by the duality gap, with a dual
    point from Anderson extrapolation of the last residuals. The iterate is the FISTA
    state; the solver's state is ``(P, best dual value, gap, iterations, residuals)``."""

    step_size: Array
    tol: Array
    check_every: int = eqx.field(static=True)

    def init(self, fista, args):
        X, C, lam, gamma = args
        Z0 = fista.Z
        P0, D0, gap0 = primal_dual(X, C, Z0, lam, gamma)
        Rs0 = jnp.broadcast_to(X - Z0 @ C, (_N_ANDERSON + 1, *X.shape))
        return P0, D0, gap0, jnp.zeros((), jnp.int32), Rs0

    def step(self, fista, state, args):
        X, C, lam, gamma = args
        _, D_best, _, k, Rs = state
        fista = run_fista(
            lambda Y: -((X - Y @ C) @ C.T), lambda V, s: group_prox(V, lam, gamma, s), fista,
            self.step_size, self.check_every,
        )  # fmt: skip
        Z = fista.Z
        P, D, gap = primal_dual(X, C, Z, lam, gamma)
        Rs = jnp.concatenate([Rs[1:], (X - Z @ C)[None]])
        D_acc = dual_value(X, C, _anderson(Rs), lam, gamma)
        D_acc = jnp.where(jnp.isfinite(D_acc), D_acc, -jnp.inf)  # a failed guess is ignored
        # Every dual feasible point bounds P* from below: keep the best one seen.
        D_best = jnp.maximum(
            D_best, jnp.where(k >= _N_ANDERSON * self.check_every, jnp.maximum(D, D_acc), D)
        )
        gap = jnp.minimum(gap, jnp.maximum(P - D_best, 0))
        return fista, (P, D_best, gap, k + self.check_every, Rs)

    def terminate(self, fista, state, args):
        P, _, gap, _, _ = state
        finite = jnp.isfinite(gap)
        done = gap <= self.tol * jnp.maximum(P, jnp.finfo(gap.dtype).tiny)
        return done | ~finite, RESULTS.where(finite, RESULTS.successful, RESULTS.nonfinite)


@eqx.filter_jit
def _solve(X, C, lam, gamma, Z0, tol, max_steps, check_every: int):
    # ‖C‖₂² from the smaller Gram matrix
    step = 1 / lipschitz(C.T @ C if C.shape[1] <= C.shape[0] else C @ C.T, exact=True)
    solver = _CandidateFista(step, tol, check_every)
    fista0 = fista_start(jnp.maximum(Z0, 0), per_row=False)  # one momentum: it survives the checks
    blocks = (max_steps + check_every - 1) // check_every
    sol = iterate(solver, fista0, (X, C, lam, gamma), max_steps=blocks)
    Z, (P, D, gap, k, _), result = sol.value.Z, sol.state, sol.result
    used = jnp.any(Z > 0, axis=0)
    return CandidateSolution(
        codes=Z,
        used=used,
        n_used=jnp.sum(used.astype(jnp.int32)),
        objective=P,
        dual=D,
        gap=gap,
        steps=k,
        result=result,
        lam=lam,
        gamma=gamma,
    )


def check_gamma(gamma, dtype) -> Array:
    """γ ≥ 0, a finite scalar (may be traced, so ``vmap`` over γ works)."""
    several = "For several values use jax.vmap over gamma or jaxsae.candidate_path."
    return check_weight(gamma, "gamma", dtype, strict=False, several=several)


def prepare(X, candidates, lam, init, tol, max_steps, check_every, n_sphere, key):
    """Validate and fill in the arguments shared by the solver and the path."""
    X = as_float_array(X, "X")
    X = check_data(X, X.shape[-1] if X.ndim == 2 else -1, X.dtype)
    N, d = X.shape
    lam = check_lam(lam, X.dtype)
    if candidates is None:
        C = default_candidates(X, n_sphere=n_sphere, key=key)
        if init is None:
            # The wide-limit codes of (W): optimal at γ = 0, a good start for small γ.
            t = jnp.sqrt(jnp.sum(X * X, axis=1))
            init = (
                jnp.zeros((N, C.shape[0]), X.dtype)
                .at[jnp.arange(N), jnp.arange(N)]
                .set(jnp.maximum(t - lam, 0))
            )
    else:
        if n_sphere:
            raise ValueError("n_sphere only applies to the default candidates (candidates=None).")
        C = as_float_array(candidates, "candidates", dtype=X.dtype)
        if C.ndim != 2 or C.shape[1] != d:
            raise ValueError(
                f"candidates must be an (M, d) array with d = {d} (one candidate atom per row), "
                f"got shape {tuple(C.shape)}."
            )
        check_finite(C, "candidates")
    M = C.shape[0]
    if init is None:
        init = jnp.zeros((N, M), X.dtype)
    init = as_float_array(init, "init", dtype=X.dtype)
    if init.shape != (N, M):
        raise ValueError(f"init must have shape (N, M) = ({N}, {M}), got {tuple(init.shape)}.")
    if max_steps < 1 or check_every < 1:
        raise ValueError(f"max_steps and check_every must be ≥ 1, got {max_steps}, {check_every}.")
    tol = default_tol(X.dtype) if tol is None else float(tol)
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}.")
    return X, C, lam, init, tol


def solve_candidate_problem(
    X: Real[ArrayLike, "N d"],
    candidates: Real[ArrayLike, "M d"] | None,
    lam,
    gamma,
    *,
    tol: float | None = None,
    max_steps: int = 20000,
    init: Real[ArrayLike, "N M"] | None = None,
    check_every: int = 20,
    n_sphere: int = 0,
    key: Array | None = None,
    throw: bool = False,
) -> CandidateSolution:
    """Solve the candidate problem of THEORY §6 to a certified relative duality gap.

        min_{Z ≥ 0}  (1/N) [ ½‖X − Z C‖² + λ Σ Z + γ Σ_m ‖z_m‖₂ ]

    by FISTA with adaptive restart (step ``1/‖C‖₂²``) and the exact column prox
    (shift by λ, clip at 0, group shrinkage); momentum is kept across checks.
    Every ``check_every`` iterations the residual ``R`` (and an Anderson
    extrapolation of the last residuals, Massias et al. 2018) is scaled into the
    dual feasible set
    ``{U : ‖(c_mᵀU − λ)_+‖ ≤ γ ∀m}`` of ``max ⟨U, X⟩ − ½‖U‖²`` and the solver stops
    when ``gap ≤ tol · objective``. γ = 0 with the normalised points as candidates
    is the wide limit (W). γ may be traced: ``jax.vmap`` over γ works.

    Args:
        X: data ``(N, d)``.
        candidates: ``(M, d)`` candidate atoms (rows), or ``None`` for
            :func:`default_candidates` (then ``init`` defaults to the wide-limit codes).
        lam: λ > 0.
        gamma: γ ≥ 0, the price of using a candidate.
        tol: relative gap tolerance (default 1e-10 float64, 1e-4 float32).
        max_steps: maximum FISTA iterations.
        init: warm-start codes ``(N, M)`` (clipped at 0); zeros by default.
        check_every: FISTA iterations between certificate evaluations.
        n_sphere, key: extra random unit candidates (default candidates only).
        throw: raise if the tolerance was not met.

    Returns:
        A :class:`CandidateSolution`.

    Example:
        >>> sol = jaxsae.solve_candidate_problem(X, None, 0.1, 0.5)
        >>> int(sol.n_used), float(sol.relative_gap)
    """
    X, C, lam, init, tol = prepare(
        X, candidates, lam, init, tol, max_steps, check_every, n_sphere, key
    )
    gamma = check_gamma(gamma, X.dtype)
    sol = _solve(
        X,
        C,
        lam,
        gamma,
        init,
        jnp.asarray(tol, X.dtype),
        jnp.asarray(max_steps, jnp.int32),
        int(check_every),
    )
    if throw:
        sol = eqx.tree_at(
            lambda s: s.codes, sol, sol.result.error_if(sol.codes, sol.result != RESULTS.successful)
        )
    return sol
