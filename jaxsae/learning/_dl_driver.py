"""The host-side loop shared by ``learn_dictionary`` and ``sweep``.

The steps are compiled once (single run, or ``vmap`` over a leading runs axis);
the Python loop only fetches a few scalars per step for the history, the
progress bar and the stopping test. Finished runs are frozen inside the steps.
"""

from __future__ import annotations

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._dl_steps import alternating_step, lbfgs_step


@eqx.filter_jit
def _alternating(state, X, lam, mask, policy, free_bias, inner_steps, batched):
    f = lambda s, lm, m: alternating_step(s, X, lm, m, policy, free_bias, inner_steps)
    return jax.vmap(f)(state, lam, mask) if batched else f(state, lam, mask)


@eqx.filter_jit
def _lbfgs(
    state, X, lam, mask, tol, free_bias, code_tol, max_code_steps, max_backtracks, batched, start
):
    f = lambda s, lm, m: lbfgs_step(
        s, X, lm, m, tol, free_bias, code_tol, max_code_steps, max_backtracks, start=start
    )
    return jax.vmap(f)(state, lam, mask) if batched else f(state, lam, mask)


def run(state, X, lam, mask, *, cfg, batched: bool, progress: bool, checkpoint=None):
    """Run both phases; returns ``(state, history dict of numpy arrays)``.

    ``checkpoint`` (a ``_checkpoint_dl.DLCheckpointer``) restores the newest saved
    ``(state, history)`` first and saves after history entries; the number of
    entries fixes where the loop resumes, so a resumed run repeats no step.
    """
    from tqdm import tqdm

    hist = {"objective": [], "grad_norm": [], "alignment": [], "time": [], "phase": []}
    if checkpoint is not None:
        state, hist = checkpoint.restore(state, X, lam, mask, cfg)
    done = len(hist["objective"])
    t0 = time.perf_counter() - (float(hist["time"][-1]) if done else 0.0)

    def record(state, phase):
        v, g, a = jax.device_get((state.value, state.grad_norm, state.align))
        hist["objective"].append(v)
        hist["grad_norm"].append(g)
        hist["alignment"].append(a)
        hist["time"].append(time.perf_counter() - t0)
        hist["phase"].append(phase)
        if checkpoint is not None:
            checkpoint.after_entry(state, hist)
        return v, g

    bar = tqdm(
        total=cfg.warm_steps + cfg.max_steps,
        disable=not progress,
        desc="learn_dictionary",
        leave=False,
    )
    common = (cfg.free_bias,)
    bar.update(min(done, cfg.warm_steps + cfg.max_steps))
    for _ in range(min(done, cfg.warm_steps), cfg.warm_steps):
        state = _alternating(
            state,
            X,
            lam,
            mask,
            cfg.policy,
            *common,
            cfg.inner_steps,
            batched,
        )
        v, g = record(state, 0)
        bar.update(1)
        bar.set_postfix(F=f"{np.max(v):.6g}", phase="alternating")
    dtype = X.dtype
    lbfgs_args = (  # tolerances are values: a new one never recompiles
        jnp.asarray(cfg.tol, dtype),
        *common,
        jnp.asarray(cfg.code_tol, dtype),
        cfg.max_code_steps,
        cfg.max_backtracks,
    )
    if done <= cfg.warm_steps:  # phase 2 starts with exact codes (the same compiled step)
        state = _lbfgs(state, X, lam, mask, *lbfgs_args, batched, jnp.asarray(True))
        record(state, 1)
    for _ in range(max(0, done - cfg.warm_steps - 1), cfg.max_steps):
        if bool(np.all(jax.device_get(state.done))):
            break
        state = _lbfgs(state, X, lam, mask, *lbfgs_args, batched, jnp.asarray(False))
        v, g = record(state, 1)
        bar.update(1)
        bar.set_postfix(F=f"{np.max(v):.10g}", grad=f"{np.max(g):.2e}", phase="L-BFGS")
    bar.close()
    if checkpoint is not None:
        checkpoint.after_entry(state, hist, final=True)
    return state, {k: np.asarray(v) for k, v in hist.items()}
