"""The authors' training step, kept as the baseline our step is measured against.

It computes what their code computes: the literal tensor ring, a Python loop over utterances for
the disparity score with a host sync per utterance, and a per-parameter ``.std().item()`` for the
gradient noise, with the non-fused Adam. Only benchmarks use it.
"""

from __future__ import annotations

import contextlib
import math
import types

import torch

from torch import nn

from ada2i_fast import Ada2I, Ada2IConfig, Batch, TrainConfig, use_backend
from ada2i_fast.modules.dropout import Dropout
from ada2i_fast.modules.encoders import TransformerEncoder


def authors_model(config: Ada2IConfig) -> Ada2I:
    """Our model with torch's own dropout modules and transformer encoders that run over the whole
    padded grid, as the authors' code has."""
    model = Ada2I(config)
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, Dropout):
                setattr(parent, name, nn.Dropout(child.p))
        if isinstance(parent, TransformerEncoder):
            parent.forward = types.MethodType(_padded_encoder_forward, parent)
    return model


def _padded_encoder_forward(encoder: TransformerEncoder, x, mask, lengths, flat_index):
    return encoder.lin_out(encoder.transformer_encoder(x, src_key_padding_mask=~mask))


@contextlib.contextmanager
def padded_encoders():
    """Inside, every transformer encoder runs over the whole padded grid, as the authors' code does."""
    packed = TransformerEncoder.forward
    TransformerEncoder.forward = _padded_encoder_forward
    try:
        yield
    finally:
        TransformerEncoder.forward = packed


@torch.no_grad()
def authors_eval_forward(model: Ada2I, batch: Batch) -> torch.Tensor:
    """Their evaluation: eval mode, no autograd, the literal ring over the padded grid; class probabilities."""
    model.eval()
    with use_backend("literal"):
        return model(batch).log_probs.exp()


def authors_optimizer(model: Ada2I, recipe: TrainConfig) -> torch.optim.Adam:
    return torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)


def authors_train_step(
    model: Ada2I, batch: Batch, optimizer: torch.optim.Optimizer, recipe: TrainConfig, *, modulate: bool
) -> float:
    config = model.config
    optimizer.zero_grad()
    with use_backend("literal"):
        output = model(batch)
    loss = model.loss(output)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.max_grad_norm)
    if modulate:
        scores = [0.0] * config.n_modalities
        probabilities = output.unimodal_logits.detach().softmax(-1)
        for m in range(config.n_modalities):
            for i in range(output.labels.numel()):
                scores[m] += probabilities[m, i, output.labels[i]].item()
        weakest = min(scores)
        for m, params in enumerate(model.encoder_parameters()):
            ratio = scores[m] / weakest
            k = 1 - math.tanh(recipe.alpha * ratio) if ratio > 1 else 1.0
            for p in params:
                p.grad = p.grad * k
                if recipe.grad_noise:
                    p.grad = p.grad + torch.zeros_like(p.grad).normal_(0, p.grad.std().item() + 1e-8)
    optimizer.step()
    return loss.item()
