"""``sweep``: many dictionaries (widths × λ × seeds) as one compiled, vmapped program.

Every run is padded to the largest width ``K_max``; a width ``k`` is the atom
mask ``[1]*k + [0]*(K_max − k)`` (THEORY §0: masked atoms get zero codes and never
move), λ is an array, and the seed picks the data initialisation. The steps of
``learn_dictionary`` are vmapped over the runs axis and compiled once; with
several devices the runs axis is sharded over a 1-d ``Mesh`` of all devices.
"""

from __future__ import annotations

import abc
import itertools

import equinox as eqx
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


def _shard(tree, n_runs):
    """Put the leading runs axis on a Mesh over all devices (no-op on one device)."""
    devices = jax.devices()
    if len(devices) < 2 or n_runs % len(devices):
        return tree
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.asarray(devices), ("runs",))
    sharding = NamedSharding(mesh, PartitionSpec("runs"))
    return jax.tree.map(lambda a: jax.device_put(a, sharding), tree)


class AbstractLearner(eqx.Module):
    """How each run of a ``sweep`` is learned; holds its own hyperparameters.

    ``learn(X, grid, ...)`` trains every ``(width, λ, seed)`` of ``grid`` on ``X`` (a
    validated array, or with ``streamed`` a memmap / list of chunks) and returns
    the ``SweepResult``. Add a learner by subclassing this.
    """

    @abc.abstractmethod
    def learn(self, X, grid, *, streamed: bool, progress: bool, checkpoint_dir,
              checkpoint_every: int, chunk_size, dtype) -> SweepResult: ...  # fmt: skip


class DictionaryLearner(AbstractLearner):
    """``learn_dictionary`` for every run (the joint problem, solved to first order).

    The fields are ``learn_dictionary``'s. Resident data: one compiled, vmapped
    program (widths are atom masks inside the largest width, λ and masks are
    arrays, the runs axis is sharded over the devices), finished runs frozen while
    the others continue; a run of width k equals ``learn_dictionary(X, k, λ,
    key=key(seed))``. Streamed data: a loop of streamed ``learn_dictionary`` runs
    with the same initialisations and the same table (``_sweep_stream.py``).
    """

    max_steps: int = 1000
    warm_steps: int = 20
    inner_steps: int = 10
    tol: float | None = None
    bias: bool = False
    memory: int = 10

    def learn(self, X, grid, *, streamed, progress, checkpoint_dir, checkpoint_every,
              chunk_size, dtype):  # fmt: skip
        cfg_args = dict(
            max_steps=self.max_steps, warm_steps=self.warm_steps, inner_steps=self.inner_steps,
            tol=self.tol, memory=self.memory,
        )  # fmt: skip
        if streamed:
            return sweep_stream(
                X, grid=grid, cfg_args=cfg_args, bias=self.bias, progress=progress,
                chunk_size=chunk_size, dtype=dtype,
            )  # fmt: skip
        return _sweep_resident(
            X, grid, LearnerConfig.make(
                X.dtype, dead_atoms=None, bias=self.bias, code_tol=None, **cfg_args
            ), progress, checkpoint_dir, checkpoint_every,
        )  # fmt: skip


class SAETrainer(AbstractLearner):
    """Vanilla ReLU SAEs for every run (``_sweep_sae.py``): unit-norm decoder rows, L1
    weight λ, free decoder bias, Adam for ``steps`` minibatches of ``batch_size`` at
    learning rate ``lr``, all runs in one compiled scan. The ``objective`` column is
    ``L(D, Z_enc)`` with the encoder's codes (≥ F), ``grad_norm``/``alignment`` are
    the (A) measures at those codes, and ``converged`` says whether they met ``tol``
    (SAEs rarely do). Streamed data must allow random access to rows (a memmap or a
    list of chunks); minibatches are read in segments of ``chunk_size`` rows."""

    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    tol: float = 1e-6

    def learn(self, X, grid, *, streamed, progress, checkpoint_dir, checkpoint_every,
              chunk_size, dtype):  # fmt: skip
        del checkpoint_every
        if checkpoint_dir is not None:
            raise ValueError("the SAE sweep does not checkpoint; drop checkpoint_dir.")
        return sweep_sae(
            X, grid, steps=int(self.steps), batch_size=int(self.batch_size), lr=float(self.lr),
            tol=float(self.tol), chunk_size=chunk_size, progress=progress, streamed=streamed,
            dtype=dtype,
        )  # fmt: skip


def sweep(
    X: Real[ArrayLike, "N d"] | Chunks,
    *,
    widths,
    lams,
    seeds=(0,),
    learner: AbstractLearner | None = None,
    progress: bool = True,
    checkpoint_dir=None,
    checkpoint_every: int = 50,
    chunk_size: int | None = None,
    dtype=None,
) -> SweepResult:
    """Learn every (width, λ, seed) at once and tabulate the results.

    Args:
        X: data ``(N, d)``: an array; or streamed: a ``numpy.memmap``, a list of
            ``(n_i, d)`` chunks, or (dictionaries only) a zero-argument callable
            returning a fresh iterable of chunks.
        widths, lams, seeds: the grid (lists); runs are their product, in the
            order width-major, then λ, then seed.
        learner: how each run is learned, holding its hyperparameters:
            ``jaxsae.DictionaryLearner(max_steps=…, tol=…, bias=…)`` (default: the
            joint problem of THEORY §0 solved to first order, as ``learn_dictionary``
            with ``init="data"`` from ``jax.random.key(seed)``) or
            ``jaxsae.SAETrainer(steps=…, batch_size=…, lr=…)`` (vanilla SAEs).
        progress: show a tqdm progress bar on stderr (default; pass False to hide it).
        checkpoint_dir, checkpoint_every: as in ``learn_dictionary`` (dictionaries in
            memory): all runs are checkpointed together and a repeated call resumes.
        chunk_size: points per chunk for streamed data (default 8192); for SAEs also
            the rows per training segment (≥ one minibatch).
        dtype: the working dtype (default: the data's); streamed chunks are cast as
            they are read.

    Returns:
        A ``SweepResult``: per run the objective, the wide-limit bound F_∞ of (W)
        and the gap to it, L0, explained variance (THEORY §7b), dead atoms, and
        the first-order measures (Riemannian gradient, alignment error of (A));
        plus the dictionaries. ``to_json`` / ``to_csv`` write the table.

    Example:
        >>> res = jaxsae.sweep(X, widths=[4, 8, 16], lams=[0.05, 0.1], seeds=[0, 1])
        >>> res = jaxsae.sweep(X, widths=[64, 128], lams=[0.1], learner=jaxsae.SAETrainer(steps=500))
        >>> res.to_csv("sweep.csv"); res.dictionary(0)
    """
    learner = DictionaryLearner() if learner is None else learner
    if not isinstance(learner, AbstractLearner):
        raise ValueError(
            "learner must be a sweep learner such as jaxsae.DictionaryLearner() or "
            f"jaxsae.SAETrainer(), got {type(learner).__name__}."
        )
    widths = parse_list(widths, "widths", int)
    if min(widths) < 1:
        raise ValueError(f"widths must be positive integers, got {widths}.")
    grid = list(
        itertools.product(widths, parse_list(lams, "lams", float), parse_list(seeds, "seeds", int))
    )
    streamed = is_stream_input(X)
    if streamed and checkpoint_dir is not None:
        raise ValueError(
            "sweep over streamed data does not support checkpoint_dir. "
            "Drop checkpoint_dir, or load the data into memory (np.asarray(X)) for checkpoints."
        )
    if not streamed:
        X = as_float_array(X, "X", dtype=dtype)
        check_rank(X, 2, "X", "(N, d): one data point per row")
        X = check_data(X, X.shape[1], X.dtype)
        for _, lam, _ in grid:
            check_lam(lam, X.dtype)
    return learner.learn(
        X, grid, streamed=streamed, progress=progress, checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every, chunk_size=chunk_size, dtype=dtype,
    )  # fmt: skip


def _sweep_resident(X, grid, cfg: LearnerConfig, progress, checkpoint_dir, checkpoint_every):
    """The dictionary grid on resident data as one vmapped program (module docstring)."""
    dtype, bias = X.dtype, cfg.free_bias
    K_max = max(w for w, _, _ in grid)
    b0 = jnp.mean(X, axis=0) if bias else jnp.zeros((X.shape[1],), dtype)
    keys = jnp.stack([jax.random.key(s) for _, _, s in grid])
    atoms = jax.vmap(lambda k: data_init(X, K_max, key=k, bias=b0 if bias else None))(keys)
    P = jax.vmap(lambda a: stack(a, b0))(atoms)
    masks = jnp.asarray([[j < w for j in range(K_max)] for w, _, _ in grid])
    lam_arr = jnp.asarray([lam for _, lam, _ in grid], dtype)
    state = jax.vmap(lambda p: init_state(p, X, cfg.memory))(P)
    state, lam_arr, masks = _shard((state, lam_arr, masks), len(grid))
    with checkpointer(checkpoint_dir, checkpoint_every) as ckpt:  # one process per folder
        data = _dl_driver.ResidentData(X, batched=True)
        state, _ = _dl_driver.run(
            data, state, lam_arr, masks, cfg=cfg, progress=progress, checkpoint=ckpt
        )
    valid = jnp.ones(X.shape[:1], bool)
    sums = jax.vmap(lambda P, Z, lam, m: table_chunk(P, X, valid, Z, lam, m))(
        state.P, state.codes, lam_arr, masks
    )
    return tabulate(grid, state, masks, sums, X.shape[0], bias, X.dtype)
