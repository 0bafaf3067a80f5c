"""Where inputs and outputs live: paths every node sees (a shared file system), or object-store URLs.

A path is used as it is, by the driver and by every worker: the cluster's nodes must
mount the same files at the same paths. A URL (``s3://bucket/key``, or any other
fsspec protocol whose backend is installed) is read and written through fsspec: each
worker fetches an input once into its own temporary folder and uploads the segments it
encodes; the driver fetches the input (to plan it and copy its audio) and the segments,
joins them locally and uploads the result. fsspec takes its settings from the
environment of each process (``FSSPEC_S3_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``...), so
every node needs them, as it needs the shared paths.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Any

from ..errors import ConfigError, MediaError

__all__ = ["exists", "fetch", "is_url", "join_url", "put", "remove", "split_url"]


def is_url(name: str | os.PathLike[str]) -> bool:
    """An object-store URL (``s3://...``), as opposed to a path that every node sees."""
    text = os.fspath(name)
    return "://" in text and not text.startswith("file://")


def _fs(url: str) -> tuple[Any, str]:
    try:
        import fsspec
    except ImportError:
        raise ConfigError(f"{url}: object-store URLs need fsspec and its backend: pip install 'vsr[s3]'") from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"{url}: no fsspec backend for this URL ({first}); for s3:// pip install 'vsr[s3]'") \
            from None


def _fail(url: str, what: str, exc: BaseException) -> MediaError:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, FileNotFoundError):
        reason = "no such object"
    return MediaError(f"{url}: cannot {what} ({reason})")


def exists(url: str) -> bool:
    fs, path = _fs(url)
    try:
        return bool(fs.exists(path))
    except Exception as exc:  # the backend's own errors (credentials, endpoint) are not OSErrors
        raise _fail(url, "reach it", exc) from None


def identity(url: str) -> dict[str, Any]:
    """Size and version tag of an object, to tell a changed input (resume) or a stale cached copy."""
    fs, path = _fs(url)
    try:
        info = fs.info(path)
    except Exception as exc:
        raise _fail(url, "read it", exc) from None
    return {"path": url, "size": info.get("size"), "tag": str(info.get("ETag") or info.get("mtime") or "")}


def fetch(url: str, local: Path) -> Path:
    """Download ``url`` to ``local`` (through a temporary name: a partial download is never taken)."""
    fs, path = _fs(url)
    tmp = local.with_name(f".{local.name}.part")
    try:
        fs.get_file(path, str(tmp))
        os.replace(tmp, local)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise _fail(url, "download it", exc) from None
    return local


def put(local: Path, url: str) -> None:
    fs, path = _fs(url)
    try:
        fs.put_file(str(local), path)
    except Exception as exc:
        raise _fail(url, "upload to it", exc) from None


def remove(url: str, *, recursive: bool = False) -> None:
    fs, path = _fs(url)
    try:
        fs.rm(path, recursive=recursive)
    except FileNotFoundError:
        pass
    except Exception as exc:
        raise _fail(url, "remove it", exc) from None


def split_url(url: str) -> tuple[str, str]:
    """``s3://b/dir/name.mp4`` → (``s3://b/dir``, ``name.mp4``)."""
    head, _, name = url.rstrip("/").rpartition("/")
    return head, name


def join_url(base: str, *names: str) -> str:
    scheme, _, rest = base.partition("://")
    return f"{scheme}://{posixpath.join(rest.rstrip('/'), *names)}"
