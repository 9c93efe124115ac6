"""Does the modulation reach the update? One picture from the Adam-aware balance study's analyses: each
modality's encoder update over the unmodulated run's (paired by seed) against the k that was applied, for the
method under Adam (gradient target), the update target under Adam, and the method under SGD. On the diagonal
the update is scaled by k, as scaling the gradient does under SGD; on the horizontal line at 1 it is not
scaled at all.

    python benchmarks/plot_update_vs_k.py benchmarks/results/balance-adam

reads ``complementary/modulation.json`` and ``complementary-sgd/modulation.json`` (``analyze modulation``'s
output) and writes ``update-vs-k.png`` beside them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ada2i_fast.modalities import NAMES  # noqa: E402

SERIES = (  # (study folder, variant, label, colour)
    ("complementary", "full", "Adam, gradient target (the method)", "tab:red"),
    ("complementary", "update-target", "Adam, update target", "tab:green"),
    ("complementary-sgd", "full", "SGD, gradient target (the method)", "tab:blue"),
)
MARKERS = {"t": "o", "a": "s", "v": "^"}


def points(results: Path, study: str, variant: str) -> list[tuple[str, dict, dict]]:
    """(modality, k, update ratio) of one variant, as mean/std statistics over seeds; none when the
    study has not been analysed (yet)."""
    path = results / study / "modulation.json"
    if not path.is_file():
        print(f"{path}: not there; {study}'s {variant} left out of the picture")
        return []
    rows = json.loads(path.read_text())["rows"]
    if f"update_ratio_{variant}" not in rows[0]:
        raise SystemExit(f"error: {path} has no update ratio for {variant!r}; was the study traced and finished?")
    return [(row["modality"], row[f"k_{variant}"], row[f"update_ratio_{variant}"]) for row in rows]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="the study's results folder (benchmarks/results/balance-adam)")
    args = parser.parse_args(argv)

    fig, ax = plt.subplots(figsize=(6.2, 5))
    ax.plot([0, 1.5], [0, 1.5], color="grey", lw=1, ls="--", label="update × k (what SGD gives)")
    ax.axhline(1, color="grey", lw=1, ls=":", label="update unchanged")
    for study, variant, label, colour in SERIES:
        for i, (modality, k, ratio) in enumerate(points(args.results, study, variant)):
            ax.errorbar(k["mean"], ratio["mean"], xerr=k["std"], yerr=ratio["std"], fmt=MARKERS[modality],
                        color=colour, capsize=3, label=label if i == 0 else None)
            ax.annotate(NAMES[modality], (k["mean"], ratio["mean"]), textcoords="offset points", xytext=(6, -10),
                        fontsize=8, color=colour)
    ax.set(xlabel="k applied (mean over modulated epochs)", ylabel="encoder update / unmodulated run's",
           title="Does the modulation reach the update?\nsynthetic MELD, complementary, 3 seeds (mean ± std)",
           xlim=(0, 1.5), ylim=(0, 1.5))
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    out = args.results / "update-vs-k.png"
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
