"""Pictures of finished training runs: ``python -m ada2i_fast.report RUN_DIR [RUN_DIR ...] [--out DIR]``.

Reads each run folder's ``metrics.jsonl`` and ``summary.json`` (written by ``train``) and writes:

    balance.png      ρ_m and k_m per modality over epochs, runs overlaid (runs of one modality have
                     nothing to balance: they are left out, and without another run there is no balance.png)
    dev_f1.png       each modality's own dev weighted F1 against the fused model's, runs overlaid
    confusion.png    the test confusion matrix of the best-dev state (one run), or
    confusion-<run>.png  one per run when there are several

The best dev epoch is starred on every curve. ``--out`` defaults to the run folder (one run) or a
``report`` folder beside the first run folder (several).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from .cli import user_errors_as_one_line
from .json_files import read_json_object
from .plots import FORMATS, RunCurves, modalities_of, plot_balance, plot_confusion, plot_dev_f1
from .run_folder import read_records


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ada2i_fast.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="a folder written by train")
    parser.add_argument("--out", type=Path, default=None, help="where the pictures go (see above for the default)")
    parser.add_argument("--name", nargs="+", default=None, metavar="NAME",
                        help="each run's label in the pictures, one per RUN_DIR (default: the folder's name, or its "
                        "parent's when the folder is named by its date and time)")
    parser.add_argument("--format", choices=FORMATS, default="png", help="file format of the pictures (default: png)")
    return parser


@user_errors_as_one_line
def main(argv=None) -> None:
    """The CLI (returns None: console scripts exit with what ``main`` returns). A folder that is not a
    finished run ends in one ``error:`` line."""
    args = build_parser().parse_args(argv)
    if args.name is not None and len(args.name) != len(args.run_dirs):
        raise ValueError(f"--name gives {len(args.name)} label(s) for {len(args.run_dirs)} run folder(s); give one each")
    write_report(args.run_dirs, args.out or default_out(args.run_dirs), labels=args.name, suffix=f".{args.format}")


def write_report(run_dirs: list[Path], out: Path, *, labels: list[str] | None = None, suffix: str = ".png"
                 ) -> list[Path]:
    """Writes the pictures of ``run_dirs`` into ``out``; returns their paths."""
    labels = labels or run_labels(run_dirs)
    runs = [read_run(run_dir) for run_dir in run_dirs]
    curves = [RunCurves(label, history, summary["best_epoch"]) for label, (history, summary) in zip(labels, runs)]
    balanced = [run for run in curves if len(modalities_of([run])) > 1]
    written = []
    if balanced:
        written.append(out / f"balance{suffix}")
        plot_balance(balanced, written[-1])
    unbalanced = [run.label for run in curves if run not in balanced]
    if unbalanced:
        print(f"balance{suffix}: {'no picture for' if not balanced else 'leaves out'} {', '.join(unbalanced)}: a run of "
              "one modality has nothing to balance (its ρ and k are 1 throughout)")
    written.append(out / f"dev_f1{suffix}")
    plot_dev_f1(curves, written[-1])
    for label, (_, summary) in zip(labels, runs):
        name = f"confusion{suffix}" if len(runs) == 1 else f"confusion-{file_safe(label)}{suffix}"
        plot_confusion(summary["test"]["confusion_matrix"], summary["classes"], out / name,
                       title=confusion_title(label, summary))
        written.append(out / name)
    print("wrote " + ", ".join(str(path) for path in written))
    return written


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


def run_labels(run_dirs: list[Path]) -> list[str]:
    """Each folder's name (its parent's for a folder named by its date and time, as train names
    them), or as many trailing path parts as it takes to tell the folders apart."""
    readable = [_readable_name(run_dir.resolve()) for run_dir in run_dirs]
    if len(set(readable)) == len(readable):
        return readable
    parts = [run_dir.resolve().parts for run_dir in run_dirs]
    for depth in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    raise ValueError("a run folder is named twice")


def _readable_name(run_dir: Path) -> str:
    return run_dir.parent.name if re.fullmatch(r"\d{8}-\d{6}(-\d+)?", run_dir.name) else run_dir.name


def default_out(run_dirs: list[Path]) -> Path:
    return run_dirs[0] if len(run_dirs) == 1 else run_dirs[0].parent / "report"


def confusion_title(label: str, summary: dict) -> str:
    test = summary["test"]
    return (f"{label}: test split, best-dev state (epoch {summary['best_epoch']})\n"
            f"accuracy {_score(test.get('accuracy'))} · weighted F1 {_score(test.get('weighted_f1'))}")


def _score(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def file_safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-")


if __name__ == "__main__":
    main()
