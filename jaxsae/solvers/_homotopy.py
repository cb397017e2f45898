"""The nonnegative LARS homotopy in pure JAX (THEORY §1): the coder's path on GPU/TPU.

The same algorithm as the CPU kernel ``_lars.cc``, vmapped over points with fixed
shapes: ``cap`` active slots, the Cholesky factor of ``G_AA`` updated by one row
when an atom enters and by Givens rotations when one leaves, and the columns
``G_{:,A}`` kept per point so that a step costs ``O(K·cap + cap²)``. Every point
runs at most ``max_steps`` path steps, masked once it reaches λ, so the batch
never waits for a straggler longer than the budget; points left unfinished (or
with a singular active Gram) are reported and handled by the caller.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ._cholesky import cho_solve, cholesky


class _Path(eqx.Module):
    c: Float[Array, " K"]  # correlations of the inactive atoms (t on the active ones)
    inside: Bool[Array, " K"]
    act: Int[Array, " cap"]
    z: Float[Array, " cap"]
    L: Float[Array, "cap cap"]
    Q: Float[Array, "K cap"]  # columns G[:, act]
    s: Int[Array, ""]
    t: Float[Array, ""]
    dropped: Int[Array, ""]
    status: Int[Array, ""]  # −1 running, 0 solved, 1 budget, 2 singular
    steps: Int[Array, ""]


def _solve(L, rhs, s):
    """``(L Lᵀ)⁻¹ rhs`` on the leading ``s`` slots (unit diagonal beyond them)."""
    cap = L.shape[0]
    idx = jnp.arange(cap, dtype=jnp.int32)
    live = idx < s
    Ld = jnp.where(live[:, None] & live[None, :], L, jnp.eye(cap, dtype=L.dtype))
    x = jnp.where(live, rhs, 0)

    def fwd(i, x):
        return x.at[i].set((x[i] - Ld[i] @ jnp.where(idx < i, x, 0)) / Ld[i, i])

    x = jax.lax.fori_loop(0, cap, fwd, x)

    def bwd(j, x):
        i = cap - 1 - j
        return x.at[i].set((x[i] - Ld[:, i] @ jnp.where(idx > i, x, 0)) / Ld[i, i])

    return jnp.where(live, jax.lax.fori_loop(0, cap, bwd, x), 0)


def _new_row(p: _Path, G, k):
    """The factor's row for atom ``k`` appended in slot ``s``, and whether ``G_AA`` stays
    nonsingular (``L l = G_{A,k}``, diagonal ``√(G_kk − ‖l‖²)``)."""
    cap = p.L.shape[0]
    idx = jnp.arange(cap, dtype=jnp.int32)
    g = jnp.where(idx < p.s, G[k, jnp.maximum(p.act, 0)], 0)
    Ld = jnp.where((idx < p.s)[:, None], p.L, jnp.eye(cap, dtype=p.L.dtype))

    def fwd(i, row):
        return row.at[i].set((g[i] - Ld[i] @ jnp.where(idx < i, row, 0)) / Ld[i, i])

    row = jnp.where(idx < p.s, jax.lax.fori_loop(0, cap, fwd, jnp.zeros_like(g)), 0)
    diag = G[k, k] - row @ row
    ok = (diag > 1e-12 * jnp.maximum(G[k, k], 1e-300)) & (p.s < cap)
    return jnp.where(idx == p.s, jnp.sqrt(jnp.maximum(diag, 0)), row), ok


def _drop(p: _Path, pos, leave):
    """Slot ``pos`` removed from the active arrays and the factor when ``leave`` (else the
    identity): rows and columns shifted, then Givens rotations restore triangularity."""
    cap = p.L.shape[0]
    idx = jnp.arange(cap, dtype=jnp.int32)
    at = jnp.where(leave, pos, cap)
    src = jnp.where(idx >= at, jnp.minimum(idx + 1, cap - 1), idx)
    keep = idx < p.s - leave.astype(p.s.dtype)
    act = jnp.where(keep, p.act[src], -1)
    z = jnp.where(keep, p.z[src], 0)
    Q = jnp.where(keep[None, :], p.Q[:, src], 0)
    L = jnp.where(keep[:, None], p.L[src], 0)

    def rotate(j, L):
        nxt = jnp.minimum(j + 1, cap - 1)
        x, y = L[j, j], L[j, nxt]
        r = jnp.hypot(x, y)
        go = leave & (j >= at) & keep[j] & (r > 0)
        safe = jnp.where(r > 0, r, 1)
        cs, sn = jnp.where(go, x / safe, 1), jnp.where(go, y / safe, 0)
        u, v = L[:, j], L[:, nxt]
        L = L.at[:, j].set(cs * u + sn * v)
        return L.at[:, nxt].set(jnp.where(go, -sn * u + cs * v, v))

    L = jax.lax.fori_loop(0, cap - 1, rotate, L)
    lower = idx[:, None] >= idx[None, :]
    return act, z, Q, jnp.where(lower & keep[:, None] & keep[None, :], L, 0)


def _step(p: _Path, G, mask, lam):
    K, cap = p.Q.shape
    idx = jnp.arange(cap, dtype=jnp.int32)
    live = idx < p.s
    w = _solve(p.L, jnp.ones((cap,), p.L.dtype), p.s)
    a = p.Q @ w
    slope = 1 - a
    can = mask & ~p.inside & (jnp.arange(K, dtype=jnp.int32) != p.dropped) & (slope > 1e-12)
    d_in = jnp.where(can, jnp.maximum((p.t - p.c) / jnp.where(can, slope, 1), 0), jnp.inf)
    d_out = jnp.where(live & (w < 0), -p.z / jnp.where(w < 0, w, -1), jnp.inf)
    k_in, i_out = jnp.argmin(d_in).astype(jnp.int32), jnp.argmin(d_out).astype(jnp.int32)
    delta = jnp.minimum(jnp.minimum(p.t - lam, d_in[k_in]), d_out[i_out])
    enter = d_in[k_in] <= delta
    leave = ~enter & (d_out[i_out] <= delta)
    t = p.t - delta
    z = jnp.where(live, p.z + delta * w, 0)
    c = jnp.where(p.inside, t, p.c - delta * a)
    p = eqx.tree_at(lambda q: (q.z, q.c, q.t), p, (z, c, t))
    # an atom leaves (the identity otherwise)
    k_out = p.act[i_out]
    act, z, Q, L = _drop(p, i_out, leave)
    inside = p.inside.at[k_out].set(jnp.where(leave, False, p.inside[k_out]))
    s = p.s - leave.astype(p.s.dtype)
    p = eqx.tree_at(lambda q: (q.act, q.z, q.Q, q.L, q.inside, q.s), p, (act, z, Q, L, inside, s))
    # an atom enters in slot s (masked row and column writes)
    row, ok = _new_row(p, G, k_in)
    put = enter & ok
    slot = jnp.minimum(p.s, cap - 1)
    p = _Path(
        c=p.c, inside=p.inside.at[k_in].set(p.inside[k_in] | put),
        act=p.act.at[slot].set(jnp.where(put, k_in, p.act[slot])),
        z=p.z.at[slot].set(jnp.where(put, 0, p.z[slot])),
        L=p.L.at[slot].set(jnp.where(put, jnp.where(idx <= p.s, row, 0), p.L[slot])),
        Q=p.Q.at[:, slot].set(jnp.where(put, G[:, k_in], p.Q[:, slot])),
        s=p.s + put.astype(p.s.dtype), t=t,
        dropped=jnp.where(leave, k_out, -1).astype(p.dropped.dtype),
        status=(jnp.where(enter & ~ok, 2, jnp.where(leave & (s == 0), 2,
                                                    jnp.where(enter | leave, -1, 0)))).astype(p.status.dtype),
        steps=p.steps + 1,
    )  # fmt: skip
    return p


def _point(b, G, mask, lam, todo, cap: int, max_steps: int):
    K = b.shape[0]
    dtype = b.dtype
    c = jnp.where(mask, b, -jnp.inf)
    first = jnp.argmax(c)
    t0 = c[first]
    start = todo & (t0 > lam)
    idx = jnp.arange(cap, dtype=jnp.int32)
    L0 = jnp.zeros((cap, cap), dtype).at[0, 0].set(jnp.sqrt(G[first, first]))
    p = _Path(
        c=c, inside=jnp.zeros((K,), bool).at[first].set(True),
        act=jnp.full((cap,), -1, jnp.int32).at[0].set(first.astype(jnp.int32)),
        z=jnp.zeros((cap,), dtype), L=L0, Q=jnp.zeros((K, cap), dtype).at[:, 0].set(G[:, first]),
        s=jnp.asarray(1, jnp.int32), t=t0, dropped=jnp.asarray(-1, jnp.int32),
        status=jnp.where(start, -1, 0).astype(jnp.int32), steps=jnp.asarray(0, jnp.int32),
    )  # fmt: skip

    def cond(p):
        return (p.status < 0) & (p.steps < max_steps)

    p = jax.lax.while_loop(cond, lambda p: _step(p, G, mask, lam), p)
    live = idx < p.s
    rhs = jnp.where(live, b[jnp.maximum(p.act, 0)] - lam, 0)
    # exact codes on the final support from a fresh factor (not the updated one)
    both = live[:, None] & live[None, :]
    Gs = jnp.where(
        both, G[jnp.maximum(p.act, 0)][:, jnp.maximum(p.act, 0)], jnp.eye(cap, dtype=dtype)
    )
    exact = jnp.where(live, cho_solve(cholesky(Gs), rhs), 0)
    solved = start & (p.status == 0)
    positive = jnp.all(jnp.where(live, exact > 0, True))
    codes = jnp.where(solved & positive, exact, jnp.maximum(p.z, 0))  # unsolved: a warm start
    Z = jnp.zeros((K,), dtype).at[jnp.maximum(p.act, 0)].add(jnp.where(live & start, codes, 0))
    status = jnp.where(~start, 0, jnp.where(p.status < 0, 1, p.status))
    return Z, status, p.steps


def homotopy(B, G, mask, todo, lam, *, cap: int, max_steps: int, block: int = 256):
    """``(Z, status, steps)`` as ``_lars_ffi.lars``, in pure JAX: vmapped over points,
    ``block`` points at a time (each keeps ``K × cap`` columns of G)."""
    N, K = B.shape
    point = jax.vmap(_point, in_axes=(0, None, None, None, 0, None, None))
    lam = jnp.asarray(lam, B.dtype)
    m = min(block, N)
    n_blocks = -(-N // m)
    pad = n_blocks * m - N
    Bp = jnp.pad(B, ((0, pad), (0, 0))).reshape(n_blocks, m, K)
    tp = jnp.pad(todo, (0, pad)).reshape(n_blocks, m)
    out = jax.lax.map(lambda a: point(a[0], G, mask, lam, a[1], cap, max_steps), (Bp, tp))
    return jax.tree.map(lambda a: a.reshape(n_blocks * m, *a.shape[2:])[:N], out)
