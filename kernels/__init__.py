"""Fused ops of ada2i_fast (shipped as ``ada2i_fast.kernels``) and the backend switch."""

from .amw_head import amw_head
from .backend import BACKENDS, get_backend, resolve, set_backend, use_backend
from .modulation import modulate_gradients
from .tensor_ring import tensor_ring

__all__ = [
    "BACKENDS",
    "amw_head",
    "get_backend",
    "modulate_gradients",
    "resolve",
    "set_backend",
    "tensor_ring",
    "use_backend",
]
