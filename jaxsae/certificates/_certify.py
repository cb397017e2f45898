"""``certify``: the first-order certificate of THEORY §8, and the second order on request."""

from __future__ import annotations

from collections.abc import Iterator

import jax.numpy as jnp
import numpy as np
from jaxtyping import Real

from .._streaming import pass_for
from .._typing import ArrayLike, Chunks
from .._validate import as_float_array, check_data, check_lam
from ..models._dictionary import Dictionary
from ..models._sae_dictionary import as_dictionary
from ..solvers._lasso import sparse_code
from ._first_order import DEFAULT_SUPPORT_CAP, Certificate, default_certify_tol, first_order_pass
from ._second_order import second_order as run_second_order


def certify(
    dictionary: Dictionary | Real[ArrayLike, "K d"],
    X: Real[ArrayLike, "N d"] | Chunks,
    lam,
    *,
    codes: Real[ArrayLike, "N K"] | Chunks | None = None,
    chunk_size: int | None = None,
    tol: float | None = None,
    antipodal_cos: float = 0.9,
    second_order: bool = False,
    support_cap: int | None = None,
    amortise: bool = True,
    optimal_codes: Real[ArrayLike, "N K"] | Chunks | None = None,
    mesh=None,
    progress: bool = False,
) -> Certificate:
    """First-order certificate of a dictionary (THEORY §1–§3, §6, §8).

    Codes are solved with ``sparse_code`` (an array's before the pass, ``chunk_size``
    rows at a time, by the coder's own compiled program; streamed data's chunk by
    chunk) unless ``codes`` are given, e.g. from an SAE encoder; then the certificate judges those
    codes and also reports the amortisation gap ``L(D, Z) − L(D, Z*)`` (§1).
    It measures the duality gap and KKT residuals of the codes, per atom the
    Riemannian gradient and the alignment error of (A), the bias gradient, the
    pairwise identity (P) for every pair (nested supports, co-firing
    antipodal pairs), the residual decomposition (R), and the wide-limit bound
    (W) with the global certificate ``max_n ‖r_n‖ ≤ λ``.

    Arrays are reduced in one compiled scan over chunks; a ``numpy.memmap``
    (``np.load(path, mmap_mode="r")``), a list of ``(n_i, d)`` chunks or an
    iterator of them is streamed from the host with memory bounded by
    ``chunk_size`` (``jaxsae._streaming.Pass``); the certificate is the same.

    Args:
        dictionary: the dictionary ``(D, b, mask)``.
        X: data ``(N, d)``: an array, memmap, list of chunks or iterator of chunks.
        lam: λ > 0 (may be traced for array data: ``vmap`` over λ works, and over masks).
        codes: optional codes ``(N, K)`` (same kinds as ``X``) to judge instead of the
            optimal ones.
        chunk_size: points per chunk (default: all rows of an array; 8192 streamed).
        tol: tolerance of the verdict on the first-order residuals (relative to
            λ for KKT; alignment errors are scale-free); default
            1e-6 (float64) or 1e-3 (float32).
        antipodal_cos: atoms with ``cos < −antipodal_cos`` are antipodal.
        second_order: also run the second-order certificate (§4) and attach it.
        support_cap: largest active set the (R) decomposition handles exactly
            (default ``min(K, d, 32)``); points with more active atoms are
            counted in ``n_overflow`` and use their ``support_cap`` largest codes.
        amortise: with ``codes``, also solve the optimal codes and report the
            amortisation gap (default); False judges ``codes`` as the solved codes.
        optimal_codes: with ``codes``, optimal codes solved already (e.g.
            ``sparse_code(D, X, lam).codes``), used for the amortisation gap instead of
            solving them again. The gap's error bar is their own duality gap, so the
            interval stays a proved one whatever they are.
        mesh: streamed data only: a 1-d ``"data"`` mesh to shard chunks over
            (default: all devices when there are several; ``False``: one device).
        progress: streamed data only: a progress bar.

    Returns:
        A :class:`Certificate`.

    Example:
        >>> cert = jaxsae.certify(D, X, 0.1)
        >>> print(cert.table()); cert.verdict
        >>> cert = jaxsae.certify(D, np.load("acts.npy", mmap_mode="r"), 0.1)  # 2 GB, streamed
    """
    dictionary = as_dictionary(dictionary, X, fn="jaxsae.certify")
    how = pass_for(X, chunk_size, mesh=mesh, progress=progress, desc="certify")
    dt, K = dictionary.dtype, dictionary.n_atoms
    lam = check_lam(lam, dt)
    tol = default_certify_tol(dt) if tol is None else float(tol)
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}.")
    if not 0 <= antipodal_cos <= 1:
        raise ValueError(f"antipodal_cos must lie in [0, 1], got {antipodal_cos}.")
    cap = min(K, dictionary.n_features, DEFAULT_SUPPORT_CAP) if support_cap is None else int(support_cap)  # fmt: skip
    if cap < 1:
        raise ValueError(f"support_cap must be a positive integer, got {support_cap}.")
    resident = how.resident
    if resident:
        X = check_data(X, dictionary.n_features, dt)
        codes, optimal_codes = (
            None if a is None else as_float_array(a, name).astype(dt)
            for a, name in ((codes, "codes"), (optimal_codes, "optimal_codes"))
        )
    _check_codes(X, codes, K)
    if optimal_codes is not None:
        if codes is None or not amortise:
            raise ValueError(
                "optimal_codes are the reference of the amortisation gap of given codes: pass "
                "them together with codes=... (and amortise=True)."
            )
        _check_codes(X, optimal_codes, K, "optimal_codes")
    if second_order and not resident and any(isinstance(a, Iterator) for a in (X, codes)):
        raise ValueError(
            "certify(..., second_order=True) reads the data several times, so it cannot take a "
            "one-shot iterator. Pass a numpy memmap or a list of chunks (or call certify and "
            "second_order separately, each with a fresh iterator)."
        )
    given = codes is not None and amortise
    if resident and (codes is None or (given and optimal_codes is None)):
        # solved by sparse_code's own program, shared with every other caller
        solved = sparse_code(dictionary, X, lam, chunk_size=how.chunk_size).codes
        codes, optimal_codes = (solved, None) if codes is None else (codes, solved)
    cert = first_order_pass(
        dictionary, X, lam, codes, jnp.asarray(tol, dt), jnp.asarray(antipodal_cos, dt),
        min(cap, K), given, how, optimal_codes,
    )  # fmt: skip
    if second_order:
        so = run_second_order(
            dictionary, X, lam, codes=codes, chunk_size=chunk_size, first_order_tol=tol,
            mesh=mesh, progress=progress,
            _first=cert.stationarity_measures() if codes is not None else None,
        )  # fmt: skip
        cert = cert.with_second_order(so)
    return cert


def _check_codes(X, codes, K: int, name: str = "codes") -> None:
    if codes is None:
        return
    n_rows = _shape(X)[0]
    if n_rows is None or _shape(codes) != (n_rows, K):
        raise ValueError(
            f"{name} must have shape (N, K) = ({n_rows if n_rows is not None else 'N'}, {K}), "
            f"got {_shape(codes)}. Rows are points, columns atoms (SAE feature activations); "
            "stream codes only together with an array, memmap or list of chunks X."
        )


def _shape(A) -> tuple:
    """``(rows, columns)`` of an array, memmap or list of chunks; ``(None,)`` for a stream."""
    if hasattr(A, "shape"):
        return tuple(A.shape)
    if isinstance(A, list | tuple) and A:
        return (sum(np.shape(c)[0] for c in A), np.shape(A[0])[1])
    return (None,)
