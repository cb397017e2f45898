"""The result of ``diagnose``: numbers with their definitions, and sentences each of
which is either proved by what was computed or labelled an estimate."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    """What ``jaxsae.diagnose`` found. ``to_json()`` is the report's ``report.json``.

    Attributes:
        lam: the λ every number was computed at; lam_source: how it was chosen.
        kind: ``"ReLU SAE"``, ``"TopK(k=…) SAE"``, …, or ``"dictionary"``.
        n_points: N; sample_rows: rows of the random sample used for the per-point
            analyses (quantiles of the effective λ, split scores, antipodal predictions).
        cert_sae: ``certify`` of the folded decoder judging the model's own codes
            (amortisation gap, (P) on the SAE's firing, co-firing bound, (R)).
        cert_F: ``certify`` of the folded decoder with certified optimal codes: the
            first order of ``F`` at the decoder ((A) per atom, gap to (W)).
        latents: the latent pass (``_latents.latent_pass``): per-latent counts, code
            sums on co-active points, ``Σ g``, ``Σ g²`` and the top examples.
        evaluation: ``jaxsae.evaluate`` of the model (§7b measures, dark-matter R²).
        effective: per latent median / quartiles / count of ``g_kn`` on the sample.
        antipodal: antipodal pairs with rates, co-firing and predicted rates.
        nearest: the nearest optimum (``None`` when not asked): its dictionary,
            certificate, per-atom cosine to the model's atoms, moved and dead atoms,
            firing rates before and after, split scores, ``F`` before and after.
        verdicts: the sentences of the report.
    """

    lam: float
    lam_source: str
    kind: str
    n_points: int
    sample_rows: int
    cert_sae: Any
    cert_F: Any
    latents: dict
    evaluation: Any
    effective: dict
    antipodal: dict
    nearest: dict | None
    dense_threshold: float
    moved_cos: float
    tokens: Any = None
    verdicts: tuple = ()

    def with_verdicts(self, lines) -> Diagnosis:
        return dataclasses.replace(self, verdicts=tuple(lines))

    # ------------------------------------------------------------------ numbers
    @property
    def alignment_error(self) -> np.ndarray:
        """Per atom, ``‖d_k − c_k/(λ‖z_k‖₁)‖`` of (A) at the decoder with optimal codes."""
        return np.asarray(self.cert_F.atom_alignment)

    @property
    def dense_latents(self) -> list[int]:
        """Latents firing (the model's codes) on more than ``dense_threshold`` of the points."""
        return np.flatnonzero(np.asarray(self.cert_sae.firing_rate) > self.dense_threshold).tolist()

    @property
    def nested_pairs(self) -> list[list[int]]:
        """``[child, parent]``: the child fires only where the parent fires (the model's codes;
        (P) says no optimum has such a pair: absorption candidates)."""
        return [list(p) for p in self.cert_sae.nested_pairs()]

    def per_latent(self) -> dict[str, np.ndarray]:
        """Per-latent code statistics (rates are fractions of all N points)."""
        s, N = self.latents, self.n_points
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(s["zopt_both"] > 0, s["z_both"] / s["zopt_both"], np.nan)
            fires = np.maximum(s["sae_active"], 1)
            g_mean = np.where(s["sae_active"] > 0, s["g_sum"] / fires, np.nan)
        return {
            "firing_rate": s["sae_active"] / N,
            "optimal_firing_rate": s["opt_active"] / N,
            "false_fire_rate": s["false_fire"] / N,
            "miss_rate": s["miss"] / N,
            "code_ratio": ratio,
            "g_mean": g_mean,
        }

    def flagged(self) -> dict[int, list[str]]:
        """Latents worth a look, with why: nested (child or parent), dense, antipodal,
        far from the nearest optimum (moved or died)."""
        why: dict[int, list[str]] = {}
        for c, p in self.nested_pairs:
            why.setdefault(c, []).append(f"nested in {p}")
            why.setdefault(p, []).append(f"parent of {c}")
        for k in self.dense_latents:
            why.setdefault(k, []).append("dense")
        for a, b in self.antipodal["pairs"]:
            why.setdefault(a, []).append(f"antipodal to {b}")
            why.setdefault(b, []).append(f"antipodal to {a}")
        if self.nearest is not None:
            for k in self.nearest["moved"]:
                why.setdefault(k, []).append(f"moved (cos {self.nearest['atom_cosine'][k]:.3f})")
            for k in self.nearest["died"]:
                why.setdefault(k, []).append("dies at the nearest optimum")
        return dict(sorted(why.items()))

    def examples(self, limit: int | None = None) -> dict[int, dict]:
        """Top-activating rows (over all N) of every flagged latent (the first ``limit``)."""
        out = {}
        values, rows = self.latents["top_values"], self.latents["top_rows"]
        for k, reasons in list(self.flagged().items())[:limit]:
            keep = values[:, k] > 0
            entry = {
                "why": reasons,
                "rows": rows[keep, k].tolist(),
                "codes": values[keep, k].tolist(),
            }
            if self.tokens is not None:
                entry["tokens"] = [str(self.tokens[r]) for r in entry["rows"]]
            out[k] = entry
        return out

    def to_json(self) -> dict:
        """``report.json``: every number the report quotes, with the λ it was computed at."""
        s = self.cert_sae.summary()
        eff, pl = self.effective, self.per_latent()
        out = {
            "kind": self.kind,
            "lam": self.lam,
            "lam_source": self.lam_source,
            "n_points": self.n_points,
            "sample_rows": self.sample_rows,
            "amortisation_gap": s.get("amortisation_gap", 0.0),
            "amortisation_gap_error": s.get("amortisation_gap_error", 0.0),
            "sae_objective": s["objective"],
            "optimal_objective": float(self.cert_F.objective),
            "effective_lam": {
                "median": _list(eff["median"]),
                "iqr": _list(eff["iqr"]),
                "q25": _list(eff["q25"]),
                "q75": _list(eff["q75"]),
                "count": eff["count"].tolist(),
                "lam_kkt": eff.get("lam_kkt"),
            },  # fmt: skip
            "latents": {k: _list(v) for k, v in pl.items()},
            "alignment_error": _list(self.alignment_error),
            "grad_norm": _list(np.asarray(self.cert_F.atom_grad_norm)),
            "nested_pairs": self.nested_pairs,
            "dense_latents": self.dense_latents,
            "antipodal_pairs": self.antipodal,
            "cofire_violations": int(s["n_cofire_violations"]),
            "shrinkage_share": s["shrinkage_share"],
            "shrinkage": float(self.evaluation.shrinkage),
            "explained_variance": float(self.evaluation.explained_variance),
            "l0": float(self.evaluation.l0),
            "dark_matter_r2": float(self.evaluation.dark_matter_r2),
            "wide_gap": float(self.cert_F.wide_gap),
            "examples": {str(k): v for k, v in self.examples().items()},
            "verdicts": list(self.verdicts),
        }
        if self.nearest is not None:
            out["nearest_optimum"] = _nearest_json(self.nearest)
        return out


def _list(a) -> list:
    """A JSON list: NaN (no data) becomes null."""
    a = np.asarray(a, dtype=float)
    return [None if not np.isfinite(v) else float(v) for v in a]


def _nearest_json(near: dict) -> dict:
    cert = near["certificate"]
    s = cert.summary()
    out = {
        "stationary": bool(s["stationarity"] <= s["tol"]),
        "stationarity": s["stationarity"],
        "tol": s["tol"],
        "max_alignment_error": s["atom_alignment_max"],
        "atom_cosine": _list(near["atom_cosine"]),
        "moved": near["moved"],
        "died": near["died"],
        "firing_before": _list(near["firing_before"]),
        "firing_after": _list(near["firing_after"]),
        "split_scores": _list(near["split_scores"]),
        "largest_splits": [
            {
                "atom": int(k),
                "score": float(near["split_scores"][k]),
                "direction": _list(near["split_directions"][k]),
            }
            for k in np.argsort(-np.asarray(near["split_scores"]))[:5]
        ],  # fmt: skip
        "objective_before": near["objective_before"],
        "objective_after": near["objective_after"],
        "verdict": cert.verdict,
    }
    if near["second_order"] is not None:
        out["second_order"] = near["second_order"].verdict
    return out


# ---------------------------------------------------------------------- sentences
def verdicts(dg: Diagnosis) -> list[str]:
    """The report's sentences: each states only what the numbers above prove, or says
    it is an estimate (and on how many rows)."""
    lines = [f"λ = {dg.lam:.6g} ({dg.lam_source})"]
    lines += _code_lines(dg)
    lines += _lam_lines(dg)
    lines += _constraint_lines(dg)
    if dg.nearest is not None:
        lines += _nearest_lines(dg)
    return lines


def _code_lines(dg) -> list[str]:
    s = dg.cert_sae.summary()
    if "amortisation_gap" not in s:
        return ["codes: the dictionary's codes are the certified optimal ones (no encoder)"]
    gap, err = s["amortisation_gap"], s["amortisation_gap_error"]
    pl = dg.per_latent()
    ff, miss = float(np.sum(pl["false_fire_rate"])), float(np.sum(pl["miss_rate"]))
    line = (
        f"codes: amortisation gap L(D, Z_sae) − L(D, Z*) = {gap:.4g} (Z* certified optimal to "
        f"{err:.1e}: the exact gap lies in [{gap:.4g}, {gap:.4g} + {err:.1e}]); per point the encoder fires {ff:.3g} "
        f"latents where the optimal code is zero and misses {miss:.3g} the optimal codes use"
    )
    ratio = pl["code_ratio"][np.isfinite(pl["code_ratio"])]
    if ratio.size:
        line += f"; on co-active points its codes are {np.median(ratio):.3g}× the optimal ones (median over latents)"
    return [line]


def _lam_lines(dg) -> list[str]:
    med = dg.effective["median"]
    ok = np.isfinite(med)
    if not ok.any():
        return ["effective λ: no latent is active on the sample"]
    where = (
        "all rows"
        if dg.sample_rows == dg.n_points
        else f"a sample of {dg.sample_rows} of {dg.n_points} rows"
    )
    iqr = dg.effective["iqr"][ok]
    fit = dg.effective.get("lam_kkt")
    fit = (
        ""
        if fit is None
        else f"; the λ minimising the codes' KKT residual is {fit:.4g} (grid search)"
    )
    return [
        f"effective λ (g_kn = d_kᵀr_n over each latent's active points, on {where}; an optimum has "
        f"g = λ exactly): per-latent medians {np.min(med[ok]):.4g} … {np.max(med[ok]):.4g} "
        f"(median {np.median(med[ok]):.4g}), spread (IQR) up to {np.max(iqr):.3g}{fit}"
    ]


def _constraint_lines(dg) -> list[str]:
    lines = [f"the decoder, with optimal codes: {line}" for line in dg.cert_F.verdict.splitlines()
             if not line.startswith(("(", "codes:"))]  # fmt: skip
    nested = dg.nested_pairs
    lines.append(
        f"(P) nesting: {len(nested)} pair(s) where a latent fires only where another fires "
        f"(absorption candidates; no optimum has one){': ' + str(nested[:8]) if nested else ''}"
    )
    dense, anti = dg.dense_latents, dg.antipodal
    lines.append(
        f"dense latents (firing rate > {dg.dense_threshold:g}): {len(dense)}{' ' + str(dense[:8]) if dense else ''}"
    )
    if anti["pairs"]:
        worst = max(anti["cofiring"]) / dg.n_points
        lines.append(
            f"antipodal pairs: {len(anti['pairs'])}; they co-fire on up to {worst:.3g} of the points "
            "(0 at an optimum, (P)); predicted rates for their symmetric directions are in the report "
            f"(estimates on {dg.sample_rows} rows)"
        )
    s = dg.cert_sae.summary()
    lines.append(
        f"co-firing bound ‖r_n‖ ≥ λ|S|/‖Σ_S d_k‖ broken on {int(s['n_cofire_violations'])} points; "
        f"(R) shrinkage share of residual energy {s['shrinkage_share']:.3g}; dark-matter R² "
        f"{float(dg.evaluation.dark_matter_r2):.3g}; gap to (W) with optimal codes "
        f"{float(dg.cert_F.wide_gap):.4g}"
    )
    return lines


def _nearest_lines(dg) -> list[str]:
    near = dg.nearest
    nj = _nearest_json(near)
    K = len(near["atom_cosine"])
    status = (
        f"first-order stationary to {nj['stationarity']:.1e} (certified; tol {nj['tol']:.0e})"
        if nj["stationary"]
        else f"not stationary after the step budget (first-order residual {nj['stationarity']:.2g} > tol {nj['tol']:.0e})"
    )
    best = int(np.argmax(near["split_scores"]))
    lines = [
        f"nearest optimum (learned from this decoder at the same K = {K} and λ): {status}; "
        f"F {nj['objective_before']:.6g} → {nj['objective_after']:.6g}; {K - len(near['moved'])} of {K} atoms "
        f"keep cos ≥ {dg.moved_cos:g} with the model's, {len(near['moved'])} moved, {len(near['died'])} die",
        f"largest split score at the nearest optimum: atom {best}, s = {near['split_scores'][best]:.3g} "
        f"(on {dg.sample_rows} rows; the atom predicted to divide first as the width grows)",
    ]
    if near["second_order"] is not None:
        lines.append(f"second order at the nearest optimum: {near['second_order'].verdict}")
    else:
        lines.append(
            "second order at the nearest optimum: not run (second_order=True, or "
            "jaxsae diagnose --second-order): first order does not make it a local minimum"
        )
    return lines
