"""Torch twin of the gradient modulation of SPEC §3, without host syncs.

Every encoder gradient of modality m is scaled by k_m; with ``noise`` it then gets
N(0, (std(g) + 1e-8)^2) added, std taken of the scaled gradient (unbiased, as ``Tensor.std``).

The stds come from ``Tensor.std`` per tensor (one stable pass each, no host sync); the noise of every tensor is drawn into one workspace of the
largest gradient's size and added with ``addcmul_``, so no gradient-sized temporary is allocated.
"""

from __future__ import annotations

import torch
from torch import Tensor

NOISE_EPS = 1e-8


def unbiased_stds(grads: list[Tensor]) -> list[Tensor]:
    """``[g.std() for g in grads]`` (unbiased) as device scalars; ``Tensor.std`` is stable when the
    mean dwarfs the spread, where Σg² − n·mean² loses every digit in float32."""
    return [g.std() for g in grads]


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
    noise_std = torch._foreach_add(unbiased_stds(grads), NOISE_EPS)
    workspace = torch.empty(max(g.numel() for g in grads), dtype=grads[0].dtype, device=grads[0].device)
    for g, std in zip(grads, noise_std):
        unit_noise = workspace[: g.numel()].view(g.shape).normal_(generator=generator)
        g.addcmul_(unit_noise, std)
