"""This machine's limits, measured in the same session as the ops: the denominators of the roofline fractions.

GEMM throughput per dtype (float32, bfloat16): a square matmul big enough to reach the peak (n = 2048 on
the CPU, 8192 on CUDA). Memory bandwidth: an in-place scale of one large float32 tensor (512 MiB on
the CPU, 4 GiB on CUDA), bytes = read + write; in place, because a copy into a second tensor also
reads each destination line before writing it (write-allocate), which the byte count would miss. Entries carry ``machine_kind`` (``gemm`` or ``bandwidth``) in
extra_info, which is how the conftest summary and ``report.py`` find them.
A limit is the rate of the fastest round. The conftest runs these first, before anything else can
have changed the process's state. ``ADA2I_BENCH_SMOKE=1`` shrinks both.
"""

from __future__ import annotations

import os

import pytest
import torch

from roofline import gemm_cost, record_limit, stream_cost

SMOKE = os.environ.get("ADA2I_BENCH_SMOKE") == "1"
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
CUDA = DEVICE.type == "cuda"
GEMM_N = 128 if SMOKE else (8192 if CUDA else 2048)
STREAM_BYTES = 2**22 if SMOKE else (4 * 2**30 if CUDA else 2**29)
ROUNDS = 20 if CUDA else 5
GROUP = "machine"


def _synchronised(fn):
    def run():
        fn()
        if CUDA:
            torch.cuda.synchronize()

    return run


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_gemm(benchmark, dtype):
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(GEMM_N, GEMM_N, generator=gen).to(DEVICE, dtype) for _ in range(2))
    out = torch.empty_like(a)
    benchmark.group = GROUP
    benchmark.extra_info["machine_kind"] = "gemm"
    benchmark.pedantic(_synchronised(lambda: torch.mm(a, b, out=out)), rounds=ROUNDS, warmup_rounds=3)
    record_limit(benchmark, gemm_cost(GEMM_N, a.element_size()), dtype)


def test_bandwidth(benchmark):
    data = torch.ones(STREAM_BYTES // 4, device=DEVICE)
    benchmark.group = GROUP
    benchmark.extra_info["machine_kind"] = "bandwidth"
    benchmark.pedantic(_synchronised(lambda: data.mul_(1.0)), rounds=ROUNDS, warmup_rounds=3)
    record_limit(benchmark, stream_cost(STREAM_BYTES), data.dtype)
