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

from .atomic import atomic_open, strict_json, write_json_atomic
from .data import Corpus
from .json_files import read_json, read_json_lines, read_json_object

RUN_FILES = ("run.json", "metrics.jsonl", "steps.jsonl", "best.pt", "last.pt", "model", "summary.json", "training.png",
             "tensorboard")
MODEL_FOLDER = "model"  # the finished run's best-dev model: config.json + model.safetensors
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


def read_history(run_dir: Path, epochs: int) -> list[dict]:
    """The records of epochs 1..``epochs``, by their epoch numbers, rewriting ``metrics.jsonl`` (and
    ``steps.jsonl``) without any later epoch (a run stopped between writing an epoch's lines and
    its state leaves some); a damaged line or a missing epoch is an error naming the file."""
    path = run_dir / "metrics.jsonl"
    by_epoch = {r["epoch"]: r for r in read_records(path) if r["epoch"] <= epochs}
    missing = [epoch for epoch in range(1, epochs + 1) if epoch not in by_epoch]
    if missing:
        raise ValueError(f"{path}: no line for epoch {missing[0]} although the saved state has {epochs} epoch(s)")
    history = [by_epoch[epoch] for epoch in range(1, epochs + 1)]
    _rewrite(path, history)
    steps = run_dir / "steps.jsonl"
    if steps.exists():
        _rewrite(steps, [row for row in read_records(steps) if row["epoch"] <= epochs])
    return history


def read_records(path: Path) -> list[dict]:
    """The JSON objects of a ``.jsonl`` file of a run, each with an integer ``epoch``, or a ``ValueError``
    naming the file and line."""
    records = []
    for n, record in read_json_lines(path) if path.exists() else []:
        if not isinstance(record, dict) or not isinstance(record.get("epoch"), int) or record["epoch"] < 1:
            raise ValueError(f"{path}, line {n}: not an epoch record (an object with a positive integer 'epoch')")
        records.append(record)
    return records


def _rewrite(path: Path, records: list[dict]) -> None:
    with atomic_open(path) as handle:
        handle.write("".join(strict_json(record) + "\n" for record in records).encode())


def write_step_trace(run_dir: Path, epoch: int, steps: list[dict], modalities: str) -> None:
    """Append epoch ``epoch``'s traced steps (``train_step(trace=True)`` values) to ``steps.jsonl``."""
    names = {"ratios": "ratio", "coefficients": "coefficient"}
    values = [{k: v.tolist() for k, v in step.items()} for step in steps]
    lines = [
        strict_json(dict(epoch=epoch, step=n, skipped=row.pop("skipped"),
                         **{names.get(k, k): dict(zip(modalities, v)) for k, v in row.items()}))
        for n, row in enumerate(values, 1)
    ]
    with open(run_dir / "steps.jsonl", "a") as handle:
        handle.write("".join(line + "\n" for line in lines))
