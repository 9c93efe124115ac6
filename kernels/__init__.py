"""Fused ops of ada2i_fast and the backend switch.

This folder sits at the top of the repository but is installed as ``ada2i_fast.kernels`` (the
``package-dir`` mapping in pyproject.toml; an editable install follows it), so import it as
``from ada2i_fast.kernels import ...``, never as a top-level ``kernels``. Per op: a Triton file
(kernels, launchers that check their limits, an autograd Function), its torch twin, and the
literal oracle of SPEC §2 for the tensor ring.
"""

from .amw_head import amw_head
from .backend import BACKENDS, get_backend, resolve, set_backend, use_backend
from .modulation import modulate_gradients
from .tensor_ring import tensor_ring
from .tensor_ring_torch import RANK_PROJECTIONS

__all__ = [
    "BACKENDS",
    "RANK_PROJECTIONS",
    "amw_head",
    "get_backend",
    "modulate_gradients",
    "resolve",
    "set_backend",
    "tensor_ring",
    "use_backend",
]
