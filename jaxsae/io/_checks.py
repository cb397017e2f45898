"""Validation of what the loaders read: regular files, exact JSON types, finite tensors.

Every failure is one ``ValueError`` line naming the file, the field or tensor and
what to do; nothing read from disk reaches a computation unchecked.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import numpy as np

_KINDS = {
    stat.S_IFDIR: "a folder",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def regular_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` if it is an existing regular file (following symlinks), else a ``ValueError``.

    Checked before opening, so a FIFO or device never blocks a read."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ValueError(f"{what} {path} does not exist.") from None
    except OSError as err:
        raise ValueError(f"{what} {path} cannot be read ({err.strerror}).") from None
    if not stat.S_ISREG(mode):
        kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise ValueError(f"{what} {path} is {kind}, not a regular file; pass the file itself.")
    return path


def read_text(path: str | os.PathLike, what: str) -> str:
    """The UTF-8 text of a regular file, or one ``ValueError`` line."""
    path = regular_file(path, what)
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{what} {path} cannot be read as UTF-8 text ({err}).") from None


def field(cfg: dict, key: str, kind: type | tuple, file, *, default=None, required=False):
    """``cfg[key]`` checked to be exactly ``kind`` (``bool`` is not an ``int``, a string is
    never a bool or a number); ``default`` when absent and not ``required``."""
    if key not in cfg or cfg[key] is None and not required:
        if required:
            raise ValueError(f"{file} has no {key!r}; it is required.")
        return default
    value = cfg[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if not ok:
        names = " or ".join("boolean" if k is bool else k.__name__ for k in kinds)
        raise ValueError(
            f"{file}: {key!r} must be a JSON {names}, got {json_repr(value)} "
            f"({type(value).__name__}); fix the file."
        )
    return value


def positive_int(
    cfg: dict, key: str, file, *, at_most: int | None = None, name_max: str = ""
) -> int:
    """A required integer ``1 ≤ cfg[key] (≤ at_most)``."""
    value = field(cfg, key, int, file, required=True)
    if value < 1 or (at_most is not None and value > at_most):
        bound = f" ≤ {name_max} = {at_most}" if at_most is not None else ""
        raise ValueError(f"{file}: {key!r} must be an integer ≥ 1{bound}, got {value}.")
    return value


def json_repr(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def finite_tensor(name: str, array: np.ndarray, file) -> np.ndarray:
    """``array`` if every entry is finite, else a line naming the tensor and the first bad index."""
    a = np.asarray(array)
    if a.dtype.kind in "iub":
        return a
    bad = ~np.isfinite(
        a if a.dtype.kind in "fc" and a.dtype.itemsize >= 4 else a.astype(np.float64)
    )
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{file}: tensor {name!r} has {int(bad.sum())} non-finite value(s) (NaN/Inf), first at "
            f"index {first}; the file is damaged or the training diverged."
        )
    return a


def tensors_digest(tensors: dict) -> str:
    """SHA-256 over tensors (names, dtypes, shapes, bytes; sorted by name): recorded when a
    file is saved, so any later change to the data is detected on load."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        a = np.ascontiguousarray(np.asarray(tensors[name]))
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def check_digest(tensors: dict, recorded, file) -> None:
    """Refuse tensors whose digest differs from the one recorded at save time."""
    if recorded is None:
        return
    if not isinstance(recorded, str) or tensors_digest(tensors) != recorded:
        raise ValueError(
            f"{file}: the tensors do not match the checksum recorded when they were saved; "
            "the file is damaged (re-save or re-download it)."
        )
