"""The λ → 0 checks for bases (GS10; THEORY §4).

For a basis ``D`` (K = d atoms) and codes with ``X = DZ`` exactly, ``(D, Z)`` is a
strict local minimum of ``min ‖Z‖₁ s.t. X = DZ`` iff for every atom ``k`` the
linear program

    min { ‖u‖_∞ : B_k u = c_k } < 1,

with ``B_k = Z_{\\k, Λ_kᶜ}`` (the other atoms' codes on the points where atom ``k``
is silent) and ``(c_k)_j = ⟨z_j, sign z_k⟩ − G_jk ‖z_j‖₁`` (``j ≠ k``).
``‖B_k⁺ c_k‖_∞ < 1`` (the minimum-norm solution) is a cheap sufficient test,
computed here in JAX; the LP itself is solved by a caller-supplied
``lp_solver(B, c) -> value`` (``inf`` when infeasible) if one is given.

Nonnegative problem (``min 1ᵀZ1`` s.t. ``DZ = X, Z ≥ 0``): the vector
``a_k = (‖z_j‖₁ (1 − d_jᵀ d_k))_{j≠k}`` must lie in the interior of the cone
spanned by the columns of ``B_k``. Interior is tested as: ``B_k`` has full row
rank and ``a_k − t B_k 1`` lies in the cone (``t = margin·‖a_k‖/‖B_k 1‖``), so
``a_k = B_k w`` with every ``w ≥ t > 0``; cone membership is a nonnegative
least-squares problem solved by accelerated projected gradient.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from .._validate import as_float_array, check_finite, check_rank


class GS10Check(eqx.Module):
    """Per-atom GS10 λ → 0 quantities (THEORY §4); ``local_minimum`` sums them up.

    Attributes:
        pinv_value: ``(K,)`` ``‖B_k⁺ c_k‖_∞`` (``inf`` when ``c_k ∉ range(B_k)``).
        lp_value: ``(K,)`` ``min{‖u‖_∞ : B_k u = c_k}`` from ``lp_solver`` (NaN if none).
        cone_residual: ``(K,)`` relative NNLS residual of ``a_k − t B_k 1`` (nonnegative only).
        full_rank: ``(K,)`` whether ``B_k`` has full row rank (nonnegative only).
        nonnegative: which condition ``passes`` uses.
    """

    pinv_value: Float[Array, " K"]
    lp_value: Float[Array, " K"]
    cone_residual: Float[Array, " K"]
    full_rank: Bool[Array, " K"]
    nonnegative: bool = eqx.field(static=True)
    cone_tol: float = eqx.field(static=True)

    @property
    def passes(self) -> Bool[Array, " K"]:
        """Per atom: the sufficient pinv test (signed) or the interior-cone test (nonnegative)."""
        if self.nonnegative:
            return self.full_rank & (self.cone_residual <= self.cone_tol)
        return self.pinv_value < 1

    @property
    def local_minimum(self) -> bool:
        """Whether every atom passes (for the signed case: the LP if given, else pinv)."""
        if not self.nonnegative and bool(jnp.all(jnp.isfinite(self.lp_value))):
            return bool(jnp.all(self.lp_value < 1))
        return bool(jnp.all(self.passes))


def _parts(atoms, Z):
    K = atoms.shape[0]
    G = atoms @ atoms.T
    l1 = jnp.sum(jnp.abs(Z), axis=0)
    others = jnp.array([[j for j in range(K) if j != k] for k in range(K)], dtype=jnp.int32)

    def one(k, oth):
        silent = Z[:, k] == 0
        B = jnp.where(silent[None, :], Z[:, oth].T, 0)
        c = jnp.sign(Z[:, k]) @ Z[:, oth] - G[oth, k] * l1[oth]
        a = l1[oth] * (1 - G[oth, k])
        return B, c, a

    return jax.vmap(one)(jnp.arange(K), others)


@eqx.filter_jit
def _pinv_values(B, c):
    def one(B, c):
        u = jnp.linalg.lstsq(B, c)[0]  # the minimum-norm solution B⁺c
        res = jnp.linalg.norm(B @ u - c)
        feasible = res <= 1e-8 * (1 + jnp.linalg.norm(c))
        return jnp.where(feasible, jnp.max(jnp.abs(u)), jnp.inf)

    return jax.vmap(one)(B, c)


@eqx.filter_jit
def _cone(B, a, margin, n_iter: int):
    def one(B, a):
        ones = jnp.ones(B.shape[1], B.dtype)
        B1 = B @ ones
        t = margin * jnp.linalg.norm(a) / jnp.maximum(jnp.linalg.norm(B1), jnp.finfo(B.dtype).tiny)
        b = a - t * B1
        L = jnp.maximum(jnp.linalg.norm(B, 2) ** 2, jnp.finfo(B.dtype).tiny)

        def step(_, carry):
            w, y, s = carry
            wn = jnp.maximum(y - (B.T @ (B @ y - b)) / L, 0)
            sn = 0.5 * (1 + jnp.sqrt(1 + 4 * s * s))
            return wn, wn + (s - 1) / sn * (wn - w), sn

        w0 = jnp.zeros(B.shape[1], B.dtype)
        w, _, _ = jax.lax.fori_loop(0, n_iter, step, (w0, w0, jnp.ones((), B.dtype)))
        sv = jnp.linalg.svd(B, compute_uv=False)
        rank = sv[-1] > 1e-10 * jnp.maximum(sv[0], jnp.finfo(B.dtype).tiny)
        return jnp.linalg.norm(B @ w - b) / jnp.maximum(jnp.linalg.norm(a), 1e-300), rank

    return jax.vmap(one)(B, a)


def gs10_check(
    atoms_basis: Float[Array, "K d"],
    Z: Float[Array, "N K"],
    *,
    nonnegative: bool = False,
    lp_solver=None,
    margin: float = 1e-6,
    cone_tol: float = 1e-6,
    n_iter: int = 5000,
) -> GS10Check:
    """GS10's λ → 0 local-minimum conditions for a basis (THEORY §4).

    Args:
        atoms_basis: ``(K, d)`` atoms (rows) with ``K = d`` (a basis).
        Z: ``(N, K)`` codes of the data ``X = Z D`` (signed, or nonnegative).
        nonnegative: check the cone condition of the nonnegative problem instead.
        lp_solver: optional ``callable(B, c) -> float`` returning
            ``min{‖u‖_∞ : B u = c}`` (``inf`` if infeasible) for NumPy ``B, c``;
            e.g. a wrapper of ``scipy.optimize.linprog``.
        margin: interior margin ``t`` of the cone test, relative to ``‖a_k‖/‖B_k 1‖``.
        cone_tol: largest relative NNLS residual counted as "in the cone".
        n_iter: projected-gradient iterations of the NNLS.

    Returns:
        A ``GS10Check`` (per-atom values, ``passes``, ``local_minimum``).

    Example:
        >>> chk = jaxsae.gs10_check(jnp.eye(8), Z)
        >>> chk.local_minimum, chk.pinv_value.max()
    """
    atoms = as_float_array(atoms_basis, "atoms_basis")
    check_rank(atoms, 2, "atoms_basis", "(K, d): one atom per row")
    K, d = atoms.shape
    if K != d:
        raise ValueError(
            f"gs10_check is for bases: atoms_basis must be square (K = d), got {(K, d)}. "
            "For overcomplete dictionaries use second_order at λ > 0."
        )
    Z = as_float_array(Z, "Z", dtype=atoms.dtype)
    check_rank(Z, 2, "Z", "(N, K)")
    if Z.shape[1] != K:
        raise ValueError(f"Z must have {K} columns (one per atom), got shape {tuple(Z.shape)}.")
    check_finite(Z, "Z")
    B, c, a = _parts(atoms, Z)
    pinv = _pinv_values(B, c)
    lp = jnp.full((K,), jnp.nan, atoms.dtype)
    if lp_solver is not None:
        Bn, cn, Zn = np.asarray(B), np.asarray(c), np.asarray(Z)
        vals = [float(lp_solver(Bn[k][:, Zn[:, k] == 0], cn[k])) for k in range(K)]
        lp = jnp.asarray(vals, atoms.dtype)
    if nonnegative:
        res, rank = _cone(B, a, margin, int(n_iter))
    else:
        res, rank = jnp.full((K,), jnp.nan, atoms.dtype), jnp.zeros((K,), bool)
    return GS10Check(pinv, lp, res, rank, nonnegative, float(cone_tol))
