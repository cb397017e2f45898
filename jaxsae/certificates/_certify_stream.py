"""``certify`` over data streamed from a memmap or an iterable of chunks.

The first-order certificate (THEORY §1–§3, §6, §8) is a sum over points of
per-chunk statistics (``_chunk_stats`` of ``_first_order``) plus a few maxima
and the per-point residual norms. Here the chunks come from the host one at a
time (``jaxsae._streaming.iter_chunks``: fixed shape, last chunk padded, pages
of a memmap released after each copy), so device memory and the process's
resident set are bounded by the chunk size, not by N; only the ``O(N)``
per-point norms (three numbers a point) are kept. With several devices each
chunk's point axis is sharded over a 1-d ``"data"`` mesh and XLA reduces the
sums; nothing is communicated by hand.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from .._streaming import DEFAULT_CHUNK, data_mesh, iter_chunks, release_freed_memory
from .._validate import check_lam
from ..models._dictionary import Dictionary
from ._first_order import (
    DEFAULT_SUPPORT_CAP,
    Certificate,
    _acc_dtype,
    _assemble,
    _chunk_stats,
    default_certify_tol,
)


@eqx.filter_jit
def _chunk(dictionary, lam, tol, Xc, Zc, w, codes_given: bool, acc, cap: int):
    return _chunk_stats(dictionary, lam, tol, Xc, Zc, w, codes_given, acc, cap)


def _put(a, mesh, spec):
    if mesh is None:
        return jnp.asarray(a)
    return jax.device_put(a, NamedSharding(mesh, spec))


def _code_chunks(codes, chunk_size: int, K: int):
    for Zc, _ in iter_chunks(codes, chunk_size, K):
        yield Zc


def certify_stream(
    dictionary: Dictionary,
    X,
    lam,
    *,
    codes=None,
    chunk_size: int = DEFAULT_CHUNK,
    tol: float | None = None,
    antipodal_cos: float = 0.9,
    mesh=None,
    progress: bool = False,
    amortise: bool = True,
    support_cap: int | None = None,
) -> Certificate:
    """The first-order certificate of ``certify`` (THEORY (A), (P), (R), (W)) over a stream.

    Args:
        dictionary: the dictionary ``(D, b, mask)``.
        X: data ``(N, d)`` as a ``numpy.memmap`` (e.g. ``np.load(path, mmap_mode="r")``),
            any array, or an iterable of ``(n_i, d)`` chunks (re-chunked).
        lam: λ > 0 (concrete).
        codes: optional codes ``(N, K)`` (array or memmap, same N) to judge instead of
            the optimal ones; needs ``X`` with a shape.
        chunk_size: points per chunk; peak memory grows with it, not with N.
        tol, antipodal_cos: as in ``certify``.
        mesh: a 1-d ``"data"`` mesh to shard chunks over (default: all devices when
            there are several; ``False``: the default device only).
        progress: show a progress bar.
        support_cap: as in ``certify``.
        amortise: with ``codes``, also solve the optimal codes and report the
            amortisation gap (default); False uses ``codes`` as the solved codes.

    Returns:
        The same :class:`Certificate` as ``certify(dictionary, np.asarray(X), lam)``.

    Example:
        >>> X = np.load("acts.npy", mmap_mode="r")      # 2e6 × 256 float32, 2 GB
        >>> cert = jaxsae.certify_stream(D, X, 0.1, chunk_size=4096)
    """
    dtype = dictionary.dtype
    lam = check_lam(lam, dtype)
    d, K = dictionary.n_features, dictionary.n_atoms
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}.")
    tol = default_certify_tol(dtype) if tol is None else float(tol)
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}.")
    if not 0 <= antipodal_cos <= 1:
        raise ValueError(f"antipodal_cos must lie in [0, 1], got {antipodal_cos}.")
    have_codes = codes is not None
    codes_given = have_codes and amortise
    cap = min(K, d, DEFAULT_SUPPORT_CAP) if support_cap is None else min(int(support_cap), K)
    if cap < 1:
        raise ValueError(f"support_cap must be a positive integer, got {support_cap}.")
    n_rows = _shape(X)[0]
    if have_codes and (n_rows is None or _shape(codes) != (n_rows, K)):
        raise ValueError(
            f"codes must be an (N, K) array with the rows of X (K = {K}); got codes of shape "
            f"{_shape(codes)} for data with {n_rows if n_rows is not None else 'unknown'} "
            "rows. Stream codes only together with an array, memmap or list of chunks X."
        )
    mesh = data_mesh() if mesh is None else (None if mesh is False else mesh)
    n_dev = 1 if mesh is None else mesh.devices.size
    chunk_size = -(-int(chunk_size) // n_dev) * n_dev
    acc = jnp.dtype(_acc_dtype(dtype))
    tol_a = jnp.asarray(tol, dtype)  # a value: new tolerances never recompile
    if mesh is not None:
        dictionary, lam, tol_a = jax.device_put((dictionary, lam, tol_a), NamedSharding(mesh, P()))
    rows, cols = P("data", None), P("data")
    codes_iter = _code_chunks(codes, chunk_size, K) if have_codes else None
    empty = jnp.zeros((chunk_size, 0), dtype)
    sums = maxes = None
    worst = (np.asarray(-1.0, acc), np.zeros((d,), acc), 0)
    per_point: list[tuple[np.ndarray, ...]] = []
    n = 0
    bar = _progress(progress, getattr(X, "shape", (None,))[0])
    for Xc, n_valid in iter_chunks(X, chunk_size, d):
        if not np.isfinite(Xc).all():
            raise ValueError(
                f"the data has non-finite values (NaN/Inf) in rows {n}..{n + n_valid - 1}. "
                "Remove or impute them before certifying."
            )
        w = (np.arange(chunk_size) < n_valid).astype(dtype)
        Zc = _put(next(codes_iter).astype(dtype), mesh, rows) if have_codes else empty
        s, m, (rb, rv, ri), pp = _chunk(
            dictionary, lam, tol_a, _put(Xc.astype(dtype), mesh, rows), Zc, _put(w, mesh, cols),
            codes_given, acc, cap,
        )  # fmt: skip
        if sums is None:
            release_freed_memory()  # the first chunk compiled ``_chunk``
        sums = s if sums is None else jax.tree.map(jnp.add, sums, s)
        maxes = m if maxes is None else jax.tree.map(jnp.maximum, maxes, m)
        rb = np.asarray(rb)
        if rb > worst[0]:
            worst = (rb, np.asarray(rv), n + int(ri))
        per_point.append(tuple(np.asarray(a)[:n_valid] for a in pp))
        n += n_valid
        if bar is not None:
            bar.update(n_valid)
    if bar is not None:
        bar.close()
    if sums is None:
        raise ValueError("the data is empty (0 points). Pass at least one data point.")
    per_point_arrays = tuple(jnp.asarray(np.concatenate(a)) for a in zip(*per_point, strict=True))
    worst = (jnp.asarray(worst[0]), jnp.asarray(worst[1]), jnp.asarray(worst[2], jnp.int32))
    if mesh is not None:
        dictionary, lam, sums, maxes = jax.device_get((dictionary, lam, sums, maxes))
        dictionary, lam = jax.tree.map(jnp.asarray, (dictionary, lam))
        sums, maxes = jax.tree.map(jnp.asarray, (sums, maxes))
    return _assemble(
        dictionary, lam, tol, float(antipodal_cos), n, sums, maxes, worst, per_point_arrays,
        codes_given, cap,
    )  # fmt: skip


def _shape(A) -> tuple:
    """``(rows, columns)`` of an array, memmap or list of chunks; ``(None,)`` for a stream."""
    if hasattr(A, "shape"):
        return tuple(A.shape)
    if isinstance(A, list | tuple) and A:
        return (sum(np.shape(c)[0] for c in A), np.shape(A[0])[1])
    return (None,)


def _progress(enabled: bool, total):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="certify", unit="pt", unit_scale=True, leave=False)
