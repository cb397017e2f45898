"""First-order certificate benchmark (THEORY §1–§3, §6).

Time for ``jaxsae.certify`` (optimal codes, duality gaps, per-atom (A) residuals,
the K×K (P) matrices, (R) shrinkage, (W)) against what a researcher would do
today: scikit-learn's ``sparse_encode(algorithm="lasso_cd", positive=True)`` for
the codes plus NumPy for the atom gradients, (A), (P) and (W) — the same
numbers except the per-point (R) decomposition, so the anchor does less work.
Both are judged by the KKT residual of their codes.

    python benchmarks/certify.py            # d=64, K=256, N=8192
    python benchmarks/certify.py --small    # smoke run
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _harness import best_time, write_result  # noqa: E402

import jaxsae  # noqa: E402


def problem(d, K, N, k_active, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(K, d))
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    Z = np.zeros((N, K))
    rows = np.repeat(np.arange(N), k_active)
    Z[rows, rng.integers(0, K, size=N * k_active)] = rng.uniform(0.5, 1.5, size=N * k_active)
    return A, Z @ A + 0.01 * rng.normal(size=(N, d))


def anchor(A, X, lam):
    """scikit-learn codes + NumPy first-order numbers."""
    from sklearn.decomposition import sparse_encode

    Z = sparse_encode(X, A, algorithm="lasso_cd", alpha=lam, positive=True, max_iter=10000)
    R = X - Z @ A
    G = R @ A.T
    N = X.shape[0]
    c = Z.T @ R
    l1 = Z.sum(0)
    live = l1 > 0
    align = np.where(
        live, np.linalg.norm(A - c / (lam * np.where(live, l1, 1))[:, None], axis=1), 0
    )
    radial = np.sum(A * c, axis=1)
    grad = np.linalg.norm(c - radial[:, None] * A, axis=1) / N
    slack = np.where(Z > 0, 0, lam - G)
    P = (Z.T @ slack - lam * (1 - A @ A.T) * l1[:, None]) / N
    t = np.linalg.norm(X, axis=1)
    wide = np.mean(np.where(t <= lam, 0.5 * t * t, lam * t - 0.5 * lam**2))
    kkt = np.max(np.abs(np.minimum(Z, lam - G))) / lam
    return {"alignment": align, "grad": grad, "P": P, "wide": wide, "kkt": kkt}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", action="store_true")
    args = ap.parse_args()
    d, K, N = (16, 32, 1000) if args.small else (64, 256, 8192)
    lam = 0.1
    A, X = problem(d, K, N, 5)
    D, Xj = jaxsae.Dictionary(jnp.asarray(A)), jnp.asarray(X)
    chunk = min(N, 4096)

    def run():
        cert = jaxsae.certify(D, Xj, lam, chunk_size=chunk)
        jax.block_until_ready(cert)
        return cert

    t0 = time.perf_counter()
    cert = run()
    t_first = time.perf_counter() - t0
    t_jax = best_time(run, repeat=2, warmup=0)
    t_anchor = best_time(lambda: anchor(A, X, lam), repeat=1, warmup=0)
    ref = anchor(A, X, lam)
    out = {
        "d": d, "K": K, "N": N, "lam": lam,
        "time_certify_first_call_s": t_first,
        "time_certify_s": t_jax,
        "time_anchor_sklearn_numpy_s": t_anchor,
        "ratio_anchor_over_jaxsae": t_anchor / t_jax,
        "code_kkt_jaxsae": float(cert.code_kkt),
        "code_kkt_anchor": float(ref["kkt"]),
        "max_alignment_diff": float(np.max(np.abs(np.asarray(cert.atom_alignment) - ref["alignment"]))),
        "wide_bound_diff": abs(float(cert.wide_bound) - float(ref["wide"])),
        "verdict": cert.verdict,
    }  # fmt: skip
    path = write_result("certify" + ("_small" if args.small else ""), out)
    print(cert.table())
    print(
        f"certify: {t_jax:.3f} s (first call {t_first:.2f} s); scikit-learn + NumPy: {t_anchor:.3f} s "
        f"(ratio anchor/jaxsae {t_anchor / t_jax:.2f}); code KKT {float(cert.code_kkt):.1e} vs "
        f"{ref['kkt']:.1e}"
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
