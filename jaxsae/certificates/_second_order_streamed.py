"""The second-order certificate's Hessian (THEORY §4) over streamed data.

The resident Hessian (``_hessian.RiemannianHessian``) keeps every point's inverse
active Gram (``N × cap²`` numbers). Here nothing of size N is kept on the device
or in RAM: data and codes stay in memmaps (or the caller's list of chunks) and
every quantity is a sum or maximum over chunks (``jaxsae._streaming.Streamed``):

1. codes: ``sparse_code`` chunk by chunk into a temporary memmap, or the given codes;
2. supports: strict ``S⁻`` and degenerate pairs (``_stationarity``), their count,
   the largest support (``cap``, static for the Gram solves) and the used atoms;
3. preparation: the envelope gradient of both frozen supports ``S⁻`` and ``S⁺``,
   Gram conditioning, singular Grams and the rounding scales;
4. each product ``Hess F[Ξ] = P(∇²F[Ξ]) − (d_kᵀ∇_kF) ξ_k`` is one pass over the
   data (Grams recomputed per chunk, ``jax.linearize`` of the chunk's gradient),
   for a batch of directions at once.

A one-shot iterator of chunks is written to a temporary memmap first, because
every product reads the data again; temporary files are deleted on return.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._atomic import atomic_path
from .._streaming import Streamed, Summed, add_trees, iter_chunks
from ..models._dictionary import Dictionary
from ..solvers._lasso import sparse_code
from ._hessian import Tangent, _chunk_gradient, _support_inverse, rounding_terms
from ._lanczos import HostProducts, smallest_eigs
from ._spectrum import Prepared, gram_tol
from ._stationarity import degenerate_pairs, strict_support


def frozen_chunk(Xc, Zc, support, atoms, bias, lam, cap: int):
    """One chunk's supports ``(idx, active)``, inverse Grams and polished codes ``z⁰``."""
    Zs = jnp.where(support, Zc, 0)
    G = atoms @ atoms.T
    inv = jax.vmap(_support_inverse, in_axes=(None, 0, 0, None))
    idx, active, Ginv = inv(G, Zs, support, cap)
    # the same exact polish on the frozen support as ``frozen_support``
    E = (Xc - bias - Zs @ atoms) @ atoms.T - lam
    z0 = jnp.take_along_axis(Zs, idx, axis=1)
    z0 = z0 + jnp.einsum("mij,mj->mi", Ginv, jnp.take_along_axis(E, idx, axis=1))
    return idx, active, Ginv, jnp.where(active, z0, 0)


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
        """``combine`` (default ``+``) of ``fn(XZ, valid, *args)`` over the chunks."""
        d, K = dictionary.n_features, dictionary.n_atoms
        how = Streamed(self.chunk_size, self.mesh, progress, desc)
        out, _, n = how.run(
            Summed(fn), add_trees if combine is None else combine,
            (self.pairs(d, K, dictionary.dtype),), args, dictionary.dtype,
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


def _count_chunk(XZ, valid, atoms, bias, mask, lam, tol, d: int):
    _, Zc, strong, weak = _supports(XZ, valid, atoms, bias, mask, lam, tol, d)
    plus = strong | weak
    sizes = (
        jnp.zeros(atoms.shape[0] + 1, jnp.int32)
        .at[jnp.sum(plus, axis=1)]
        .add(valid.astype(jnp.int32))
    )
    ints = (jnp.sum(weak, dtype=jnp.int32), sizes)
    return ints, jnp.sum(strong, axis=0), jnp.sum(plus, axis=0)


def _prepare_chunk(XZ, valid, atoms, bias, mask, lam, tol, gtol, n_total, d: int, cap: int):
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


def _hvp_chunk(XZ, valid, atoms, bias, mask, lam, tol, plus, Xi, bdot, d: int, cap: int):
    """``Σ_chunk ∇²F[Ξ_p, ḃ_p]`` for a batch of directions ``p`` (Grams factorised once)."""
    Xc, Zc, strong, weak = _supports(XZ, valid, atoms, bias, mask, lam, tol, d)
    w = valid.astype(Xc.dtype)
    idx, _, Ginv, z0 = frozen_chunk(Xc, Zc, strong | (weak & plus), atoms, bias, lam, cap)
    _, lin = jax.linearize(
        lambda A, b: _chunk_gradient(A, b, lam, Xc, w, z0, idx, Ginv), atoms, bias
    )
    return jax.vmap(lin)(Xi, bdot)


@jax.jit
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
        args = (D.atoms, D.bias, D.mask, *self.consts, self.plus, Xi, bdot, D.n_features, self.cap)
        hA, hb = self.source.reduce(_hvp_chunk, D, args)
        n = self.source.n_points
        radial = jnp.sum(D.atoms * self.grad_atoms, axis=1, keepdims=True)
        return project(hA / n - radial * Xi, hb / n)

    def mv(self, Xi, bdot):
        hA, hb = self.mvs(Xi[None], bdot[None])
        return hA[0], hb[0]

    def flat_mvs(self, V):
        K, d = self.dictionary.atoms.shape
        out = self.mvs(V[:, : K * d].reshape(-1, K, d), V[:, K * d :])
        return jax.vmap(self.tangent.flatten)(*out)

    def eigs(self, n_eigs, tol, max_iter, key, progress=False, desc="Lanczos"):
        """Lanczos on the host (each product is a pass over the data)."""
        t = self.tangent
        return smallest_eigs(
            HostProducts(self.flat_mvs, t.flat_project), t.atoms.size + t.atoms.shape[1],
            int(t.dimension()), n_eigs=n_eigs, tol=tol, max_iter=max_iter, key=key,
            dtype=t.atoms.dtype, every=1, progress=progress, desc=f"{desc} (a data pass per step)",
        )  # fmt: skip


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


def prepare_streamed(D: Dictionary, src: _Source, lam, ftol: float, progress):
    """Supports, gradients, Gram conditioning and rounding scales in two passes."""
    dtype, d, N = D.dtype, D.n_features, src.n_points
    mask = np.asarray(D.mask)
    consts = (lam, jnp.asarray(ftol, dtype))
    base = (D.atoms, D.bias, D.mask, *consts)
    (n_deg, sizes), used, used_plus = src.reduce(
        _count_chunk, D, (*base, d), progress=progress, desc="supports"
    )
    n_deg, cap = int(n_deg), max(1, int(np.nonzero(np.asarray(sizes))[0].max()))
    used, used_plus = mask & (np.asarray(used) > 0), mask & (np.asarray(used_plus) > 0)
    free_bias = bool(D.free_bias)
    if not used.any() and not free_bias:
        raise ValueError("No atom is used by any point: the tangent space is empty. Lower lam.")
    args = (*base, jnp.asarray(gram_tol(dtype), dtype), jnp.asarray(N, dtype), d, cap)
    ((grad, grad_plus), n_singular, rounding), ginv_max = src.reduce(
        _prepare_chunk, D, args, _add_max, progress, "Grams"
    )
    radial = float(jnp.max(jnp.abs(jnp.sum(D.atoms * grad[0], axis=1))) / N)
    prep = Prepared(
        n_deg, int(n_singular), float(1 / ginv_max), int(np.sum(mask & ~used)), int(used.sum()),
        float(rounding[0]), float(rounding[1]), radial,
    )  # fmt: skip
    t = Tangent(D.atoms, jnp.asarray(used), free_bias)
    H = StreamedHessian(src, D, consts, jnp.asarray(False), grad[0] / N, t, cap)
    H_plus = H
    if n_deg:
        t_plus = Tangent(D.atoms, jnp.asarray(used_plus), free_bias)
        H_plus = StreamedHessian(src, D, consts, jnp.asarray(True), grad_plus[0] / N, t_plus, cap)
    return prep, H, H_plus


@contextlib.contextmanager
def streamed_inputs(dictionary: Dictionary, X, lam, codes, chunk: int, mesh, progress):
    """``(X, Z, source)`` that can be read many times; temporary files live until exit.

    A one-shot iterator is spilled to a temporary memmap; missing codes are solved
    chunk by chunk (certified, THEORY §1) into another."""
    d, K, dtype = dictionary.n_features, dictionary.n_atoms, dictionary.dtype
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
        yield X, Z, _Source(X, Z, N, chunk, mesh)
