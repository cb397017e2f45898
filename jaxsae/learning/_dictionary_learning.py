"""``learn_dictionary``: the joint problem of THEORY §0 solved to a stated first-order tolerance."""

from __future__ import annotations

import contextlib

from jaxtyping import Real

from .._typing import ArrayLike, Chunks
from .._validate import as_float_array, check_data, check_lam, check_rank
from ..models._dictionary import Dictionary
from . import _dl_driver
from ._checkpoint_dl import checkpointer
from ._dl_policy import AbstractDeadAtomPolicy
from ._dl_setup import DictionaryHistory, LearnerConfig, finish
from ._dl_stream import open_streamed
from ._dl_stream_source import is_stream_input


def learn_dictionary(
    X: Real[ArrayLike, "N d"] | Chunks,
    n_atoms: int,
    lam,
    *,
    key,
    init: str | Dictionary = "data",
    max_steps: int = 1000,
    warm_steps: int = 20,
    inner_steps: int = 10,
    tol: float | None = None,
    bias: bool = False,
    memory: int = 10,
    dead_atoms: AbstractDeadAtomPolicy | None = None,
    code_tol: float | None = None,
    progress: bool = True,
    throw: bool = False,
    checkpoint_dir=None,
    checkpoint_every: int = 50,
    chunk_size: int | None = None,
    dtype=None,
) -> tuple[Dictionary, DictionaryHistory]:
    """Learn a dictionary solving the joint problem of THEORY §0 to a first-order tolerance.

        min_{D ∈ Ob(d,K), b, Z ≥ 0} (1/N) Σ_n [ ½‖x_n − b − D z_n‖² + λ 1ᵀ z_n ]

    Two phases. (1) ``warm_steps`` of alternating minimisation: ``inner_steps``
    FISTA iterations on the codes (warm-started, so the codes improve across
    outer steps), then an exact block pass over the atoms, then the dead-atom
    policy; cheap (no small solves), it finds the basin. (2) Riemannian L-BFGS on the
    reduced objective ``F(D, b) = min_Z L`` over the product of spheres (and
    ``R^d`` for a free bias): envelope gradient ``∇_D F = −(1/N) Σ_n r_n z_nᵀ``
    (THEORY §4) with warm-started certified codes, projection onto each atom's
    tangent space, row renormalisation as the retraction, and an Armijo search
    tolerant to the rounding of F. L-BFGS was chosen over alternating
    minimisation because the latter converges linearly with a rate near one
    (about 4000 outer steps to reach (A) at 1e-14 on d=8, K=6, N=400), while
    L-BFGS on F reaches the same point in tens of steps; Newton-CG needs a
    batch of small active-set solves per Hessian-vector product, which is
    slower on CPU.

    It stops when both first-order measures are at most ``tol``: the largest
    Riemannian gradient norm ``‖(I − d_k d_kᵀ)∇_k F‖`` (and the bias gradient
    when ``bias=True``), and the largest alignment error of (A),
    ``‖d_k − c_k/(λ‖z_k‖₁)‖`` with ``c_k = Σ_n z_kn r_n`` over used atoms. It
    also stops, with ``LearningResult.stalled``, at the rounding floor (in float32
    the alignment error of (A) floors near 1e-3 on small problems).

    Args:
        X: data ``(N, d)``; float32 or float64 (the computation uses its dtype); or
            streamed data (see "Streamed data" below).
        n_atoms: K.
        lam: λ > 0 (scalar; an array is fine).
        key: PRNG key for the ``"data"`` initialisation.
        init: ``"data"`` (K random data points, normalised) or a ``Dictionary``
            with K atoms, whose mask is kept: masked atoms stay masked with zero
            codes, so a width ``k < K`` is a mask (how ``sweep`` batches widths).
        max_steps: maximum L-BFGS steps (phase 2).
        warm_steps: alternating steps (phase 1).
        inner_steps: FISTA iterations on the codes per alternating step.
        tol: first-order tolerance; default 1e-10 (float64), 1e-4 (float32).
        bias: learn a free decoder bias ``b`` (initialised at the data mean).
        memory: L-BFGS memory (pairs).
        dead_atoms: policy for atoms that never fire, applied in phase 1
            (default ``ReseedDead()``: move them onto high-residual points; or
            ``KeepDead()``).
        code_tol: relative duality-gap tolerance of the codes in phase 2 (default
            1e-14 in float64, so the codes are exact on their support and (A)
            can be checked to ~1e-12; 1e-5 in float32).
        progress: show a tqdm progress bar on stderr (default; pass False to hide it).
        throw: raise if the tolerance was not met.
        checkpoint_dir: a folder for checkpoints (atoms, bias, codes, L-BFGS memory,
            step, history), written atomically every ``checkpoint_every`` steps; a
            call with the same arguments resumes from the newest one, to the same
            result as an uninterrupted run (after SIGKILL too).
        checkpoint_every: steps between checkpoints.
        chunk_size: points per chunk for streamed data (default 8192); ignored for
            in-memory arrays.
        dtype: the working dtype (default: the data's). A memmap of float32 data is
            learned in float64 with ``dtype=jnp.float64``, each chunk cast as it is read.

    Streamed data. ``X`` may also be a ``numpy.memmap``, a list of ``(n_i, d)``
    chunks, or a zero-argument callable returning a fresh iterable of chunks
    (a one-shot iterator is refused: learning passes over the data many times).
    Then every reduction is a pass over ``chunk_size`` points at a time and the
    codes live in a temporary file, so memory is bounded by the chunk size, not
    N (``jaxsae/learning/_dl_stream.py``); the iterates are those of the
    in-memory run up to rounding. Differences: ``history.codes`` is an empty
    ``(0, K)`` array (recompute codes chunk by chunk with ``sparse_code``),
    ``checkpoint_dir`` is not supported, ``dead_atoms`` must be ``ReseedDead``
    or ``KeepDead``, ``init="data"`` draws one permutation of N indices
    (4 bytes a point), and it runs on one device.

    Returns:
        ``(dictionary, history)``: the learned ``Dictionary`` and a
        ``DictionaryHistory`` (objective, gradient norm, alignment error and time
        per iteration, the final certified codes and a result code).

    Example:
        >>> D, hist = jaxsae.learn_dictionary(X, 16, 0.1, key=jax.random.key(0))
        >>> float(hist.grad_norm[-1]), float(hist.alignment[-1])   # ≤ 1e-10 in float64
    """
    if is_stream_input(X):
        data = open_streamed(X, chunk_size, dead_atoms, checkpoint_dir, dtype)
    else:
        X = as_float_array(X, "X", dtype=dtype)
        check_rank(X, 2, "X", "(N, d): one data point per row")
        data = _dl_driver.ResidentData(check_data(X, X.shape[1], X.dtype), batched=False)
    lam = check_lam(lam, data.dtype)
    cfg = LearnerConfig.make(
        data.dtype, max_steps=max_steps, warm_steps=warm_steps, tol=tol, memory=memory,
        dead_atoms=dead_atoms, bias=bias, code_tol=code_tol, inner_steps=inner_steps,
    )  # fmt: skip
    P, mask = data.initial_point(n_atoms, init, bias, key=key)
    with contextlib.closing(data), checkpointer(checkpoint_dir, checkpoint_every) as ckpt:
        state = data.initial_state(P, cfg.memory)
        state, hist = _dl_driver.run(
            data, state, lam, mask, cfg=cfg, progress=progress, checkpoint=ckpt
        )
    return finish(state, hist, mask, bias, throw)
