"""``jaxsae convex``: the convex candidate path over γ and the wide limit (THEORY §6)."""

from __future__ import annotations

import sys

NAME = "convex"
HELP = "solve the convex candidate problem along a path of γ (used atoms, objective, gap)"
EPILOG = """examples:
  jaxsae convex --data acts.npy --lam 0.1 --gammas 0,0.5,1 --out convex-report
  jaxsae convex --data acts.npy --lam 0.1 --gammas 0,1,2,4 --n-sphere 200 --out rep

writes OUT/convex.json, OUT/convex.csv (one row per γ) and OUT/convex.png
(used atoms vs γ, objective vs γ with the wide-limit bound (W)).
"""


def add_arguments(p) -> None:
    p.add_argument("--data", required=True, help="data file (.npy or .safetensors), rows = points")
    p.add_argument("--key", default=None, help="tensor name inside a .safetensors file")
    p.add_argument("--lam", type=float, required=True, help="λ > 0, the L1 weight")
    p.add_argument(
        "--gammas", default="0,0.5,1", help="comma-separated γ ≥ 0 values (default 0,0.5,1)"
    )
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--n-sphere", type=int, default=0, help="extra random unit candidates")
    p.add_argument("--seed", type=int, default=0, help="seed for --n-sphere (default 0)")
    p.add_argument("--tol", type=float, default=None, help="relative duality-gap tolerance")
    p.add_argument("--max-steps", type=int, default=20000, help="FISTA iterations per γ")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _parse_gammas(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise ValueError(
            f"--gammas must be comma-separated numbers like 0,0.5,1, got {text!r}."
        ) from err
    if not values:
        raise ValueError("--gammas is empty; pass values like 0,0.5,1.")
    return values


def run(args) -> int:
    from pathlib import Path

    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxsae
    from jaxsae.plots._convex import candidate_path_figure, save_figure

    gammas = _parse_gammas(args.gammas)
    dtype = jnp.float32 if args.float32 else jnp.float64
    X = jnp.asarray(np.asarray(jaxsae.load_array(args.data, key=args.key)), dtype=dtype)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder; choose a folder path.")
    out.mkdir(parents=True, exist_ok=True)
    key = jax.random.key(args.seed) if args.n_sphere else None
    path = jaxsae.candidate_path(
        X,
        args.lam,
        jnp.asarray(gammas, dtype),
        n_sphere=args.n_sphere,
        key=key,
        tol=args.tol,
        max_steps=args.max_steps,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    wide = jaxsae.wide_limit(X, args.lam)
    rows = _table(path, gammas)
    N, d = X.shape
    payload = {
        "problem": "min_{Z>=0} (1/N)[1/2||X - Z C||^2 + lam sum Z + gamma sum_m ||z_m||] (THEORY §6)",
        "data": str(args.data),
        "n_points": N,
        "n_features": d,
        "n_candidates": N + args.n_sphere,
        "lam": args.lam,
        "wide_limit_bound": float(wide.value),
        "dtype": str(np.dtype(dtype)),
        "path": rows,
    }
    _write_table(out, payload, rows)
    fig = candidate_path_figure(
        gammas,
        [r["used_atoms"] for r in rows],
        [r["objective"] for r in rows],
        wide_value=float(wide.value),
        n_points=N,
    )
    save_figure(fig, out / "convex.png")
    print(
        f"N={N} points in d={d}, {N + args.n_sphere} candidates, λ={args.lam}; "
        f"wide-limit bound F_∞ = {float(wide.value):.10g}"
    )
    _print_table(rows)
    print(f"wrote {out / 'convex.json'}, {out / 'convex.csv'}, {out / 'convex.png'}")
    return 0


def _table(path, gammas) -> list[dict]:
    """One row per γ of the candidate path (its certificate and whether it met ``tol``)."""
    import numpy as np

    import jaxsae

    ok = np.asarray(path.result == jaxsae.RESULTS.successful).reshape(-1)
    return [
        {
            "gamma": g,
            "used_atoms": int(path.n_used[i]),
            "objective": float(path.objective[i]),
            "dual": float(path.dual[i]),
            "gap": float(path.gap[i]),
            "relative_gap": float(path.relative_gap[i]),
            "steps": int(path.steps[i]),
            "converged": bool(ok[i]),
        }
        for i, g in enumerate(gammas)
    ]


def _write_table(out, payload: dict, rows: list[dict]) -> None:
    """``convex.json`` and ``convex.csv``, each written atomically."""
    import csv
    import io

    from jaxsae._atomic import atomic_write, atomic_write_json

    atomic_write_json(out / "convex.json", payload)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out / "convex.csv", lambda fh: fh.write(buf.getvalue()), mode="w")


def _print_table(rows: list[dict]) -> None:
    print(f"{'γ':>8}  {'used':>6}  {'objective':>14}  {'rel. gap':>9}  {'steps':>6}")
    for r in rows:
        flag = "" if r["converged"] else "  (tolerance not met)"
        print(
            f"{r['gamma']:>8g}  {r['used_atoms']:>6d}  {r['objective']:>14.10g}  "
            f"{r['relative_gap']:>9.1e}  {r['steps']:>6d}{flag}"
        )
