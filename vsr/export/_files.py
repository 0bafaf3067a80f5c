"""Where an exporter writes: the destination checked first, the file written beside it and renamed into place.

Every exporter follows the house rule: an existing file is never replaced without
``overwrite``, and a failed export leaves nothing behind (not even a temporary file).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .._atomic import move_into_place
from ..errors import EncodeError, OutputExistsError, VsrError

__all__ = ["checked_destination", "replacing"]


def checked_destination(path: str | os.PathLike[str], *, overwrite: bool, example: str) -> Path:
    """``path`` as a Path, after refusing a folder, an existing file (without ``overwrite``) or a missing folder."""
    dest = Path(path)
    if dest.is_dir():
        raise EncodeError(f"{dest}: is a directory; give a file name such as {example}")
    if dest.exists() and not overwrite:
        raise OutputExistsError(f"{dest} exists; pass -y/--overwrite to replace it")
    if not dest.parent.is_dir():
        raise EncodeError(f"{dest}: folder {str(dest.parent)!r} does not exist")
    return dest


@contextmanager
def replacing(dest: Path, *, overwrite: bool) -> Iterator[Path]:
    """Yield a hidden temporary path beside ``dest``; moved onto ``dest`` only if the block succeeds.

    Without ``overwrite`` a file that appeared at ``dest`` during the export is kept (the
    video writer's rule, :func:`vsr._atomic.move_into_place`).
    """
    tmp = dest.with_name(f".{dest.name}.vsr-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        if not move_into_place(tmp, dest, overwrite=overwrite):
            raise OutputExistsError(f"{dest} appeared while vsr was exporting; nothing replaced")
    except VsrError:  # already one line (several subclass OSError)
        raise
    except OSError as exc:
        raise EncodeError(f"{dest}: cannot write ({exc.strerror or exc})") from None
    finally:
        tmp.unlink(missing_ok=True)
