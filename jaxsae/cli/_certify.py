"""``jaxsae certify``: the first-order certificate of a dictionary or an SAE."""

from __future__ import annotations

import sys
from pathlib import Path

NAME = "certify"
HELP = "certify a dictionary (or an SAE's decoder) on data: codes, atoms (A), pairs (P), residuals (R), width (W)"
EPILOG = """examples:
  jaxsae certify --dictionary dict.safetensors --data X.npy --lam 0.1
  jaxsae certify --dictionary dict.safetensors --data X.npy --lam 0.1 --out cert.json --chunk-size 4096
  jaxsae certify --sae path/to/sae_dir --data X.npy --lam 0.05 --second-order
  jaxsae certify --dictionary dict.safetensors --data X.npy        # λ recorded by jaxsae train

Without --lam, the λ recorded in the model's metadata when jaxsae saved it is used
(the command says which).
"""


def add_arguments(p) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dictionary", metavar="PATH", help="a jaxsae dictionary file (.safetensors)")
    src.add_argument(
        "--sae", metavar="DIR", help="a SAELens SAE folder; its own codes are certified"
    )
    p.add_argument(
        "--data", required=True, metavar="PATH", help="data (N, d) as .npy or .safetensors"
    )
    p.add_argument("--key", default=None, help="tensor name inside a .safetensors data file")
    p.add_argument(
        "--lam",
        type=float,
        default=None,
        help="λ > 0 (an SAE loss α·Σz has λ = α/2); default: the λ recorded in the model file",
    )
    p.add_argument("--out", default=None, metavar="PATH", help="write the certificate as JSON here")
    p.add_argument("--chunk-size", type=int, default=None, metavar="N", help="points per chunk")
    p.add_argument("--tol", type=float, default=None, help="tolerance of the verdict")
    p.add_argument(
        "--second-order", action="store_true", help="also run the second-order certificate"
    )
    p.add_argument(
        "--quiet", action="store_true", help="no progress bars (none when stderr is not a terminal)"
    )


def _from_sae(directory: str, X, dtype):
    """The SAE's folded dictionary and its own (folded) codes (THEORY §0), the codes
    computed chunk by chunk beside the data."""
    import jaxsae
    from jaxsae.models._sae_dictionary import StreamedSAECodes

    sae = jaxsae.load_sae(directory).astype(dtype)
    return jaxsae.sae_dictionary(sae), StreamedSAECodes(sae, X)


def run(args) -> int:
    import numpy as np

    import jaxsae
    from jaxsae._atomic import atomic_write_json

    if args.out is not None:
        folder = Path(args.out).parent
        if not folder.is_dir():  # fail before the computation, not after it
            raise ValueError(
                f"cannot write {args.out}: folder {folder} does not exist. Create it first."
            )
    dtype = np.float32 if args.float32 else np.float64
    lam, source = jaxsae.saved_lam(args.lam, args.dictionary or args.sae)
    print(f"λ = {lam:g} ({source})")
    # A .npy is memory-mapped and streamed chunk by chunk: memory bounded by --chunk-size.
    X = jaxsae.load_array(args.data, key=args.key)
    if X.ndim != 2:
        raise ValueError(f"--data must be a 2-d (N, d) array, got shape {X.shape}.")
    if not isinstance(X, np.memmap):
        X = np.asarray(X, dtype=dtype)
    if args.dictionary is not None:
        D, codes = jaxsae.load_dictionary(args.dictionary).astype(dtype), None
    else:
        D, codes = _from_sae(args.sae, X, dtype)
    cert = jaxsae.certify(
        D,
        X,
        lam,
        codes=codes,
        chunk_size=args.chunk_size,
        tol=args.tol,
        second_order=args.second_order,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    print(cert.table())
    if args.out is not None:
        payload = {"source": args.dictionary or args.sae, "data": args.data, "lam_source": source,
                   **cert.to_json()}  # fmt: skip
        atomic_write_json(args.out, payload)
        print(f"certificate written to {args.out}")
    return 0
