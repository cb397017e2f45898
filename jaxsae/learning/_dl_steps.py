"""The two phases of ``learn_dictionary`` as pure, vmappable steps.

1. ``alternating_step``: a few warm-started FISTA iterations on the codes, then
   one exact block-coordinate pass over the atoms (each atom minimises the
   quadratic term with the others fixed — the centroid condition (A') with the
   codes frozen), then the dead-atom policy. Cheap; it finds the basin.
2. ``lbfgs_step``: Riemannian L-BFGS on the reduced objective
   ``F(D, b) = min_{Z ≥ 0} L`` on ``Ob(d, K) × R^d``. The gradient is the
   envelope gradient ``−(1/N) Σ_n r_n z_nᵀ`` with codes from ``sparse_code``
   warm-started from the previous iterate; memory pairs are transported by
   projection onto the new tangent space; the step is a backtracking Armijo
   search whose sufficient-decrease test allows the rounding noise of F
   (a few ulps), so the final, sub-rounding steps are still accepted.

Each step leaves a run unchanged once ``state.done`` is set, so a vmapped batch
of runs equals a loop of single runs.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from ..models._dictionary import Dictionary
from ..solvers._lasso import sparse_code
from ._dl_fista import approximate_codes
from ._dl_manifold import inner, reduced_gradient, retract, tangent
from ._dl_polish import exact_on_support


class DLState(eqx.Module):
    """State of one run. ``P = [atoms; bias]`` is ``(K + 1, d)``."""

    P: jax.Array
    codes: jax.Array
    value: jax.Array
    grad: jax.Array
    grad_norm: jax.Array
    align: jax.Array
    S: jax.Array
    Y: jax.Array
    rho: jax.Array
    head: jax.Array
    count: jax.Array
    fails: jax.Array
    flat: jax.Array
    best: jax.Array
    done: jax.Array
    stalled: jax.Array


def _codes(P, X, lam, mask, Z, tol, max_code_steps):
    """Certified codes, then one exact active-set polish accepted where it stays certified.

    Warm starts matter: ``sparse_code`` returns a warm start unchanged when it is
    already within ``tol``, so its codes can lag the atoms by ``√gap``. The exact
    polish (``G_SS z_S = D_Sᵀy − λ1``) removes that lag, which the envelope
    gradient and (A) need to be exact to rounding.
    """
    atoms, bias = P[:-1], P[-1]
    D = Dictionary(atoms, bias, mask)
    Z = sparse_code(D, X, lam, init=Z, tol=tol, max_steps=max_code_steps).codes
    return exact_on_support(Z, X - bias, atoms, lam, mask, tol)


def init_state(P, X, memory: int) -> DLState:
    """A state with zero codes (before any code solve)."""
    N, K = X.shape[0], P.shape[0] - 1
    dtype = P.dtype
    return DLState(
        P=P,
        codes=jnp.zeros((N, K), dtype),
        value=jnp.asarray(jnp.inf, dtype),
        grad=jnp.zeros_like(P),
        grad_norm=jnp.asarray(jnp.inf, dtype),
        align=jnp.asarray(jnp.inf, dtype),
        S=jnp.zeros((memory, *P.shape), dtype),
        Y=jnp.zeros((memory, *P.shape), dtype),
        rho=jnp.zeros((memory,), dtype),
        head=jnp.zeros((), jnp.int32),
        count=jnp.zeros((), jnp.int32),
        fails=jnp.zeros((), jnp.int32),
        flat=jnp.zeros((), jnp.int32),
        best=jnp.asarray(jnp.inf, dtype),
        done=jnp.zeros((), bool),
        stalled=jnp.zeros((), bool),
    )


def _measure(state, P, Z, X, lam, mask, free_bias):
    F, g, norms, align = reduced_gradient(P, X, Z, lam, mask, free_bias)
    return eqx.tree_at(
        lambda s: (s.P, s.codes, s.value, s.grad, s.grad_norm, s.align),
        state,
        (P, Z, F, g, jnp.max(norms), jnp.max(align)),
    )


def _freeze(old, new):
    """Keep finished runs unchanged (a vmapped batch then equals a loop)."""
    return jax.tree.map(lambda a, b: jnp.where(old.done, a, b), old, new)


def atom_block_pass(atoms, A, B, mask):
    """One exact block-coordinate pass over the atoms from sufficient statistics.

    With the codes frozen, ``A = ZᵀZ/N`` (K × K) and ``B = Zᵀ(X − b)/N`` (K × d)
    are all the atoms need: atom k minimises the quadratic term with the others
    fixed, ``d_k ← normalise(B_k − Σ_{j≠k} A_kj d_j)`` (the centroid condition
    (A') with the codes frozen), in order k = 0..K−1; atoms that do not fire or
    are masked stay put.
    """

    def sweep(k, atoms):
        u = B[k] - A[k] @ atoms + A[k, k] * atoms[k]
        nu = jnp.linalg.norm(u)
        ok = mask[k] & (A[k, k] > 0) & (nu > 0)
        return atoms.at[k].set(jnp.where(ok, u / jnp.where(ok, nu, 1), atoms[k]))

    return jax.lax.fori_loop(0, atoms.shape[0], sweep, atoms)


def alternating_step(state, X, lam, mask, policy, free_bias, inner_steps: int):
    """One outer step of alternating minimisation (codes, then an exact atom sweep)."""
    P = state.P
    atoms, bias = P[:-1], P[-1]
    Z = approximate_codes(atoms, X - bias, lam, mask, state.codes, inner_steps)
    N = X.shape[0]
    Zm = jnp.where(mask, Z, 0)
    A = Zm.T @ Zm / N
    B = Zm.T @ (X - bias) / N

    atoms = atom_block_pass(atoms, A, B, mask)
    bias = jnp.where(free_bias, jnp.mean(X - Zm @ atoms, axis=0), bias)
    R = X - bias - Zm @ atoms
    atoms = policy(atoms, Zm, R, mask)
    P_new = jnp.concatenate([atoms, bias[None, :]], axis=0)
    # Report F's measures at the codes just solved (the atoms moved after).
    new = _measure(state, P, Z, X, lam, mask, free_bias)
    new = eqx.tree_at(lambda s: s.P, new, P_new)
    return _freeze(state, new)


def _cleared(state):
    """The state at the start of phase 2: no L-BFGS memory, no failures, F unknown."""
    z = 0 * state.count
    inf = state.best + jnp.inf
    return eqx.tree_at(
        lambda s: (s.count, s.head, s.fails, s.flat, s.best, s.value),
        state,
        (z, z, z, z, inf, inf),
    )


def _two_loop(g, S, Y, rho, head, count):
    m = S.shape[0]

    def backward(i, carry):
        q, alphas = carry
        j = (head - 1 - i) % m
        a = jnp.where(i < count, rho[j] * inner(S[j], q), 0)
        return q - a * Y[j], alphas.at[j].set(a)

    q, alphas = jax.lax.fori_loop(0, m, backward, (g, jnp.zeros((m,), g.dtype)))
    jn = (head - 1) % m
    yy = inner(Y[jn], Y[jn])
    gamma = jnp.where(count > 0, inner(S[jn], Y[jn]) / jnp.where(yy > 0, yy, 1), 1)

    def forward(i, r):
        j = (head - count + i) % m
        b = rho[j] * inner(Y[j], r)
        return r + jnp.where(i < count, alphas[j] - b, 0) * S[j]

    return jax.lax.fori_loop(0, m, forward, gamma * q)


def lbfgs_direction(state):
    """The L-BFGS search direction ``p``, its slope ``⟨g, p⟩`` and the rounding slack of F.

    Steepest descent (capped so the fastest atom moves by ≤ 0.1) on the first
    step, after a failure, or when the two-loop direction is not a descent one.
    """
    P, g, F = state.P, state.grad, state.value
    eps = jnp.finfo(P.dtype).eps
    p = tangent(P, -_two_loop(g, state.S, state.Y, state.rho, state.head, state.count))
    gg = inner(g, g)
    slope = inner(g, p)
    bad = ~(slope < -1e-12 * gg) | ~jnp.isfinite(slope)
    p_sd = -g * (0.1 / jnp.maximum(jnp.max(jnp.linalg.norm(g, axis=1)), jnp.finfo(P.dtype).tiny))
    p = jnp.where(bad | (state.count == 0), p_sd, p)
    slope = inner(g, p)
    slack = 16 * eps * jnp.abs(F)
    return p, slope, slack


def armijo(F, Ft, t, slope, slack):
    """The noise-tolerant sufficient-decrease test of the line search."""
    return Ft <= F + 1e-4 * t * slope + slack


def lbfgs_update(state, moved, accepted, Ft, tol, patience: int = 30):
    """Memory pairs, failure and stopping bookkeeping after a line search.

    ``moved`` is ``state`` measured at the last trial point ``moved.P`` (value,
    gradient, first-order measures); ``accepted`` says whether it passed
    ``armijo``. Pure, so the in-memory and the streamed learners share it.
    """
    P, g, F = state.P, state.grad, state.value
    Pt = moved.P
    eps = jnp.finfo(P.dtype).eps
    slack = 16 * eps * jnp.abs(F)
    s = tangent(Pt, Pt - P)
    y = moved.grad - tangent(Pt, g)
    sy = inner(s, y)
    keep_pair = accepted & (sy > eps * jnp.sqrt(inner(s, s) * inner(y, y)))
    S = jax.vmap(lambda V: tangent(Pt, V))(state.S)
    Y = jax.vmap(lambda V: tangent(Pt, V))(state.Y)
    h = state.head
    S = jnp.where(keep_pair, S.at[h].set(s), S)
    Y = jnp.where(keep_pair, Y.at[h].set(y), Y)
    rho = jnp.where(keep_pair, state.rho.at[h].set(1 / jnp.where(keep_pair, sy, 1)), state.rho)
    m = S.shape[0]
    moved = eqx.tree_at(
        lambda s_: (s_.S, s_.Y, s_.rho, s_.head, s_.count),
        moved,
        (
            S,
            Y,
            rho,
            jnp.where(keep_pair, (h + 1) % m, h),
            jnp.where(keep_pair, jnp.minimum(state.count + 1, m), state.count),
        ),
    )
    # On a failed search stay put and restart from steepest descent; two failures
    # in a row from steepest descent mean F is flat to rounding: stop (stalled).
    failed = eqx.tree_at(lambda s_: (s_.count, s_.fails), state, (0 * state.count, state.fails + 1))
    new = jax.tree.map(lambda a, b: jnp.where(accepted, a, b), moved, failed)
    new = eqx.tree_at(lambda s_: s_.fails, new, jnp.where(accepted, 0 * state.fails, new.fails))
    # Stagnation at the rounding floor (e.g. float32): F flat to rounding and the
    # first-order measure not halving for `patience` steps in a row.
    measure = jnp.maximum(new.grad_norm, new.align)
    progress = ~accepted | (Ft < F - slack) | (measure < 0.5 * state.best)
    flat = jnp.where(progress, 0, state.flat + 1)
    new = eqx.tree_at(lambda s_: (s_.flat, s_.best), new, (flat, jnp.minimum(state.best, measure)))
    stalled = (new.fails >= 2) | (flat >= patience)
    converged = (new.grad_norm <= tol) & (new.align <= tol)
    new = eqx.tree_at(lambda s_: (s_.done, s_.stalled), new, (converged | stalled, stalled))
    return _freeze(state, new)


def _begin(state, start):
    """The state a step starts from (cleared at the start of phase 2), its direction,
    slope and rounding slack (no move at the start of phase 2)."""
    state = jax.tree.map(lambda a, b: jnp.where(start, a, b), _cleared(state), state)
    p, slope, slack = lbfgs_direction(state)
    return state, jnp.where(start, 0, p), jnp.where(start, 0, slope), slack


_begin_jit = eqx.filter_jit(_begin)
_update_jit = eqx.filter_jit(lbfgs_update)
_armijo_jit = jax.jit(armijo)
_retract_jit = jax.jit(lambda P, t, p: retract(P, t * p))


def lbfgs_step(state, trial, loop, *, tol, max_backtracks: int, start, measure=None,
               patience: int = 30):  # fmt: skip
    """One Riemannian L-BFGS step on F with a noise-tolerant Armijo backtracking search.

    ``trial(P_t)`` is the state at the trial point with its certified codes and F; the
    point the search ends at then gets its envelope gradient and (A) from ``measure``
    (default: ``trial`` measured them already, as one streamed pass does). In memory
    ``trial`` is a compiled function, on streamed data one pass over the chunks. ``loop`` (``Compiled`` or ``Host``) runs the backtracking
    loop, so this one function is the step for both. With ``start`` (a traced bool) the
    call is the start of phase 2 instead: the memory is cleared and a zero step is
    taken, so the codes are solved to full accuracy at the current atoms and the
    first-order measures recorded (one compiled function for both uses: the code
    solver inside is the costly part to compile). Returns ``(state, accepted)``.
    """
    state, p, slope, slack = _begin_jit(state, jnp.asarray(start))
    P, F = state.P, state.value

    def cond(c):
        t, k, moved = c
        return (k < max_backtracks) & ~_armijo_jit(F, moved.value, t, slope, slack)

    def body(c):
        t, k, _ = c
        t = jnp.where(k == 0, t, 0.5 * t)
        return t, k + 1, trial(jnp.where(start, P, _retract_jit(P, t, p)))

    # value = NaN fails the Armijo test, so at least one trial is evaluated
    unmeasured = eqx.tree_at(lambda s: s.value, state, jnp.full_like(F, jnp.nan))
    init = (jnp.ones((), P.dtype), jnp.zeros((), jnp.int32), unmeasured)
    t, _, moved = loop.while_loop(cond, body, init)
    Ft = moved.value
    accepted = _armijo_jit(F, Ft, t, slope, slack)
    moved = moved if measure is None else measure(moved)
    return _update_jit(state, moved, accepted, Ft, tol, patience), accepted


def resident_trial(state, X, lam, mask, free_bias, code_tol, max_code_steps: int):
    """``(trial, measure)`` of ``lbfgs_step`` for resident data: codes warm-started from
    ``state``'s and F at each trial point; the gradient and (A) once, where it ends."""

    def trial(Pt):
        Zt = _codes(Pt, X, lam, mask, state.codes, code_tol, max_code_steps)
        Zm = jnp.where(mask, Zt, 0)
        Rt = X - Pt[-1] - Zm @ Pt[:-1]
        Ft = jnp.mean(0.5 * jnp.sum(Rt * Rt, axis=1) + lam * jnp.sum(Zm, axis=1))
        return eqx.tree_at(lambda s: (s.P, s.codes, s.value), state, (Pt, Zt, Ft))

    def measure(moved):
        return _measure(state, moved.P, moved.codes, X, lam, mask, free_bias)

    return trial, measure
