"""``SweepResult``: the table of a ``sweep`` (one row per run) and its dictionaries."""

from __future__ import annotations

import csv
import io
import os

import equinox as eqx
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from .._atomic import atomic_write, atomic_write_json
from ..models._activations import ReLU
from ..models._dictionary import Dictionary
from ..models._sae import SAE

COLUMNS = (
    "width",
    "lam",
    "seed",
    "objective",
    "bound",
    "gap",
    "l0",
    "explained_variance",
    "dead",
    "grad_norm",
    "alignment",
    "converged",
)


class SweepResult(eqx.Module):
    """One row per run of ``sweep`` (runs ordered width-major, then λ, then seed).

    Attributes:
        width, lam, seed: ``(R,)`` the grid.
        objective: ``(R,)`` F at the learned dictionary (THEORY §0, per-point mean).
        bound: ``(R,)`` the wide-limit bound ``F_∞`` of (W) at the run's bias.
        gap: ``(R,)`` ``objective − bound ≥ 0``: how far from the best dictionary of any width.
        l0: ``(R,)`` mean number of active atoms per point.
        explained_variance: ``(R,)`` ``1 − E‖x − x̂‖² / (E‖x‖² − ‖Ex‖²)`` (THEORY §7b).
        dead: ``(R,)`` unmasked atoms that fire on no point.
        grad_norm: ``(R,)`` max Riemannian gradient norm of F.
        alignment: ``(R,)`` max alignment error of (A).
        converged: ``(R,)`` both first-order measures met the tolerance.
        atoms: ``(R, K_max, d)``; bias: ``(R, d)``; mask: ``(R, K_max)``.
        W_enc, b_enc: ``(R, d, K_max)`` and ``(R, K_max)``, the encoders of an SAE
            sweep (``None`` for dictionaries); ``sae(i)`` rebuilds run ``i``.
    """

    width: Int[Array, " R"]
    lam: Float[Array, " R"]
    seed: Int[Array, " R"]
    objective: Float[Array, " R"]
    bound: Float[Array, " R"]
    gap: Float[Array, " R"]
    l0: Float[Array, " R"]
    explained_variance: Float[Array, " R"]
    dead: Int[Array, " R"]
    grad_norm: Float[Array, " R"]
    alignment: Float[Array, " R"]
    converged: Bool[Array, " R"]
    atoms: Float[Array, "R K d"]
    bias: Float[Array, "R d"]
    mask: Bool[Array, "R K"]
    free_bias: bool = eqx.field(static=True, default=False)
    W_enc: Float[Array, "R d K"] | None = None
    b_enc: Float[Array, "R K"] | None = None

    def __len__(self) -> int:
        return int(self.width.shape[0])

    def rows(self) -> list[dict]:
        """The table as a list of dicts (Python numbers), one per run."""
        cols = {c: np.asarray(getattr(self, c)).tolist() for c in COLUMNS}
        return [{c: cols[c][i] for c in COLUMNS} for i in range(len(self))]

    def dictionary(self, i: int, *, padded: bool = False) -> Dictionary:
        """Run ``i`` as a ``Dictionary`` of its own width (masked padding dropped); with
        ``padded``, all ``K_max`` atoms and the run's mask, so every run has one shape
        (coded, certified or evaluated by the programs one width compiled)."""
        if padded:
            return Dictionary(self.atoms[i], self.bias[i], self.mask[i], free_bias=self.free_bias)
        w = int(self.width[i])
        return Dictionary(self.atoms[i, :w], self.bias[i], free_bias=self.free_bias)

    def sae(self, i: int) -> SAE:
        """Run ``i`` of an SAE sweep as a ReLU ``SAE`` of its own width (masked latents dropped)."""
        if self.W_enc is None:
            raise ValueError("this sweep learned dictionaries, not SAEs: use dictionary(i).")
        w = int(self.width[i])
        return SAE(self.W_enc[i, :, :w], self.b_enc[i, :w], self.atoms[i, :w], self.bias[i], ReLU())

    def select(self, *, lam=None, seed=None) -> list[int]:
        """Indices of the runs with this λ and/or seed, in increasing width."""
        idx = [
            i
            for i, r in enumerate(self.rows())
            if (lam is None or np.isclose(r["lam"], lam)) and (seed is None or r["seed"] == seed)
        ]
        return sorted(idx, key=lambda i: int(self.width[i]))

    def to_json(self, path: str | os.PathLike) -> None:
        """Write the table (no arrays of atoms) as JSON, atomically."""
        atomic_write_json(path, {"columns": list(COLUMNS), "rows": self.rows()})

    def to_csv(self, path: str | os.PathLike) -> None:
        """Write the table as CSV, atomically."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows())
        text = buf.getvalue()
        atomic_write(path, lambda fh: fh.write(text), mode="w")


def parse_list(values, name: str, cast) -> list:
    """A non-empty list of ``cast`` values (a sweep's widths, λs or seeds)."""
    try:
        out = [cast(v) for v in np.atleast_1d(np.asarray(values)).tolist()]
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a list of numbers, got {values!r}.") from err
    if not out:
        raise ValueError(f"{name} must not be empty.")
    return out
