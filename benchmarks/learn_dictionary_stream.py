"""Streamed ``learn_dictionary`` against the in-memory learner on the same problem.

The anchor is jaxsae's own in-memory ``learn_dictionary`` (data and N × K codes
on the device): the streamed run (a float64 memmap, fixed-size chunks, codes in
temporary files) reaches the same optimum from the same initialisation, and the
price of bounded memory is one host round trip per chunk and pass. Also timed:
one certified-codes pass at the learned dictionary warm-started from the code
cache vs cold-started from zero (why the streamed learner keeps a code cache).
Ratios (anchor / jaxsae, > 1: the streamed learner is faster): in-memory time /
streamed time, and cold-pass time / warm-pass time.
Times exclude compilation (one warm-up run each).

    python benchmarks/learn_dictionary_stream.py            # N=50000, d=32, K=64
    python benchmarks/learn_dictionary_stream.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _harness import best_time, write_result  # noqa: E402

import jaxsae  # noqa: E402
from jaxsae.learning import _dl_stream  # noqa: E402
from jaxsae.learning._dl_stream_source import CodeCache  # noqa: E402
from jaxsae.learning._dl_stream_steps import certified_chunk  # noqa: E402

LAM = 0.1


def problem(N, d, K, seed=0):
    rng = np.random.default_rng(seed)
    truth = rng.standard_normal((K, d))
    truth /= np.linalg.norm(truth, axis=1, keepdims=True)
    Z = rng.exponential(1.0, (N, K)) * (rng.random((N, K)) < 4 / K)
    X = Z @ truth + 0.02 * rng.standard_normal((N, d))
    init = X[rng.choice(N, K, replace=False)] + 0.3 * rng.standard_normal((K, d))
    return X, init / np.linalg.norm(init, axis=1, keepdims=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    args = ap.parse_args()
    N, d, K, chunk = (4000, 16, 16, 1024) if args.quick else (50000, 32, 64, 8192)
    X, init = problem(N, d, K)
    init = jaxsae.Dictionary(jnp.asarray(init))
    kw = dict(key=jax.random.key(0), init=init, progress=False, max_steps=300)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "X.npy"
        np.save(path, X)
        Xm = np.load(path, mmap_mode="r")
        out = {}

        def in_memory():
            out["mem"] = jaxsae.learn_dictionary(jnp.asarray(X), K, LAM, **kw)
            jax.block_until_ready(out["mem"][0].atoms)

        def streamed():
            out["stream"] = jaxsae.learn_dictionary(Xm, K, LAM, chunk_size=chunk, **kw)
            jax.block_until_ready(out["stream"][0].atoms)

        t_mem = best_time(in_memory, repeat=1)
        t_stream = best_time(streamed, repeat=1)
        (D0, h0), (D1, h1) = out["mem"], out["stream"]

        # One certified-codes pass at the learned dictionary: warm vs cold start.
        stream = _dl_stream.open_stream(Xm, chunk)
        P = jnp.concatenate([D1.atoms, D1.bias[None]], axis=0)
        lam, mask = jnp.asarray(LAM), D1.mask
        warm = CodeCache(chunk, K, np.float64)
        args_ = (P, lam, mask, 1e-14, 200)
        _dl_stream.stream_pass(stream, certified_chunk, args_, warm, warm)  # fill the cache

        def one_pass(cache_in):
            cache_out = CodeCache(chunk, K, np.float64)
            sums, _ = _dl_stream.stream_pass(stream, certified_chunk, args_, cache_in, cache_out)
            jax.block_until_ready(sums)
            cache_out.close()

        t_warm = best_time(lambda: one_pass(warm), repeat=3)
        t_cold = best_time(lambda: one_pass(CodeCache(chunk, K, np.float64)), repeat=3)
        warm.close()

    res = {
        "size": {"N": N, "d": d, "K": K, "chunk_size": chunk, "lam": LAM, "dtype": "float64"},
        "in_memory_s": t_mem,
        "streamed_s": t_stream,
        "speedup_vs_in_memory": t_mem / t_stream,
        "steps_in_memory": int(h0.objective.shape[0]),
        "steps_streamed": int(h1.objective.shape[0]),
        "objective_diff": float(abs(h1.objective[-1] - h0.objective[-1])),
        "atoms_max_diff": float(jnp.max(jnp.abs(D1.atoms - D0.atoms))),
        "converged": [bool(h0.converged), bool(h1.converged)],
        "pass_warm_s": t_warm,
        "pass_cold_s": t_cold,
        "warm_start_speedup": t_cold / t_warm,
        "quick": bool(args.quick),
        "when": time.strftime("%Y-%m-%d %H:%M"),
    }
    write_result("learn_dictionary_stream" + ("_quick" if args.quick else ""), res)
    print(
        f"N={N} d={d} K={K}: in-memory {t_mem:.2f} s, streamed {t_stream:.2f} s "
        f"(in-memory / streamed {t_mem / t_stream:.2f}); |ΔF| {res['objective_diff']:.1e}, "
        f"|Δatoms| {res['atoms_max_diff']:.1e}; certified pass warm {t_warm:.3f} s, "
        f"cold {t_cold:.3f} s (cold/warm {t_cold / t_warm:.2f})"
    )


if __name__ == "__main__":
    main()
