"""The AMW cosine head with the disparity scores, dispatched by backend."""

from __future__ import annotations

from torch import Tensor

from .amw_head_torch import NORMALISATIONS, amw_head_torch


def amw_head(z: Tensor, weight: Tensor, bias: Tensor, labels: Tensor | None, scale: float, normalisation: str):
    """``(fused_logits, unimodal_logits, scores)``; see ``amw_head_torch`` for shapes and meaning."""
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {normalisation!r}; expected one of {NORMALISATIONS}")
    return amw_head_torch(z, weight, bias, labels, scale, normalisation)
