"""Refined disparity ratio, modulation coefficients and gradient modulation (SPEC §3), on device."""

from __future__ import annotations

import torch
from torch import Tensor

from ..kernels import modulate_gradients
from ..kernels.modulation import clip_and_modulate


def disparity_ratios(scores: Tensor) -> Tensor:
    """rho_m = s_m / min_k s_k: the weakest modality gets exactly 1."""
    return scores / scores.min()


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


def clip_and_modulate_gradients(
    parameters: list[torch.nn.Parameter],
    encoder_parameters: list[list[torch.nn.Parameter]],
    coefficients: Tensor | None,
    *,
    max_norm: float,
    noise: bool,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Clip every gradient to the global 2-norm ``max_norm``, then (unless ``coefficients`` is None)
    modulate the encoders' as :func:`apply_modulation`, in one fused pass pair on the CPU
    (``kernels.modulation.clip_and_modulate``). Returns the norm before clipping and each modality's
    encoder gradient norm between clip and modulation ([M])."""
    modality_of = {id(p): m for m, params in enumerate(encoder_parameters) for p in params}
    with_grad = [p for p in parameters if p.grad is not None]
    modality = [modality_of.get(id(p), -1) for p in with_grad]
    total_norm, clipped = clip_and_modulate([p.grad for p in with_grad], modality, coefficients, max_norm, noise,
                                            generator)
    rows = [i for i, m in enumerate(modality) if m >= 0]
    squares = torch.zeros(len(encoder_parameters), dtype=clipped.dtype, device=clipped.device)
    squares.index_add_(0, torch.tensor([modality[i] for i in rows], device=clipped.device),
                       clipped[rows] ** 2)
    return total_norm, squares.sqrt()
