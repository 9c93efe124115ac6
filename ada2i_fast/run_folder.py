"""A training run's folder: what it holds, refusing to mix two runs, and the state a run resumes from.

    metrics.jsonl  one strict-JSON line per finished epoch
    steps.jsonl    with --trace: one line per step (scores, ratios, coefficients, gradient and update norms)
    best.pt        the best-dev model (``checkpoint.save_checkpoint``)
    last.pt        everything needed to continue bit-identically: weights, optimizer, scheduler,
                   epoch and step, early-stopping state, RNG states, configs, data identity
    summary.json, training.png   written when the run ends
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path


from .atomic import atomic_open, strict_json
from .data import Corpus

RUN_FILES = ("metrics.jsonl", "steps.jsonl", "best.pt", "last.pt", "summary.json", "training.png")


def prepare_out(out: Path, *, overwrite: bool) -> None:
    """Make ``out`` ready for a new run; refuse a file, or a folder that already holds a run."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    present = [name for name in RUN_FILES if (out / name).exists()]
    if present and not overwrite:
        raise ValueError(
            f"{out} already holds a run ({', '.join(present)}); continue it with --resume {out}, "
            f"replace it with --overwrite, or choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    for name in present:
        (out / name).unlink()
    remove_torn_writes(out)


def remove_torn_writes(out: Path) -> None:
    """Delete the temp files of writes that a kill (SIGKILL, power loss) cut short; the files they
    were to replace are intact (``atomic.atomic_open``)."""
    for name in RUN_FILES:
        for torn in out.glob(f".{name}.*.tmp"):
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
    """The metrics of the first ``epochs`` epochs, rewriting ``metrics.jsonl`` (and ``steps.jsonl``)
    without any later line (a run stopped between writing an epoch's lines and its state leaves some)."""
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    history = [json.loads(line) for line in lines[:epochs]]
    if len(history) != epochs:
        raise ValueError(f"{path}: {len(history)} epoch lines where the saved state has {epochs}")
    _rewrite(path, history)
    steps = run_dir / "steps.jsonl"
    if steps.exists():
        _rewrite(steps, [row for row in map(json.loads, steps.read_text().splitlines()) if row["epoch"] <= epochs])
    return history


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
