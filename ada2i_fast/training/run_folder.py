"""A training run's folder: what it holds, one run at a time (a lock for the life of a run), and
refusing to mix two runs.

    run.json       the run's identity: its id, when it started, its data and configs
    metrics.jsonl  one strict-JSON line per finished epoch
    steps.jsonl    with --trace: one line per step (scores, ratios, coefficients, gradient and update norms)
    best.pt        the best-dev model (``checkpoint.save_checkpoint``)
    last.pt        everything needed to continue bit-identically: weights, optimizer, scheduler,
                   epoch and step, early-stopping state, RNG states, configs, data identity
    summary.json, training.png   written when the run ends
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import socket
import time
from pathlib import Path

from ..atomic import write_json_atomic
from ..checkpointing.json_files import read_json, read_json_lines, read_json_object
from ..data import Corpus

MODEL_FOLDER = "model"  # the finished run's best-dev model: config.json + model.safetensors
METRICS_FILE, STEPS_FILE, TENSORBOARD_FOLDER = "metrics.jsonl", "steps.jsonl", "tensorboard"  # training.metric_log's
RUN_FILES = ("run.json", METRICS_FILE, STEPS_FILE, "best.pt", "last.pt", MODEL_FOLDER, "summary.json", "training.png",
             TENSORBOARD_FOLDER)
LOCK_FILE = ".lock"


class RunLock:
    """An exclusive lock on a run folder for the life of a run: ``fcntl.flock`` on ``OUT/.lock``,
    which holds the holder's PID, host and start time. The kernel releases it when the holder ends
    in any way (SIGKILL included), so a dead holder's lock file never blocks the next run."""

    def __init__(self, out: Path) -> None:
        self.path = out / LOCK_FILE
        self.handle = open(self.path, "a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "another process"
            self.handle.close()
            raise ValueError(f"{out} is in use by {holder}; wait for that run to end or stop it") from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"process {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        self.handle.flush()

    def release(self) -> None:
        if not self.handle.closed:
            self.handle.truncate(0)
            self.handle.close()  # closing the descriptor releases the lock


def prepare_out(out: Path, *, overwrite: bool) -> RunLock:
    """Make ``out`` ready for a new run and lock it; refuse a file, an unusable path, a folder in use
    or one that already holds a run."""
    if out.is_symlink() and not out.exists():
        raise ValueError(f"--out {out} is a symbolic link to nothing ({os.readlink(out)})")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = RunLock(out)
    except (OSError, ValueError) as error:
        if isinstance(error, ValueError):
            raise
        raise ValueError(f"--out {out}: cannot use this folder ({error.strerror or error})") from None
    present = [name for name in RUN_FILES if (out / name).exists()]
    if present and not overwrite:
        lock.release()
        raise ValueError(f"{out} already holds a run ({', '.join(present)}); {what_can_be_done(out)}")
    for name in present:
        remove(out / name)
    remove_torn_writes(out)
    return lock


def what_can_be_done(out: Path) -> str:
    """What the run in ``out`` is and the flags that work on it: ``--resume`` where its ``last.pt`` can
    continue it, ``--overwrite`` or another ``--out`` always."""
    replace = "replace it with --overwrite or choose another --out"
    if not (out / "last.pt").is_file():
        if (out / "summary.json").is_file():
            return f"it has finished and its last.pt was removed, so it cannot be continued: {replace}"
        return f"it holds no state to continue from (no last.pt): {replace}"
    if not (out / "summary.json").is_file():
        return f"it stopped before its end: continue it with --resume {out}, or {replace}"
    summary = _json_object(out / "summary.json")
    recipe = summary.get("train_config")
    ran, planned = summary.get("epochs_run"), recipe.get("epochs") if isinstance(recipe, dict) else None
    if not isinstance(ran, int) or not isinstance(planned, int):
        return f"its summary.json is damaged: {replace}"
    if ran < planned:
        return (f"it stopped early after epoch {ran} (no better dev F1 for its --patience epochs), so more epochs "
                f"would not continue it: {replace}")
    return (f"it has finished its {ran} epoch(s) and kept its last.pt: extend it with --resume {out} --epochs N "
            f"(N > {ran}), or {replace}")


def _json_object(path: Path) -> dict:
    """The JSON object in ``path``; an empty dict for a damaged file."""
    try:
        return read_json_object(path)
    except ValueError:
        return {}


def remove(path: Path) -> None:
    """Delete a run's file or folder if it exists."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def size_of(path: Path) -> int:
    """Bytes in a file, or in every file of a folder."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def run_files(out: Path) -> list[Path]:
    """The run's files and folders present in ``out``, in :data:`RUN_FILES` order."""
    return [out / name for name in RUN_FILES if (out / name).exists()]


def write_run_identity(out: Path, identity: dict) -> None:
    """``run.json``: which run the folder holds (its files must all belong to it)."""
    write_json_atomic(out / "run.json", identity)


def read_run_identity(out: Path) -> dict | None:
    """The folder's ``run.json``, or None for a folder written before run ids existed."""
    path = out / "run.json"
    if not path.is_file():
        return None
    try:
        identity = read_json(path)
    except ValueError as error:
        raise ValueError(f"{error}; the folder's run cannot be identified") from None
    if not isinstance(identity, dict) or not isinstance(identity.get("run_id"), str):
        raise ValueError(f"{path}: damaged (no run_id); the folder's run cannot be identified")
    return identity


def remove_torn_writes(out: Path) -> None:
    """Delete the temp files of writes that a kill (SIGKILL, power loss) cut short; the files they
    were to replace are intact (``atomic.atomic_open``)."""
    for name in RUN_FILES:
        for torn in out.glob(f".{name}.*.tmp"):
            torn.unlink()
    for torn in (out / MODEL_FOLDER).glob(".*.tmp"):
        torn.unlink()


def fresh_run_dir(parent: Path) -> Path:
    """A folder under ``parent`` named by the local date and time, unused so far."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate, n = parent / stamp, 1
    while candidate.exists():
        n += 1
        candidate = parent / f"{stamp}-{n}"
    return candidate


def data_identity(corpus: Corpus) -> str:
    """A fingerprint of the corpus's content (ids, lengths, labels, features, classes)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps([corpus.name, list(corpus.classes)]).encode())
    for name, split in sorted(corpus.splits.items()):
        digest.update(json.dumps([name, list(split.dialogue_ids)]).encode())
        for array in (split.offsets, split.labels, *(split.features[m] for m in sorted(split.features))):
            digest.update(memoryview(array).cast("B") if array.flags.c_contiguous else array.tobytes())
    return digest.hexdigest()


def read_run(run_dir: Path) -> tuple[list[dict], dict]:
    """The epoch records of ``metrics.jsonl`` and the ``summary.json`` of a finished run, or a
    ``ValueError`` naming the folder and what it lacks."""
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir}: no such run folder")
    metrics, summary_path = run_dir / "metrics.jsonl", run_dir / "summary.json"
    if not metrics.is_file():
        raise ValueError(f"{run_dir}: no metrics.jsonl; not a training run folder (python -m ada2i_fast.train --out DIR)")
    if not summary_path.is_file():
        raise ValueError(f"{run_dir}: no summary.json; the run has not finished (train writes it at the end)")
    history = read_records(metrics)
    if not history:
        raise ValueError(f"{metrics}: no epoch records")
    summary = read_json_object(summary_path)
    missing = [key for key in ("best_epoch", "classes", "test") if key not in summary]
    if isinstance(summary.get("test"), dict) and "confusion_matrix" not in summary["test"]:
        missing.append("test.confusion_matrix")
    if missing:
        raise ValueError(f"{summary_path}: lacks {', '.join(missing)} (written by an older ada2i_fast?)")
    _check_types(summary, SUMMARY_TYPES, summary_path)
    _check_types(summary["test"], TEST_TYPES, summary_path, "test.")
    return history, summary


NUMBER_OR_NULL = (int, float, type(None))
# What the readers of summary.json (report, analyze) take from it, and of which JSON type.
SUMMARY_TYPES = {"best_epoch": int, "classes": list, "test": dict, "best_dev_weighted_f1": NUMBER_OR_NULL,
                 "config": dict, "train_config": dict, "epochs_run": int}
TEST_TYPES = {"confusion_matrix": list, "weighted_f1": NUMBER_OR_NULL, "accuracy": NUMBER_OR_NULL,
              "unimodal_weighted_f1": dict}


def _check_types(values: dict, types: dict, path: Path, prefix: str = "") -> None:
    for key, kind in types.items():
        if key in values and (not isinstance(values[key], kind) or isinstance(values[key], bool)):
            raise ValueError(f"{path}: {prefix}{key} has the wrong type ({values[key]!r:.60}); the file is damaged")


def read_records(path: Path) -> list[dict]:
    """The JSON objects of a ``.jsonl`` file of a run, each with an integer ``epoch``, or a ``ValueError``
    naming the file and line."""
    records = []
    for n, record in read_json_lines(path) if path.exists() else []:
        if not isinstance(record, dict) or not isinstance(record.get("epoch"), int) or record["epoch"] < 1:
            raise ValueError(f"{path}, line {n}: not an epoch record (an object with a positive integer 'epoch')")
        records.append(record)
    return records
