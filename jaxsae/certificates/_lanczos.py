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
        theta, S, converged = _ritz(alpha[:j], beta[:j], n_eigs, tol, dtype, j == m and m == dim)
        if converged:
            break
    vectors = jnp.asarray(S[:, :n_eigs].T, dtype) @ V[:j]
    vectors = vectors / jnp.linalg.norm(vectors, axis=1, keepdims=True)
    values = jnp.asarray(theta[:n_eigs], dtype)
    residuals = _residuals(matvec, vectors, values)
    return Eigs(values, vectors, residuals, j, converged, float(np.max(theta)))


@eqx.filter_jit
def _apply(f, v):
    return f(v)


def _orth(V, w):
    for _ in range(2):  # classical Gram–Schmidt, twice ("twice is enough")
        w = w - (V @ w) @ V
    return w


def smallest_eigs_host(
    matvecs,
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
    progress: bool = False,
    desc: str = "Lanczos",
) -> Eigs:
    """``smallest_eigs`` for an operator that cannot be jitted (each product streams data).

    The same Lanczos with full reorthogonalisation, start vector, breakdown
    restarts and convergence test, but a Python loop over matvecs: the Krylov
    basis ``(steps, n)`` lives on the host. The test runs after every step from
    step ``min(block, dim)`` on (a product is a pass over the data, so stopping
    early matters; not before ``block`` steps, so the Krylov space has had a
    chance to see the bottom of the spectrum).

    Args:
        matvecs: ``(p, n) → (p, n)``: products with ``p`` vectors at once (``p = 1``
            per step; ``p = n_eigs`` once for the true residuals ``‖Hy − θy‖``).
        project: the projection onto the subspace, on flat ``(n,)`` vectors.
        progress: a tqdm bar over the steps.
    """
    m = int(min(max_iter, dim))
    n_eigs = int(min(n_eigs, m))
    eps = float(np.finfo(np.dtype(dtype)).eps)

    def proj(v):
        return np.asarray(_apply(project, jnp.asarray(v, dtype)))

    def unit(v):
        return v / np.linalg.norm(v)

    V = np.zeros((m + 1, n), dtype)
    V[0] = unit(proj(jax.random.normal(key, (n,), dtype)))
    alpha, beta = np.zeros((m,), dtype), np.zeros((m,), dtype)
    bar = _bar(progress, m + 1, desc)
    j, converged = 0, False
    while j < m:
        v = V[j]
        w = proj(np.asarray(matvecs(jnp.asarray(v[None]))[0]))
        a = v @ w
        scale = max(float(np.linalg.norm(w)), eps)
        w = proj(_orth(V[: j + 1], w))
        b = float(np.linalg.norm(w))
        if b <= 1e3 * eps * scale:  # invariant subspace found: restart in its complement
            fresh = proj(jax.random.normal(jax.random.fold_in(key, j), (n,), dtype))
            w, b = unit(proj(_orth(V[: j + 1], fresh))), 0.0
        else:
            w = w / b
        V[j + 1], alpha[j], beta[j] = w, a, b
        j += 1
        if bar is not None:
            bar.update(1)
        if j >= min(block, m) and j >= n_eigs:
            theta, S, converged = _ritz(alpha[:j], beta[:j], n_eigs, tol, dtype, j == m == dim)
            if converged or j == m:
                break
    vectors = S[:, :n_eigs].T.astype(dtype) @ V[:j]
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    values = theta[:n_eigs].astype(dtype)
    Hy = np.asarray(matvecs(jnp.asarray(vectors)))
    residuals = np.linalg.norm(Hy - values[:, None] * vectors, axis=1)
    if bar is not None:
        bar.update(1)
        bar.close()
    return Eigs(
        jnp.asarray(values), jnp.asarray(vectors), jnp.asarray(residuals), j, converged,
        float(np.max(theta)),
    )  # fmt: skip


def _bar(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False)
