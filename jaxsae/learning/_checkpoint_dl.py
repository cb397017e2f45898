"""Checkpoints for ``learn_dictionary`` and ``sweep``: resume after a kill to the same result.

The host loop of ``_dl_driver.run`` is deterministic given its state: the
``DLState`` (atoms and bias ``P``, warm-start codes, L-BFGS memory ``S, Y, rho``,
head and counters) and the number of history entries so far, which fixes the
position in the two phases (``warm_steps`` alternating entries, one entry for the
start of L-BFGS, then one per L-BFGS step). A checkpoint stores exactly that, via
``jaxsae.io._checkpoint`` (temporary folder, fsync, rename), so a run resumed
after SIGKILL replays the remaining steps on bitwise the same state as an
uninterrupted run. A fingerprint of the data, λ, masks, configuration and
starting point guards against resuming a different problem.
"""

from __future__ import annotations

import hashlib
import json

import jax
import numpy as np

from ..io._checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint

_KEYS = ("objective", "grad_norm", "alignment", "time", "phase")


def fingerprint(state, X, lam, mask, cfg) -> str:
    """A hash of everything that determines the run (not the wall-clock times)."""
    h = hashlib.sha256()
    for a in (X, lam, mask, state.P):
        a = np.asarray(jax.device_get(a))
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(repr(sorted((k, repr(v)) for k, v in cfg.items())).encode())
    return h.hexdigest()[:32]


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
        self.key = ""

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
        if meta.get("fingerprint") != self.key:
            raise ValueError(
                f"checkpoint {folder} belongs to a different run (other data, λ, widths, settings "
                "or initialisation). Use another checkpoint_dir, or delete it to start afresh."
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
