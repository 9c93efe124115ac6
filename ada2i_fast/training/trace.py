"""What :func:`~ada2i_fast.training.step.train_step` lets a caller measure around its optimizer step,
and ``--trace``'s measurements: per modality, the 2-norm of its encoder's gradients after clipping,
before and after modulation, and of the change the optimizer step made to its encoder's weights.

The hook only reads: a traced run trains bit for bit as an untraced one (tested), and an untraced
step measures nothing.
"""

from __future__ import annotations

import torch

from ..modules.model import Ada2I


class StepHook:
    """Called by ``train_step`` once the gradients are final (clipped and modulated) and once the
    optimizer has stepped (or skipped); this one measures nothing."""

    def before_update(self, model: Ada2I, encoder_norms: torch.Tensor) -> None:
        """``encoder_norms``: [M] each modality's encoder gradient norm between clip and modulation."""

    def after_update(self, model: Ada2I) -> dict[str, torch.Tensor]:
        """The step's measurements, added to its logs."""
        return {}


class StepTrace(StepHook):
    """``--trace``: ``grad_norm_before``, ``grad_norm_after`` and ``update_norm`` ([M] device tensors)."""

    def before_update(self, model: Ada2I, encoder_norms: torch.Tensor) -> None:
        self.gradient_norms = {"grad_norm_before": encoder_norms, "grad_norm_after": encoder_grad_norms(model)}
        self.weights_before = [[p.detach().clone() for p in params] for params in model.encoder_parameters()]

    def after_update(self, model: Ada2I) -> dict[str, torch.Tensor]:
        update_norm = torch.stack([
            torch.linalg.vector_norm(torch.stack(torch._foreach_norm(torch._foreach_sub([p.detach() for p in params], old))))
            for params, old in zip(model.encoder_parameters(), self.weights_before)
        ])
        return {**self.gradient_norms, "update_norm": update_norm}


def encoder_grad_norms(model: Ada2I) -> torch.Tensor:
    """[M] the 2-norm of each modality's encoder gradients, on the device."""
    return torch.stack([
        torch.linalg.vector_norm(torch.stack(torch._foreach_norm([p.grad for p in params if p.grad is not None])))
        for params in model.encoder_parameters()
    ])
