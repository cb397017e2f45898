"""Checkpoints for ``learn_dictionary`` and ``sweep``: resume after a kill to the same result.

The host loop of ``_dl_driver.run`` is deterministic given its state: the
``DLState`` (atoms and bias ``P``, warm-start codes, L-BFGS memory ``S, Y, rho``,
head and counters) and the number of history entries so far, which fixes the
position in the two phases (``warm_steps`` alternating entries, one entry for the
start of L-BFGS, then one per L-BFGS step). A checkpoint stores exactly that, via
``jaxsae._checkpoint`` (temporary folder, fsync, rename), so a run resumed
after SIGKILL replays the remaining steps on bitwise the same state as an
uninterrupted run. A fingerprint of the data, λ, masks, configuration and
starting point guards against resuming a different problem.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import jax
import numpy as np

from .._checkpoint import (
    data_fingerprint,
    fingerprint_mismatch,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from .._lock import RunLock

_KEYS = ("objective", "grad_norm", "alignment", "time", "phase")


def fingerprint(state, X, lam, mask, cfg) -> dict:
    """What determines the run (not the wall-clock times), part by part, so a refused
    resume can say which part differs."""

    def digest(a) -> str:
        a = np.asarray(jax.device_get(a))
        h = hashlib.sha256(str((a.shape, a.dtype.str)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]

    settings = hashlib.sha256(
        repr(sorted((k, repr(v)) for k, v in cfg.settings().items())).encode()
    )
    return {
        "data": data_fingerprint(X),
        "lam": digest(lam),
        "masks": digest(mask),
        "start": digest(state.P),
        "settings": settings.hexdigest()[:16],
    }


@contextlib.contextmanager
def checkpointer(directory, every) -> Iterator[DLCheckpointer | None]:
    """A ``DLCheckpointer`` owning ``directory`` for the run (``RunLock``), or ``None``."""
    if directory is None:
        yield None
        return
    Path(directory).mkdir(parents=True, exist_ok=True)
    with RunLock(directory, "checkpoint_dir"):
        yield DLCheckpointer(directory, every)


class DLCheckpointer:
    """Save the driver's ``(state, history)`` every ``every`` history entries; restore the newest.

    Not a pytree: a host-side helper handed to ``_dl_driver.run``.
    """

    def __init__(self, directory, every: int, keep: int = 2):
        if int(every) < 1:
            raise ValueError(f"checkpoint_every must be a positive integer, got {every}.")
        self.directory = directory
        self.every = int(every)
        self.keep = int(keep)
        self.key: dict = {}

    def restore(self, state, X, lam, mask, cfg):
        """``(state, history)`` from the newest checkpoint, or the inputs and an empty history."""
        self.key = fingerprint(state, X, lam, mask, cfg)
        empty = {k: [] for k in _KEYS}
        folder = latest_checkpoint(self.directory)
        if folder is None:
            return state, empty
        try:
            meta = json.loads((folder / "meta.json").read_text())
        except (OSError, ValueError) as err:
            raise ValueError(
                f"checkpoint {folder} could not be read ({err}). Delete it to restart from the "
                "previous one."
            ) from err
        if (why := fingerprint_mismatch(meta.get("fingerprint"), self.key)) is not None:
            raise ValueError(
                f"checkpoint {folder} was made by another run ({why}). Resume with the same data, "
                "λ, widths, settings and initialisation, or use another checkpoint_dir."
            )
        shapes, dtypes = meta["shapes"], meta["dtypes"]
        like = (state, {k: np.zeros(shapes[k], np.dtype(dtypes[k])) for k in _KEYS})
        saved, hist = load_checkpoint(folder, like)[0]
        return saved, {k: list(np.asarray(v)) for k, v in hist.items()}

    def after_entry(self, state, hist, final: bool = False) -> None:
        """Called after each history entry; writes a checkpoint every ``every`` entries."""
        T = len(hist["objective"])
        if T == 0 or (T % self.every and not final):
            return
        arrays = {k: np.asarray(hist[k]) for k in _KEYS}
        meta = {
            "fingerprint": self.key,
            "entries": T,
            "dtypes": {k: arrays[k].dtype.str for k in _KEYS},
            "shapes": {k: list(arrays[k].shape) for k in _KEYS},
        }
        save_checkpoint(self.directory, T, (state, arrays), meta, keep=self.keep)
