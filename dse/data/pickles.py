"""Reading pickles written by numpy (the CIFAR "python version" files) without running code.

The unpickler resolves only the globals that numpy arrays of plain dtypes need, so a tampered
file cannot import or call anything else.
"""

from __future__ import annotations

import codecs
import importlib
import io
import pathlib
import pickle
from typing import Any

import numpy as np

from dse.errors import DataError

__all__ = ["read_pickle"]


def _numpy_attr(*candidates: tuple[str, str]) -> Any:
    """Return the first importable ``module.attr`` among ``candidates``."""
    for module, attr in candidates:
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"none of {candidates} is available in this numpy")


def _latin1_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` restricted to what numpy's protocol-2 pickles use (latin-1 str -> bytes)."""
    if not isinstance(obj, str) or codecs.lookup(encoding).name != "iso8859-1" or errors != "strict":
        raise pickle.UnpicklingError(f"refusing _codecs.encode({type(obj).__name__}, {encoding!r}, {errors!r})")
    return obj.encode("latin1")


def _safe_dtype(*args: Any) -> np.dtype:
    """``numpy.dtype`` that refuses object dtypes (they could hold arbitrary objects)."""
    dt = np.dtype(*args)
    if dt.hasobject:
        raise pickle.UnpicklingError(f"refusing object dtype {dt}")
    return dt


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals numpy arrays need."""

    def __init__(self, file: io.BytesIO, path: pathlib.Path) -> None:
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        allowed = _allowed_globals()
        key = (module, name)
        if key not in allowed:
            raise DataError(f"{self._path}: refusing to unpickle {module}.{name}")
        return allowed[key]


_ALLOWED_CACHE: dict[tuple[str, str], Any] = {}


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """Map of the (module, name) pairs the CIFAR unpickler may resolve."""
    if not _ALLOWED_CACHE:
        reconstruct = _numpy_attr(("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"))
        frombuffer = _numpy_attr(("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"))
        _ALLOWED_CACHE.update(
            {
                ("numpy.core.multiarray", "_reconstruct"): reconstruct,
                ("numpy._core.multiarray", "_reconstruct"): reconstruct,
                ("numpy.core.numeric", "_frombuffer"): frombuffer,
                ("numpy._core.numeric", "_frombuffer"): frombuffer,
                ("numpy", "ndarray"): np.ndarray,
                ("numpy", "dtype"): _safe_dtype,
                ("_codecs", "encode"): _latin1_encode,
            }
        )
    return _ALLOWED_CACHE


def read_pickle(path: pathlib.Path) -> dict[Any, Any]:
    """Read a pickle with the restricted unpickler; it must hold a dict.

    Args:
        path: The pickle file.

    Returns:
        The unpickled dict (keys are bytes, as Python 2 wrote them).

    Raises:
        DataError: Missing, unreadable, corrupt or refused file, or not a dict (the message names the file).
    """
    try:
        payload = path.read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found; pass --download (download=True) to fetch it") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    try:
        obj = _RestrictedUnpickler(io.BytesIO(payload), path).load()
    except DataError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        OverflowError,
        ImportError,
        MemoryError,
        RecursionError,
    ) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: corrupt or truncated pickle ({type(exc).__name__}: {detail})") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return obj
