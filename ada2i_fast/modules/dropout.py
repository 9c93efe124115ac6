"""The dropout module of every layer this package owns (``kernels.dropout``: counter-based masks
recomputed in backward on the CPU, torch's fused dropout on CUDA)."""

from __future__ import annotations

from torch import Tensor, nn

from ..kernels.dropout import dropout


class Dropout(nn.Module):
    """Inverted dropout: each element kept with probability ``1 - p`` and scaled by ``1 / (1 - p)``
    in training mode; the identity in eval mode."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, training=self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
