"""``jaxsae convert``: SAELens SAE folders ↔ jaxsae dictionary files."""

from __future__ import annotations

NAME = "convert"
HELP = "convert between SAELens SAE folders and jaxsae dictionary files"
EPILOG = """examples:
  jaxsae convert --sae sae_dir/ --to-dictionary dict.safetensors
      the folded dictionary view of the SAE (unit-norm decoder rows, THEORY §0)
  jaxsae convert --dictionary dict.safetensors --to-sae sae_dir/ --lam 0.1
      a SAELens "standard" SAE whose decoder is the dictionary and whose encoder is the
      soft-threshold map ReLU(Dᵀ(x − b) − λ) (exact lasso codes for orthonormal atoms)
"""


def add_arguments(p) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--sae", help="a SAELens SAE folder (cfg.json + sae_weights.safetensors)")
    src.add_argument("--dictionary", help="a jaxsae dictionary .safetensors file")
    p.add_argument("--to-dictionary", help="output dictionary file (with --sae)")
    p.add_argument("--to-sae", help="output SAE folder (with --dictionary)")
    p.add_argument(
        "--lam", type=float, default=0.0, help="encoder threshold λ for --to-sae (default 0)"
    )


def run(args) -> int:
    import jax.numpy as jnp
    import numpy as np

    import jaxsae

    if args.sae:
        if not args.to_dictionary:
            raise ValueError("--sae needs --to-dictionary OUT.safetensors.")
        D = jaxsae.sae_dictionary(jaxsae.load_sae(args.sae))
        jaxsae.save_dictionary(D, args.to_dictionary)
        print(f"wrote {args.to_dictionary}: {D.n_atoms} unit-norm atoms in d={D.n_features}")
        return 0
    if not args.to_sae:
        raise ValueError("--dictionary needs --to-sae OUT_DIR.")
    if args.lam < 0:
        raise ValueError(f"--lam must be ≥ 0, got {args.lam}.")
    D = jaxsae.load_dictionary(args.dictionary)
    atoms = D.atoms[np.asarray(D.mask)]  # masked atoms are absent from the SAE
    sae = jaxsae.SAE(
        W_enc=atoms.T,
        b_enc=jnp.full((atoms.shape[0],), -args.lam, D.dtype),
        W_dec=atoms,
        b_dec=D.bias,
        activation=jaxsae.ReLU(),
    )
    path = jaxsae.save_sae(sae, args.to_sae)
    print(f"wrote {path}: standard SAE, d_in={D.n_features}, d_sae={atoms.shape[0]}")
    return 0
