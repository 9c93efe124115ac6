"""What the sweep and the tuner share: optuna (an optional extra), the study's storage, worker
processes that pull trials from it, and one training run from the trainer's flags.

Nothing here imports optuna at module level: ``import ada2i_fast`` never needs it, and a command that
does says how to install it in one line.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import multiprocessing
import os
import socket
import sqlite3
import sys
import warnings
from pathlib import Path
from typing import Callable

import torch

from ..config_file import NOT_KEYS, RecipeFile, as_flags, parse_over_recipe, recipe_yaml
from ..devices import check_device, default_device
from ..training.run_folder import MODEL_FOLDER, remove
from ..training.run_setup import build_parser, flag_name, new_run, recipe_from_args, resolved_flags

OPTUNA_MISSING = 'error: this command needs optuna; install it with: pip install "ada2i-fast[sweep]"'


class StudyStorageError(ValueError):
    """A study's storage cannot be opened: a bad URL, a damaged database, or another program's database."""


def require_optuna():
    """The optuna module, quiet but for warnings; without it, exit with one line saying how to get it."""
    try:
        import optuna
    except ImportError:
        raise SystemExit(OPTUNA_MISSING) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def add_study_flags(parser: argparse.ArgumentParser, *, default_out: str, default_study: str) -> None:
    parser.add_argument("--out", default=default_out,
                        help=f"folder of the trials' runs, the results and the default study database (default: {default_out})")
    parser.add_argument("--storage", help="SQLAlchemy URL of the study's database; every machine that names the same one "
                        "shares the work; a SQLite file's folder must exist (default: sqlite:///OUT/study.db)")
    parser.add_argument("--study-name", default=default_study,
                        help=f"the study's name in the storage; one storage can hold several; a study records its "
                        "trainer flags and trial settings and refuses a launch with others (default: "
                        f"{default_study})")
    parser.add_argument("--workers", type=_at_least_one, default=1,
                        help="parallel training processes on this machine (default: 1)")
    parser.add_argument("--keep-weights", action="store_true",
                        help="keep each trial's model/ (about 75 MB at the meld preset; python -m ada2i_fast.analyze "
                        "robustness needs them); without it a trial keeps its metrics, summary and pictures only")


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def storage_url(args: argparse.Namespace) -> str:
    return args.storage or f"sqlite:///{Path(args.out) / 'study.db'}"


def new_or_existing_storage_url(args: argparse.Namespace) -> str:
    """:func:`storage_url`, with ``--out`` made when the study's database is its default one there
    (an explicit SQLite ``--storage`` must name an existing folder: see :func:`open_storage`)."""
    if args.storage is None:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    return storage_url(args)


def open_storage(url: str):
    """The RDB storage at ``url``, with heartbeats so that a trial whose process died is marked failed.

    optuna hands a queued trial to one worker by reading its state and then writing RUNNING; on
    PostgreSQL and MySQL the read locks the row, but SQLite ignores that lock, so two processes can
    take the same trial. Starting every SQLite transaction with BEGIN IMMEDIATE makes the read and the
    write one atomic step.
    """
    optuna = require_optuna()
    sqlite = url.startswith("sqlite")
    with _storage_errors(url):
        database = _sqlite_file(url)
        if database is not None and not database.parent.is_dir():
            raise StudyStorageError(f"study storage {url}: its folder {database.parent} does not exist (no folder is "
                                    "made for it); create it, or choose another --storage")
        with _creation_lock(database), warnings.catch_warnings():
            if database is not None:
                _check_study_database(database)
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats
            storage = optuna.storages.RDBStorage(
                url, engine_kwargs={"connect_args": {"timeout": 120}} if sqlite else None,
                heartbeat_interval=30, grace_period=300,
            )
    if sqlite:
        _begin_immediate(storage.engine)
    return storage


@contextlib.contextmanager
def _storage_errors(url: str):
    """What opening the storage at ``url`` raises, as one :class:`StudyStorageError` naming it."""
    import sqlalchemy.exc

    optuna = require_optuna()
    try:
        yield
    # ImportError: no driver for the URL's database; RuntimeError: tables of an incompatible optuna version.
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError, ImportError, RuntimeError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise StudyStorageError(f"cannot open the study storage {url} ({reason}); check --storage or --out") from error


def _sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite ``url``; None for another database or an in-memory one."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


@contextlib.contextmanager
def _creation_lock(database: Path | None):
    """Held while optuna creates its tables in the SQLite file ``database`` (nothing for other
    storages): two launches creating them at once would both write them, and one would fail."""
    if database is None:
        yield
        return
    with open(database.with_name(database.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def _check_study_database(path: Path) -> None:
    """Refuse a file that is not an (empty or) optuna SQLite database: optuna would add its tables to
    another program's database."""
    if not path.is_file():
        return
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=120)) as db:
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as error:
        raise StudyStorageError(f"study database {path} cannot be read as a SQLite database ({error}); "
                                "choose another --out or --storage") from None
    if tables and "version_info" not in tables:
        raise StudyStorageError(f"study database {path} is another program's SQLite database (tables "
                                f"{', '.join(sorted(tables))}); choose another --out or --storage")


def _begin_immediate(engine) -> None:
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection, connection_record):
        dbapi_connection.isolation_level = None  # pysqlite's own BEGIN would be deferred

    @event.listens_for(engine, "begin")
    def _begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners existed


_SETTING_NAMES = {"trainer_flags": "trainer flags", "full": "full model's modalities",
                  "sampler_seed": "--sampler-seed", "prune_after": "--prune-after", "warmup_epochs": "--warmup-epochs",
                  "search_space": "search space"}
EXTEND_FLAG = "--extend-study"


def start_study(storage, name: str, trainer_flags: list[str], *, extendable: tuple[str, ...] = (),
                extend: bool = False, **settings):
    """Create the study ``name`` or join it; a study records the trainer flags and the other
    ``settings`` (JSON values) it was started with and refuses others, naming the first difference,
    so that every trial of it trains the same way and another study's database is never merged into
    it. The settings named in ``extendable`` are lists compared as sets; with ``extend`` they grow
    instead (the study records the union). Trials left running by dead workers are marked failed, so
    that their work is taken up again."""
    optuna = require_optuna()
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
    for key, value in dict(trainer_flags=trainer_flags, **settings).items():
        recorded = study.user_attrs.get(key)
        if recorded is None:  # a new study, or one started before this setting was recorded
            study.set_user_attr(key, value)
        elif key in extendable and extend:
            if not set(value) <= set(recorded):
                study.set_user_attr(key, _union_in_order(recorded, value))
        elif not _same_setting(key, recorded, value, extendable):
            raise SystemExit(_other_setting_message(name, key, recorded, value, key in extendable))
    orphaned = fail_orphaned_trials(study)
    if orphaned:
        print(f"trial(s) {', '.join(map(str, orphaned))}: their worker on this host is gone; marked failed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # the dead workers of other hosts, once their heartbeat is stale
    return study


def _union_in_order(recorded: list, given: list) -> list:
    """The values of ``recorded``, then those of ``given`` it lacks."""
    return list(dict.fromkeys([*recorded, *given]))


def _same_setting(key: str, recorded, given, extendable: tuple[str, ...]) -> bool:
    if key == "trainer_flags":
        return same_trainer_recipe(recorded, given)
    if key in extendable:
        return set(recorded) == set(given)
    return recorded == given


def _other_setting_message(name: str, key: str, recorded, given, extendable: bool) -> str:
    """The one error line for a study started with ``recorded`` for setting ``key``, asked for ``given``."""
    def shown(value) -> str:
        if isinstance(value, list):
            return " ".join(map(str, value)) or "(none)"
        return value if isinstance(value, str) else json.dumps(value)

    extend = f", pass {EXTEND_FLAG} to add yours to its cells" if extendable else ""
    return (f"error: study {name!r} was started with the {_SETTING_NAMES.get(key, key)} {shown(recorded)}, not "
            f"{shown(given)}; give those{extend}, or choose another --study-name or --out")


def claimed(objective: Callable):
    """``objective`` recording first which process runs the trial (host, PID and the process's start
    time), so that a later launch on this host can tell a killed worker's trial from a running one."""

    def run(trial):
        pid = os.getpid()
        trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": pid, "started": _process_start(pid)})
        return objective(trial)

    return run


def fail_orphaned_trials(study) -> list[int]:
    """Mark failed the running trials whose worker ran on this host and is gone; returns their numbers."""
    optuna = require_optuna()
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    orphaned = [t.number for t in running if _died_here(t.user_attrs.get("worker"))]
    for number in orphaned:
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # another launch failed it first
            study.tell(number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
    return orphaned


def _died_here(worker: dict | None) -> bool:
    return worker is not None and worker["host"] == socket.gethostname() and not _is_alive(worker["pid"], worker["started"])


def _is_alive(pid: int, started: int | None) -> bool:
    """Whether process ``pid`` runs and is the one that started at ``started`` (not a later process
    that was given the same PID)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, run by another user
        pass
    now = _process_start(pid)
    return started is None or now is None or now == started


def _process_start(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks after boot (field 22 of /proc/PID/stat); None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # the fields after the command's name start at field 3


def load_finished_study(url: str, name: str):
    """The existing study ``name`` at ``url``, for a report; one error line when there is none."""
    optuna = require_optuna()
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise SystemExit(f"error: no study database at {url.removeprefix('sqlite:///')}")
    try:
        return optuna.load_study(study_name=name, storage=open_storage(url))
    except KeyError:
        raise SystemExit(f"error: no study {name!r} in {url}") from None


def split_trainer_flags(argv: list[str]) -> tuple[list[str], list[str]]:
    """``[own flags] -- [trainer flags]`` -> (own, trainer)."""
    if "--" not in argv:
        return argv, []
    at = argv.index("--")
    return argv[:at], argv[at + 1:]


def check_trainer_flags(trainer_argv: list[str], *, command: str, reserved: tuple[str, ...],
                        recipe: RecipeFile | None = None) -> tuple[argparse.Namespace, list[str]]:
    """The trainer's flags, the top-level keys of ``recipe`` (a recipe file) overridden by
    ``trainer_argv``, parsed and checked as ``python -m ada2i_fast.train`` would, refusing those
    ``command`` sets itself; returns them parsed and as the flags every trial is given."""
    parser = build_parser()
    parser.prog = f"{command} ... --"
    refused = {name: f"{command} sets it for each trial itself; drop it" for name in reserved}
    args = parse_over_recipe(parser, trainer_argv, recipe, refused=refused)
    given = [name for name in reserved if getattr(args, name) != parser.get_default(name)]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise SystemExit(f"error: {command} sets {flags} for each trial itself; drop it from the trainer flags")
    if args.config is not None or args.print_config:
        raise SystemExit(f"error: give --config and --print-config before --: {command} reads the trials' trainer "
                         "keys from the top level of its recipe file")
    if args.data and not Path(args.data).exists():
        raise SystemExit(f"error: {flag_name(args, 'data')} {args.data}: no such file or folder")
    try:
        check_device(args.device or default_device())
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    recipe_from_args(args)  # a bad value fails here, before any trial
    from_file = {dest: getattr(args, dest) for dest in args.from_file}
    return args, as_flags(parser, from_file) + list(trainer_argv)


def same_trainer_recipe(flags: list[str], other: list[str]) -> bool:
    """Whether two lists of trainer flags train the same way: every flag's resolved value is equal
    (flags in another order or spelling, or from a recipe file, are the same recipe)."""
    if flags == other:
        return True
    parser = build_parser()
    try:
        return resolved_flags(parser.parse_args(flags)) == resolved_flags(parser.parse_args(other))
    except (SystemExit, ValueError):  # flags of an older version that this one no longer takes
        return False


def print_study_recipe(command: str, section: str, parser: argparse.ArgumentParser, args: argparse.Namespace,
                       trainer_args: argparse.Namespace, reserved: tuple[str, ...]) -> dict:
    """``--print-config`` of a study: the trials' resolved trainer flags (but those the study sets) at the
    top level and the study's own flags in ``section``, as YAML on stdout; returns both."""
    trainer = {k: v for k, v in resolved_flags(trainer_args).items() if k not in reserved}
    own = {a.dest: getattr(args, a.dest) for a in parser._actions if a.option_strings and a.dest not in NOT_KEYS}
    print(recipe_yaml(build_parser(), trainer, command=command, section=section, section_values=own,
                      section_parser=parser), end="")
    return {**trainer, section: own}


def unmodulated_note(trainer_args: argparse.Namespace, consequence: str) -> str:
    """`` | why modulation never runs: consequence`` for a start line, or nothing."""
    note = recipe_from_args(trainer_args).unmodulated_note()
    return f" | {note}: {consequence}" if note else ""


def train_run(trainer_argv: list[str], out: Path, on_epoch_end: Callable[[dict], None] | None = None,
              keep_weights: bool = False) -> dict:
    """Train as ``python -m ada2i_fast.train TRAINER_ARGV --out OUT`` would, replacing a run left in
    ``out`` (a failed trial's); what it prints goes to ``out/train.log``. Returns the run's summary;
    the run's model (``model/``) is removed at the end unless ``keep_weights``.
    A run stopped by SIGINT or SIGTERM raises ``trainer.RunInterrupted``, a KeyboardInterrupt, which
    optuna records as a failed trial before it stops the worker."""
    args = build_parser().parse_args([*trainer_argv, "--out", str(out), "--quiet", "--overwrite"])
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "train.log", "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        summary = new_run(args, corpora=_corpora).run(on_epoch_end)
    if not keep_weights:
        remove(out / MODEL_FOLDER)
    return summary


_corpora: dict = {}  # the corpora a worker process has opened, by (dataset, data, seed, size, task, family)


def record_run_dir(trial, run_dir: Path) -> None:
    """Which folder (and on which machine) holds the trial's run."""
    trial.set_user_attr("run_dir", str(Path(run_dir).resolve()))
    trial.set_user_attr("host", socket.gethostname())


def run_workers(work: Callable[..., None], workers: int, *work_args) -> None:
    """``work(worker_index, *work_args)`` in ``workers`` spawned processes (in this one when 1), each
    with an equal share of the CPU cores for torch."""
    threads = max(1, len(os.sched_getaffinity(0)) // workers)
    if workers == 1:
        _worker(work, 0, threads, *work_args)
        return
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker, args=(work, index, threads, *work_args)) for index in range(workers)]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:  # the workers got it too: each ends its step, marks its trial failed, exits
        for process in processes:
            process.join()
        raise SystemExit("interrupted; run the same command again to go on with the study") from None
    failed = [f"worker {index} (exit code {p.exitcode})" for index, p in enumerate(processes) if p.exitcode]
    if failed:
        raise SystemExit(f"error: {', '.join(failed)} stopped early; run the same command again to finish the study")


def _worker(work: Callable[..., None], index: int, threads: int, *work_args) -> None:
    torch.set_num_threads(threads)
    try:
        work(index, *work_args)
    except KeyboardInterrupt:
        print(f"worker {index}: interrupted; its trial is marked failed", file=sys.stderr)
        raise SystemExit(130) from None
