"""Words for a first-order certificate: verdict, summary and table (THEORY §8).

The verdict states what was verified and at which tolerance, never more: a
first-order certificate shows stationarity, not a local minimum (that is §4's
job), and global optimality over all widths only through (W).
"""

from __future__ import annotations

import numpy as np


def _scalar_only(cert) -> None:
    if np.ndim(cert.objective) != 0:
        raise ValueError(
            f"this certificate is batched (shape {np.shape(cert.objective)}, e.g. from vmap); "
            "pick one first: jax.tree.map(lambda a: a[i], cert)."
        )


def _f(x) -> float:
    return float(np.asarray(x))


def certificate_summary(cert) -> dict[str, float]:
    _scalar_only(cert)
    live = np.asarray(cert.live)
    align = np.asarray(cert.atom_alignment)
    grad = np.asarray(cert.atom_grad_norm)
    out = {
        "lam": _f(cert.lam),
        "tol": _f(cert.tol),
        "objective": _f(cert.objective),
        "code_gap": _f(cert.code_gap),
        "code_gap_max": _f(cert.code_gap_max),
        "code_kkt": _f(cert.code_kkt),
        "code_kkt_mean": _f(cert.code_kkt_mean),
        "n_degenerate": _f(cert.n_degenerate),
        "n_atoms": float(live.size),
        "n_live": float(live.sum()),
        "n_dead": float(np.asarray(cert.dead).sum()),
        "atom_alignment_max": float(align[live].max()) if live.any() else 0.0,
        "atom_grad_norm_max": float(grad[live].max()) if live.any() else 0.0,
        "bias_grad_norm": _f(cert.bias_grad_norm),
        "stationarity": _f(cert.stationarity),
        "pair_violation_max": float(np.abs(np.asarray(cert.pair_violation)).max()),
        "n_nested_pairs": float(np.asarray(cert.nested).sum()),
        "n_antipodal_cofiring_pairs": float(np.triu(np.asarray(cert.antipodal_cofire), 1).sum()),
        "n_cofire_violations": _f(cert.n_cofire_violations),
        "shrinkage_share": _f(cert.shrinkage_share),
        "n_singular": _f(cert.n_singular),
        "n_overflow": _f(cert.n_overflow),
        "wide_bound": _f(cert.wide_bound),
        "wide_gap": _f(cert.wide_gap),
        "max_residual_norm": _f(cert.max_residual_norm),
        "worst_point": _f(cert.worst_point),
        "add_atom_gain": _f(cert.add_atom_gain),
        "mean_l0": float(np.asarray(cert.firing_rate).sum()),
    }
    if cert.codes_given:
        out["amortisation_gap"] = _f(cert.amortisation_gap)
        out["amortisation_gap_error"] = _f(cert.amortisation_gap_error)
    return out


def _first_order_line(cert, s) -> tuple[bool, str]:
    tol = s["tol"]
    if s["code_kkt"] > tol:
        return False, f"not stationary: code KKT residual {s['code_kkt']:.2g} > tol {tol:.0e}"
    live = np.asarray(cert.live)
    align = np.where(live, np.asarray(cert.atom_alignment), 0)
    k = int(np.argmax(align))
    if align[k] > tol:
        return False, f"not stationary: atom {k} alignment error {align[k]:.2g} (A) > tol {tol:.0e}"
    free = bool(cert.free_bias)
    if free and s["bias_grad_norm"] / s["lam"] > tol:
        return False, f"not stationary: bias gradient {s['bias_grad_norm']:.2g} > tol·λ"
    what = "codes KKT, atoms (A)" + (", bias" if free else "")
    return True, f"first-order stationary to {s['stationarity']:.1e} ({what}; tol {tol:.0e})"


def certificate_verdict(cert) -> str:
    _scalar_only(cert)
    s = certificate_summary(cert)
    lines = []
    codes = "given codes" if cert.codes_given else "codes"
    lines.append(
        f"{codes}: duality gap {s['code_gap']:.1e} (mean), {s['code_gap_max']:.1e} (max); "
        f"KKT {s['code_kkt']:.1e}"
        + (f"; amortisation gap {s['amortisation_gap']:.3g}" if cert.codes_given else "")
    )
    stationary, line = _first_order_line(cert, s)
    lines.append(line)
    if s["n_nested_pairs"]:
        j, k = cert.nested_pairs()[0]
        lines.append(
            f"not optimal: {int(s['n_nested_pairs'])} nested pair(s), e.g. atom {j} fires only "
            f"where atom {k} fires (P)"
        )
    elif stationary:
        lines.append(f"pairwise identity (P) holds to {s['pair_violation_max']:.1e}")
    if s["n_antipodal_cofiring_pairs"]:
        lines.append(f"{int(s['n_antipodal_cofiring_pairs'])} antipodal pair(s) co-fire (§2)")
    if s["n_cofire_violations"]:
        lines.append(
            f"{int(s['n_cofire_violations'])} point(s) violate the co-firing bound "
            "‖r_n‖ ≥ λ|S|/‖Σ_{k∈S} d_k‖ (§2): their codes are not optimal"
        )
    if s["n_degenerate"]:
        lines.append(
            f"{int(s['n_degenerate'])} degenerate (z ≈ 0, g ≈ λ) pair(s): not a regular point"
        )
    lam = s["lam"]
    if stationary and s["max_residual_norm"] <= lam * (1 + s["tol"]):
        lines.append(
            f"globally optimal over all widths (W): max‖r_n‖ = {s['max_residual_norm']:.4g} ≤ λ = {lam:g}"
            + ("" if bool(cert.free_bias) else " (for this bias)")
        )
    elif s["max_residual_norm"] > lam:
        lines.append(
            f"not globally optimal (W): max‖r_n‖ = {s['max_residual_norm']:.4g} > λ = {lam:g} at point "
            f"{int(s['worst_point'])}; adding atom r_n/‖r_n‖ lowers L by ≥ {s['add_atom_gain']:.3g}; "
            f"L − F_∞ = {s['wide_gap']:.4g}"
        )
    if cert.second_order is not None:
        lines.append(f"second order: {cert.second_order.verdict}")
    elif stationary:
        lines.append("(first order only: a local minimum needs the second-order certificate)")
    return "\n".join(lines)


def certificate_table(cert) -> str:
    s = certificate_summary(cert)
    cap = _support_cap(cert)
    rows = [
        ("objective L (§0, per-point mean)", f"{s['objective']:.10g}"),
        (
            "code duality gap, mean / max over points (§1)",
            f"{s['code_gap']:.2e} / {s['code_gap_max']:.2e}",
        ),
        ("code KKT residual max (/λ)", f"{s['code_kkt']:.2e}"),
        ("code KKT residual mean over entries (/λ)", f"{s['code_kkt_mean']:.2e}"),
        ("degenerate pairs (z ≈ 0, g ≈ λ, tol·λ)", f"{int(s['n_degenerate'])}"),
    ]
    if cert.codes_given:
        rows.append(("amortisation gap L(Z_given) − L(Z*)", f"{s['amortisation_gap']:.4e}"))
    rows += [
        ("atoms live / dead (fire on no point)", f"{int(s['n_live'])} / {int(s['n_dead'])}"),
        ("mean L0 (active atoms per point)", f"{s['mean_l0']:.3f}"),
        ("max alignment error (A), live atoms", f"{s['atom_alignment_max']:.2e}"),
        ("max_k ‖grad_k L‖ (Riemannian, per atom)", f"{s['atom_grad_norm_max']:.2e}"),
        (
            "bias gradient ‖Σ r_n‖/N"
            + ("" if bool(cert.free_bias) else " (bias fixed, not judged)"),
            f"{s['bias_grad_norm']:.2e}",
        ),
        ("max |(P) violation| over atom pairs", f"{s['pair_violation_max']:.2e}"),
        (
            "nested pairs A_j ⊆ A_k / co-firing antipodal pairs",
            f"{int(s['n_nested_pairs'])} / {int(s['n_antipodal_cofiring_pairs'])}",
        ),
        ("points below the co-firing bound (§2; 0 if optimal)", f"{int(s['n_cofire_violations'])}"),
        ("shrinkage share of residual energy (R)", f"{s['shrinkage_share']:.4f}"),
        ("points whose active Gram G_S is singular", f"{int(s['n_singular'])}"),
        (
            f"points with more than {cap} active atoms ((R) uses their {cap} largest codes)",
            f"{int(s['n_overflow'])}",
        ),
        ("wide-limit bound F_∞ (W) / gap L − F_∞", f"{s['wide_bound']:.10g} / {s['wide_gap']:.4e}"),
        (
            "max_n ‖r_n‖ vs λ (W: ≤ λ is optimal over all widths)",
            f"{s['max_residual_norm']:.4g} vs {s['lam']:g}",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    out = ["First-order certificate", "-" * (width + 26)]
    out += [f"{name:<{width}}  {value}" for name, value in rows]
    out.append("-" * (width + 26))
    atoms = _atom_table(cert)
    if atoms:
        out += [atoms, "-" * (width + 26)]
    out.append("verdict:")
    out += ["  " + line for line in cert.verdict.splitlines()]
    if cert.second_order is not None:
        out += ["", cert.second_order.table()]
    return "\n".join(out)


def _support_cap(cert) -> int:
    return int(cert.support_cap)


def _atom_table(cert, limit: int = 20) -> str:
    """The worst atoms by alignment error (at most ``limit`` rows)."""
    align = np.asarray(cert.atom_alignment)
    order = np.argsort(-align)[:limit]
    rate, l1 = np.asarray(cert.firing_rate), np.asarray(cert.code_l1)
    grad, cos, dead = (
        np.asarray(cert.atom_grad_norm),
        np.asarray(cert.atom_cosine),
        np.asarray(cert.dead),
    )
    head = f"{'atom':>5} {'rate':>8} {'‖z_k‖₁':>10} {'align (A)':>10} {'grad':>10} {'cos':>9}"
    lines = [head]
    for k in order:
        flag = "  dead" if dead[k] else ""
        lines.append(
            f"{k:>5} {rate[k]:>8.4f} {l1[k]:>10.4g} {align[k]:>10.2e} {grad[k]:>10.2e} {cos[k]:>9.6f}{flag}"
        )
    return "\n".join(lines)
