"""PNG export of report figures with kaleido, and discovery of the Chromium it drives."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

__all__ = ["CHROME_NAMES", "export_png", "find_chromium"]

logger = logging.getLogger(__name__)

CHROME_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome", "chrome.exe")
"""Executables looked up on ``PATH``, in order."""


def find_chromium(kaleido_module: Any) -> str | None:
    """A Chromium kaleido can drive: ``"bundled"`` (kaleido 0.x), ``BROWSER_PATH``, or on ``PATH``.

    Args:
        kaleido_module: The imported ``kaleido`` module (only its ``__version__`` is read).

    Returns:
        ``"bundled"``, the executable's path, or None when there is none.
    """
    version = str(getattr(kaleido_module, "__version__", ""))
    if version.startswith("0."):
        return "bundled"
    env = os.environ.get("BROWSER_PATH")
    if env and Path(env).is_file():
        return env
    for name in CHROME_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def export_png(fig: Any, path: str | os.PathLike) -> bool:
    """Writes ``fig`` as a PNG with kaleido, if possible.

    Needs the ``kaleido`` package and a Chromium it can drive (kaleido 0.x bundles one;
    kaleido 1.x needs Chrome/Chromium on ``PATH`` or in ``BROWSER_PATH``). Never raises for a
    missing tool: logs a warning and returns False instead.

    Args:
        fig: A ``plotly.graph_objects.Figure``.
        path: Where to write the PNG.

    Returns:
        True when the file was written.
    """
    path = Path(path)
    try:
        import kaleido
    except ImportError:
        logger.warning("PNG export skipped for %s: kaleido is not installed (pip install kaleido)", path)
        return False
    if find_chromium(kaleido) is None:
        logger.warning("PNG export skipped for %s: kaleido found no Chrome/Chromium (set BROWSER_PATH)", path)
        return False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.write_image(str(path), format="png")
    except Exception as exc:  # noqa: BLE001 - any renderer failure degrades to "no PNG"
        logger.warning("PNG export failed for %s: %s", path, exc)
        return False
    return path.is_file()
