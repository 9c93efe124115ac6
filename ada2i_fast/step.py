"""One optimisation step of the SPEC §3 recipe, free of host syncs from forward to optimizer step."""

from __future__ import annotations

import torch

from .balance import apply_modulation, disparity_ratios, modulation_coefficients
from .batch import Batch
from .config import TrainConfig
from .model import Ada2I, total_loss


def make_optimizer(model: Ada2I, train_config: TrainConfig) -> torch.optim.Adam:
    """Adam with the recipe's weight decay; the fused implementation keeps its step counter off the host."""
    return torch.optim.Adam(
        model.parameters(), lr=train_config.lr, weight_decay=train_config.weight_decay, fused=True
    )


def train_step(
    model: Ada2I,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    train_config: TrainConfig,
    *,
    modulate: bool,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """forward -> loss -> backward -> clip -> ratios -> (modulation) -> optimizer step.

    ``train_config.precision == "bf16"`` runs the forward pass under bfloat16 autocast. Returns
    detached device tensors (loss terms, unimodal losses, ratios, coefficients) for logging;
    reading them is the caller's choice, so nothing here waits for the device.
    """
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(batch.device.type, dtype=torch.bfloat16, enabled=train_config.precision == "bf16"):
        output = model(batch)
        terms = model.loss_terms(output)
    loss = total_loss(terms)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), train_config.max_grad_norm)
    ratios = disparity_ratios(output.scores)
    coefficients = modulation_coefficients(ratios, train_config.alpha)
    if modulate:
        apply_modulation(model.encoder_parameters(), coefficients, noise=train_config.grad_noise, generator=generator)
    optimizer.step()
    return {
        "loss": loss.detach(),
        **{name: value.detach() for name, value in terms.items()},
        "unimodal_loss": model.unimodal_losses(output).detach(),
        "ratios": ratios,
        "coefficients": coefficients,
    }
