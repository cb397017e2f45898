"""Smallest eigenpairs of a symmetric matrix-free operator: Lanczos with full
reorthogonalisation, restricted to the range of a projection (THEORY §4).

Every Lanczos vector is projected back onto the subspace (the tangent space), so
directions outside it never produce spurious eigenvalues. Iterations run in
jitted blocks; after each block the Ritz values are checked against the
a-posteriori bound ``min(ρ, ρ²/gap) ≤ tol·|θ|`` (``ρ = β_m |s_m|``), and the
returned pairs carry their true residuals ``‖Hy − θy‖``.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


def _orth(V, w, j):
    """``w`` minus its components on ``V[0..j]``: classical Gram–Schmidt, twice ("twice is
    enough"), masked so the basis keeps its fixed shape."""
    rows = jnp.arange(V.shape[0])
    for _ in range(2):
        w = w - jnp.where(rows <= j, V @ w, 0) @ V
    return w


def _extend(project, V, alpha, beta, j, w, key):
    """One Lanczos step given ``w = P H v_j``: ``α_j``, ``β_j`` and ``v_{j+1}``, with a
    fresh random start in the complement when the Krylov space is invariant."""
    m = alpha.shape[0]
    eps = jnp.finfo(V.dtype).eps
    v = V[j]
    a = v @ w
    scale = jnp.maximum(jnp.linalg.norm(w), eps)
    w = project(_orth(V, w, j))
    b = jnp.linalg.norm(w)
    broke = b <= 1e3 * eps * scale
    fresh = project(jax.random.normal(jax.random.fold_in(key, j), v.shape, v.dtype))
    fresh = project(_orth(V, fresh, j))
    w = jnp.where(broke, fresh / jnp.linalg.norm(fresh), w / b)
    nxt = jnp.minimum(j + 1, m)
    V = V.at[nxt].set(jnp.where(j + 1 <= m, w, V[nxt]))
    return V, alpha.at[j].set(a), beta.at[j].set(jnp.where(broke, 0.0, b))


_extend_jit = eqx.filter_jit(_extend)


@eqx.filter_jit
def _compiled_block(matvec, project, V, alpha, beta, j0, n_steps: int, key):
    def body(j, carry):
        V, alpha, beta = carry
        return _extend(project, V, alpha, beta, j, project(matvec(V[j])), key)

    end = jnp.minimum(j0 + n_steps, alpha.shape[0])
    return jax.lax.fori_loop(j0, end, body, (V, alpha, beta))


@eqx.filter_jit
def _compiled_products(matvec, vectors):
    return jax.vmap(matvec)(vectors)


class CompiledProducts(eqx.Module):
    """Products inside the compiled program: Lanczos advances ``block`` steps per call."""

    matvec: Callable
    project: Callable

    def advance(self, V, alpha, beta, j: int, steps: int, key):
        return _compiled_block(
            self.matvec, self.project, V, alpha, beta, jnp.asarray(j), steps, key
        )

    def products(self, vectors):
        return _compiled_products(self.matvec, vectors)


class HostProducts(eqx.Module):
    """Products that cannot be compiled (each one streams the data): one step per call,
    the product on the host, the rest of the step compiled."""

    matvecs: Callable  # (p, n) -> (p, n)
    project: Callable

    def advance(self, V, alpha, beta, j: int, steps: int, key):
        for i in range(j, j + steps):
            w = _apply(self.project, self.matvecs(V[i][None])[0])
            V, alpha, beta = _extend_jit(self.project, V, alpha, beta, jnp.asarray(i), w, key)
        return V, alpha, beta

    def products(self, vectors):
        return self.matvecs(vectors)


@eqx.filter_jit
def _apply(f, v):
    return f(v)


def _ritz(alpha, beta, n_eigs: int, tol: float, dtype, exact: bool):
    """Ritz values and vectors of the tridiagonal ``T_j`` and the convergence test:
    ``min(ρ, ρ²/gap) ≤ tol·|θ|`` (``ρ = β_j |s_j|``) for the ``n_eigs`` smallest."""
    a, b = np.asarray(alpha), np.asarray(beta)
    j = a.shape[0]
    T = np.diag(a) + np.diag(b[:-1], 1) + np.diag(b[:-1], -1)
    theta, S = np.linalg.eigh(T)
    rho = np.abs(b[-1] * S[-1, :n_eigs])
    gaps = np.array(
        [np.min(np.abs(np.delete(theta, i) - theta[i])) if j > 1 else np.inf for i in range(n_eigs)]
    )
    err = np.minimum(rho, rho**2 / np.maximum(gaps, np.finfo(float).tiny))
    floor = np.finfo(np.dtype(dtype)).eps * 10 * np.max(np.abs(theta))
    return theta, S, bool(exact or np.all(err <= tol * np.abs(theta[:n_eigs]) + floor))


class Eigs(eqx.Module):
    """Ritz pairs: ``values`` ascending, ``vectors`` rows, their residuals and steps."""

    values: jax.Array
    vectors: jax.Array
    residuals: jax.Array
    steps: int = eqx.field(static=True)
    converged: bool = eqx.field(static=True)
    largest: float = eqx.field(static=True)


def smallest_eigs(
    products,
    n: int,
    dim: int,
    *,
    n_eigs: int,
    tol: float,
    max_iter: int,
    key,
    dtype,
    block: int = 20,
    every: int | None = None,
    progress: bool = False,
    desc: str = "Lanczos",
) -> Eigs:
    """Smallest ``n_eigs`` eigenpairs of a symmetric operator on the range of a projection.

    Lanczos with full reorthogonalisation, breakdown restarts, and the a-posteriori
    test of ``_ritz`` from step ``min(block, dim)`` on (so the Krylov space has had a
    chance to see the bottom of the spectrum), then every ``every`` steps (default
    ``block``; 1 when each product is a pass over the data, so stopping early matters).

    Args:
        products: ``CompiledProducts(matvec, project)`` (a jittable ``(n,) → (n,)``
            product) or ``HostProducts(matvecs, project)`` (``(p, n) → (p, n)``, run on
            the host); ``project`` is the projection onto the subspace.
        n: length of the flat vectors; dim: dimension of the subspace (Lanczos is exact
            after ``dim`` steps).
        tol: relative accuracy of the eigenvalues.
        progress: a tqdm bar over the steps.
    """
    m = int(min(max_iter, dim))
    n_eigs = int(min(n_eigs, m))
    every = block if every is None else int(every)
    v0 = _apply(products.project, jax.random.normal(key, (n,), dtype))
    V = jnp.zeros((m + 1, n), dtype).at[0].set(v0 / jnp.linalg.norm(v0))
    alpha, beta = jnp.zeros((m,), dtype), jnp.zeros((m,), dtype)
    bar = _bar(progress, m + 1, desc)
    j, converged, first = 0, False, max(min(block, m), n_eigs)
    while j < m:
        steps = min(first - j if j < first else every, m - j)
        V, alpha, beta = products.advance(V, alpha, beta, j, steps, key)
        j += steps
        if bar is not None:
            bar.update(steps)
        theta, S, converged = _ritz(alpha[:j], beta[:j], n_eigs, tol, dtype, j == m == dim)
        if converged:
            break
    vectors = jnp.asarray(S[:, :n_eigs].T, dtype) @ V[:j]
    vectors = vectors / jnp.linalg.norm(vectors, axis=1, keepdims=True)
    values = jnp.asarray(theta[:n_eigs], dtype)
    residuals = jnp.linalg.norm(products.products(vectors) - values[:, None] * vectors, axis=1)
    if bar is not None:
        bar.update(1)
        bar.close()
    return Eigs(values, vectors, residuals, j, converged, float(np.max(theta)))


def _bar(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False)
