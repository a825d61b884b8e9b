"""Fetching an archive over HTTP(S) with an MD5 check, and extracting it with path and link checks."""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import pathlib
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request

from dse.errors import DataError

__all__ = ["fetch_archive", "md5_of", "safe_extract"]

logger = logging.getLogger(__name__)


def md5_of(path: pathlib.Path) -> str:
    """MD5 hex digest of a file.

    Args:
        path: The file.

    Returns:
        The lower-case hex digest.
    """
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_archive(url: str, archive: pathlib.Path, md5: str) -> None:
    """Stream ``url`` to ``archive`` via a temporary file, checking the MD5.

    Args:
        url: ``http``, ``https`` or ``file`` URL.
        archive: Where the verified archive is kept (its directory must exist).
        md5: Expected lower-case MD5 hex digest.

    Raises:
        DataError: Unsupported scheme, network error, short read or MD5 mismatch (the partial
            file is deleted).
    """
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https", "file"):
        raise DataError(f"{url}: unsupported URL scheme {scheme!r} (use http, https or file)")
    fd, tmp_name = tempfile.mkstemp(dir=archive.parent, prefix=archive.name + ".", suffix=".part")
    tmp = pathlib.Path(tmp_name)
    digest = hashlib.md5(usedforsecurity=False)
    ok = False
    try:
        logger.info("downloading %s to %s", url, archive)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310
            total = resp.headers.get("Content-Length")
            total_n = int(total) if total and total.isdigit() else None
            done = 0
            next_log = 0.1
            while True:
                chunk = resp.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if total_n and done / total_n >= next_log:
                    logger.info("downloaded %.0f%% (%d / %d bytes)", 100.0 * done / total_n, done, total_n)
                    next_log += 0.1
            if total_n is not None and done != total_n:
                raise DataError(f"{url}: download incomplete ({done} of {total_n} bytes)")
        got = digest.hexdigest()
        if got != md5:
            raise DataError(f"{url}: MD5 mismatch (expected {md5}, got {got}); partial file deleted")
        os.replace(tmp, archive)
        ok = True
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{url}: download failed ({exc})") from exc
    finally:
        if not ok:
            tmp.unlink(missing_ok=True)


def safe_extract(archive: pathlib.Path, dest: pathlib.Path) -> None:
    """Extract a tar archive, refusing absolute paths, ``..``, links and special files.

    Args:
        archive: The tar file (any compression).
        dest: Directory to extract into.

    Raises:
        DataError: An unsafe member or an unreadable archive.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                parts = pathlib.PurePosixPath(m.name).parts
                if m.name.startswith(("/", "\\")) or os.path.isabs(m.name) or ".." in parts or ":" in m.name:
                    raise DataError(f"{archive}: refusing unsafe member path {m.name!r}")
                if not (m.isfile() or m.isdir()):
                    raise DataError(f"{archive}: refusing link or special file {m.name!r}")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover - Python < 3.11.4; members were checked above
                tar.extractall(dest, members=members)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{archive}: cannot extract archive ({exc})") from exc
