"""One optimisation step of the SPEC §3 recipe, free of host syncs from forward to optimizer step."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.func import functional_call

from ..config import TrainConfig
from ..modules.balance import clip_and_modulate_gradients, disparity_ratios, modulation_coefficients
from ..modules.batch import Batch
from ..modules.model import Ada2I, total_loss
from .distributed import SINGLE, Context
from .optim import Adam, sgd, step_with_scaled_updates
from .trace import StepHook


def make_optimizer(model: Ada2I, train_config: TrainConfig) -> torch.optim.Optimizer:
    """The recipe's optimizer with its learning rate and weight decay: ``optim.Adam`` (torch's fused Adam,
    one C pass on the CPU, which in bf16 also refreshes the model's bfloat16 weights) or, with
    ``optimizer="sgd"``, fused SGD with momentum. Both skip a step flagged non-finite (``found_inf``)
    without waiting for the device."""
    if train_config.optimizer == "sgd":
        return sgd(model.parameters(), lr=train_config.lr, weight_decay=train_config.weight_decay)
    bf16_weights = model.bf16_weights if train_config.precision == "bf16" else None
    return Adam(model.parameters(), lr=train_config.lr, weight_decay=train_config.weight_decay, bf16_weights=bf16_weights)


@dataclass(frozen=True)
class ShardStep:
    """This process's part in a step: ``share`` of the global batch's real utterances (0 for an
    empty shard; 1 for a process alone), whether this process was asked to stop, and its place in
    the run (``distributed.Context``)."""

    share: float = 1.0
    stop: bool = False
    context: Context = SINGLE


def train_step(
    model: Ada2I,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    train_config: TrainConfig,
    *,
    modulate: bool,
    generator: torch.Generator | None = None,
    shard: ShardStep | None = None,
    hook: StepHook | None = None,
) -> dict[str, torch.Tensor]:
    """forward -> loss -> backward -> all-reduce -> clip -> ratios -> (modulation) -> optimizer step.

    With ``modulation_target="update"`` the modulation's k multiplies each encoder's optimizer update
    instead of its gradient (the gradient noise, when on, is added as with the method). A step whose
    loss or gradient norm is not finite leaves the weights and the optimizer state as they were;
    ``skipped`` says so, ``nonfinite_<term>`` says which loss term was to blame, and the other logged
    values of that step read 0. ``precision == "bf16"`` runs the forward pass under bfloat16
    autocast. Everything returned is a detached device tensor: with the fused optimizer of
    :func:`make_optimizer` nothing here waits for the device. ``unimodal_score`` is each modality's
    mean probability of the gold class (s_m over the number of utterances).

    ``shard``: ``batch`` is this process's shard of a global batch (default: all of it, one
    process); see :func:`_all_reduce`. ``stop_requested`` counts the processes that asked to stop.
    ``hook`` (:class:`~ada2i_fast.training.trace.StepHook`) measures around the optimizer step
    (``--trace``: :class:`~ada2i_fast.training.trace.StepTrace`); what it returns joins the logs.
    """
    shard, hook = shard or ShardStep(), hook or StepHook()
    optimizer.zero_grad(set_to_none=True)
    terms, unimodal, scores, utterances = _forward(model, batch, bf16=train_config.precision == "bf16")
    (total_loss(terms) * shard.share).backward()
    terms, unimodal, scores, utterances, stop_requested = _all_reduce(model, terms, unimodal, scores, utterances, shard)
    loss = total_loss(terms)
    ratios = disparity_ratios(scores)
    coefficients = modulation_coefficients(ratios, train_config.alpha, train_config.modulation_curve)
    scaled_updates = modulate and train_config.modulation_target == "update"  # k scales the update, not the gradient
    grad_norm, encoder_norms = clip_and_modulate_gradients(
        list(model.parameters()), model.encoder_parameters(),
        (torch.ones_like(coefficients) if scaled_updates else coefficients) if modulate else None,
        max_norm=train_config.max_grad_norm, noise=train_config.grad_noise, generator=generator)
    hook.before_update(model, encoder_norms)
    skipped = ~(torch.isfinite(loss) & torch.isfinite(grad_norm))
    _step_unless(optimizer, skipped, (model.encoder_parameters(), coefficients) if scaled_updates else None)
    logs = {"loss": loss.detach(), **{name: value.detach() for name, value in terms.items()},
            "unimodal_loss": unimodal, "unimodal_score": scores / utterances, "ratios": ratios,
            "coefficients": coefficients}
    return {
        **{name: torch.where(skipped, 0.0, value) for name, value in logs.items()},
        "skipped": skipped,
        **{f"nonfinite_{name}": ~torch.isfinite(value.detach()) for name, value in terms.items()},
        "stop_requested": stop_requested,
        **hook.after_update(model),
    }


def _forward(model: Ada2I, batch: Batch, *, bf16: bool):
    """The loss terms (with their graphs), the detached unimodal losses, the disparity scores and
    the number of utterances."""
    with torch.autocast(batch.device.type, dtype=torch.bfloat16, enabled=bf16):
        output = functional_call(model, model.bf16_weights.parameters(), (batch,)) if bf16 else model(batch)
        terms = model.loss_terms(output)
    utterances = torch.full((), float(output.labels.numel()), device=output.scores.device)
    return terms, model.unimodal_losses(output).detach(), output.scores, utterances


def _all_reduce(model: Ada2I, terms: dict, unimodal, scores, utterances, shard: ShardStep):
    """The global batch's loss terms, unimodal losses, scores and utterances, and the number of
    processes that asked to stop. This shard's loss was weighted by ``shard.share`` before the
    backward pass; one all-reduce over the processes of ``shard.context`` (none for a process alone)
    sums the gradients, the weighted loss terms and unimodal losses and the disparity scores
    (:meth:`Context.all_reduce_step`), so everything after it is identical on every process."""
    values = [t.detach() * shard.share for t in terms.values()] + [unimodal * shard.share, scores, utterances]
    if shard.share == 0:  # an empty shard: its step ran for the gradients' layout; it adds exactly 0
        torch._foreach_zero_([p.grad for p in model.parameters() if p.grad is not None])
        values = [torch.zeros_like(v) for v in values]
    reduced, stop_requested = shard.context.all_reduce_step(list(model.parameters()), values, shard.stop)
    return dict(zip(terms, reduced)), *reduced[len(terms):], stop_requested


def _step_unless(optimizer: torch.optim.Optimizer, skipped: torch.Tensor, scaled_updates=None) -> None:
    """The optimizer's step unless ``skipped``; ``scaled_updates`` (encoder parameters per modality, k)
    multiplies modality m's encoder update by k_m."""
    step = optimizer.step if scaled_updates is None else lambda: step_with_scaled_updates(optimizer, *scaled_updates)
    if optimizer.defaults.get("fused"):
        optimizer.found_inf = skipped.float()  # the fused kernels skip the update on the device
        step()
    elif not skipped.item():  # other optimizers cannot skip without reading the flag
        step()
