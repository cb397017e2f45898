"""``jaxsae data``: write real representations to disk, offline (atomic writes)."""

from __future__ import annotations

import sys

NAME = "data"
HELP = "harvest real representations offline: MiniLM activations or image patches"
EPILOG = """examples:
  jaxsae data minilm --layer 3 --tokens 50000 --out acts.npy   # resumes if interrupted
  jaxsae data minilm --layers 2,4 --tokens 200000 --center --unit-mean-norm --out acts.npy
  jaxsae data patches --out patches.npy                         # 10000 8x8 patches
  jaxsae data patches --n 50000 --size 12 --seed 1 --out p12.npy
"""


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="data_command", metavar="SOURCE", required=True)
    m = sub.add_parser(
        "minilm",
        help="hidden states of all-MiniLM-L6-v2 on Shakespeare (.npy + .json sidecar)",
        description="Run all-MiniLM-L6-v2 (in JAX, float32) over Shakespeare's plays and store "
        "one layer's hidden states, one row per token. Needs no network. Rerun the same "
        "command after an interruption to resume.",
    )
    m.add_argument(
        "--layer", type=int, default=3, help="0 = embeddings, 1..6 = block output (default 3)"
    )
    m.add_argument(
        "--layers",
        default=None,
        help="several layers in one pass, e.g. 2,4: one file per layer, OUT_layerL.npy",
    )
    m.add_argument("--tokens", type=int, default=50_000, help="rows to store (default 50000)")
    m.add_argument(
        "--seq-len", type=int, default=128, help="window length incl. [CLS]/[SEP] (default 128)"
    )
    m.add_argument("--batch-size", type=int, default=16, help="windows per chunk (default 16)")
    m.add_argument(
        "--max-chunks", type=int, default=None, help="stop after N chunks; rerun to resume"
    )
    m.add_argument("--no-progress", action="store_true", help="no progress bar")
    m.add_argument("--center", action="store_true", help="subtract the mean row (recorded)")
    m.add_argument(
        "--unit-mean-norm",
        action="store_true",
        help="scale rows to mean norm 1 (recorded): λ then reads as a fraction of a row's norm",
    )
    m.add_argument("--out", required=True, help="output .npy file")
    m.set_defaults(_data_run=_run_minilm)
    q = sub.add_parser(
        "patches",
        help="mean-removed grayscale patches of scikit-learn's sample images (.npy + .json)",
        description="Random p×p grayscale patches of china.jpg and flower.jpg (shipped with "
        "scikit-learn), each mean-removed, scaled to unit mean norm.",
    )
    q.add_argument("--n", type=int, default=10_000, help="number of patches (default 10000)")
    q.add_argument("--size", type=int, default=8, help="patch side p (default 8)")
    q.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    q.add_argument("--out", required=True, help="output .npy file")
    q.set_defaults(_data_run=_run_patches)


def run(args) -> int:
    try:
        return args._data_run(args)
    except ImportError as err:  # a missing optional package: tell the user what to install
        raise ValueError(str(err)) from err


def _run_minilm(args) -> int:
    import jaxsae.data

    layers = None
    if args.layers is not None:
        try:
            layers = [int(v) for v in args.layers.split(",") if v.strip()]
        except ValueError:
            raise ValueError(
                f"--layers must be comma-separated integers like 2,4, got {args.layers!r}."
            ) from None
    path = jaxsae.data.harvest_activations(
        args.out,
        layer=args.layer,
        layers=layers,
        n_tokens=args.tokens,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        max_chunks=args.max_chunks,
        progress=not args.no_progress,
        center=args.center,
        unit_mean_norm=args.unit_mean_norm,
    )
    if path is None:
        print(f"stopped after {args.max_chunks} chunk(s); rerun the same command to resume")
        return 0
    done = [path] if layers is None else path
    for one, layer in zip(done, sorted(set(layers or [args.layer])), strict=True):
        _report_minilm(one, args.tokens, layer)
    return 0


def _report_minilm(path, tokens: int, layer: int) -> None:
    """What was written, and the λ scale its transform implies."""
    import jaxsae.data

    print(
        f"wrote {path} ({tokens} tokens × 384, layer {layer}), its .json sidecar and "
        f"the tokens of its rows ({path.with_suffix('.tokens.npz').name}; jaxsae diagnose shows them)"
    )
    stats = jaxsae.data.representation_info(path).get("transform")
    if stats is not None:
        print(
            f"rows stored as x' = s·(x − μ) with s = {stats['scale']:.6g}"
            f"{', μ the mean row' if stats['center'] else ', μ = 0'}: a λ fitted here is "
            f"λ/s = {1 / stats['scale']:.6g}·λ in the raw activations' units"
            + (
                "; the mean row norm is 1, so λ = 0.1 is a tenth of it"
                if stats["unit_mean_norm"]
                else ""
            )
        )


_WARN_GB = 0.5  # files above this size are announced before they are written


def _run_patches(args) -> int:
    from pathlib import Path

    import jax
    import numpy as np

    import jaxsae.data
    from jaxsae._atomic import atomic_path, atomic_write_json

    out = Path(args.out)
    if out.suffix != ".npy":
        raise ValueError(f"the output must be a .npy file, got {out}; e.g. --out patches.npy.")
    size_gb = args.n * args.size**2 * 4 / 1e9  # float32
    if size_gb > _WARN_GB:
        print(
            f"warning: writing {args.n} × {args.size**2} float32 values ({size_gb:.1f} GB) to "
            f"{out}; lower --n or --size for a smaller file.",
            file=sys.stderr,
        )
    X = jaxsae.data.image_patches(args.n, patch_size=args.size, key=jax.random.key(args.seed))
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        np.save(fh, X)
    atomic_write_json(
        out.with_suffix(".json"),
        {
            "format": "jaxsae-patches/1",
            "file": out.name,
            "source": "scikit-learn sample images china.jpg, flower.jpg (grayscale, ITU-R 601 luma)",
            "patch_size": args.size,
            "patches": args.n,
            "seed": args.seed,
            "preprocessing": "per-patch mean removed; scaled to unit mean norm",
            "shape": list(X.shape),
            "dtype": str(X.dtype),
        },
    )
    print(f"wrote {out} {X.shape} and its .json sidecar")
    return 0
