"""The paper's balance analyses of a sweep's runs, apart from their command (``python -m
ada2i_fast.analyze``): the runs (:class:`SweepRuns`, one :class:`Run` per variant and seed) and one
function per analysis, each returning its numbers and its Markdown table.

Every number is a mean ± sample std over seeds, and a comparison between two variants is paired by
seed (same seed = same synthetic corpus and initialisation). ``ratios`` and ``modulation`` summarise
the modulated epochs; an analysis the runs cannot give raises :class:`NotAvailable`.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from pathlib import Path

from ..modalities import NAMES, ORDER
from ..training.run_folder import MODEL_FOLDER, read_records, read_run
from .stats import mean_std, pm, verdict
from .variants import is_subset, kind_of, modality_names, named, paired_gaps

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
        lines.append(f"| {named(v, runs.full)} | {common} | "
                     + " | ".join(pm(data[v][m][common]) for m in runs.modalities) + " |")
    return dict(curves={v: {m: _jsonable(c) for m, c in per.items()} for v, per in data.items()},
                markdown="\n".join(lines))


# --- (4) gaps --------------------------------------------------------------------------------------

def gaps(runs: SweepRuns) -> dict:
    """The full model's lead over every other subset in test and dev weighted F1, paired by seed: the
    figure's and the published tables' "gap" columns (``gap_test``, ``gap_dev``) hold full − variant,
    that is minus :func:`~ada2i_fast.studies.variants.paired_gaps`; the verdict reads the gap itself."""
    rows, verdicts = [], {}
    for variant in runs.runs:
        if variant == runs.full or not is_subset(variant):
            continue
        test, dev = (_paired_gap(runs, variant, score) for score in (_test_f1, _dev_f1))
        rows.append(dict(
            variant=variant, kind=kind_of(variant, runs.full),
            test=mean_std(_test_f1(r) for r in runs.variant(variant).values()),
            gap_test=mean_std(-gap for gap in test), gap_dev=mean_std(-gap for gap in dev),
        ))
        verdicts[variant] = verdict(mean_std(test))
    if not rows:
        raise NotAvailable(f"gaps: no finished run of a pair or single modality to compare the full model "
                           f"({runs.full}) with")
    rows.sort(key=lambda row: (-len(row["variant"]), ORDER.index(row["variant"][0])))
    full = mean_std(_test_f1(r) for r in runs.variant("full").values())
    lines = [f"Full model ({runs.full}) test {pm(full)}. Gap: full − variant, paired by seed (positive: the full "
             "model is better).", "",
             "| variant | test weighted F1 | gap (test) | gap (dev) | verdict (test) |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {modality_names(row['variant'])} | {pm(row['test'])} | {pm(row['gap_test'], True)} | "
                     f"{pm(row['gap_dev'], True)} | {verdicts[row['variant']]} |")
    return dict(full=full, rows=rows, markdown="\n".join(lines))


def _test_f1(run: Run) -> float:
    return run.summary["test"]["weighted_f1"]


def _dev_f1(run: Run) -> float:
    return run.summary["best_dev_weighted_f1"]


def _paired_gap(runs: SweepRuns, variant: str, score) -> list[float]:
    """``variant``'s gap to the full model in ``score`` of a run, seed by seed (variants.paired_gaps)."""
    by_seed = lambda name: {seed: score(run) for seed, run in sorted(runs.variant(name).items())}  # noqa: E731
    return paired_gaps(by_seed(variant), by_seed("full"))


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
        lines.append(f"| {named(v, runs.full)} | {pm(rows[-1]['spread'])} | "
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
    update as it scales the gradient (what SGD would give), near 1/k where Adam normalises it away;
    and each modality's own head inside the model (dev F1 at the best-dev epoch, and its gain over the
    unmodulated run's, paired by seed)."""
    if not runs.traced:
        raise NotAvailable("modulation: the full model's runs have no steps.jsonl; train the sweep with --trace")
    runs.require_modulated_epochs("modulation")
    means = {v: {s: _step_means(run) for s, run in runs.variant(v).items() if (run.path / "steps.jsonl").is_file()}
             for v in MODULATION_VARIANTS}
    traced = {v: {s: m for s, m in per_seed.items() if m is not None} for v, per_seed in means.items()}
    traced = {v: t for v, t in traced.items() if t or v not in ALTERNATIVE_VARIANTS}
    modulated = [v for v in traced if v != "no-modulation" and traced[v]]
    unmodulated = traced.get("no-modulation", {})
    own_dev = {v: {s: _own_head_dev_f1(runs.variant(v)[s]) for s in traced[v]} for v in traced}
    rows = []
    for m in runs.modalities:
        full = traced["full"]
        row = dict(modality=m, k=mean_std(t[m]["k"] for t in full.values()),
                   weakest=mean_std(t[m]["weakest"] for t in full.values()),
                   gradient_gain=mean_std(t[m]["gain"] for t in full.values()))
        for v in traced:
            row[f"update_{v}"] = mean_std(t[m]["update"] for t in traced[v].values())
            row[f"own_dev_{v}"] = mean_std(own_dev[v][s][m] for s in traced[v])
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
            row[f"own_dev_gain_{v}"] = mean_std(own_dev[v][s][m] - own_dev["no-modulation"][s][m] for s in paired)
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
                  "its own k (1: the update is scaled by k, as scaling the gradient does under SGD); the modality's "
                  "own head inside the model (Fig. 1a): its dev weighted F1 at the best-dev epoch, and that F1 minus "
                  "the unmodulated run's (paired by seed).", "",
                  "| variant | modality | k | weakest | update / unmodulated | (update / unmodulated) / k | "
                  "own head: dev F1 | own head: gain over unmodulated (dev) |",
                  "|---|---|---|---|---|---|---|---|"]
        for v in modulated:
            for row in rows:
                lines.append(f"| {named(v, runs.full)} | {NAMES[row['modality']]} | {pm(row[f'k_{v}'])} | "
                             f"{pm(row[f'weakest_{v}'])} | {pm(row[f'update_ratio_{v}'])} | "
                             f"{pm(row[f'update_ratio_over_k_{v}'])} | {pm(row[f'own_dev_{v}'])} | "
                             f"{pm(row[f'own_dev_gain_{v}'], True)} |")
        for row in rows:
            lines.append(f"| {named('no-modulation', runs.full)} | {NAMES[row['modality']]} | — | — | — | — | "
                         f"{pm(row['own_dev_no-modulation'])} | — |")
    epochs = {v: {m: {k: curves_of_steps(runs.variant(v), m, k) for k in ("coefficient", "update_norm")}
                  for m in runs.modalities} for v in traced if traced[v]}
    return dict(rows=rows, curves=epochs, markdown="\n".join(lines))


def _own_head_dev_f1(run: Run) -> dict:
    """Per modality, the dev weighted F1 of its own head inside the model at the run's best-dev epoch."""
    return run.at_best_epoch()["dev"]["unimodal_weighted_f1"]


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
    from ..inference.saved_model import open_checkpoint_and_corpus
    from .robustness import robustness

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
        cells = [named(row["variant"], runs.full), pm(row["clean"])]
        cells += [pm(row["missing"][m]) for m in modalities if len(modalities) > 1]
        cells += [pm(row["noise"][m][i]) for m in modalities for i, level in enumerate(levels) if level]
        lines.append("| " + " | ".join(cells) + " |")
    return dict(levels=list(levels), rows=rows, per_run=per_run, markdown="\n".join(lines))


# ---------------------------------------------------------------------------------------------------

def _jsonable(series: dict) -> dict:
    return {str(epoch): stat for epoch, stat in series.items()}


ANALYSIS_TABLES = {"unimodal": unimodal, "scores": scores, "gaps": gaps, "ratios": ratios, "modulation": modulation}
