"""bfloat16 copies of the weights a bf16 forward pass feeds only to matmuls, kept instead of cast.

Under bfloat16 autocast every such weight is cast anew in every forward pass. These copies hold
exactly those casts (round to nearest even), are refreshed by the optimizer's step in the same
pass that updates the weights (:class:`~ada2i_fast.training.optim.Adam`) and, for any other change (a
loaded state, another optimizer), when the weight's version or storage no longer matches the
copy's. :meth:`Bf16Weights.parameters` gives them as stand-ins for ``torch.func.functional_call``
whose gradient reaches the float32 weight, so the numbers are autocast's, without its casts.

Which weights: the encoders' Linear and attention input projections and the AFW's stacked
projections, weights and biases; never a weight that also meets float32 arithmetic (the norms'
and the cosine head's), whose values bf16 would change.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..kernels import cpu_native
from .afw import AFWLayer


def matmul_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters of ``model.encoders`` and ``model.afw`` that only matmuls read, by name."""
    names = {}
    for prefix in ("encoders", "afw"):
        for module_name, module in getattr(model, prefix).named_modules(prefix=prefix):
            for name, value in module.named_parameters(recurse=False):
                if _matmul_only(module, name):
                    names[f"{module_name}.{name}"] = value
    return names


def _matmul_only(module: nn.Module, name: str) -> bool:
    if isinstance(module, (nn.Linear, AFWLayer)):
        return True
    return isinstance(module, nn.MultiheadAttention) and name in ("in_proj_weight", "in_proj_bias")


class _ShadowOf(torch.autograd.Function):
    """Forward: the bfloat16 copy; backward: the gradient cast to the float32 weight's dtype."""

    @staticmethod
    def forward(ctx, weight: Tensor, copy: Tensor) -> Tensor:
        return copy.view_as(copy)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return to_float32(grad), None


def to_float32(grad: Tensor) -> Tensor:
    """``grad.float()``, in one C pass on the CPU where it can."""
    if grad.dtype != torch.bfloat16 or grad.device.type != "cpu" or not cpu_native.available():
        return grad.float()
    grad = grad.contiguous()
    out = torch.empty(grad.shape, dtype=torch.float32)
    cpu_native.library().ada2i_bf16_to_float(grad.data_ptr(), out.data_ptr(), grad.numel())
    return out


class Bf16Weights:
    """The bfloat16 copies of ``weights`` (name -> float32 parameter); see the module docstring."""

    def __init__(self, weights: dict[str, nn.Parameter]) -> None:
        self.weights: dict[str, nn.Parameter] = {}
        self._ids: set[int] = set()
        self._copies: dict[int, Tensor] = {}
        self._stamps: dict[int, tuple] = {}
        self.following(weights)

    def following(self, weights: dict[str, nn.Parameter]) -> "Bf16Weights":
        """This store, now for ``weights`` (a model whose parameters were replaced, e.g. loaded with
        ``assign=True``, keeps its store); copies of weights no longer there are dropped."""
        ids = {id(weight) for weight in weights.values()}
        if ids != self._ids:
            self.weights, self._ids = dict(weights), ids
            for key in set(self._copies) - ids:
                del self._copies[key]
                self._stamps.pop(key, None)
        return self

    def copy_of(self, weight: Tensor) -> Tensor | None:
        """The copy of ``weight`` for the optimizer to write (created when missing); None for a weight
        that has none."""
        key = id(weight)
        if key not in self._ids:
            return None
        copy = self._copies.get(key)
        if copy is None or copy.shape != weight.shape or copy.device != weight.device:
            copy = self._copies[key] = torch.empty(weight.shape, dtype=torch.bfloat16, device=weight.device)
            self._stamps.pop(key, None)
        return copy

    def mark_fresh(self, weights: list[Tensor]) -> None:
        """``weights``' copies were just written from their current values."""
        for weight in weights:
            self._stamps[id(weight)] = _stamp(weight)

    def current(self) -> dict[str, Tensor]:
        """Every copy, up to date (a weight changed by anything but the optimizer is cast again)."""
        out = {}
        for name, weight in self.weights.items():
            copy = self.copy_of(weight)
            if self._stamps.get(id(weight)) != _stamp(weight):
                copy.copy_(weight.detach())
                self.mark_fresh([weight])
            out[name] = copy
        return out

    def parameters(self) -> dict[str, Tensor]:
        """``current()`` as stand-ins whose gradients reach the float32 weights."""
        return {name: _ShadowOf.apply(self.weights[name], copy) for name, copy in self.current().items()}


def _stamp(weight: Tensor) -> tuple:
    return weight.data_ptr(), weight.device, weight._version
