"""The second-order certificate (THEORY §4) over data streamed from disk or chunks.

``second_order`` keeps every point's inverse active Gram in memory (``N × cap²``
numbers). Here nothing of size N is kept on the device or in RAM: the data and
the codes stay in memmaps (or in the caller's list of chunks) and every quantity
is a sum or a maximum over chunks of points (``jaxsae._streaming.stream_sum``):

1. codes: ``sparse_code`` chunk by chunk (tight duality-gap tolerance, as the
   in-memory path), written to a temporary memmap; or the given codes;
2. supports: with ``z > τ·max Z`` strict and ``z ≈ 0, g ≈ λ`` degenerate, the
   degenerate count, the largest support (``cap``, static for the Gram solves)
   and the used atoms;
3. preparation: inverse active Grams, the envelope gradient ``∇F = −(1/N) R Zᵀ``
   of both frozen supports ``S⁻`` and ``S⁺`` (§4), the smallest-Gram proxy,
   singular Grams and the code KKT of the polished codes (§1);
4. Lanczos with full reorthogonalisation on the host, where each product
   ``Hess F[Ξ] = P(∇²F[Ξ]) − (d_kᵀ∇_kF) ξ_k`` is one pass over the data
   (Grams recomputed per chunk, ``jax.jvp`` of the chunk's envelope gradient).

Memory is bounded by the chunk size plus the Krylov basis (``steps × K d``).
A one-shot iterator of chunks is written to a temporary memmap first, because
every step of Lanczos reads the data again; temporary files are deleted on return.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._streaming import iter_chunks, stream_sum
from .._validate import check_lam
from ..io._atomic import atomic_path
from ..models._dictionary import Dictionary
from ..solvers._lasso import sparse_code
from ._certify_stream import certify_stream
from ._descent import proved_decrease
from ._first_order import default_certify_tol
from ._hessian import Tangent, _chunk_gradient, rounding_terms
from ._hessian_stream import frozen_chunk
from ._lanczos import smallest_eigs_host
from ._second_order import (
    _DEFAULT_CHUNK,
    DENSE_MAX,
    Prepared,
    SecondOrder,
    build,
    dense_spectrum,
    gram_tol,
    hvp_batch,
    wants_descent_check,
)
from ._stationarity import Stationarity, degenerate_pairs, strict_support


class _Source(eqx.Module):
    """Data and codes that can be read again, chunk by chunk (memmaps or lists of chunks)."""

    X: object
    Z: object
    n_points: int = eqx.field(static=True)
    chunk_size: int = eqx.field(static=True)
    mesh: object = eqx.field(static=True)

    def pairs(self, d: int, K: int, dtype) -> Iterator[np.ndarray]:
        """Rows of ``[X | Z]`` in pieces of ``chunk_size``; non-finite data is an error."""
        done = 0
        Xs, Zs = iter_chunks(self.X, self.chunk_size, d), iter_chunks(self.Z, self.chunk_size, K)
        for (Xc, n), (Zc, _) in zip(Xs, Zs, strict=False):
            Xc = Xc[:n].astype(dtype, copy=False)
            if not np.isfinite(Xc).all():
                raise ValueError(
                    f"the data has non-finite values (NaN/Inf) in rows {done}..{done + n - 1}. "
                    "Remove or impute them before certifying."
                )
            yield np.concatenate([Xc, Zc[:n].astype(dtype, copy=False)], 1)
            done += n

    def reduce(self, fn, dictionary: Dictionary, args, combine=None, progress=False, desc=""):
        d, K = dictionary.n_features, dictionary.n_atoms
        out, n = stream_sum(
            fn, self.pairs(d, K, dictionary.dtype), self.chunk_size, args=args,
            dtype=dictionary.dtype, mesh=self.mesh, progress=progress, desc=desc, combine=combine,
        )  # fmt: skip
        assert n == self.n_points, (n, self.n_points)
        return out


def _supports(XZ, valid, atoms, bias, mask, lam, tol, d: int):
    """Masked codes and the strict / degenerate pairs of a chunk (``_stationarity``)."""
    Xc, Zc = XZ[:, :d], jnp.where(mask, XZ[:, d:], 0)
    g = (Xc - bias - Zc @ atoms) @ atoms.T
    strong = strict_support(Zc, lam, tol, mask) & valid[:, None]
    weak = degenerate_pairs(Zc, g, lam, tol, mask) & ~strong & valid[:, None]
    return Xc, Zc, strong, weak


def _count_chunk(XZ, valid, atoms, bias, mask, lam, tol, *, d: int):
    _, Zc, strong, weak = _supports(XZ, valid, atoms, bias, mask, lam, tol, d)
    plus = strong | weak
    sizes = (
        jnp.zeros(atoms.shape[0] + 1, jnp.int32)
        .at[jnp.sum(plus, axis=1)]
        .add(valid.astype(jnp.int32))
    )
    ints = (jnp.sum(weak, dtype=jnp.int32), sizes)
    return ints, jnp.sum(strong, axis=0), jnp.sum(plus, axis=0)


def _prepare_chunk(XZ, valid, atoms, bias, mask, lam, tol, gtol, n_total, *, d: int, cap: int):
    Xc, Zc, strong, weak = _supports(XZ, valid, atoms, bias, mask, lam, tol, d)
    w = valid.astype(Xc.dtype)
    i, a, G, z = frozen_chunk(Xc, Zc, strong | weak, atoms, bias, lam, cap)
    grad_plus = _chunk_gradient(atoms, bias, lam, Xc, w, z, i, G)
    round_plus = rounding_terms(atoms, bias, Xc, w, z, i, a, G, n_total)
    idx, active, Ginv, z0 = frozen_chunk(Xc, Zc, strong, atoms, bias, lam, cap)
    grads = (_chunk_gradient(atoms, bias, lam, Xc, w, z0, idx, Ginv), grad_plus)
    rounding = (rounding_terms(atoms, bias, Xc, w, z0, idx, active, Ginv, n_total), round_plus)
    ginv = jnp.linalg.norm(Ginv, axis=(-2, -1))
    singular = valid & ~((ginv * gtol < 1) & jnp.isfinite(ginv))
    sums = (grads, jnp.sum(singular, dtype=jnp.int32), rounding)
    return sums, jnp.max(jnp.where(valid, ginv, 0))


def _hvp_chunk(XZ, valid, atoms, bias, mask, lam, tol, plus, Xi, bdot, *, d: int, cap: int):
    """``Σ_chunk ∇²F[Ξ_p, ḃ_p]`` for a batch of directions ``p`` (Grams factorised once)."""
    Xc, Zc, strong, weak = _supports(XZ, valid, atoms, bias, mask, lam, tol, d)
    w = valid.astype(Xc.dtype)
    idx, _, Ginv, z0 = frozen_chunk(Xc, Zc, strong | (weak & plus), atoms, bias, lam, cap)
    _, lin = jax.linearize(
        lambda A, b: _chunk_gradient(A, b, lam, Xc, w, z0, idx, Ginv), atoms, bias
    )
    return jax.vmap(lin)(Xi, bdot)


_FNS: dict = {}


def _fn(kind, **static):
    # one Python function per static shape, so ``stream_sum`` compiles each once
    key = (kind, *sorted(static.items()))
    if key not in _FNS:
        _FNS[key] = lambda XZ, valid, *a: kind(XZ, valid, *a, **static)
    return _FNS[key]


def _add_max(a, b):
    return jax.tree.map(jnp.add, a[0], b[0]), jax.tree.map(jnp.maximum, a[1], b[1])


class StreamedHessian(eqx.Module):
    """The Riemannian Hessian of THEORY §4 whose products each stream over the data.

    ``Hess F[Ξ]_k = (I − d_k d_kᵀ)(∇²F[Ξ])_k − (d_kᵀ∇_kF) ξ_k`` (as
    ``RiemannianHessian.mv``), on the frozen supports ``S⁻`` (``plus`` False)
    or ``S⁺`` (degenerate pairs added). ``flat_mvs`` takes ``(p, n)`` flat vectors.
    """

    source: _Source
    dictionary: Dictionary
    consts: tuple  # (lam, first-order tol), device scalars
    plus: jax.Array
    grad_atoms: jax.Array
    tangent: Tangent
    cap: int = eqx.field(static=True)

    def mvs(self, Xi, bdot):
        D = self.dictionary
        project = jax.vmap(self.tangent.project)
        Xi, bdot = project(Xi, bdot)
        fn = _fn(_hvp_chunk, d=D.n_features, cap=self.cap)
        args = (D.atoms, D.bias, D.mask, *self.consts, self.plus, Xi, bdot)
        hA, hb = self.source.reduce(fn, D, args)
        n = self.source.n_points
        radial = jnp.sum(D.atoms * self.grad_atoms, axis=1, keepdims=True)
        return project(hA / n - radial * Xi, hb / n)

    def flat_mvs(self, V):
        K, d = self.dictionary.atoms.shape
        out = self.mvs(V[:, : K * d].reshape(-1, K, d), V[:, K * d :])
        return jax.vmap(self.tangent.flatten)(*out)


def _n_rows(A, width: int, name: str) -> int:
    if hasattr(A, "shape"):
        if len(A.shape) != 2 or A.shape[1] != width:
            raise ValueError(f"{name} must have shape (N, {width}), got {tuple(A.shape)}.")
        return int(A.shape[0])
    return sum(int(np.shape(a)[0]) for a in A)


def _reusable(A, width: int, dtype, path: Path, name: str):
    """``A`` if it can be read twice; a one-shot iterator is written to a memmap first."""
    if not isinstance(A, Iterator):
        return A
    n = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        for piece in A:
            piece = np.asarray(piece, dtype)
            if piece.ndim != 2 or piece.shape[1] != width:
                raise ValueError(
                    f"{name} chunks must have shape (n, {width}), got {piece.shape}; the "
                    "number of columns must match the dictionary's."
                )
            fh.write(np.ascontiguousarray(piece).tobytes())
            n += piece.shape[0]
    if n == 0:
        raise ValueError(f"{name} is empty (0 points). Pass at least one data point.")
    return np.memmap(path, dtype, "r", shape=(n, width))


def _solve_codes(dictionary: Dictionary, X, lam, N: int, chunk: int, path: Path, progress):
    """Certified codes (THEORY §1), chunk by chunk, into a memmap."""
    d, K, dtype = dictionary.n_features, dictionary.n_atoms, dictionary.dtype
    done = 0
    # appended with plain writes: pages of a writable map would stay in the resident set
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        bar = _bar(progress, N)
        for Xc, n in iter_chunks(X, chunk, d):
            if not np.isfinite(Xc[:n]).all():
                raise ValueError(
                    f"the data has non-finite values (NaN/Inf) in rows {done}..{done + n - 1}. "
                    "Remove or impute them before certifying."
                )
            Zc = np.asarray(sparse_code(dictionary, Xc.astype(dtype), lam).codes)[:n]
            fh.write(np.ascontiguousarray(Zc, dtype).tobytes())
            done += n
            if bar is not None:
                bar.update(n)
        if bar is not None:
            bar.close()
    return np.memmap(path, dtype, "r", shape=(N, K))


def _bar(enabled: bool, total):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="codes", unit="pt", unit_scale=True, leave=False)


def _eigs(H: StreamedHessian, n_eigs, tol, max_iter, key, progress, desc):
    t = H.tangent
    return smallest_eigs_host(
        H.flat_mvs, t.flat_project, t.atoms.size + t.atoms.shape[1], int(t.dimension()),
        n_eigs=n_eigs, tol=tol, max_iter=max_iter, key=key, dtype=t.atoms.dtype,
        progress=progress, desc=desc,
    )  # fmt: skip


def _prepare(D: Dictionary, src: _Source, lam, ftol: float, progress):
    """Supports, gradients, Gram conditioning and rounding scales in two passes."""
    dtype, d, N = D.dtype, D.n_features, src.n_points
    mask = np.asarray(D.mask)
    consts = (lam, jnp.asarray(ftol, dtype))
    base = (D.atoms, D.bias, D.mask, *consts)
    (n_deg, sizes), used, used_plus = src.reduce(
        _fn(_count_chunk, d=d), D, base, progress=progress, desc="supports"
    )
    n_deg, cap = int(n_deg), max(1, int(np.nonzero(np.asarray(sizes))[0].max()))
    used, used_plus = mask & (np.asarray(used) > 0), mask & (np.asarray(used_plus) > 0)
    if not used.any() and not D.free_bias:
        raise ValueError("No atom is used by any point: the tangent space is empty. Lower lam.")
    args = (*base, jnp.asarray(gram_tol(dtype), dtype), jnp.asarray(N, dtype))
    ((grad, grad_plus), n_singular, rounding), ginv_max = src.reduce(
        _fn(_prepare_chunk, d=d, cap=cap), D, args, _add_max, progress, "Grams"
    )
    radial = float(jnp.max(jnp.abs(jnp.sum(D.atoms * grad[0], axis=1))) / N)
    prep = Prepared(
        n_deg, int(n_singular), float(1 / ginv_max), int(np.sum(mask & ~used)), int(used.sum()),
        float(rounding[0]), float(rounding[1]), radial,
    )  # fmt: skip
    H = StreamedHessian(
        src, D, consts, jnp.asarray(False), grad[0] / N, Tangent(D.atoms, jnp.asarray(used), D.free_bias), cap
    )  # fmt: skip
    H_plus = H
    if n_deg:
        t_plus = Tangent(D.atoms, jnp.asarray(used_plus), D.free_bias)
        H_plus = StreamedHessian(src, D, consts, jnp.asarray(True), grad_plus[0] / N, t_plus, cap)
    return prep, H, H_plus


def _certificate(D: Dictionary, src: _Source, lam, first: Stationarity, n_eigs, tol, max_iter,
                 key, dense_max: int, progress) -> SecondOrder:  # fmt: skip
    K, d, N = D.n_atoms, D.n_features, src.n_points
    prep, H, H_plus = _prepare(D, src, lam, first.tol, progress)
    dim = int(H.tangent.dimension())
    if dim <= dense_max:
        batch = hvp_batch(src.chunk_size, H.cap, d)

        def spectrum(H, k, rounding):
            basis = np.asarray(H.tangent.basis(int(jnp.sum(H.tangent.space))))
            return dense_spectrum(H.flat_mvs, basis, k, N, rounding, prep.radial, D.dtype, batch)

        e, lower, error = spectrum(H, n_eigs, prep.rounding)
        e_plus = e
        if H_plus is not H:
            e_plus, lower, error = spectrum(H_plus, 1, prep.rounding_plus)
        method = "dense"
    else:
        e = _eigs(H, n_eigs, tol, max_iter, key, progress, "Lanczos (a data pass per step)")
        e_plus = e
        if H_plus is not H:  # one-sided bound: degenerate pairs added to the supports (§4)
            e_plus = _eigs(H_plus, 1, tol, max_iter, key, progress, "Lanczos S⁺")
        lower, error, method = -np.inf, np.nan, "lanczos"
    decrease = (np.nan, np.nan)
    if wants_descent_check(e, first, prep, lower):
        vec = np.asarray(e.vectors[0])
        decrease = proved_decrease(
            D, src.X, lam, vec[: K * d].reshape(K, d), vec[K * d :], src.chunk_size
        )
    return build(
        e, e_plus, lower, error, prep, first, K, d, method=method, dimension=dim,
        dense_max=dense_max, tol=tol, decrease=decrease,
    )  # fmt: skip


def second_order_stream(
    dictionary: Dictionary,
    X,
    lam,
    *,
    codes=None,
    chunk_size: int | None = None,
    n_eigs: int = 1,
    tol: float = 1e-4,
    max_iter: int = 400,
    key=None,
    first_order_tol: float | None = None,
    dense_max: int = DENSE_MAX,
    mesh=None,
    progress: bool = False,
    _first: Stationarity | None = None,
) -> SecondOrder:
    """``second_order`` (THEORY §4) with memory bounded by the chunk size, not by N.

    The same certificate, the same ``SecondOrder`` result (the proof up to
    ``dense_max`` tangent dimensions, the ``S⁺`` spectrum at degenerate points, the
    evaluation of ``F`` along a negative eigenvector), but the data and codes are
    read chunk by chunk on every pass: a first-order pass, two preparation passes,
    then one pass per batch of Hessian-vector products (dense) or per Lanczos step.
    ``jaxsae.second_order`` calls this for a memmap, a list of chunks or an iterator.

    Args:
        dictionary, lam, n_eigs, tol, max_iter, key, first_order_tol, dense_max: as in
            ``second_order``.
        X: data ``(N, d)`` as a ``numpy.memmap`` (``np.load(path, mmap_mode="r")``),
            an array, a list of ``(n_i, d)`` chunks, or a one-shot iterator of chunks
            (copied to a temporary memmap first: the data is read many times).
        codes: optimal codes ``(N, K)`` (array, memmap, chunks) with the rows of X;
            default: ``sparse_code`` chunk by chunk into a temporary memmap.
        chunk_size: points per chunk (default 4096); peak memory grows with it.
        mesh: a 1-d ``"data"`` mesh to shard chunks over (default: all devices).
        progress: tqdm bars over the passes and the Lanczos steps.

    Example:
        >>> X = np.load("acts.npy", mmap_mode="r")
        >>> res = jaxsae.second_order(D, X, 0.1, chunk_size=8192, progress=True)
    """
    if n_eigs < 1 or max_iter < 1:
        raise ValueError(f"n_eigs and max_iter must be ≥ 1, got {n_eigs} and {max_iter}.")
    if not 0 < tol < 1:
        raise ValueError(f"tol is a relative accuracy in (0, 1), got {tol}.")
    chunk = _DEFAULT_CHUNK if chunk_size is None else int(chunk_size)
    if chunk < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}.")
    dtype, d, K = dictionary.dtype, dictionary.n_features, dictionary.n_atoms
    lam = check_lam(lam, dtype)
    key = jax.random.key(0) if key is None else key
    ftol = float(default_certify_tol(dtype) if first_order_tol is None else first_order_tol)
    with tempfile.TemporaryDirectory(prefix="jaxsae-second-order-") as tmp:
        X = _reusable(X, d, dtype, Path(tmp) / "X.bin", "X")
        N = _n_rows(X, d, "X")
        if N == 0:
            raise ValueError("the data is empty (0 points). Pass at least one data point.")
        if codes is None:
            Z = _solve_codes(dictionary, X, lam, N, chunk, Path(tmp) / "Z.bin", progress)
        else:
            Z = _reusable(codes, K, dtype, Path(tmp) / "Z.bin", "codes")
            if (n := _n_rows(Z, K, "codes")) != N:
                raise ValueError(
                    f"codes must have the rows of X: (N, K) = ({N}, {K}), got {n} rows."
                )
        first = _first
        if first is None:
            first = certify_stream(
                dictionary, X, lam, codes=Z, chunk_size=chunk, tol=ftol, mesh=mesh,
                progress=progress, amortise=False,
            ).stationarity_measures()  # fmt: skip
        src = _Source(X, Z, N, chunk, mesh)
        return _certificate(
            dictionary, src, lam, first, n_eigs, tol, max_iter, key, int(dense_max), progress
        )
