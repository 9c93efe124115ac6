"""The AMW cosine head with the disparity scores, dispatched by backend.

The Triton path computes, for all modalities in one pass over ``z``: the fused logits (cosine,
or plain concat for ``"none"``), the un-normalised unimodal logits and their gold-label softmax
summed into per-block score partials. Backward is two kernels: one over row blocks for ``dz``,
one over hidden-column blocks for ``dweight``; both cover the fused and the unimodal logits.

The cosine backward needs ``ẑ·∂ẑ`` per row and ``ŵ_c·∂ŵ_c`` per class, full reductions over H.
Both equal ``scale·Σ dfused·cos`` over classes (rows) or utterances (classes), so the forward
keeps the cosines ``[M, N, C]`` and the inverse row norms ``[M, N]`` and no kernel needs a
second pass or a cross-program reduction.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .amw_head_torch import NORMALISATIONS, amw_head_torch
from .backend import resolve, tl, triton


NORM_EPS: tl.constexpr = tl.constexpr(1e-12)  # F.normalize's default eps
_TILE_ELEMENTS = 4096  # BLOCK_N * BLOCK_C * BLOCK_H of the broadcast products


@triton.jit
def _row_tile(ptr, m, rows, cols, N, width):
    """Rows ``rows`` and columns ``cols`` of modality ``m`` of a contiguous ``[M, N, width]`` tensor, in fp32."""
    mask = (rows < N)[:, None] & (cols < width)[None, :]
    offsets = (m * N + rows)[:, None] * width + cols[None, :]
    return tl.load(ptr + offsets, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _weight_tile(w_ptr, m, cls, hid, C, H, NUM_MOD: tl.constexpr):
    """Classes ``cls`` and hidden columns ``hid`` of the block W_m of ``weight [C, M*H]``, in fp32."""
    mask = (cls < C)[:, None] & (hid < H)[None, :]
    offsets = cls[:, None] * (NUM_MOD * H) + m * H + hid[None, :]
    return tl.load(w_ptr + offsets, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _class_rnorm(w_ptr, m, C, H, NUM_MOD: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr):
    """``1 / max(‖W_m[c]‖, eps)`` for every class vector of W_m."""
    cls = tl.arange(0, BLOCK_C)
    sq = tl.zeros([BLOCK_C], tl.float32)
    for h0 in range(0, H, BLOCK_H):
        w = _weight_tile(w_ptr, m, cls, h0 + tl.arange(0, BLOCK_H), C, H, NUM_MOD)
        sq += tl.sum(w * w, axis=1)
    return 1.0 / tl.maximum(tl.sqrt(sq), NORM_EPS)


@triton.jit
def _feature_rnorm(w):
    """``1 / max(‖W_m[:, h]‖, eps)`` for every hidden column of a full-class weight tile."""
    return 1.0 / tl.maximum(tl.sqrt(tl.sum(w * w, axis=0)), NORM_EPS)


@triton.jit
def _raw_grad(d_fused_ptr, d_unimodal_ptr, m, rows, cls, N, C, COSINE: tl.constexpr, HAS_D_UNIMODAL: tl.constexpr):
    """The gradient reaching ``z_m W_m^T`` directly: the unimodal logits', plus the fused logits' without cosine."""
    d_raw = tl.zeros([rows.shape[0], cls.shape[0]], tl.float32)
    if HAS_D_UNIMODAL:
        d_raw += _row_tile(d_unimodal_ptr, m, rows, cls, N, C)
    if not COSINE:
        d_raw += _row_tile(d_fused_ptr, 0, rows, cls, N, C)
    return d_raw


@triton.jit
def _amw_head_forward_kernel(
    z_ptr, w_ptr, b_ptr, labels_ptr,
    fused_ptr, unimodal_ptr, cos_ptr, z_rnorm_ptr, score_partial_ptr,
    N, C, H, scale,
    NUM_MOD: tl.constexpr, COSINE: tl.constexpr, PER_CLASS: tl.constexpr, HAS_LABELS: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    cls = tl.arange(0, BLOCK_C)
    row_ok = rows < N
    out_mask = row_ok[:, None] & (cls < C)[None, :]
    out_offsets = rows[:, None] * C + cls[None, :]
    bias = tl.load(b_ptr + cls, mask=cls < C, other=0.0).to(tl.float32)
    if HAS_LABELS:
        gold = tl.load(labels_ptr + rows, mask=row_ok, other=-1)
    fused = tl.zeros([BLOCK_N, BLOCK_C], tl.float32)
    for m in tl.static_range(NUM_MOD):
        raw = tl.zeros([BLOCK_N, BLOCK_C], tl.float32)
        if COSINE:
            z_sq = tl.zeros([BLOCK_N], tl.float32)
            if PER_CLASS:
                w_rnorm = _class_rnorm(w_ptr, m, C, H, NUM_MOD, BLOCK_C, BLOCK_H)
            else:
                unit_dot = tl.zeros([BLOCK_N, BLOCK_C], tl.float32)
        for h0 in range(0, H, BLOCK_H):
            hid = h0 + tl.arange(0, BLOCK_H)
            z = _row_tile(z_ptr, m, rows, hid, N, H)
            w = _weight_tile(w_ptr, m, cls, hid, C, H, NUM_MOD)
            raw += tl.sum(z[:, None, :] * w[None, :, :], axis=2)
            if COSINE:
                z_sq += tl.sum(z * z, axis=1)
                if not PER_CLASS:
                    w_unit = w * _feature_rnorm(w)[None, :]
                    unit_dot += tl.sum(z[:, None, :] * w_unit[None, :, :], axis=2)
        unimodal = raw + bias[None, :] / NUM_MOD
        tl.store(unimodal_ptr + m * N * C + out_offsets, unimodal, mask=out_mask)
        if COSINE:
            z_rnorm = 1.0 / tl.maximum(tl.sqrt(z_sq), NORM_EPS)
            if PER_CLASS:
                cos = raw * z_rnorm[:, None] * w_rnorm[None, :]
            else:
                cos = unit_dot * z_rnorm[:, None]
            tl.store(cos_ptr + m * N * C + out_offsets, cos, mask=out_mask)
            tl.store(z_rnorm_ptr + m * N + rows, z_rnorm, mask=row_ok)
            fused += cos
        else:
            fused += raw
        if HAS_LABELS:
            logits = tl.where((cls < C)[None, :], unimodal, float("-inf"))
            exp = tl.exp(logits - tl.max(logits, axis=1)[:, None])
            gold_exp = tl.sum(tl.where(cls[None, :] == gold[:, None], exp, 0.0), axis=1)
            gold_prob = tl.where(row_ok, gold_exp / tl.sum(exp, axis=1), 0.0)
            tl.store(score_partial_ptr + m * tl.num_programs(0) + pid, tl.sum(gold_prob, axis=0))
    if COSINE:
        fused = scale * fused
    tl.store(fused_ptr + out_offsets, fused + bias[None, :], mask=out_mask)


@triton.jit
def _amw_head_backward_z_kernel(
    z_ptr, w_ptr, d_fused_ptr, d_unimodal_ptr, cos_ptr, z_rnorm_ptr, dz_ptr,
    N, C, H, scale,
    NUM_MOD: tl.constexpr, COSINE: tl.constexpr, PER_CLASS: tl.constexpr, HAS_D_UNIMODAL: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr,
):
    m = tl.program_id(1)
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cls = tl.arange(0, BLOCK_C)
    d_raw = _raw_grad(d_fused_ptr, d_unimodal_ptr, m, rows, cls, N, C, COSINE, HAS_D_UNIMODAL)
    if COSINE:
        d_cos = scale * _row_tile(d_fused_ptr, 0, rows, cls, N, C)
        z_rnorm = tl.load(z_rnorm_ptr + m * N + rows, mask=rows < N, other=0.0)
        radial = tl.sum(d_cos * _row_tile(cos_ptr, m, rows, cls, N, C), axis=1)  # ẑ·∂ẑ per row
        if PER_CLASS:
            w_rnorm = _class_rnorm(w_ptr, m, C, H, NUM_MOD, BLOCK_C, BLOCK_H)
    for h0 in range(0, H, BLOCK_H):
        hid = h0 + tl.arange(0, BLOCK_H)
        w = _weight_tile(w_ptr, m, cls, hid, C, H, NUM_MOD)
        dz = tl.sum(d_raw[:, :, None] * w[None, :, :], axis=1)
        if COSINE:
            if PER_CLASS:
                w_unit = w * w_rnorm[:, None]
            else:
                w_unit = w * _feature_rnorm(w)[None, :]
            d_unit = tl.sum(d_cos[:, :, None] * w_unit[None, :, :], axis=1)
            z_unit = _row_tile(z_ptr, m, rows, hid, N, H) * z_rnorm[:, None]
            dz += (d_unit - z_unit * radial[:, None]) * z_rnorm[:, None]
        mask = (rows < N)[:, None] & (hid < H)[None, :]
        tl.store(dz_ptr + (m * N + rows)[:, None] * H + hid[None, :], dz, mask=mask)


@triton.jit
def _amw_head_backward_weight_kernel(
    z_ptr, w_ptr, d_fused_ptr, d_unimodal_ptr, cos_ptr, z_rnorm_ptr, dw_ptr,
    N, C, H, scale,
    NUM_MOD: tl.constexpr, COSINE: tl.constexpr, PER_CLASS: tl.constexpr, HAS_D_UNIMODAL: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_H: tl.constexpr,
):
    m = tl.program_id(1)
    hid = tl.program_id(0) * BLOCK_H + tl.arange(0, BLOCK_H)
    cls = tl.arange(0, BLOCK_C)
    dw = tl.zeros([BLOCK_C, BLOCK_H], tl.float32)
    d_unit = tl.zeros([BLOCK_C, BLOCK_H], tl.float32)
    radial = tl.zeros([BLOCK_C], tl.float32)
    for n0 in range(0, N, BLOCK_N):
        rows = n0 + tl.arange(0, BLOCK_N)
        z = _row_tile(z_ptr, m, rows, hid, N, H)
        d_raw = _raw_grad(d_fused_ptr, d_unimodal_ptr, m, rows, cls, N, C, COSINE, HAS_D_UNIMODAL)
        dw += tl.sum(d_raw[:, :, None] * z[:, None, :], axis=0)
        if COSINE:
            d_fused = _row_tile(d_fused_ptr, 0, rows, cls, N, C)
            z_unit = z * tl.load(z_rnorm_ptr + m * N + rows, mask=rows < N, other=0.0)[:, None]
            d_unit += tl.sum(d_fused[:, :, None] * z_unit[:, None, :], axis=0)
            if PER_CLASS:
                radial += tl.sum(d_fused * _row_tile(cos_ptr, m, rows, cls, N, C), axis=0)
    if COSINE:
        w = _weight_tile(w_ptr, m, cls, hid, C, H, NUM_MOD)
        d_unit = scale * d_unit
        if PER_CLASS:
            w_rnorm = _class_rnorm(w_ptr, m, C, H, NUM_MOD, BLOCK_C, BLOCK_H)
            w_unit = w * w_rnorm[:, None]
            dw += (d_unit - w_unit * (scale * radial)[:, None]) * w_rnorm[:, None]
        else:
            w_rnorm = _feature_rnorm(w)
            w_unit = w * w_rnorm[None, :]
            dw += (d_unit - w_unit * tl.sum(w_unit * d_unit, axis=0)[None, :]) * w_rnorm[None, :]
    mask = (cls < C)[:, None] & (hid < H)[None, :]
    tl.store(dw_ptr + cls[:, None] * (NUM_MOD * H) + m * H + hid[None, :], dw, mask=mask)


def _blocks(n_classes: int, hidden: int) -> tuple[int, int, int]:
    block_c = triton.next_power_of_2(n_classes)
    block_h = min(triton.next_power_of_2(hidden), 64)
    block_n = max(1, min(64, _TILE_ELEMENTS // (block_c * block_h)))
    return block_n, block_c, block_h


class _AMWHead(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, weight, bias, labels, scale, normalisation):
        z, weight, bias = z.contiguous(), weight.contiguous(), bias.contiguous()
        n_mod, n, hidden = z.shape
        n_classes = weight.shape[0]
        block_n, block_c, block_h = _blocks(n_classes, hidden)
        n_blocks = triton.cdiv(n, block_n)
        fused = torch.empty(n, n_classes, device=z.device, dtype=z.dtype)
        unimodal = torch.empty(n_mod, n, n_classes, device=z.device, dtype=z.dtype)
        cos = torch.empty(n_mod, n, n_classes, device=z.device, dtype=torch.float32)
        z_rnorm = torch.empty(n_mod, n, device=z.device, dtype=torch.float32)
        score_partials = torch.empty(n_mod, n_blocks, device=z.device, dtype=torch.float32)
        _amw_head_forward_kernel[(n_blocks,)](
            z, weight, bias, z if labels is None else labels.contiguous(),
            fused, unimodal, cos, z_rnorm, score_partials,
            n, n_classes, hidden, float(scale),
            NUM_MOD=n_mod, COSINE=normalisation != "none", PER_CLASS=normalisation == "class",
            HAS_LABELS=labels is not None, BLOCK_N=block_n, BLOCK_C=block_c, BLOCK_H=block_h,
        )  # fmt: skip
        scores = None if labels is None else score_partials.sum(1).to(z.dtype)
        ctx.save_for_backward(z, weight, cos, z_rnorm)
        ctx.scale, ctx.normalisation, ctx.bias_dtype = float(scale), normalisation, bias.dtype
        ctx.set_materialize_grads(False)
        if scores is not None:
            ctx.mark_non_differentiable(scores)
        return fused, unimodal, scores

    @staticmethod
    def backward(ctx, d_fused, d_unimodal, _d_scores):
        z, weight, cos, z_rnorm = ctx.saved_tensors
        n_mod, n, hidden = z.shape
        n_classes = weight.shape[0]
        if d_fused is None and d_unimodal is None:
            return None, None, None, None, None, None
        d_fused = torch.zeros(n, n_classes, device=z.device, dtype=z.dtype) if d_fused is None else d_fused.contiguous()
        if d_unimodal is not None:
            d_unimodal = d_unimodal.contiguous()
        block_n, block_c, block_h = _blocks(n_classes, hidden)
        args = (z, weight, d_fused, d_fused if d_unimodal is None else d_unimodal, cos, z_rnorm)
        meta = dict(
            NUM_MOD=n_mod, COSINE=ctx.normalisation != "none", PER_CLASS=ctx.normalisation == "class",
            HAS_D_UNIMODAL=d_unimodal is not None, BLOCK_N=block_n, BLOCK_C=block_c, BLOCK_H=block_h,
        )  # fmt: skip
        dz = dw = db = None
        if ctx.needs_input_grad[0]:
            dz = torch.empty_like(z)
            grid = (triton.cdiv(n, block_n), n_mod)
            _amw_head_backward_z_kernel[grid](*args, dz, n, n_classes, hidden, ctx.scale, **meta)
        if ctx.needs_input_grad[1]:
            dw = torch.empty_like(weight)
            grid = (triton.cdiv(hidden, block_h), n_mod)
            _amw_head_backward_weight_kernel[grid](*args, dw, n, n_classes, hidden, ctx.scale, **meta)
        if ctx.needs_input_grad[2]:
            db = d_fused.float().sum(0)
            if d_unimodal is not None:
                db += d_unimodal.float().sum((0, 1)) / n_mod
            db = db.to(ctx.bias_dtype)
        return dz, dw, db, None, None, None


def amw_head(z: Tensor, weight: Tensor, bias: Tensor, labels: Tensor | None, scale: float, normalisation: str):
    """``(fused_logits, unimodal_logits, scores)``; see ``amw_head_torch`` for shapes and meaning."""
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {normalisation!r}; expected one of {NORMALISATIONS}")
    if resolve(z.device) == "triton":
        return _AMWHead.apply(z, weight, bias, labels, scale, normalisation)
    return amw_head_torch(z, weight, bias, labels, scale, normalisation)
