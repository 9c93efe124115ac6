"""The evaluation loop: a model over one split -> loss, accuracy, weighted F1 and the per-class report."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.metrics import accuracy_score, classification_report, f1_score

from .data import Split, iterate_batches
from .model import Ada2I


@dataclass
class Evaluation:
    loss: float
    accuracy: float
    weighted_f1: float
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
            "per_class": {name: table[name] for name in classes},
        }


@torch.inference_mode()
def evaluate_split(model: Ada2I, split: Split, *, batch_size: int, device: torch.device) -> Evaluation:
    """Eval-mode pass over ``split``; the loss is L_cls + L_feature averaged over batches."""
    was_training = model.training
    model.eval()
    losses, labels, predictions = [], [], []
    try:
        for batch in iterate_batches(split, model.config.modalities, batch_size, shuffle=False):
            output = model(batch.to(device))
            losses.append(model.loss(output))
            labels.append(output.labels)
            predictions.append(output.log_probs.argmax(-1))
    finally:
        model.train(was_training)
    y_true = torch.cat(labels).cpu().numpy()
    y_pred = torch.cat(predictions).cpu().numpy()
    return Evaluation(
        loss=torch.stack(losses).mean().item(),
        accuracy=float(accuracy_score(y_true, y_pred)),
        weighted_f1=float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        labels=y_true,
        predictions=y_pred,
    )

