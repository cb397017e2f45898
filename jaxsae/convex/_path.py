"""A path of candidate problems over γ, each warm-started from the previous solution."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Real

from .._typing import ArrayLike
from .._validate import as_float_array, is_concrete
from ._candidates import CandidateSolution, _solve, prepare


@eqx.filter_jit
def _path(X, C, lam, gammas, Z0, tol, max_steps, check_every: int):
    def step(Z, gamma):
        sol = _solve(X, C, lam, gamma, Z, tol, max_steps, check_every)
        return sol.codes, sol

    _, sols = jax.lax.scan(step, Z0, gammas)
    return sols


def candidate_path(
    X: Real[ArrayLike, "N d"],
    lam,
    gammas: Real[ArrayLike, " G"],
    *,
    candidates: Real[ArrayLike, "M d"] | None = None,
    tol: float | None = None,
    max_steps: int = 20000,
    init: Real[ArrayLike, "N M"] | None = None,
    check_every: int = 20,
    n_sphere: int = 0,
    key: Array | None = None,
    progress: bool = False,
) -> CandidateSolution:
    """Solve the candidate problem of THEORY §6 along a path of γ values.

    Each problem starts from the previous solution (warm start), so pass ``gammas``
    in increasing order: the path runs from one atom per point (γ = 0, the wide
    limit (W) for the default candidates) towards a few shared atoms. The whole
    path is one compiled ``lax.scan``.

    Args:
        X: data ``(N, d)``.
        lam: λ > 0.
        gammas: ``(G,)`` values of γ ≥ 0.
        candidates, tol, max_steps, init, check_every, n_sphere, key: as in
            :func:`jaxsae.solve_candidate_problem` (``init`` starts the first problem).
        progress: a progress bar over γ (FISTA steps and relative gap of each γ).
            The problems are then solved one compiled call per γ, from Python, with the
            same warm starts: the same path.

    Returns:
        A :class:`CandidateSolution` whose fields carry a leading ``(G,)`` axis
        (``codes`` is ``(G, N, M)``; ``result`` holds one code per γ).

    Example:
        >>> path = jaxsae.candidate_path(X, 0.1, jnp.array([0.0, 0.5, 1.0]))
        >>> path.n_used   # used atoms, falling as γ grows
    """
    X, C, lam, init, tol = prepare(
        X, candidates, lam, init, tol, max_steps, check_every, n_sphere, key
    )
    gammas = as_float_array(gammas, "gammas", dtype=X.dtype)
    if gammas.ndim != 1 or gammas.shape[0] == 0:
        raise ValueError(
            f"gammas must be a non-empty 1-d array of γ values, got shape {tuple(gammas.shape)}."
        )
    if is_concrete(gammas) and not bool(jnp.all(jnp.isfinite(gammas) & (gammas >= 0))):
        raise ValueError(f"every γ must be a finite number ≥ 0, got {gammas.tolist()}.")
    tol, max_steps = jnp.asarray(tol, X.dtype), jnp.asarray(max_steps, jnp.int32)
    if not progress:
        return _path(X, C, lam, gammas, init, tol, max_steps, int(check_every))
    from tqdm.auto import tqdm

    sols, Z = [], init
    with tqdm(total=gammas.shape[0], desc="candidate path", unit="γ") as bar:
        for gamma in gammas:
            sol = _solve(X, C, lam, gamma, Z, tol, max_steps, int(check_every))
            Z = sol.codes
            gap = f"{float(sol.relative_gap):.1e}"
            bar.set_postfix(gamma=f"{float(gamma):g}", steps=int(sol.steps), rel_gap=gap)
            bar.update(1)
            sols.append(sol)
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *sols)
