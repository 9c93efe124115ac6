"""What the sweep and the tuner share: optuna (an optional extra), the study's storage, worker
processes that pull trials from it, and one training run from the trainer's flags.

Nothing here imports optuna at module level: ``import ada2i_fast`` never needs it, and a command that
does says how to install it in one line.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import socket
import sys
import warnings
from pathlib import Path
from typing import Callable

import torch

from .devices import check_device, default_device
from .run_setup import new_run
from .train import build_parser

OPTUNA_MISSING = 'error: this command needs optuna; install it with: pip install "ada2i-fast[sweep]"'


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
                        "shares the work (default: sqlite:///OUT/study.db)")
    parser.add_argument("--study-name", default=default_study, help=f"(default: {default_study})")
    parser.add_argument("--workers", type=_at_least_one, default=1,
                        help="parallel training processes on this machine (default: 1)")


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def storage_url(args: argparse.Namespace) -> str:
    return args.storage or f"sqlite:///{Path(args.out) / 'study.db'}"


def open_storage(url: str):
    """The RDB storage at ``url``, with heartbeats so that a trial whose process died is marked failed.

    optuna hands a queued trial to one worker by reading its state and then writing RUNNING; on
    PostgreSQL and MySQL the read locks the row, but SQLite ignores that lock, so two processes can
    take the same trial. Starting every SQLite transaction with BEGIN IMMEDIATE makes the read and the
    write one atomic step.
    """
    optuna = require_optuna()
    sqlite = url.startswith("sqlite")
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats
        storage = optuna.storages.RDBStorage(
            url, engine_kwargs={"connect_args": {"timeout": 120}} if sqlite else None,
            heartbeat_interval=30, grace_period=300,
        )
    if sqlite:
        _begin_immediate(storage.engine)
    return storage


def _begin_immediate(engine) -> None:
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection, connection_record):
        dbapi_connection.isolation_level = None  # pysqlite's own BEGIN would be deferred

    @event.listens_for(engine, "begin")
    def _begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners existed


_SETTING_NAMES = {"trainer_flags": "trainer flags", "full": "full model's modalities"}


def start_study(storage, name: str, trainer_flags: list[str], **settings):
    """Create the study ``name`` or join it; a study records the trainer flags (and the other
    ``settings``) it was started with and refuses others, so every trial of it trains the same way."""
    optuna = require_optuna()
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
    for key, value in dict(settings, trainer_flags=trainer_flags).items():
        recorded = study.user_attrs.get(key)
        if recorded is None:
            study.set_user_attr(key, value)
        elif recorded != value:
            shown = " ".join(recorded) if key == "trainer_flags" else recorded
            raise SystemExit(f"error: study {name!r} was started with the {_SETTING_NAMES.get(key, key)} "
                             f"{shown or '(none)'}; give those, or choose another --study-name or --out")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return study


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


def check_trainer_flags(trainer_argv: list[str], *, command: str, reserved: tuple[str, ...]) -> argparse.Namespace:
    """The trainer's flags parsed as ``python -m ada2i_fast.train`` would, refusing those ``command`` sets itself."""
    parser = build_parser()
    parser.prog = f"{command} ... --"
    args = parser.parse_args(trainer_argv)
    given = [name for name in reserved if getattr(args, name) != parser.get_default(name)]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise SystemExit(f"error: {command} sets {flags} for each trial itself; drop it from the trainer flags")
    if args.data and not Path(args.data).exists():
        raise SystemExit(f"error: --data {args.data}: no such file or folder")
    try:
        check_device(args.device or default_device())
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    return args


def train_run(trainer_argv: list[str], out: Path, on_epoch_end: Callable[[dict], None] | None = None) -> dict:
    """Train as ``python -m ada2i_fast.train TRAINER_ARGV --out OUT`` would, replacing a run left in
    ``out`` (a failed trial's); what it prints goes to ``out/train.log``. Returns the run's summary.
    A run stopped by SIGINT or SIGTERM raises ``trainer.RunInterrupted``, a KeyboardInterrupt, which
    optuna records as a failed trial before it stops the worker."""
    args = build_parser().parse_args([*trainer_argv, "--out", str(out), "--quiet", "--overwrite"])
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "train.log", "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        return new_run(args, corpora=_corpora).run(on_epoch_end)


_corpora: dict = {}  # the corpora a worker process has opened, by (dataset, data, seed, size, task, family)


def where(path: Path) -> str:
    """A run folder as another machine's report should name it."""
    return f"{socket.gethostname()}:{Path(path).resolve()}"


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
