"""Writing outputs so that nothing finished is lost: check the path before long work, write atomically.

Every file dse writes (checkpoints, metrics JSON, exports, tables, reports) goes through
:func:`atomic_write`: the content goes to a temporary file in the same directory, which is then
renamed over the target (``os.replace`` is atomic on POSIX and Windows), so a reader never sees a
half-written file and a failed write leaves the previous file intact. Commands that take minutes
call :func:`check_writable` on their outputs first, so a read-only directory is an error before the
work, not after.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from dse.errors import DataError

__all__ = ["atomic_write", "atomic_write_text", "check_writable"]


def check_writable(path: str | os.PathLike[str], *, what: str = "output") -> Path:
    """``path`` as a Path, after checking that a file can be written there (creating missing parents).

    Raises:
        DataError: ``path`` is a directory, or its directory cannot be created or written (one line,
            naming the path).
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise DataError(f"{what} {path}: is a directory; give a file name")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"{what} {path}: cannot create its directory ({err.strerror or err})") from err
    if not parent.is_dir():
        raise DataError(f"{what} {path}: {parent} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".dse-probe-", dir=parent)
    except OSError as err:
        raise DataError(f"{what} {path}: its directory is not writable ({err.strerror or err})") from err
    os.close(fd)
    os.unlink(probe)
    return path


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Calls ``write(tmp)`` on a temporary path beside ``path``, then renames it to ``path``.

    Raises:
        DataError: The directory cannot be written (the message names the path); the target is untouched.
    """
    path = check_writable(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; an output gets the usual permissions
        os.replace(tmp, path)
    except OSError as err:
        raise DataError(f"{path}: cannot be written ({err.strerror or err})") from err
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Writes ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
