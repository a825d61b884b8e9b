"""``dse dashboard``: optuna-dashboard serves the study's page on a loopback port, metric names and
constraints included; a study that was never run is refused and nothing is created."""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
import yaml

pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is an extra: pip install -e '.[dashboard]'")

from dse.errors import SpecError  # noqa: E402
from dse.study.config import load_study_config  # noqa: E402
from dse.study.dashboard import dashboard_app, free_port  # noqa: E402
from dse.study.searcher import record_constraints  # noqa: E402
from dse.study.storage import open_study  # noqa: E402


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):  # no access log in the test output
        pass


def _study_file(tmp_path: Path) -> Path:
    data = {
        "name": "dash",
        "space": {"name": "mobilenet_tiny"},
        "objectives": [{"name": "robust_acc", "direction": "maximize"}, {"name": "params", "direction": "minimize"}],
        "metrics": ["natural_acc"],
        "constraints": [{"metric": "natural_acc", "min": 0.5}],
        "output_dir": str(tmp_path / "out"),
    }
    path = tmp_path / "dash.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback only
        assert resp.status == 200
        return resp.read()


def test_the_dashboard_serves_the_study_with_names_and_constraints(tmp_path):
    config = load_study_config(_study_file(tmp_path))
    study = open_study(config)
    for robust, params, natural in ((0.4, 1e5, 0.7), (0.5, 2e5, 0.3)):
        trial = study.ask()
        record_constraints(study, trial, [0.5 - natural])
        study.tell(trial, [robust, params])
    port = free_port()
    server = make_server("127.0.0.1", port, dashboard_app(config), handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{port}"
        assert b"<html" in _get(f"{base}/dashboard/").lower()
        studies = json.loads(_get(f"{base}/api/studies"))["study_summaries"]
        (summary,) = [s for s in studies if s["study_name"] == "dash"]
        detail = json.loads(_get(f"{base}/api/studies/{summary['study_id']}"))
        assert detail["objective_names"] == ["robust_acc", "params"], "axes are named, not 'Objective 0/1'"
        constraints = [t["constraints"] for t in detail["trials"]]
        assert constraints == [[pytest.approx(-0.2)], [pytest.approx(0.2)]], "constraints reach the dashboard"
    finally:
        server.shutdown()
        server.server_close()


def test_a_study_never_run_is_refused_and_nothing_is_created(tmp_path):
    config = load_study_config(_study_file(tmp_path))
    with pytest.raises(SpecError, match="dse run"):
        dashboard_app(config)
    assert not (tmp_path / "out").exists()
