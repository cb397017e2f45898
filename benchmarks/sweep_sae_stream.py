"""Streamed ``sweep(learner=SAETrainer())`` against the in-memory SAE sweep on the same problem.

The anchor is jaxsae's own in-memory SAE sweep (data on the device, minibatches
gathered inside one compiled scan). The streamed sweep reads the same
minibatches from a memmap in segments of ``chunk_size`` rows (host gather, one
transfer and one scan per segment) and must give the same table; the price of
bounded memory is the host gather and one dispatch per segment. Ratio
(anchor / jaxsae, > 1: streamed is faster): in-memory time / streamed time.
Times exclude compilation (one warm-up run each).

    python benchmarks/sweep_sae_stream.py            # N=100000, d=64, widths 64,128
    python benchmarks/sweep_sae_stream.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from _harness import best_time, write_result

import jaxsae


def problem(N, d, seed=0):
    rng = np.random.default_rng(seed)
    n_feat = 2 * d
    truth = rng.standard_normal((n_feat, d))
    truth /= np.linalg.norm(truth, axis=1, keepdims=True)
    Z = rng.exponential(1.0, (N, n_feat)) * (rng.random((N, n_feat)) < 4 / n_feat)
    return (Z @ truth + 0.02 * rng.standard_normal((N, d))).astype(np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    args = ap.parse_args()
    if args.quick:
        N, d, widths, steps, B, chunk = 4000, 16, (8, 16), 200, 128, 2048
    else:
        N, d, widths, steps, B, chunk = 100_000, 64, (64, 128), 2000, 256, 8192
    X = problem(N, d)
    kw = dict(
        widths=widths, lams=(0.05, 0.1), seeds=(0,), progress=False,
        learner=jaxsae.SAETrainer(steps=steps, batch_size=B, lr=1e-3),
    )  # fmt: skip
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "X.npy"
        np.save(path, X)
        Xm = np.load(path, mmap_mode="r")

        def in_memory():
            out["mem"] = jaxsae.sweep(jnp.asarray(X), **kw)
            jax.block_until_ready(out["mem"].objective)

        def streamed():
            out["stream"] = jaxsae.sweep(Xm, chunk_size=chunk, **kw)
            jax.block_until_ready(out["stream"].objective)

        t_mem = best_time(in_memory, repeat=1)
        t_stream = best_time(streamed, repeat=1)
    mem, st = out["mem"], out["stream"]
    res = {
        "size": {
            "N": N,
            "d": d,
            "widths": list(widths),
            "lams": [0.05, 0.1],
            "steps": steps,
            "batch_size": B,
            "chunk_size": chunk,
            "dtype": "float32",
        },  # fmt: skip
        "in_memory_s": t_mem,
        "streamed_s": t_stream,
        "speed_ratio_in_memory_over_streamed": t_mem / t_stream,
        "objective_max_rel_diff": float(
            jnp.max(jnp.abs(st.objective - mem.objective) / jnp.abs(mem.objective))
        ),
        "atoms_max_diff": float(jnp.max(jnp.abs(st.atoms - mem.atoms))),
        "quick": bool(args.quick),
        "when": time.strftime("%Y-%m-%d %H:%M"),
    }
    write_result("sweep_sae_stream" + ("_quick" if args.quick else ""), res)
    print(
        f"N={N} d={d} widths={widths} steps={steps} B={B} chunk={chunk}: in-memory "
        f"{t_mem:.2f} s, streamed {t_stream:.2f} s (in-memory / streamed "
        f"{t_mem / t_stream:.2f}); objective rel. diff {res['objective_max_rel_diff']:.1e}, "
        f"|Δatoms| {res['atoms_max_diff']:.1e}"
    )


if __name__ == "__main__":
    main()
