"""Torch twin of the gradient modulation of SPEC §3, without host syncs.

Every encoder gradient of modality m is scaled by k_m; with ``noise`` it then gets
N(0, (std(g) + 1e-8)^2) added, std taken of the scaled gradient (unbiased, as ``Tensor.std``).

The stds come from ``Tensor.std`` per tensor (one stable pass each, no host sync). The unit noise is torch's
``normal_``. On an accelerator it is drawn tensor by tensor into one workspace of the largest
gradient's size and added with ``addcmul_``. On the CPU, ``normal_`` runs one Mersenne Twister on
one core, and drawing the ~35M normals of the iemocap encoders is most of the op; there the
gradients are cut into pieces of ``NOISE_STREAM`` elements, each piece gets its own generator
seeded from ``generator`` (consecutive seeds from one draw, so the pieces' streams are distinct),
and a pool of threads draws and adds the pieces in parallel, each in a cache-sized workspace. A
pool thread adds in parts smaller than ATen's grain size, so it never starts an OpenMP team of its
own: such teams spin after each op and slowed the next step's GEMMs (8% of a bf16 meld step). The
pieces and their seeds depend only on the gradients' sizes and ``generator``, so the result is the
same whatever the number of threads. Reading the draw's base seed is the one host read of the op,
on the CPU only, where no device waits.
"""

from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

NOISE_EPS = 1e-8
NOISE_STREAM = 1 << 20  # elements per independently seeded piece of the CPU noise draw
SERIAL_OP = 1 << 14  # below ATen's grain size (32768) an elementwise op runs on the calling thread


def unbiased_stds(grads: list[Tensor]) -> list[Tensor]:
    """``[g.std() for g in grads]`` (unbiased) as device scalars; ``Tensor.std`` is stable when the
    mean dwarfs the spread, where Σg² − n·mean² loses every digit in float32."""
    return [g.std() for g in grads]


def modulate_gradients_torch(
    grads: list[Tensor], modality: list[int], coefficients: Tensor, noise: bool, generator: torch.Generator | None
) -> None:
    """Modulate ``grads`` in place; ``modality[i]`` is the index into ``coefficients`` of ``grads[i]``."""
    if not grads:
        return
    scales = coefficients.to(grads[0].dtype).unbind()
    torch._foreach_mul_(grads, [scales[m] for m in modality])
    if not noise:
        return
    noise_std = torch._foreach_add(unbiased_stds(grads), NOISE_EPS)
    if draws_in_streams(grads[0].device):
        add_noise_in_streams(grads, noise_std, generator)
        return
    workspace = torch.empty(max(g.numel() for g in grads), dtype=grads[0].dtype, device=grads[0].device)
    for g, std in zip(grads, noise_std):
        unit_noise = workspace[: g.numel()].view(g.shape).normal_(generator=generator)
        g.addcmul_(unit_noise, std)


def draws_in_streams(device: torch.device) -> bool:
    return device.type == "cpu"


def add_noise_in_streams(grads: list[Tensor], stds: list[Tensor], generator: torch.Generator | None) -> None:
    """``g += std · N(0, 1)`` for every gradient, on the CPU, piece by piece in parallel (module docstring)."""
    pieces = [(piece, std) for g, std in zip(grads, stds) for piece in _pieces(g)]
    base_seed = int(torch.randint(0, 2**32 - len(pieces), (), generator=generator))
    work = [(piece, std, base_seed + i) for i, (piece, std) in enumerate(pieces)]
    for _ in _noise_pool(torch.get_num_threads(), os.getpid()).map(_add_piece_noise, work):
        pass


def _pieces(g: Tensor) -> tuple[Tensor, ...]:
    """Views covering ``g``: flat pieces of ``NOISE_STREAM`` elements, or ``g`` whole if it is not contiguous."""
    return g.view(-1).split(NOISE_STREAM) if g.is_contiguous() else (g,)


@functools.lru_cache(maxsize=4)
def _noise_pool(workers: int, pid: int) -> ThreadPoolExecutor:
    """One pool per thread count and process: a forked child inherits the pool but not its threads."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ada2i-noise")


_thread_state = threading.local()


def _add_piece_noise(work: tuple[Tensor, Tensor, int]) -> None:
    piece, std, seed = work
    if not hasattr(_thread_state, "generator"):
        _thread_state.generator, _thread_state.workspaces = torch.Generator(), {}
    workspace = _thread_state.workspaces.get(piece.dtype)
    if workspace is None or workspace.numel() < piece.numel():
        workspace = _thread_state.workspaces[piece.dtype] = torch.empty(piece.numel(), dtype=piece.dtype)
    unit_noise = workspace[: piece.numel()].view(piece.shape).normal_(generator=_thread_state.generator.manual_seed(seed))
    if piece.is_contiguous():
        for part, noise_part in zip(piece.view(-1).split(SERIAL_OP), unit_noise.view(-1).split(SERIAL_OP)):
            part.addcmul_(noise_part, std)
    else:
        piece.addcmul_(unit_noise, std)
