"""Scaled dot-product attention over a dialogue's utterances with padded keys masked and dropout on
the attention weights: ``dropout(softmax(q kᵀ / √d, mask)) v``, [..., T, d_head].

Without dropout torch's fused attention runs. With it, on CUDA (``triton``) torch's fused attention
with its own dropout; on the CPU (``native``) :class:`_DropoutAttention`, whose backward pass
recomputes the dropped weights from the softmax output and the dropout seed
(``kernels.dropout``), so a step keeps one [B, heads, T, T] tensor per attention instead of two
(torch's CPU attention would draw a ``bernoulli_`` mask over every weight). Elsewhere
(``torch``) the same ops unfused.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import cpu_native
from .backend import resolve
from .dropout import dropout, native_dropout, new_seed


class _DropoutAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor, p: float) -> Tensor:
        weights = _masked_softmax(q, k, key_mask)
        seed = new_seed()
        out = torch.matmul(native_dropout(weights, p, seed), v)
        ctx.save_for_backward(q, k, v, weights)
        ctx.p, ctx.seed = p, seed
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        q, k, v, weights = ctx.saved_tensors
        grad_v = torch.matmul(native_dropout(weights, ctx.p, ctx.seed).transpose(-2, -1), grad)
        grad_weights = native_dropout(torch.matmul(grad, v.transpose(-2, -1)), ctx.p, ctx.seed)
        grad_scores = torch.ops.aten._softmax_backward_data(grad_weights, weights, -1, weights.dtype) * q.shape[-1] ** -0.5
        return torch.matmul(grad_scores, k), torch.matmul(grad_scores.transpose(-2, -1), q), grad_v, None, None


def _masked_softmax(q: Tensor, k: Tensor, key_mask: Tensor) -> Tensor:
    scores = torch.matmul(q, k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
    return torch.softmax(scores.masked_fill(~key_mask, float("-inf")), dim=-1)


def attention(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor, p: float = 0.0) -> Tensor:
    """Attention of ``q``, ``k``, ``v`` [..., T, d_head] over the keys ``key_mask`` marks real (a bool
    tensor broadcastable to [..., T, T]), with dropout ``p`` on the weights; see the module docstring."""
    impl = resolve(q.device)
    if p == 0 or impl == "triton":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=p)
    if impl == "native" and q.dtype in cpu_native.NATIVE_DTYPES and q.dtype == k.dtype == v.dtype:
        return _DropoutAttention.apply(q, k, v, key_mask, p)
    return torch.matmul(dropout(_masked_softmax(q, k, key_mask), p), v)
