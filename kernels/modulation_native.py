"""The gradient clip and the gradient modulation of SPEC §3 on the CPU, in two C passes over the
gradients whatever their number (``cpu_native.c``):

1. ``ada2i_moments``: each gradient's mean and centred sum of squares, in double, per fixed chunk of
   32768 elements (two passes over a chunk in cache), combined per tensor in chunk order (Chan et
   al.); its 2-norm and its unbiased std follow;
2. ``ada2i_scale_and_add_noise``: per chunk, g ← s·g (+ σ·z) in place, z the standard normals that
   Threefry gives each element's position in the concatenated list under one seed drawn from
   ``generator``.

The clip coefficient c = min(1, max_norm / (‖g‖ + 1e-6)) over all gradients (``clip_grad_norm_``'s)
and modality m's k_m fold into s = c·k_m, and σ = s·std(g) + 1e-8 is the std of the clipped, scaled
gradient, so clip, scale and noise cost these two passes instead of five. Chunks and counters
depend only on the gradients' sizes: the result is the same for any number of threads. Reading the
seed and the coefficients (CPU tensors) waits for nothing on the CPU.
"""

from __future__ import annotations

import ctypes
import functools

import torch
from torch import Tensor

from . import cpu_native
from .modulation_torch import NOISE_EPS


@functools.lru_cache(maxsize=16)
def _layout(numels: tuple[int, ...]) -> tuple[ctypes.Array, ctypes.Array]:
    """The chunk table and each tensor's offset in the concatenated list; the same model gives the
    same layout every step."""
    sizes = (ctypes.c_int64 * len(numels))(*numels)
    lib = cpu_native.library()
    chunks = (cpu_native.Chunk * lib.ada2i_modulation_chunks(len(numels), sizes, None))()
    lib.ada2i_modulation_chunks(len(numels), sizes, chunks)
    offsets, total = [], 0
    for n in numels:
        offsets.append(total)
        total += n
    return chunks, (ctypes.c_int64 * len(numels))(*offsets)


def takes(grads: list[Tensor]) -> bool:
    """Whether the C kernels take these gradients: contiguous float32 on the CPU."""
    return all(g.device.type == "cpu" and g.dtype == torch.float32 and g.is_contiguous() for g in grads)


def _pointers(grads: list[Tensor]) -> ctypes.Array:
    return (ctypes.c_void_p * len(grads))(*(g.data_ptr() for g in grads))


def moments(grads: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Each gradient's mean and centred sum of squares (float64 [T] each)."""
    chunks, _ = _layout(tuple(g.numel() for g in grads))
    means, m2s = torch.empty(len(grads), dtype=torch.float64), torch.empty(len(grads), dtype=torch.float64)
    work = torch.empty(2 * len(chunks), dtype=torch.float64)
    cpu_native.library().ada2i_moments(len(grads), _pointers(grads), chunks, len(chunks), work.data_ptr(),
                                       means.data_ptr(), m2s.data_ptr())
    return means, m2s


def clip_and_modulate_native(
    grads: list[Tensor], modality: list[int], coefficients: Tensor | None, max_norm: float | None, noise: bool,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    """Clip all ``grads`` to ``max_norm`` (None: no clip), then scale those with ``modality[i] >= 0`` by
    their modality's coefficient and, with ``noise``, add std-matched noise; in place. Returns the
    total norm before clipping (as ``clip_grad_norm_``), each gradient's norm after clipping and
    before modulation, and the std each gradient's noise was matched to (0 where none)."""
    if coefficients is None:  # clip only
        modality, noise = [-1] * len(grads), False
    numels = torch.tensor([g.numel() for g in grads], dtype=torch.float64)
    zeros = torch.zeros(len(grads), dtype=torch.float64)
    means, m2s = moments(grads) if noise or max_norm is not None else (zeros, zeros)
    total_norm = (m2s + numels * means**2).sum().sqrt()
    clip = 1.0 if max_norm is None else min(1.0, max_norm / (float(total_norm) + 1e-6))
    k = coefficients.detach().double().cpu().tolist() if coefficients is not None else []
    scale = torch.tensor([clip * (k[m] if m >= 0 else 1.0) for m in modality], dtype=torch.float64)
    modulated = torch.tensor(modality) >= 0
    stds = torch.where(modulated & noise, scale * (m2s / (numels - 1)).sqrt(), 0.0).float()  # NaN for one element
    sigma = torch.where(modulated, stds + NOISE_EPS, 0.0) if noise else None
    chunks, offsets = _layout(tuple(g.numel() for g in grads))
    seed = int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64, generator=generator)) if noise else 0
    cpu_native.library().ada2i_scale_and_add_noise(
        len(grads), _pointers(grads), offsets, (ctypes.c_float * len(grads))(*scale.tolist()),
        None if sigma is None else sigma.data_ptr(), seed, chunks, len(chunks),
    )
    clipped_norms = (clip * (m2s + numels * means**2).sqrt()).float()
    return total_norm.float(), clipped_norms, stds


def modulate_gradients_native(
    grads: list[Tensor], modality: list[int], coefficients: Tensor, noise: bool, generator: torch.Generator | None
) -> Tensor:
    """Modulate ``grads`` in place (``modality[i]`` indexes ``coefficients`` for ``grads[i]``); returns
    the std each gradient's noise was matched to ([T], zeros without noise)."""
    return clip_and_modulate_native(grads, modality, coefficients, None, noise, generator)[2]
