"""First-order certificates of a dictionary: ``certify`` and ``Certificate``.

One streaming pass over the data (``lax.scan`` over chunks of points) collects
what THEORY §1–§3 and §6 ask of a dictionary with optimal (or given) codes:

- codes: objective, duality gap, KKT residual, degenerate pairs (§1);
- atoms: ``c_k = Σ_n z_kn r_n``, ``‖z_k‖₁``, firing counts, hence the
  Riemannian gradient and the alignment error of (A);
- pairs: the two sides of (P) as ``K×K`` matrices, co-firing counts;
- residuals: the shrinkage component of (R), the co-firing bound of §2;
- width: the Huber terms of (W) and the largest residual.

Only ``O(K² + K d)`` accumulators and ``O(N)`` per-point numbers are kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Real

from .._streaming import is_streamable
from .._typing import ArrayLike, Chunks
from .._validate import as_float_array, check_data, check_lam
from ..models._dictionary import Dictionary
from ..solvers._kkt import kkt_from_parts
from ..solvers._lasso import sparse_code
from ._report import certificate_summary, certificate_table, certificate_verdict
from ._shrinkage import shrinkage_component
from ._stationarity import Stationarity, degenerate_pairs
from ._wide import wide_bound_terms


class Certificate(eqx.Module):
    """First-order certificate of a dictionary and its codes (THEORY §8).

    A pytree of arrays (jit/vmap friendly); ``verdict``, ``summary()``,
    ``table()`` and ``to_json()`` turn it into words and numbers. Sums over
    points are per-point means where the objective is (``1/N``, THEORY §0).

    Codes (§1):
        objective: ``L(D, Z, b)``.
        code_gap: mean duality gap (bounds ``L − min_Z L``); ``code_gap_max``: worst point.
        code_kkt: ``max |min(z_kn, λ − g_kn)|/λ``; ``code_kkt_mean``: its mean.
        n_degenerate: pairs with ``z_kn ≤ tol·λ`` and ``|λ − g_kn| ≤ tol·λ`` (§1;
            ``_stationarity.degenerate_pairs``, the definition ``second_order`` uses).
        amortisation_gap: ``L(D, Z_given) − L(D, Z*)`` (0 when codes were solved);
            the exact gap to ``min_Z L`` lies in ``[amortisation_gap,
            amortisation_gap + amortisation_gap_error]`` (the mean duality gap of ``Z*``).
    Atoms (§2, (A)):
        firing_rate, code_l1 (``‖z_k‖₁``, a sum over points), dead (live mask
        and no firing), atom_grad_norm (``‖(I − d_kd_kᵀ)c_k‖/N``),
        atom_alignment (``‖d_k − c_k/(λ‖z_k‖₁)‖``, 0 for dead atoms),
        atom_cosine (``cos(d_k, c_k)``), atom_radial (``d_kᵀ∇_kL``, equal to
        ``−λ‖z_k‖₁/N`` with KKT codes).
    Bias: bias_grad_norm ``‖Σ_n r_n‖/N`` (judged only when ``free_bias``).
    Pairs ((P)): pair_violation ``[j, k] = (Σ_{A_j∖A_k} z_jn(λ − g_kn) − λ(1 − d_jᵀd_k)‖z_j‖₁)/N``;
        cofire counts; nested (``A_j ⊆ A_k``, ``j`` live, ``d_j ≠ d_k``); antipodal_cofire
        (``cos < −antipodal_cos`` and co-firing).
    Residuals ((R), §2): residual_norm, shrinkage_norm, cofire_bound
        (``λ|S|/‖Σ_{k∈S} d_k‖``, a lower bound on ``‖r_n‖`` at KKT codes) per point;
        n_cofire_violations (points with ``‖r_n‖ < (1 − tol)·cofire_bound``: 0 at KKT
        codes); shrinkage_share (energy share); n_singular (points with singular
        ``G_S``), n_overflow (points with more active atoms than ``support_cap``).
    Width ((W)): wide_bound ``F_∞``, wide_gap ``L − F_∞``,
        max_residual_norm, worst_point, add_atom (unit direction
        ``r_n/‖r_n‖``), add_atom_gain (``(‖r_n‖ − λ)₊²/(2N)``, a guaranteed decrease).
    """

    lam: Float[Array, ""]
    tol: Float[Array, ""]
    objective: Float[Array, ""]
    code_gap: Float[Array, ""]
    code_gap_max: Float[Array, ""]
    code_kkt: Float[Array, ""]
    code_kkt_mean: Float[Array, ""]
    n_degenerate: Array
    amortisation_gap: Float[Array, ""]
    amortisation_gap_error: Float[Array, ""]
    firing_rate: Float[Array, " K"]
    code_l1: Float[Array, " K"]
    live: Bool[Array, " K"]
    dead: Bool[Array, " K"]
    atom_grad_norm: Float[Array, " K"]
    atom_alignment: Float[Array, " K"]
    atom_cosine: Float[Array, " K"]
    atom_radial: Float[Array, " K"]
    bias_grad_norm: Float[Array, ""]
    pair_violation: Float[Array, "K K"]
    cofire: Float[Array, "K K"]
    nested: Bool[Array, "K K"]
    antipodal_cofire: Bool[Array, "K K"]
    residual_norm: Float[Array, " N"]
    shrinkage_norm: Float[Array, " N"]
    cofire_bound: Float[Array, " N"]
    n_cofire_violations: Array
    shrinkage_share: Float[Array, ""]
    n_singular: Array
    n_overflow: Array
    wide_bound: Float[Array, ""]
    wide_gap: Float[Array, ""]
    max_residual_norm: Float[Array, ""]
    worst_point: Array
    add_atom: Float[Array, " d"]
    add_atom_gain: Float[Array, ""]
    free_bias: bool = eqx.field(static=True, default=False)
    codes_given: bool = eqx.field(static=True, default=False)
    support_cap: int = eqx.field(static=True, default=32)
    second_order: Any = None

    @property
    def stationarity(self) -> Float[Array, ""]:
        """The first-order residual judged against ``tol``: the largest of the
        code KKT residual, the live atoms' alignment errors (A) and, with a
        free bias, ``‖Σ r_n‖/(Nλ)``."""
        align = jnp.max(jnp.where(self.live, self.atom_alignment, 0), axis=-1)
        out = jnp.maximum(self.code_kkt, align)
        if self.free_bias:
            out = jnp.maximum(out, self.bias_grad_norm / self.lam)
        return out

    def stationarity_measures(self) -> Stationarity:
        """The numbers of ``_stationarity``'s shared vocabulary, as Python scalars."""
        s = self.summary()
        return Stationarity(
            objective=s["objective"],
            dual_objective=s["objective"] - s["code_gap"],
            code_kkt=s["code_kkt"],
            n_degenerate=int(s["n_degenerate"]),
            atom_gradient=s["atom_grad_norm_max"],
            alignment=s["atom_alignment_max"],
            bias_gradient=s["bias_grad_norm"],
            free_bias=self.free_bias,
            lam=s["lam"],
            tol=s["tol"],
        )

    @property
    def verdict(self) -> str:
        """What was verified, at which tolerance, and nothing more."""
        return certificate_verdict(self)

    def summary(self) -> dict[str, float]:
        """Scalar numbers of the certificate as Python floats."""
        return certificate_summary(self)

    def table(self) -> str:
        """A human-readable table of the certificate and its verdict."""
        return certificate_table(self)

    def nested_pairs(self) -> list[tuple[int, int]]:
        """Pairs ``(j, k)`` with ``A_j ⊆ A_k`` (child ``j`` nested in ``k``)."""
        return [tuple(map(int, p)) for p in np.argwhere(np.asarray(self.nested))]

    def antipodal_pairs(self) -> list[tuple[int, int]]:
        """Co-firing pairs ``(j, k)``, ``j < k``, with ``cos(d_j, d_k) < −antipodal_cos``."""
        a = np.asarray(self.antipodal_cofire)
        return [tuple(map(int, p)) for p in np.argwhere(np.triu(a, 1))]

    def to_json(self) -> dict:
        """A JSON-ready dict: summary, verdict, lists and per-atom arrays."""
        out: dict = {"verdict": self.verdict, "summary": self.summary()}
        for name in (
            "firing_rate", "code_l1", "dead", "atom_grad_norm", "atom_alignment",
            "atom_cosine", "atom_radial", "add_atom",
        ):  # fmt: skip
            out[name] = np.asarray(getattr(self, name)).tolist()
        out["pair_violation_max"] = float(np.max(np.abs(np.asarray(self.pair_violation))))
        out["nested_pairs"] = self.nested_pairs()
        out["antipodal_cofiring_pairs"] = self.antipodal_pairs()
        if self.second_order is not None:
            so = self.second_order
            out["second_order"] = {
                "min_eigenvalue": float(np.asarray(so.min_eigenvalue)),
                "lower_eigenvalue": float(np.asarray(so.lower_eigenvalue)),
                "lower_bound": float(so.lower_bound),
                "verified": bool(so.verified),
                "method": so.method,
                "regular": bool(np.asarray(so.regular)),
                "decrease": float(so.decrease),
                "verdict": so.verdict,
            }
        return out

    def with_second_order(self, so) -> Certificate:
        """This certificate with a ``SecondOrder`` attached (its verdict then includes it)."""
        return eqx.tree_at(lambda c: c.second_order, self, so, is_leaf=lambda x: x is None)


DEFAULT_SUPPORT_CAP = 32  # batched Cholesky per point: cost grows as cap³


def _acc_dtype(dtype):
    """float64 accumulators when x64 is enabled, else the working dtype."""
    del dtype
    return jnp.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))


def _chunk_stats(dictionary, lam, tol, Xc, Zc, w, codes_given: bool, acc, cap: int | None = None):
    """Per-chunk statistics; ``w`` zeroes padded rows.

    ``Zc`` with no columns: the codes are solved here. ``codes_given``: ``Zc`` are
    codes to judge (an SAE's), compared with solved ones (amortisation gap).
    Otherwise ``Zc`` are already-solved codes, used as they are."""
    atoms, mask = dictionary.atoms, dictionary.mask
    K, d = atoms.shape
    Yc = Xc - dictionary.bias
    if codes_given:
        Zc = jnp.where(mask, Zc, 0)
        opt = sparse_code(dictionary, Xc, lam).codes  # cold start: SAE codes can be far off
        opt_kkt = kkt_from_parts(opt, (Yc - opt @ atoms) @ atoms.T, Yc - opt @ atoms, lam, mask)
        opt_obj, opt_gap = opt_kkt.primal, opt_kkt.gap * w
    elif Zc.shape[-1] == K:
        Zc = jnp.where(mask, Zc, 0)
    else:
        Zc = sparse_code(dictionary, Xc, lam).codes
    Zc = Zc * w[:, None]
    Rc = (Yc - Zc @ atoms) * w[:, None]
    Gc = Rc @ atoms.T
    kkt = kkt_from_parts(Zc, Gc, Rc, lam, mask)
    obj = kkt.primal
    amort = (obj - opt_obj) * w if codes_given else jnp.zeros_like(obj)
    if not codes_given:
        opt_gap = jnp.zeros_like(obj)
    active = (Zc > 0) & mask
    A = active.astype(acc)
    Zw = jnp.where(mask, Zc, 0).astype(acc)
    slack = jnp.where(mask & ~active, lam - Gc, 0).astype(acc)
    degenerate = degenerate_pairs(Zc, Gc, lam, tol, mask) & (w[:, None] > 0)
    cap = min(K, d, DEFAULT_SUPPORT_CAP) if cap is None else min(cap, K)
    shrink, singular, overflow = jax.vmap(shrinkage_component, in_axes=(None, 0, None, None))(
        atoms, jnp.where(mask, Zc, 0), lam, cap
    )
    rnorm = jnp.sqrt(jnp.sum(Rc * Rc, axis=1))
    snorm = jnp.sqrt(jnp.sum(shrink * shrink, axis=1))
    sum_atoms = jnp.linalg.norm(active.astype(atoms.dtype) @ atoms, axis=1)
    n_active = jnp.sum(active, axis=1).astype(atoms.dtype)
    cbound = jnp.where(n_active > 0, lam * n_active / jnp.where(sum_atoms > 0, sum_atoms, 1), 0)
    cbound = jnp.where((n_active > 0) & (sum_atoms == 0), jnp.inf, cbound)
    cofire_bad = (n_active > 0) & (rnorm < (1 - tol) * cbound) & (w > 0)
    huber = wide_bound_terms(Yc, lam) * w
    sums = {
        "obj": jnp.sum(obj.astype(acc)),
        "amort": jnp.sum(amort.astype(acc)),
        "opt_gap": jnp.sum(opt_gap.astype(acc)),
        "gap": jnp.sum(kkt.gap.astype(acc)),
        "kkt": jnp.sum(jnp.abs(kkt.complementarity).astype(acc)),
        "degenerate": jnp.sum(degenerate),
        "count": jnp.sum(A, axis=0),
        "l1": jnp.sum(Zw, axis=0),
        "c": Zw.T @ Rc.astype(acc),
        "rsum": jnp.sum(Rc.astype(acc), axis=0),
        "cofire": A.T @ A,
        "plhs": Zw.T @ slack,
        "r2": jnp.sum((rnorm * rnorm).astype(acc)),
        "s2": jnp.sum((snorm * snorm).astype(acc)),
        "cofire_bad": jnp.sum(cofire_bad),
        "singular": jnp.sum(singular & (n_active > 0)),
        "overflow": jnp.sum(overflow),
        "huber": jnp.sum(huber.astype(acc)),
    }
    maxes = {"gap": jnp.max(kkt.gap).astype(acc), "kkt": jnp.max(kkt.kkt).astype(acc)}
    i = jnp.argmax(rnorm)
    worst = (rnorm[i].astype(acc), Rc[i].astype(acc), i.astype(jnp.int32))
    return sums, maxes, worst, (rnorm, snorm, cbound)


@eqx.filter_jit
def _certify(
    dictionary, X, lam, codes, tol, antipodal_cos, chunk_size: int, cap: int, codes_given: bool
):
    """The certificate; ``codes`` are judged (``codes_given``), used as solved, or None."""
    N, d = X.shape
    K = dictionary.n_atoms
    dtype = dictionary.dtype
    acc = _acc_dtype(dtype)
    n_chunks = -(-N // chunk_size)
    pad = n_chunks * chunk_size - N
    Xp = jnp.pad(X, ((0, pad), (0, 0))).reshape(n_chunks, chunk_size, d)
    wp = jnp.pad(jnp.ones((N,), dtype), (0, pad)).reshape(n_chunks, chunk_size)
    Zp = (
        jnp.pad(codes, ((0, pad), (0, 0))).reshape(n_chunks, chunk_size, K)
        if codes is not None
        else jnp.zeros((n_chunks, chunk_size, 0), dtype)
    )
    base = jnp.zeros((), acc)
    shapes = jax.eval_shape(
        lambda: _chunk_stats(dictionary, lam, tol, Xp[0], Zp[0], wp[0], codes_given, acc, cap)[0]
    )
    sums0 = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    worst0 = (base - 1, jnp.zeros((d,), acc), jnp.zeros((), jnp.int32))
    carry0 = (sums0, {"gap": base, "kkt": base}, worst0)

    def step(carry, inp):
        sums, maxes, (best, rvec, where) = carry
        i, Xc, Zc, w = inp
        s, m, (rb, rv, ri), per_point = _chunk_stats(
            dictionary, lam, tol, Xc, Zc, w, codes_given, acc, cap
        )
        sums = jax.tree.map(jnp.add, sums, s)
        maxes = jax.tree.map(jnp.maximum, maxes, m)
        better = rb > best
        worst = (
            jnp.where(better, rb, best),
            jnp.where(better, rv, rvec),
            jnp.where(better, i * chunk_size + ri, where),
        )
        return (sums, maxes, worst), per_point

    (sums, maxes, worst), per_point = jax.lax.scan(
        step, carry0, (jnp.arange(n_chunks, dtype=jnp.int32), Xp, Zp, wp)
    )
    per_point = jax.tree.map(lambda a: a.reshape(-1)[:N], per_point)
    return _assemble(
        dictionary, lam, tol, antipodal_cos, N, sums, maxes, worst, per_point, codes_given, cap
    )


def _assemble(
    dictionary, lam, tol, antipodal_cos, N, sums, maxes, worst, per_point, codes_given, cap: int
):
    acc = sums["obj"].dtype
    atoms = dictionary.atoms.astype(acc)
    mask = dictionary.mask
    lam_a = lam.astype(acc)
    l1, c, count = sums["l1"], sums["c"], sums["count"]
    live = mask & (count > 0)
    radial = jnp.sum(atoms * c, axis=1)
    tangent = c - radial[:, None] * atoms
    cnorm = jnp.linalg.norm(c, axis=1)
    safe_l1 = jnp.where(live, l1, 1)
    align = jnp.where(live, jnp.linalg.norm(atoms - c / (lam_a * safe_l1)[:, None], axis=1), 0)
    cosine = jnp.where(cnorm > 0, radial / jnp.where(cnorm > 0, cnorm, 1), 0)
    gram = atoms @ atoms.T
    pair = mask[:, None] & mask[None, :] & ~jnp.eye(mask.shape[0], dtype=bool)
    violation = jnp.where(pair, sums["plhs"] - lam_a * (1 - gram) * l1[:, None], 0) / N
    cofire = sums["cofire"]
    # A_j ⊆ A_k forces d_j = d_k (P): only distinct atoms are a nesting defect.
    nested = pair & live[:, None] & (cofire >= count[:, None]) & (gram < 1 - tol)
    antipodal = pair & (gram < -antipodal_cos) & (cofire > 0)
    best, rvec, where = worst
    rmax = jnp.maximum(best, 0)
    direction = jnp.where(rmax > 0, rvec / jnp.where(rmax > 0, rmax, 1), 0)
    gain = jnp.maximum(rmax - lam_a, 0) ** 2 / (2 * N)
    rnorm, snorm, cbound = per_point
    objective = sums["obj"] / N
    wide = sums["huber"] / N
    r2 = sums["r2"]
    return Certificate(
        lam=lam_a,
        tol=jnp.asarray(tol, acc),
        objective=objective,
        code_gap=sums["gap"] / N,
        code_gap_max=maxes["gap"],
        code_kkt=maxes["kkt"],
        code_kkt_mean=sums["kkt"] / (N * mask.shape[0] * lam_a),
        n_degenerate=sums["degenerate"],
        amortisation_gap=sums["amort"] / N,
        amortisation_gap_error=sums["opt_gap"] / N,
        firing_rate=count / N,
        code_l1=l1,
        live=live,
        dead=mask & (count == 0),
        atom_grad_norm=jnp.linalg.norm(tangent, axis=1) / N,
        atom_alignment=align,
        atom_cosine=cosine,
        atom_radial=-radial / N,
        bias_grad_norm=jnp.linalg.norm(sums["rsum"]) / N,
        pair_violation=violation,
        cofire=cofire,
        nested=nested,
        antipodal_cofire=antipodal,
        residual_norm=rnorm,
        shrinkage_norm=snorm,
        cofire_bound=cbound,
        n_cofire_violations=sums["cofire_bad"],
        shrinkage_share=jnp.where(r2 > 0, sums["s2"] / jnp.where(r2 > 0, r2, 1), 0),
        n_singular=sums["singular"],
        n_overflow=sums["overflow"],
        wide_bound=wide,
        wide_gap=objective - wide,
        max_residual_norm=rmax,
        worst_point=where,
        add_atom=direction,
        add_atom_gain=gain,
        free_bias=dictionary.free_bias,
        codes_given=codes_given,
        support_cap=int(cap),
    )


def default_certify_tol(dtype) -> float:
    """Tolerance on the first-order residuals: 1e-6 (float64), 1e-3 (float32).

    Codes certified by their duality gap (``sparse_code``) can keep a KKT
    residual near the square root of the gap at near-degenerate entries
    (tiny ``z_kn`` with ``g_kn ≈ λ``), hence not tighter by default."""
    return 1e-6 if jnp.dtype(dtype) == jnp.float64 else 1e-3


def certify(
    dictionary: Dictionary,
    X: Real[ArrayLike, "N d"] | Chunks,
    lam,
    *,
    codes: Real[ArrayLike, "N K"] | Chunks | None = None,
    chunk_size: int | None = None,
    tol: float | None = None,
    antipodal_cos: float = 0.9,
    second_order: bool = False,
    support_cap: int | None = None,
) -> Certificate:
    """First-order certificate of a dictionary (THEORY §1–§3, §6, §8).

    Codes are solved with ``sparse_code`` (inside each chunk) unless ``codes``
    are given, e.g. from an SAE encoder; then the certificate judges those
    codes and also reports the amortisation gap ``L(D, Z) − L(D, Z*)`` (§1).
    It measures the duality gap and KKT residuals of the codes, per atom the
    Riemannian gradient and the alignment error of (A), the bias gradient, the
    pairwise identity (P) for every pair (nested supports, co-firing
    antipodal pairs), the residual decomposition (R), and the wide-limit bound
    (W) with the global certificate ``max_n ‖r_n‖ ≤ λ``.

    Args:
        dictionary: the dictionary ``(D, b, mask)``.
        X: data ``(N, d)``.
        lam: λ > 0 (may be traced: ``vmap`` over λ works, and over masks).
        codes: optional codes ``(N, K)`` to judge instead of the optimal ones.
        chunk_size: points per chunk of the streaming pass (default: all).
        tol: tolerance of the verdict on the first-order residuals (relative to
            λ for KKT; alignment errors are scale-free); default
            1e-6 (float64) or 1e-3 (float32).
        antipodal_cos: atoms with ``cos < −antipodal_cos`` are antipodal.
        second_order: also run the second-order certificate (§4) and attach it.
        support_cap: largest active set the (R) decomposition handles exactly
            (default ``min(K, d, 32)``); points with more active atoms are
            counted in ``n_overflow`` and use their ``support_cap`` largest codes.

    Returns:
        A :class:`Certificate`.

    Example:
        >>> cert = jaxsae.certify(D, X, 0.1)
        >>> print(cert.table()); cert.verdict
    """
    if is_streamable(X):  # memmap / chunk iterable: bounded memory
        return _certify_streamed(
            dictionary, X, lam, codes, chunk_size, tol, antipodal_cos, second_order, support_cap
        )
    X = check_data(X, dictionary.n_features, dictionary.dtype)
    lam = check_lam(lam, dictionary.dtype)
    N, K = X.shape[0], dictionary.n_atoms
    if codes is not None:
        codes = as_float_array(codes, "codes").astype(dictionary.dtype)
        if codes.shape != (N, K):
            raise ValueError(
                f"codes must have shape (N, K) = ({N}, {K}), got {tuple(codes.shape)}. "
                "Rows are points, columns atoms (SAE feature activations)."
            )
    if chunk_size is not None and int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}.")
    chunk = N if chunk_size is None else min(int(chunk_size), N)
    tol = default_certify_tol(dictionary.dtype) if tol is None else float(tol)
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}.")
    if not 0 <= antipodal_cos <= 1:
        raise ValueError(f"antipodal_cos must lie in [0, 1], got {antipodal_cos}.")
    cap = (
        min(K, dictionary.n_features, DEFAULT_SUPPORT_CAP)
        if support_cap is None
        else int(support_cap)
    )
    if cap < 1:
        raise ValueError(f"support_cap must be a positive integer, got {support_cap}.")
    given = codes is not None
    if second_order and not given:  # one solve serves both certificates
        codes = sparse_code(dictionary, X, lam, chunk_size=chunk_size).codes
    dt = dictionary.dtype
    cert = _certify(
        dictionary, X, lam, codes, jnp.asarray(tol, dt), jnp.asarray(antipodal_cos, dt), chunk,
        min(cap, K), given,
    )  # fmt: skip
    if second_order:
        from ._second_order import second_order as run_second_order

        so = run_second_order(
            dictionary, X, lam, codes=codes, chunk_size=chunk_size, first_order_tol=tol,
            _first=cert.stationarity_measures(),
        )  # fmt: skip
        cert = cert.with_second_order(so)
    return cert


def first_order_measures(dictionary: Dictionary, X, lam, codes, tol: float, chunk_size=None):
    """``Stationarity`` of ``codes`` (used as they are) for an in-memory ``X``: the
    numbers ``certify`` reports, for ``second_order``'s verdict."""
    N, K, d = X.shape[0], dictionary.n_atoms, dictionary.n_features
    chunk = N if chunk_size is None else min(int(chunk_size), N)
    cap = min(K, d, DEFAULT_SUPPORT_CAP)
    dt = dictionary.dtype
    cert = _certify(
        dictionary, X, lam, codes, jnp.asarray(tol, dt), jnp.asarray(0.9, dt), chunk, cap, False
    )
    return cert.stationarity_measures()


def _certify_streamed(
    dictionary, X, lam, codes, chunk_size, tol, antipodal_cos, second_order, support_cap
):
    """``certify`` on a memmap or chunks: one streamed pass, then (optionally) §4 streamed."""
    from ._certify_stream import certify_stream

    if second_order and any(isinstance(a, Iterator) for a in (X, codes)):
        raise ValueError(
            "certify(..., second_order=True) reads the data several times, so it cannot take a "
            "one-shot iterator. Pass a numpy memmap or a list of chunks (or call certify and "
            "second_order separately, each with a fresh iterator)."
        )
    kw = {} if chunk_size is None else {"chunk_size": chunk_size}
    cert = certify_stream(
        dictionary, X, lam, codes=codes, tol=tol, antipodal_cos=antipodal_cos,
        support_cap=support_cap, **kw,
    )  # fmt: skip
    if second_order:
        from ._second_order_stream import second_order_stream

        so = second_order_stream(
            dictionary, X, lam, codes=codes, first_order_tol=float(cert.tol),
            _first=cert.stationarity_measures() if codes is not None else None, **kw,
        )  # fmt: skip
        cert = cert.with_second_order(so)
    return cert
