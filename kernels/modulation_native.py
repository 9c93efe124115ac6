"""The gradient modulation of SPEC §3 on the CPU, in the C kernel ``ada2i_modulate`` (``cpu_native.c``).

Two passes over the gradients whatever their number: the statistics of k_m·g per fixed chunk of
32768 elements (in double, two passes over a chunk in cache), combined per tensor in chunk order
(Chan et al.) into the unbiased std; then, per chunk, g ← k_m·g + (std + 1e-8)·z in place, z the
standard normals that Philox gives each element's position in the concatenated list under one
seed drawn from ``generator``. Chunks and counters depend only on the gradients' sizes, so the
result is the same for any number of threads. Reading the seed and the coefficients (CPU tensors)
are the op's host reads; no device waits on the CPU.
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
    """Whether the C kernel modulates these gradients: contiguous float32 on the CPU."""
    return all(g.device.type == "cpu" and g.dtype == torch.float32 and g.is_contiguous() for g in grads)


def modulate_gradients_native(
    grads: list[Tensor], modality: list[int], coefficients: Tensor, noise: bool, generator: torch.Generator | None
) -> Tensor:
    """Modulate ``grads`` in place (``modality[i]`` indexes ``coefficients`` for ``grads[i]``); returns
    the std each gradient's noise was matched to ([T], zeros without noise)."""
    chunks, offsets = _layout(tuple(g.numel() for g in grads))
    k = coefficients.detach().float().cpu().tolist()
    scale = (ctypes.c_float * len(grads))(*(k[m] for m in modality))
    seed = int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64, generator=generator)) if noise else 0
    stds = torch.zeros(len(grads), dtype=torch.float32)
    work = torch.empty(2 * len(chunks), dtype=torch.float64)
    cpu_native.library().ada2i_modulate(
        len(grads), (ctypes.c_void_p * len(grads))(*(g.data_ptr() for g in grads)), offsets, scale, int(noise), seed,
        NOISE_EPS, chunks, len(chunks), work.data_ptr(), stds.data_ptr(),
    )
    return stds
