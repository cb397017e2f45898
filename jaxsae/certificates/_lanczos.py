"""Smallest eigenpairs of a symmetric matrix-free operator: Lanczos with full
reorthogonalisation, restricted to the range of a projection (THEORY §4).

Every Lanczos vector is projected back onto the subspace (the tangent space), so
directions outside it never produce spurious eigenvalues. Iterations run in
jitted blocks; after each block the Ritz values are checked against the
a-posteriori bound ``min(ρ, ρ²/gap) ≤ tol·|θ|`` (``ρ = β_m |s_m|``), and the
returned pairs carry their true residuals ``‖Hy − θy‖``.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


@eqx.filter_jit
def _lanczos_block(matvec, project, V, alpha, beta, j0, n_steps: int, key):
    m = alpha.shape[0]
    rows = jnp.arange(V.shape[0])
    eps = jnp.finfo(V.dtype).eps

    def orth(V, w, j):
        for _ in range(2):
            c = jnp.where(rows <= j, V @ w, 0)
            w = w - c @ V
        return w

    def body(j, carry):
        V, alpha, beta = carry
        v = V[j]
        w = project(matvec(v))
        a = v @ w
        scale = jnp.maximum(jnp.linalg.norm(w), eps)
        w = project(orth(V, w, j))
        b = jnp.linalg.norm(w)
        broke = b <= 1e3 * eps * scale
        fresh = project(jax.random.normal(jax.random.fold_in(key, j), v.shape, v.dtype))
        fresh = project(orth(V, fresh, j))
        w = jnp.where(broke, fresh / jnp.linalg.norm(fresh), w / b)
        nxt = jnp.minimum(j + 1, m)
        V = V.at[nxt].set(jnp.where(j + 1 <= m, w, V[nxt]))
        return V, alpha.at[j].set(a), beta.at[j].set(jnp.where(broke, 0.0, b))

    end = jnp.minimum(j0 + n_steps, m)
    return jax.lax.fori_loop(j0, end, body, (V, alpha, beta))


@eqx.filter_jit
def _residuals(matvec, vectors, values):
    Hy = jax.vmap(matvec)(vectors)
    return jnp.linalg.norm(Hy - values[:, None] * vectors, axis=1)


class Eigs(eqx.Module):
    """Ritz pairs: ``values`` ascending, ``vectors`` rows, their residuals and steps."""

    values: jax.Array
    vectors: jax.Array
    residuals: jax.Array
    steps: int = eqx.field(static=True)
    converged: bool = eqx.field(static=True)
    largest: float = eqx.field(static=True)


def smallest_eigs(
    matvec,
    project,
    n: int,
    dim: int,
    *,
    n_eigs: int,
    tol: float,
    max_iter: int,
    key,
    dtype,
    block: int = 20,
) -> Eigs:
    """Smallest ``n_eigs`` eigenpairs of ``matvec`` on the range of ``project``.

    Args:
        matvec, project: functions on flat ``(n,)`` vectors (jit-compatible pytrees
            or closures over arrays).
        dim: dimension of the subspace (Lanczos is exact after ``dim`` steps).
        tol: relative accuracy of the eigenvalues.
    """
    m = int(min(max_iter, dim))
    n_eigs = int(min(n_eigs, m))
    V = jnp.zeros((m + 1, n), dtype)
    v0 = project(jax.random.normal(key, (n,), dtype))
    V = V.at[0].set(v0 / jnp.linalg.norm(v0))
    alpha = jnp.zeros((m,), dtype)
    beta = jnp.zeros((m,), dtype)
    j, converged = 0, False
    while j < m:
        steps = min(block, m - j)
        V, alpha, beta = _lanczos_block(matvec, project, V, alpha, beta, jnp.asarray(j), steps, key)
        j += steps
        a, b = np.asarray(alpha[:j]), np.asarray(beta[:j])
        T = np.diag(a) + np.diag(b[:-1], 1) + np.diag(b[:-1], -1)
        theta, S = np.linalg.eigh(T)
        rho = np.abs(b[-1] * S[-1, :n_eigs])
        gaps = np.array(
            [
                np.min(np.abs(np.delete(theta, i) - theta[i])) if j > 1 else np.inf
                for i in range(n_eigs)
            ]
        )
        err = np.minimum(rho, rho**2 / np.maximum(gaps, np.finfo(float).tiny))
        floor = np.finfo(np.dtype(dtype)).eps * 10 * np.max(np.abs(theta))
        if j == m and m == dim or np.all(err <= tol * np.abs(theta[:n_eigs]) + floor):
            converged = True
            break
    vectors = jnp.asarray(S[:, :n_eigs].T, dtype) @ V[:j]
    vectors = vectors / jnp.linalg.norm(vectors, axis=1, keepdims=True)
    values = jnp.asarray(theta[:n_eigs], dtype)
    residuals = _residuals(matvec, vectors, values)
    return Eigs(values, vectors, residuals, j, converged, float(np.max(theta)))
