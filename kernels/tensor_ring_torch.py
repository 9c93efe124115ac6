"""The factored torch twin of the tensor-ring interaction (SPEC §6) and its helpers.

Shapes (M modalities, B dialogues, T padded length, H hidden, R rank):
    h           [M, B, T, H]  layer input per modality
    mask        [B, T] bool   real utterances
    rank_weight [M, 4R, H]    the four Linear(H -> R) stacked in RANK_PROJECTIONS order
    rank_bias   [M, 4R]
    att_weight  [M, H, R*R]   Linear(R^2 -> H), input index a*R + c for C[a, c]
    att_bias    [M, H]
``tensor_ring_factored`` returns ``(y, a)``: ``y = a * h + beta * h`` and the attention weights ``a``.
With ``mean_over_padding`` (the public code) M_m averages over all T rows; otherwise over the
dialogue's real utterances only.

``tensor_ring_factored`` uses the rank-one structure of SPEC §6 and is the CPU path; the Triton path reuses
``mean_weights`` and ``chain_products``. The test oracle, ``tensor_ring_literal``, lives in its own module and
shares none of these helpers.
"""

from __future__ import annotations

import torch
from torch import Tensor

RANK_PROJECTIONS = ("q1", "k1", "q2", "k2")  # the stacking order of rank_weight's 4R rows, every path


def rank_projections(h: Tensor, rank_weight: Tensor, rank_bias: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """q1, k1, q2, k2, each [M, B, T, R]."""
    m, b, t, hidden = h.shape
    proj = torch.baddbmm(rank_bias.unsqueeze(1), h.reshape(m, b * t, hidden), rank_weight.transpose(1, 2))
    return proj.reshape(m, b, t, 4, -1).unbind(3)


def mean_weights(mask: Tensor, t: int, mean_over_padding: bool, dtype: torch.dtype) -> Tensor:
    """[B, T] weights whose sum over T is 1 per dialogue: the masked or the plain mean."""
    if mean_over_padding:
        return torch.full(mask.shape, 1.0 / t, dtype=dtype, device=mask.device)
    weights = mask.to(dtype)
    return weights / weights.sum(dim=1, keepdim=True)


def chain_products(m_all: Tensor) -> Tensor:
    """P_m = product of M_l over l != m in modality order; [M, B, R, R] (identity for one modality)."""
    n_mod, b, r, _ = m_all.shape
    eye = torch.eye(r, dtype=m_all.dtype, device=m_all.device).expand(b, r, r)
    products = []
    for m in range(n_mod):
        p = eye
        for other in range(n_mod):
            if other != m:
                p = p @ m_all[other]
        products.append(p)
    return torch.stack(products)


def tensor_ring_factored(h, mask, rank_weight, rank_bias, att_weight, att_bias, beta, *, mean_over_padding=False):
    q1, k1, q2, k2 = rank_projections(h, rank_weight, rank_bias)
    u = q1 * k1
    v = q2 * k2
    weights = mean_weights(mask, h.shape[2], mean_over_padding, h.dtype)
    m_all = (u * weights.unsqueeze(-1)).transpose(-1, -2) @ v  # a three-operand einsum would form u v^T per row
    w = torch.einsum("mbtr,mbrc->mbtc", v, chain_products(m_all))
    n_mod, b, t, r = u.shape
    uw = (u.unsqueeze(-1) * w.unsqueeze(-2)).reshape(n_mod, b * t, r * r)
    a = torch.baddbmm(att_bias.unsqueeze(1), uw, att_weight.transpose(1, 2)).reshape(h.shape)
    return a * h + beta * h, a
