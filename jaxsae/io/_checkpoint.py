"""Training checkpoints: one folder per step, written into a temporary folder then renamed.

``checkpoint_dir/step-000000100/{state.eqx, meta.json}``. ``state.eqx`` holds the
leaves of a pytree (``eqx.tree_serialise_leaves``, NumPy format, no pickles);
``meta.json`` the step, the run's fingerprint and whatever JSON the caller adds.
A folder only gets its final name once both files are complete and fsynced, so a
kill at any moment leaves the previous checkpoints usable.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import equinox as eqx

from ._atomic import _fsync_dir, atomic_write, atomic_write_json

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
    """Write checkpoint ``step`` of ``state`` (a pytree) and ``meta`` (JSON); keep the last ``keep``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"step-{step:09d}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-step-", dir=directory))
    try:
        atomic_write(tmp / "state.eqx", lambda fh: eqx.tree_serialise_leaves(fh, state))
        atomic_write_json(tmp / "meta.json", {"step": step, **meta})
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(directory)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
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
