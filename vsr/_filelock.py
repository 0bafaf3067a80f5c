"""Advisory whole-file locks (``flock``) that the kernel releases when their process dies.

vsr holds one on each file it is writing, so that a later run can tell a live run's
files from those a killed run left behind (SIGKILL and power cuts give no chance to
clean up): a file nobody holds a lock on is stale. Without ``fcntl`` (not POSIX) there
are no locks: every call here says "not locked" and nothing is ever taken for stale.
"""

from __future__ import annotations

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = ["AVAILABLE", "lock", "unlock"]

AVAILABLE = fcntl is not None


def lock(path: Path, *, create: bool) -> int | None:
    """An open descriptor holding an exclusive lock on ``path``; None when another process holds one.

    ``create``: create the file if missing (else FileNotFoundError). The lock is on this
    very file: a path replaced or removed between the open and the lock is tried again.
    Without ``fcntl``: None when the file exists, else a descriptor (no lock).
    """
    while True:
        fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
        if fcntl is None:
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
        if not create:
            raise FileNotFoundError(path)


def unlock(fd: int | None) -> None:
    """Release (by closing) a descriptor from :func:`lock`."""
    if fd is not None:
        os.close(fd)
