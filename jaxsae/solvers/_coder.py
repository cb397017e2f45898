"""One chunk of points of the sparse coder: the homotopy start, round 1 and the gathered
rounds (THEORY §1).

``_solve_chunk`` certifies a block of points: the exact nonnegative homotopy where
it is available, else a first round of float32 block-coordinate descent and an
exact polish on every point; then ``_GatheredRounds`` on the shared driver revisits
only the uncertified points, in small gathered batches, until every point meets
the duality-gap tolerance or the round budget is spent.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from ._active_set import polish
from ._bcd import bcd
from ._iterate import AbstractIterativeSolver, iterate
from ._kkt import kkt_from_parts
from ._results import RESULTS


def _evaluate(atoms, Yc, Z, lam, mask):
    """Exact per-point residuals in the data space (no ``‖y‖² − …`` cancellation)."""
    R = Yc - Z @ atoms
    return kkt_from_parts(Z, R @ atoms.T, R, lam, mask)


class CoderSettings(eqx.Module):
    """The sparse coder's settings, named (static: they fix shapes and loop counts).

    ``sweeps`` block-coordinate sweeps of ``inner`` FISTA steps on blocks of ``block``
    atoms per round, then an exact polish with candidate supports of at most ``cap``
    atoms and ``pdas_iter`` primal–dual active-set solves.
    """

    sweeps: int = eqx.field(static=True)
    cap: int = eqx.field(static=True)
    block: int = eqx.field(static=True, default=64)
    inner: int = eqx.field(static=True, default=6)
    pdas_iter: int = eqx.field(static=True, default=8)

    def wide_cap(self, K: int, d: int) -> int:
        """The candidate cap of the later rounds and of the implicit derivative: a whole
        support (≤ d when unique) plus violators."""
        return min(K, max(2 * self.cap, min(d, 128) + 16))


class _Problem(eqx.Module):
    """What every round needs, computed once per chunk."""

    atoms: Array
    mask: Array
    lam: Array
    G: Array
    Ls: Array
    cfg: CoderSettings


def _round(P: _Problem, Zit, Z, gap, kkt, Yc, B, ident, cap: int, pdas: tuple, eval_bcd: bool):
    """One round for a batch of points: BCD in ``ident`` dtype from the iterate
    ``Zit``, then the exact polish.

    Two states are kept per point: the certified best ``(Z, gap, kkt)``, which a
    candidate replaces only where it lowers the duality gap, and the iterate,
    which moves to the polished codes only where they lower the primal
    objective, so BCD keeps making progress where the polish cannot (a
    candidate set that misses the support) and rounds never cycle.
    """
    cfg = P.cfg
    dtype, lam_i = Yc.dtype, P.lam.astype(ident)
    Gi, Bi = P.G.astype(ident), B.astype(ident)
    Zb = bcd(
        Zit.astype(ident), Gi, Bi, lam_i, P.mask, P.Ls.astype(ident), cfg.sweeps, cfg.block,
        cfg.inner,
    )  # fmt: skip
    GZ = Zb @ Gi
    # Primal objective of the BCD iterate from Gram products (only used to steer).
    p_b = 0.5 * jnp.sum(Yc * Yc, axis=1) - jnp.sum(Zb * (Bi - lam_i - 0.5 * GZ), axis=1).astype(
        dtype
    )
    Zb = Zb.astype(dtype)
    rank = P.atoms.shape[1]
    Zp = polish(
        Zb, Bi - GZ - lam_i, B, P.G, P.lam, P.mask, cap, pdas[1], ident, pdas[0], rank, eval_bcd
    )
    res_p = _evaluate(P.atoms, Yc, Zp, P.lam, P.mask)
    ok_p = jnp.isfinite(res_p.gap)
    Zit = jnp.where((ok_p & (res_p.primal < p_b))[:, None], Zp, Zb)
    cands = [(Zp, res_p, ok_p)]
    if eval_bcd:
        res_b = _evaluate(P.atoms, Yc, Zb, P.lam, P.mask)
        cands.insert(0, (Zb, res_b, jnp.isfinite(res_b.gap)))
    for Zc, res, ok in cands:
        use = ok & (res.gap < gap)
        Z = jnp.where(use[:, None], Zc, Z)
        gap, kkt = jnp.where(use, res.gap, gap), jnp.where(use, res.kkt, kkt)
    return Zit, Z, gap, kkt


def _threshold(Yc, tol):
    """The certified gap per point: ``tol · ½‖y‖²`` (relative; a tiny floor for y = 0)."""
    return tol * 0.5 * jnp.sum(Yc * Yc, axis=1) + jnp.finfo(Yc.dtype).tiny


class _GatheredRounds(AbstractIterativeSolver):
    """The rounds after the first: each solves a fixed-size batch of ``M`` points not yet
    certified (gathered, solved in the working dtype with a doubled candidate cap,
    scattered back). The iterate is the codes ``Z``; the state is the BCD iterate, the
    gaps, the KKT residuals, the rounds per point and the round counter ``k``."""

    P: _Problem
    Yc: Array
    B: Array
    thresh: Array
    M: int = eqx.field(static=True)
    cap: int = eqx.field(static=True)

    def init(self, Z, args):
        raise NotImplementedError("the gathered rounds start from the first round's state")

    def step(self, Z, state, args):
        Zit, gap, kkt, steps, k = state
        N = Z.shape[0]
        # Rotate the starting point so that slow points cannot starve the others.
        off = (k * self.M) % N
        nz = jnp.nonzero(jnp.roll(~(gap <= self.thresh), -off), size=self.M, fill_value=N)[0]
        sel = jnp.where(nz < N, (nz + off.astype(nz.dtype)) % N, N)
        t = jnp.minimum(sel, N - 1)
        pdas = (0, 4 * self.P.cfg.pdas_iter)
        out = _round(self.P, Zit[t], Z[t], gap[t], kkt[t], self.Yc[t], self.B[t], self.Yc.dtype,
                     self.cap, pdas, eval_bcd=True)  # fmt: skip
        put = dict(mode="drop", unique_indices=True)
        Zit, Z, gap, kkt = (a.at[sel].set(o, **put) for a, o in zip((Zit, Z, gap, kkt), out))
        return Z, (Zit, gap, kkt, steps.at[sel].add(1, **put), k + 1)

    def terminate(self, Z, state, args):
        return jnp.all(state[1] <= self.thresh), RESULTS.successful


def _path_start(P: _Problem, Yc, B, Z0, tol, cold: bool, path):
    """The exact homotopy for every point its warm start leaves uncertified."""
    N, K = Yc.shape[0], P.atoms.shape[0]
    rank = min(K, Yc.shape[1])
    warm = jnp.where(P.mask, jnp.maximum(Z0, 0), 0)
    if cold:
        todo = jnp.ones((N,), bool)
    else:
        todo = ~(_evaluate(P.atoms, Yc, warm, P.lam, P.mask).gap <= _threshold(Yc, tol))
    Zp, _, _ = path(B, P.G, P.mask, todo, P.lam, cap=rank, max_steps=8 * rank + 64)
    return jnp.where(todo[:, None], Zp, warm)


def _solve_chunk(P: _Problem, Yc, Z0, tol, max_steps: int, cold: bool, path):
    """Certified codes for a block of points.

    With ``path`` (``_lars_ffi.lars``, the compiled kernel, or ``_homotopy.homotopy``,
    the same path in pure JAX): the nonnegative homotopy solves
    every point exactly (``_lars.cc``), the duality gap certifies each, and only the
    points it leaves uncertified go on to the gathered rounds below. Without it,
    round 1 runs on every point, identifying supports in float32 (for float64
    problems) and solving once exactly on them. Later rounds (``_GatheredRounds`` on
    the shared driver) run until every point is certified or ``max_steps`` rounds
    have run.
    """
    dtype, N, K = Yc.dtype, Yc.shape[0], P.atoms.shape[0]
    ident = jnp.float32 if jnp.dtype(dtype).itemsize > 4 else dtype
    # float32 identification: 3 PDAS solves in float32, then 1 exact solve.
    pdas1 = (3, 1) if ident != dtype else (0, P.cfg.pdas_iter)
    B = Yc @ P.atoms.T
    if path is not None:
        Z0, cold = _path_start(P, Yc, B, Z0, tol, cold, path), False
    thresh = _threshold(Yc, tol)
    Z0 = jnp.where(P.mask, jnp.maximum(Z0, 0), 0)
    res0 = (
        kkt_from_parts(Z0, B, Yc, P.lam, P.mask)
        if cold
        else _evaluate(P.atoms, Yc, Z0, P.lam, P.mask)
    )
    gap0, kkt0 = res0.gap, res0.kkt
    done0 = gap0 <= thresh

    def first(_):
        Zit, Z, gap, kkt = _round(
            P, Z0, Z0, gap0, kkt0, Yc, B, ident, P.cfg.cap, pdas1, eval_bcd=False
        )
        keep = lambda a, b: jnp.where(done0.reshape(-1, *[1] * (a.ndim - 1)), a, b)  # noqa: E731
        return Zit, keep(Z0, Z), keep(gap0, gap), keep(kkt0, kkt)

    skip = (Z0, Z0, gap0, kkt0)
    if path is not None:  # the path was round 1; stragglers go to the gathered rounds
        Zit, Z, gap, kkt = skip
        steps = jnp.ones((N,), jnp.int32)
    else:
        Zit, Z, gap, kkt = jax.lax.cond(jnp.all(done0), lambda _: skip, first, None)
        steps = (~done0).astype(jnp.int32)
    M = min(N, max(64, -(-N // 64)))
    rounds = _GatheredRounds(P, Yc, B, thresh, M, P.cfg.wide_cap(K, Yc.shape[1]))
    state = (Zit, gap, kkt, steps, jnp.asarray(1, jnp.int32))
    sol = iterate(rounds, Z, None, max_steps=max_steps, state=state, steps_done=1)
    Z, (_, gap, kkt, steps, _) = sol.value, sol.state
    return Z, gap, kkt, gap <= thresh, steps
