"""Width × λ sweep of dictionary learning: one vmapped program vs a Python loop of runs.

Problem: 8×8 image patches (as in ``dictionary_learning.py``, fewer points), 7
widths (4–64) × 4 λ values × 2 seeds, 56 runs (``--quick``: 4 widths × 2 λ, one
seed). jaxsae's ``sweep`` pads every run to the largest width (atom masks) and
vmaps the learner's steps over the runs; the anchor is the loop a researcher
would write: ``learn_dictionary`` once per (width, λ, seed).
Both use the same settings (warm-up steps, L-BFGS steps, tolerance); each is
timed twice, so compilation (first call) is reported separately from the
steady-state run time (second call, everything cached).

Usage: python benchmarks/sweep.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from _harness import write_result

jax.config.update("jax_enable_x64", True)

from dictionary_learning import patches  # noqa: E402

import jaxsae  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    args = ap.parse_args()
    if args.quick:
        N, widths, lams, seeds, warm, steps = 400, [4, 8, 12, 16], [0.1, 0.2], [0], 10, 20
    else:
        N, widths, lams, seeds, warm, steps = (
            2000, [4, 8, 16, 24, 32, 48, 64], [0.05, 0.1, 0.2, 0.4], [0, 1], 20, 100,
        )  # fmt: skip
    X = jnp.asarray(patches(N))
    kw = dict(warm_steps=warm, max_steps=steps)
    print(
        f"patches N={N}, d={X.shape[1]}, widths={widths}, lams={lams}, seeds={seeds}: "
        f"{len(widths) * len(lams) * len(seeds)} runs",
        flush=True,
    )

    def vmapped():
        learner = jaxsae.DictionaryLearner(**kw)
        res = jaxsae.sweep(
            X, widths=widths, lams=lams, seeds=seeds, learner=learner, progress=False
        )
        jax.block_until_ready(res.objective)
        return res

    def loop():
        out = []
        for w in widths:
            for lam in lams:
                for seed in seeds:
                    D, h = jaxsae.learn_dictionary(X, w, lam, key=jax.random.key(seed),
                                                   progress=False, **kw)  # fmt: skip
                    out.append(float(h.objective[-1]))
        return out

    timings = {}
    for name, fn in (("sweep", vmapped), ("loop", loop)):
        t0 = time.perf_counter()
        first = fn()
        t1 = time.perf_counter()
        fn()
        t2 = time.perf_counter()
        timings[name] = {"first_s": t1 - t0, "run_s": t2 - t1, "compile_s": (t1 - t0) - (t2 - t1)}
        if name == "sweep":
            res = first
        else:
            loop_obj = np.asarray(first)
        print(f"{name:6s} first call {t1 - t0:8.2f} s   steady {t2 - t1:8.2f} s", flush=True)
    diff = float(np.max(np.abs(np.asarray(res.objective) - loop_obj)))
    ratio = timings["loop"]["run_s"] / timings["sweep"]["run_s"]
    ratio_first = timings["loop"]["first_s"] / timings["sweep"]["first_s"]
    print(f"speed-up (loop / sweep): steady {ratio:.2f}x, including compilation {ratio_first:.2f}x")
    print(f"max |objective(sweep) − objective(loop)| = {diff:.2e}")
    print(f"runs first-order stationary: {int(np.sum(np.asarray(res.converged)))}/{len(res)}")
    write_result(
        "sweep_quick" if args.quick else "sweep",
        {
            "problem": {
                "N": N,
                "d": int(X.shape[1]),
                "widths": widths,
                "lams": lams,
                "seeds": seeds,
                "warm_steps": warm,
                "max_steps": steps,
            },
            "timings": timings,
            "speedup_steady": ratio,
            "speedup_with_compile": ratio_first,
            "max_objective_difference": diff,
            "table": res.rows(),
        },
    )


if __name__ == "__main__":
    main()
