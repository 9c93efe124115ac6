"""Sync-free gradient modulation over all encoder gradients, dispatched by backend."""

from __future__ import annotations

import torch
from torch import Tensor

from .modulation_torch import modulate_gradients_torch


def modulate_gradients(
    grads: list[Tensor], modality: list[int], coefficients: Tensor, noise: bool, generator: torch.Generator | None = None
) -> None:
    """Scale each gradient by its modality's coefficient and optionally add std-matched noise, in place."""
    modulate_gradients_torch(grads, modality, coefficients, noise, generator)
