"""Block coordinate descent on the Gram form of the nonnegative lasso (THEORY §1).

For a batch of points, ``min_{z ≥ 0} ½zᵀGz − (b − λ1)ᵀz`` with ``G = DDᵀ`` (rows)
and ``b = Dᵀy``. Atoms are split into blocks of ``block`` atoms; a sweep visits
the blocks in turn (Gauss–Seidel), computes the block gradient with one
``(N, K) × (K, block)`` product and takes ``inner`` accelerated projected-gradient
steps on the block with its own Lipschitz constant ``λ_max(G_bb)`` (≈ 3 for 64
random atoms in R¹²⁸, against ≈ 9 for the whole Gram matrix). Per pass over the
data it identifies supports several times faster than FISTA on the full Gram
form; exact codes then come from the active-set polish.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def lipschitz(G, n_iter: int = 60):
    """``λ_max(G)`` by power iteration (an upper estimate after a 2% margin).

    The start vector is not constant (a constant one is in the null space of e.g.
    the Gram of ``[[1], [-1]]``), and the estimate is floored at ``max_k G_kk``,
    itself a lower bound on ``λ_max``, so it is never 0 for a nonzero ``G``.
    """
    v = 1 + 0.5 * jnp.sin(jnp.arange(1, G.shape[0] + 1, dtype=G.dtype))
    v = v / jnp.linalg.norm(v)

    def body(_, v):
        w = G @ v
        return w / jnp.maximum(jnp.linalg.norm(w), jnp.finfo(G.dtype).tiny)

    v = jax.lax.fori_loop(0, n_iter, body, v)
    est = jnp.maximum(v @ G @ v, jnp.max(jnp.diagonal(G)))
    return 1.02 * jnp.maximum(est, jnp.finfo(G.dtype).tiny) + jnp.finfo(G.dtype).eps


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
    one = jnp.ones((), Z.dtype)

    def sweep(_, Z):
        for j, sl in enumerate(blocks(G.shape[0], block)):
            Gb, z0 = G[sl, sl], Z[:, sl]
            grad0 = Z @ G[:, sl] - shift[:, sl]

            def step(_, carry, Gb=Gb, z0=z0, grad0=grad0, L=Ls[j]):
                z, zprev, t = carry
                y = z + ((t - 1) / (t + 1 + 2 * jnp.sqrt(t))) * (z - zprev)
                znew = jnp.maximum(y - (grad0 + (y - z0) @ Gb) / L, 0)
                return znew, z, 0.5 * (1 + jnp.sqrt(1 + 4 * t * t))

            z, _, _ = jax.lax.fori_loop(0, inner, step, (z0, z0, one))
            Z = Z.at[:, sl].set(z)
        return Z

    return jax.lax.fori_loop(0, sweeps, sweep, Z)
