"""The literal tensor-ring interaction of one AFW layer: SPEC §2 written out, the test oracle.

This file is deliberately standalone: it imports nothing but torch and shares no helper with the
factored torch path (``tensor_ring_torch``) or the Triton path (``tensor_ring``), so a bug in their
projections, masked mean or chain products cannot hide by being reproduced here. It is also the
``"literal"`` backend. Per modality m, with H_m = h[m] of shape [B, T, H]:

    q1, k1, q2, k2 = four Linear(H -> R) of H_m         rows (q1, k1, q2, k2) of rank_weight[m] [4R, H]
    G_Q = q1 (x) q2,  G_K = k1 (x) k2                    outer products, [B, T, R, R]
    G_QK = G_Q * G_K                                     element-wise
    M_m = mean of G_QK over the dialogue's real utterances (over all T with ``mean_over_padding``)
    C_m = G_QK . M_l1 . M_l2 ...                         matrix products, l != m, in modality order
    A_m = Linear(R^2 -> H)(flatten(C_m))                 input index a*R + c for C_m[a, c]
    Y_m = A_m * H_m + beta * H_m

Shapes as in ``tensor_ring``: h [M, B, T, H], mask [B, T] bool, rank_weight [M, 4R, H], rank_bias [M, 4R],
att_weight [M, H, R*R], att_bias [M, H]. Returns ``(y, a)``, both [M, B, T, H].
"""

from __future__ import annotations

import torch
from torch import Tensor


def tensor_ring_literal(
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
    n_mod, b, t, hidden = h.shape
    r = rank_weight.shape[1] // 4

    # The dialogue-level summary M_m needs every modality's G_QK before any chain product.
    g_qk = []
    summaries = []
    for m in range(n_mod):
        x = h[m]  # [B, T, H]
        w, bias = rank_weight[m], rank_bias[m]
        q1 = x @ w[0 * r : 1 * r].T + bias[0 * r : 1 * r]  # [B, T, R]
        k1 = x @ w[1 * r : 2 * r].T + bias[1 * r : 2 * r]
        q2 = x @ w[2 * r : 3 * r].T + bias[2 * r : 3 * r]
        k2 = x @ w[3 * r : 4 * r].T + bias[3 * r : 4 * r]
        g_q = q1[..., :, None] * q2[..., None, :]  # [B, T, R, R], G_Q[a, c] = q1[a] q2[c]
        g_k = k1[..., :, None] * k2[..., None, :]
        g = g_q * g_k
        if mean_over_padding:
            summary = g.mean(dim=1)  # every padded row counts (the public code)
        else:
            real = mask.to(g.dtype)[:, :, None, None]  # [B, T, 1, 1]
            summary = (g * real).sum(dim=1) / real.sum(dim=1)  # the dialogue's own utterances only
        g_qk.append(g)
        summaries.append(summary)  # [B, R, R]

    ys, attentions = [], []
    for m in range(n_mod):
        c = g_qk[m]
        for other in range(n_mod):
            if other != m:
                c = c @ summaries[other][:, None]  # [B, T, R, R] @ [B, 1, R, R]
        a = c.reshape(b, t, r * r) @ att_weight[m].T + att_bias[m]  # [B, T, H]
        attentions.append(a)
        ys.append(a * h[m] + beta * h[m])
    return torch.stack(ys), torch.stack(attentions)
