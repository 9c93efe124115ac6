"""Gradient modulation: exact scaling, the noise's distribution and reproducibility, no host sync;
torch path and Triton path (under TRITON_INTERPRET=1 on CPU)."""

import math
import multiprocessing

import pytest
import torch

from ada2i_fast.kernels import modulate_gradients, use_backend
from ada2i_fast.kernels.modulation import _multi_tensor, _scaled_stds
from ada2i_fast.kernels.modulation_native import modulate_gradients_native
from ada2i_fast.kernels import modulation_torch
from ada2i_fast.kernels.modulation_torch import NOISE_EPS, unbiased_stds
from ada2i_fast.kernels import cpu_native
from conftest import KERNEL_DEVICE

needs_native = pytest.mark.skipif(not cpu_native.available(), reason="no C compiler for the native kernels")

BACKENDS = ["torch", "triton", "native"]  # native: the C kernel on the CPU; elsewhere it runs the torch twin
# odd sizes within one chunk and spanning several (chunks are 2048 elements), a 3-d tensor
SHAPES = [(33, 7), (9001,), (3, 4, 5), (2, 4096), (17,)]
MODALITY = [0, 1, 2, 1, 0]


def _grads(shapes=SHAPES, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(s, generator=gen) * (i + 1) + 0.5 * i).to(KERNEL_DEVICE, dtype) for i, s in enumerate(shapes)]


def _modulated(backend, grads, modality, coefficients, noise, seed=None):
    grads = [g.clone() for g in grads]
    generator = None if seed is None else torch.Generator(grads[0].device).manual_seed(seed)
    with use_backend(backend):
        modulate_gradients(grads, modality, coefficients, noise, generator)
    return grads


@pytest.mark.kernel_device
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_scaling_without_noise_is_exact(backend, dtype):
    grads = _grads(dtype=dtype)
    coefficients = torch.tensor([0.25, 1.0, 0.6], device=KERNEL_DEVICE)
    out = _modulated(backend, grads, MODALITY, coefficients, noise=False)
    for g, o, m in zip(grads, out, MODALITY):
        # the twin multiplies in the gradient's dtype, the kernel in fp32 and rounds once
        want = (g.float() * coefficients[m]).to(dtype) if backend == "triton" else g * coefficients.to(dtype)[m]
        assert torch.equal(o, want)


def test_no_gradients_draw_no_noise():
    generator = torch.Generator().manual_seed(5)
    before = generator.get_state()
    modulate_gradients([], [], torch.ones(3), noise=True, generator=generator)
    assert torch.equal(generator.get_state(), before)


def test_twin_stds_are_the_unbiased_sample_std_in_float64():
    grads = _grads()
    want = []
    for g in grads:
        x = g.double().flatten()
        want.append((((x - x.mean()) ** 2).sum() / (x.numel() - 1)).sqrt())
    torch.testing.assert_close(torch.stack(unbiased_stds(grads)).double(), torch.stack(want), rtol=1e-5, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mean, std", [(1.0, 1e-4), (1e4, 1.0)])
def test_stds_of_ill_conditioned_gradients_match_float64(backend, mean, std):
    """A mean that dwarfs the spread: Σg² − n·mean² would cancel every float32 digit."""
    gen = torch.Generator().manual_seed(0)
    grads = [(mean + std * torch.randn(s, generator=gen, dtype=torch.float64)) for s in ((9001,), (33, 7))]
    want = torch.stack([g.std() for g in grads])
    grads32 = [g.float() for g in grads]
    if backend == "torch":
        found = torch.stack(unbiased_stds(grads32)).double()
    elif backend == "native":
        found = modulate_gradients_native(grads32, [0, 1], torch.ones(2), True, None).double()
    else:
        common, layout = _multi_tensor(grads32, [0, 1], torch.ones(2))
        found = _scaled_stds(common, layout).double()
    torch.testing.assert_close(found, want, rtol=1e-3, atol=0)


@pytest.mark.kernel_device
def test_triton_stds_match_tensor_std_of_the_scaled_gradients():
    grads = _grads()
    coefficients = torch.tensor([0.25, 1.0, 0.6], device=KERNEL_DEVICE)
    common, layout = _multi_tensor(grads, MODALITY, coefficients)
    want = torch.stack([(g * coefficients[m]).std() for g, m in zip(grads, MODALITY)])
    torch.testing.assert_close(_scaled_stds(common, layout), want, rtol=1e-5, atol=0)


def _assert_noise_distribution(noise: torch.Tensor, sigma: float):
    """Mean and std of ``noise`` ~ N(0, sigma²) within 6 standard errors.

    Over n samples the sample mean has standard error sigma/√n and the sample std sigma/√(2n).
    """
    n = noise.numel()
    tolerance_mean = 6 * sigma / math.sqrt(n)
    tolerance_std = 6 * sigma / math.sqrt(2 * n)
    assert abs(noise.double().mean().item()) < tolerance_mean
    assert abs(noise.double().std().item() - sigma) < tolerance_std


@pytest.mark.kernel_device
@pytest.mark.parametrize("backend, numel", [("torch", 1_200_000), ("triton", 300_000), ("native", 1_200_000)])
def test_noise_is_zero_mean_with_the_std_of_each_scaled_gradient(backend, numel):
    gen = torch.Generator().manual_seed(3)
    # two tensors of different spread and a non-zero mean: each gets noise matched to its own std
    grads = [(torch.randn(numel, generator=gen) * 2.0 + 1.0).to(KERNEL_DEVICE),
             (torch.randn(numel // 4, generator=gen) * 0.1).to(KERNEL_DEVICE)]
    coefficients = torch.tensor([0.5, 0.8], device=KERNEL_DEVICE)
    out = _modulated(backend, grads, [0, 1], coefficients, noise=True, seed=11)
    for g, o, k in zip(grads, out, coefficients):
        scaled = g * k
        _assert_noise_distribution(o - scaled, scaled.std().item() + NOISE_EPS)


@pytest.mark.kernel_device
@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_same_noise_different_seed_different_noise(backend):
    grads = _grads()
    coefficients = torch.tensor([0.5, 1.0, 0.9], device=KERNEL_DEVICE)
    first = _modulated(backend, grads, MODALITY, coefficients, noise=True, seed=5)
    again = _modulated(backend, grads, MODALITY, coefficients, noise=True, seed=5)
    other = _modulated(backend, grads, MODALITY, coefficients, noise=True, seed=6)
    for a, b, c in zip(first, again, other):
        assert torch.equal(a, b)
        assert not torch.equal(a, c)


@pytest.mark.kernel_device
@pytest.mark.parametrize("backend", ["triton", "native"])
def test_noise_is_independent_across_tensors(backend):
    # equal gradients in two tensors must not receive the same noise (distinct counters)
    n = 5000
    g = torch.randn(n, generator=torch.Generator().manual_seed(0)).to(KERNEL_DEVICE)
    a, b = _modulated(backend, [g, g], [0, 0], torch.ones(1, device=KERNEL_DEVICE), noise=True, seed=1)
    noise_a, noise_b = (a - g).double(), (b - g).double()
    # uncorrelated: the sample correlation of independent draws has standard error 1/sqrt(n)
    correlation = torch.corrcoef(torch.stack([noise_a, noise_b]))[0, 1].item()
    assert abs(correlation) < 6 / math.sqrt(n)
    for noise in (noise_a, noise_b):
        _assert_noise_distribution(noise, g.std().item() + NOISE_EPS)


@pytest.mark.parametrize("backend", ["torch", "triton"])  # the native kernel reads CPU values, waiting for nothing
def test_no_host_sync_inside_the_op(backend, monkeypatch):
    # The CPU's parallel noise draw reads its base seed from a CPU tensor; what runs on a device
    # is the single-generator draw, checked here on the CPU.
    monkeypatch.setattr(modulation_torch, "draws_in_streams", lambda device: False)
    grads = _grads(seed=1)  # a layout not cached by other tests
    coefficients = torch.tensor([0.5, 1.0, 0.9])

    def sync(*_args, **_kwargs):
        raise AssertionError("host sync inside modulate_gradients")

    for method in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__"):
        monkeypatch.setattr(torch.Tensor, method, sync)
    with pytest.raises(AssertionError, match="host sync"):
        float(coefficients[0])
    scaled = [g.clone() for g in grads]
    with use_backend(backend):
        modulate_gradients(grads, MODALITY, coefficients, noise=True)
        modulate_gradients(scaled, MODALITY, coefficients, noise=False)
    monkeypatch.undo()  # the checks below may read values
    for original, found, m in zip(_grads(seed=1), scaled, MODALITY):
        torch.testing.assert_close(found, original * coefficients[m], rtol=1e-6, atol=0)
    for original, found, m in zip(_grads(seed=1), grads, MODALITY):
        assert not torch.equal(found, original * coefficients[m])  # noise was added


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", BACKENDS)
def test_no_device_sync_on_cuda(backend):
    grads = [g.cuda() for g in _grads(seed=2)]
    coefficients = torch.tensor([0.5, 1.0, 0.9], device="cuda")
    with use_backend(backend):
        modulate_gradients(grads, MODALITY, coefficients, noise=True)  # builds the cached layout
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            modulate_gradients(grads, MODALITY, coefficients, noise=True)
        finally:
            torch.cuda.set_sync_debug_mode("default")


def test_triton_rejects_non_contiguous_gradients():
    grads = [torch.randn(8, 6).t()]
    with use_backend("triton"), pytest.raises(ValueError, match="contiguous"):
        modulate_gradients(grads, [0], torch.ones(1), noise=False)


def _streamed_noise(grads, seed, threads, monkeypatch, stream):
    monkeypatch.setattr(modulation_torch, "NOISE_STREAM", stream)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = _modulated("torch", grads, [0] * len(grads), torch.ones(1), noise=True, seed=seed)
    finally:
        torch.set_num_threads(before)
    return [(o - g).double() for o, g in zip(out, grads)]


def _ks_statistic(samples: torch.Tensor) -> float:
    """max |F_n(x) - Φ(x)| of standardised ``samples`` against the standard normal CDF."""
    x, _ = samples.sort()
    n = x.numel()
    cdf = torch.special.ndtr(x)
    above = torch.arange(1, n + 1, dtype=x.dtype) / n - cdf
    below = cdf - torch.arange(0, n, dtype=x.dtype) / n
    return max(above.max().item(), below.max().item())


def test_cpu_stream_noise_is_normal_by_moments_and_ks_and_uncorrelated_across_pieces(monkeypatch):
    n, stream = 400_000, 4096  # about 100 pieces, each with its own generator
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(n, generator=gen) * 3.0 + 2.0, torch.randn(n // 3 + 17, generator=gen) * 0.01]
    noises = _streamed_noise(grads, 7, 2, monkeypatch, stream)
    for g, noise in zip(grads, noises):
        sigma = g.std().item() + NOISE_EPS
        _assert_noise_distribution(noise, sigma)
        # Kolmogorov-Smirnov at the 0.1% level: D < 1.95 / sqrt(n)
        assert _ks_statistic(noise / sigma) < 1.95 / math.sqrt(noise.numel())
    pieces = noises[0][: 2 * stream].view(2, stream)  # neighbouring pieces have consecutive seeds
    correlation = torch.corrcoef(pieces)[0, 1].item()
    assert abs(correlation) < 6 / math.sqrt(stream)


def test_a_wrong_distribution_fails_the_ks_check():
    uniform = (torch.rand(100_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64) - 0.5) * math.sqrt(12)
    assert _ks_statistic(uniform) > 1.95 / math.sqrt(uniform.numel())


def test_cpu_stream_noise_does_not_depend_on_the_thread_count(monkeypatch):
    grads = _grads(shapes=[(9001,), (33, 7), (5000,)])
    grads[1] = grads[1].t()  # a non-contiguous gradient is one piece
    one = _streamed_noise(grads, 3, 1, monkeypatch, 1024)
    two = _streamed_noise(grads, 3, 2, monkeypatch, 1024)
    other_seed = _streamed_noise(grads, 4, 2, monkeypatch, 1024)
    for a, b, c in zip(one, two, other_seed):
        assert torch.equal(a, b) and not torch.equal(a, c)


def _modulate_in_child(grads, modality):
    _modulated("torch", grads, modality, torch.tensor([0.5, 1.0, 0.9]), noise=True, seed=1)


def test_cpu_stream_noise_works_in_a_forked_child_after_the_parent_used_it():
    grads = _grads()
    _modulated("torch", grads, MODALITY, torch.tensor([0.5, 1.0, 0.9]), noise=True, seed=1)  # the parent's pool
    child = multiprocessing.get_context("fork").Process(target=_modulate_in_child, args=(grads, MODALITY))
    child.start()
    child.join(timeout=120)
    if child.is_alive():
        child.kill()
    assert child.exitcode == 0


def _native_noise(grads, seed, threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = _modulated("native", grads, [0] * len(grads), torch.ones(1), noise=True, seed=seed)
    finally:
        torch.set_num_threads(before)
    return [(o - g).double() for o, g in zip(out, grads)]


@needs_native
def test_native_noise_is_normal_by_moments_and_ks_and_uncorrelated_across_chunks_and_blocks():
    n = 400_003  # 13 statistics chunks of 32768 elements, blocks of 1024, groups of 4 (none of them whole here)
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(n, generator=gen) * 3.0 + 2.0, torch.randn(n // 3 + 17, generator=gen) * 0.01]
    noises = _native_noise(grads, 7, 2)
    for g, noise in zip(grads, noises):
        sigma = g.std().item() + NOISE_EPS
        _assert_noise_distribution(noise, sigma)
        assert _ks_statistic(noise / sigma) < 1.95 / math.sqrt(noise.numel())
    standard = noises[0] / noises[0].std()
    for span in (4, 1024, 32768):  # one generator call, one block, one chunk
        pieces = standard[: 2 * span].view(2, span)
        assert abs(torch.corrcoef(pieces)[0, 1].item()) < 6 / math.sqrt(span)
    lag_one = (standard[:-1] * standard[1:]).mean().item()  # the two normals of a Box-Muller pair
    assert abs(lag_one) < 6 / math.sqrt(n)


@needs_native
def test_native_noise_does_not_depend_on_the_thread_count():
    grads = _grads(shapes=[(90001,), (33, 7), (50000,)])
    one, two, other_seed = _native_noise(grads, 3, 1), _native_noise(grads, 3, 2), _native_noise(grads, 4, 2)
    for a, b, c in zip(one, two, other_seed):
        assert torch.equal(a, b) and not torch.equal(a, c)


@needs_native
def test_native_takes_only_contiguous_float32_and_leaves_the_rest_to_the_twin():
    grads = [torch.randn(8, 6).t(), torch.randn(5, dtype=torch.float16)]
    scaled = _modulated("native", grads, [0, 0], torch.tensor([0.5]), noise=False)
    for g, found in zip(grads, scaled):
        assert torch.equal(found, g * torch.tensor(0.5, dtype=g.dtype))
