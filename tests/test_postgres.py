"""A real PostgreSQL server as a study's storage (``--storage postgresql+psycopg://...``).

The README promises that ``storage:`` / ``--storage`` takes any SQLAlchemy URL. Here a throwaway
PostgreSQL cluster is made with ``initdb`` in a temporary folder, started on a free loopback port
(its unix socket inside that folder too), and given a new database; then

* two processes race to claim the same candidates through :mod:`dse.study.claims` (its keyed
  table, created by SQLAlchemy, on PostgreSQL), and
* two ``dse run`` drivers share one tabular NAS-Bench-201 study (the synthetic 64-cell table:
  nothing is trained) in that database: each candidate is looked up once and the budget holds
  (two drivers asking for the last slot at once: the later trial gives way).

The server is stopped (and its folder removed) whatever happens. The tests skip, saying why, when
the PostgreSQL server binaries or the ``psycopg`` driver (``pip install -c constraints.txt -e
".[postgres]"``) are missing. initdb and postgres refuse to run as root: as root they run as the
``postgres`` user that Debian's package creates.
"""

from __future__ import annotations

import glob
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml

from tests.conftest import SYNTHETIC_OPS, assert_each_candidate_once, kill_session, synthetic_nb201_table, trained_trials
from tests.test_claims import claim_race

DSE = str(Path(sys.executable).parent / "dse")
BUDGET = 12
#: The unprivileged user the server runs as when the tests run as root (Debian's package makes it).
SERVER_USER = "postgres"


def _version(initdb: str) -> tuple[int, ...]:
    """``(15,)`` for ``/usr/lib/postgresql/15/bin/initdb``."""
    return tuple(int(part) for part in Path(initdb).parent.parent.name.split(".") if part.isdigit())


def _server_bin() -> Path | None:
    """The folder of ``initdb``, ``pg_ctl`` and ``postgres``: that of ``initdb`` on PATH, else
    Debian's versioned folder (the newest); None when there is none."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    found = max(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version, default=None)
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """A PostgreSQL cluster in a temporary folder, on ``127.0.0.1:port``, trusting local connections."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.port = _free_port()
        self.prefix: list[str] = []
        self.root = Path(tempfile.mkdtemp(prefix="dse-pg-"))  # not under pytest's 0700 folders: the server user must enter it
        if os.geteuid() == 0:
            import pwd

            try:
                user = pwd.getpwnam(SERVER_USER)
            except KeyError:
                user = None
            if user is None or shutil.which("runuser") is None:
                shutil.rmtree(self.root)
                pytest.skip(f"running as root, and no {SERVER_USER!r} user (or no runuser) to run initdb/postgres as: they refuse root")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self.prefix = ["runuser", "-u", SERVER_USER, "--"]
        self.data = self.root / "data"

    def _run(self, tool: str, *args: str, timeout: float = 120) -> None:
        proc = subprocess.run([*self.prefix, str(self.bin_dir / tool), *args], capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
            raise AssertionError(f"{tool} failed ({proc.returncode}): {proc.stderr[-2000:]}{tail}")

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "dse", "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "server.log"), "-w", "-t", "60", "start")

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").is_file():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://dse@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="dse", dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    pytest.importorskip("psycopg", reason="the PostgreSQL driver is not installed: pip install -c constraints.txt -e '.[postgres]'")
    bin_dir = _server_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb) not found: apt-get install postgresql")
    srv = _Server(bin_dir)
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


def test_claims_race_on_postgresql(server):
    """Two processes create the claims table and claim the same 60 candidates at once: each is won
    once; a claim names its holder and passes on only from it."""
    from dse.study.claims import CandidateClaims

    url = server.create_database("claims")
    won = claim_race(url)
    assert sorted(won[0] + won[1]) == list(range(60)), "each candidate is claimed by exactly one process"
    claims, cand = CandidateClaims(url, "s"), {"w": 5, "e": 2}
    try:
        holder = claims.claim(cand, 9)
        assert holder in (5, 1005), "the claim names the trial that holds it"
        assert not claims.take_over(cand, holder + 1, 9), "a take-over naming the wrong holder is refused"
        assert claims.take_over(cand, holder, 9)
        assert claims.claim(cand, 9) is None and claims.claim(cand, 10) == 9
    finally:
        claims.close()


def _study(tmp_path: Path) -> Path:
    data = {
        "name": "pg",
        "space": {"name": "nb201", "options": {"ops": SYNTHETIC_OPS}},
        "objectives": ["nb201_clean_acc", "nb201_pgd_acc_2"],
        "metrics": ["nb201_pgd_acc_8"],
        "sampler": {"name": "random", "seed": 0},
        "budget": {"n_trials": BUDGET},
        "lookup": {"root": str(synthetic_nb201_table(tmp_path / "nb201"))},
        "execution": {"concurrency": 1, "cpus_per_trial": 1, "num_cpus": 1, "heartbeat_interval": 1, "grace_period": 5},
        "output_dir": str(tmp_path / "out"),
    }
    path = tmp_path / "pg.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_two_drivers_share_a_tabular_study_on_postgresql(server, tmp_path):
    """Two ``dse run`` processes started together on one study in PostgreSQL: both take part, no
    NB201 cell is looked up twice, and the budget holds."""
    import ray

    ray.shutdown()
    url = server.create_database("study")
    path = _study(tmp_path)
    procs = [subprocess.Popen([DSE, "run", str(path), "--storage", url, "--no-report"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, start_new_session=True) for _ in range(2)]
    results = []
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=240)
            results.append((proc.returncode, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            kill_session(proc.pid)
    for rc, err in results:
        assert rc == 0, err[-2000:]
    trials = optuna.load_study(study_name="pg", storage=url).get_trials()
    # no cell twice, none left running, no live driver's trial taken, and the shared budget holds
    # (drivers that asked for the last slot at once: the later trial gives way, see searcher._over_budget)
    trained = assert_each_candidate_once(trials, BUDGET)
    assert all(t.user_attrs["candidate"]["arch"] == "nb201" for t in trained)
    assert len({t.user_attrs["driver"] for t in trained}) == 2, "both drivers looked up cells"


def _open_when_told(path: str, url: str, go, queue) -> None:
    """Loads the study file and opens its study in ``url`` as soon as ``go`` is set; reports the error, if any."""
    from dse.study.config import load_study_config
    from dse.study.storage import open_study

    config = load_study_config(path)
    go.wait(60)
    try:
        open_study(config, url)
        queue.put("")
    except Exception as err:  # noqa: BLE001 - reported to the test, which fails on it
        queue.put(f"{type(err).__name__}: {err}")


def test_drivers_opening_a_new_database_at_once_all_get_the_study(server, tmp_path):
    """Several drivers started together on an empty PostgreSQL database race to create Optuna's
    schema (``relation "studies" already exists`` for the losers): each must still open the study."""
    ctx = mp.get_context("spawn")
    path = str(_study(tmp_path))
    for round_ in range(2):
        url = server.create_database(f"fresh{round_}")
        go, queue = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_open_when_told, args=(path, url, go, queue)) for _ in range(4)]
        for p in procs:
            p.start()
        go.set()
        errors = [queue.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert [e for e in errors if e] == [], f"round {round_}"
        assert len(optuna.get_all_study_names(storage=url)) == 1
