"""What the sweep and the tuner share (ada2i_fast.studies.study), where things go wrong: a worker killed
mid-trial, a damaged or foreign study database, and two launches that create one study at once."""

import contextlib
import multiprocessing
import os
import re
import socket
import sqlite3
import subprocess
import sys
from collections import Counter

import pytest

optuna = pytest.importorskip("optuna")

from ada2i_fast import sweep, tune  # noqa: E402
from ada2i_fast.studies import study as studies

TINY = ["--dataset", "meld", "--hidden", "16", "--rank", "3", "--ffn-dim", "32", "--drop-rate", "0.1",
        "--lr", "2e-3", "--size", "0.03", "--epochs", "1", "--encoder-nlayers", "1", "--quiet"]
TRAINED = re.compile(r"^worker \d: +(\S+) seed (\d+): dev weighted F1", re.MULTILINE)
# A sweep whose worker dies (SIGKILL, no chance to clean up) as soon as it takes a trial.
KILLED_SWEEP = (
    "import os, signal, sys\n"
    "from ada2i_fast import sweep\n"
    "sweep.train_run = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)\n"
    "sweep.main(sys.argv[1:])\n"
)


def _study(out, name="modality-sweep"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'study.db'}")


def test_a_rerun_takes_up_the_cell_of_a_killed_worker_at_once(tmp_path, capfd):
    out = tmp_path / "sweep"
    argv = ["--out", str(out), "--variants", "t", "--seeds", "1", "--", *TINY]
    killed = subprocess.run([sys.executable, "-c", KILLED_SWEEP, *argv], capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    (orphan,) = _study(out).trials
    assert orphan.state == optuna.trial.TrialState.RUNNING
    assert orphan.user_attrs["worker"]["host"] == socket.gethostname()

    report = sweep.main(argv)

    output = capfd.readouterr().out
    assert f"trial(s) {orphan.number}: their worker on this host is gone; marked failed" in output
    assert "1 cells queued" in output and TRAINED.findall(output) == [("t", "1")]
    assert not report["missing"] and [row["variant"] for row in report["rows"]] == ["t"]
    states = {t.number: t.state for t in _study(out).trials}
    assert states[orphan.number] == optuna.trial.TrialState.FAIL
    assert Counter(states.values())[optuna.trial.TrialState.COMPLETE] == 1


def test_a_worker_counts_as_alive_only_while_its_own_process_runs():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    started = studies._process_start(child.pid)
    assert studies._is_alive(child.pid, started)
    assert not studies._is_alive(child.pid, started + 1)  # the PID was given to a later process
    child.kill()
    child.wait()
    assert not studies._is_alive(child.pid, started)


def test_a_running_trial_of_a_live_worker_or_another_host_is_left_alone(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}")
    here = dict(host=socket.gethostname(), pid=os.getpid(), started=studies._process_start(os.getpid()))
    elsewhere = dict(here, host="another-machine", pid=2**22 + 1)
    for worker in (here, elsewhere):
        study.ask().set_user_attr("worker", worker)
    assert studies.fail_orphaned_trials(study) == []
    assert {t.state for t in study.trials} == {optuna.trial.TrialState.RUNNING}


@pytest.mark.parametrize("command", [sweep, tune], ids=["sweep", "tune"])
def test_a_damaged_or_foreign_study_database_is_one_error_line(tmp_path, command):
    flags = ["--", "--dataset", "meld"]
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    database = garbage / "study.db"
    database.write_bytes(bytes(range(256)) * 20)
    with pytest.raises(SystemExit, match=rf"^error: study database {database} cannot be read as a SQLite database "
                                         r"\(file is not a database\); choose another --out or --storage$"):
        command.main(["--out", str(garbage), *flags])

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    with contextlib.closing(sqlite3.connect(foreign / "study.db")) as db:
        db.execute("CREATE TABLE people (name TEXT)")
        db.commit()
    with pytest.raises(SystemExit, match=r"^error: study database .* is another program's SQLite database "
                                         r"\(tables people\); choose another --out or --storage$"):
        command.main(["--out", str(foreign), *flags])
    with contextlib.closing(sqlite3.connect(foreign / "study.db")) as db:
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == [("people",)]  # untouched

    with pytest.raises(SystemExit, match=r"^error: cannot open the study storage bogus://x \(Can't load plugin: "
                                         r"sqlalchemy.dialects:bogus\); check --storage or --out$"):
        command.main(["--out", str(tmp_path / "x"), "--storage", "bogus://x", *flags])


@pytest.mark.parametrize("command", [sweep, tune], ids=["sweep", "tune"])
def test_a_sqlite_storage_in_a_missing_folder_is_refused_and_no_folder_is_made(tmp_path, command):
    """optuna's storage made every missing parent folder of a SQLite URL, anywhere."""
    database = tmp_path / "typo" / "deeper" / "study.db"
    with pytest.raises(SystemExit, match=rf"^error: study storage sqlite:///{database}: its folder {database.parent} "
                                         r"does not exist \(no folder is made for it\); create it, or choose another "
                                         r"--storage$"):
        command.main(["--out", str(tmp_path / "out"), "--storage", f"sqlite:///{database}", "--", "--dataset", "meld"])
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_report_of_a_damaged_study_database_is_one_error_line(tmp_path):
    (tmp_path / "study.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(SystemExit, match=r"^error: study database .* cannot be read as a SQLite database"):
        sweep.main(["--out", str(tmp_path), "--report-only"])


def _launch(out, barrier, log):
    """One sweep that opens the study's storage at the same moment as the other launch, its output in ``log``."""

    def open_together(url):
        sweep.open_storage = studies.open_storage  # the workers' later opens go their own pace
        barrier.wait()
        return studies.open_storage(url)

    sweep.open_storage = open_together
    with open(log, "w") as handle, contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
        sweep.main(["--out", str(out), "--variants", "t", "a", "--seeds", "1", "--", *TINY])


def test_two_sweeps_started_together_on_a_fresh_folder_share_the_study(tmp_path):
    out = tmp_path / "sweep"
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    logs = [tmp_path / f"launch-{i}.log" for i in range(2)]
    launches = [context.Process(target=_launch, args=(out, barrier, log)) for log in logs]
    for launch in launches:
        launch.start()
    for launch in launches:
        launch.join(timeout=600)
    output = "".join(log.read_text() for log in logs)
    assert [launch.exitcode for launch in launches] == [0, 0], output
    assert Counter(TRAINED.findall(output)) == {("t", "1"): 1, ("a", "1"): 1}
    complete = [t for t in _study(out).trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(sweep.cell_of(t) for t in complete) == [("a", 1), ("t", 1)]
