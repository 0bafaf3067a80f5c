"""Publishing a finished file: the one way every writer of vsr moves its hidden temporary into place."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["move_into_place"]


def move_into_place(tmp: Path, dest: Path, *, overwrite: bool) -> bool:
    """Rename ``tmp`` to ``dest``; without ``overwrite``, never over a file that appeared meanwhile.

    A hard link is the atomic "create unless it exists" for a whole file: a destination
    made by another program (or another vsr run) after the writer's start check is not
    replaced. Returns False, leaving ``tmp`` where it is, when ``dest`` appeared; after a
    successful link ``tmp`` still exists and is the caller's to remove.
    """
    if overwrite:
        os.replace(tmp, dest)
        return True
    try:
        os.link(tmp, dest)
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links: check, then rename
        if dest.exists():
            return False
        os.replace(tmp, dest)
    return True
