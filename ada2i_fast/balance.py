"""Refined disparity ratio, modulation coefficients and gradient modulation (SPEC §3), on device."""

from __future__ import annotations

import torch
from torch import Tensor

from .kernels import modulate_gradients


def disparity_ratios(scores: Tensor) -> Tensor:
    """rho_m = s_m / min_k s_k: the weakest modality gets exactly 1."""
    return scores / scores.min()


CURVES = ("method", "continuous")


def modulation_coefficients(ratios: Tensor, alpha: float, curve: str = "method") -> Tensor:
    """k_m = 1 - tanh(alpha * rho_m) where rho_m > 1, else 1 (``method``: SPEC §3, discontinuous at 1
    on purpose, so any modality just above the weakest is slowed by about tanh(alpha)), or
    k_m = 1 - tanh(alpha * (rho_m - 1)) (``continuous``: 1 at rho = 1, slowing a modality by how far
    it leads the weakest; not the method, an option to study it)."""
    shift = 1.0 if curve == "continuous" else 0.0
    return torch.where(ratios > 1, 1 - torch.tanh(alpha * (ratios - shift)), torch.ones_like(ratios))


def apply_modulation(
    encoder_parameters: list[list[torch.nn.Parameter]],
    coefficients: Tensor,
    *,
    noise: bool,
    generator: torch.Generator | None = None,
) -> None:
    """Scale modality m's encoder gradients by k_m (and add std-matched noise), in place, without syncs."""
    grads, modality = [], []
    for m, params in enumerate(encoder_parameters):
        for p in params:
            if p.grad is not None:
                grads.append(p.grad)
                modality.append(m)
    modulate_gradients(grads, modality, coefficients, noise, generator)
