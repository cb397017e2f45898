"""``sweep`` on streamed data: the grid as a loop of streamed ``learn_dictionary`` runs.

The in-memory sweep vmaps every run into one compiled program, which needs
the data (and every run's N × K codes) on the device. For a memmap, a list of
chunks or a callable, each (width, λ, seed) run is instead one streamed run
(``_dl_driver.run`` on ``_dl_stream.StreamedData``) with the same initialisation as the in-memory
sweep (``K_max`` data atoms from ``key(seed)``, width = atom mask), followed by
one pass that tabulates its row; memory stays bounded by the chunk size. The
chunk kernels compile once for all runs (λ and masks are arrays).
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp

from .._validate import check_lam
from ._dl_driver import run
from ._dl_manifold import stack
from ._dl_setup import LearnerConfig
from ._dl_stream import StreamedData, data_statistics, open_stream, stream_data_init, stream_pass
from ._dl_stream_steps import table_chunk
from ._dl_sweep_result import SweepResult


def sweep_stream(X, *, grid, cfg_args: dict, bias: bool, progress: bool, chunk_size,
                 dtype=None) -> SweepResult:  # fmt: skip
    """The grid ``[(width, λ, seed), ...]`` over streamed ``X``; see ``sweep``."""
    stream = open_stream(X, chunk_size, dtype)
    dtype = stream.dtype
    for _, lam, _ in grid:
        check_lam(lam, dtype)
    cfg = LearnerConfig.make(dtype, dead_atoms=None, bias=bias, code_tol=None, **cfg_args)
    K_max = max(w for w, _, _ in grid)
    n, xsum = data_statistics(stream)
    b0 = (xsum / n).astype(dtype) if bias else jnp.zeros((stream.d,), dtype)
    rows = []
    for width, lam, seed in grid:
        atoms = stream_data_init(stream, K_max, n, b0 if bias else None, key=jax.random.key(seed))
        mask = jnp.arange(K_max) < width
        lam_a = jnp.asarray(lam, dtype)
        with contextlib.closing(StreamedData(stream)) as data:
            state = data.initial_state(stack(atoms, b0), cfg.memory)
            state, _ = run(data, state, lam_a, mask, cfg=cfg, progress=progress)
            sums, _ = stream_pass(stream, table_chunk, (state.P, lam_a, mask), data.caches[0])
        rows.append((state, mask, sums))
    state, masks, sums = jax.tree.map(lambda *a: jnp.stack([jnp.asarray(x) for x in a]), *rows)
    return tabulate(grid, state, masks, sums, n, bias, dtype)


def tabulate(grid, state, masks, sums, n, bias: bool, dtype) -> SweepResult:
    """The ``SweepResult`` of learned runs (leading axis: runs) from ``table_chunk``'s sums
    of each run (resident data: one chunk; streamed: summed over chunks)."""
    var = sums["xsq"][0] / n - jnp.sum((sums["xsum"][0] / n) ** 2)
    P = state.P
    bound = (sums["bound"] / n).astype(dtype)
    return SweepResult(
        width=jnp.asarray([g[0] for g in grid]),
        lam=jnp.asarray([g[1] for g in grid], dtype),
        seed=jnp.asarray([g[2] for g in grid]),
        objective=state.value,
        bound=bound,
        gap=state.value - bound,
        l0=(sums["active"] / n).astype(dtype),
        explained_variance=(1 - (sums["err"] / n) / var).astype(dtype),
        dead=jnp.sum(masks & (sums["l1"] == 0), axis=-1),
        grad_norm=state.grad_norm,
        alignment=state.align,
        converged=state.done & ~state.stalled,
        atoms=P[:, :-1],
        bias=P[:, -1],
        mask=masks,
        free_bias=bias,
    )
