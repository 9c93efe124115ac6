"""The C kernels of ``cpu_native.c`` (counter-based gradient noise and dropout on the CPU): compiled
with the machine's C compiler at first use, cached, and called through ctypes.

The library is built once per source, compiler and CPU (``-march=native``) into
``$ADA2I_CACHE_DIR`` (default ``~/.cache/ada2i_fast``), written atomically so that concurrent
processes never load a half-written file. Without a C compiler, or when the build fails, the
callers run their torch ops instead, and a warning says so once per process.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("cpu_native.c")
# -ffp-contract=off: no fused multiply-adds, so that an element's result does not depend on whether it
# falls in a vectorised loop body or its scalar remainder, which moves with the number of threads.
FLAGS = ("-O3", "-march=native", "-mprefer-vector-width=512", "-fopenmp", "-fPIC", "-shared", "-fno-math-errno",
         "-fno-trapping-math", "-ffp-contract=off")
NATIVE_DTYPES = (torch.float32, torch.bfloat16)


class Chunk(ctypes.Structure):
    _fields_ = [("tensor", ctypes.c_int32), ("start", ctypes.c_int64), ("count", ctypes.c_int64)]


def cache_dir() -> Path:
    if os.environ.get("ADA2I_CACHE_DIR"):
        return Path(os.environ["ADA2I_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ada2i_fast"


def _cpu_identity() -> str:
    """What ``-march=native`` compiles for: the CPU's model and flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    return "\n".join(sorted({line for line in lines if line.startswith(("model name", "flags"))}))


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def _build(compiler: str) -> Path:
    """The cached library for this source, compiler and CPU; compiled when missing."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), compiler, version, *FLAGS, _cpu_identity()]).encode())
    target = cache_dir() / f"ada2i_cpu_native-{key.hexdigest()[:20]}.so"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=target.parent, prefix=".build-", suffix=".so")
    os.close(handle)
    try:
        done = subprocess.run([compiler, *FLAGS, "-o", partial, str(SOURCE), "-lm"], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no message")
        os.replace(partial, target)
    finally:
        Path(partial).unlink(missing_ok=True)
    return target


@functools.lru_cache(maxsize=None)
def library() -> ctypes.CDLL | None:
    """The loaded kernels, or None (warned once) when they cannot be built here."""
    compiler = _compiler()
    try:
        if compiler is None:
            raise RuntimeError("no C compiler found (set CC, or install cc/gcc)")
        torch.get_num_threads()  # torch, and with it its OpenMP runtime, is loaded before the library links to it
        lib = ctypes.CDLL(str(_build(compiler)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        warnings.warn(f"ada2i_fast: the native CPU kernels are unavailable ({error}); the CPU gradient noise and "
                      "dropout run on torch's slower ops", RuntimeWarning, stacklevel=3)
        return None
    _declare(lib)
    return lib


def available() -> bool:
    return library() is not None


def _declare(lib: ctypes.CDLL) -> None:
    p, i32, i64, f32, u32, u64 = (ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_float, ctypes.c_uint32,
                                  ctypes.c_uint64)
    lib.ada2i_dropout.argtypes = [p, ctypes.c_int, p, ctypes.c_int, p, ctypes.c_int, i64, ctypes.c_int, u32, f32, u64]
    lib.ada2i_dropout.restype = None
    lib.ada2i_relu_dropout_backward.argtypes = [p, p, p, i64, ctypes.c_int, f32]
    lib.ada2i_relu_dropout_backward.restype = None
    lib.ada2i_modulation_chunks.argtypes = [i32, p, p]
    lib.ada2i_modulation_chunks.restype = i64
    lib.ada2i_adam.argtypes = [i32, p, p, p, p, p, p, p, p, ctypes.c_double, ctypes.c_double, ctypes.c_double,
                               ctypes.c_double, ctypes.c_double]
    lib.ada2i_adam.restype = None
    lib.ada2i_bf16_to_float.argtypes = [p, p, i64]
    lib.ada2i_bf16_to_float.restype = None
    lib.ada2i_threefry4x32.argtypes = [p, p, p]
    lib.ada2i_threefry4x32.restype = None
    lib.ada2i_moments.argtypes = [i32, p, p, i64, p, p, p]
    lib.ada2i_moments.restype = None
    lib.ada2i_scale_and_add_noise.argtypes = [i32, p, p, p, p, u64, p, i64]
    lib.ada2i_scale_and_add_noise.restype = None


def fits(*tensors: Tensor) -> bool:
    """Whether the native kernels take these tensors: contiguous float32/bfloat16 on the CPU."""
    return all(t.device.type == "cpu" and t.dtype in NATIVE_DTYPES and t.is_contiguous() for t in tensors)
