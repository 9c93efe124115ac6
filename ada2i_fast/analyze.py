"""The paper's balance analyses from a sweep's runs, one command each (each writes NAME.png, NAME.md
and NAME.json into ``--out``)::

    python -m ada2i_fast.analyze unimodal   SWEEP_RUNS   # Fig. 1a: fused F1 vs each modality alone and inside the model
    python -m ada2i_fast.analyze scores     SWEEP_RUNS   # Fig. 1b: each modality's batch-average score over training
    python -m ada2i_fast.analyze gaps       SWEEP_RUNS   # Fig. 4: the full model's gap to every pair and single modality
    python -m ada2i_fast.analyze ratios     SWEEP_RUNS   # Fig. 5: rho_m over epochs, full model vs without AMW / AFW
    python -m ada2i_fast.analyze modulation SWEEP_RUNS   # k, gradient and update norms per encoder (traced runs)
    python -m ada2i_fast.analyze robustness SWEEP_RUNS   # test F1 with a modality missing or corrupted by noise
    python -m ada2i_fast.analyze all        SWEEP_RUNS   # every analysis the runs allow; lists the others and why

``SWEEP_RUNS`` is the folder of a sweep's runs (``OUT/STUDY_NAME`` of ``python -m ada2i_fast.sweep``):
one ``VARIANT/seed-N/`` run folder per cell. Finished runs count; every number is a mean ± sample
std over seeds, and a comparison between two variants is paired by seed (same seed = same synthetic
corpus and initialisation). With fewer than two seeds no spread is claimed. ``ratios`` and
``modulation`` summarise the modulated epochs and refuse a sweep whose full model never reached one
(fewer --epochs than --start-mod, or --no-modulation); ``modulation`` needs ``train --trace`` and
``robustness`` the models ``sweep --keep-weights`` keeps.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .atomic import atomic_open, write_json_atomic
from .cli import USER_ERRORS, one_line, user_errors_as_one_line
from .studies.analyses import ANALYSES, ANALYSIS_TABLES, SweepRuns, robustness_table
from .studies.plots import PLOTS
from .studies.robustness import NOISE_LEVELS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ada2i_fast.analyze", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("analysis", choices=(*ANALYSES, "all"),
                        help="which analysis (all: every one the runs allow, then the others listed with the reason "
                        "they were skipped; an error only when none could run)")
    parser.add_argument("sweep_runs", type=Path, metavar="SWEEP_RUNS", help="OUT/STUDY_NAME of a sweep")
    parser.add_argument("--out", type=Path, default=None, help="where the files go (default: SWEEP_RUNS/analysis)")
    parser.add_argument("--name", default=None,
                        help="the corpus or study as titles name it (default: the sweep folder's name)")
    parser.add_argument("--levels", type=float, nargs="+", default=None,
                        help="robustness: noise levels σ, in training-split standard deviations "
                        "(default: 0 0.5 1 2 4)")
    parser.add_argument("--device", default="cpu", help="robustness: where the models run (default: cpu)")
    return parser


@user_errors_as_one_line
def main(argv=None) -> None:
    """The CLI (returns None: console scripts exit with what ``main`` returns). Bad folders, and an
    analysis the runs cannot give when it is asked for alone, end in one ``error:`` line; ``all``
    writes every analysis it can and lists the others with the reason (an error when none could run)."""
    args = build_parser().parse_args(argv)
    runs = SweepRuns(args.sweep_runs)
    if runs.unfinished:
        print(f"left out, unfinished (no summary.json yet): {', '.join(runs.unfinished)}")
    out = args.out or args.sweep_runs / "analysis"
    name = args.name or args.sweep_runs.parent.name
    out.mkdir(parents=True, exist_ok=True)
    if args.analysis != "all":
        write_analysis(args.analysis, runs, args, out, name)
        print(f"wrote {out / args.analysis}.png/.md/.json")
        return
    written, skipped = [], {}
    for analysis in ANALYSES:
        try:
            write_analysis(analysis, runs, args, out, name)
            written.append(analysis)
        except USER_ERRORS as error:
            skipped[analysis] = one_line(error).removeprefix(f"{analysis}: ")
    if written:
        print(f"wrote {', '.join(f'{out / a}.png/.md/.json' for a in written)}")
    for analysis, reason in skipped.items():
        print(f"skipped {analysis}: {reason}")
    if not written:
        raise ValueError(f"{args.sweep_runs}: no analysis could run (see the reasons above)")


def write_analysis(analysis: str, runs: SweepRuns, args: argparse.Namespace, out: Path, name: str) -> None:
    """One analysis: its PNG, Markdown table and JSON in ``out``, and the table printed."""
    if analysis == "robustness":
        result = robustness_table(runs, levels=tuple(args.levels or NOISE_LEVELS), device=args.device)
    else:
        result = ANALYSIS_TABLES[analysis](runs)
    title = f"{_TITLES[analysis]} — {name}, {_seeds(runs)}"
    PLOTS[analysis](runs, result, out / f"{analysis}.png", title=title)
    with atomic_open(out / f"{analysis}.md") as handle:
        handle.write(f"## {title}\n\n{result['markdown']}\n".encode())
    write_json_atomic(out / f"{analysis}.json", {k: v for k, v in result.items() if k != "markdown"})
    print(f"## {title}\n\n{result['markdown']}\n")


_TITLES = {
    "unimodal": "Each modality alone and inside the model",
    "scores": "Each modality's batch-average score over training",
    "gaps": "The full model against every pair and single modality",
    "ratios": "Disparity ratios over training",
    "modulation": "What the gradient modulation does to each encoder",
    "robustness": "Robustness to a missing or noisy modality",
}


def _seeds(runs: SweepRuns) -> str:
    seeds = sorted(runs.variant("full"))
    return f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}"


if __name__ == "__main__":
    main()
