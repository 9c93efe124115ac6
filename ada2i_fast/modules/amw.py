"""Adaptive Modality Weighting head (SPEC §2, §5): cosine-normalised fusion, or the plain concat head."""

from __future__ import annotations

from torch import Tensor, nn

from ..config import Ada2IConfig
from ..kernels import amw_head
from ..kernels.amw_head_torch import amw_head_contributions_torch


class ClassifierHead(nn.Module):
    """One Linear(M*H -> C) whose column blocks are the per-modality class vectors."""

    def __init__(self, config: Ada2IConfig) -> None:
        super().__init__()
        self.fc_out = nn.Linear(config.n_modalities * config.hidden, config.num_classes)
        self.scale = config.semantics.cosine_scale
        self.normalisation = config.semantics.head_normalisation

    def forward(self, z: Tensor, labels: Tensor | None = None):
        """``z`` [M, N, H] -> (fused logits [N, C], unimodal logits [M, N, C], scores [M] or None)."""
        return amw_head(z, self.fc_out.weight, self.fc_out.bias, labels, self.scale, self.normalisation)

    def contributions(self, z: Tensor) -> Tensor:
        """``z`` [M, N, H] -> each modality's share of the fused logits [M, N, C], bias excluded:
        ``contributions(z).sum(0) + fc_out.bias`` is ``forward(z)[0]`` to float rounding."""
        return amw_head_contributions_torch(z, self.fc_out.weight, self.scale, self.normalisation)
