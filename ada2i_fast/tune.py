"""Hyperparameter search: ``python -m ada2i_fast.tune --trials 30 [--workers N] -- TRAINER FLAGS``.

An optuna study (TPE) over the learning rate, alpha (modulation strength), beta (AFW residual
weight), the tensor rank and the cosine head's s, maximising the best dev weighted F1 of a run.
Each epoch's dev weighted F1 goes to a median pruner, which stops a trial whose score falls below
the median of the earlier trials at the same epoch. The study lives in an RDB storage like the
sweep's, so workers here and on other machines share it; the best parameters are printed and
written as JSON, with the train command that uses them.
"""

from __future__ import annotations

import argparse
import functools
import random
import sys
from pathlib import Path

from .atomic import write_json_atomic
from .cli import add_recipe_flags, console_script, user_errors_as_one_line
from .config_file import parse_with_recipe
from .studies.study import (
    add_study_flags, check_trainer_flags, claimed, open_storage, print_study_recipe, record_run_dir, require_optuna,
    new_or_existing_storage_url, run_workers, split_trainer_flags, start_study, train_run, unmodulated_note,
)

# name: (low, high, log scale); rank is an integer. The ranges hold every published preset (SPEC §4).
SEARCH_SPACE = {
    "lr": (1e-5, 3e-3, True),
    "alpha": (0.01, 1.0, True),
    "beta": (0.0, 1.0, False),
    "rank": (2, 16, False),
    "amw_scale": (1.0, 40.0, True),
}
RESERVED = ("out", "resume", "overwrite", *SEARCH_SPACE)
COMMAND = "python -m ada2i_fast.tune"


def build_parser() -> argparse.ArgumentParser:
    space = "; ".join(f"{name} in [{low:g}, {high:g}]{' (log)' if log else ''}"
                      for name, (low, high, log) in SEARCH_SPACE.items())
    parser = argparse.ArgumentParser(
        prog="python -m ada2i_fast.tune",
        usage="%(prog)s [options] [-- TRAINER FLAGS]",
        description=f"Search {space} for the best dev weighted F1, pruning trials below the median per epoch. "
        "Flags after -- go to each trial's trainer (python -m ada2i_fast.train --help).",
        epilog="example: python -m ada2i_fast.tune --trials 30 --workers 2 -- --dataset meld --size 0.3 --epochs 8\n"
        "or: python -m ada2i_fast.tune --config study.yaml (trainer keys at the top level, tune's under tune:)\n"
        "several machines: run the same command on each with --storage postgresql://HOST/DB (any SQLAlchemy URL).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--trials", type=int, default=20,
                        help="completed or pruned trials in the study, counting earlier launches' (default: 20)")
    parser.add_argument("--prune-after", type=int, default=4, metavar="N",
                        help="prune only once N trials have finished (default: 4)")
    parser.add_argument("--warmup-epochs", type=int, default=2, metavar="E",
                        help="never prune in a trial's first E epochs (default: 2)")
    parser.add_argument("--sampler-seed", type=int, default=0, metavar="SEED",
                        help="TPE's seed, mixed with the worker's index and the number of trials the study holds, "
                        "so that a new launch goes on with the search (default: 0)")
    parser.add_argument("--best", metavar="PATH", help="where the best parameters go as JSON (default: OUT/STUDY_NAME-best.json)")
    add_study_flags(parser, default_out="runs/tune", default_study="tune")
    add_recipe_flags(parser, "the trials' trainer flags (the top-level keys) and tune's own (under tune:)")
    return parser


@user_errors_as_one_line
def main(argv=None) -> dict:
    own, trainer_argv = split_trainer_flags(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    args, recipe = parse_with_recipe(parser, own, section="tune")
    trainer_args, trainer_flags = check_trainer_flags(trainer_argv, command=COMMAND, reserved=RESERVED, recipe=recipe)
    if args.print_config:
        return print_study_recipe(COMMAND, "tune", parser, args, trainer_args, RESERVED)
    require_optuna()
    url = new_or_existing_storage_url(args)
    study = start_study(open_storage(url), args.study_name, trainer_flags, sampler_seed=args.sampler_seed,
                        prune_after=args.prune_after, warmup_epochs=args.warmup_epochs,
                        search_space={name: list(bounds) for name, bounds in SEARCH_SPACE.items()})
    print(f"study {args.study_name!r} in {url}: {len(counted_trials(study))} of {args.trials} trials so far; "
          f"{args.workers} worker(s) training into {args.out}"
          + unmodulated_note(trainer_args, "no trial modulates, so alpha, which the search varies, changes nothing"))
    pruning = dict(prune_after=args.prune_after, warmup_epochs=args.warmup_epochs)
    run_workers(search, args.workers, url, args.study_name, Path(args.out), args.trials, args.sampler_seed, pruning,
                args.keep_weights)
    best = best_parameters(study)
    path = Path(args.best) if args.best else Path(args.out) / f"{args.study_name}-best.json"
    write_json_atomic(path, best)
    print("best dev weighted F1 {:.4f} (trial {}, test {:.4f}): {}".format(
        best["dev_weighted_f1"], best["trial"], best["test_weighted_f1"],
        ", ".join(f"{k}={v:.4g}" for k, v in best["params"].items())))
    print(f"train with them: {best['train_command']}\nwrote {path}")
    return best


def search(worker: int, url: str, study_name: str, out: Path, trials: int, sampler_seed: int, pruning: dict,
           keep_weights: bool = False) -> None:
    """One worker: sample, train and report trials until the study holds ``trials`` completed or pruned ones."""
    optuna = require_optuna()
    study = optuna.load_study(
        study_name=study_name, storage=open_storage(url),
        # A trial reports at step = epoch (from 1); the pruner may prune from step n_warmup_steps on.
        pruner=optuna.pruners.MedianPruner(n_startup_trials=pruning["prune_after"], n_warmup_steps=pruning["warmup_epochs"] + 1),
    )
    study.sampler = optuna.samplers.TPESampler(seed=worker_seed(sampler_seed, worker, len(study.trials)))
    if len(counted_trials(study)) < trials:
        study.optimize(claimed(functools.partial(train_trial, out=out / study_name, worker=worker,
                                                 keep_weights=keep_weights)),
                       callbacks=[optuna.study.MaxTrialsCallback(trials, states=counted_states()),
                                  _stop_after_failures_in_a_row], catch=(Exception,))


FAILURES_IN_A_ROW = 3  # failed trials do not count toward --trials: a trainer that always fails must not loop


def _stop_after_failures_in_a_row(study, trial) -> None:
    """Stop the search once the study's last :data:`FAILURES_IN_A_ROW` finished trials all failed."""
    state = require_optuna().trial.TrialState
    finished = [t for t in study.get_trials(deepcopy=False) if t.state != state.RUNNING and t.state != state.WAITING]
    if len(finished) >= FAILURES_IN_A_ROW and all(t.state == state.FAIL for t in finished[-FAILURES_IN_A_ROW:]):
        print(f"stopping: the last {FAILURES_IN_A_ROW} trials failed; see their train.log", flush=True)
        study.stop()


def worker_seed(sampler_seed: int, worker: int, trials_so_far: int) -> int:
    """TPE's seed for ``worker`` joining a study of ``trials_so_far`` trials: each launch and each worker
    draws new parameters instead of repeating an earlier launch's."""
    return random.Random(f"{sampler_seed}/{worker}/{trials_so_far}").getrandbits(32)


def counted_states() -> tuple:
    """The states of the trials that count toward ``--trials``: completed and pruned, not failed or killed."""
    state = require_optuna().trial.TrialState
    return state.COMPLETE, state.PRUNED


def counted_trials(study) -> list:
    return study.get_trials(deepcopy=False, states=counted_states())


def suggest(trial) -> dict:
    params = {}
    for name, (low, high, log) in SEARCH_SPACE.items():
        if isinstance(low, int):
            params[name] = trial.suggest_int(name, low, high, log=log)
        else:
            params[name] = trial.suggest_float(name, low, high, log=log)
    return params


def as_flags(params: dict) -> list[str]:
    return [arg for name, value in params.items() for arg in ("--" + name.replace("_", "-"), repr(value))]


def train_trial(trial, *, out: Path, worker: int, keep_weights: bool = False) -> float:
    """The objective: the best dev weighted F1 of a run with the trial's parameters."""
    params = suggest(trial)
    run_dir = out / f"trial-{trial.number}"
    record_run_dir(trial, run_dir)
    trainer_flags = trial.study.user_attrs["trainer_flags"]
    try:
        summary = train_run([*trainer_flags, *as_flags(params)], run_dir, on_epoch_end=epoch_reporter(trial),
                            keep_weights=keep_weights)
    except require_optuna().TrialPruned as pruned:
        print(f"worker {worker}: trial {trial.number} pruned: {pruned}", flush=True)
        raise
    except Exception as error:
        trial.set_user_attr("error", f"{type(error).__name__}: {error}")
        print(f"worker {worker}: trial {trial.number} failed: {error} (log: {run_dir / 'train.log'})", flush=True)
        raise
    trial.set_user_attr("test_weighted_f1", summary["test"]["weighted_f1"])
    trial.set_user_attr("best_epoch", summary["best_epoch"])
    print(f"worker {worker}: trial {trial.number}: dev weighted F1 {summary['best_dev_weighted_f1']:.4f} "
          f"({', '.join(f'{k}={v:.4g}' for k, v in params.items())})", flush=True)
    return summary["best_dev_weighted_f1"]


def epoch_reporter(trial):
    """The trainer's ``on_epoch_end``: report the epoch's dev weighted F1, and prune the trial if the pruner says so."""
    optuna = require_optuna()

    def report(record: dict) -> None:
        trial.report(record["dev"]["weighted_f1"], record["epoch"])
        if trial.should_prune():
            raise optuna.TrialPruned(f"dev weighted F1 {record['dev']['weighted_f1']:.4f} at epoch {record['epoch']} "
                                     "is below the median of earlier trials")

    return report


def best_parameters(study) -> dict:
    """The best completed trial: its parameters, scores, run folder and the train command that uses them."""
    optuna = require_optuna()
    states = [t.state for t in study.trials]
    counts = {state.name.lower(): states.count(state) for state in optuna.trial.TrialState if states.count(state)}
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        raise SystemExit(f"error: no trial of study {study.study_name!r} completed ({counts}); see the train.log of its runs")
    best = study.best_trial
    trainer_flags = study.user_attrs.get("trainer_flags", [])
    return dict(
        study=study.study_name, trial=best.number, params=best.params, dev_weighted_f1=best.value,
        test_weighted_f1=best.user_attrs.get("test_weighted_f1"), best_epoch=best.user_attrs.get("best_epoch"),
        run_dir=best.user_attrs.get("run_dir"), trials=counts, trainer_flags=trainer_flags,
        train_command=" ".join(["python -m ada2i_fast.train", *trainer_flags, *as_flags(best.params)]),
    )


console = console_script(main)

if __name__ == "__main__":
    main()
