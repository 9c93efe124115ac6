"""Robustness at test time, measured the way MultiBench does (Liang et al., NeurIPS 2021): the test
weighted F1 of a trained model when one modality is missing (dropped from the model's input with
:meth:`Ada2I.restricted_to`, not zeroed) and when one modality's features are corrupted with
Gaussian noise of increasing strength.

Noise of level σ adds ``σ · std_d · ε`` to feature dimension d of every test utterance, with
``std_d`` the dimension's standard deviation over the training split (the scale the model learned
from) and ``ε ~ N(0, 1)`` drawn from a generator seeded per (modality, level), so every model of a
comparison sees the same corrupted features.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..data import Corpus, Split
from ..modalities import ORDER
from ..modules.model import Ada2I
from ..training.eval_loop import evaluate_split

NOISE_LEVELS = (0.0, 0.5, 1.0, 2.0, 4.0)


def corrupted(split: Split, modality: str, level: float, scale: np.ndarray, seed: int) -> Split:
    """``split`` with ``level · scale · N(0, 1)`` added to ``modality``'s features (a copy; other modalities shared)."""
    if level == 0:
        return split
    rng = np.random.default_rng([seed, ORDER.index(modality), int(round(level * 1000))])
    x = split.features[modality]
    noisy = x + level * scale.astype(np.float32) * rng.standard_normal(x.shape, dtype=np.float32)
    return dataclasses.replace(split, features={**split.features, modality: noisy})


def feature_scales(corpus: Corpus) -> dict[str, np.ndarray]:
    """Per modality, the standard deviation of each feature dimension over the training split."""
    return {m: np.asarray(x, dtype=np.float64).std(axis=0) for m, x in corpus.splits["train"].features.items()}


def robustness(model: Ada2I, corpus: Corpus, *, levels=NOISE_LEVELS, seed: int = 0, batch_size: int = 10,
               device: torch.device | str = "cpu") -> dict:
    """The test weighted F1 of ``model``: ``clean``; ``missing[m]`` without modality m (models of
    two or more modalities); ``noise[m][i]`` with m's features corrupted at ``levels[i]``."""
    device = torch.device(device)
    test, modalities = corpus.splits["test"], model.config.modalities
    score = lambda m, split: evaluate_split(m, split, batch_size=batch_size, device=device).weighted_f1  # noqa: E731
    scales = feature_scales(corpus)
    return dict(
        levels=list(levels),
        clean=score(model, test),
        missing={m: score(model.restricted_to(modalities.replace(m, "")), test) for m in modalities}
        if len(modalities) > 1 else {},
        noise={m: [score(model, corrupted(test, m, level, scales[m], seed)) for level in levels] for m in modalities},
    )
