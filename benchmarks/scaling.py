"""Scaling benchmark: time and memory against N, d and K.

Times ``sparse_code``, ``certify``, one Riemannian-Hessian-vector product
(THEORY §4) and one SAE training step (Adam, L1) on planted sparse data, varying
one size at a time around a base problem, fits the exponent ``t ∝ size^p`` by
least squares on log-log axes, and records XLA's compiled memory (arguments +
temporaries + outputs) for the jitted call. A streaming section certifies a
float32 memmap in a child process and records its peak RSS (``VmHWM``) against
the size of the file; the full run uses 2·10⁶ × 256 (2 GB). The anchor is
scikit-learn's ``sparse_encode(lasso_cd, positive=True)`` on the base problem.
With a GPU (``jax.default_backend() == "gpu"``) a second, larger grid runs too.

    python benchmarks/scaling.py            # full grid, 2 GB stream demo
    python benchmarks/scaling.py --small    # smoke run (seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _harness import RESULTS, best_time, write_result

import jaxsae
from jaxsae.certificates._second_order import _prepare
from jaxsae.learning._sae_step import _loss

LAM = 0.1


def problem(N, d, K, k_active=4, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(K, d))
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    Z = np.zeros((N, K))
    rows = np.repeat(np.arange(N), k_active)
    Z[rows, rng.integers(0, K, size=N * k_active)] = rng.uniform(0.5, 1.5, size=N * k_active)
    X = Z @ A + 0.01 * rng.normal(size=(N, d))
    return jaxsae.Dictionary(A.astype(dtype)), jnp.asarray(X, dtype)


def _memory(fn, *args) -> int:
    """Bytes XLA plans for the jitted call: arguments + temporaries + outputs."""
    try:
        m = jax.jit(fn).lower(*args).compile().memory_analysis()
        return int(m.argument_size_in_bytes + m.temp_size_in_bytes + m.output_size_in_bytes)
    except Exception:  # memory analysis is backend-dependent
        return -1


def measure(N, d, K, repeat):
    """Seconds and bytes of each operation at one size."""
    D, X = problem(N, d, K)
    lam = jnp.asarray(LAM, X.dtype)
    out = {}

    def code(D, X):
        return jaxsae.sparse_code(D, X, lam).codes

    def cert(D, X):
        return jaxsae.certify(D, X, lam).objective

    for name, fn in (("sparse_code", code), ("certify", cert)):
        jitted = jax.jit(fn)
        out[name] = {
            "seconds": best_time(lambda f=jitted: jax.block_until_ready(f(D, X)), repeat=repeat),
            "bytes": _memory(fn, D, X),
        }
    Z = jaxsae.sparse_code(D, X, lam).codes
    H = _prepare(D, X, lam, Z, None, None, None).hessian
    v = H.tangent.basis(1)[0]
    hvp = jax.jit(lambda H, v: H.flat_mv(v))
    out["hvp"] = {
        "seconds": best_time(lambda: jax.block_until_ready(hvp(H, v)), repeat=repeat),
        "bytes": _memory(lambda H, v: H.flat_mv(v), H, v),
    }
    sae = jaxsae.SAE.init(d, K, jaxsae.ReLU(), key=jax.random.key(0), decoder_norm=1.0)
    sae = jax.tree.map(lambda a: a.astype(X.dtype) if eqx_is_float(a) else a, sae)
    opt = optax.adam(1e-3)
    state = opt.init(sae)

    def step(sae, state, X):
        (loss, _), g = jax.value_and_grad(_loss, has_aux=True)(sae, X, lam, jaxsae.L1())
        updates, state = opt.update(g, state, sae)
        return optax.apply_updates(sae, updates), state, loss

    jstep = jax.jit(step)
    out["sae_step"] = {
        "seconds": best_time(lambda: jax.block_until_ready(jstep(sae, state, X)), repeat=repeat),
        "bytes": _memory(step, sae, state, X),
    }
    return out


def eqx_is_float(a) -> bool:
    return isinstance(a, jax.Array) and jnp.issubdtype(a.dtype, jnp.floating)


def fit_exponent(sizes, times) -> float:
    """Slope of log(time) against log(size) by least squares."""
    x, y = np.log(np.asarray(sizes, float)), np.log(np.asarray(times, float))
    return float(np.polyfit(x, y, 1)[0])


def grid(base, axes, repeat):
    results = {}
    for axis, values in axes.items():
        rows = []
        for v in values:
            size = {**base, axis: v}
            t0 = time.perf_counter()
            rows.append({**size, **measure(size["N"], size["d"], size["K"], repeat)})
            print(f"  {axis}={v}: {time.perf_counter() - t0:.1f} s", flush=True)
        ops = [k for k in rows[0] if k not in ("N", "d", "K")]
        exps = {op: fit_exponent(values, [r[op]["seconds"] for r in rows]) for op in ops}
        results[axis] = {"values": list(values), "rows": rows, "exponent": exps}
        print(f"{axis}: exponents " + ", ".join(f"{k} {v:.2f}" for k, v in exps.items()))
    return results


def anchor_ratio(base):
    """scikit-learn sparse_encode time / jaxsae sparse_code time on the base problem."""
    from sklearn.decomposition import sparse_encode

    D, X = problem(base["N"], base["d"], base["K"], dtype=np.float64)
    A, Xn = np.asarray(D.atoms), np.asarray(X)
    t0 = time.perf_counter()
    sparse_encode(Xn, A, algorithm="lasso_cd", alpha=LAM, positive=True, max_iter=10000)
    t_anchor = time.perf_counter() - t0
    lam = jnp.asarray(LAM, X.dtype)
    code = jax.jit(lambda D, X: jaxsae.sparse_code(D, X, lam).codes)
    t_ours = best_time(lambda: jax.block_until_ready(code(D, X)), repeat=1)
    return {"sklearn_seconds": t_anchor, "jaxsae_seconds": t_ours, "ratio": t_anchor / t_ours}


STREAM_CHILD = textwrap.dedent(
    """
    import sys, time, numpy as np, jax
    import jaxsae
    path, K, chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM"):
                return int(line.split()[1]) * 1024
    X = np.load(path, mmap_mode="r")
    rng = np.random.default_rng(1)
    D = jaxsae.Dictionary(rng.normal(size=(K, X.shape[1])).astype(np.float32))
    jaxsae.certify(D, X[: 2 * chunk], 0.1, chunk_size=chunk)  # compile first
    before = hwm()
    t0 = time.perf_counter()
    cert = jaxsae.certify(D, X, 0.1, chunk_size=chunk)
    seconds = time.perf_counter() - t0
    print(before, hwm(), seconds, float(cert.objective))
    """
)


def stream_demo(N, d, K, chunk):
    """Peak RSS of certifying an (N, d) float32 memmap in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "x.npy")
        X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(N, d))
        rng = np.random.default_rng(0)
        for i in range(0, N, 1 << 16):
            n = min(1 << 16, N - i)
            X[i : i + n] = rng.standard_normal((n, d), dtype=np.float32) * 0.3
        X.flush()
        del X
        out = subprocess.run(
            [sys.executable, "-c", STREAM_CHILD, path, str(K), str(chunk)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    before, peak, seconds, obj = out.stdout.split()[-4:]
    data = N * d * 4
    res = {"N": N, "d": d, "K": K, "chunk": chunk, "data_bytes": data}
    res |= {"rss_before_bytes": int(before), "peak_rss_bytes": int(peak)}
    res |= {"seconds": float(seconds), "objective": float(obj)}
    res["peak_rss_over_data"] = int(peak) / data
    print(f"stream: {N}×{d} float32 ({data / 2**30:.2f} GiB), peak RSS {int(peak) / 2**30:.3f} GiB")
    return res


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes = results["cpu"]
    fig, ax = plt.subplots(1, len(axes), figsize=(4 * len(axes), 3.4), squeeze=False)
    for a, (axis, r) in zip(ax[0], axes.items(), strict=True):
        for op, p in r["exponent"].items():
            a.loglog(
                r["values"],
                [row[op]["seconds"] for row in r["rows"]],
                "o-",
                label=f"{op} ({p:.2f})",
            )
        a.set_xticks(r["values"], [str(v) for v in r["values"]])  # the grid, not log minors
        a.minorticks_off()
        a.set_xlabel(axis)
        a.set_ylabel("seconds")
        a.legend(fontsize=7)
    fig.suptitle("jaxsae scaling (fitted exponent in brackets)")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", action="store_true")
    args = parser.parse_args()
    if args.small:
        base, repeat = {"N": 512, "d": 16, "K": 32}, 1
        axes = {"N": [256, 1024]}  # each size compiles four programs: keep the smoke run short
        stream = (100_000, 64, 8, 4096)
    else:
        base, repeat = {"N": 4096, "d": 64, "K": 256}, 3
        axes = {
            "N": [1024, 2048, 4096, 8192, 16384],
            "d": [32, 64, 128, 256],
            "K": [128, 256, 512, 1024],
        }
        stream = (2_000_000, 256, 64, 4096)
    results = {"cpu_base": base, "cpu": grid(base, axes, repeat)}
    results["anchor"] = anchor_ratio(base)
    print(f"anchor: sklearn / jaxsae sparse coding = {results['anchor']['ratio']:.2f}")
    results["stream"] = stream_demo(*stream)
    if jax.default_backend() == "gpu":
        gbase = {"N": 65536, "d": 256, "K": 4096}
        gaxes = {"N": [16384, 65536, 262144], "K": [1024, 4096, 16384]}
        results["gpu"] = grid(gbase, gaxes, repeat)
    name = "scaling_small" if args.small else "scaling"
    write_result(name, results)
    plot(results, RESULTS / f"{name}.png")
    print(json.dumps({"anchor_ratio": results["anchor"]["ratio"]}))


if __name__ == "__main__":
    main()
