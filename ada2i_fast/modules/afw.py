"""Adaptive Feature Weighting (SPEC §2): stacked tensor-ring interaction layers and the feature loss.

Parameters of all modalities are stacked along a leading modality axis so one op call covers a
whole layer; ``reference_checkpoint`` maps the public code's per-modality Linear layers onto them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..config import Semantics
from ..kernels import tensor_ring
from .dropout import Dropout
from .rows import real_rows


def _linear_init_(weight: Tensor, bias: Tensor) -> None:
    """nn.Linear's default initialisation (uniform within 1/sqrt(fan_in)) for stacked Linear layers."""
    bound = 1.0 / math.sqrt(weight.shape[-1])
    with torch.no_grad():
        weight.uniform_(-bound, bound)
        bias.uniform_(-bound, bound)


class AFWLayer(nn.Module):
    """One interaction layer for M modalities of hidden size H at tensor rank R."""

    def __init__(self, n_modalities: int, hidden: int, rank: int, beta: float, semantics: Semantics) -> None:
        super().__init__()
        m, h, r = n_modalities, hidden, rank
        self.rank_weight = nn.Parameter(torch.empty(m, 4 * r, h))  # kernels.RANK_PROJECTIONS, stacked
        self.rank_bias = nn.Parameter(torch.empty(m, 4 * r))
        self.att_weight = nn.Parameter(torch.empty(m, h, r * r))
        self.att_bias = nn.Parameter(torch.empty(m, h))
        self.map_weight = nn.Parameter(torch.empty(m, h, h))  # FC_m, the attention-mapping net
        self.map_bias = nn.Parameter(torch.empty(m, h))
        self.beta = beta
        self.semantics = semantics
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for weight, bias in (
            (self.rank_weight, self.rank_bias),
            (self.att_weight, self.att_bias),
            (self.map_weight, self.map_bias),
        ):
            _linear_init_(weight, bias)

    def forward(self, h: Tensor, mask: Tensor, flat_index: Tensor) -> tuple[Tensor, Tensor]:
        """``h`` [M, B, T, H] -> (y [M, B, T, H] before dropout, this layer's feature loss).

        ``flat_index`` [N] lists the real utterances of the [B*T] grid: the method's feature loss
        maps and compares only those rows; the public code's averages over every padded row too.
        """
        semantics = self.semantics
        y, a = tensor_ring(
            h,
            mask,
            self.rank_weight,
            self.rank_bias,
            self.att_weight,
            self.att_bias,
            self.beta,
            mean_over_padding=semantics.mean_over_padding,
        )
        m, b, t, hidden = h.shape
        rows = h.reshape(m, b * t, hidden)
        target = (a if semantics.feature_target == "attention" else y).reshape(m, b * t, hidden)
        if semantics.feature_rows == "real":
            rows, target = real_rows(rows, flat_index, 1), real_rows(target, flat_index, 1)
        mapped = torch.baddbmm(self.map_bias.unsqueeze(1), rows, self.map_weight.transpose(1, 2))
        return y, (mapped - target).abs().mean()  # the mean over modalities too (SPEC §2)


class AFW(nn.Module):
    """``mmt_nlayers`` AFW layers, each followed by dropout; returns the feature loss summed over layers."""

    def __init__(
        self, n_modalities: int, hidden: int, rank: int, beta: float, n_layers: int, drop_rate: float, semantics: Semantics
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(AFWLayer(n_modalities, hidden, rank, beta, semantics) for _ in range(n_layers))
        self.dropout = Dropout(drop_rate)

    def forward(self, h: Tensor, mask: Tensor, flat_index: Tensor) -> tuple[Tensor, Tensor]:
        feature_loss = h.new_zeros(())
        for layer in self.layers:
            y, loss = layer(h, mask, flat_index)
            h = self.dropout(y)
            feature_loss = feature_loss + loss
        return h, feature_loss
