"""``jaxsae diagnose``: how far a trained SAE is from an optimum, and what the nearest one is."""

from __future__ import annotations

import sys
from pathlib import Path

NAME = "diagnose"
HELP = "diagnose an SAE or a dictionary: amortisation gap, effective λ, broken constraints, nearest optimum"
EPILOG = """examples:
  jaxsae diagnose --sae sae/ --data acts.npy --out diag/
  jaxsae diagnose --sae ~/.cache/huggingface/hub/models--google--gemma-scope-2b-pt-res \\
      --sae-id layer_20/width_16k/average_l0_71 --data acts.npy --lam 0.05 --out diag/
  jaxsae diagnose --dictionary dict.safetensors --data X.npy --out diag/ --second-order

writes OUT/report.html (self-contained), OUT/report.md with its PNGs and OUT/report.json.
Without --lam, the λ recorded when jaxsae saved the model is used; for an SAE that has
none (TopK, JumpReLU, other libraries) the λ that best fits its codes' KKT conditions is
estimated, and the report says so.
"""


def add_arguments(p) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--sae",
        metavar="PATH",
        help="an SAE: SAELens / sparsify folder, Gemma Scope params.npz, or a Hugging Face cache folder",
    )
    src.add_argument("--dictionary", metavar="PATH", help="a jaxsae dictionary file (.safetensors)")
    p.add_argument(
        "--sae-id", default=None, help="the SAE's folder inside a release / cache folder"
    )
    p.add_argument(
        "--data", required=True, metavar="PATH", help="data (N, d): .npy (streamed) or .safetensors"
    )
    p.add_argument("--key", default=None, help="tensor name inside a .safetensors data file")
    p.add_argument(
        "--lam",
        type=float,
        default=None,
        help="λ > 0 (default: recorded, else estimated for an SAE)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="report folder (created if missing)")
    p.add_argument("--no-nearest", action="store_true", help="skip learning the nearest optimum")
    p.add_argument(
        "--second-order",
        action="store_true",
        help="second-order certificate at the nearest optimum",
    )
    p.add_argument(
        "--max-steps",
        type=int,
        default=500,
        help="L-BFGS steps for the nearest optimum (default 500)",
    )
    p.add_argument(
        "--sample-size",
        type=int,
        default=20000,
        help="rows for the per-point analyses (default 20000)",
    )
    p.add_argument(
        "--held-bias",
        action="store_true",
        help="hold the decoder bias fixed (default: free, like an SAE's b_dec)",
    )
    p.add_argument("--chunk-size", type=int, default=None, metavar="N", help="points per chunk")
    p.add_argument(
        "--quiet", action="store_true", help="no progress bars (none when stderr is not a terminal)"
    )


def _model(args, dtype):
    import jaxsae

    if args.dictionary is not None:
        if args.sae_id is not None:
            raise ValueError("--sae-id applies to --sae only.")
        return jaxsae.load_dictionary(args.dictionary).astype(dtype), args.dictionary
    return jaxsae.load_sae(args.sae, sae_id=args.sae_id).astype(dtype), args.sae


def _lam(args, path, is_sae: bool):
    """``(λ, source)``: given, recorded, or ``(None, None)`` (an SAE: estimated later)."""
    import jaxsae

    if args.lam is None and args.sae_id is not None:
        return None, None  # a release folder: the SAE's own metadata is below it
    record = None if args.lam is not None else jaxsae.saved_objective(path)
    if args.lam is None and is_sae and (record is None or record["lam"] is None):
        return None, None
    return jaxsae.saved_lam(args.lam, path)


class _Contexts:
    """Row ``i`` → its token in context (``… to be [or] not to …``) within its window."""

    def __init__(self, tok: dict, width: int = 4):
        self.tok, self.width = tok, width

    def __getitem__(self, i: int) -> str:
        s, w = self.tok["strings"], self.tok["window"]
        lo, hi = max(0, i - self.width), min(len(s), i + self.width + 1)
        words = [f"[{s[j]}]" if j == i else str(s[j]) for j in range(lo, hi) if w[j] == w[i]]
        return " ".join(words)


def _contexts(data: str):
    """The token contexts of a harvested ``.npy`` with a token sidecar, else None."""
    from jaxsae.data._harvest import tokens_path

    if not tokens_path(data).exists():
        return None
    import jaxsae.data

    return _Contexts(jaxsae.data.load_tokens(data))


def run(args) -> int:
    import numpy as np

    import jaxsae

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder; choose a folder path.")
    if args.sample_size < 1 or args.max_steps < 1:
        raise ValueError("--sample-size and --max-steps must be ≥ 1.")
    dtype = np.float32 if args.float32 else np.float64
    model, path = _model(args, dtype)
    lam, source = _lam(args, path, args.sae is not None)
    X = jaxsae.load_array(args.data, key=args.key)  # a .npy is memory-mapped and streamed
    if X.ndim != 2:
        raise ValueError(f"--data must be a 2-d (N, d) array, got shape {X.shape}.")
    if not isinstance(X, np.memmap):
        X = np.asarray(X, dtype=dtype)
    progress = not args.quiet and sys.stderr.isatty()
    tokens = _contexts(args.data)
    dg = jaxsae.diagnose(
        model, X, lam, lam_source=source, free_bias=not args.held_bias,
        nearest=not args.no_nearest, second_order=args.second_order, max_steps=args.max_steps,
        sample_size=args.sample_size, chunk_size=args.chunk_size, progress=progress, tokens=tokens,
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    jaxsae.write_report(dg, out, source=str(path))
    print("\n".join(dg.verdicts))
    print(f"wrote {out / 'report.html'}, {out / 'report.md'} and {out / 'report.json'}")
    return 0
