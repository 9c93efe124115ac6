"""The modality sweep against a real PostgreSQL server: two workers share one study, one of them is
killed mid-trial, and a rerun of the same command completes every cell exactly once.

The test starts a private server (initdb into a temporary folder, a free port on 127.0.0.1) as an
unprivileged user, since PostgreSQL refuses to run as root. Without the server's binaries or psycopg
it skips, unless ADA2I_REQUIRE_POSTGRES is set (CI sets it), where it fails instead."""

import glob
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from ada2i_fast import sweep  # noqa: E402

TINY = ["--dataset", "meld", "--hidden", "16", "--rank", "3", "--ffn-dim", "32", "--drop-rate", "0.1",
        "--lr", "2e-3", "--size", "0.03", "--epochs", "1", "--encoder-nlayers", "1", "--quiet"]
TRAINED = re.compile(r"^worker \d: +(\S+) seed (\d+): dev weighted F1", re.MULTILINE)
SERVER_USER = "ada2i-postgres"  # created when the test runs as root
DB_USER, DB_NAME = "ada2i", "sweep"
# A sweep whose first trial to reach the end of an epoch, in whichever worker, dies there with SIGKILL.
# The spawned workers import this file as __mp_main__, so the replacement reaches them too.
KILLED_ONCE = """\
import os, signal, sys
from ada2i_fast import sweep
from ada2i_fast.studies import study as studies

MARKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "killed")


def die_once(record):
    try:
        os.close(os.open(MARKER, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


sweep.train_run = lambda *args, **kwargs: studies.train_run(*args, on_epoch_end=die_once, **kwargs)
if __name__ == "__main__":
    sweep.main(sys.argv[1:])
"""


def _unavailable(reason: str):
    if os.environ.get("ADA2I_REQUIRE_POSTGRES"):
        pytest.fail(f"{reason}, and ADA2I_REQUIRE_POSTGRES is set")
    pytest.skip(reason)


def _server_binaries() -> Path | None:
    """The folder of initdb and postgres: on PATH, or where Debian installs them."""
    on_path = shutil.which("initdb")
    folders = [Path(on_path).parent] if on_path else [Path(p).parent for p in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))]
    return next((f for f in reversed(folders) if (f / "postgres").is_file()), None)


def _as_server_user() -> dict:
    """subprocess arguments that run a command as an unprivileged user (none when we are not root)."""
    if os.geteuid() != 0:
        return {}
    try:
        entry = pwd.getpwnam(SERVER_USER)
    except KeyError:
        if shutil.which("useradd") is None:
            _unavailable("running as root without useradd to create a user for the PostgreSQL server")
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        SERVER_USER], capture_output=True)  # may lose a race with another test run: checked below
        entry = pwd.getpwnam(SERVER_USER)
    return dict(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def postgres_url():
    """The SQLAlchemy URL of an empty database on a private PostgreSQL server, stopped and removed afterwards."""
    try:
        import psycopg
    except ImportError:
        _unavailable('psycopg is not installed (pip install "psycopg[binary]>=3.1")')
    binaries = _server_binaries()
    if binaries is None:
        _unavailable("no PostgreSQL server binaries (initdb, postgres) on PATH or under /usr/lib/postgresql/*/bin")
    as_user = _as_server_user()
    base = Path(tempfile.mkdtemp(prefix="ada2i-pg-"))  # not under pytest's tmp_path, which only root may enter
    server = None
    try:
        if as_user:
            os.chown(base, as_user["user"], as_user["group"])
        data, port = base / "data", _free_port()
        subprocess.run([binaries / "initdb", "-D", data, "-U", DB_USER, "--auth=trust", "--no-locale", "-E", "UTF8",
                        "--no-sync"], cwd=base, capture_output=True, text=True, check=True, timeout=120, **as_user)
        with open(base / "server.log", "w") as log:
            server = subprocess.Popen(
                [binaries / "postgres", "-D", data, "-p", str(port), "-c", "listen_addresses=127.0.0.1",
                 "-c", f"unix_socket_directories={base}", "-c", "fsync=off", "-c", "synchronous_commit=off"],
                cwd=base, stdout=log, stderr=subprocess.STDOUT, **as_user)
        address = dict(host="127.0.0.1", port=port, user=DB_USER)
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the PostgreSQL server did not start:\n{(base / 'server.log').read_text()}")
            try:
                with psycopg.connect(**address, dbname="postgres", autocommit=True, connect_timeout=2) as db:
                    db.execute(f"CREATE DATABASE {DB_NAME}")
                break
            except psycopg.OperationalError:
                time.sleep(0.2)
        yield f"postgresql+psycopg://{DB_USER}@127.0.0.1:{port}/{DB_NAME}"
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGINT)  # fast shutdown: ends the sessions still open
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        shutil.rmtree(base, ignore_errors=True)


def test_two_workers_on_postgresql_survive_a_killed_worker_and_train_every_cell_once(postgres_url, tmp_path):
    out = tmp_path / "sweep"
    variants, seeds = ["atv", "t"], [1, 2]
    argv = ["--storage", postgres_url, "--out", str(out), "--variants", *variants, "--seeds", *map(str, seeds),
            "--workers", "2", "--", *TINY]
    cells = {(variant, seed) for variant in variants for seed in seeds}
    driver = tmp_path / "killed_once.py"
    driver.write_text(KILLED_ONCE)

    first = subprocess.run([sys.executable, driver, *argv], capture_output=True, text=True, timeout=300)
    assert first.returncode == 1 and "(exit code -9) stopped early" in first.stderr, first.stdout + first.stderr
    study = optuna.load_study(study_name="modality-sweep", storage=postgres_url)
    by_state = Counter(t.state for t in study.trials)
    assert by_state == {optuna.trial.TrialState.COMPLETE: 3, optuna.trial.TrialState.RUNNING: 1}, by_state
    (orphan,) = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))

    rerun = subprocess.run([sys.executable, "-m", "ada2i_fast.sweep", *argv], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"trial(s) {orphan.number}: their worker on this host is gone; marked failed" in rerun.stdout
    assert "1 cells queued" in rerun.stdout

    trained = Counter((variant, int(seed)) for variant, seed in TRAINED.findall(first.stdout + rerun.stdout))
    assert trained == {cell: 1 for cell in cells}
    trials = optuna.load_study(study_name="modality-sweep", storage=postgres_url).trials
    complete = Counter(sweep.cell_of(t) for t in trials if t.state == optuna.trial.TrialState.COMPLETE)
    assert complete == {cell: 1 for cell in cells}
    assert [t.number for t in trials if t.state == optuna.trial.TrialState.FAIL] == [orphan.number]
    assert not [t for t in trials if t.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)]

    markdown = (out / "modality-sweep.md").read_text()
    rows = [line.split("|")[1:4] for line in markdown.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [(row[0].strip(), row[2].strip()) for row in rows] == [(variant, "2") for variant in variants]
    assert "Not completed" not in markdown
    reported = json.loads((out / "modality-sweep.json").read_text())["cells"]
    assert sorted((c["variant"], c["seed"]) for c in reported) == sorted(cells)
