"""The first-order certificate of a dictionary: ``Certificate`` and the pass that fills it.

One pass over the data (``jaxsae._streaming.Pass``: ``lax.scan`` over chunks of
resident points, or a host loop over a memmap or chunk list) collects
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

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from .._streaming import Pass
from ..models._dictionary import Dictionary
from ..models._objective import atom_first_order
from ..solvers._kkt import kkt_from_parts
from ..solvers._lasso import codes_first
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
    free_bias: Bool[Array, ""]
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
        return jnp.where(self.free_bias, jnp.maximum(out, self.bias_grad_norm / self.lam), out)

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
            free_bias=bool(self.free_bias),
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


@eqx.filter_jit
def _chunk_stats(chunks, w, start, dictionary, lam, tol, acc, cap: int, codes_given: bool):
    """One chunk's statistics (THEORY §1–§3, §6) for :class:`jaxsae._streaming.Pass`.

    ``chunks`` is ``(Xc, Zc)``: solved codes used as they are; or, with ``codes_given``,
    ``(Xc, Zc, Oc)``: the codes to judge (an SAE's) and optimal codes to compare them with
    (amortisation gap). ``w`` zeroes padded rows; ``start`` is the chunk's first row."""
    Xc, mask = chunks[0], dictionary.mask
    Yc = Xc - dictionary.bias
    Zc = jnp.where(mask, chunks[1], 0)
    reference = None
    if codes_given:
        opt = jnp.where(mask, chunks[2], 0)
        R = Yc - opt @ dictionary.atoms
        opt_kkt = kkt_from_parts(opt, R @ dictionary.atoms.T, R, lam, mask)
        reference = (opt_kkt.primal, opt_kkt.gap * w)
    return _code_stats(Zc, Yc, w, start, dictionary, lam, tol, acc, cap, reference)


_solved_then_stats = codes_first(_chunk_stats)  # a chunk whose codes are missing


def _code_stats(Zc, Yc, w, start, dictionary, lam, tol, acc, cap: int, reference=None):
    """The statistics of codes ``Zc`` of the centred chunk ``Yc``; ``reference`` is the
    per-point objective and duality gap of optimal codes (for the amortisation gap)."""
    atoms, mask = dictionary.atoms, dictionary.mask
    K = atoms.shape[0]
    Zc = Zc * w[:, None]
    Rc = (Yc - Zc @ atoms) * w[:, None]
    Gc = Rc @ atoms.T
    kkt = kkt_from_parts(Zc, Gc, Rc, lam, mask)
    obj = kkt.primal
    if reference is None:
        amort, opt_gap = jnp.zeros_like(obj), jnp.zeros_like(obj)
    else:
        amort, opt_gap = (obj - reference[0]) * w, reference[1]
    active = (Zc > 0) & mask
    A = active.astype(acc)
    Zw = jnp.where(mask, Zc, 0).astype(acc)
    slack = jnp.where(mask & ~active, lam - Gc, 0).astype(acc)
    degenerate = degenerate_pairs(Zc, Gc, lam, tol, mask) & (w[:, None] > 0)
    shrink, singular, overflow = jax.vmap(shrinkage_component, in_axes=(None, 0, None, None))(
        atoms, jnp.where(mask, Zc, 0), lam, min(cap, K)
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
    worst = (rnorm[i].astype(acc), Rc[i].astype(acc), start + i.astype(jnp.int32))
    return (sums, maxes, worst), (rnorm, snorm, cbound)


@jax.jit
def _combine(a, b):
    """Merge two chunks' statistics: sums add, maxima take the larger, the worst point wins."""
    (sa, ma, wa), (sb, mb, wb) = a, b
    better = wb[0] > wa[0]
    worst = jax.tree.map(lambda x, y: jnp.where(better, y, x), wa, wb)
    return jax.tree.map(jnp.add, sa, sb), jax.tree.map(jnp.maximum, ma, mb), worst


def first_order_pass(dictionary, X, lam, codes, tol, antipodal_cos, cap: int, codes_given: bool,
                     how: Pass, optimal=None) -> Certificate:  # fmt: skip
    """The certificate from one pass over ``X`` (and ``codes``, if any) placed by ``how``.

    ``codes`` are judged (``codes_given``: against ``optimal`` codes, or ones solved per
    chunk), used as solved, or None (solved per chunk, then used)."""
    data = (X,) if codes is None else (X, codes) if optimal is None else (X, codes, optimal)
    args = (dictionary, lam, tol, _acc_dtype(dictionary.dtype), cap, codes_given)
    K = dictionary.n_atoms
    widths = (dictionary.n_features, K, K)[: len(data)]
    complete = codes is not None and (optimal is not None or not codes_given)
    return how.run_then(
        _chunk_stats if complete else _solved_then_stats, _combine, _assemble, data, args,
        (dictionary, lam, tol, antipodal_cos, codes_given, cap), dictionary.dtype, widths,
    )  # fmt: skip


@eqx.filter_jit
def _atom_measures(sums, atoms, mask, lam, N):
    """Per-atom first-order measures (THEORY §2): firing, ‖z_k‖₁, (A), the Riemannian
    gradient and the radial part of ``c_k``."""
    l1, c, count = sums["l1"], sums["c"], sums["count"]
    live = mask & (count > 0)
    grad, align, radial = atom_first_order(atoms, c, l1, lam, N, live)
    cnorm = jnp.linalg.norm(c, axis=1)
    return dict(
        firing_rate=count / N,
        code_l1=l1,
        live=live,
        dead=mask & (count == 0),
        atom_grad_norm=jnp.linalg.norm(grad, axis=1),
        atom_alignment=align,
        atom_cosine=jnp.where(cnorm > 0, radial / jnp.where(cnorm > 0, cnorm, 1), 0),
        atom_radial=-radial / N,
        bias_grad_norm=jnp.linalg.norm(sums["rsum"]) / N,
    )


def _pair_measures(sums, atoms, mask, live, lam, N, tol, antipodal_cos):
    """Pairwise conditions: (P)'s violation, co-firing, nesting, antipodal co-firing."""
    count, cofire = sums["count"], sums["cofire"]
    gram = atoms @ atoms.T
    near_one = jnp.asarray(1 - tol, gram.dtype)  # tolerances arrive in float64
    below = jnp.asarray(-antipodal_cos, gram.dtype)
    pair = mask[:, None] & mask[None, :] & ~jnp.eye(mask.shape[0], dtype=bool)
    violation = jnp.where(pair, sums["plhs"] - lam * (1 - gram) * sums["l1"][:, None], 0) / N
    return dict(
        pair_violation=violation,
        cofire=cofire,
        # A_j ⊆ A_k forces d_j = d_k (P): only distinct atoms are a nesting defect.
        nested=pair & live[:, None] & (cofire >= count[:, None]) & (gram < near_one),
        antipodal_cofire=pair & (gram < below) & (cofire > 0),
    )


def _assemble(stats, per_point, N, dictionary, lam, tol, antipodal_cos, codes_given, cap: int):
    """The :class:`Certificate` from the combined statistics of a pass."""
    sums, maxes, worst = stats
    acc = sums["obj"].dtype
    atoms, mask, lam_a = dictionary.atoms.astype(acc), dictionary.mask, lam.astype(acc)
    per_atom = _atom_measures(sums, atoms, mask, lam_a, N)
    pairs = _pair_measures(sums, atoms, mask, per_atom["live"], lam_a, N, tol, antipodal_cos)
    best, rvec, where = worst
    rmax = jnp.maximum(best, 0)
    rnorm, snorm, cbound = per_point
    objective, wide, r2 = sums["obj"] / N, sums["huber"] / N, sums["r2"]
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
        **per_atom,
        **pairs,
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
        add_atom=jnp.where(rmax > 0, rvec / jnp.where(rmax > 0, rmax, 1), 0),
        add_atom_gain=jnp.maximum(rmax - lam_a, 0) ** 2 / (2 * N),
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


def first_order_measures(dictionary: Dictionary, X, lam, codes, tol, how: Pass) -> Stationarity:
    """``Stationarity`` of ``codes`` (used as they are): the numbers ``certify``
    reports, for ``second_order``'s verdict; ``X`` and ``codes`` placed by ``how``."""
    cap = min(dictionary.n_atoms, dictionary.n_features, DEFAULT_SUPPORT_CAP)
    dt = dictionary.dtype
    cert = first_order_pass(
        dictionary, X, lam, codes, jnp.asarray(tol, dt), jnp.asarray(0.9, dt), cap, False, how
    )
    return cert.stationarity_measures()
