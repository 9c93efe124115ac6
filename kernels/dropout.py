"""Inverted dropout, optionally fused with the ReLU before it or the residual add after it.

    dropout(x, p)                  keep ? x / (1 - p) : 0
    dropout(x, p, relu=True)       dropout(relu(x))
    dropout(x, p, residual=r)      r + dropout(x)

On the CPU (``native``) the keep mask of element i is a pure function of a seed and i (Philox, see
``cpu_native.c``): the forward pass draws one 64-bit seed from torch's generator, and the backward
pass recomputes the mask from it instead of storing one; the ReLU form needs no mask at all in
backward (its output is positive exactly where the gradient passes). Either way each element is
kept with probability exactly 1 - p (to p's 24-bit resolution, as torch's float ``uniform_``). On
CUDA (``triton``) torch's own fused dropout runs; elsewhere (``torch``) a uniform draw compared with
p, about 2x faster than ``bernoulli_`` on the CPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from . import cpu_native
from .backend import resolve

PLAIN, RELU = 0, 1  # the kinds of cpu_native.c's ada2i_dropout


def _threshold(p: float) -> int:
    """The keep test ``uniform >= p`` on 24-bit uniforms: their integer part must reach ceil(p 2^24)."""
    return math.ceil(p * (1 << 24))


def new_seed() -> int:
    """A seed for one dropout mask, drawn from torch's default generator (so torch.manual_seed fixes it)."""
    return int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64))


def native_dropout(x: Tensor, p: float, seed: int) -> Tensor:
    """The mask of ``seed`` applied to ``x`` (contiguous, float32 or bfloat16, on the CPU), no autograd."""
    return _native(x.contiguous(), torch.empty(x.shape, dtype=x.dtype), None, PLAIN, p, seed)


def _native(x: Tensor, out: Tensor, residual: Tensor | None, kind: int, p: float, seed: int) -> Tensor:
    bf16 = lambda t: int(t.dtype == torch.bfloat16)  # noqa: E731
    residual_kind = 0 if residual is None else 1 + bf16(residual)  # none, float32, bfloat16
    cpu_native.library().ada2i_dropout(
        x.data_ptr(), bf16(x), None if residual is None else residual.data_ptr(), residual_kind, out.data_ptr(),
        bf16(out), x.numel(), kind, _threshold(p), 1.0 / (1.0 - p), seed,
    )
    return out


class _NativeDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, residual: Tensor | None, p: float, relu: bool) -> Tensor:
        seed = new_seed() if p > 0 else 0  # p = 0: the ReLU alone, which draws nothing
        dtype = x.dtype if residual is None else torch.result_type(x, residual)
        out = _native(x, torch.empty(x.shape, dtype=dtype), residual, RELU if relu else PLAIN, p, seed)
        ctx.p, ctx.relu, ctx.seed, ctx.x_dtype = p, relu, seed, x.dtype
        ctx.residual_dtype = None if residual is None else residual.dtype
        if relu:
            ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad = grad.contiguous()
        grad_x = torch.empty(grad.shape, dtype=ctx.x_dtype)
        if ctx.relu:
            (out,) = ctx.saved_tensors
            cpu_native.library().ada2i_relu_dropout_backward(
                grad.data_ptr(), out.data_ptr(), grad_x.data_ptr(), grad.numel(), int(grad.dtype == torch.bfloat16),
                1.0 / (1.0 - ctx.p),
            )
        else:
            _native(grad, grad_x, None, PLAIN, ctx.p, ctx.seed)
        grad_residual = grad.to(ctx.residual_dtype) if ctx.needs_input_grad[1] else None
        return grad_x, grad_residual, None, None


def _uniform_dropout(x: Tensor, p: float) -> Tensor:
    return torch.where(torch.empty_like(x).uniform_() >= p, x * (1.0 / (1.0 - p)), 0.0)


def dropout(x: Tensor, p: float, *, training: bool = True, relu: bool = False, residual: Tensor | None = None) -> Tensor:
    """``residual + dropout(x)`` or ``dropout(relu(x))`` (not both) with drop probability ``p`` when
    ``training``; see the module docstring."""
    if relu and residual is not None:
        raise ValueError("dropout fuses either the ReLU before it or the residual add after it, not both")
    dropping = training and p > 0
    if (dropping or relu) and takes_native(x, residual):
        return _NativeDropout.apply(x, residual, p if dropping else 0.0, relu)
    if relu:
        x = torch.relu(x)
    if dropping:
        x = F.dropout(x, p) if resolve(x.device) == "triton" else _uniform_dropout(x, p)
    return x if residual is None else residual + x


def takes_native(x: Tensor, residual: Tensor | None = None) -> bool:
    """Whether the native kernel drops ``x`` (and adds ``residual``) under the current backend."""
    if resolve(x.device) != "native" or not cpu_native.fits(x):
        return False
    return residual is None or (residual.shape == x.shape and cpu_native.fits(residual))
