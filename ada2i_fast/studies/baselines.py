"""Context-free baselines a model of conversations must beat, scored like it (test weighted F1)."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from ..data import Corpus


def baseline_f1(corpus: Corpus, modality: str = "t") -> dict[str, float]:
    """Test weighted F1 of two context-free baselines: the training split's majority class, and a
    per-utterance logistic regression on ``modality``'s features (fitted on train)."""
    train, test = corpus.splits["train"], corpus.splits["test"]
    majority = np.full_like(test.labels, np.bincount(train.labels).argmax())
    regression = LogisticRegression(max_iter=2000).fit(train.features[modality], train.labels)
    return {
        "majority": float(f1_score(test.labels, majority, average="weighted", zero_division=0)),
        "logistic_regression": float(
            f1_score(test.labels, regression.predict(test.features[modality]), average="weighted", zero_division=0)
        ),
    }
