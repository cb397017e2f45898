"""The dictionary learner as two solvers on the shared driver (``solvers/_iterate``).

``learn_dictionary`` and ``sweep`` run two phases, each an ``AbstractIterativeSolver``
driven by ``iterate`` on the host loop (a few scalars per step feed the history,
the progress bar, the stopping test and the checkpoints):

1. ``Alternating``: ``warm_steps`` of alternating minimisation;
2. ``RiemannianLBFGS``: L-BFGS on F until both first-order measures meet ``tol``.

*Where the data lives* is the solvers' ``data`` strategy, with two methods,
``alternating(state, lam, mask, cfg)`` and ``lbfgs(state, lam, mask, cfg, start)``:
``ResidentData`` (here: compiled steps, a single run or ``vmap`` over a leading runs
axis) and ``StreamedData`` (``_dl_stream``: one pass over the chunks per trial point).
The L-BFGS step itself is written once (``_dl_steps.lbfgs_step``).
"""

from __future__ import annotations

import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..solvers._iterate import AbstractIterativeSolver, Compiled, Host, iterate
from ..solvers._results import RESULTS
from ._dl_setup import initial_point
from ._dl_steps import alternating_step, init_state, lbfgs_step, resident_trial


@eqx.filter_jit
def _alternating(state, X, lam, mask, policy, free_bias, inner_steps, batched):
    f = lambda s, lm, m: alternating_step(s, X, lm, m, policy, free_bias, inner_steps)
    return jax.vmap(f)(state, lam, mask) if batched else f(state, lam, mask)


@eqx.filter_jit
def _lbfgs(state, X, lam, mask, tol, free_bias, code_tol, max_code_steps, max_backtracks, batched,
           start):  # fmt: skip
    def f(s, lm, m):
        trial, measure = resident_trial(s, X, lm, m, free_bias, code_tol, max_code_steps)
        return lbfgs_step(s, trial, Compiled(), tol=tol, max_backtracks=max_backtracks,
                          start=start, measure=measure)[0]  # fmt: skip

    return jax.vmap(f)(state, lam, mask) if batched else f(state, lam, mask)


class ResidentData(eqx.Module):
    """Data in memory: both phases' steps are single compiled functions (``batched``:
    ``vmap`` over a leading runs axis of the state, λ and masks)."""

    X: jax.Array
    batched: bool = eqx.field(static=True)
    desc: str = eqx.field(static=True, default="learn_dictionary")

    @property
    def dtype(self):
        return self.X.dtype

    def initial_point(self, n_atoms, init, bias: bool, *, key):
        return initial_point(self.X, n_atoms, init, bias, key=key)

    def initial_state(self, P, memory: int):
        return init_state(P, self.X, memory)

    def close(self):
        pass

    def alternating(self, state, lam, mask, cfg):
        free_bias = jnp.asarray(cfg.free_bias)  # a value: both settings share one program
        return _alternating(state, self.X, lam, mask, cfg.policy, free_bias, cfg.inner_steps,
                            self.batched)  # fmt: skip

    def lbfgs(self, state, lam, mask, cfg, start: bool):
        dtype, free_bias = self.X.dtype, jnp.asarray(cfg.free_bias)
        # tolerances and the bias flag are values: a new one never recompiles
        return _lbfgs(state, self.X, lam, mask, jnp.asarray(cfg.tol, dtype), free_bias,
                      jnp.asarray(cfg.code_tol, dtype), cfg.max_code_steps, cfg.max_backtracks,
                      self.batched, jnp.asarray(start))  # fmt: skip


class _Phase(AbstractIterativeSolver):
    """A phase of the learner: the iterate is ``P = [atoms; bias]``, the state the
    ``DLState`` (codes, L-BFGS memory, measures); ``args = (lam, mask)``. It stops when
    every run is done (converged or stalled: ``finish`` tells which)."""

    data: Any
    cfg: Any

    def init(self, P, args):
        raise NotImplementedError("the learner's phases start from a given state")

    def terminate(self, P, state, args):
        return jnp.all(state.done), RESULTS.successful


class Alternating(_Phase):
    """Phase 1: codes by a few FISTA steps, an exact atom pass (A'), the dead-atom policy."""

    def step(self, P, state, args):
        state = self.data.alternating(state, *args, self.cfg)
        return state.P, state


class RiemannianLBFGS(_Phase):
    """Phase 2: Riemannian L-BFGS on ``F(D, b) = min_Z L`` (``_dl_steps.lbfgs_step``)."""

    def start(self, state, args):
        """The phase's first state: memory cleared, codes certified at the current point."""
        return self.data.lbfgs(state, *args, self.cfg, start=True)

    def step(self, P, state, args):
        state = self.data.lbfgs(state, *args, self.cfg, start=False)
        return state.P, state


def run(data, state, lam, mask, *, cfg, progress: bool, checkpoint=None):
    """Run both phases; returns ``(state, history dict of numpy arrays)``.

    ``checkpoint`` (a ``_checkpoint_dl.DLCheckpointer``) restores the newest saved
    ``(state, history)`` first and saves after history entries; the number of
    entries fixes where the loop resumes (``warm_steps`` alternating entries, one for
    the start of L-BFGS, then one per step), so a resumed run repeats no step.
    """
    from tqdm import tqdm

    hist = {"objective": [], "grad_norm": [], "alignment": [], "time": [], "phase": []}
    if checkpoint is not None:
        state, hist = checkpoint.restore(state, data.X, lam, mask, cfg)
    done = len(hist["objective"])
    t0 = time.perf_counter() - (float(hist["time"][-1]) if done else 0.0)
    total = cfg.warm_steps + cfg.max_steps
    bar = tqdm(
        total=total, initial=min(done, total), disable=not progress, desc=data.desc, leave=False
    )

    def recorder(phase, tick=True):
        def record(k, P, state):
            v, g, a = jax.device_get((state.value, state.grad_norm, state.align))
            entry = {"objective": v, "grad_norm": g, "alignment": a, "phase": phase}
            for name, x in {**entry, "time": time.perf_counter() - t0}.items():
                hist[name].append(x)
            if checkpoint is not None:
                checkpoint.after_entry(state, hist)
            if tick:
                bar.update(1)
                if phase:
                    bar.set_postfix(F=f"{np.max(v):.10g}", grad=f"{np.max(g):.2e}", phase="L-BFGS")
                else:
                    bar.set_postfix(F=f"{np.max(v):.6g}", phase="alternating")

        return record

    args = (lam, mask)
    with bar:
        if done < cfg.warm_steps:
            state = iterate(Alternating(data, cfg), state.P, args, max_steps=cfg.warm_steps,
                            loop=Host(), state=state, steps_done=done,
                            on_step=recorder(0)).state  # fmt: skip
        lbfgs = RiemannianLBFGS(data, cfg)
        if done <= cfg.warm_steps:
            state = lbfgs.start(state, args)
            recorder(1, tick=False)(0, state.P, state)
        steps_done = max(0, done - cfg.warm_steps - 1)
        state = iterate(lbfgs, state.P, args, max_steps=cfg.max_steps, loop=Host(), state=state,
                        steps_done=steps_done, on_step=recorder(1)).state  # fmt: skip
    if checkpoint is not None:
        checkpoint.after_entry(state, hist, final=True)
    return state, {k: np.asarray(v) for k, v in hist.items()}
