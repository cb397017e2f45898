"""``sweep``: many dictionaries (widths × λ × seeds) as one compiled, vmapped program.

Every run is padded to the largest width ``K_max``; a width ``k`` is the atom
mask ``[1]*k + [0]*(K_max − k)`` (THEORY §0: masked atoms get zero codes and never
move), λ is an array, and the seed picks the data initialisation. The steps of
``learn_dictionary`` are vmapped over the runs axis and compiled once; with
several devices the runs axis is sharded over a 1-d ``Mesh`` of all devices.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Real

from .._typing import ArrayLike, Chunks
from .._validate import as_float_array, check_data, check_lam, check_rank
from . import _dl_driver
from ._checkpoint_dl import checkpointer
from ._dl_manifold import stack
from ._dl_setup import LearnerConfig, data_init
from ._dl_steps import init_state
from ._dl_stream_source import is_stream_input
from ._dl_stream_steps import table_chunk
from ._dl_sweep_result import SweepResult, parse_list
from ._sweep_sae import sweep_sae
from ._sweep_stream import sweep_stream, tabulate

METHODS = ("dictionary", "sae")


def _shard(tree, n_runs):
    """Put the leading runs axis on a Mesh over all devices (no-op on one device)."""
    devices = jax.devices()
    if len(devices) < 2 or n_runs % len(devices):
        return tree
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.asarray(devices), ("runs",))
    sharding = NamedSharding(mesh, PartitionSpec("runs"))
    return jax.tree.map(lambda a: jax.device_put(a, sharding), tree)


def sweep(
    X: Real[ArrayLike, "N d"] | Chunks,
    *,
    widths,
    lams,
    seeds=(0,),
    method: str = "dictionary",
    max_steps: int = 1000,
    warm_steps: int = 20,
    inner_steps: int = 10,
    tol: float | None = None,
    bias: bool = False,
    memory: int = 10,
    progress: bool = True,
    checkpoint_dir=None,
    checkpoint_every: int = 50,
    sae_steps: int = 2000,
    sae_batch_size: int = 256,
    sae_lr: float = 1e-3,
    chunk_size: int | None = None,
) -> SweepResult:
    """Learn a dictionary for every (width, λ, seed) at once and tabulate the optima.

    Each run solves the joint problem of THEORY §0 exactly as ``learn_dictionary``
    does (alternating warm-up, then Riemannian L-BFGS on F to the first-order
    tolerance ``tol``), with ``init="data"`` from ``jax.random.key(seed)``; a run
    of width k in the sweep equals ``learn_dictionary(X, k, λ, key=key(seed))``.
    All runs share one compiled program: widths are masks inside the largest
    width, λ and masks are vmapped arrays, and the runs axis is sharded across
    devices when there are several. Finished runs are frozen while the others
    continue.

    Args:
        X: data ``(N, d)``.
        widths, lams, seeds: the grid (lists); runs are their product, in the
            order width-major, then λ, then seed.
        method: ``"dictionary"`` (the joint problem, solved to first order) or
            ``"sae"``: vanilla ReLU SAEs (unit-norm decoder rows, L1 weight λ, free
            decoder bias) trained with Adam for ``sae_steps`` minibatches of
            ``sae_batch_size`` at learning rate ``sae_lr``, all runs in one
            compiled scan (``jaxsae/learning/_sweep_sae.py``). For SAEs the
            ``objective`` column is L(D, Z_enc) with the encoder's codes (≥ F),
            ``grad_norm``/``alignment`` are the (A) measures at those codes, and
            ``converged`` says whether they met ``tol`` (default 1e-6) — SAEs
            rarely do.
        max_steps, warm_steps, inner_steps, tol, bias, memory: as in ``learn_dictionary``.
        progress: show a tqdm progress bar on stderr (default; pass False to hide it).
        checkpoint_dir, checkpoint_every: as in ``learn_dictionary``: all runs are
            checkpointed together and a repeated call resumes from the newest one.
        chunk_size: points per chunk for streamed data (default 8192); with
            ``method="sae"`` also the rows per training segment (≥ one minibatch).

    Streamed data (a ``numpy.memmap``, a list of ``(n_i, d)`` chunks, or a
    zero-argument callable returning a fresh iterable of chunks), with
    ``method="dictionary"``: the single vmapped program needs the data in
    memory, so the grid runs as a loop of streamed ``learn_dictionary`` runs
    (``_sweep_stream.py``) with the same initialisations, memory bounded by the
    chunk size, and the same table. With ``method="sae"`` (a memmap or a list
    of chunks: minibatches need random access) the same vmapped SAE program
    runs on segments of ``chunk_size`` rows gathered on the host, in the same
    minibatch order, and gives the in-memory table (``_sweep_sae.py``).
    Checkpointing needs in-memory data.

    Returns:
        A ``SweepResult``: per run the objective, the wide-limit bound F_∞ of (W)
        and the gap to it, L0, explained variance (THEORY §7b), dead atoms, and
        the first-order measures (Riemannian gradient, alignment error of (A));
        plus the dictionaries. ``to_json`` / ``to_csv`` write the table.

    Example:
        >>> res = jaxsae.sweep(X, widths=[4, 8, 16], lams=[0.05, 0.1], seeds=[0, 1])
        >>> res.to_csv("sweep.csv"); res.dictionary(0)
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if is_stream_input(X):
        if checkpoint_dir is not None:
            raise ValueError(
                "sweep over streamed data does not support checkpoint_dir. "
                "Drop checkpoint_dir, or load the data into memory (np.asarray(X)) for checkpoints."
            )
        if method == "sae":
            return sweep_sae(
                X, _stream_grid(widths, lams, seeds), steps=sae_steps,
                batch_size=sae_batch_size, lr=sae_lr, tol=1e-6 if tol is None else float(tol),
                chunk_size=chunk_size, progress=progress, streamed=True,
            )  # fmt: skip
        cfg_args = dict(
            max_steps=max_steps, warm_steps=warm_steps, inner_steps=inner_steps, tol=tol,
            memory=memory,
        )  # fmt: skip
        return sweep_stream(
            X, widths=widths, lams=lams, seeds=seeds, cfg_args=cfg_args, bias=bias,
            progress=progress, chunk_size=chunk_size,
        )  # fmt: skip
    X = as_float_array(X, "X")
    check_rank(X, 2, "X", "(N, d): one data point per row")
    X = check_data(X, X.shape[1], X.dtype)
    dtype = X.dtype
    widths = parse_list(widths, "widths", int)
    lams_l = parse_list(lams, "lams", float)
    seeds = parse_list(seeds, "seeds", int)
    if min(widths) < 1:
        raise ValueError(f"widths must be positive integers, got {widths}.")
    for lam in lams_l:
        check_lam(lam, dtype)
    cfg = LearnerConfig.make(
        dtype,
        max_steps=max_steps,
        warm_steps=warm_steps,
        tol=tol,
        memory=memory,
        dead_atoms=None,
        bias=bias,
        code_tol=None,
        inner_steps=inner_steps,
    )
    grid = list(itertools.product(widths, lams_l, seeds))
    if method == "sae":
        tol_sae = 1e-6 if tol is None else float(tol)
        return sweep_sae(
            X, grid, steps=sae_steps, batch_size=sae_batch_size, lr=sae_lr, tol=tol_sae,
            chunk_size=chunk_size, progress=progress,
        )  # fmt: skip
    K_max = max(widths)
    b0 = jnp.mean(X, axis=0) if bias else jnp.zeros((X.shape[1],), dtype)
    keys = jnp.stack([jax.random.key(s) for _, _, s in grid])
    atoms = jax.vmap(lambda k: data_init(X, K_max, key=k, bias=b0 if bias else None))(keys)
    P = jax.vmap(lambda a: stack(a, b0))(atoms)
    masks = jnp.asarray([[j < w for j in range(K_max)] for w, _, _ in grid])
    lam_arr = jnp.asarray([lam for _, lam, _ in grid], dtype)
    state = jax.vmap(lambda p: init_state(p, X, cfg.memory))(P)
    state, lam_arr, masks = _shard((state, lam_arr, masks), len(grid))
    with checkpointer(checkpoint_dir, checkpoint_every) as ckpt:  # one process per folder
        state, _ = _dl_driver.run(
            state, X, lam_arr, masks, cfg=cfg, batched=True, progress=progress, checkpoint=ckpt
        )
    valid = jnp.ones(X.shape[:1], bool)
    sums = jax.vmap(lambda P, Z, lam, m: table_chunk(P, X, valid, Z, lam, m))(
        state.P, state.codes, lam_arr, masks
    )
    return tabulate(grid, state, masks, sums, X.shape[0], bias, X.dtype)


def _stream_grid(widths, lams, seeds) -> list:
    """The ``(width, λ, seed)`` grid (λ is checked where the data's dtype is known)."""
    widths = parse_list(widths, "widths", int)
    if min(widths) < 1:
        raise ValueError(f"widths must be positive integers, got {widths}.")
    return list(
        itertools.product(widths, parse_list(lams, "lams", float), parse_list(seeds, "seeds", int))
    )
