"""Training curves as a PNG: losses, dev weighted F1, and the disparity ratio per modality."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_training(history: list[dict], path, *, title: str) -> None:
    epochs = [r["epoch"] for r in history]
    fig, (losses, f1, ratios) = plt.subplots(1, 3, figsize=(15, 4), constrained_layout=True)
    losses.plot(epochs, [r["train"]["loss"] for r in history], label="train L")
    losses.plot(epochs, [r["train"]["feature"] for r in history], label="train L_feature")
    losses.plot(epochs, [r["dev"]["loss"] for r in history], label="dev L")
    losses.set(xlabel="epoch", ylabel="loss", title="losses")
    losses.legend()
    f1.plot(epochs, [r["dev"]["weighted_f1"] for r in history], marker="o")
    f1.set(xlabel="epoch", ylabel="weighted F1", title="dev weighted F1")
    for modality in history[0]["ratio"]:
        ratios.plot(epochs, [r["ratio"][modality] for r in history], label=f"rho_{modality}")
    ratios.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    ratios.set(xlabel="epoch", ylabel="disparity ratio", title="refined disparity ratio (mean per epoch)")
    ratios.legend()
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
