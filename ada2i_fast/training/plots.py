"""Pictures of training runs as PNGs (matplotlib, Agg backend): the curves of one run, the modality
balance and dev F1 of runs overlaid, a confusion matrix; :func:`save_figure` writes one atomically."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np
from matplotlib.ticker import MaxNLocator

from ..atomic import atomic_open
from ..modalities import NAMES

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


# Sizes that stay legible when a figure is shrunk to one column of a two-column paper.
PAPER_STYLE = {"font.size": 12, "axes.titlesize": 12, "axes.labelsize": 12, "legend.fontsize": 10,
               "xtick.labelsize": 10, "ytick.labelsize": 10, "figure.titlesize": 13}
FORMATS = ("png", "pdf", "svg")


def paper_style(plot):
    """``plot`` drawn with :data:`PAPER_STYLE` (matplotlib's global settings are left as they were)."""

    @functools.wraps(plot)
    def styled(*args, **kwargs):
        with plt.rc_context(PAPER_STYLE):
            return plot(*args, **kwargs)

    return styled


@dataclass(frozen=True)
class RunCurves:
    """One run's epoch records (the lines of its ``metrics.jsonl``) under a label, and its best-dev epoch."""

    label: str
    history: list[dict]
    best_epoch: int

    @property
    def epochs(self) -> list[int]:
        return [record["epoch"] for record in self.history]

    def series(self, *keys: str) -> np.ndarray:
        """The value at ``record[keys[0]][keys[1]]...`` of every epoch; NaN where absent or null."""
        values = []
        for record in self.history:
            for key in keys:
                record = record.get(key) if isinstance(record, dict) else None
            values.append(math.nan if record is None else float(record))
        return np.asarray(values)


@paper_style
def plot_training(history: list[dict], path, *, title: str) -> None:
    """One run: losses, dev weighted F1, and the disparity ratio per modality (a run of one modality
    has no ratio to draw: its ρ is 1 throughout)."""
    epochs = [r["epoch"] for r in history]
    modalities = list(history[0]["ratio"])
    balanced = len(modalities) > 1
    fig, panels = plt.subplots(1, 3 if balanced else 2, figsize=(15 if balanced else 10, 4), constrained_layout=True)
    losses, f1 = panels[:2]
    losses.plot(epochs, [r["train"]["loss"] for r in history], label="train L")
    losses.plot(epochs, [r["train"]["feature"] for r in history], label="train L_feature")
    losses.plot(epochs, [r["dev"]["loss"] for r in history], label="dev L")
    losses.set(xlabel="epoch", ylabel="loss", title="losses")
    losses.legend()
    f1.plot(epochs, [r["dev"]["weighted_f1"] for r in history], marker="o")
    f1.set(xlabel="epoch", ylabel="weighted F1", title="dev weighted F1")
    if balanced:
        ratios = panels[2]
        for modality in modalities:
            ratios.plot(epochs, [r["ratio"][modality] for r in history], label=f"ρ of {NAMES[modality]}")
        ratios.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        ratios.set(xlabel="epoch", ylabel="disparity ratio", title="refined disparity ratio (mean per epoch)")
        ratios.legend()
    for panel in panels:
        whole_epochs(panel)
    fig.suptitle(title)
    save_figure(fig, path)


def whole_epochs(ax) -> None:
    """Ticks at whole epochs only on ``ax``'s x axis (a short run would get 1.25, 1.5, ...)."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


@paper_style
def plot_balance(runs: Sequence[RunCurves], path) -> None:
    """Disparity ratio ρ_m (top row) and modulation coefficient k_m (bottom row) over epochs, one
    column per modality, runs overlaid; filled markers are epochs with gradient modulation."""
    modalities = modalities_of(runs)
    fig, axes = plt.subplots(2, len(modalities), figsize=(4.5 * len(modalities), 7), squeeze=False,
                             sharex=True, sharey="row", constrained_layout=True)
    for column, modality in enumerate(modalities):
        rho, k = axes[0, column], axes[1, column]
        rho.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        for colour, run in zip(run_colours(len(runs)), runs):
            _plot_modulated_curve(rho, run, run.series("ratio", modality), colour)
            _plot_modulated_curve(k, run, run.series("coefficient", modality), colour)
        rho.set(title=f"{NAMES[modality]}: disparity ratio ρ")
        k.set(title=f"{NAMES[modality]}: modulation coefficient k", xlabel="epoch")
        whole_epochs(k)  # shared with rho
    axes[0, 0].set_ylabel("ρ (weakest modality: 1)")
    axes[1, 0].set_ylabel("k (1: not slowed)")
    _legend_of_runs(fig, runs, extra="★ best dev epoch · filled markers: modulated epochs")
    save_figure(fig, path)


@paper_style
def plot_dev_f1(runs: Sequence[RunCurves], path) -> None:
    """Per modality, its own dev weighted F1 (solid) against the fused model's (dashed), runs overlaid."""
    modalities = modalities_of(runs)
    fig, axes = plt.subplots(1, len(modalities), figsize=(4.5 * len(modalities), 4), squeeze=False,
                             sharey=True, constrained_layout=True)
    for panel, modality in zip(axes[0], modalities):
        for colour, run in zip(run_colours(len(runs)), runs):
            fused = run.series("dev", "weighted_f1")
            panel.plot(run.epochs, run.series("dev", "unimodal_weighted_f1", modality), color=colour, marker=".")
            panel.plot(run.epochs, fused, color=colour, linestyle="--", alpha=0.7)
            _mark_best_epoch(panel, run, fused, colour)
        panel.set(title=f"{NAMES[modality]}'s own head (solid) vs fused (dashed)", xlabel="epoch")
        whole_epochs(panel)
    axes[0, 0].set_ylabel("dev weighted F1")
    _legend_of_runs(fig, runs, extra="★ best dev epoch")
    save_figure(fig, path)


def plot_confusion(matrix, classes: Sequence[str], path, *, title: str) -> None:
    """:func:`confusion_figure` written to ``path``."""
    save_figure(confusion_figure(matrix, classes, title=title), path)


@paper_style
def confusion_figure(matrix, classes: Sequence[str], *, title: str):
    """Counts per (true, predicted) class, coloured by the share of the true class's utterances."""
    counts = np.asarray(matrix, dtype=float)
    totals = counts.sum(1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    size = 1.0 + 0.75 * len(classes)
    fig, ax = plt.subplots(figsize=(size + 1.5, size), constrained_layout=True)
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for (true, predicted), count in np.ndenumerate(counts):
        colour = "white" if shares[true, predicted] > 0.6 else "black"
        ax.text(predicted, true, f"{int(count)}", ha="center", va="center", color=colour, fontsize=9)
    ticks = range(len(classes))
    ax.set_xticks(ticks, list(classes), rotation=45, ha="right")
    ax.set_yticks(ticks, list(classes))
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    fig.colorbar(image, ax=ax, label="share of the true class")
    return fig


def modalities_of(runs: Sequence[RunCurves]) -> list[str]:
    """Every modality any run records a ratio for, in the order they first appear."""
    seen: dict[str, None] = {}
    for run in runs:
        for record in run.history:
            seen.update(dict.fromkeys(record.get("ratio", {})))
    if not seen:
        raise ValueError("no run records a disparity ratio per modality")
    return list(seen)


def run_colours(n: int) -> list:
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return [cycle[i % len(cycle)] for i in range(n)]


def save_figure(fig, path) -> None:
    """Write ``fig`` atomically in the format its suffix names (png, pdf or svg)."""
    try:
        with atomic_open(path) as handle:
            fig.savefig(handle, format=Path(path).suffix.lstrip(".") or "png", dpi=150)
    finally:
        plt.close(fig)


def _plot_modulated_curve(ax, run: RunCurves, values: np.ndarray, colour) -> None:
    epochs = np.asarray(run.epochs)
    modulated = np.asarray([bool(record.get("modulated")) for record in run.history])
    ax.plot(epochs, values, color=colour)
    ax.scatter(epochs[modulated], values[modulated], color=colour, s=18, zorder=3)
    ax.scatter(epochs[~modulated], values[~modulated], facecolors="white", edgecolors=colour, s=18, zorder=3)
    _mark_best_epoch(ax, run, values, colour)


def _mark_best_epoch(ax, run: RunCurves, values: np.ndarray, colour) -> None:
    """A dotted vertical line at the run's best dev epoch and a star where the curve crosses it."""
    if run.best_epoch not in run.epochs:
        return
    ax.axvline(run.best_epoch, color=colour, linestyle=":", linewidth=1)
    ax.plot([run.best_epoch], [values[run.epochs.index(run.best_epoch)]], marker="*", markersize=13,
            color=colour, markeredgecolor="black", linestyle="none", zorder=4)


def _legend_of_runs(fig, runs: Sequence[RunCurves], *, extra: str) -> None:
    handles = [plt.Line2D([], [], color=colour) for colour in run_colours(len(runs))]
    labels = [f"{run.label} (best epoch {run.best_epoch})" for run in runs]
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(runs), 3), frameon=False,
               title=extra, title_fontsize="small")
