"""``jaxsae train``: train an SAE (optax) or learn a certified dictionary."""

from __future__ import annotations

NAME = "train"
HELP = "train an SAE (ReLU/TopK/JumpReLU) or learn a dictionary on a data file"
EPILOG = """examples:
  jaxsae train --data acts.npy --sae relu --width 256 --lam 0.1 --steps 2000 --out sae/
  jaxsae train --data acts.npy --sae topk --k 16 --width 256 --steps 2000 --out sae_topk/
  jaxsae train --data patches.npy --dictionary --width 64 --lam 0.1 --out dict.safetensors
  jaxsae train --data acts.npy --sae relu --width 256 --lam 0.1 --checkpoint-dir ckpt/   # resumable

λ is THEORY's per-point weight: an SAE loss ‖x − x̂‖² + α Σ z has λ = α/2.
"""


def add_arguments(p) -> None:
    p.add_argument("--data", required=True, help="(N, d) array: .npy or .safetensors")
    p.add_argument("--key", default=None, help="tensor name inside a .safetensors data file")
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument(
        "--sae", choices=["relu", "topk", "jumprelu"], help="train an SAE with this activation"
    )
    kind.add_argument(
        "--dictionary", action="store_true", help="learn a dictionary on the joint problem"
    )
    p.add_argument("--width", type=int, required=True, help="number of latents / atoms K")
    p.add_argument("--lam", type=float, default=None, help="λ (required except for --sae topk)")
    p.add_argument("--k", type=int, default=None, help="k of TopK")
    p.add_argument("--steps", type=int, default=1000, help="optimisation steps (default 1000)")
    p.add_argument("--batch-size", type=int, default=1024, help="SAE minibatch size (default 1024)")
    p.add_argument("--lr", type=float, default=3e-4, help="SAE learning rate (default 3e-4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--checkpoint-dir",
        default=None,
        help="checkpoint here and resume from it (SAE or dictionary; a dictionary with "
        "checkpoints is learned in memory, without them a .npy is streamed from disk)",
    )
    p.add_argument(
        "--out", required=True, help="output: SAE folder, or dictionary .safetensors file"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--strict",
        action="store_true",
        help="--dictionary: exit with status 1 unless the first-order tolerance was met",
    )


def run(args) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxsae

    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    X = jaxsae.load_array(args.data, key=args.key)  # a .npy is memory-mapped
    if X.ndim != 2:
        raise ValueError(f"--data must be a 2-d (N, d) array, got shape {X.shape}.")
    if args.width < 1:
        raise ValueError(f"--width must be ≥ 1, got {args.width}.")
    if args.steps < 1:
        raise ValueError(f"--steps must be ≥ 1 (optimisation steps), got {args.steps}.")
    if args.lam is not None and not args.lam > 0:
        raise ValueError(f"--lam must be a number > 0 (λ of THEORY §0), got {args.lam}.")
    key = jax.random.key(args.seed)
    needs_lam = args.dictionary or args.sae in ("relu", "jumprelu")
    if needs_lam and args.lam is None:
        raise ValueError("--lam is required (λ > 0, THEORY §0) for this model.")
    if args.dictionary:
        return _dictionary(args, X, key, dtype)
    if args.strict:
        raise ValueError("--strict applies to --dictionary (an SAE has no first-order tolerance).")
    if args.sae == "topk":
        if args.lam is not None:
            raise ValueError("--sae topk has no λ (its k sets the sparsity); drop --lam.")
        if args.k is None:
            raise ValueError("--sae topk needs --k (active latents per input).")
        activation = jaxsae.TopK(args.k)
    elif args.sae == "jumprelu":
        activation = jaxsae.JumpReLU()
    else:
        activation = jaxsae.ReLU()
    sae = jaxsae.SAE.init(X.shape[1], args.width, activation, key=key, dtype=dtype)
    result = jaxsae.train_sae(
        sae,
        X if isinstance(X, np.memmap) else jnp.asarray(X, dtype),  # minibatches read from disk
        key=key,
        steps=args.steps,
        batch_size=min(args.batch_size, X.shape[0]),
        lam=None if args.sae == "topk" else args.lam,
        lr=args.lr,
        checkpoint_dir=args.checkpoint_dir,
        checkpoint_every=max(args.steps // 10, 1) if args.checkpoint_dir else None,
        progress=not args.quiet,
    )
    path = jaxsae.save_sae(
        result.sae, args.out, **result.objective, data_transform=_transform(args)
    )
    h = result.history
    print(
        f"trained {args.sae} SAE (d_sae={args.width}) for {args.steps} steps; "
        f"L0 {float(h['l0'][-1]):.2f}, explained variance {float(h['explained_variance'][-1]):.4f} "
        f"(1 − E‖x−x̂‖²/(E‖x‖²−‖Ex‖²)); saved {path}"
        + ("" if result.lam is None else f" with λ = {result.lam:g} recorded")
    )
    return 0


def _transform(args) -> dict:
    """What was done to the data before training, from its sidecar (``jaxsae data``), to be
    recorded with the model; empty when the data has no sidecar."""
    import jaxsae.data

    info = jaxsae.data.representation_info(args.data) or {}
    out = {"data": str(args.data)}
    if isinstance(info.get("transform"), dict):
        out["transform"] = info["transform"]
    if "preprocessing" in info:
        out["preprocessing"] = info["preprocessing"]
    return out


def _dictionary(args, X, key, dtype) -> int:
    """Learn a dictionary, save it with its λ, and say whether it met the tolerance."""
    import numpy as np

    import jaxsae
    from jaxsae.learning._dl_setup import LearningResult, default_learning_tol

    if args.checkpoint_dir is not None:  # checkpoints need the data in memory
        X = np.asarray(X)
    D, hist = jaxsae.learn_dictionary(  # a .npy memmap is streamed chunk by chunk
        X, args.width, args.lam, key=key, max_steps=args.steps, progress=not args.quiet,
        checkpoint_dir=args.checkpoint_dir, checkpoint_every=max(args.steps // 10, 1),
        dtype=dtype,
    )  # fmt: skip
    jaxsae.save_dictionary(D, args.out, lam=args.lam, data_transform=_transform(args))
    grad, align = float(hist.grad_norm[-1]), float(hist.alignment[-1])
    tol = default_learning_tol(dtype)
    measures = f"max Riemannian gradient {grad:.2e}, (A) alignment error {align:.2e}"
    if bool(hist.converged):
        status = f"first-order stationary ({measures} ≤ tol {tol:g})"
    else:
        stalled = bool(hist.result == LearningResult.stalled)
        why = "stalled at the rounding floor" if stalled else f"stopped at --steps {args.steps}"
        status = f"not converged ({measures}, tol {tol:g}; {why})"
    print(
        f"learned {args.width} atoms; objective {float(hist.objective[-1]):.10g}; {status}; "
        f"saved {args.out} with λ = {args.lam:g} recorded"
    )
    return 1 if args.strict and not bool(hist.converged) else 0
