"""The frozen-support reduced objective and its Riemannian Hessian (THEORY §4).

At a regular point every support ``S_n`` is locally constant and the codes are
the smooth function ``z_S(D, b) = G_SS⁻¹(D_Sᵀ(x − b) − λ1)``, so

    F(D, b) = (1/N) Σ_n [ ½‖x_n − b − D z_n(D, b)‖² + λ 1ᵀ z_n(D, b) ]

is smooth with the envelope gradient ``∇_D F = −(1/N) R Zᵀ`` (rows: atom k gets
``−(1/N) Σ_n z_kn r_n``) and ``∇_b F = −(1/N) Σ_n r_n``. Hessian-vector
products are ``jax.jvp`` of that gradient. Only ``z`` and its first derivative
at the base point enter, so the codes are replaced by their linearisation

    z_lin(D, b) = z⁰ + G_SS⁻¹ [ D_Sᵀ(x − b − D z⁰) − λ1 ]     (value z⁰, derivative ż_S),

with the inverse active Grams precomputed once: each HVP is then six dense
``(N, K) × (K, d)`` products plus ``N`` small matrix-vector products, streamed
over chunks of points. The Riemannian Hessian on ``Ob(d, K)`` (× ``R^d`` when
the bias is free) adds the curvature term ``−(d_kᵀ∇_k F) ξ_k``, which equals
``(λ‖z_k‖₁/N) ξ_k`` at a stationary point.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, Bool, Float, Int

from ..models._dictionary import Dictionary
from ..solvers._cholesky import spd_solve
from ._lanczos import CompiledProducts, smallest_eigs


class FrozenSupport(eqx.Module):
    """Everything the frozen-support objective needs, cut into chunks of points.

    Attributes:
        X: ``(C, m, d)`` data chunks (zero padding).
        weight: ``(C, m)`` 1 for real points, 0 for padding.
        z: ``(C, m, cap)`` base codes ``z⁰`` at ``idx`` (zero off the frozen support).
        idx: ``(C, m, cap)`` atom indices of each point's support (padded).
        active: ``(C, m, cap)`` which gathered entries are in the support.
        Ginv: ``(C, m, cap, cap)`` ``G_SS⁻¹`` (zero outside ``S × S``).
        n_points: ``N`` (the per-point-mean divisor).
    """

    X: Float[Array, "C m d"]
    weight: Float[Array, "C m"]
    z: Float[Array, "C m cap"]
    idx: Int[Array, "C m cap"]
    active: Bool[Array, "C m cap"]
    Ginv: Float[Array, "C m cap cap"]
    n_points: int = eqx.field(static=True)


def _chunk(a, chunk: int):
    n = a.shape[0]
    n_chunks = -(-n // chunk)
    pad = n_chunks * chunk - n
    a = jnp.pad(a, ((0, pad),) + ((0, 0),) * (a.ndim - 1))
    return a.reshape(n_chunks, chunk, *a.shape[1:])


def _support_inverse(G, z, support, cap: int):
    """Gather one point's support (largest codes first) and invert its Gram block."""
    score = jnp.where(support, 1 + jnp.abs(z), 0)
    top, idx = jax.lax.top_k(score, cap)
    active = top > 0
    a = active.astype(G.dtype)
    M = G[idx][:, idx] * a[:, None] * a[None, :] + jnp.diag(1 - a)
    inv = spd_solve(M, jnp.eye(cap, dtype=G.dtype))
    return idx, active, inv * a[:, None] * a[None, :]


@eqx.filter_jit
def frozen_support(
    dictionary: Dictionary, X, Z, lam, support, cap: int, chunk_size: int
) -> FrozenSupport:
    """Precompute the chunked frozen-support data (supports must fit in ``cap``)."""
    G = dictionary.gram()
    Zs = jnp.where(support & dictionary.mask, Z, 0)
    sup = support & dictionary.mask
    Xc, Zc, Sc = _chunk(X, chunk_size), _chunk(Zs, chunk_size), _chunk(sup, chunk_size)
    w = _chunk(jnp.ones(X.shape[0], X.dtype), chunk_size)
    inv = jax.vmap(_support_inverse, in_axes=(None, 0, 0, None))

    def one_chunk(args):
        Xm, Zm, Sm = args
        idx, active, Ginv = inv(G, Zm, Sm, cap)
        # One exact solve on the frozen support polishes the codes to rounding error.
        E = (Xm - dictionary.bias - Zm @ dictionary.atoms) @ dictionary.atoms.T - lam
        zc = jnp.take_along_axis(Zm, idx, axis=1)
        zc = zc + jnp.einsum("mij,mj->mi", Ginv, jnp.take_along_axis(E, idx, axis=1))
        return idx, active, Ginv, jnp.where(active, zc, 0)

    idx, active, Ginv, zc = jax.lax.map(one_chunk, (Xc, Zc, Sc))
    return FrozenSupport(Xc, w, zc, idx, active, Ginv, X.shape[0])


def _chunk_gradient(atoms, bias, lam, X, w, z0, idx, Ginv):
    """Summed envelope gradient of one chunk at ``(atoms, bias)`` with ``z = z_lin``.

    Everything runs on the gathered supports ``(m, cap, d)``: the cost is
    ``O(m·cap·d)``, independent of the number of atoms K.
    """
    K, d = atoms.shape
    Y = X - bias
    Ac = atoms[idx]
    E = jnp.einsum("md,mcd->mc", Y - jnp.einsum("mc,mcd->md", z0, Ac), Ac) - lam
    z = z0 + jnp.einsum("mij,mj->mi", Ginv, E)
    R = Y - jnp.einsum("mc,mcd->md", z, Ac)
    outer = ((w[:, None] * z)[..., None] * R[:, None, :]).reshape(-1, d)
    gA = jax.ops.segment_sum(outer, idx.reshape(-1), num_segments=K)
    return -gA, -(w @ R)


def rounding_terms(atoms, bias, X, w, z0, idx, active, Ginv, n_total):
    """``Σ_n A_n (N + 4(|S|_max + d) + 4κ_n)`` over a chunk: the scale of the rounding
    error of the assembled Hessian (``_second_order``, THEORY §4).

    Each point's block of the reduced Hessian, ``min_ż ‖Ξz + Dż‖² − 2rᵀΞż``, has
    operator norm at most ``A_n = ‖z_n‖² + ‖G⁻¹‖(√|S|(‖z_n‖ + 1) + ‖r_n‖)² + 1`` (the
    ``+1`` terms cover the bias directions), and it is formed from sums of length
    ``≤ N + 4(cap + d)`` and a Gram inverse of condition ``κ_n ≤ |S|·‖G⁻¹‖_F``; so
    ``u·Σ_n A_n(N + 4(cap + d) + 4κ_n)/N`` bounds its rounding to first order in ``u``.
    """
    cap, d = idx.shape[1], atoms.shape[1]
    Ac = atoms[idx]
    R = X - bias - jnp.einsum("mc,mcd->md", z0, Ac)
    g = jnp.linalg.norm(Ginv, axis=(-2, -1))
    size = jnp.sum(active, axis=1).astype(X.dtype)
    zn = jnp.linalg.norm(z0, axis=1)
    A = zn**2 + g * (jnp.sqrt(size) * (zn + 1) + jnp.linalg.norm(R, axis=1)) ** 2 + 1
    return jnp.sum(w * A * (n_total + 4 * (cap + d) + 4 * size * g))


def frozen_gradient(fs: FrozenSupport, atoms, bias, lam):
    """``(∇_D F, ∇_b F)`` of the frozen-support objective (per-point mean, THEORY §0)."""

    def body(carry, chunk):
        gA, gb = _chunk_gradient(atoms, bias, lam, *chunk)
        return (carry[0] + gA, carry[1] + gb), None

    init = (jnp.zeros_like(atoms), jnp.zeros_like(bias))
    (gA, gb), _ = jax.lax.scan(body, init, (fs.X, fs.weight, fs.z, fs.idx, fs.Ginv))
    return gA / fs.n_points, gb / fs.n_points


def euclidean_hvp(fs: FrozenSupport, atoms, bias, lam, Xi, bdot):
    """``∇²F[Ξ, ḃ]`` as ``jax.jvp`` of the envelope gradient."""
    _, (hA, hb) = jax.jvp(lambda A, b: frozen_gradient(fs, A, b, lam), (atoms, bias), (Xi, bdot))
    return hA, hb


class Tangent(eqx.Module):
    """The tangent space used by the certificate: atoms in ``space`` and maybe the bias.

    ``space`` is ``(K,)`` bool (unmasked atoms that some point uses); dead and masked
    atoms are excluded because ``F`` does not depend on them near a regular point.
    """

    atoms: Float[Array, "K d"]
    space: Bool[Array, " K"]
    free_bias: bool = eqx.field(static=True)

    def project(self, Xi, bdot):
        Xi = Xi - jnp.sum(Xi * self.atoms, axis=1, keepdims=True) * self.atoms
        Xi = jnp.where(self.space[:, None], Xi, 0)
        return Xi, bdot if self.free_bias else jnp.zeros_like(bdot)

    def flat_project(self, v):
        return self.flatten(*self.project(*self.unflatten(v)))

    def flatten(self, Xi, bdot):
        return jnp.concatenate([Xi.ravel(), bdot])

    def unflatten(self, v):
        K, d = self.atoms.shape
        return v[: K * d].reshape(K, d), v[K * d :]

    def dimension(self) -> Int[Array, ""]:
        d = self.atoms.shape[1]
        return jnp.sum(self.space) * (d - 1) + (d if self.free_bias else 0)

    def basis(self, n_used: int) -> Float[Array, "p n"]:
        """An orthonormal basis of the tangent space, as rows of flat vectors."""
        K, d = self.atoms.shape
        used = jnp.nonzero(self.space, size=n_used)[0]

        def atom_basis(k):
            dk = self.atoms[k]
            # Householder reflection taking d_k to ∓e_1 (the stable sign); its
            # other columns are an orthonormal basis of d_k⊥.
            e1 = jnp.zeros(d, dk.dtype).at[0].set(jnp.where(dk[0] >= 0, 1.0, -1.0))
            u = dk + e1
            u = u / jnp.linalg.norm(u)
            Hh = jnp.eye(d, dtype=dk.dtype) - 2 * jnp.outer(u, u)
            rows = Hh[:, 1:].T
            return jnp.zeros((d - 1, K, d), dk.dtype).at[:, k, :].set(rows).reshape(d - 1, K * d)

        blocks = jax.vmap(atom_basis)(used).reshape(-1, K * d)
        blocks = jnp.pad(blocks, ((0, 0), (0, d)))
        if self.free_bias:
            bias_rows = jnp.pad(jnp.eye(d, dtype=self.atoms.dtype), ((0, 0), (K * d, 0)))
            blocks = jnp.concatenate([blocks, bias_rows])
        return blocks


class RiemannianHessian(eqx.Module):
    """The Riemannian Hessian of the frozen-support ``F`` at ``(D, b)`` (THEORY §4).

    ``Hess F[Ξ]_k = (I − d_k d_kᵀ)(∇²F[Ξ])_k − (d_kᵀ ∇_k F) ξ_k`` on tangent ``Ξ``
    (``d_kᵀξ_k = 0``), plus the Euclidean bias block when the bias is free.
    Call ``mv(Xi, bdot)`` (pytree form) or ``flat_mv(v)``; ``operator()`` gives a
    ``lineax.FunctionLinearOperator``.
    """

    fs: FrozenSupport
    atoms: Float[Array, "K d"]
    bias: Float[Array, " d"]
    lam: Float[Array, ""]
    grad_atoms: Float[Array, "K d"]
    grad_bias: Float[Array, " d"]
    tangent: Tangent

    def mv(self, Xi, bdot):
        Xi, bdot = self.tangent.project(Xi, bdot)
        hA, hb = euclidean_hvp(self.fs, self.atoms, self.bias, self.lam, Xi, bdot)
        radial = jnp.sum(self.atoms * self.grad_atoms, axis=1, keepdims=True)
        return self.tangent.project(hA - radial * Xi, hb)

    def flat_mv(self, v):
        return self.tangent.flatten(*self.mv(*self.tangent.unflatten(v)))

    @property
    def cap(self) -> int:
        """The largest frozen support."""
        return int(self.fs.idx.shape[-1])

    def flat_mvs(self, V):
        """Products with the rows of ``V`` (flat vectors), compiled."""
        return _flat_mvs(self, V)

    def eigs(self, n_eigs, tol, max_iter, key, progress=False, desc="Lanczos"):
        """Lanczos in compiled blocks (``_lanczos.smallest_eigs``)."""
        t = self.tangent
        return smallest_eigs(
            CompiledProducts(self.flat_mv, t.flat_project), t.atoms.size + t.atoms.shape[1],
            int(t.dimension()), n_eigs=n_eigs, tol=tol, max_iter=max_iter, key=key,
            dtype=t.atoms.dtype, progress=progress, desc=desc,
        )  # fmt: skip

    def operator(self) -> lx.FunctionLinearOperator:
        struct = (
            jax.ShapeDtypeStruct(self.atoms.shape, self.atoms.dtype),
            jax.ShapeDtypeStruct(self.bias.shape, self.bias.dtype),
        )
        return lx.FunctionLinearOperator(lambda t: self.mv(*t), struct, lx.symmetric_tag)


@eqx.filter_jit
def _flat_mvs(H: RiemannianHessian, V):
    return jax.vmap(H.flat_mv)(V)


@eqx.filter_jit
def riemannian_hessian(
    fs: FrozenSupport, dictionary: Dictionary, lam, space, free_bias: bool
) -> RiemannianHessian:
    """Build the operator; ``space`` marks the atoms whose directions are kept;
    ``free_bias`` (a Python bool: it sets the tangent space's shape) adds the bias."""
    gA, gb = frozen_gradient(fs, dictionary.atoms, dictionary.bias, lam)
    tangent = Tangent(dictionary.atoms, space, free_bias)
    return RiemannianHessian(fs, dictionary.atoms, dictionary.bias, lam, gA, gb, tangent)
