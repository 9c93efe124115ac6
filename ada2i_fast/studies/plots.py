"""The pictures of ``python -m ada2i_fast.analyze``: one function per analysis, each taking the
sweep's runs, the analysis's result and a path. Every number drawn is a mean over seeds with its
sample std as an error bar or band; bars start at 0; panels that compare values share their y axis."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..modalities import NAMES
from ..training.plots import paper_style, save_figure, whole_epochs
from .analyses import SweepRuns
from .variants import KINDS, curve_style, modality_names

_SUBSET_COLOURS = {kind: KINDS[kind][1] for kind in ("pair", "single")}


def _stat(stat: dict) -> tuple[float, float]:
    return (np.nan if stat["mean"] is None else stat["mean"]), (stat["std"] or 0.0)


def _band(ax, epochs, stats, **style) -> None:
    means, stds = np.array([_stat(s) for s in stats]).T
    ax.plot(epochs, means, **style)
    ax.fill_between(epochs, means - stds, means + stds, color=style["color"], alpha=0.15, linewidth=0)


@paper_style
def plot_unimodal(runs: SweepRuns, result: dict, path, *, title: str) -> None:
    bars = (("alone_", "trained alone", "tab:grey"), ("inside_", "own head, full model", "tab:green"),
            ("inside_no_modulation_", "own head, without modulation", "tab:red"))
    modalities = [row["modality"] for row in result["rows"]]
    fig, panels = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True, constrained_layout=True)
    x = np.arange(len(modalities))
    for panel, split in zip(panels, ("test", "dev")):
        for i, (prefix, label, colour) in enumerate(bars):
            means, stds = np.array([_stat(row[prefix + split]) for row in result["rows"]]).T
            panel.bar(x + (i - 1) * 0.27, means, 0.27, yerr=stds, capsize=3, color=colour, label=label,
                      edgecolor="black", linewidth=0.5)
        fused, spread = _stat(result["fused"][split])
        panel.axhline(fused, color="black", linestyle="--", linewidth=1, label=f"fused full model {fused:.3f}")
        panel.axhspan(fused - spread, fused + spread, color="black", alpha=0.08)
        panel.set_xticks(x, [NAMES[m] for m in modalities])
        panel.set(title=f"{split} weighted F1", ylim=(0, 1))
    panels[0].set_ylabel("weighted F1 (mean ± std over seeds)")
    handles, labels = panels[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(handles), frameon=False)
    fig.suptitle(title)
    save_figure(fig, path)


@paper_style
def plot_scores(runs: SweepRuns, result: dict, path, *, title: str) -> None:
    fig, panels = _curves_per_modality(
        runs, result, lambda variant: dict(curve_style(variant), linestyle="-" if variant == "full" else "--"))
    for panel, m in zip(panels[0], runs.modalities):
        panel.set(title=NAMES[m], xlabel="epoch")
    panels[0, 0].set_ylabel("mean probability of the gold class")
    panels[0, -1].legend(loc="lower right")
    fig.suptitle(title)
    save_figure(fig, path)


def _curves_per_modality(runs: SweepRuns, result: dict, style):
    """One panel per modality (a shared y axis) with each variant's ``result["curves"]`` as a mean ±
    std band, drawn in ``style(variant)``, and the start of modulation marked."""
    modalities = list(runs.modalities)
    fig, panels = plt.subplots(1, len(modalities), figsize=(4.5 * len(modalities), 4), sharey=True,
                               squeeze=False, constrained_layout=True)
    for panel, m in zip(panels[0], modalities):
        for variant, per_modality in result["curves"].items():
            series = per_modality[m]
            _band(panel, [int(e) for e in series], list(series.values()), **style(variant))
        _mark_modulation(panel, runs)
    return fig, panels


@paper_style
def plot_gaps(runs: SweepRuns, result: dict, path, *, title: str) -> None:
    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows) + 3), 4.5), constrained_layout=True)
    x = np.arange(len(rows))
    for offset, split, hatch in ((-0.2, "test", None), (0.2, "dev", "//")):
        means, stds = np.array([_stat(row[f"gap_{split}"]) for row in rows]).T
        ax.bar(x + offset, means, 0.4, yerr=stds, capsize=3, color=[_SUBSET_COLOURS[row["kind"]] for row in rows],
               hatch=hatch, edgecolor="black", linewidth=0.5)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, [modality_names(row["variant"]) for row in rows], rotation=20)
    ax.set(ylabel=f"F1 of the full model ({runs.full}) − F1 of the variant")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c, label=f"{k}s of modalities") for k, c in _SUBSET_COLOURS.items()]
    handles += [plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="black", label="test"),
                plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="black", hatch="//", label="dev")]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False,
               title="above 0: the full model is better", title_fontsize=9)
    ax.set_title(title)
    save_figure(fig, path)


@paper_style
def plot_ratios(runs: SweepRuns, result: dict, path, *, title: str) -> None:
    fig, panels = _curves_per_modality(runs, result, curve_style)
    for panel, m in zip(panels[0], runs.modalities):
        panel.axhline(1.0, color="grey", linewidth=0.8, linestyle=":")
        panel.set(title=f"ρ of {NAMES[m]}", xlabel="epoch")
    panels[0, 0].set_ylabel("disparity ratio ρ (weakest modality: 1)")
    panels[0, -1].legend(loc="upper right")
    fig.suptitle(title)
    save_figure(fig, path)


@paper_style
def plot_robustness(runs: SweepRuns, result: dict, path, *, title: str) -> None:
    modalities = list(runs.modalities)
    levels = result["levels"]
    columns = len(modalities) + (len(modalities) > 1)
    fig, panels = plt.subplots(1, columns, figsize=(4.2 * columns, 4.2), sharey=True, squeeze=False,
                               constrained_layout=True)
    for panel, m in zip(panels[0], modalities):
        for row in result["rows"]:
            _band(panel, levels, row["noise"][m], marker="o", **curve_style(row["variant"]))
        panel.set(title=f"noise on {NAMES[m]}", xlabel="σ (training-split standard deviations)", ylim=(0, None))
    if len(modalities) > 1:
        panel = panels[0, -1]
        groups = ["none", *modalities]
        x = np.arange(len(groups))
        width = 0.8 / len(result["rows"])
        for i, row in enumerate(result["rows"]):
            stats = [row["clean"], *(row["missing"][m] for m in modalities)]
            means, stds = np.array([_stat(s) for s in stats]).T
            panel.bar(x + (i - (len(result["rows"]) - 1) / 2) * width, means, width, yerr=stds, capsize=2,
                      color=curve_style(row["variant"])["color"], edgecolor="black", linewidth=0.4)
        panel.set_xticks(x, ["nothing"] + [NAMES[m] for m in modalities])
        panel.set(title="one modality missing at test time", xlabel="dropped modality")
    panels[0, 0].set_ylabel("test weighted F1")
    panels[0, 0].legend(loc="lower left")
    fig.suptitle(title)
    save_figure(fig, path)


def _mark_modulation(ax, runs: SweepRuns) -> None:
    """Whole epochs on the x axis, and a line at the full model's first modulated epoch if its runs reach it."""
    whole_epochs(ax)
    start = runs.first_modulated_epoch()
    if start is None:
        return
    ax.axvline(start, color="grey", linewidth=0.8, linestyle="--")
    ax.annotate("modulation starts", (start, 0.02), xycoords=("data", "axes fraction"), fontsize=8, color="grey",
                xytext=(3, 0), textcoords="offset points")


@paper_style
def plot_modulation(runs: SweepRuns, result: dict, path, *, title: str) -> None:
    modalities = list(runs.modalities)
    fig, axes = plt.subplots(2, len(modalities), figsize=(4.5 * len(modalities), 7), sharex=True, sharey="row",
                             squeeze=False, constrained_layout=True)
    for column, m in enumerate(modalities):
        for variant, per_modality in result["curves"].items():
            for row, key in enumerate(("coefficient", "update_norm")):
                if key == "coefficient" and variant in ("no-modulation", "no-grad-noise"):
                    continue  # no-modulation computes k but does not apply it; no-noise applies the full model's
                series = per_modality[m][key]
                _band(axes[row, column], [int(e) for e in series], list(series.values()), **curve_style(variant))
        axes[0, column].set(title=f"{NAMES[m]}: coefficient k applied")
        axes[1, column].set(title=f"{NAMES[m]}: encoder update ‖Δθ‖ per step", xlabel="epoch")
        for row in range(2):
            _mark_modulation(axes[row, column], runs)
    axes[0, 0].set_ylabel("k (1: not slowed)")
    axes[1, 0].set_ylabel("‖Δθ‖ of Adam's step")
    axes[0, -1].legend(loc="lower right")
    fig.suptitle(title)
    save_figure(fig, path)


# --- the sweep's figure ---------------------------------------------------------------------------

@paper_style
def plot_variant_gaps(rows: list[dict], path, *, reference: str, title: str) -> None:
    """The pairwise-gap figure: per variant a bar of mean weighted F1 over seeds (from 0) with its std
    as an error bar, test and dev side by side; the ``reference`` variant's mean as a line (its std
    as a band), and each bar labelled with its gap to it. ``rows``: dicts with ``variant``, ``test``
    and ``dev`` (``stats.mean_std``), and ``kind`` (full, pair, single or ablation) for the colour."""
    names = [modality_names(row["variant"]) for row in rows]
    colours = [KINDS[row["kind"]][1] for row in rows]
    fig, panels = plt.subplots(1, 2, figsize=(max(10, 1.2 * len(rows) + 4), 5), sharey=True,
                               constrained_layout=True)
    for panel, split in zip(panels, ("test", "dev")):
        means = np.array([row[split]["mean"] for row in rows])
        stds = np.array([row[split]["std"] or 0.0 for row in rows])
        panel.bar(names, means, yerr=stds, capsize=4, color=colours, edgecolor="black", linewidth=0.5, zorder=2)
        panel.set_ylim(0, min(1.0, float((means + stds).max()) + 0.08))
        if reference in [row["variant"] for row in rows]:
            ref = rows[[row["variant"] for row in rows].index(reference)][split]
            panel.axhline(ref["mean"], color=KINDS["full"][1], linestyle="--", linewidth=1, zorder=3)
            panel.axhspan(ref["mean"] - (ref["std"] or 0), ref["mean"] + (ref["std"] or 0),
                          color=KINDS["full"][1], alpha=0.12, zorder=0)
            for x, (row, mean, std) in enumerate(zip(rows, means, stds)):
                if row["variant"] != reference:
                    panel.annotate(f"{mean - ref['mean']:+.3f}", (x, mean + std), ha="center", va="bottom",
                                   fontsize=9, xytext=(0, 2), textcoords="offset points")
        panel.set(title=f"{split} weighted F1 (label: gap to the full model)")
        panel.tick_params(axis="x", labelrotation=30)
    panels[0].set_ylabel("weighted F1, mean ± std over seeds")
    kinds = [kind for kind in KINDS if any(row.get("kind") == kind for row in rows)]
    handles = [plt.Rectangle((0, 0), 1, 1, color=KINDS[kind][1]) for kind in kinds]
    handles.append(plt.Line2D([], [], color=KINDS["full"][1], linestyle="--"))
    fig.legend(handles, [KINDS[kind][0] for kind in kinds] + ["full model's mean (band: its std)"],
               loc="outside lower center", ncols=len(handles), frameon=False)
    fig.suptitle(title)
    save_figure(fig, path)



PLOTS = {"unimodal": plot_unimodal, "scores": plot_scores, "gaps": plot_gaps, "ratios": plot_ratios,
         "modulation": plot_modulation, "robustness": plot_robustness}
