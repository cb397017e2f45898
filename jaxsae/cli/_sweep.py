"""``jaxsae sweep``: dictionaries for every width × λ × seed, with a table and figures."""

from __future__ import annotations

from pathlib import Path

NAME = "sweep"
HELP = "learn dictionaries over widths x lambdas x seeds in one compiled program; write a table and figures"
EPILOG = """examples:
  jaxsae sweep --data X.npy --widths 4,8,16 --lams 0.05,0.1 --seeds 0,1 --out sweep-out
  jaxsae sweep --data acts.safetensors --key acts --widths 64,128 --lams 0.1 --out runs --bias

writes OUT/sweep.json and OUT/sweep.csv (objective, gap to the wide-limit bound (W),
L0, explained variance, dead atoms, first-order measures per run), OUT/sweep.png and,
for each λ (first seed), OUT/tree_lam<λ>.png: the family tree of atoms across widths.
"""


def _list(text: str, cast, name: str):
    try:
        values = [cast(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise ValueError(
            f"--{name} must be a comma-separated list of numbers, got {text!r}."
        ) from err
    if not values:
        raise ValueError(f"--{name} is empty; give e.g. --{name} 4,8,16.")
    return values


def add_arguments(p) -> None:
    p.add_argument(
        "--data", required=True, help="data file (.npy or .safetensors), rows are points"
    )
    p.add_argument("--key", default=None, help="tensor name inside a .safetensors file")
    p.add_argument("--widths", required=True, help="comma-separated widths, e.g. 4,8,16")
    p.add_argument("--lams", required=True, help="comma-separated λ values, e.g. 0.05,0.1")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument(
        "--max-steps", type=int, default=1000, help="L-BFGS steps per run (default 1000)"
    )
    p.add_argument(
        "--warm-steps", type=int, default=20, help="alternating warm-up steps (default 20)"
    )
    p.add_argument(
        "--tol", type=float, default=None, help="first-order tolerance (default by dtype)"
    )
    p.add_argument("--bias", action="store_true", help="learn a free decoder bias")
    p.add_argument(
        "--method",
        choices=["dictionary", "sae"],
        default="dictionary",
        help="dictionary: the joint problem (default); sae: vanilla ReLU SAEs trained with Adam",
    )
    p.add_argument("--sae-steps", type=int, default=2000, help="Adam steps per SAE (default 2000)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    import jax.numpy as jnp
    import numpy as np

    import jaxsae
    from jaxsae.plots import family_tree_figure, sweep_figure

    widths = _list(args.widths, int, "widths")
    lams = _list(args.lams, float, "lams")
    seeds = _list(args.seeds, int, "seeds")
    X = jaxsae.load_array(args.data, key=args.key)  # a .npy memmap is streamed from disk
    if args.method == "sae":
        tol = 1e-6 if args.tol is None else args.tol
        learner = jaxsae.SAETrainer(steps=args.sae_steps, tol=tol)
    else:
        learner = jaxsae.DictionaryLearner(
            max_steps=args.max_steps, warm_steps=args.warm_steps, tol=args.tol, bias=args.bias
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = jaxsae.sweep(
        X,
        widths=widths,
        lams=lams,
        seeds=seeds,
        learner=learner,
        progress=not args.quiet,
        dtype=jnp.float32 if args.float32 else jnp.float64,
    )
    res.to_json(out / "sweep.json")
    res.to_csv(out / "sweep.csv")
    _save(sweep_figure(res), out / "sweep.png")
    for lam in lams:
        idx = res.select(lam=lam, seed=seeds[0])
        if len(idx) > 1 and args.method == "dictionary":
            tree = jaxsae.family_tree([res.dictionary(i) for i in idx], X, lam)
            _save(
                family_tree_figure(tree, title=f"Family tree, λ={lam:g}"),
                out / f"tree_lam{lam:g}.png",
            )
    cols = (
        "width",
        "lam",
        "seed",
        "objective",
        "gap",
        "l0",
        "explained_variance",
        "dead",
        "alignment",
    )
    print("  ".join(f"{c:>10.10}" for c in cols))
    for r in res.rows():
        print(
            "  ".join(f"{r[c]:>10.4g}" if isinstance(r[c], float) else f"{r[c]:>10}" for c in cols)
        )
    print(
        f"{int(np.sum(np.asarray(res.converged)))}/{len(res)} runs first-order stationary; wrote {out}/"
    )
    return 0


def _save(fig, path) -> None:
    import matplotlib.pyplot as plt

    from jaxsae._atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
