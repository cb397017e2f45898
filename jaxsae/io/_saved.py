"""Reading back what a saved model was fitted for (``_provenance``): λ when none is given."""

from __future__ import annotations

import json
from pathlib import Path

from ._dictionary_file import dictionary_metadata
from ._provenance import KEY, checked_record
from ._saelens import sae_metadata


def saved_objective(path) -> dict | None:
    """The ``jaxsae_objective`` record of a saved dictionary file or SAE folder, or
    ``None`` when the file has none (e.g. an SAE written by another library).

    Example:
        >>> jaxsae.save_dictionary(D, "d.safetensors", lam=0.1)
        >>> jaxsae.saved_objective("d.safetensors")["lam"]
        0.1
    """
    path = Path(path)
    if path.is_dir():
        if not (path / "cfg.json").exists():  # e.g. a Gemma Scope folder: no metadata
            return None
        meta = sae_metadata(path)
    elif path.suffix == ".npz":
        return None
    else:
        meta = dictionary_metadata(path)
    text = meta.get(KEY)
    if text is None:
        return None
    if isinstance(text, str):
        try:
            text = json.loads(text)
        except ValueError as err:
            raise ValueError(f"{path}: {KEY} is not valid JSON ({err}).") from None
    return checked_record(text, path)


def saved_lam(lam, path) -> tuple[float, str]:
    """``(λ, where it came from)``: ``lam`` if given, else the λ recorded in the saved
    model at ``path`` (``save_dictionary(..., lam=)``, ``save_sae(..., lam=)``); one
    ``ValueError`` line when neither exists."""
    if lam is not None:
        return float(lam), "given with --lam"
    record = saved_objective(path)
    if record is None or record["lam"] is None:
        why = "has no recorded λ" if record is None else (
            f"was fitted with penalty {record['penalty']}, which has no λ of the joint problem"
        )  # fmt: skip
        raise ValueError(
            f"{path} {why}; pass --lam (λ of THEORY §0; an SAE loss ‖x−x̂‖² + α·Σz has λ = α/2)."
        )
    return float(record["lam"]), f"recorded in {path}"
