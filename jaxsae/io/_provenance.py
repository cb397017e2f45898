"""What a saved model was fitted for: λ, the objective's convention and the data's transform.

One JSON object, ``jaxsae_objective``, in the file's own metadata (a dictionary
file's safetensors metadata; an SAE folder's ``cfg.json`` ``metadata``)::

    {"lam": 0.1 | null, "penalty": "L1", "penalty_weight": 0.1,
     "objective": "<the formula below>", "data_transform": {...}}

``lam`` is THEORY §0's λ of the joint problem the model was fitted to, or ``null``
when its training objective was not that problem (a TopK SAE has no λ; a JumpReLU
SAE's weight multiplies an L0 count, ``penalty_weight``). ``data_transform`` is
what was done to the data before fitting (e.g. ``{"center": true, "scale": 0.37}``),
as given by whoever fitted it: data must be transformed the same way before a
certificate means anything. ``_saved.saved_objective`` reads it back.
"""

from __future__ import annotations

import math

KEY = "jaxsae_objective"
OBJECTIVE = (
    "L(D, Z, b) = (1/N) sum_n [ 1/2 ||x_n - b - D z_n||^2 + lam * sum_k z_kn ], "
    "unit-norm atoms d_k = W_dec[k]/||W_dec[k]||, codes z_k * ||W_dec[k]|| (THEORY §0)"
)
_PENALTIES = ("L1", "DecoderNormL1", "L0", "NoPenalty", "joint")


def objective_record(
    lam=None, *, penalty: str = "joint", penalty_weight=None, data_transform: dict | None = None
) -> dict:
    """The ``jaxsae_objective`` object (checked: λ a finite number > 0 or None)."""
    if lam is not None:
        lam = float(lam)
        if not math.isfinite(lam) or lam <= 0:
            raise ValueError(f"lam must be a finite number > 0 (or None), got {lam}.")
    if penalty not in _PENALTIES:
        raise ValueError(f"penalty must be one of {_PENALTIES}, got {penalty!r}.")
    if data_transform is not None and not isinstance(data_transform, dict):
        raise ValueError(
            f"data_transform must be a dict such as {{'center': True}}, got {type(data_transform).__name__}."
        )
    weight = lam if penalty_weight is None else float(penalty_weight)
    return {
        "lam": lam,
        "penalty": penalty,
        "penalty_weight": weight,
        "objective": OBJECTIVE,
        "data_transform": dict(data_transform or {}),
    }


def checked_record(record, where) -> dict | None:
    """A record read from ``where``, with its λ checked (one ``ValueError`` line if not)."""
    if record is None:
        return None
    if not isinstance(record, dict) or "lam" not in record:
        raise ValueError(f"{where}: {KEY} must be a JSON object with a 'lam' entry.")
    lam = record["lam"]
    bad = isinstance(lam, bool) or not isinstance(lam, int | float | type(None))
    if bad or (lam is not None and not (math.isfinite(lam) and lam > 0)):
        raise ValueError(f"{where}: {KEY}.lam must be a number > 0 or null, got {lam!r}.")
    return record
