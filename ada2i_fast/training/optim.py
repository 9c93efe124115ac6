"""The optimizers of the recipe, and an optimizer step whose update is scaled per parameter group.

:class:`Adam` is Adam exactly as ``torch.optim.Adam`` defines it (its state, state_dict and
hyperparameters), whose step on float32 CPU parameters is one C pass (``cpu_native.c:
ada2i_adam``) that also refreshes the bfloat16 copies a bf16 forward pass reads
(:class:`~ada2i_fast.modules.bf16_weights.Bf16Weights`) and can scale each parameter's update. Anywhere
else (CUDA, no C compiler, other dtypes) torch's fused Adam runs. A step flagged non-finite
(``optimizer.found_inf``, as torch's fused optimizers read it) changes nothing, its step count
included.

:func:`step_with_scaled_updates` multiplies the update of each group of parameters by its own
factor (``--modulation-target update``): inside that pass where it runs, else as ``old + k·(new −
old)`` after any optimizer's step, on the device, with no host sync.
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from ..kernels import cpu_native
from ..kernels.backend import resolve

SGD_MOMENTUM = 0.9


class Adam(torch.optim.Adam):
    def __init__(self, params, *, lr: float, weight_decay: float, bf16_weights=None) -> None:
        super().__init__(params, lr=lr, weight_decay=weight_decay, fused=True)
        self.bf16_weights = bf16_weights  # refreshed by each native step

    @torch.no_grad()
    def step(self, closure=None, *, update_scales: dict[int, float] | None = None):
        """torch's Adam step; ``update_scales`` (the native pass only, see :meth:`scales_updates`)
        multiplies the update of the parameter ``id(p)`` by its value."""
        if closure is not None or not self.scales_updates():
            if update_scales:
                raise ValueError("update_scales needs the native step (float32 CPU parameters, the native backend)")
            return super().step(closure)
        found_inf = getattr(self, "found_inf", None)
        if found_inf is not None and bool(found_inf):
            return None
        for group in self.param_groups:
            self._native_group_step(group, update_scales or {})
        return None

    def scales_updates(self) -> bool:
        """Whether this step runs in the native pass (which also takes per-parameter update scales)."""
        params = [p for group in self.param_groups for p in group["params"]]
        return (resolve(params[0].device) == "native" and not any(g["amsgrad"] or g["maximize"] for g in self.param_groups)
                and all(p.device.type == "cpu" and p.dtype == torch.float32 and p.is_contiguous()
                        and (p.grad is None or (p.grad.dtype == torch.float32 and p.grad.is_contiguous())) for p in params))

    def _native_group_step(self, group: dict, update_scales: dict[int, float]) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        states = [self._state_of(p) for p in params]
        for state in states:
            state["step"] += 1
        shadows = [self.bf16_weights.copy_of(p) if self.bf16_weights is not None else None for p in params]
        beta1, beta2 = group["betas"]
        pointers = lambda tensors: (ctypes.c_void_p * len(tensors))(*(t.data_ptr() if t is not None else None  # noqa: E731
                                                                      for t in tensors))
        cpu_native.library().ada2i_adam(
            len(params), pointers(params), pointers([p.grad for p in params]),
            pointers([s["exp_avg"] for s in states]), pointers([s["exp_avg_sq"] for s in states]), pointers(shadows),
            (ctypes.c_int64 * len(params))(*(p.numel() for p in params)),
            (ctypes.c_double * len(params))(*(float(s["step"]) for s in states)),
            (ctypes.c_float * len(params))(*(update_scales.get(id(p), 1.0) for p in params)),
            float(group["lr"]), beta1, beta2, group["weight_decay"], group["eps"],
        )
        changed = params + [s[key] for s in states for key in ("exp_avg", "exp_avg_sq")]
        torch.autograd.graph.increment_version(changed)
        if self.bf16_weights is not None:
            self.bf16_weights.mark_fresh([p for p, shadow in zip(params, shadows) if shadow is not None])

    def _state_of(self, p: Tensor) -> dict:
        """The parameter's Adam state, created as torch's fused Adam creates it."""
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state


def sgd(params, *, lr: float, weight_decay: float) -> torch.optim.SGD:
    """SGD with momentum 0.9 (torch's fused implementation, which skips a step flagged non-finite)."""
    return torch.optim.SGD(params, lr=lr, momentum=SGD_MOMENTUM, weight_decay=weight_decay, fused=True)


def step_with_scaled_updates(optimizer: torch.optim.Optimizer, groups: list[list[Tensor]], scales: Tensor) -> None:
    """``optimizer.step()`` with the update of every parameter of ``groups[m]`` multiplied by
    ``scales[m]`` (a device tensor [M]; the other parameters' updates as they are)."""
    if isinstance(optimizer, Adam) and optimizer.scales_updates():
        k = scales.detach().float().cpu().tolist()  # a CPU tensor: reading it waits for nothing
        optimizer.step(update_scales={id(p): k[m] for m, params in enumerate(groups) for p in params})
        return
    with torch.no_grad():
        before = [[p.detach().clone() for p in params] for params in groups]
        optimizer.step()
        for params, old, scale in zip(groups, before, scales.unbind()):
            current = [p.detach() for p in params]
            torch._foreach_lerp_(current, old, [1 - scale] * len(current))  # k·new + (1 − k)·old
