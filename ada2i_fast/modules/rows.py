"""Rows between the padded [B*T] grid and the real utterances, packed: ``batch.flat_index`` lists
distinct rows, so both directions are copies of rows and their backward passes are copies too (an
``index_select``'s backward would accumulate with ``index_add_``, several times slower on the CPU)."""

from __future__ import annotations

import torch
from torch import Tensor


class _RealRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grid: Tensor, index: Tensor, dim: int) -> Tensor:
        ctx.save_for_backward(index)
        ctx.dim, ctx.size = dim, grid.shape[dim]
        return grid.index_select(dim, index)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (index,) = ctx.saved_tensors
        return padded_grid(grad, index, ctx.size, ctx.dim), None, None


def real_rows(grid: Tensor, index: Tensor, dim: int = 0) -> Tensor:
    """The rows ``index`` of ``grid`` along ``dim``."""
    return _RealRows.apply(grid, index, dim)


def padded_grid(rows: Tensor, index: Tensor, size: int, dim: int = 0) -> Tensor:
    """A grid of ``size`` zero rows along ``dim`` holding ``rows`` at ``index``."""
    shape = list(rows.shape)
    shape[dim] = size
    return rows.new_zeros(shape).index_copy_(dim, index, rows)
