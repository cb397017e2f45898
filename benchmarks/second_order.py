"""Second-order certificate benchmark (THEORY §4).

Time to the smallest Riemannian-Hessian eigenvalue (relative accuracy 1e-4) for
d=64, K=512, N=20000 (float64, CPU; 32256 tangent dimensions, so the Lanczos
estimate), the cost of one Hessian-vector product relative to one gradient
evaluation, and the same eigenvalue computed by the anchor, ARPACK
(``scipy.sparse.linalg.eigsh``, which='SA') driving the same jitted HVP.

The "dense" rows measure the verified path (the Hessian assembled from HVPs,
``eigh``, and the Cholesky proof) against Lanczos at growing tangent dimension
(d = 64, K up to 65, N = 8192): the cost that fixes ``DENSE_MAX``.

    python benchmarks/second_order.py            # full size
    python benchmarks/second_order.py --small    # smoke run
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _harness import best_time, write_result  # noqa: E402

import jaxsae  # noqa: E402
from jaxsae.certificates._hessian import frozen_gradient  # noqa: E402
from jaxsae.certificates._second_order import _prepare  # noqa: E402


def problem(d, K, N, k_active, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(K, d))
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    Z = np.zeros((N, K))
    rows = np.repeat(np.arange(N), k_active)
    Z[rows, rng.integers(0, K, size=N * k_active)] = rng.uniform(0.5, 1.5, size=N * k_active)
    X = Z @ A + 0.01 * rng.normal(size=(N, d))
    return jaxsae.Dictionary(A), jnp.asarray(X)


def dense_rows(small: bool) -> list[dict]:
    """Verified (dense) vs estimated (Lanczos) second order at growing tangent dimension."""
    rows = []
    d, N = (16, 2000) if small else (64, 8192)
    for K in (4, 8, 16) if small else (8, 16, 33, 65):
        D, X = problem(d, K, N, 3, seed=K)
        codes = jaxsae.sparse_code(D, X, 0.1).codes
        kw = dict(codes=codes, chunk_size=4096, dense_max=10**6)
        jaxsae.second_order(D, X[:256], 0.1, codes=codes[:256], dense_max=10**6)  # compile
        t0 = time.perf_counter()
        dense = jaxsae.second_order(D, X, 0.1, **kw)
        t_dense = time.perf_counter() - t0
        t0 = time.perf_counter()
        lz = jaxsae.second_order(D, X, 0.1, codes=codes, chunk_size=4096, dense_max=0)
        t_lz = time.perf_counter() - t0
        row = {
            "K": K, "d": d, "N": N, "tangent_dimension": dense.tangent_dimension,
            "time_dense_s": t_dense, "time_lanczos_s": t_lz,
            "dense_over_lanczos": t_dense / t_lz, "lower_bound": dense.lower_bound,
            "min_eigenvalue": float(dense.min_eigenvalue),
            "lanczos_min_eigenvalue": float(lz.min_eigenvalue),
            "error_bound": dense.error_bound,
        }  # fmt: skip
        print(
            f"dense p={row['tangent_dimension']}: {t_dense:.1f} s (proved ≥ {dense.lower_bound:.4g}, "
            f"margin {dense.error_bound:.1e}); Lanczos {t_lz:.1f} s",
            flush=True,
        )
        rows.append(row)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", action="store_true")
    args = ap.parse_args()
    d, K, N = (16, 64, 2000) if args.small else (64, 512, 20000)
    lam, chunk = 0.1, 5000
    D, X = problem(d, K, N, 5)
    t0 = time.perf_counter()
    codes = jaxsae.sparse_code(D, X, lam, chunk_size=chunk).codes.block_until_ready()
    t_codes = time.perf_counter() - t0
    print(f"codes: {t_codes:.1f} s", flush=True)

    t0 = time.perf_counter()
    res = jaxsae.second_order(D, X, lam, codes=codes, chunk_size=chunk, tol=1e-4)
    t_first = time.perf_counter() - t0
    print(f"second_order (first call, with compilation): {t_first:.1f} s", flush=True)
    t_eig = best_time(
        lambda: jaxsae.second_order(D, X, lam, codes=codes, chunk_size=chunk, tol=1e-4),
        repeat=1,
        warmup=0,
    )

    H = _prepare(D, X, lam, codes, chunk, 1e-6)[1]
    grad_jit = jax.jit(lambda fs, A, b, lam: frozen_gradient(fs, A, b, lam))
    hvp_jit = eqx.filter_jit(lambda H, v: H.flat_mv(v))

    def grad(A, b):
        return grad_jit(H.fs, A, b, H.lam)

    def hvp(v):
        return hvp_jit(H, v)

    v = H.tangent.flat_project(jax.random.normal(jax.random.key(1), (K * d + d,)))
    t_grad = best_time(lambda: jax.block_until_ready(grad(D.atoms, D.bias)), repeat=5)
    t_hvp = best_time(lambda: hvp(v).block_until_ready(), repeat=5)
    # context: the plain dense envelope gradient −Zᵀ(X − b − ZD)/N at fixed dense codes
    dense_grad = jax.jit(lambda Z, A, b: -(Z.T @ (X - b - Z @ A)) / N)
    t_dense = best_time(lambda: dense_grad(codes, D.atoms, D.bias).block_until_ready(), repeat=5)

    # anchor: ARPACK on the same operator, restricted to the tangent basis implicitly
    from scipy.sparse.linalg import LinearOperator, eigsh

    n = K * d + d
    shift = 2.0 * res.largest_eigenvalue

    def mv(x):  # (shift·P − H) on the tangent space; 0 ⊥ to it, so its top eigenpair is λ_min's
        x = jnp.asarray(x)
        return np.asarray(shift * H.tangent.flat_project(x) - hvp(H.tangent.flat_project(x)))

    op = LinearOperator((n, n), matvec=mv, dtype=np.float64)
    t0 = time.perf_counter()
    top = eigsh(op, k=1, which="LA", tol=1e-6, v0=np.asarray(v))[0][0]
    t_arpack = time.perf_counter() - t0
    lam_arpack = shift - top

    out = {
        "d": d,
        "K": K,
        "N": N,
        "lam": lam,
        "params": K * d,
        "time_codes_s": t_codes,
        "time_second_order_first_call_s": t_first,
        "time_second_order_s": t_eig,
        "lanczos_steps": res.steps,
        "min_eigenvalue": float(res.min_eigenvalue),
        "min_eigenvalue_arpack": float(lam_arpack),
        "eigen_residual": float(jnp.max(res.residuals)),
        "time_gradient_s": t_grad,
        "time_hvp_s": t_hvp,
        "hvp_over_gradient": t_hvp / t_grad,
        "time_dense_gradient_s": t_dense,
        "hvp_over_dense_gradient": t_hvp / t_dense,
        "time_arpack_s": t_arpack,
        "ratio_vs_arpack": t_eig / t_arpack,
        "verdict": res.verdict,
    }
    out["dense"] = dense_rows(args.small)
    path = write_result("second_order" + ("_small" if args.small else ""), out)
    print(res.table())
    print(
        f"HVP / gradient = {t_hvp / t_grad:.2f}  (target ≤ 4); "
        f"HVP / dense gradient −Zᵀ R/N = {t_hvp / t_dense:.2f}"
    )
    print(f"λ_min: lanczos {float(res.min_eigenvalue):.8g} vs ARPACK {lam_arpack:.8g}")
    print(
        f"time to λ_min: {t_eig:.2f} s; ARPACK on the same HVP: {t_arpack:.2f} s "
        f"(ratio {t_eig / t_arpack:.2f})"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
