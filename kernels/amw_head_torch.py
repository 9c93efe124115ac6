"""Torch twin of the AMW head and the disparity scores (SPEC §2, §3, §5).

    z        [M, N, H]   flattened utterance features per modality
    weight   [C, M*H]    the classifier, column block m belongs to modality m
    bias     [C]
    labels   [N] or None
Returns ``(fused_logits [N, C], unimodal_logits [M, N, C], scores [M] or None)``.

``normalisation``: ``"class"`` normalises each class vector of W_m (the method), ``"feature"`` each
feature row of W_m across classes (the public code), ``"none"`` is the plain concat head.
Unimodal logits are always the un-normalised ``z_m W_m^T + b/M``; the score s_m sums their
softmax at the gold label over the batch and carries no gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

NORMALISATIONS = ("class", "feature", "none")


def amw_head_torch(z: Tensor, weight: Tensor, bias: Tensor, labels: Tensor | None, scale: float, normalisation: str):
    n_mod = z.shape[0]
    unimodal = torch.baddbmm((bias / n_mod).expand(n_mod, 1, -1), z, _class_blocks(weight, z).transpose(1, 2))
    if normalisation == "none":
        fused = unimodal.sum(0)
    else:
        fused = amw_head_contributions_torch(z, weight, scale, normalisation).sum(0) + bias
    scores = None
    if labels is not None:
        with torch.no_grad():
            gold = unimodal.detach().softmax(-1).gather(2, labels.expand(n_mod, -1).unsqueeze(-1))
            scores = gold.squeeze(-1).sum(1)
    return fused, unimodal, scores


def _class_blocks(weight: Tensor, z: Tensor) -> Tensor:
    """W [C, M*H] as its per-modality blocks [M, C, H]."""
    n_mod, _, hidden = z.shape
    return weight.reshape(weight.shape[0], n_mod, hidden).transpose(0, 1)


def amw_head_contributions_torch(z: Tensor, weight: Tensor, scale: float, normalisation: str) -> Tensor:
    """Each modality's exact share of the fused logits, ``[M, N, C]``, without the bias.

    ``contributions.sum(0) + bias`` equals the fused logits of :func:`amw_head_torch` (to float
    rounding): ``scale · cos`` per modality for ``"class"`` and ``"feature"``, ``z_m W_m^T`` for
    ``"none"``. The bias is shared by all modalities, so it stays out of every share.
    """
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {normalisation!r}; expected one of {', '.join(NORMALISATIONS)}")
    w_blocks = _class_blocks(weight, z)
    if normalisation == "none":
        return torch.bmm(z, w_blocks.transpose(1, 2))
    z_unit = F.normalize(z, dim=-1)
    w_unit = F.normalize(w_blocks, dim=2 if normalisation == "class" else 1)
    return scale * torch.bmm(z_unit, w_unit.transpose(1, 2))
