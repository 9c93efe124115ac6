"""The roofline counts of ``benchmarks/roofline.py`` against torch's FlopCounterMode, their invariants, and
the fractions ``benchmarks/report.py`` forms from recorded entries."""

import importlib.util
import itertools
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ada2i_fast.kernels import amw_head
from ada2i_fast.kernels.tensor_ring_literal import tensor_ring_literal
from ada2i_fast.kernels.tensor_ring_torch import tensor_ring_factored
from ada2i_fast.training.step import train_step
from conftest import tiny_step_inputs

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str):
    """A module of benchmarks/ (not a package) by its path."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


roofline = _load("roofline")
report = _load("report")


def _shape(B=3, T=7, H=16, R=5, M=3):
    return SimpleNamespace(B=B, T=T, H=H, R=R, M=M)


def _ring_inputs(shape):
    gen = torch.Generator().manual_seed(0)
    m, b, t, h, r = shape.M, shape.B, shape.T, shape.H, shape.R
    x = torch.randn(m, b, t, h, generator=gen)
    mask = torch.arange(t) < torch.randint(1, t + 1, (b,), generator=gen).unsqueeze(1)
    params = [torch.randn(m, 4 * r, h, generator=gen), torch.randn(m, 4 * r, generator=gen),
              torch.randn(m, h, r * r, generator=gen), torch.randn(m, h, generator=gen)]
    return [x.requires_grad_(), mask, *(p.requires_grad_() for p in params)]


def _counted(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("mode", roofline.MODES)
@pytest.mark.parametrize("n_modalities", [1, 3])
@pytest.mark.parametrize("literal", [False, True], ids=["factored", "literal"])
def test_tensor_ring_matmul_flops_are_what_torch_counts(literal, n_modalities, mode):
    shape = _shape(M=n_modalities)
    inputs = _ring_inputs(shape)
    op = tensor_ring_literal if literal else tensor_ring_factored

    def run():
        y, a = op(*inputs, 0.3)
        if mode == "fwd_bwd":
            leaves = [x for x in inputs if x.is_floating_point()]
            torch.autograd.grad((y, a), leaves, (torch.ones_like(y), torch.ones_like(a)))

    assert roofline.tensor_ring_matmul_flops(shape, mode, literal=literal) == _counted(run)


@pytest.mark.parametrize("mode", roofline.MODES)
@pytest.mark.parametrize("shape", [_shape(B=10, T=110, H=300, R=11), _shape(B=10, T=24, H=200, R=6),
                                   _shape(B=10, T=110, H=300, R=32)], ids=["iemocap", "meld", "iemocap_r32"])
def test_the_literal_ring_does_more_work_for_the_same_bytes(shape, mode):
    literal = roofline.tensor_ring_cost(shape, mode, literal=True)
    factored = roofline.tensor_ring_cost(shape, mode, literal=False)
    assert literal.flops > factored.flops
    assert literal.bytes == factored.bytes
    assert factored.flops > roofline.tensor_ring_matmul_flops(shape, mode, literal=False)


def _linear_in(cost_of, sizes=(1, 2, 3)) -> bool:
    """cost_of(n) is affine in n: equal steps between consecutive sizes."""
    first, second, third = (cost_of(n) for n in sizes)
    return second - first == third - second > 0


@pytest.mark.parametrize("literal", [False, True])
def test_costs_scale_linearly_in_the_batch(literal):
    for mode in roofline.MODES:
        assert _linear_in(lambda b: roofline.tensor_ring_cost(_shape(B=b), mode, literal=literal).bytes)
        assert _linear_in(lambda b: roofline.tensor_ring_cost(_shape(B=b), mode, literal=literal).flops)
    assert _linear_in(lambda b: roofline.afw_layer_cost(_shape(B=b), 5 * b, literal=literal).bytes)
    assert _linear_in(lambda n: roofline.modulation_cost(1000 * n, noise=True).bytes)
    assert _linear_in(lambda n: roofline.amw_head_cost(3, 10 * n, 16, 6).bytes)


def test_modulation_bytes_are_its_passes_over_float32_gradients():
    assert roofline.modulation_cost(1000, noise=False) == roofline.Cost(1000, 2 * 4 * 1000)
    assert roofline.modulation_cost(1000, noise=True) == roofline.Cost(6000, 7 * 4 * 1000)


def test_amw_head_flops_cover_its_matmuls():
    m, n, h, c = 3, 20, 64, 6
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(m, n, h, generator=gen, requires_grad=True)
    weight = torch.randn(c, m * h, generator=gen, requires_grad=True)
    bias = torch.zeros(c, requires_grad=True)
    labels = torch.randint(0, c, (n,), generator=gen)

    def run():
        fused, _, _ = amw_head(z, weight, bias, labels, 10.0, "class")
        F.cross_entropy(fused, labels).backward()

    counted = _counted(run)
    assert counted == 8 * m * n * h * c
    assert counted < roofline.amw_head_cost(m, n, h, c).flops < 1.5 * counted


def test_train_step_cost_counts_the_step_once_with_its_parameter_passes():
    model, recipe, optimizer, batch = tiny_step_inputs()
    step = lambda: train_step(model, batch, optimizer, recipe, modulate=True)  # noqa: E731
    params = sum(p.numel() for p in model.parameters()) * 4
    encoders = sum(p.numel() for p in itertools.chain(*model.encoder_parameters())) * 4
    features = roofline.tensor_bytes(batch.features.values())

    cost = roofline.train_step_cost(step, model.parameters(), modulated=itertools.chain(*model.encoder_parameters()),
                                    extra_bytes=features)
    assert cost.bytes == 13 * params + 7 * encoders + features
    model.eval()  # no dropout: the CPU's flash attention, which FlopCounterMode alone would not count
    inference = roofline.inference_cost(lambda: model(batch), model.parameters(), features)
    assert inference.bytes == params + features
    assert 0 < inference.flops < cost.flops
    with FlopCounterMode(display=False) as counter:
        model(batch)
    assert inference.flops > counter.get_total_flops()


def test_record_stores_the_counts_and_the_rates_when_measured():
    measured = SimpleNamespace(extra_info={}, stats=SimpleNamespace(stats=SimpleNamespace(mean=0.5)))
    roofline.record(measured, roofline.Cost(4e9, 2e9), torch.bfloat16)
    info = measured.extra_info
    assert (info["flops"], info["bytes"], info["dtype"], info["device_name"]) == (4e9, 2e9, "bfloat16", "cpu")
    assert (info["gflop_per_s"], info["gb_per_s"]) == (8.0, 4.0)
    disabled = SimpleNamespace(extra_info={}, stats=None)
    roofline.record(disabled, roofline.Cost(4e9, 2e9), torch.float32)
    assert "gflop_per_s" not in disabled.extra_info


def _entry(group, name, **info):
    return {"group": group, "name": name, "extra_info": info}


def test_report_forms_fractions_of_the_same_dtype_gemm_and_the_bandwidth():
    entries = [
        _entry("machine", "test_gemm[float32]", machine_kind="gemm", dtype="float32", flops=1, bytes=1,
               gflop_per_s=100.0, gb_per_s=1.0),
        _entry("machine", "test_gemm[bfloat16]", machine_kind="gemm", dtype="bfloat16", flops=1, bytes=1,
               gflop_per_s=400.0, gb_per_s=1.0),
        _entry("machine", "test_bandwidth", machine_kind="bandwidth", dtype="float32", flops=0, bytes=1,
               gflop_per_s=0.0, gb_per_s=20.0),
        _entry("op", "test_op[fast]", dtype="bfloat16", device_name="NVIDIA H100 80GB HBM3", flops=300, bytes=100,
               gflop_per_s=40.0, gb_per_s=10.0),
        _entry("op", "test_op[unmeasured]", dtype="float32", flops=3, bytes=1),
    ]
    (row,) = report.roofline_rows(entries)
    assert (row.group, row.variant, row.flop_per_byte) == ("op", "fast", 3.0)
    assert row.pct_gemm == pytest.approx(10.0) and row.pct_bandwidth == pytest.approx(50.0)
    assert row.pct_datasheet_flops == pytest.approx(100 * 40e9 / 989e12)
    assert row.pct_datasheet_bytes == pytest.approx(100 * 10e9 / 3.35e12)
    assert "GEMM bfloat16 400 GFLOP/s" in report.machine_line(entries)
    assert "| op | fast | bfloat16 |" in report.roofline_markdown(entries)


def test_without_the_machine_group_the_report_says_how_to_get_the_fractions():
    entries = [_entry("op", "test_op[a]", dtype="float32", device_name="cpu", flops=3, bytes=1,
                      gflop_per_s=3.0, gb_per_s=1.0)]
    (row,) = report.roofline_rows(entries)
    assert row.pct_gemm is row.pct_bandwidth is row.pct_datasheet_flops is None
    assert report.machine_line(entries) == report.MACHINE_HINT
    assert report.datasheet_peaks("NVIDIA H100 PCIe")[1] == 2.0e12
    assert report.datasheet_peaks("NVIDIA H200")[1] == 4.8e12
