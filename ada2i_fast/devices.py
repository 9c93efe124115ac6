"""The device a command runs on, checked before any work starts, and what it computes fast."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

PRECISIONS = ("fp32", "bf16", "auto")  # auto: bf16 where the device computes it natively


def default_device() -> str:
    """CUDA where there is one, else the CPU: the device a run takes when none is named."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"--device {name!r}: {error}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available here (torch {torch.__version__}); use --device cpu")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"``: bf16 autocast where the device has native bfloat16 arithmetic, else fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_bf16_instructions() else "fp32"


@functools.lru_cache(maxsize=None)
def cpu_has_bf16_instructions() -> bool:
    """AVX512-BF16 or AMX-BF16 on this CPU (Linux: /proc/cpuinfo), where oneDNN runs bf16 GEMMs natively."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
