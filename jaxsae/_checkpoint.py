"""Training checkpoints: one folder per step, written into a temporary folder then renamed.

``checkpoint_dir/step-000000100/{state.eqx, meta.json}``. ``state.eqx`` holds the
leaves of a pytree (``eqx.tree_serialise_leaves``, NumPy format, no pickles);
``meta.json`` the step, the run's fingerprint and whatever JSON the caller adds.
A folder only gets its final name once both files are complete and fsynced, so a
kill at any moment leaves the previous checkpoints usable; the next save deletes
what a killed write left behind. One process owns a checkpoint folder at a time
(``_lock.RunLock``, taken by the trainers).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import equinox as eqx
import numpy as np

from ._atomic import atomic_write, atomic_write_json, clean_leftovers, replace_folder

_NAME = re.compile(r"^step-(\d{9})$")


def _folders(directory: Path) -> list[tuple[int, Path]]:
    if not directory.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in directory.iterdir()
        if (m := _NAME.match(p.name)) and p.is_dir()
    ]
    return sorted(found)


def save_checkpoint(directory, step: int, state, meta: dict, *, keep: int = 2) -> Path:
    """Write checkpoint ``step`` of ``state`` (a pytree) and ``meta`` (JSON); keep the last ``keep``.

    The step folder is built beside its final name and swapped in whole
    (``replace_folder``); temporary folders of earlier, killed writes are deleted.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    clean_leftovers(directory / "x", (".step-*.tmp-*", ".step-*.old-*", ".tmp-step-*"))

    def build(tmp: Path) -> None:
        atomic_write(tmp / "state.eqx", lambda fh: eqx.tree_serialise_leaves(fh, state))
        atomic_write_json(tmp / "meta.json", {"step": step, **meta})

    final = replace_folder(directory / f"step-{step:09d}", build)
    for _, old in _folders(directory)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(directory) -> Path | None:
    """The newest complete checkpoint folder under ``directory`` (``None`` if there is none)."""
    folders = _folders(Path(directory))
    return folders[-1][1] if folders else None


def load_checkpoint(folder, like):
    """``(state, meta)`` from a checkpoint folder; ``like`` is a pytree of the same structure."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "meta.json").read_text())
        state = eqx.tree_deserialise_leaves(folder / "state.eqx", like)
    except (OSError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"checkpoint {folder} could not be read ({err}). Delete it to restart from the previous one."
        ) from err
    return state, meta


def data_fingerprint(X, n_rows: int = 64) -> dict:
    """What identifies a data set cheaply: shape, dtype and a SHA-256 of a fixed sample
    of ``n_rows`` evenly spaced rows (the first and last included); reads only those
    rows of a memmap."""
    N = int(X.shape[0])
    idx = np.unique(np.linspace(0, max(N - 1, 0), min(N, n_rows)).round().astype(np.int64))
    sample = np.ascontiguousarray(np.asarray(X[idx] if isinstance(X, np.ndarray) else X[idx]))
    digest = hashlib.sha256(sample.tobytes()).hexdigest()[:16]
    return {"shape": [int(s) for s in X.shape], "dtype": str(sample.dtype), "rows_sha256": digest}


def fingerprint_mismatch(saved, now: dict) -> str | None:
    """``None`` if ``saved == now``, else which entries differ, in words."""
    if saved == now:
        return None
    if not isinstance(saved, dict):
        return "the checkpoint was written by an older jaxsae (no settings recorded)"
    keys = sorted(set(saved) | set(now))
    parts = []
    for k in keys:
        a, b = saved.get(k, "—"), now.get(k, "—")
        if a != b:
            short = lambda v: json.dumps(v) if len(json.dumps(v)) <= 40 else "(differs)"  # noqa: E731
            parts.append(f"{k} {short(a)} → {short(b)}")
    return "; ".join(parts)
