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
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

from .atomic import atomic_open, write_json_atomic
from .cli import USER_ERRORS, one_line, user_errors_as_one_line
from .modalities import NAMES, ORDER
from .report import read_run
from .run_folder import MODEL_FOLDER, read_records
from .stats import mean_std, pm, verdict

ANALYSES = ("unimodal", "scores", "gaps", "ratios", "modulation", "robustness")
ROBUSTNESS_VARIANTS = ("full", "no-modulation", "no-amw", "no-afw")


@dataclass(frozen=True)
class Run:
    variant: str
    seed: int
    path: Path
    history: list[dict]
    summary: dict

    @property
    def variant_modalities(self) -> str:
        return self.summary["config"]["modalities"]

    def at_best_epoch(self) -> dict:
        """The epoch record of the best-dev epoch (the state the test scores belong to)."""
        return next(r for r in self.history if r["epoch"] == self.summary["best_epoch"])

    @property
    def has_model(self) -> bool:
        """Whether the run kept a model (its model/, or best.pt), as ``sweep --keep-weights`` keeps them."""
        return (self.path / MODEL_FOLDER).is_dir() or (self.path / "best.pt").is_file()

    @property
    def modulates(self) -> bool:
        """Whether the run's recipe switched gradient modulation on."""
        return self.summary["train_config"].get("modulation", True)

    def in_modulation_window(self, epoch: int) -> bool:
        """Whether ``epoch`` lies in the recipe's modulation epochs (--start-mod to --end-mod), the
        epochs a variant without modulation is compared over too."""
        recipe = self.summary["train_config"]
        return recipe["start_mod"] <= epoch <= recipe.get("end_mod", epoch)

    def window_epochs(self) -> list[int]:
        """The run's epochs in its modulation window."""
        return [r["epoch"] for r in self.history if self.in_modulation_window(r["epoch"])]


class SweepRuns:
    """The finished runs under a sweep's run folder, by variant and seed; ``full`` is the variant of
    the full model (the subset variant with the most modalities)."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise ValueError(f"{root}: no such folder (expected OUT/STUDY_NAME of a sweep)")
        self.root = root
        self.runs: dict[str, dict[int, Run]] = {}
        for summary in sorted(root.glob("*/seed-*/summary.json")):
            run_dir = summary.parent
            match = re.fullmatch(r"seed-(\d+)", run_dir.name)
            if match:
                history, summary_data = read_run(run_dir)
                seed, variant = int(match.group(1)), run_dir.parent.name
                self.runs.setdefault(variant, {})[seed] = Run(variant, seed, run_dir, history, summary_data)
        self.unfinished = [str(d.relative_to(root)) for d in sorted(root.glob("*/seed-*"))
                           if re.fullmatch(r"seed-\d+", d.name) and d.is_dir() and not (d / "summary.json").is_file()]
        subsets = [v for v in self.runs if set(v) <= set(ORDER)]
        if not subsets:
            raise ValueError(f"{root}: no finished run of a modality subset (VARIANT/seed-N/summary.json)")
        self.full = max(subsets, key=len)

    def variant(self, name: str) -> dict[int, Run]:
        """The runs of ``name`` ("full" is the full model), by seed; empty when there are none."""
        return self.runs.get(self.full if name == "full" else name, {})

    def paired(self, a: str, b: str) -> list[tuple[Run, Run]]:
        """(a's run, b's run) for every seed both have."""
        runs_a, runs_b = self.variant(a), self.variant(b)
        return [(runs_a[s], runs_b[s]) for s in sorted(runs_a) if s in runs_b]

    @property
    def modalities(self) -> str:
        return self.full

    @property
    def traced(self) -> bool:
        """Whether the full model's runs wrote ``steps.jsonl`` (``train --trace``)."""
        return any((run.path / "steps.jsonl").is_file() for run in self.variant("full").values())

    def first_modulated_epoch(self) -> int | None:
        """The first epoch in which a run of the full model modulated; None when none did."""
        epochs = [e for run in self.variant("full").values() if run.modulates for e in run.window_epochs()]
        return min(epochs, default=None)

    def require_modulated_epochs(self, analysis: str) -> None:
        """Refuse ``analysis``, a summary of the modulated epochs, when the full model has none."""
        full = list(self.variant("full").values())
        if not any(run.modulates for run in full):
            raise NotAvailable(f"{analysis}: the full model ({self.full}) trained without gradient modulation "
                               "(--no-modulation): there are no modulated epochs to summarise")
        if self.first_modulated_epoch() is None:
            start = min(run.summary["train_config"]["start_mod"] for run in full)
            longest = max(len(run.history) for run in full)
            raise NotAvailable(f"{analysis}: no run of the full model ({self.full}) reached a modulated epoch "
                               f"(modulation starts at epoch {start}, the runs trained {longest} epoch(s)); "
                               "train the sweep with --epochs above --start-mod")


class NotAvailable(ValueError):
    """An analysis the sweep's runs cannot give: one line when it is asked for alone, and listed as
    skipped by ``analyze all``."""


# --- (1a) unimodal ---------------------------------------------------------------------------------

def unimodal(runs: SweepRuns) -> dict:
    """Per modality: trained alone, its own head inside the full model and inside the model without
    modulation (test F1 of the best-dev state, and dev F1 at that epoch), against the fused model."""
    full, no_mod = runs.variant("full"), runs.variant("no-modulation")
    rows = []
    for m in runs.modalities:
        inside_dev = {s: r.at_best_epoch()["dev"]["unimodal_weighted_f1"][m] for s, r in full.items()}
        no_mod_dev = {s: r.at_best_epoch()["dev"]["unimodal_weighted_f1"][m] for s, r in no_mod.items()}
        rows.append(dict(
            modality=m,
            alone_test=mean_std(r.summary["test"]["weighted_f1"] for r in runs.variant(m).values()),
            alone_dev=mean_std(r.summary["best_dev_weighted_f1"] for r in runs.variant(m).values()),
            inside_test=mean_std(r.summary["test"]["unimodal_weighted_f1"][m] for r in full.values()),
            inside_dev=mean_std(inside_dev.values()),
            inside_no_modulation_test=mean_std(r.summary["test"]["unimodal_weighted_f1"][m] for r in no_mod.values()),
            inside_no_modulation_dev=mean_std(no_mod_dev.values()),
            modulation_gain_dev=mean_std(inside_dev[s] - no_mod_dev[s] for s in inside_dev if s in no_mod_dev),
        ))
    fused = dict(test=mean_std(r.summary["test"]["weighted_f1"] for r in full.values()),
                 dev=mean_std(r.summary["best_dev_weighted_f1"] for r in full.values()))
    lines = [
        f"Fused full model ({runs.full}): test {pm(fused['test'])}, dev {pm(fused['dev'])}. Each modality's own "
        "head is the argmax of its un-normalised logits z_m W_mᵀ + b/M inside the joint model; dev scores at the "
        "best-dev epoch. Modulation gain: own dev F1 inside the full model − inside the model without modulation, "
        "paired by seed.",
        "",
        "| modality | alone: test | alone: dev | own head in full model: test | dev | own head without modulation: "
        "test | dev | modulation gain (dev) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {NAMES[row['modality']]} | {pm(row['alone_test'])} | {pm(row['alone_dev'])} | "
                     f"{pm(row['inside_test'])} | {pm(row['inside_dev'])} | {pm(row['inside_no_modulation_test'])} | "
                     f"{pm(row['inside_no_modulation_dev'])} | {pm(row['modulation_gain_dev'], signed=True)} |")
    return dict(fused=fused, rows=rows, markdown="\n".join(lines))


# --- (1b) scores -----------------------------------------------------------------------------------

def curves(runs: dict[int, Run], *keys: str) -> dict:
    """Per epoch: mean and std over the seeds that reached it of ``record[keys...]``."""
    epochs = sorted({r["epoch"] for run in runs.values() for r in run.history})
    series = {}
    for epoch in epochs:
        values = []
        for run in runs.values():
            record = next((r for r in run.history if r["epoch"] == epoch), None)
            for key in keys:
                record = record.get(key) if isinstance(record, dict) else None
            if record is not None:
                values.append(record)
        series[epoch] = mean_std(values)
    return series


def scores(runs: SweepRuns) -> dict:
    """Each modality's batch-average score (the mean probability its own head gives the gold class)
    per epoch, for the full model and without modulation; the table holds the last epoch every
    seed reached."""
    variants = [v for v in ("full", "no-modulation") if runs.variant(v)]
    data = {v: {m: curves(runs.variant(v), "unimodal_score", m) for m in runs.modalities} for v in variants}
    lines = ["| variant | epoch | " + " | ".join(f"{NAMES[m]} score" for m in runs.modalities) + " |",
             "|---|---|" + "---|" * len(runs.modalities)]
    for v in variants:
        common = min(max(r["epoch"] for r in run.history) for run in runs.variant(v).values())
        lines.append(f"| {_variant_name(runs, v)} | {common} | "
                     + " | ".join(pm(data[v][m][common]) for m in runs.modalities) + " |")
    return dict(curves={v: {m: _jsonable(c) for m, c in per.items()} for v, per in data.items()},
                markdown="\n".join(lines))


# --- (4) gaps --------------------------------------------------------------------------------------

def gaps(runs: SweepRuns) -> dict:
    """The full model's test and dev weighted F1 minus every other subset's, paired by seed."""
    rows = []
    for variant in runs.runs:
        if variant == runs.full or not set(variant) <= set(ORDER):
            continue
        pairs = runs.paired("full", variant)
        rows.append(dict(
            variant=variant, kind="pair" if len(variant) == 2 else "single",
            test=mean_std(r.summary["test"]["weighted_f1"] for r in runs.variant(variant).values()),
            gap_test=mean_std(f.summary["test"]["weighted_f1"] - v.summary["test"]["weighted_f1"] for f, v in pairs),
            gap_dev=mean_std(f.summary["best_dev_weighted_f1"] - v.summary["best_dev_weighted_f1"] for f, v in pairs),
        ))
    if not rows:
        raise NotAvailable(f"gaps: no finished run of a pair or single modality to compare the full model "
                           f"({runs.full}) with")
    rows.sort(key=lambda row: (-len(row["variant"]), ORDER.index(row["variant"][0])))
    full = mean_std(r.summary["test"]["weighted_f1"] for r in runs.variant("full").values())
    lines = [f"Full model ({runs.full}) test {pm(full)}. Gap: full − variant, paired by seed (positive: the full "
             "model is better).", "",
             "| variant | test weighted F1 | gap (test) | gap (dev) | verdict (test) |", "|---|---|---|---|---|"]
    for row in rows:
        flipped = dict(row["gap_test"], mean=None if row["gap_test"]["mean"] is None else -row["gap_test"]["mean"])
        lines.append(f"| {_modality_names(row['variant'])} | {pm(row['test'])} | {pm(row['gap_test'], True)} | "
                     f"{pm(row['gap_dev'], True)} | {verdict(flipped)} |")
    return dict(full=full, rows=rows, markdown="\n".join(lines))


# --- (5) ratios ------------------------------------------------------------------------------------

RATIO_VARIANTS = ("full", "no-amw", "no-afw", "no-modulation")


def ratios(runs: SweepRuns) -> dict:
    """ρ_m per epoch for the full model and the ablations; the table holds the spread of the ratios,
    max_m ρ_m − 1 (ρ of the weakest modality is 1), averaged over the modulated epochs of each run
    (runs that stopped before them are left out and named)."""
    runs.require_modulated_epochs("ratios")
    variants = [v for v in RATIO_VARIANTS if runs.variant(v)]
    data = {v: {m: curves(runs.variant(v), "ratio", m) for m in runs.modalities} for v in variants}
    per_run = {v: {s: _ratio_spread(run) for s, run in runs.variant(v).items()} for v in variants}
    spread = {v: {s: value for s, value in per_seed.items() if value is not None} for v, per_seed in per_run.items()}
    lines = ["Spread of the disparity ratios: max_m ρ_m − 1 per epoch, averaged over the modulated epochs "
             "(lower: the modalities are closer); difference to the full model paired by seed.", "",
             "| variant | ratio spread | − full model |", "|---|---|---|"]
    rows = []
    for v in variants:
        diff = mean_std(spread[v][s] - spread["full"][s] for s in spread[v] if s in spread.get("full", {}))
        rows.append(dict(variant=v, spread=mean_std(spread[v].values()), minus_full=diff))
        lines.append(f"| {_variant_name(runs, v)} | {pm(rows[-1]['spread'])} | "
                     f"{'—' if v == 'full' else pm(diff, True)} |")
    left_out = [f"{v} seed {s}" for v, per_seed in per_run.items() for s, value in per_seed.items() if value is None]
    if left_out:
        lines += ["", f"Left out, ended before a modulated epoch: {', '.join(left_out)}."]
    return dict(curves={v: {m: _jsonable(c) for m, c in per.items()} for v, per in data.items()}, rows=rows,
                left_out=left_out, markdown="\n".join(lines))


def _ratio_spread(run: Run) -> float | None:
    """max_m ρ_m − 1 averaged over the run's epochs in its modulation window; None when it has none."""
    window = [r for r in run.history if run.in_modulation_window(r["epoch"])]
    return statistics.fmean(max(r["ratio"].values()) - 1 for r in window) if window else None


# --- what the modulation does ----------------------------------------------------------------------

MODULATION_VARIANTS = ("full", "no-grad-noise", "no-modulation", "continuous-k", "update-target")
ALTERNATIVE_VARIANTS = ("continuous-k", "update-target")  # in the table only when they ran


def modulation(runs: SweepRuns) -> dict:
    """From the traced steps (``train --trace``): per modality, the coefficient k the full model's
    step applied, how often the modality was the weakest (k = 1), how modulation changed its encoder's
    gradient norm (noise included), and the norm of the optimizer's update of its encoder with
    modulation, with modulation but no noise, and without modulation (means over the modulated
    epochs, then over seeds; ratios paired by seed). For every modulated variant, its encoder update
    over the unmodulated run's and that ratio over its own k: 1 where the modulation reaches the
    update as it scales the gradient (what SGD would give), near 1/k where Adam normalises it away."""
    if not runs.traced:
        raise NotAvailable("modulation: the full model's runs have no steps.jsonl; train the sweep with --trace")
    runs.require_modulated_epochs("modulation")
    means = {v: {s: _step_means(run) for s, run in runs.variant(v).items() if (run.path / "steps.jsonl").is_file()}
             for v in MODULATION_VARIANTS}
    traced = {v: {s: m for s, m in per_seed.items() if m is not None} for v, per_seed in means.items()}
    traced = {v: t for v, t in traced.items() if t or v not in ALTERNATIVE_VARIANTS}
    modulated = [v for v in traced if v != "no-modulation" and traced[v]]
    unmodulated = traced.get("no-modulation", {})
    rows = []
    for m in runs.modalities:
        full = traced["full"]
        row = dict(modality=m, k=mean_std(t[m]["k"] for t in full.values()),
                   weakest=mean_std(t[m]["weakest"] for t in full.values()),
                   gradient_gain=mean_std(t[m]["gain"] for t in full.values()))
        for v in traced:
            row[f"update_{v}"] = mean_std(t[m]["update"] for t in traced[v].values())
            if v != "full":
                row[f"update_full_over_{v}"] = mean_std(full[s][m]["update"] / traced[v][s][m]["update"]
                                                        for s in full if s in traced[v])
        for v in modulated:
            paired = [s for s in traced[v] if s in unmodulated]
            row[f"k_{v}"] = mean_std(traced[v][s][m]["k"] for s in traced[v])
            row[f"weakest_{v}"] = mean_std(traced[v][s][m]["weakest"] for s in traced[v])
            row[f"update_ratio_{v}"] = mean_std(traced[v][s][m]["update"] / unmodulated[s][m]["update"] for s in paired)
            row[f"update_ratio_over_k_{v}"] = mean_std(
                traced[v][s][m]["update"] / unmodulated[s][m]["update"] / traced[v][s][m]["k"] for s in paired)
        rows.append(row)
    others = [v for v in traced if v != "full"]
    lines = ["Means over the modulated epochs of each traced run, then mean ± std over seeds. k: the coefficient "
             "applied to the modality's encoder gradients; weakest: the share of steps in which it had the lowest "
             "score (k = 1); gradient gain: ‖g‖ after modulation (and noise) / ‖g‖ before; update: ‖Δθ‖ of the "
             "encoder's optimizer step; full / variant: the full model's update over the variant's, paired by seed.", "",
             "| modality | k | weakest | gradient gain | " + " | ".join(f"update, {v}" for v in traced) + " | "
             + " | ".join(f"full / {v}" for v in others) + " |", "|---|---|---|---|" + "---|" * (2 * len(traced) - 1)]
    for row in rows:
        lines.append(f"| {NAMES[row['modality']]} | {pm(row['k'])} | {pm(row['weakest'])} | {pm(row['gradient_gain'])} | "
                     + " | ".join(pm(row[f"update_{v}"], digits=4) for v in traced) + " | "
                     + " | ".join(pm(row[f"update_full_over_{v}"]) for v in others) + " |")
    if unmodulated and modulated:
        lines += ["", "Does the modulation reach the update? Per modulated variant: its k, the share of steps the modality "
                  "was the weakest, its encoder update over the unmodulated run's (paired by seed), and that ratio over "
                  "its own k (1: the update is scaled by k, as scaling the gradient does under SGD).", "",
                  "| variant | modality | k | weakest | update / unmodulated | (update / unmodulated) / k |",
                  "|---|---|---|---|---|---|"]
        for v in modulated:
            for row in rows:
                lines.append(f"| {_variant_name(runs, v)} | {NAMES[row['modality']]} | {pm(row[f'k_{v}'])} | "
                             f"{pm(row[f'weakest_{v}'])} | {pm(row[f'update_ratio_{v}'])} | "
                             f"{pm(row[f'update_ratio_over_k_{v}'])} |")
    epochs = {v: {m: {k: curves_of_steps(runs.variant(v), m, k) for k in ("coefficient", "update_norm")}
                  for m in runs.modalities} for v in traced if traced[v]}
    return dict(rows=rows, curves=epochs, markdown="\n".join(lines))


def _step_means(run: Run) -> dict | None:
    """Per modality, means over the run's steps in its modulation epochs of k, weakest, gradient gain
    and update norm; None when the run has no such step."""
    steps = [row for row in read_records(run.path / "steps.jsonl")
             if run.in_modulation_window(row["epoch"]) and not row["skipped"]]
    if not steps:
        return None
    return {m: dict(k=statistics.fmean(s["coefficient"][m] for s in steps),
                    weakest=statistics.fmean(s["ratio"][m] == 1.0 for s in steps),
                    gain=statistics.fmean(s["grad_norm_after"][m] / s["grad_norm_before"][m] for s in steps),
                    update=statistics.fmean(s["update_norm"][m] for s in steps))
            for m in run.variant_modalities}


def curves_of_steps(runs: dict[int, Run], modality: str, key: str) -> dict:
    """Per epoch: mean ± std over seeds of the epoch's mean traced ``key`` of ``modality``."""
    per_seed = {}
    for seed, run in runs.items():
        by_epoch: dict[int, list[float]] = {}
        for row in read_records(run.path / "steps.jsonl"):
            by_epoch.setdefault(row["epoch"], []).append(row[key][modality])
        per_seed[seed] = {epoch: statistics.fmean(values) for epoch, values in by_epoch.items()}
    epochs = sorted({e for series in per_seed.values() for e in series})
    return {str(e): mean_std(series[e] for series in per_seed.values() if e in series) for e in epochs}


# --- robustness ------------------------------------------------------------------------------------

def robustness_table(runs: SweepRuns, *, levels, device: str = "cpu") -> dict:
    """:func:`robustness.robustness` of the best-dev model of every run of the full model and the
    ablations in ``ROBUSTNESS_VARIANTS``, as mean ± std over seeds."""
    from .robustness import robustness
    from .saved_model import open_checkpoint_and_corpus

    if not any(run.has_model for run in runs.variant("full").values()):
        raise NotAvailable("robustness: the full model's runs kept no model (train the sweep with --keep-weights)")
    per_run = {}
    for v in ROBUSTNESS_VARIANTS:
        for seed, run in sorted(runs.variant(v).items()):
            if not run.has_model:
                continue
            model, corpus, recipe, _ = open_checkpoint_and_corpus(run.path, None, None)
            per_run.setdefault(v, {})[seed] = robustness(model.to(device), corpus, levels=levels, seed=seed,
                                                         batch_size=recipe.batch_size, device=device)
    modalities = runs.modalities
    rows = []
    for v, results in per_run.items():
        rows.append(dict(
            variant=v, seeds=sorted(results),
            clean=mean_std(r["clean"] for r in results.values()),
            missing={m: mean_std(r["missing"][m] for r in results.values() if r["missing"]) for m in modalities},
            noise={m: [mean_std(r["noise"][m][i] for r in results.values()) for i in range(len(levels))]
                   for m in modalities},
        ))
    header = ["variant", "clean"] + [f"without {NAMES[m]}" for m in modalities if len(modalities) > 1] + [
        f"{NAMES[m]} noise σ={level:g}" for m in modalities for level in levels if level]
    lines = ["Test weighted F1 of the best-dev model: clean; with one modality dropped from the input; with one "
             "modality's features corrupted by Gaussian noise of σ training-split standard deviations.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [_variant_name(runs, row["variant"]), pm(row["clean"])]
        cells += [pm(row["missing"][m]) for m in modalities if len(modalities) > 1]
        cells += [pm(row["noise"][m][i]) for m in modalities for i, level in enumerate(levels) if level]
        lines.append("| " + " | ".join(cells) + " |")
    return dict(levels=list(levels), rows=rows, per_run=per_run, markdown="\n".join(lines))


# --- the CLI ---------------------------------------------------------------------------------------

def _variant_name(runs: SweepRuns, variant: str) -> str:
    return f"full model ({runs.full})" if variant in ("full", runs.full) else variant


def _modality_names(letters: str) -> str:
    return " + ".join(NAMES[m] for m in letters)


def _jsonable(series: dict) -> dict:
    return {str(epoch): stat for epoch, stat in series.items()}


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
    from .analysis_plots import PLOTS
    from .robustness import NOISE_LEVELS

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


ANALYSIS_TABLES = {"unimodal": unimodal, "scores": scores, "gaps": gaps, "ratios": ratios, "modulation": modulation}
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
