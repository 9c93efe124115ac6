"""The tensor-ring interaction of one AFW layer, dispatched to Triton, factored torch or literal torch."""

from __future__ import annotations

from torch import Tensor

from .backend import resolve
from .tensor_ring_torch import tensor_ring_factored, tensor_ring_literal


def tensor_ring(
    h: Tensor,
    mask: Tensor,
    rank_weight: Tensor,
    rank_bias: Tensor,
    att_weight: Tensor,
    att_bias: Tensor,
    beta: float,
    *,
    mean_over_padding: bool = False,
) -> tuple[Tensor, Tensor]:
    """``(y, a)`` of one AFW layer for all modalities; see ``tensor_ring_torch`` for the shapes."""
    impl = {"literal": tensor_ring_literal, "torch": tensor_ring_factored, "triton": tensor_ring_factored}[
        resolve(h.device)
    ]
    return impl(h, mask, rank_weight, rank_bias, att_weight, att_bias, beta, mean_over_padding=mean_over_padding)
