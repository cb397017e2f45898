"""Convex candidate problem (THEORY §6): jaxsae vs cvxpy + Clarabel / SCS.

Problem: N points in d dimensions from a mixture of 10 Gaussian clusters, candidates =
the normalised points (M = N), λ = 0.1, γ ∈ {0, 0.5}:

    min_{Z ≥ 0} (1/N) [ ½‖X − Z C‖² + λ Σ Z + γ Σ_m ‖z_m‖ ].

jaxsae (float64) is timed to a certified relative duality gap of 1e-8, from its default
start (the wide-limit codes of (W), optimal at γ = 0) and from zeros ("cold"). Each anchor
runs in a subprocess with a time limit (default 300 s) on the same data; its answer is
judged by the primal objective of its codes (clipped at 0) against jaxsae's certified
lower bound (the dual value), so "rel. error" is a guaranteed upper bound on its error.

    .venv/bin/python benchmarks/convex.py            # N=1000 (anchors take minutes)
    .venv/bin/python benchmarks/convex.py --quick    # N=200, 60 s anchor limit
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

LAM = 0.1
GAMMAS = (0.0, 0.5)
TOL = 1e-8


def make_data(N: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((10, d))
    return centers[rng.integers(0, 10, N)] + 0.3 * rng.standard_normal((N, d))


def objective_np(X, C, Z, lam, gamma) -> float:
    R = X - Z @ C
    return float(
        (0.5 * np.sum(R * R) + lam * Z.sum() + gamma * np.linalg.norm(Z, axis=0).sum()) / len(X)
    )


def run_anchor(solver: str, N: int, d: int, gamma: float) -> dict:
    """Solve with cvxpy + ``solver`` (in a child process); print a JSON line."""
    import warnings

    import cvxpy as cp

    X = make_data(N, d)
    C = X / np.linalg.norm(X, axis=1, keepdims=True)
    Z = cp.Variable((N, N), nonneg=True)
    obj = 0.5 * cp.sum_squares(X - Z @ C) + LAM * cp.sum(Z) + gamma * cp.sum(cp.norm(Z, 2, axis=0))
    prob = cp.Problem(cp.Minimize(obj / N))
    opts = (
        dict(tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
        if solver == "CLARABEL"
        else dict(eps_abs=1e-9, eps_rel=1e-9, max_iters=200_000)
    )
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prob.solve(solver=solver, **opts)
    dt = time.perf_counter() - t0
    Zv = np.maximum(np.asarray(Z.value), 0) if Z.value is not None else None
    value = objective_np(X, C, Zv, LAM, gamma) if Zv is not None else None
    return {"status": prob.status, "time_s": dt, "objective": value}


def time_jaxsae(X, gamma, cold: bool) -> dict:
    import jax
    import jax.numpy as jnp
    from _harness import best_time

    import jaxsae

    init = jnp.zeros((X.shape[0], X.shape[0])) if cold else None
    solve = lambda: jaxsae.solve_candidate_problem(X, None, LAM, gamma, tol=TOL, init=init)  # noqa: E731
    t = best_time(lambda: jax.block_until_ready(solve().codes), repeat=2, warmup=1)
    sol = solve()
    return {
        "time_s": t,
        "objective": float(sol.objective),
        "dual": float(sol.dual),
        "relative_gap": float(sol.relative_gap),
        "steps": int(sol.steps),
        "used_atoms": int(sol.n_used),
        "converged": bool(sol.result == jaxsae.RESULTS.successful),
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--d", type=int, default=32)
    p.add_argument("--anchor-timeout", type=float, default=300.0)
    p.add_argument("--quick", action="store_true", help="N=200, 60 s anchor limit (smoke run)")
    p.add_argument("--skip-anchors", action="store_true")
    p.add_argument("--anchor", choices=["CLARABEL", "SCS"], help=argparse.SUPPRESS)
    p.add_argument("--gamma", type=float, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.n, args.anchor_timeout = 200, 60.0
    if args.anchor:
        print(json.dumps(run_anchor(args.anchor, args.n, args.d, args.gamma)))
        return

    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from _harness import write_result

    X = jnp.asarray(make_data(args.n, args.d))
    rows = []
    for gamma in GAMMAS:
        warm = time_jaxsae(X, gamma, cold=False)
        cold = time_jaxsae(X, gamma, cold=True)
        row = {"gamma": gamma, "jaxsae": warm, "jaxsae_cold": cold, "anchors": {}}
        lower = max(warm["dual"], cold["dual"])  # certified lower bound on the optimum
        for solver in ("" if args.skip_anchors else "CLARABEL SCS").split():
            cmd = [sys.executable, __file__, "--anchor", solver, "--gamma", str(gamma),
                   "--n", str(args.n), "--d", str(args.d)]  # fmt: skip
            t0 = time.perf_counter()
            try:
                out = subprocess.run(
                    cmd, capture_output=True, text=True, timeout=args.anchor_timeout
                )
                res = json.loads(out.stdout.strip().splitlines()[-1])
            except subprocess.TimeoutExpired:
                res = {"status": "timeout", "time_s": time.perf_counter() - t0, "objective": None}
            except (json.JSONDecodeError, IndexError):
                res = {
                    "status": f"failed: {out.stderr.strip()[-200:]}",
                    "time_s": None,
                    "objective": None,
                }
            if res["objective"] is not None:
                res["relative_error_bound"] = (res["objective"] - lower) / lower
                res["reached_1e-8"] = res["relative_error_bound"] <= TOL
            else:
                res["reached_1e-8"] = False
            if res["time_s"] is not None:
                res["ratio_vs_jaxsae"] = res["time_s"] / warm["time_s"]
                res["ratio_vs_jaxsae_cold"] = res["time_s"] / cold["time_s"]
            row["anchors"][solver] = res
        rows.append(row)

    payload = {
        "problem": {
            "N": args.n,
            "d": args.d,
            "clusters": 10,
            "lam": LAM,
            "tol": TOL,
            "candidates": "normalised points",
        },  # fmt: skip
        "anchor_timeout_s": args.anchor_timeout,
        "rows": rows,
    }
    path = write_result("convex" if not args.quick else "convex_quick", payload)
    print(f"N={args.n}, d={args.d}, M=N candidates, λ={LAM}, target relative gap {TOL:g}")
    for row in rows:
        w, c = row["jaxsae"], row["jaxsae_cold"]
        print(f"γ={row['gamma']}: jaxsae {w['time_s']:.2f} s (default start, {w['steps']} it., "
              f"gap {w['relative_gap']:.1e}, {w['used_atoms']} atoms); cold {c['time_s']:.2f} s "
              f"({c['steps']} it., gap {c['relative_gap']:.1e})")  # fmt: skip
        for name, a in row["anchors"].items():
            t = "n/a" if a["time_s"] is None else f"{a['time_s']:.1f} s"
            err = a.get("relative_error_bound")
            err = "n/a" if err is None else f"{err:.1e}"
            ratio = a.get("ratio_vs_jaxsae")
            ratio_s = (
                "n/a" if ratio is None else f"{ratio:.1f}x (cold {a['ratio_vs_jaxsae_cold']:.1f}x)"
            )
            lb = " (lower bound: timed out)" if a["status"] == "timeout" else ""
            print(f"    cvxpy+{name}: {a['status']}, {t}, rel. error ≤ {err}, "
                  f"reached 1e-8: {a['reached_1e-8']}; ratio {ratio_s}{lb}")  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
