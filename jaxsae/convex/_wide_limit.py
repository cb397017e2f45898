"""The wide limit (W): the Huber bound, its optimal one-atom-per-point dictionary,
and, with a free bias, the convex problem ``min_b F_∞(b)`` solved to a certified gap."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, Real

from .._typing import ArrayLike
from .._validate import as_float_array, check_data, check_lam
from ..certificates._wide import wide_bound, wide_bound_terms
from ..models._dictionary import Dictionary
from ..solvers._iterate import AbstractIterativeSolver, iterate
from ..solvers._results import RESULTS


class WideLimit(eqx.Module):
    """The wide-limit optimum of THEORY §6 (W) and its certificate.

    ``F_∞(b) = (1/N) Σ_n h_λ(‖x_n − b‖)`` bounds ``F(D, b)`` for every width; it is
    attained by giving each point with ``‖x_n − b‖ > λ`` its own atom
    ``(x_n − b)/‖x_n − b‖`` with code ``‖x_n − b‖ − λ``.

    Attributes:
        value: ``F_∞(b)`` at the returned bias.
        bias: ``(d,)`` the bias ``b`` (zeros, the given one, or the optimal one).
        atoms: ``(N, d)`` row ``n`` is ``(x_n − b)/‖x_n − b‖`` (``e_1`` if ``x_n = b``).
        codes: ``(N,)`` code of point ``n`` on its own atom, ``(‖x_n − b‖ − λ)_+``
            (the code matrix is ``diag(codes)``; see :meth:`code_matrix`).
        used: ``(N,)`` whether point ``n`` gets an atom (``‖x_n − b‖ > λ``).
        grad_norm: ``‖∇_b F_∞‖ = ‖(1/N) Σ_n ψ(x_n − b)‖`` with
            ``ψ(v) = v`` for ``‖v‖ ≤ λ`` and ``λv/‖v‖`` above.
        gap: with a free bias, a duality gap bounding ``F_∞(b) − min_b F_∞``
            from above (0 when the bias is fixed: the value is then exact).
        steps: Newton steps taken (0 for a fixed bias).
        result: ``RESULTS.successful`` unless the bias solve failed.
        free_bias: whether ``b`` was optimised.
    """

    value: Float[Array, ""]
    bias: Float[Array, " d"]
    atoms: Float[Array, "N d"]
    codes: Float[Array, " N"]
    used: Bool[Array, " N"]
    grad_norm: Float[Array, ""]
    gap: Float[Array, ""]
    steps: Int[Array, ""]
    result: RESULTS
    free_bias: bool = eqx.field(static=True, default=False)

    def code_matrix(self) -> Float[Array, "N N"]:
        """The ``(N, N)`` code matrix ``diag(codes)`` of the one-atom-per-point dictionary."""
        return jnp.diag(self.codes)

    def dictionary(self) -> Dictionary:
        """The one-atom-per-point ``Dictionary`` (unused points' atoms masked out)."""
        return Dictionary(self.atoms, self.bias, self.used, free_bias=self.free_bias)


def _psi(V, lam):
    """``ψ(v_n)``: the projection of each row onto the ball of radius λ (= ∇h_λ(‖v‖))."""
    t = jnp.sqrt(jnp.sum(V * V, axis=-1, keepdims=True))
    return V * jnp.minimum(1, lam / jnp.where(t > 0, t, 1))


def _value(X, b, lam):
    return jnp.mean(wide_bound_terms(X - b, lam))


def _certificate(X, b, lam):
    """Gradient norm and a duality gap for ``min_b F_∞(b)``.

    Writing ``h_λ(‖v‖) = max_{‖u‖ ≤ λ} ⟨u, v⟩ − ½‖u‖²``, the dual of the bias problem
    is ``max (1/N) Σ_n ⟨u_n, x_n⟩ − ½‖u_n‖²`` over ``‖u_n‖ ≤ λ``, ``Σ_n u_n = 0``.
    The point ``u_n = s (ψ_n − ψ̄)``, ``s = min(1, λ / max_n ‖ψ_n − ψ̄‖)`` is feasible;
    the gap is a mean of Fenchel–Young terms ``h_λ(‖v_n‖) − ⟨u_n, v_n⟩ + ½‖u_n‖² ≥ 0``.
    """
    V = X - b
    P = _psi(V, lam)
    g = jnp.mean(P, axis=0)
    U = P - g
    un = jnp.sqrt(jnp.max(jnp.sum(U * U, axis=-1)))
    s = jnp.minimum(1, lam / jnp.maximum(un, jnp.finfo(X.dtype).tiny))
    U = s * U
    terms = wide_bound_terms(V, lam) - jnp.sum(U * V, axis=-1) + 0.5 * jnp.sum(U * U, axis=-1)
    return jnp.linalg.norm(g), jnp.maximum(jnp.mean(terms), 0)


def _newton_direction(X, b, lam):
    """Damped-Newton direction from the Hessian ``(1/N) Σ_n [I or (λ/t_n)(I − v̂_n v̂_nᵀ)]``."""
    V = X - b
    t = jnp.sqrt(jnp.sum(V * V, axis=-1))
    out = t > lam
    ts = jnp.where(out, t, 1)
    w = jnp.where(out, lam / ts, 1)
    c = jnp.where(out, lam / ts**3, 0)
    N, d = X.shape
    H = jnp.mean(w) * jnp.eye(d, dtype=X.dtype) - (V * c[:, None]).T @ V / N
    H = H + (jnp.finfo(X.dtype).eps * jnp.trace(H)) * jnp.eye(d, dtype=X.dtype)
    g = -jnp.mean(_psi(V, lam), axis=0)
    return -jnp.linalg.solve(H, g), g


def _step(X, b, lam):
    """One safeguarded Newton step: Armijo backtracking, else the gradient step ``b + ψ̄``.

    ``∇F_∞`` is 1-Lipschitz (ψ is a projection), so the unit gradient step always descends.
    """
    p, g = _newton_direction(X, b, lam)
    f0 = _value(X, b, lam)
    slope = g @ p
    ok_dir = jnp.isfinite(slope) & (slope < 0)

    def cond(state):
        t, f = state
        return ok_dir & (f > f0 + 1e-4 * t * slope) & (t > 2.0**-30)

    def body(state):
        t, _ = state
        t = t / 2
        return t, _value(X, b + t * p, lam)

    t0 = jnp.asarray(1.0, X.dtype)
    t, f = jax.lax.while_loop(cond, body, (t0, _value(X, b + p, lam)))
    newton_ok = ok_dir & (f <= f0 + 1e-4 * t * slope)
    return jnp.where(newton_ok, b + t * p, b - g)


class _BiasNewton(AbstractIterativeSolver):
    """Safeguarded Newton on ``F_∞(b)``; the state is the duality gap at ``b``."""

    tol: Array

    def init(self, b, args):
        return _certificate(*args[:1], b, args[1])[1]

    def step(self, b, gap, args):
        X, lam = args
        b = _step(X, b, lam)
        return b, _certificate(X, b, lam)[1]

    def terminate(self, b, gap, args):
        X, lam = args
        finite = jnp.isfinite(gap)
        done = gap <= self.tol * jnp.maximum(_value(X, b, lam), jnp.finfo(X.dtype).tiny)
        return done | ~finite, RESULTS.where(finite, RESULTS.successful, RESULTS.nonfinite)


@eqx.filter_jit
def _solve_bias(X, lam, b0, tol, max_steps):
    sol = iterate(_BiasNewton(tol), b0, (X, lam), max_steps=max_steps)
    return sol.value, sol.num_steps, sol.result


@eqx.filter_jit
def _assemble(X, lam, b, steps, result, free_bias: bool):
    V = X - b
    t = jnp.sqrt(jnp.sum(V * V, axis=-1))
    used = t > lam
    e1 = jnp.zeros_like(V).at[:, 0].set(1)
    atoms = jnp.where((t > 0)[:, None], V / jnp.where(t > 0, t, 1)[:, None], e1)
    grad_norm, gap = _certificate(X, b, lam)
    return WideLimit(
        value=wide_bound(X, lam, b),
        bias=b,
        atoms=atoms,
        codes=jnp.maximum(t - lam, 0),
        used=used,
        grad_norm=grad_norm,
        gap=gap if free_bias else jnp.zeros((), X.dtype),
        steps=steps,
        result=result,
        free_bias=free_bias,
    )


def wide_limit(
    X: Real[ArrayLike, "N d"],
    lam,
    *,
    bias: bool | Real[ArrayLike, " d"] = False,
    tol: float | None = None,
    max_steps: int = 100,
    throw: bool = False,
) -> WideLimit:
    """The wide limit of THEORY §6: the Huber bound (W), its optimum, and the best bias.

    ``F_∞(b) = (1/N) Σ_n h_λ(‖x_n − b‖)`` is the smallest objective any dictionary
    of any width reaches with bias ``b``; this returns the dictionary and codes
    that attain it (one atom per point with ``‖x_n − b‖ > λ``). With
    ``bias=True`` the bias is free and ``min_b F_∞(b)`` — a convex problem — is
    solved by safeguarded Newton steps, stopped on a duality gap
    ``≤ tol · F_∞`` (gradient ``∇_b F_∞ = −(1/N) Σ_n ψ(x_n − b)``, ``ψ`` the
    projection onto the λ-ball).

    Args:
        X: data ``(N, d)``.
        lam: λ > 0.
        bias: ``False`` for ``b = 0``, ``True`` to optimise ``b``, or a fixed ``(d,)`` bias.
        tol: relative gap tolerance for the free bias (default 1e-13 float64, 1e-6 float32).
        max_steps: maximum Newton steps.
        throw: raise if the bias solve did not meet ``tol``.

    Returns:
        A :class:`WideLimit` (value, bias, atoms, codes, used, grad_norm, gap, steps, result).

    Example:
        >>> wl = jaxsae.wide_limit(X, 0.1, bias=True)
        >>> float(wl.value), float(wl.gap)   # F_∞ at the best bias, certified
    """
    X = as_float_array(X, "X")
    d = X.shape[-1] if X.ndim == 2 else -1
    X = check_data(X, d, X.dtype)
    lam = check_lam(lam, X.dtype)
    if max_steps < 1:
        raise ValueError(f"max_steps must be ≥ 1, got {max_steps}.")
    if tol is None:
        tol = 1e-13 if X.dtype == jnp.float64 else 1e-6
    if not float(tol) > 0:
        raise ValueError(f"tol must be > 0, got {tol}.")
    free = isinstance(bias, bool) and bias
    if isinstance(bias, bool):
        b = jnp.mean(X, axis=0) if free else jnp.zeros((d,), X.dtype)
    else:
        b = as_float_array(bias, "bias", dtype=X.dtype)
        if b.shape != (d,):
            raise ValueError(
                f"bias must be True/False or an array of shape ({d},), got shape {tuple(b.shape)}."
            )
    if free:
        b, steps, result = _solve_bias(
            X, lam, b, jnp.asarray(tol, X.dtype), jnp.asarray(max_steps, jnp.int32)
        )
    else:
        steps, result = jnp.zeros((), jnp.int32), RESULTS.successful
    out = _assemble(X, lam, b, steps, result, free)
    if throw:
        out = eqx.tree_at(
            lambda w: w.bias, out, out.result.error_if(out.bias, out.result != RESULTS.successful)
        )
    return out
