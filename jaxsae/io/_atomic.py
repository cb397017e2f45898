"""Atomic file writing: nothing on disk is ever half-written.

Every writer in jaxsae goes through :func:`atomic_write`: the bytes go to a
temporary file in the target's folder, are flushed and fsynced, and only then
renamed over the target (``os.replace`` is atomic on POSIX). A process killed
mid-write leaves the previous file intact.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def _check_writable(path: Path) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.exists():
        raise ValueError(f"cannot write {path}: folder {folder} does not exist. Create it first.")
    if not folder.is_dir():
        raise ValueError(
            f"cannot write {path}: {folder} is a file, not a folder (does not exist as a folder). "
            "Choose another path."
        )
    if not os.access(folder, os.W_OK):
        raise ValueError(
            f"cannot write {path}: folder {folder} is not writable. Choose another path."
        )


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it over ``path``.

    Use for writers that insist on a file name (safetensors, numpy):

        with atomic_path("w.safetensors") as tmp:
            save_file(tensors, tmp)
    """
    path = Path(path)
    _check_writable(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    os.close(fd)
    tmp = Path(tmp)
    # mkstemp creates 0600 files; give the result the usual umask-derived mode.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write(
    path: str | os.PathLike, write: Callable[[object], None], mode: str = "wb"
) -> None:
    """Write ``path`` atomically: ``write(fh)`` fills an open temporary file."""
    with atomic_path(path) as tmp, open(tmp, mode) as fh:
        write(fh)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda fh: fh.write(data))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as pretty JSON, atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    atomic_write(path, lambda fh: fh.write(text), mode="w")


def _json_default(x):
    import numpy as np

    if hasattr(x, "tolist"):
        return np.asarray(x).tolist()
    raise TypeError(f"cannot serialise {type(x).__name__} to JSON")


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
