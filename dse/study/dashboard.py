"""``dse dashboard STUDY``: optuna-dashboard on the study's storage, on a loopback port.

optuna-dashboard (an optional extra: ``pip install -c constraints.txt -e ".[dashboard]"``) reads
the Optuna storage directly: every trial with its objective values (named: dse sets the study's
metric names), its constraint values (dse records them as the ``constraints`` list that both Optuna's
samplers and the dashboard read) and the user attributes dse records (candidate, metrics,
measurement, masking flags, history). dse itself writes nothing; the dashboard's own page can
rename or delete studies and write notes, as optuna-dashboard always can, so it listens on
127.0.0.1 unless ``--host`` says otherwise.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from dse.errors import SpecError
from dse.study.config import StudyConfig
from dse.study.storage import open_study

__all__ = ["dashboard_app", "free_port", "serve_dashboard"]

logger = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def dashboard_app(config: StudyConfig, storage: str | None = None) -> Any:
    """optuna-dashboard's WSGI app over the study's storage (read-only; the study must exist).

    Raises:
        SpecError: optuna-dashboard is not installed, or the study was never run.
    """
    try:
        from optuna_dashboard import wsgi
    except ImportError as err:
        raise SpecError('dashboard: optuna-dashboard is not installed (pip install -c constraints.txt -e ".[dashboard]")') from err
    study = open_study(config, storage, create=False)  # refuses a study that was never run, creates nothing
    return wsgi(study._storage)  # the storage the study was opened with (heartbeats, SQLite timeout)


def serve_dashboard(config: StudyConfig, *, storage: str | None = None, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serves the dashboard until interrupted (Ctrl-C). ``host`` is loopback unless the user says otherwise."""
    from wsgiref.simple_server import make_server

    app = dashboard_app(config, storage)
    try:
        server = make_server(host, port, app)
    except OSError as err:
        raise SpecError(f"--port {port}: cannot listen on {host}:{port} ({err.strerror or err})") from err
    logger.info("optuna-dashboard for study %s at http://%s:%d/dashboard/ (Ctrl-C stops it)", config.name, host, port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
