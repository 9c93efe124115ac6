"""Which implementation of the fused ops runs: Triton, the native CPU kernels, factored torch, or
the literal oracle.

``auto`` (the default) picks Triton for CUDA tensors, and on the CPU the native C kernels
(``cpu_native``) for the ops that have them, else the factored torch path. ``native`` on a
machine without a C compiler, or for an op without a C kernel, runs the torch path. Forcing
``triton`` on CPU tensors only works under ``TRITON_INTERPRET=1`` (set before triton is imported);
that is how the kernels are tested without a GPU.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from types import SimpleNamespace
from typing import Iterator

import torch

from . import cpu_native

try:
    import triton
    import triton.language as tl

    _TRITON_IMPORT_ERROR = None
except Exception as error:  # a broken install raises more than ImportError
    _TRITON_IMPORT_ERROR = error
    # Stand-ins so kernel modules still define (never launched) kernels; resolve() never picks triton.
    triton = SimpleNamespace(jit=lambda fn: fn)
    tl = SimpleNamespace(constexpr=lambda value: value)

BACKENDS = ("auto", "triton", "native", "torch", "literal")

_state = {"backend": "auto"}


def set_backend(name: str) -> None:
    """Force one implementation for every fused op: ``"auto" | "triton" | "native" | "torch" | "literal"``."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    _state["backend"] = name


def get_backend() -> str:
    """The backend the fused ops use now (one of :data:`BACKENDS`)."""
    return _state["backend"]


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Context manager form of :func:`set_backend`; restores the previous choice on exit."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """True when triton imported; warns once and returns False otherwise."""
    if _TRITON_IMPORT_ERROR is not None:
        warnings.warn(
            f"triton is unavailable ({type(_TRITON_IMPORT_ERROR).__name__}: {_TRITON_IMPORT_ERROR}); "
            "ada2i_fast falls back to its torch implementations",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True


def resolve(device: torch.device) -> str:
    """The concrete implementation (``triton``, ``native``, ``torch`` or ``literal``) for tensors on
    ``device``; an op without a native kernel runs ``torch`` for ``native``."""
    backend = get_backend()
    if backend == "auto":
        backend = "triton" if device.type == "cuda" else "native"
    if backend == "triton" and not triton_available():
        return "torch"
    if backend == "native" and (device.type != "cpu" or not cpu_native.available()):
        return "torch"
    return backend
