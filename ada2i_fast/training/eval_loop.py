"""The evaluation loop: a model over one split -> loss, accuracy, weighted F1, the per-class report,
the confusion matrix, and each modality's own weighted F1 (the argmax of its un-normalised logits)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

from ..data import Split, iterate_batches
from ..modules.model import Ada2I
from .distributed import SINGLE, Context


@dataclass
class Evaluation:
    loss: float
    accuracy: float
    weighted_f1: float
    unimodal_weighted_f1: dict[str, float]
    labels: np.ndarray = field(repr=False)
    predictions: np.ndarray = field(repr=False)

    def report(self, classes) -> str:
        """The per-class precision / recall / F1 table."""
        return classification_report(
            self.labels,
            self.predictions,
            labels=list(range(len(classes))),
            target_names=list(classes),
            digits=4,
            zero_division=0,
        )

    def summary(self, classes) -> dict:
        table = classification_report(
            self.labels,
            self.predictions,
            labels=list(range(len(classes))),
            target_names=list(classes),
            output_dict=True,
            zero_division=0,
        )
        return {
            "loss": self.loss,
            "accuracy": self.accuracy,
            "weighted_f1": self.weighted_f1,
            "unimodal_weighted_f1": self.unimodal_weighted_f1,
            "per_class": {name: table[name] for name in classes},
            # rows: true class, columns: predicted class, in the order of ``classes``
            "confusion_matrix": confusion_matrix(self.labels, self.predictions, labels=list(range(len(classes)))).tolist(),
        }


def evaluate_split(
    model: Ada2I, split: Split, *, batch_size: int, device: torch.device, context: Context = SINGLE
) -> Evaluation:
    """Eval-mode pass over ``split``; the loss is L_cls + L_feature averaged over batches.

    In a process group (``context``; every rank calls this) rank r runs the batches r,
    r + world_size, ... whole, and the per-batch results are gathered in batch order, so every rank
    gets the Evaluation of a single process (the same batches, so the same numbers in both modes,
    up to float rounding on another device)."""
    rank, world_size = context.rank, context.world_size
    parts = _run_batches(model, split, batch_size, device, rank, world_size)
    if world_size > 1:
        parts = _in_batch_order(context.gather([tuple(x.cpu() for x in part) for part in parts]), world_size)
    losses, labels, predictions, unimodal = zip(*parts)
    y_true = torch.cat(labels).cpu().numpy()
    y_pred = torch.cat(predictions).cpu().numpy()
    per_modality = torch.cat(unimodal, dim=1).cpu().numpy()
    return Evaluation(
        loss=torch.stack(losses).mean().item(),
        accuracy=float(accuracy_score(y_true, y_pred)),
        weighted_f1=_weighted_f1(y_true, y_pred),
        unimodal_weighted_f1={m: _weighted_f1(y_true, p) for m, p in zip(model.config.modalities, per_modality)},
        labels=y_true,
        predictions=y_pred,
    )


@torch.inference_mode()
def _run_batches(model: Ada2I, split: Split, batch_size: int, device: torch.device, rank: int, world_size: int):
    """Per batch i with i % world_size == rank: (loss, labels, predictions, unimodal predictions), on ``device``."""
    was_training = model.training
    model.eval()
    parts = []
    try:
        batches = iterate_batches(split, model.config.modalities, batch_size, shuffle=False, every=(rank, world_size))
        for batch in batches:
            output = model(batch.to(device))
            predictions = output.log_probs.argmax(-1), output.unimodal_logits.argmax(-1)
            parts.append((model.loss(output), output.labels, *predictions))
    finally:
        model.train(was_training)
    return parts


def _in_batch_order(per_rank: list[list], world_size: int) -> list:
    """Interleave the ranks' parts back into batch order (rank r ran batches r, r + world_size, ...)."""
    ordered = []
    for i in range(sum(len(parts) for parts in per_rank)):
        ordered.append(per_rank[i % world_size][i // world_size])
    return ordered


def _weighted_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(f1_score(y_true, y_pred, average="weighted", zero_division=0))

