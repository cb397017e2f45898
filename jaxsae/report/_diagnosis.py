"""The report of a diagnosis: ``report.md`` with PNGs, a self-contained ``report.html``
and ``report.json`` (``Diagnosis.to_json``), written atomically into one folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..plots._diagnosis import alignment_figure, effective_lam_figure, nearest_figure
from ._report import Report


def write_report(diagnosis, folder: str | os.PathLike, *, source: str | None = None) -> Path:
    """Write ``diagnosis`` (from ``jaxsae.diagnose``) as a report in ``folder``.

    Example:
        >>> jaxsae.write_report(jaxsae.diagnose(sae, X), "report/")
    """
    dg = diagnosis
    rep = Report(f"jaxsae diagnosis: {source or dg.kind}")
    data = dg.to_json()
    for key, value in data.items():
        rep.record(key, value)
    rep.section("Verdicts", "\n".join(f"- {line}" for line in dg.verdicts))
    rep.section(
        "Codes (THEORY §1)",
        "The amortisation gap compares the model's codes with certified optimal codes of "
        "its own folded decoder (d_k = W_dec[k]/‖W_dec[k]‖, z_k·‖W_dec[k]‖).",
    )
    rep.table(
        [
            ("λ", dg.lam),
            ("λ chosen", dg.lam_source),
            ("amortisation gap L(D, Z_sae) − L(D, Z*)", data["amortisation_gap"]),
            ("objective with the model's codes", data["sae_objective"]),
            ("objective with optimal codes, F(D)", data["optimal_objective"]),
            ("explained variance (§7b)", data["explained_variance"]),
            ("L0", data["l0"]),
            ("shrinkage E‖x̂‖²/E⟨x, x̂⟩", data["shrinkage"]),
        ]
    )
    _effective(rep, dg)
    _constraints(rep, dg, data)
    if dg.nearest is not None:
        _nearest(rep, dg, data["nearest_optimum"])
    _examples(rep, dg)
    return rep.write(folder)


def _effective(rep, dg) -> None:
    eff = dg.effective
    rep.section(
        "Effective λ (THEORY §1)",
        "At an optimum every active code has g_kn = d_kᵀ r_n = λ exactly; the spread of g over "
        f"a latent's active points measures how far it is from the joint problem "
        f"({'all' if dg.sample_rows == dg.n_points else dg.sample_rows} of {dg.n_points} rows).",
    )
    rep.figure(
        "effective_lam",
        effective_lam_figure(eff["median"], eff["q25"], eff["q75"], dg.lam),
        "per-latent median of g_kn with quartiles; the dashed line is λ",
    )


def _constraints(rep, dg, data) -> None:
    rep.section("Constraints as they stand (THEORY §2, (P), (R), (W))")
    rep.figure(
        "alignment",
        alignment_figure(dg.alignment_error, float(dg.cert_F.tol)),
        "(A) alignment error per atom at the decoder with optimal codes",
    )
    worst = np.argsort(-dg.alignment_error)[:10]
    rep.table(
        [(int(k), float(dg.alignment_error[k]), float(dg.cert_F.atom_grad_norm[k])) for k in worst],
        header=("atom", "alignment error (A)", "Riemannian gradient"),
    )
    anti = data["antipodal_pairs"]
    rows = [
        (f"{a}, {b}", c, f"{r[0]:.3g}, {r[1]:.3g}", f"{p[0]:.3g}, {p[1]:.3g}", f / dg.n_points)
        for (a, b), c, r, p, f in zip(anti["pairs"], anti["cos"], anti["rates"],
                                      anti["predicted_rates"], anti["cofiring"], strict=True)
    ]  # fmt: skip
    if rows:
        rep.text(
            "Antipodal pairs, their firing rates and the rates predicted for their symmetric direction (§7):"
        )
        rep.table(rows, header=("pair", "cos", "rates", "predicted", "co-firing"))


def _nearest(rep, dg, nj) -> None:
    near = dg.nearest
    rep.section(
        "The nearest optimum",
        "Learned from the model's folded decoder at the same K and λ and certified: an atom "
        "that barely moves is what the objective wants; one that moves far, dies or splits is not.",
    )
    rep.figure(
        "nearest",
        nearest_figure(
            near["atom_cosine"], near["firing_before"], near["firing_after"], dg.moved_cos
        ),
        "cosine of each atom to its nearest-optimum atom, and firing rates before and after",
    )
    top = np.argsort(-near["split_scores"])[:5]
    rep.table(
        [(int(k), float(near["split_scores"][k]), float(near["atom_cosine"][k])) for k in top],
        header=("atom", "split score", "cos to model atom"),
    )
    rep.text(f"Certificate at the nearest optimum: {nj['verdict'].splitlines()[0]}")


def _examples(rep, dg) -> None:
    ex = dg.examples()
    if not ex:
        return
    shown = dict(list(ex.items())[:64])
    rep.section(
        "Flagged latents and their top-activating rows",
        ""
        if len(shown) == len(ex)
        else f"The first 64 of {len(ex)} flagged latents; report.json has all.",
    )
    ex = shown
    rows = []
    for k, e in ex.items():
        shown = e.get("tokens", e["rows"])[:5]
        rows.append((k, "; ".join(e["why"]), ", ".join(map(str, shown))))
    rep.table(rows, header=("latent", "why", "top rows" if dg.tokens is None else "top tokens"))
