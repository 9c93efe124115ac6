"""The balance study: ``python -m ada2i_fast.sweep [--ablations] [--seeds ...] [--workers N] -- TRAINER FLAGS``.

Ada2I claims that the weak modalities contribute, so that tri-modal fusion beats every pair. The
sweep trains each subset of the full model's modalities (``--modalities``, default atv: atv, at,
av, tv, a, t, v) and, with ``--ablations``, the full model without AFW, AMW, gradient modulation or
gradient noise and with the authors' public code's semantics, all with the same seeds; then it
reports mean ± std over seeds of the weighted F1 and each variant's gap to the full model, as a
Markdown table, a JSON file and a chart.

Each (variant, seed) cell is one queued trial of an optuna study in an RDB storage. Worker
processes (``--workers``, here or on any machine naming the same ``--storage``) take queued trials
one at a time, train each with ``studies.study.train_run`` into its own run folder, and store its F1 scores as
trial attributes; running the command again queues only the cells that have not completed, and
``--report-only`` rebuilds the report from the study alone. The study records its variants and seeds
(``studies.study.start_study``): a launch with others is refused unless ``--extend-study`` adds them.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

from .atomic import atomic_open, write_json_atomic
from .cli import add_recipe_flags, console_script, user_errors_as_one_line
from .config_file import parse_with_recipe
from .modalities import ORDER, in_order
from .studies.plots import plot_variant_gaps
from .studies.stats import mean_std, pm, verdict
from .studies.study import (
    EXTEND_FLAG, add_study_flags, check_trainer_flags, claimed, load_finished_study, new_or_existing_storage_url,
    open_storage, print_study_recipe, record_run_dir, require_optuna, run_workers, split_trainer_flags, start_study,
    storage_url, train_run, unmodulated_note,
)
from .studies.variants import (
    ABLATIONS, CHANGED, FULL, VARIANTS, describe, kind_of, paired_gaps, subsets, variant_flags,
)

DEFAULT_SEEDS = (12, 13, 14)
# Flags the sweep sets for every trial.
RESERVED = ("out", "resume", "overwrite", "seed", "modalities")
COMMAND = "python -m ada2i_fast.sweep"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ada2i_fast.sweep",
        usage="%(prog)s [options] [-- TRAINER FLAGS]",
        description="Train every modality subset (and the ablations) for the same seeds and report the gaps "
        "to the full model. Flags after -- go to each trial's trainer (python -m ada2i_fast.train --help); "
        "--seed, --modalities and --out are set per trial.",
        epilog="examples:\n"
        "  python -m ada2i_fast.sweep --seeds 12 13 14 --workers 2 --ablations -- --dataset meld --size 0.3 --epochs 6\n"
        "  python -m ada2i_fast.sweep --report-only          (the table and chart again, from the study)\n"
        "  python -m ada2i_fast.sweep --config study.yaml     (trainer keys at the top level, the sweep's under sweep:)\n"
        "several machines: run the same command on each with --storage postgresql://HOST/DB (any SQLAlchemy URL);\n"
        "they take the queued cells one at a time, and running it again queues only the cells not yet completed.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS),
                        help=f"each variant trains once per seed (default: {' '.join(map(str, DEFAULT_SEEDS))})")
    parser.add_argument("--modalities", default=FULL,
                        help=f"the full model's modalities; the subsets and ablations are of these (default: {FULL}; "
                        "t for a text-only corpus)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=None, metavar="VARIANT",
                        help=f"among {', '.join(VARIANTS)} (default: every subset of --modalities)")
    parser.add_argument("--ablations", action="store_true", help="also " + ", ".join(ABLATIONS))
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from the study; train nothing")
    parser.add_argument(EXTEND_FLAG, action="store_true",
                        help="add these --variants and --seeds to an existing study's cells (without it a study "
                        "refuses variants or seeds other than those it was started with)")
    parser.add_argument("--report", metavar="PREFIX",
                        help="write PREFIX.md, PREFIX.png and PREFIX.json (default: OUT/STUDY_NAME)")
    parser.add_argument("--name", help="what the chart's title calls the study, e.g. the corpus (default: the study name)")
    add_study_flags(parser, default_out="runs/sweep", default_study="modality-sweep")
    add_recipe_flags(parser, "the trials' trainer flags (the top-level keys) and the sweep's own (under sweep:)")
    return parser


@user_errors_as_one_line
def main(argv=None) -> dict:
    own, trainer_argv = split_trainer_flags(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    args, recipe = parse_with_recipe(parser, own, section="sweep")
    if args.report_only and not args.print_config:
        if trainer_argv:
            raise SystemExit("error: --report-only trains nothing; drop the trainer flags")
        url = storage_url(args)
        study = load_finished_study(url, args.study_name)
    else:
        trainer_args, trainer_flags = check_trainer_flags(trainer_argv, command=COMMAND, reserved=RESERVED,
                                                          recipe=recipe)
        full = checked_modalities(args.modalities)
        chosen = list(subsets(full) if args.variants is None else args.variants)
        outside = [v for v in chosen if v not in CHANGED and not set(v) <= set(full)]
        if outside:
            raise SystemExit(f"error: --variants {' '.join(outside)}: not a subset of --modalities {full}")
        if args.print_config:
            return print_study_recipe(COMMAND, "sweep", parser, args, trainer_args, RESERVED)
        require_optuna()
        url = new_or_existing_storage_url(args)
        variants = list(dict.fromkeys(chosen + (list(ABLATIONS) if args.ablations else [])))
        study = start_study(open_storage(url), args.study_name, trainer_flags, full=full, variants=variants,
                            seeds=sorted(set(args.seeds)), extendable=("variants", "seeds"), extend=args.extend_study)
        queued = queue_missing_cells(study, [(v, s) for v in variants for s in args.seeds])
        print(f"study {args.study_name!r} in {url}: {queued} cells queued; {args.workers} worker(s) training into "
              f"{args.out}" + unmodulated_note(trainer_args, "no trial modulates, so the modulation ablations train "
                                               "like the full model and analyze cannot summarise modulated epochs"))
        run_workers(pull_trials, args.workers, url, args.study_name, Path(args.out), args.keep_weights)
    report = sweep_report(study)
    prefix = Path(args.report) if args.report else Path(args.out) / args.study_name
    write_report(report, prefix, args.name)
    print(report["markdown"])
    print(f"wrote {prefix}.md, {prefix}.png, {prefix}.json")
    return report


# --- the queue and the workers -------------------------------------------------------------------

def checked_modalities(letters: str) -> str:
    """``letters`` as a full model's modality set in the table's order, or one error line."""
    if not letters or set(letters) - set(ORDER) or len(set(letters)) != len(letters):
        raise SystemExit(f"error: --modalities {letters!r}: expected distinct letters among {ORDER}")
    return in_order(letters)


def full_of(study) -> str:
    """The full model's modalities of ``study`` (studies made before the flag existed: atv)."""
    return study.user_attrs.get("full", FULL)


def cell_of(trial) -> tuple[str, int] | None:
    """The (variant, seed) a trial stands for, in any state. Kept in user attributes rather than as optuna
    parameters, whose choices could not grow with VARIANTS in a study an older version started."""
    attrs = trial.user_attrs
    return (attrs["variant"], attrs["seed"]) if "variant" in attrs else None


def _live_trials(study) -> list:
    """The trials that have not failed: queued, running or complete."""
    state = require_optuna().trial.TrialState
    return study.get_trials(deepcopy=False, states=(state.WAITING, state.RUNNING, state.COMPLETE))


def queue_missing_cells(study, cells: list[tuple[str, int]]) -> int:
    """Queue the cells that no trial has completed, is running or waits for; returns how many."""
    taken = {cell_of(t) for t in _live_trials(study)}
    missing = [cell for cell in cells if cell not in taken]
    for variant, seed in missing:
        study.enqueue_trial({}, user_attrs={"variant": variant, "seed": seed})
    return len(missing)


def pull_trials(worker: int, url: str, study_name: str, out: Path, keep_weights: bool) -> None:
    """One worker: train queued cells until the queue is empty."""
    optuna = require_optuna()
    study = optuna.load_study(study_name=study_name, storage=open_storage(url))
    if not _queue_is_empty(study):
        study.optimize(claimed(functools.partial(train_cell, out=out, worker=worker, keep_weights=keep_weights)),
                       callbacks=[_stop_when_queue_is_empty], catch=(Exception,))


def _queue_is_empty(study) -> bool:
    waiting = require_optuna().trial.TrialState.WAITING
    return not study.get_trials(deepcopy=False, states=(waiting,))


def _stop_when_queue_is_empty(study, trial) -> None:
    if _queue_is_empty(study):
        study.stop()


def train_cell(trial, *, out: Path, worker: int, keep_weights: bool = False) -> float:
    """The objective: train the trial's (variant, seed) cell; its value is the best dev weighted F1."""
    optuna, study = require_optuna(), trial.study
    if cell_of(trial) is None:  # another worker took the last queued cell between our check and our ask
        study.stop()
        raise optuna.TrialPruned("no queued cell was left")
    variant, seed = cell_of(trial)
    full = full_of(study)
    first = _first_live_trial(study, (variant, seed))
    if first < trial.number:  # two launches queued the same cell; the earlier trial trains it
        trial.set_user_attr("duplicate_of", first)
        raise optuna.TrialPruned(f"trial {first} trains this cell")
    run_dir = out / study.study_name / variant / f"seed-{seed}"
    record_run_dir(trial, run_dir)
    start = time.perf_counter()
    try:
        summary = train_run([*study.user_attrs["trainer_flags"], *variant_flags(variant, full), "--seed", str(seed)],
                            run_dir, keep_weights=keep_weights)
    except Exception as error:
        trial.set_user_attr("error", f"{type(error).__name__}: {error}")
        print(f"worker {worker}: {variant} seed {seed} failed: {error} (log: {run_dir / 'train.log'})", flush=True)
        raise
    seconds = time.perf_counter() - start
    scores = dict(dev_weighted_f1=summary["best_dev_weighted_f1"], test_weighted_f1=summary["test"]["weighted_f1"],
                  best_epoch=summary["best_epoch"], seconds=round(seconds, 1))
    for name, value in scores.items():
        trial.set_user_attr(name, value)
    print(f"worker {worker}: {variant:>13} seed {seed}: dev weighted F1 {scores['dev_weighted_f1']:.4f}, "
          f"test {scores['test_weighted_f1']:.4f} ({seconds:.0f} s)", flush=True)
    return scores["dev_weighted_f1"]


def _first_live_trial(study, cell: tuple[str, int]) -> int:
    """The lowest number among the trials of ``cell`` that have not failed."""
    return min(t.number for t in _live_trials(study) if cell_of(t) == cell)


# --- the report ----------------------------------------------------------------------------------

_SCORES = ("dev_weighted_f1", "test_weighted_f1", "best_epoch", "run_dir")


def completed_cells(study) -> dict[tuple[str, int], dict]:
    """Each cell's scores, from the first completed trial that trained it."""
    optuna = require_optuna()
    cells = {}
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):  # by number
        cell = cell_of(trial)
        if cell is not None and cell not in cells:
            cells[cell] = dict(variant=cell[0], seed=cell[1], trial=trial.number,
                               **{k: trial.user_attrs[k] for k in _SCORES})
    return cells


def sweep_report(study) -> dict:
    """Per variant: mean ± std over seeds of dev and test weighted F1, and the gap to the full model
    paired by seed; the Markdown table of it; and the cells asked for that never completed."""
    cells = completed_cells(study)
    asked = {cell_of(t) for t in study.get_trials(deepcopy=False)} - {None}
    variants = [v for v in VARIANTS if any(v == cell[0] for cell in asked | set(cells))]
    seeds = sorted({seed for _, seed in asked | set(cells)})
    full_modalities = full_of(study)
    full = {seed: cells[(full_modalities, seed)] for seed in seeds if (full_modalities, seed) in cells}
    rows = []
    for variant in variants:
        runs = [cells[(variant, seed)] for seed in seeds if (variant, seed) in cells]
        if not runs:
            continue
        row = dict(variant=variant, kind=kind_of(variant, full_modalities), description=describe(variant, full_modalities),
                   seeds=[r["seed"] for r in runs],
                   dev=mean_std(r["dev_weighted_f1"] for r in runs),
                   test=mean_std(r["test_weighted_f1"] for r in runs))
        paired = paired_gaps({r["seed"]: r["test_weighted_f1"] for r in runs},
                             {seed: cell["test_weighted_f1"] for seed, cell in full.items()})
        if variant != full_modalities and paired:
            row["gap_to_full"] = mean_std(paired)
            row["verdict"] = verdict(row["gap_to_full"])
        rows.append(row)
    missing = sorted(asked - set(cells))
    report = dict(study=study.study_name, trainer_flags=study.user_attrs.get("trainer_flags", []), seeds=seeds,
                  full=full_modalities,
                  rows=rows, missing=[dict(variant=v, seed=s) for v, s in missing],
                  cells=sorted(cells.values(), key=lambda c: (VARIANTS.index(c["variant"]), c["seed"])))
    report["markdown"] = _markdown(report)
    return report


def _markdown(report: dict) -> str:
    flags = " ".join(report["trainer_flags"]) or "(the preset's defaults)"
    lines = [
        f"# Modality sweep: {report['study']}",
        "",
        f"Trainer flags: `{flags}`; seeds {', '.join(map(str, report['seeds']))}. Weighted F1 of the best-dev "
        "epoch (test: that epoch's model), mean ± sample std over seeds. Gap: variant − full model on test, "
        "paired by seed (same seed = same synthetic corpus and initialisation), mean ± std of the per-seed "
        "differences; the full model is better (or worse) when the gap lies more than one std below (or above) zero. "
        "With one seed there is no spread and no verdict.",
        "",
        "| variant | trains | seeds | dev weighted F1 | test weighted F1 | gap to full (test) | full model vs variant |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        gap = pm(row["gap_to_full"], signed=True) if "gap_to_full" in row else "—"
        lines.append(f"| {row['variant']} | {row['description']} | {len(row['seeds'])} | {pm(row['dev'])} | "
                     f"{pm(row['test'])} | {gap} | {row.get('verdict', '—')} |")
    if report["missing"]:
        lines += ["", "Not completed (failed or still to run): "
                  + ", ".join(f"{m['variant']} seed {m['seed']}" for m in report["missing"]) + "."]
    return "\n".join(lines) + "\n"


def write_report(report: dict, prefix: Path, name: str | None = None) -> None:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(prefix.with_name(prefix.name + ".md")) as handle:
        handle.write(report["markdown"].encode())
    write_json_atomic(prefix.with_name(prefix.name + ".json"), {k: v for k, v in report.items() if k != "markdown"})
    if report["rows"]:
        seeds = len(report["seeds"])
        plot_variant_gaps(report["rows"], prefix.with_name(prefix.name + ".png"), reference=report["full"],
                          title=f"{name or report['study']}: {seeds} seed{'s' if seeds != 1 else ''}"
                          + (" (no spread)" if seeds == 1 else ", mean ± std"))


console = console_script(main)

if __name__ == "__main__":
    main()
