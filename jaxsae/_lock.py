"""One process per run folder: an advisory lock (``fcntl.flock``) with the owner's PID.

A checkpoint folder or a harvest output is written by one process at a time.
``RunLock(path)`` takes an exclusive, non-blocking ``flock`` on ``path`` (a
``.jaxsae.lock`` file inside a folder, or ``.NAME.lock`` beside a file) and writes
its PID into it; a second process gets one clear line naming the owner instead of
racing it. The kernel drops the lock when the owner exits or is killed, so a stale
lock file never blocks a later run.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


def lock_file_for(target: str | os.PathLike) -> Path:
    """The lock file of a run folder (inside it) or of an output file (beside it)."""
    target = Path(target)
    if target.is_dir():
        return target / ".jaxsae.lock"
    return target.with_name(f".{target.name}.lock")


class RunLock:
    """``with RunLock(folder_or_file): ...`` — exclusive ownership, or a ``ValueError``."""

    def __init__(self, target: str | os.PathLike, what: str = "folder"):
        self.target = Path(target)
        self.what = what
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        path = lock_file_for(self.target)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            who = f"process {owner}" if owner.isdigit() else owner
            raise ValueError(
                f"{self.target} is in use by {who}; wait for it or choose another {self.what}."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing releases the flock
            self.fd = None
