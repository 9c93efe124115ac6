"""Torch twin of the gradient modulation of SPEC §3, without host syncs.

Every encoder gradient of modality m is scaled by k_m; with ``noise`` it then gets
N(0, (std(g) + 1e-8)^2) added, std taken of the scaled gradient (unbiased, as ``Tensor.std``).
"""

from __future__ import annotations

import torch
from torch import Tensor

NOISE_EPS = 1e-8


def modulate_gradients_torch(
    grads: list[Tensor], modality: list[int], coefficients: Tensor, noise: bool, generator: torch.Generator | None
) -> None:
    """Modulate ``grads`` in place; ``modality[i]`` is the index into ``coefficients`` of ``grads[i]``."""
    if not grads:
        return
    scales = coefficients.to(grads[0].dtype).unbind()
    torch._foreach_mul_(grads, [scales[m] for m in modality])
    if not noise:
        return
    for g in grads:
        std = g.std() + NOISE_EPS
        g.add_(torch.randn(g.shape, generator=generator, dtype=g.dtype, device=g.device) * std)
