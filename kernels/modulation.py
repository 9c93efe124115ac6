"""Sync-free gradient modulation over all encoder gradients, dispatched by backend.

The Triton path treats the gradient list as one multi-tensor: a device table of the gradients'
data pointers plus a cached chunk table (tensor index, start) cover every element, so the whole
list costs three launches whatever its length, and the gradients are updated in place:

1. ``_modulation_stats_kernel``: per chunk, the sum and the centred sum of squares of k_m·g;
2. ``_modulation_std_kernel``: per tensor, Chan's combination of its chunks into the unbiased std;
3. ``_modulation_apply_kernel``: per chunk, g ← k_m·g + (std + 1e-8)·randn(seed, counter).

The Philox seed is drawn from torch's generator on the device and read by the kernel from memory,
and the coefficients stay a device tensor: nothing waits for the device. Counters are the
elements' positions in the concatenated list, so a seed fixes the noise of every element.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from .backend import resolve, tl, triton
from .modulation_native import clip_and_modulate_native, modulate_gradients_native, takes as takes_native
from .modulation_torch import NOISE_EPS, modulate_gradients_torch


EPS: tl.constexpr = tl.constexpr(NOISE_EPS)
_CHUNK = 2048
_REDUCE_BLOCK = 256


@triton.jit
def _scaled_chunk(like_ptr, ptr_table, coef_ptr, tensor_modality_ptr, t, offsets, mask):
    """The data pointer of gradient ``t`` and its elements at ``offsets``, scaled by their modality's k (fp32)."""
    base = tl.load(ptr_table + t).to(like_ptr.dtype)
    k = tl.load(coef_ptr + tl.load(tensor_modality_ptr + t)).to(tl.float32)
    return base, tl.load(base + offsets, mask=mask, other=0.0).to(tl.float32) * k


@triton.jit
def _modulation_stats_kernel(
    like_ptr, ptr_table, coef_ptr, tensor_modality_ptr, tensor_numel_ptr, chunk_tensor_ptr, chunk_start_ptr,
    partial_ptr, CHUNK: tl.constexpr,
):
    c = tl.program_id(0)
    t = tl.load(chunk_tensor_ptr + c)
    start = tl.load(chunk_start_ptr + c)
    numel = tl.load(tensor_numel_ptr + t)
    offsets = start + tl.arange(0, CHUNK)
    mask = offsets < numel
    _, x = _scaled_chunk(like_ptr, ptr_table, coef_ptr, tensor_modality_ptr, t, offsets, mask)
    total = tl.sum(x, axis=0)
    mean = total / tl.minimum(numel - start, CHUNK).to(tl.float32)
    centred = tl.where(mask, x - mean, 0.0)
    tl.store(partial_ptr + 2 * c, total)
    tl.store(partial_ptr + 2 * c + 1, tl.sum(centred * centred, axis=0))


@triton.jit
def _modulation_std_kernel(
    partial_ptr, tensor_numel_ptr, tensor_first_chunk_ptr, std_ptr, CHUNK: tl.constexpr, BLOCK: tl.constexpr
):
    t = tl.program_id(0)
    first = tl.load(tensor_first_chunk_ptr + t)
    last = tl.load(tensor_first_chunk_ptr + t + 1)
    numel = tl.load(tensor_numel_ptr + t).to(tl.float32)
    total = tl.zeros([BLOCK], tl.float32)
    for c0 in range(first, last, BLOCK):
        chunk = c0 + tl.arange(0, BLOCK)
        total += tl.load(partial_ptr + 2 * chunk, mask=chunk < last, other=0.0)
    mean = tl.sum(total, axis=0) / numel
    m2 = tl.zeros([BLOCK], tl.float32)
    for c0 in range(first, last, BLOCK):
        chunk = c0 + tl.arange(0, BLOCK)
        mask = chunk < last
        count = tl.where(mask, tl.minimum(numel - ((chunk - first) * CHUNK).to(tl.float32), CHUNK), 1.0)
        chunk_mean = tl.load(partial_ptr + 2 * chunk, mask=mask, other=0.0) / count
        chunk_m2 = tl.load(partial_ptr + 2 * chunk + 1, mask=mask, other=0.0)
        m2 += tl.where(mask, chunk_m2 + count * (chunk_mean - mean) * (chunk_mean - mean), 0.0)
    tl.store(std_ptr + t, tl.sqrt(tl.sum(m2, axis=0) / (numel - 1.0)))


@triton.jit
def _modulation_apply_kernel(
    like_ptr, ptr_table, coef_ptr, tensor_modality_ptr, tensor_numel_ptr, chunk_tensor_ptr, chunk_start_ptr,
    tensor_offset_ptr, std_ptr, seed_ptr, NOISE: tl.constexpr, CHUNK: tl.constexpr,
):
    c = tl.program_id(0)
    t = tl.load(chunk_tensor_ptr + c)
    offsets = tl.load(chunk_start_ptr + c) + tl.arange(0, CHUNK)
    mask = offsets < tl.load(tensor_numel_ptr + t)
    base, x = _scaled_chunk(like_ptr, ptr_table, coef_ptr, tensor_modality_ptr, t, offsets, mask)
    if NOISE:
        counters = (tl.load(tensor_offset_ptr + t) + offsets).to(tl.uint32)
        x += tl.randn(tl.load(seed_ptr), counters) * (tl.load(std_ptr + t) + EPS)
    tl.store(base + offsets, x, mask=mask)


@functools.lru_cache(maxsize=16)
def _chunk_layout(numels: tuple[int, ...], modality: tuple[int, ...], device: torch.device) -> dict[str, Tensor]:
    """Device tables of a gradient list's layout; the same model gives the same layout every step."""
    n_chunks = [triton.cdiv(n, _CHUNK) for n in numels]
    first_chunk = [0]
    for count in n_chunks:
        first_chunk.append(first_chunk[-1] + count)
    tables = {
        "tensor_modality": torch.tensor(modality, dtype=torch.int64),
        "tensor_numel": torch.tensor(numels, dtype=torch.int64),
        "tensor_offset": torch.tensor([0, *numels[:-1]], dtype=torch.int64).cumsum(0),
        "tensor_first_chunk": torch.tensor(first_chunk, dtype=torch.int64),
        "chunk_tensor": torch.repeat_interleave(torch.arange(len(numels)), torch.tensor(n_chunks)),
        "chunk_start": torch.cat([torch.arange(count, dtype=torch.int64) * _CHUNK for count in n_chunks]),
    }
    return {name: table.to(device) for name, table in tables.items()}


def _multi_tensor(grads: list[Tensor], modality: list[int], coefficients: Tensor) -> tuple[tuple, dict[str, Tensor]]:
    """The leading kernel arguments shared by the stats and apply kernels, and the layout tables."""
    like = grads[0]
    if any(g.dtype != like.dtype or g.device != like.device or not g.is_contiguous() for g in grads):
        raise ValueError("the Triton modulation needs contiguous gradients of one dtype on one device")
    layout = _chunk_layout(tuple(g.numel() for g in grads), tuple(modality), like.device)
    pointers = torch.tensor([g.data_ptr() for g in grads], dtype=torch.int64)
    if like.device.type == "cuda":
        pointers = pointers.pin_memory()
    pointers = pointers.to(like.device, non_blocking=True)
    common = (
        like, pointers, coefficients, layout["tensor_modality"], layout["tensor_numel"],
        layout["chunk_tensor"], layout["chunk_start"],
    )  # fmt: skip
    return common, layout


def _scaled_stds(common: tuple, layout: dict[str, Tensor]) -> Tensor:
    """Unbiased std of every k_m·g ``[T]`` (fp32), from per-chunk partials, with no host sync."""
    n_chunks = layout["chunk_tensor"].numel()
    partials = torch.empty(n_chunks, 2, device=common[0].device, dtype=torch.float32)
    _modulation_stats_kernel[(n_chunks,)](*common, partials, CHUNK=_CHUNK)
    std = torch.empty(layout["tensor_numel"].numel(), device=common[0].device, dtype=torch.float32)
    _modulation_std_kernel[(std.numel(),)](
        partials, layout["tensor_numel"], layout["tensor_first_chunk"], std, CHUNK=_CHUNK, BLOCK=_REDUCE_BLOCK
    )
    return std


def _modulate_gradients_triton(
    grads: list[Tensor], modality: list[int], coefficients: Tensor, noise: bool, generator: torch.Generator | None
) -> None:
    common, layout = _multi_tensor(grads, modality, coefficients)
    grid = (layout["chunk_tensor"].numel(),)
    if noise:
        std = _scaled_stds(common, layout)
        seed = torch.randint(0, 2**31 - 1, (1,), generator=generator, device=grads[0].device)
    else:
        std = seed = coefficients  # compiled out with NOISE=False; any pointer fills the slots
    _modulation_apply_kernel[grid](*common, layout["tensor_offset"], std, seed, NOISE=noise, CHUNK=_CHUNK)


def modulate_gradients(
    grads: list[Tensor], modality: list[int], coefficients: Tensor, noise: bool, generator: torch.Generator | None = None
) -> None:
    """Scale each gradient by its modality's coefficient and optionally add std-matched noise, in place."""
    if not grads:
        return
    impl = resolve(grads[0].device)
    if impl == "triton":
        _modulate_gradients_triton(grads, modality, coefficients, noise, generator)
    elif impl == "native" and takes_native(grads):
        modulate_gradients_native(grads, modality, coefficients, noise, generator)
    else:
        modulate_gradients_torch(grads, modality, coefficients, noise, generator)


def clip_and_modulate(
    grads: list[Tensor], modality: list[int], coefficients: Tensor | None, max_norm: float, noise: bool,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """``torch.nn.utils.clip_grad_norm_`` over ``grads``, then, unless ``coefficients`` is None,
    :func:`modulate_gradients` over the gradients whose ``modality[i] >= 0``. Returns the total norm
    before clipping and each gradient's norm between clip and modulation ([T]). On the CPU the native
    kernels do both in two passes (``modulation_native``)."""
    if grads and resolve(grads[0].device) == "native" and takes_native(grads):
        with torch.profiler.record_function("ada2i::clip_and_modulate"):
            return clip_and_modulate_native(grads, modality, coefficients, max_norm, noise, generator)[:2]
    total_norm = torch.nn.utils.get_total_norm(grads)
    torch._foreach_mul_(grads, torch.clamp(max_norm / (total_norm + 1e-6), max=1.0))  # clip_grad_norm_'s clip
    clipped_norms = torch.stack(torch._foreach_norm(grads)) if grads else total_norm.new_zeros(0)
    if coefficients is not None:
        modulated = [(g, m) for g, m in zip(grads, modality) if m >= 0]
        modulate_gradients([g for g, _ in modulated], [m for _, m in modulated], coefficients, noise, generator)
    return total_norm, clipped_norms
