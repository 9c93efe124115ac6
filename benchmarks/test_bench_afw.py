"""Benchmarks of the AFW tensor-ring op: literal oracle, factored torch, Triton (CUDA only; the CPU
interpreter is no benchmark) and torch.compile of the factored path, forward and forward+backward.

extra_info per entry: utterances/s (B*T / mean time); peak memory above the inputs for one call (CUDA:
torch.cuda.max_memory_allocated; CPU: peak RSS, Linux VmHWM, of a fresh subprocess over one call minus its
RSS just before, not measured for the compiled backend whose compilation would dominate it); the roofline
counts of ``roofline.py`` (the literal computation for the literal backend, the factored one for the others)
and the achieved GFLOP/s and GB/s.

Run directly (``python benchmarks/test_bench_afw.py SHAPE BACKEND MODE``) it prints that CPU peak.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

from ada2i_fast import Ada2IConfig
from ada2i_fast.kernels import tensor_ring, use_backend
from ada2i_fast.kernels.tensor_ring_torch import tensor_ring_factored
from ada2i_fast.modules.afw import AFW
from roofline import afw_layer_cost, record, tensor_ring_cost
from shapes import Shape, presets

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPE = torch.float32
BETA = 0.3
BACKENDS = ("literal", "torch", "triton", "compile")
MODES = ("fwd", "fwd_bwd")


def _inputs(shape: Shape, device: torch.device):
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, shape.T + 1, (shape.B,), generator=gen)
    lengths[0] = shape.T
    h = torch.randn(shape.M, shape.B, shape.T, shape.H, generator=gen)
    mask = torch.arange(shape.T) < lengths.unsqueeze(1)
    rank_weight = torch.randn(shape.M, 4 * shape.R, shape.H, generator=gen) / shape.H**0.5
    rank_bias = 0.1 * torch.randn(shape.M, 4 * shape.R, generator=gen)
    att_weight = torch.randn(shape.M, shape.H, shape.R * shape.R, generator=gen) / shape.R
    att_bias = 0.1 * torch.randn(shape.M, shape.H, generator=gen)
    floats = [x.to(device, DTYPE).requires_grad_() for x in (h, rank_weight, rank_bias, att_weight, att_bias)]
    return floats[0], mask.to(device), *floats[1:]


def _op(backend: str):
    """The op as ``f(*inputs) -> (y, a)``."""
    if backend == "compile":
        compiled = torch.compile(tensor_ring_factored)
        return lambda *args: compiled(*args, BETA)

    def run(*args):
        with use_backend(backend):
            return tensor_ring(*args, BETA)

    return run


def _step(op, inputs, mode: str):
    """One call of ``mode`` as a closure; fwd_bwd back-propagates ones through y and a."""
    leaves = [x for x in inputs if x.is_floating_point()]

    def fwd():
        with torch.no_grad():
            return op(*inputs)

    def fwd_bwd():
        y, a = op(*inputs)
        return torch.autograd.grad((y, a), leaves, (torch.ones_like(y), torch.ones_like(a)))

    return fwd if mode == "fwd" else fwd_bwd


def _synchronized(fn):
    if DEVICE.type != "cuda":
        return fn

    def run():
        out = fn()
        torch.cuda.synchronize()
        return out

    return run


def _cuda_peak_bytes(step) -> int:
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def _cpu_peak_bytes(shape: Shape, backend: str, mode: str) -> int:
    """Peak RSS over one call minus the RSS before it, in a fresh process so memory the allocator kept from
    earlier calls cannot hide it."""
    args = [sys.executable, __file__, json.dumps(dataclasses.asdict(shape)), backend, mode]
    out = subprocess.run(args, check=True, capture_output=True, text=True, cwd=os.path.dirname(__file__))
    return int(out.stdout.split()[-1])


def _literal_fits(shape: Shape) -> bool:
    """The literal path keeps about ten [M, B, T, R, R] float32 tensors plus a few [M, B, T, H] ones alive."""
    need = 4 * shape.M * shape.B * shape.T * (10 * shape.R * shape.R + 8 * shape.H)
    if DEVICE.type == "cuda":
        return need < torch.cuda.mem_get_info()[0]
    return need < os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", presets(), ids=lambda s: s.name)
def test_tensor_ring(benchmark, shape, backend, mode):
    if backend == "triton" and DEVICE.type != "cuda":
        pytest.skip("Triton is benchmarked on CUDA only")
    if backend == "literal" and not _literal_fits(shape):
        pytest.skip(f"literal oracle at {shape} does not fit in memory")
    inputs = _inputs(shape, DEVICE)
    step = _synchronized(_step(_op(backend), inputs, mode))
    if backend == "compile":
        try:
            step()
        except Exception as error:  # no compiler toolchain, unsupported platform, ...
            pytest.skip(f"torch.compile unavailable: {type(error).__name__}: {error}")

    benchmark.group = f"tensor_ring {mode} {shape}"
    benchmark.extra_info.update(shape=dataclasses.asdict(shape), device=str(DEVICE))
    benchmark(step)
    record(benchmark, tensor_ring_cost(shape, mode, literal=backend == "literal"), DTYPE)
    if not benchmark.enabled:
        return
    benchmark.extra_info["utterances_per_s"] = shape.utterances / benchmark.stats.stats.mean
    if DEVICE.type == "cuda":
        benchmark.extra_info["peak_bytes"] = _cuda_peak_bytes(step)
    elif backend != "compile":
        benchmark.extra_info["peak_bytes"] = _cpu_peak_bytes(shape, backend, mode)


@pytest.mark.parametrize("backend", ("literal", "torch"))
@pytest.mark.parametrize("shape", [s for s in presets() if s.name.startswith("iemocap")], ids=lambda s: s.name)
def test_afw_layer(benchmark, shape, backend):
    """One AFW layer in training mode, forward and backward: the op, the feature loss and dropout."""
    torch.manual_seed(0)
    afw = AFW(shape.M, shape.H, shape.R, BETA, n_layers=1, drop_rate=0.5, semantics=Ada2IConfig().semantics).to(DEVICE)
    h, mask = _inputs(shape, DEVICE)[:2]
    flat_index = mask.flatten().nonzero().flatten()

    def step():
        with use_backend(backend):
            y, feature_loss = afw(h, mask, flat_index)
            (y.square().mean() + feature_loss).backward()

    benchmark.group = f"afw layer fwd_bwd {shape}"
    benchmark.extra_info.update(shape=dataclasses.asdict(shape), device=str(DEVICE))
    benchmark(_synchronized(step))
    record(benchmark, afw_layer_cost(shape, flat_index.numel(), literal=backend == "literal"), DTYPE)
    if benchmark.enabled:
        benchmark.extra_info["utterances_per_s"] = shape.utterances / benchmark.stats.stats.mean


def _main(shape_json: str, backend: str, mode: str) -> None:
    shape = Shape(**json.loads(shape_json))
    # A tiny first call pays the one-time start-up (autograd engine threads, library init) outside the peak.
    _step(_op(backend), _inputs(dataclasses.replace(shape, B=1, T=2, H=8), torch.device("cpu")), mode)()
    step = _step(_op(backend), _inputs(shape, torch.device("cpu")), mode)
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # resets the peak RSS (VmHWM) to the current RSS
    before = _status_bytes("VmRSS")
    step()
    print(_status_bytes("VmHWM") - before)


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return 1024 * int(line.split()[1])


if __name__ == "__main__":
    _main(*sys.argv[1:])
