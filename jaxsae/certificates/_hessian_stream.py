"""Hessian-vector products of the frozen-support objective over a stream (THEORY §4).

``_hessian.FrozenSupport`` keeps every point's inverse active Gram in memory
(``N × cap²`` numbers). For data that does not fit, this recomputes them chunk
by chunk from the data and the codes (both may be memmaps), so one product
``∇²F[Ξ, ḃ]`` costs one pass over the data with memory bounded by the chunk:

    ∇²F[Ξ, ḃ] = (1/N) Σ_chunks  jvp(∇ F_chunk)(D, b; Ξ, ḃ),

with ``F_chunk`` the frozen-support objective of the chunk's points
(supports ``S_n = {k : z_kn > threshold}``). With several devices each chunk is
sharded over the ``"data"`` mesh (``jaxsae._streaming.stream_sum``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .._streaming import DEFAULT_CHUNK, stream_sum
from ..models._dictionary import Dictionary
from ._hessian import _chunk_gradient, _support_inverse


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


def _chunk_hvp(XZ, valid, atoms, bias, mask, lam, threshold, Xi, bdot, *, d: int, cap: int):
    Xc, Zc = XZ[:, :d], XZ[:, d:]
    w = valid.astype(Xc.dtype)
    idx, _, Ginv, z0 = frozen_chunk(Xc, Zc, (Zc > threshold) & mask, atoms, bias, lam, cap)

    def grad(A, b):
        return _chunk_gradient(A, b, lam, Xc, w, z0, idx, Ginv)

    _, (hA, hb) = jax.jvp(grad, (atoms, bias), (Xi, bdot))
    return hA, hb


_FNS: dict = {}


def _fn(d: int, cap: int):
    # one Python function per static (d, cap), so ``stream_sum`` compiles it once
    if (d, cap) not in _FNS:
        _FNS[d, cap] = lambda XZ, valid, *a: _chunk_hvp(XZ, valid, *a, d=d, cap=cap)
    return _FNS[d, cap]


def _pairs(X, Z, chunk_size: int):
    """Rows of ``[X | Z]`` in pieces of ``chunk_size`` (memmaps are read a piece at a time)."""
    for i in range(0, X.shape[0], chunk_size):
        yield np.concatenate(
            [np.asarray(X[i : i + chunk_size]), np.asarray(Z[i : i + chunk_size])], 1
        )


def hessian_vector_stream(
    dictionary: Dictionary,
    X,
    codes,
    lam,
    Xi,
    bdot=None,
    *,
    cap: int,
    threshold: float = 0.0,
    chunk_size: int = DEFAULT_CHUNK,
    mesh=None,
):
    """``∇²F[Ξ, ḃ]`` (Euclidean, per-point mean) of the frozen-support objective of (§4).

    Args:
        dictionary: ``(D, b, mask)``.
        X: data ``(N, d)`` (array or memmap).
        codes: optimal codes ``(N, K)`` (array or memmap), e.g. saved by ``sparse_code``.
        lam: λ > 0.
        Xi: direction ``(K, d)`` for the atoms; ``bdot``: ``(d,)`` for the bias (default 0).
        cap: the largest support size (static; ``max_n |S_n|``).
        threshold: supports are ``z_kn > threshold``.
        chunk_size, mesh: as in ``jaxsae._streaming.stream_sum``.

    Returns:
        ``(H_atoms (K, d), H_bias (d,))``, equal to ``_hessian.euclidean_hvp`` on the
        same supports, with memory bounded by ``chunk_size``.
    """
    K, d = dictionary.atoms.shape
    if np.shape(codes) != (X.shape[0], K):
        raise ValueError(
            f"codes must have shape (N, K) = ({X.shape[0]}, {K}), got {np.shape(codes)}."
        )
    if cap < 1:
        raise ValueError(f"cap must be ≥ 1 (the largest support size), got {cap}.")
    dtype = dictionary.dtype
    bdot = jnp.zeros((d,), dtype) if bdot is None else jnp.asarray(bdot, dtype)
    args = (
        dictionary.atoms, dictionary.bias, dictionary.mask, jnp.asarray(lam, dtype),
        jnp.asarray(threshold, dtype), jnp.asarray(Xi, dtype), bdot,
    )  # fmt: skip
    (hA, hb), n = stream_sum(
        _fn(d, int(cap)),
        _pairs(X, codes, chunk_size),
        chunk_size,
        args=args,
        dtype=dtype,
        mesh=mesh,
    )
    return hA / n, hb / n
