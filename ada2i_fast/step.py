"""One optimisation step of the SPEC §3 recipe, free of host syncs from forward to optimizer step."""

from __future__ import annotations

import torch

from .balance import apply_modulation
from .batch import Batch
from .model import Ada2I, total_loss


def make_optimizer(model: Ada2I) -> torch.optim.Adam:
    """Adam with the recipe's weight decay; the fused implementation keeps its step counter off the host."""
    config = model.config
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True)


def train_step(
    model: Ada2I,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    *,
    modulate: bool,
    generator: torch.Generator | None = None,
    precision: str = "fp32",
) -> dict[str, torch.Tensor]:
    """forward -> loss -> backward -> clip -> (modulation) -> optimizer step.

    ``precision="bf16"`` runs the forward pass under bfloat16 autocast. Returns detached device
    tensors (loss terms, ratios, coefficients) for logging; reading them is the caller's choice,
    so nothing here waits for the device.
    """
    config = model.config
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(batch.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        output = model(batch)
        terms = model.loss_terms(output)
    loss = total_loss(terms)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
    if modulate:
        apply_modulation(
            model.encoder_parameters(), output.coefficients, noise=config.grad_noise, generator=generator
        )
    optimizer.step()
    unimodal = torch.stack(
        [torch.nn.functional.cross_entropy(logits.detach(), output.labels) for logits in output.unimodal_logits]
    )
    return {
        "loss": loss.detach(),
        **{name: value.detach() for name, value in terms.items()},
        "unimodal_loss": unimodal,
        "ratios": output.ratios,
        "coefficients": output.coefficients,
    }
