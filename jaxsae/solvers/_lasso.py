"""Certified nonnegative sparse coding: ``sparse_code`` (THEORY §1).

For a fixed dictionary each code solves ``min_{z ≥ 0} ½‖y − Dz‖² + λ1ᵀz`` with
``y = x − b``. The solver alternates rounds of

1. accelerated projected gradient (FISTA with adaptive restart) on the Gram form
   ``½zᵀGz − (Dᵀy − λ)ᵀz``, which converges from anywhere and identifies the
   support, and
2. an exact primal–dual active-set polish on the identified support
   (``jaxsae.solvers._active_set``), accepted per point only when it lowers the
   duality gap,

and stops per point on the duality gap of THEORY §1 (computed without
cancellation in the data space), never on an iteration count.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .._validate import as_float_array, check_data, check_lam
from ..models._dictionary import Dictionary
from ._active_set import pdas_point
from ._implicit import implicit_codes
from ._kkt import kkt_from_parts
from ._results import RESULTS


class CodeSolution(eqx.Module):
    """Codes and their certificate (THEORY §1).

    Attributes:
        codes: ``(N, K)`` nonnegative codes ``Z``.
        gap: ``(N,)`` duality gap per point: an upper bound on ``P(z_n) − P*``
            (per point; the gap of the mean objective L is ``gap.mean()``).
        kkt: ``(N,)`` ``max_k |min(z_kn, λ − g_kn)| / λ``.
        converged: ``(N,)`` whether the point met ``gap ≤ tol · ½‖x_n − b‖²``.
        steps: ``(N,)`` number of rounds (FISTA block + polish) the point used.
        result: ``RESULTS.successful`` when every point converged.
    """

    codes: Float[Array, "N K"]
    gap: Float[Array, " N"]
    kkt: Float[Array, " N"]
    converged: Array
    steps: Int[Array, " N"]
    result: RESULTS


def default_tol(dtype) -> float:
    """Relative duality-gap tolerance by dtype: 1e-12 (float64), 1e-5 (float32)."""
    return 1e-12 if jnp.dtype(dtype) == jnp.float64 else 1e-5


def _lipschitz(G, n_iter: int = 60):
    """``λ_max(G)`` by power iteration (an upper estimate after a 2% margin)."""
    v = jnp.ones(G.shape[0], G.dtype) / jnp.sqrt(G.shape[0])

    def body(_, v):
        w = G @ v
        return w / jnp.maximum(jnp.linalg.norm(w), jnp.finfo(G.dtype).tiny)

    v = jax.lax.fori_loop(0, n_iter, body, v)
    return 1.02 * jnp.maximum(v @ G @ v, jnp.finfo(G.dtype).tiny) + jnp.finfo(G.dtype).eps


def _evaluate(atoms, Yc, Z, lam, mask):
    """Exact per-point residuals in the data space (no ``‖y‖² − …`` cancellation)."""
    R = Yc - Z @ atoms
    return kkt_from_parts(Z, R @ atoms.T, R, lam, mask)


def _fista(Z, G, B, lam, L, mask, frozen, n_steps: int):
    """``n_steps`` of FISTA with gradient restart on ``½zᵀGz − (b − λ)ᵀz``, ``z ≥ 0``."""
    shift = jnp.where(mask, B - lam, -jnp.inf)

    def body(_, carry):
        Z, Zprev, t = carry
        beta = (t - 1) / (t + 1 + 2 * jnp.sqrt(t))
        Yk = Z + beta[:, None] * (Z - Zprev)
        grad = Yk @ G - shift
        Znew = jnp.maximum(Yk - grad / L, 0)
        restart = jnp.sum((Yk - Znew) * (Znew - Z), axis=1) > 0
        tnew = jnp.where(restart, 1.0, 0.5 * (1 + jnp.sqrt(1 + 4 * t * t)))
        Znew = jnp.where(frozen[:, None], Z, Znew)
        return Znew, jnp.where(restart[:, None], Znew, Z), tnew.astype(t.dtype)

    t0 = jnp.ones(Z.shape[0], Z.dtype)
    Z, _, _ = jax.lax.fori_loop(0, n_steps, body, (Z, Z, t0))
    return Z


def _solve_chunk(atoms, mask, Yc, lam, Z0, tol, max_steps: int, fista_steps: int, cap: int, pdas_iter: int):
    G = jnp.where(mask[:, None] & mask[None, :], atoms @ atoms.T, 0)
    B = Yc @ atoms.T
    L = _lipschitz(G)
    scale = 0.5 * jnp.sum(Yc * Yc, axis=1)
    tiny = jnp.finfo(Yc.dtype).tiny
    Z0 = jnp.where(mask, jnp.maximum(Z0, 0), 0)
    res0 = _evaluate(atoms, Yc, Z0, lam, mask)
    done0 = res0.gap <= tol * scale + tiny
    polish = jax.vmap(pdas_point, in_axes=(0, 0, None, None, None, None, None))

    def cond(state):
        _, _, done, _, k = state
        return (k < max_steps) & ~jnp.all(done)

    def body(state):
        Z, gap, done, steps, k = state
        Zf = _fista(Z, G, B, lam, L, mask, done, fista_steps)
        gap_f = _evaluate(atoms, Yc, Zf, lam, mask).gap
        Zp = polish(Zf, B, G, lam, mask, cap, pdas_iter)
        gap_p = _evaluate(atoms, Yc, Zp, lam, mask).gap
        use_p = (gap_p < gap_f) & jnp.isfinite(gap_p)
        Znew = jnp.where(use_p[:, None], Zp, Zf)
        gnew = jnp.where(use_p, gap_p, gap_f)
        Znew = jnp.where(done[:, None], Z, Znew)
        gnew = jnp.where(done, gap, gnew)
        steps = steps + (~done).astype(steps.dtype)
        return Znew, gnew, done | (gnew <= tol * scale + tiny), steps, k + 1

    steps0 = jnp.zeros(Yc.shape[0], jnp.int32)
    Z, _, done, steps, _ = jax.lax.while_loop(cond, body, (Z0, res0.gap, done0, steps0, 0))
    res = _evaluate(atoms, Yc, Z, lam, mask)
    return Z, res.gap, res.kkt, res.gap <= tol * scale + tiny, steps


def _chunked(fn, Yc, Z0, chunk_size):
    N = Yc.shape[0]
    if chunk_size is None or chunk_size >= N:
        return fn(Yc, Z0)
    n_chunks = -(-N // chunk_size)
    pad = n_chunks * chunk_size - N
    Yp = jnp.pad(Yc, ((0, pad), (0, 0))).reshape(n_chunks, chunk_size, -1)
    Zp = jnp.pad(Z0, ((0, pad), (0, 0))).reshape(n_chunks, chunk_size, -1)
    out = jax.lax.map(lambda args: fn(*args), (Yp, Zp))
    return jax.tree.map(lambda a: a.reshape(n_chunks * chunk_size, *a.shape[2:])[:N], out)


@eqx.filter_jit
def _sparse_code(dictionary, X, lam, init, tol, max_steps, fista_steps, cap, pdas_iter, chunk_size):
    atoms, mask = dictionary.atoms, dictionary.mask
    Yc = X - dictionary.bias

    def solve(Yc, Z0):
        return _solve_chunk(atoms, mask, Yc, lam, Z0, tol, max_steps, fista_steps, cap, pdas_iter)

    Z, gap, kkt, conv, steps = _chunked(solve, Yc, init, chunk_size)
    # Differentiable view of the solution: implicit differentiation on the active set.
    Z = implicit_codes(Z, atoms, dictionary.bias, mask, X, lam, cap)
    finite = jnp.all(jnp.isfinite(gap))
    result = RESULTS.where(
        finite, RESULTS.where(jnp.all(conv), RESULTS.successful, RESULTS.max_steps_reached), RESULTS.nonfinite
    )
    return CodeSolution(codes=Z, gap=gap, kkt=kkt, converged=conv, steps=steps, result=result)


def sparse_code(
    dictionary: Dictionary,
    X: Float[Array, "N d"],
    lam,
    *,
    tol: float | None = None,
    max_steps: int = 200,
    init: Float[Array, "N K"] | None = None,
    chunk_size: int | None = None,
    support_cap: int | None = None,
    fista_steps: int = 20,
    throw: bool = False,
) -> CodeSolution:
    """Optimal nonnegative codes with a duality-gap certificate (THEORY §1).

    Solves, for every point, ``min_{z ≥ 0} ½‖x_n − b − D z‖² + λ 1ᵀz`` and stops
    when the duality gap ``P(z_n) − Q(u_n)`` (dual point ``u = s·r``, §1) is at
    most ``tol · ½‖x_n − b‖²`` — a certificate, not an iteration count.
    Masked atoms get zero codes. The codes are differentiable with respect to
    the atoms, the bias, the data and λ by implicit differentiation on the
    active set (``G_SS ż_S = Ḋ_Sᵀ r + D_Sᵀ(ẏ − Ḋ z) − λ̇ 1``).

    Args:
        dictionary: the dictionary ``(D, b, mask)``.
        X: data ``(N, d)``.
        lam: λ > 0 (a scalar; may be a traced array, so ``vmap`` over λ works).
        tol: relative gap tolerance; default 1e-12 in float64, 1e-5 in float32.
        max_steps: maximum number of rounds (each ``fista_steps`` FISTA
            iterations followed by one exact active-set polish).
        init: warm-start codes ``(N, K)`` (clipped at 0).
        chunk_size: solve this many points at a time (bounded memory for large N).
        support_cap: largest support the exact polish handles (default
            ``min(K, d, 64)``; a unique solution has ``|S| ≤ d``).
        fista_steps: FISTA iterations per round.
        throw: raise if not every point converged.

    Returns:
        A ``CodeSolution`` (codes, per-point ``gap``, ``kkt``, ``converged``,
        ``steps``, ``result``).

    Example:
        >>> sol = jaxsae.sparse_code(D, X, 0.1)
        >>> float(sol.gap.max())   # certified sub-optimality of the worst point
    """
    X = check_data(X, dictionary.n_features, dictionary.dtype)
    lam = check_lam(lam, dictionary.dtype)
    N, K = X.shape[0], dictionary.n_atoms
    if init is None:
        init = jnp.zeros((N, K), dictionary.dtype)
    else:
        init = as_float_array(init, "init").astype(dictionary.dtype)
        if init.shape != (N, K):
            raise ValueError(f"init must have shape (N, K) = ({N}, {K}), got {tuple(init.shape)}.")
    if max_steps < 1:
        raise ValueError(f"max_steps must be ≥ 1, got {max_steps}.")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}.")
    tol = default_tol(dictionary.dtype) if tol is None else float(tol)
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}.")
    cap = min(K, dictionary.n_features, 64) if support_cap is None else min(int(support_cap), K)
    sol = _sparse_code(
        dictionary, X, lam, init, tol, int(max_steps), int(fista_steps), cap, 8,
        None if chunk_size is None else int(chunk_size),
    )
    if throw:
        sol = eqx.tree_at(lambda s: s.codes, sol, sol.result.error_if(sol.codes, sol.result != RESULTS.successful))
    return sol
