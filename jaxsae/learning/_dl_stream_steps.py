"""Per-chunk kernels and small updates of the streamed ``learn_dictionary``.

Each kernel sees one fixed-size chunk ``Xc`` (the last one padded; ``valid``
marks the real rows) and returns its new codes plus *sums over the chunk's
valid points*; the host adds the sums over chunks. Padded rows are replaced by
the bias, so their centred data is 0, their codes are 0 and they add nothing.
Everything that needs the whole data set is a function of these sums:

- phase 1 (alternating, THEORY (A')): ``A = Σ z_n z_nᵀ``, ``B = Σ z_n (x_n − b)ᵀ``,
  ``Σ z_n`` and ``Σ x_n`` give the exact atom pass and the bias;
- F and its envelope gradient (THEORY §2, §4): ``Σ [½‖r_n‖² + λ1ᵀz_n]``,
  ``C = Σ z_n r_nᵀ`` (rows ``c_k`` of (A)), ``Σ r_n`` and ``‖z_k‖₁``.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from ..models._objective import huber
from ._dl_fista import approximate_codes
from ._dl_manifold import chunk_sums, measures as _measures
from ._dl_steps import _codes, atom_block_pass


def _padded(P, Xc, valid):
    return jnp.where(valid[:, None], Xc, P[-1])


def _centre(P, Xc, valid):
    return _padded(P, Xc, valid) - P[-1]


@eqx.filter_jit
def alternating_chunk(P, Xc, valid, Zc, lam, mask, inner_steps: int):
    """FISTA codes for one chunk (warm-started from ``Zc``) and the phase-1 sums."""
    atoms = P[:-1]
    Y = _centre(P, Xc, valid)
    Z = approximate_codes(atoms, Y, lam, mask, Zc, inner_steps)
    Zm, _, sums = chunk_sums(atoms, Y, Z, lam, mask, valid)
    sums["A"] = Zm.T @ Zm
    sums["B"] = Zm.T @ Y
    sums["xsum"] = jnp.sum(jnp.where(valid[:, None], Xc, 0), axis=0)
    return Z, sums


@eqx.filter_jit
def certified_chunk(P, Xc, valid, Zc, lam, mask, code_tol, max_code_steps: int):
    """Certified, exact-on-support codes for one chunk (warm start ``Zc``) and F's sums."""
    Y = _centre(P, Xc, valid)
    Z = _codes(P, _padded(P, Xc, valid), lam, mask, Zc, code_tol, max_code_steps)
    _, _, sums = chunk_sums(P[:-1], Y, Z, lam, mask, valid)
    return Z, sums


measures = eqx.filter_jit(_measures)


@eqx.filter_jit
def atoms_from_stats(P, sums, n, mask, free_bias):
    """Phase 1's exact atom pass and bias update from the sums of ``alternating_chunk``.

    ``A = Σ z zᵀ / N`` and ``B = Σ z (x − b)ᵀ / N`` as in the in-memory
    ``alternating_step``; the bias becomes ``(Σ x_n − (Σ z_n) D)/N``, the mean of
    ``x_n − D z_n``.
    """
    atoms, bias = P[:-1], P[-1]
    atoms = atom_block_pass(atoms, sums["A"] / n, sums["B"] / n, mask)
    bias = jnp.where(free_bias, (sums["xsum"] - sums["l1"] @ atoms) / n, bias)
    return jnp.concatenate([atoms, bias[None, :]], axis=0)


@eqx.filter_jit
def top_residuals(P, Xc, valid, Zc, mask, m: int):
    """A chunk's ``m`` largest-norm residuals ``r_n = x_n − b − D z_n`` (``(‖r‖², rows)``;
    padded rows rank below every real one)."""
    Y = _centre(P, Xc, valid)
    R = Y - jnp.where(mask, Zc, 0) @ P[:-1]
    r_sq = jnp.where(valid, jnp.sum(R * R, axis=1), -1)
    r_sq = jnp.concatenate([r_sq, jnp.full((m,), -1, r_sq.dtype)])  # m may exceed the chunk
    R = jnp.concatenate([R, jnp.zeros((m, R.shape[1]), R.dtype)])
    vals, idx = jax.lax.top_k(r_sq, m)
    return vals, R[idx]


@jax.jit
def merge_top(a, b):
    """The ``m`` largest of two reservoirs; earlier points win ties, as ``lax.top_k``
    over the whole data would."""
    vals, idx = jax.lax.top_k(jnp.concatenate([a[0], b[0]]), a[0].shape[0])
    return vals, jnp.concatenate([a[1], b[1]])[idx]


@eqx.filter_jit
def reseed(policy, P, l1, top_rows, mask):
    """Apply ``ReseedDead`` from the reservoir: dead atoms are those with ``‖z_k‖₁ = 0``.

    ``ReseedDead`` looks at the codes only through their column sums, so a
    stand-in code matrix whose first row is ``‖z_k‖₁`` is exact.
    """
    stub = jnp.zeros((top_rows.shape[0], l1.shape[0]), l1.dtype).at[0].set(l1)
    atoms = policy(P[:-1], stub, top_rows, mask)
    return jnp.concatenate([atoms, P[-1:]], axis=0)


@eqx.filter_jit
def table_chunk(P, Xc, valid, Zc, lam, mask):
    """Sums for a ``SweepResult`` row: ‖r‖², active count, ``Σ z``, ``Σ x``, ``Σ ‖x‖²``, (W)."""
    Y = _centre(P, Xc, valid)
    Zm = jnp.where(mask & valid[:, None], Zc, 0)
    R = Y - Zm @ P[:-1]
    Xv = jnp.where(valid[:, None], Xc, 0)
    h = huber(jnp.sqrt(jnp.sum(Y * Y, axis=1)), lam)
    return {
        "err": jnp.sum(R * R),
        "active": jnp.sum(Zm > 0).astype(Xc.dtype),
        "l1": jnp.sum(Zm, axis=0),
        "xsum": jnp.sum(Xv, axis=0),
        "xsq": jnp.sum(Xv * Xv),
        "bound": jnp.sum(jnp.where(valid, h, 0)),
    }
