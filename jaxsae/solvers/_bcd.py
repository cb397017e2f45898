"""Block coordinate descent on the Gram form of the nonnegative lasso (THEORY §1).

For a batch of points, ``min_{z ≥ 0} ½zᵀGz − (b − λ1)ᵀz`` with ``G = DDᵀ`` (rows)
and ``b = Dᵀy``. Atoms are split into blocks of ``block`` atoms; a sweep visits
the blocks in turn (Gauss–Seidel), computes the block gradient with one
``(N, K) × (K, block)`` product and takes ``inner`` accelerated projected-gradient
steps (``_fista.fista``, no restart) on the block with its own Lipschitz constant ``λ_max(G_bb)`` (≈ 3 for 64
random atoms in R¹²⁸, against ≈ 9 for the whole Gram matrix). Per pass over the
data it identifies supports several times faster than FISTA on the full Gram
form; exact codes then come from the active-set polish.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._fista import fista, fista_start, lipschitz, nonnegative


def blocks(K: int, block: int) -> list[slice]:
    """Contiguous atom blocks of at most ``block`` atoms."""
    return [slice(s, min(s + block, K)) for s in range(0, K, block)]


def block_lipschitz(G, block: int):
    """Per-block Lipschitz constants ``λ_max(G_bb)`` (shape ``(n_blocks,)``)."""
    return jnp.stack([lipschitz(G[sl, sl]) for sl in blocks(G.shape[0], block)])


def bcd(Z, G, B, lam, mask, Ls, sweeps: int, block: int, inner: int):
    """``sweeps`` Gauss–Seidel sweeps of accelerated block steps, batched over rows of ``Z``.

    Args:
        Z: ``(N, K)`` nonnegative start; G: ``(K, K)`` Gram (zero on masked atoms);
        B: ``(N, K)`` ``= Y Dᵀ``; lam: λ; mask: ``(K,)``; Ls: ``block_lipschitz(G, block)``.
    """
    shift = jnp.where(mask, B - lam, -jnp.inf)

    def sweep(_, Z):
        for j, sl in enumerate(blocks(G.shape[0], block)):
            Gb, z0 = G[sl, sl], Z[:, sl]
            grad0 = Z @ G[:, sl] - shift[:, sl]

            def grad(y, Gb=Gb, z0=z0, grad0=grad0):
                return grad0 + (y - z0) @ Gb

            start = fista_start(z0, per_row=False)
            z = fista(grad, nonnegative, start, 1 / Ls[j], inner, restart=False).Z
            Z = Z.at[:, sl].set(z)
        return Z

    return jax.lax.fori_loop(0, sweeps, sweep, Z)
