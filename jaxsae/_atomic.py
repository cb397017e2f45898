"""Atomic file writing: nothing on disk is ever half-written.

Every writer in jaxsae goes through :func:`atomic_write`: the bytes go to a
temporary file in the target's folder, are flushed and fsynced, and only then
renamed over the target (``os.replace`` is atomic on POSIX). A process killed
mid-write leaves the previous file intact. Folders (SAE folders, checkpoints) are
built whole beside their target and swapped in by :func:`replace_folder`, so a
reader sees the old folder or the new one, never a mix.

Temporary files and folders are held under an ``flock`` while they are written;
the next write to the same target deletes the ones nobody holds any more (left by
a killed writer). Everything gets the permissions the umask gives (``mkstemp``
and ``mkdtemp`` alone would leave 0600 / 0700).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import json
import os
import shutil
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _held(path: Path) -> bool:
    """Whether a live writer holds ``path`` (a temporary file or folder) under flock."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the lock we may just have taken
    return False


def clean_leftovers(target: Path, patterns: tuple[str, ...] | None = None) -> None:
    """Delete temporary files and folders of earlier writes to ``target`` that no live
    writer holds (a killed writer's debris)."""
    name = target.name
    pats = patterns or (f".{name}.*.tmp", f".{name}.tmp-*", f".{name}.old-*")
    folder = target.parent if str(target.parent) else Path(".")
    for pat in pats:
        for p in folder.glob(pat):
            if _held(p):
                continue
            with contextlib.suppress(OSError):
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


@contextlib.contextmanager
def _holding(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it over ``path``.

    Use for writers that insist on a file name (safetensors, numpy):

        with atomic_path("w.safetensors") as tmp:
            save_file(tensors, tmp)
    """
    path = Path(path)
    _check_writable(path)
    clean_leftovers(path, (f".{path.name}.*.tmp",))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    tmp = Path(tmp)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held until the rename: a live write is never cleaned
        os.chmod(tmp, 0o666 & ~_umask())
        yield tmp
        with open(tmp, "rb+") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # again: some writers (safetensors) recreate the file
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        os.close(fd)
        if tmp.exists():
            tmp.unlink()


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    fn = getattr(_LIBC, "renameat2", None) if _LIBC is not None else None
    if fn is None:
        return False
    at_fdcwd, exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), exchange) == 0


def replace_folder(path: str | os.PathLike, build: Callable[[Path], None]) -> Path:
    """Build a whole folder with ``build(tmp)`` beside ``path``, then swap it in atomically.

    With an existing ``path`` the two folders are exchanged in one step (Linux
    ``RENAME_EXCHANGE``) and the old one deleted; elsewhere the old folder is renamed
    away first. A reader sees the old folder or the new one, never a mix; a killed
    write leaves only a temporary folder, which the next write to ``path`` deletes.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} exists and is not a folder; choose another path.")
    _check_writable(path)
    clean_leftovers(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent or "."))
    try:
        with _holding(tmp):
            os.chmod(tmp, 0o777 & ~_umask())
            build(tmp)
            for f in tmp.iterdir():
                if f.is_file():
                    with open(f, "rb") as fh:
                        os.fsync(fh.fileno())
            _fsync_dir(tmp)
            if not path.exists():
                os.rename(tmp, path)
            elif not _exchange(tmp, path):  # no atomic swap here: move the old one away first
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent or "."))
                os.rename(path, old / "x")
                os.rename(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            _fsync_dir(path.parent)
    finally:
        if tmp.exists():  # after an exchange: the old folder
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


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
