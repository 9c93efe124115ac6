"""The tensor-ring interaction of one AFW layer, dispatched to Triton, factored torch (``tensor_ring_torch``) or
the literal oracle (``tensor_ring_literal``).

The Triton path follows SPEC §6 with N = B*T rows per modality and float32 intermediates:

    forward   _rank_projection_forward_kernel   u = q1*k1, v = q2*k2 in the projection epilogue      [M, N, R]
              _ring_reduce_forward_kernel       M_m, P_m = prod_{l != m} M_l, w = v P_m, per dialogue
              _ring_attention_forward_kernel    a = b_att + W_att vec(u (x) w), y = a*h + beta*h
    backward  _ring_attention_backward_kernel   du, dw from dA = da + dy*h, u (x) w never stored
              (torch, [M, B, R, R] and [M, B, T, R] sized) dP, dM through the chain, du/dv of the mean
              _ring_weight_backward_kernel      dW_att = dA^T vec(u (x) w), db_att
              _rank_projection_backward_kernel  dh = dproj W_rank + dy*(a + beta)

Saved for backward: the inputs, ``a``, the mean weights [B, T] and M_m, P_m [M, B, R, R]; the
projections and w are recomputed.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from .backend import resolve, tl, triton
from .tensor_ring_literal import tensor_ring_literal
from .tensor_ring_torch import chain_products, mean_weights, tensor_ring_factored



@triton.jit
def _rank_projection_forward_kernel(
    h_ptr, rw_ptr, rb_ptr, out_ptr, N, H, R, out_stride_m, out_stride_g,
    PRODUCTS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr,
    DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
):
    """Rows [N, H] of one modality times the stacked (q1, k1, q2, k2) weights [4R, H]; stores (u, v) when
    PRODUCTS, else (q1, k1, q2, k2), one [N, R] block per entry at out_stride_g apart."""
    pid_n = tl.program_id(0)
    m = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    r = tl.arange(0, BLOCK_R)
    r_ok = r < R
    h_rows = h_ptr + m.to(tl.int64) * N * H + rows[:, None].to(tl.int64) * H
    w_base = rw_ptr + m * 4 * R * H
    q1 = tl.zeros((BLOCK_N, BLOCK_R), dtype=tl.float32)
    k1 = tl.zeros((BLOCK_N, BLOCK_R), dtype=tl.float32)
    q2 = tl.zeros((BLOCK_N, BLOCK_R), dtype=tl.float32)
    k2 = tl.zeros((BLOCK_N, BLOCK_R), dtype=tl.float32)
    for k0 in range(0, H, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        k_ok = k < H
        x = tl.load(h_rows + k[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0).to(DOT_DTYPE)
        w_tile = w_base + k[:, None] + r[None, :] * H
        w_ok = k_ok[:, None] & r_ok[None, :]
        q1 = tl.dot(x, tl.load(w_tile, mask=w_ok, other=0.0).to(DOT_DTYPE), q1, input_precision=PRECISION)
        k1 = tl.dot(x, tl.load(w_tile + R * H, mask=w_ok, other=0.0).to(DOT_DTYPE), k1, input_precision=PRECISION)
        q2 = tl.dot(x, tl.load(w_tile + 2 * R * H, mask=w_ok, other=0.0).to(DOT_DTYPE), q2, input_precision=PRECISION)
        k2 = tl.dot(x, tl.load(w_tile + 3 * R * H, mask=w_ok, other=0.0).to(DOT_DTYPE), k2, input_precision=PRECISION)
    b_base = rb_ptr + m * 4 * R + r
    q1 += tl.load(b_base, mask=r_ok, other=0.0).to(tl.float32)[None, :]
    k1 += tl.load(b_base + R, mask=r_ok, other=0.0).to(tl.float32)[None, :]
    q2 += tl.load(b_base + 2 * R, mask=r_ok, other=0.0).to(tl.float32)[None, :]
    k2 += tl.load(b_base + 3 * R, mask=r_ok, other=0.0).to(tl.float32)[None, :]
    out = out_ptr + m.to(tl.int64) * out_stride_m + rows[:, None] * R + r[None, :]
    out_ok = row_ok[:, None] & r_ok[None, :]
    if PRODUCTS:
        tl.store(out, q1 * k1, mask=out_ok)
        tl.store(out + out_stride_g, q2 * k2, mask=out_ok)
    else:
        tl.store(out, q1, mask=out_ok)
        tl.store(out + out_stride_g, k1, mask=out_ok)
        tl.store(out + 2 * out_stride_g, q2, mask=out_ok)
        tl.store(out + 3 * out_stride_g, k2, mask=out_ok)


@triton.jit
def _weighted_outer_sum(u_ptr, v_ptr, wt_ptr, rows_base, b, T, R, BLOCK_T: tl.constexpr, BLOCK_R: tl.constexpr):
    """sum_t wt[b, t] u_t v_t^T of one (modality, dialogue) as a [BLOCK_R, BLOCK_R] float32 tile."""
    r = tl.arange(0, BLOCK_R)
    acc = tl.zeros((BLOCK_R, BLOCK_R), dtype=tl.float32)
    for t0 in range(0, T, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)
        t_ok = t < T
        wt = tl.load(wt_ptr + b * T + t, mask=t_ok, other=0.0)
        offs = rows_base + t[:, None] * R + r[None, :]
        ok = t_ok[:, None] & (r[None, :] < R)
        u = tl.load(u_ptr + offs, mask=ok, other=0.0) * wt[:, None]
        v = tl.load(v_ptr + offs, mask=ok, other=0.0)
        acc = tl.dot(tl.trans(u), v, acc, input_precision="ieee")
    return acc


@triton.jit
def _store_chain_and_w(
    v_ptr, w_ptr, m_ptr, p_ptr, mat, chain, mod, b, n_dialogues, T, R,
    BLOCK_T: tl.constexpr, BLOCK_R: tl.constexpr,
):
    """Stores M_m and P_m of one (modality, dialogue) and its w = v P_m rows."""
    r = tl.arange(0, BLOCK_R)
    r_ok = r < R
    mat_offs = (mod * n_dialogues + b) * R * R + r[:, None] * R + r[None, :]
    mat_ok = r_ok[:, None] & r_ok[None, :]
    tl.store(m_ptr + mat_offs, mat, mask=mat_ok)
    tl.store(p_ptr + mat_offs, chain, mask=mat_ok)
    rows_base = (mod * n_dialogues + b).to(tl.int64) * T * R
    for t0 in range(0, T, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)
        offs = rows_base + t[:, None] * R + r[None, :]
        ok = (t < T)[:, None] & r_ok[None, :]
        v = tl.load(v_ptr + offs, mask=ok, other=0.0)
        tl.store(w_ptr + offs, tl.dot(v, chain, input_precision="ieee"), mask=ok)


@triton.jit
def _ring_reduce_forward_kernel(
    u_ptr, v_ptr, wt_ptr, m_ptr, p_ptr, w_ptr, T, R,
    N_MOD: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_R: tl.constexpr,
):
    """One program per dialogue: M_m for every modality (at most three), the chain products
    P_0 = M_1 M_2, P_1 = M_0 M_2, P_2 = M_0 M_1 with absent modalities as identity, and w = v P_m."""
    b = tl.program_id(0)
    n_dialogues = tl.num_programs(0)
    r = tl.arange(0, BLOCK_R)
    eye = (r[:, None] == r[None, :]).to(tl.float32)
    stride_mod = n_dialogues.to(tl.int64) * T * R
    rows_base = b.to(tl.int64) * T * R
    m0 = _weighted_outer_sum(u_ptr, v_ptr, wt_ptr, rows_base, b, T, R, BLOCK_T, BLOCK_R)
    if N_MOD >= 2:
        m1 = _weighted_outer_sum(u_ptr, v_ptr, wt_ptr, rows_base + stride_mod, b, T, R, BLOCK_T, BLOCK_R)
    else:
        m1 = eye
    if N_MOD >= 3:
        m2 = _weighted_outer_sum(u_ptr, v_ptr, wt_ptr, rows_base + 2 * stride_mod, b, T, R, BLOCK_T, BLOCK_R)
    else:
        m2 = eye
    p0 = tl.dot(m1, m2, input_precision="ieee")
    _store_chain_and_w(v_ptr, w_ptr, m_ptr, p_ptr, m0, p0, 0, b, n_dialogues, T, R, BLOCK_T, BLOCK_R)
    if N_MOD >= 2:
        p1 = tl.dot(m0, m2, input_precision="ieee")
        _store_chain_and_w(v_ptr, w_ptr, m_ptr, p_ptr, m1, p1, 1, b, n_dialogues, T, R, BLOCK_T, BLOCK_R)
    if N_MOD >= 3:
        p2 = tl.dot(m0, m1, input_precision="ieee")
        _store_chain_and_w(v_ptr, w_ptr, m_ptr, p_ptr, m2, p2, 2, b, n_dialogues, T, R, BLOCK_T, BLOCK_R)


@triton.jit
def _ring_attention_forward_kernel(
    h_ptr, u_ptr, w_ptr, aw_ptr, ab_ptr, y_ptr, a_ptr, beta, N, H, R,
    BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_R: tl.constexpr,
    DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
):
    """a = b_att + sum_i (u_i w) W_att[:, i*R:(i+1)*R]^T, one row i of u (x) w at a time, then y = a*h + beta*h."""
    pid_n = tl.program_id(0)
    pid_h = tl.program_id(1)
    m = tl.program_id(2)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    cols = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
    col_ok = cols < H
    r = tl.arange(0, BLOCK_R)
    r_ok = r < R
    rank_rows = m.to(tl.int64) * N * R + rows * R
    w = tl.load(w_ptr + rank_rows[:, None] + r[None, :], mask=row_ok[:, None] & r_ok[None, :], other=0.0)
    aw_tile = aw_ptr + m.to(tl.int64) * H * R * R + cols[None, :] * R * R + r[:, None]
    aw_ok = r_ok[:, None] & col_ok[None, :]
    acc = tl.zeros((BLOCK_N, BLOCK_H), dtype=tl.float32)
    for i in range(R):
        u_i = tl.load(u_ptr + rank_rows + i, mask=row_ok, other=0.0)
        aw = tl.load(aw_tile + i * R, mask=aw_ok, other=0.0).to(DOT_DTYPE)
        acc = tl.dot((u_i[:, None] * w).to(DOT_DTYPE), aw, acc, input_precision=PRECISION)
    a = acc + tl.load(ab_ptr + m * H + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    offs = m.to(tl.int64) * N * H + rows[:, None].to(tl.int64) * H + cols[None, :]
    ok = row_ok[:, None] & col_ok[None, :]
    h = tl.load(h_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    tl.store(a_ptr + offs, a.to(a_ptr.dtype.element_ty), mask=ok)
    tl.store(y_ptr + offs, (a * h + beta * h).to(y_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _attention_grad_tile(h_ptr, dy_ptr, da_ptr, offs, ok):
    """dA = da + dy*h for one [rows, hidden] tile, float32."""
    h = tl.load(h_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    return tl.load(da_ptr + offs, mask=ok, other=0.0).to(tl.float32) + dy * h


@triton.jit
def _ring_attention_backward_kernel(
    h_ptr, dy_ptr, da_ptr, u_ptr, w_ptr, aw_ptr, du_ptr, dw_ptr, N, H, R,
    BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_R: tl.constexpr,
    DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
):
    """With G_i = dA W_att[:, i*R:(i+1)*R] [N, R]: du[:, i] = sum_c G_i w, dw = sum_i u_i G_i."""
    pid_n = tl.program_id(0)
    m = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    r = tl.arange(0, BLOCK_R)
    r_ok = r < R
    rank_rows = m.to(tl.int64) * N * R + rows * R
    rank_offs = rank_rows[:, None] + r[None, :]
    rank_ok = row_ok[:, None] & r_ok[None, :]
    w = tl.load(w_ptr + rank_offs, mask=rank_ok, other=0.0)
    du = tl.zeros((BLOCK_N, BLOCK_R), dtype=tl.float32)
    dw = tl.zeros((BLOCK_N, BLOCK_R), dtype=tl.float32)
    aw_base = aw_ptr + m.to(tl.int64) * H * R * R
    for h0 in range(0, H, BLOCK_H):
        cols = h0 + tl.arange(0, BLOCK_H)
        col_ok = cols < H
        offs = m.to(tl.int64) * N * H + rows[:, None].to(tl.int64) * H + cols[None, :]
        d_att = _attention_grad_tile(h_ptr, dy_ptr, da_ptr, offs, row_ok[:, None] & col_ok[None, :])
        d_att = d_att.to(DOT_DTYPE)
        aw_tile = aw_base + cols[:, None] * R * R + r[None, :]
        aw_ok = col_ok[:, None] & r_ok[None, :]
        for i in range(R):
            aw = tl.load(aw_tile + i * R, mask=aw_ok, other=0.0).to(DOT_DTYPE)
            g = tl.dot(d_att, aw, input_precision=PRECISION)
            du += tl.where(r[None, :] == i, tl.sum(g * w, axis=1)[:, None], 0.0)
            dw += g * tl.load(u_ptr + rank_rows + i, mask=row_ok, other=0.0)[:, None]
    tl.store(du_ptr + rank_offs, du, mask=rank_ok)
    tl.store(dw_ptr + rank_offs, dw, mask=rank_ok)


@triton.jit
def _ring_weight_backward_kernel(
    h_ptr, dy_ptr, da_ptr, u_ptr, w_ptr, daw_ptr, dab_ptr, N, H, R,
    BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
    DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
):
    """dW_att[:, k] = sum_n dA[n] u[n, k // R] w[n, k % R] over a BLOCK_K slice of the R*R inputs; the
    first slice also writes db_att = sum_n dA[n]."""
    pid_h = tl.program_id(0)
    pid_k = tl.program_id(1)
    m = tl.program_id(2)
    cols = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
    col_ok = cols < H
    k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    k_ok = k < R * R
    acc = tl.zeros((BLOCK_H, BLOCK_K), dtype=tl.float32)
    bias_acc = tl.zeros((BLOCK_H,), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        rows = n0 + tl.arange(0, BLOCK_N)
        row_ok = rows < N
        offs = m.to(tl.int64) * N * H + rows[:, None].to(tl.int64) * H + cols[None, :]
        d_att = _attention_grad_tile(h_ptr, dy_ptr, da_ptr, offs, row_ok[:, None] & col_ok[None, :])
        rank_rows = (m.to(tl.int64) * N * R + rows * R)[:, None]
        uw_ok = row_ok[:, None] & k_ok[None, :]
        uw = tl.load(u_ptr + rank_rows + k[None, :] // R, mask=uw_ok, other=0.0)
        uw *= tl.load(w_ptr + rank_rows + k[None, :] % R, mask=uw_ok, other=0.0)
        acc = tl.dot(tl.trans(d_att.to(DOT_DTYPE)), uw.to(DOT_DTYPE), acc, input_precision=PRECISION)
        bias_acc += tl.sum(d_att, axis=0)
    out = daw_ptr + m.to(tl.int64) * H * R * R + cols[:, None] * R * R + k[None, :]
    tl.store(out, acc.to(daw_ptr.dtype.element_ty), mask=col_ok[:, None] & k_ok[None, :])
    if pid_k == 0:
        tl.store(dab_ptr + m * H + cols, bias_acc.to(dab_ptr.dtype.element_ty), mask=col_ok)


@triton.jit
def _rank_projection_backward_kernel(
    dproj_ptr, rw_ptr, dy_ptr, a_ptr, dh_ptr, beta, N, H, J,
    BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_J: tl.constexpr,
    DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
):
    """dh = dproj [N, J=4R] @ W_rank [J, H] + dy*(a + beta)."""
    pid_n = tl.program_id(0)
    pid_h = tl.program_id(1)
    m = tl.program_id(2)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    cols = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
    col_ok = cols < H
    j = tl.arange(0, BLOCK_J)
    j_ok = j < J
    rw = tl.load(rw_ptr + m * J * H + j[:, None] * H + cols[None, :], mask=j_ok[:, None] & col_ok[None, :], other=0.0)
    dproj_offs = m.to(tl.int64) * N * J + rows[:, None] * J + j[None, :]
    dproj = tl.load(dproj_ptr + dproj_offs, mask=row_ok[:, None] & j_ok[None, :], other=0.0)
    acc = tl.dot(dproj.to(DOT_DTYPE), rw.to(DOT_DTYPE), input_precision=PRECISION)
    offs = m.to(tl.int64) * N * H + rows[:, None].to(tl.int64) * H + cols[None, :]
    ok = row_ok[:, None] & col_ok[None, :]
    dy = tl.load(dy_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    a = tl.load(a_ptr + offs, mask=ok, other=0.0).to(tl.float32)
    tl.store(dh_ptr + offs, (acc + dy * (a + beta)).to(dh_ptr.dtype.element_ty), mask=ok)


_BLOCK_N = 32
_BLOCK_H = 64
MAX_RANK = 64  # one BLOCK_R tile holds a whole rank vector
MAX_MODALITIES = 3  # the reduce kernel unrolls a, t, v


def _block(n: int, cap: int) -> int:
    """A power-of-two tile >= n up to cap, never below 16 (tl.dot's minimum)."""
    return max(16, min(cap, triton.next_power_of_2(n)))


def check_triton_limits(n_modalities: int, rank: int) -> None:
    """Raise ``ValueError`` for a shape the Triton kernels do not compute (the torch paths take any)."""
    if n_modalities > MAX_MODALITIES or rank > MAX_RANK:
        raise ValueError(
            f"the Triton tensor ring takes at most {MAX_MODALITIES} modalities and rank <= {MAX_RANK}; got "
            f"{n_modalities} modalities at rank {rank}. Use the torch path: ada2i_fast.set_backend('torch')"
        )


def _dot_config(dtype: torch.dtype) -> dict:
    """tl.dot operand dtype and float32 input precision (following torch's matmul setting) for inputs of
    ``dtype``. The interpreter's tl.dot reads bfloat16 as raw integers, so there bfloat16 operands go as
    float32."""
    if dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET") == "1":
        dtype = torch.float32
    precision = "ieee" if dtype != torch.float32 or torch.get_float32_matmul_precision() == "highest" else "tf32"
    dot_dtype = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}[dtype]
    return {"DOT_DTYPE": dot_dtype, "PRECISION": precision}


def _project(h: Tensor, rank_weight: Tensor, rank_bias: Tensor, products: bool) -> Tensor:
    """[2, M, N, R] (u, v) when ``products``, else [4, M, N, R] (q1, k1, q2, k2); float32."""
    n_mod, b, t, hidden = h.shape
    n, r = b * t, rank_weight.shape[1] // 4
    out = torch.empty(2 if products else 4, n_mod, n, r, dtype=torch.float32, device=h.device)
    _rank_projection_forward_kernel[(triton.cdiv(n, _BLOCK_N), n_mod)](
        h, rank_weight, rank_bias, out, n, hidden, r, out.stride(1), out.stride(0),
        PRODUCTS=products, BLOCK_N=_BLOCK_N, BLOCK_K=_block(hidden, 64), BLOCK_R=_block(r, MAX_RANK),
        **_dot_config(h.dtype),
    )
    return out


def _reduce(u: Tensor, v: Tensor, weights: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """M_m and P_m [M, B, R, R] and w [M, N, R] from u, v [M, N, R] and the mean weights [B, T]."""
    n_mod, n, r = u.shape
    b, t = weights.shape
    m_all = torch.empty(n_mod, b, r, r, dtype=torch.float32, device=u.device)
    p = torch.empty_like(m_all)
    w = torch.empty_like(u)
    _ring_reduce_forward_kernel[(b,)](
        u, v, weights, m_all, p, w, t, r, N_MOD=n_mod, BLOCK_T=_block(t, 32), BLOCK_R=_block(r, MAX_RANK)
    )
    return m_all, p, w


def _attention(h: Tensor, u: Tensor, w: Tensor, att_weight: Tensor, att_bias: Tensor, beta: float):
    n_mod, b, t, hidden = h.shape
    n, r = b * t, u.shape[-1]
    y, a = torch.empty_like(h), torch.empty_like(h)
    block_h = _block(hidden, _BLOCK_H)
    _ring_attention_forward_kernel[(triton.cdiv(n, _BLOCK_N), triton.cdiv(hidden, block_h), n_mod)](
        h, u, w, att_weight, att_bias, y, a, beta, n, hidden, r,
        BLOCK_N=_BLOCK_N, BLOCK_H=block_h, BLOCK_R=_block(r, MAX_RANK), **_dot_config(h.dtype),
    )
    return y, a


def _attention_backward(h, dy, da, u, w, att_weight) -> tuple[Tensor, Tensor]:
    """du (through the attention only) and dw, [M, N, R] float32."""
    n_mod, b, t, hidden = h.shape
    n, r = b * t, u.shape[-1]
    du, dw = torch.empty_like(u), torch.empty_like(w)
    _ring_attention_backward_kernel[(triton.cdiv(n, _BLOCK_N), n_mod)](
        h, dy, da, u, w, att_weight, du, dw, n, hidden, r,
        BLOCK_N=_BLOCK_N, BLOCK_H=_block(hidden, _BLOCK_H), BLOCK_R=_block(r, MAX_RANK), **_dot_config(h.dtype),
    )
    return du, dw


def _weight_backward(h, dy, da, u, w, att_weight, att_bias) -> tuple[Tensor, Tensor]:
    n_mod, b, t, hidden = h.shape
    n, r = b * t, u.shape[-1]
    d_weight, d_bias = torch.empty_like(att_weight), torch.empty_like(att_bias)
    block_h, block_k = _block(hidden, _BLOCK_H), _block(r * r, 64)
    _ring_weight_backward_kernel[(triton.cdiv(hidden, block_h), triton.cdiv(r * r, block_k), n_mod)](
        h, dy, da, u, w, d_weight, d_bias, n, hidden, r,
        BLOCK_N=_BLOCK_N, BLOCK_H=block_h, BLOCK_K=block_k, **_dot_config(h.dtype),
    )
    return d_weight, d_bias


def _projection_backward(d_proj: Tensor, rank_weight: Tensor, dy: Tensor, a: Tensor, beta: float) -> Tensor:
    n_mod, b, t, hidden = dy.shape
    n, j = b * t, d_proj.shape[-1]
    dh = torch.empty_like(dy)
    block_h = _block(hidden, _BLOCK_H)
    _rank_projection_backward_kernel[(triton.cdiv(n, _BLOCK_N), triton.cdiv(hidden, block_h), n_mod)](
        d_proj, rank_weight, dy, a, dh, beta, n, hidden, j,
        BLOCK_N=_BLOCK_N, BLOCK_H=block_h, BLOCK_J=_block(j, 4 * MAX_RANK), **_dot_config(dy.dtype),
    )
    return dh


def _chain_products_backward(m_all: Tensor, d_p: Tensor) -> Tensor:
    """dL/dM [M, B, R, R] from dL/dP through P_m = prod_{l != m} M_l."""
    with torch.enable_grad():
        m_all = m_all.detach().requires_grad_()
        p = chain_products(m_all)
        if not p.requires_grad:  # a single modality: P is the identity
            return torch.zeros_like(m_all)
        return torch.autograd.grad(p, m_all, d_p)[0]


class TensorRingFunction(torch.autograd.Function):
    """``(y, a)`` of ``tensor_ring`` on the Triton kernels; arguments as there, all positional."""

    @staticmethod
    def forward(ctx, h, mask, rank_weight, rank_bias, att_weight, att_bias, beta, mean_over_padding):
        h, rank_weight, rank_bias = h.contiguous(), rank_weight.contiguous(), rank_bias.contiguous()
        att_weight, att_bias = att_weight.contiguous(), att_bias.contiguous()
        weights = mean_weights(mask, h.shape[2], mean_over_padding, torch.float32).contiguous()
        u, v = _project(h, rank_weight, rank_bias, products=True)
        m_all, p, w = _reduce(u, v, weights)
        y, a = _attention(h, u, w, att_weight, att_bias, beta)
        ctx.save_for_backward(h, rank_weight, rank_bias, att_weight, att_bias, a, weights, m_all, p)
        ctx.beta = beta
        return y, a

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy, da):
        h, rank_weight, rank_bias, att_weight, att_bias, a, weights, m_all, p = ctx.saved_tensors
        dy, da = dy.contiguous(), da.contiguous()
        n_mod, b, t, _ = h.shape
        q1, k1, q2, k2 = _project(h, rank_weight, rank_bias, products=False)
        u, v = q1 * k1, q2 * k2
        w = torch.matmul(v.view(n_mod, b, t, -1), p).view_as(v)
        du_att, dw = _attention_backward(h, dy, da, u, w, att_weight)
        d_weight, d_bias = _weight_backward(h, dy, da, u, w, att_weight, att_bias)

        u4, v4, dw4 = (x.view(n_mod, b, t, -1) for x in (u, v, dw))
        d_m = _chain_products_backward(m_all, v4.transpose(-1, -2) @ dw4)
        wt = weights.view(1, b, t, 1)
        du = du_att + (wt * (v4 @ d_m.transpose(-1, -2))).view_as(u)
        dv = (dw4 @ p.transpose(-1, -2) + wt * (u4 @ d_m)).view_as(v)
        d_proj = torch.cat([du * k1, du * q1, dv * k2, dv * q2], dim=-1)

        dh = _projection_backward(d_proj, rank_weight, dy, a, ctx.beta)
        d_rank_weight = torch.bmm(d_proj.transpose(1, 2).to(h.dtype), h.view(n_mod, b * t, -1))
        d_rank_bias = d_proj.sum(1)
        return (
            dh, None, d_rank_weight.to(rank_weight.dtype), d_rank_bias.to(rank_bias.dtype), d_weight, d_bias, None, None
        )


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
    """``(y, a)`` of one AFW layer for all modalities; see ``tensor_ring_literal`` for the shapes."""
    impl = resolve(h.device)
    if impl == "triton":
        check_triton_limits(h.shape[0], rank_weight.shape[1] // 4)
        return TensorRingFunction.apply(
            h, mask, rank_weight, rank_bias, att_weight, att_bias, float(beta), mean_over_padding
        )
    fn = tensor_ring_literal if impl == "literal" else tensor_ring_factored
    return fn(h, mask, rank_weight, rank_bias, att_weight, att_bias, beta, mean_over_padding=mean_over_padding)
