"""Modality balancing ops: the gradient modulation and the AMW head with the disparity scores.

Modulation: ``modulate_gradients`` (the native C kernel on the CPU, its torch twin, Triton on CUDA)
against the public code's way, a per-parameter loop with a ``.std().item()`` host sync each, over
the encoder gradients of the iemocap preset. AMW: forward + backward of the head with the scores (torch twin; Triton on CUDA)
against an unfused per-modality composition of torch ops. Every entry records the roofline counts of
its op (``roofline.py``), the same for all implementations of a group.

``ADA2I_BENCH_SMOKE=1`` shrinks every shape so CI can run this with ``--benchmark-disable``.
"""

import os

import pytest
import torch
import torch.nn.functional as F

from ada2i_fast.kernels import amw_head, cpu_native, modulate_gradients, use_backend
from roofline import amw_head_cost, modulation_cost, record

SMOKE = os.environ.get("ADA2I_BENCH_SMOKE") == "1"
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ROUNDS = 3 if DEVICE.type == "cpu" else 20

# iemocap preset: modality dims a/t/v, FFN width, hidden size; 2 encoder layers
DIMS = (8, 12, 16) if SMOKE else (512, 768, 1024)
FFN = 32 if SMOKE else 2048
HIDDEN = 10 if SMOKE else 300
N_UTTERANCES = 20 if SMOKE else 500
N_CLASSES = 6
NOISE_EPS = 1e-8

needs_cuda = pytest.mark.skipif(DEVICE.type != "cuda", reason="Triton variants run on CUDA only")
needs_native = pytest.mark.skipif(DEVICE.type != "cpu" or not cpu_native.available(),
                                  reason="the native kernels run on the CPU, with a C compiler")


def encoder_grad_shapes(d: int, n_layers: int = 2) -> list[tuple[int, ...]]:
    """Parameter shapes of one transformer encoder (post-norm layers) and its output projection."""
    layer = [(3 * d, d), (3 * d,), (d, d), (d,), (FFN, d), (FFN,), (d, FFN), (d,), (d,), (d,), (d,), (d,)]
    return layer * n_layers + [(HIDDEN, d), (HIDDEN,)]


def _encoder_grads() -> tuple[list[torch.Tensor], list[int]]:
    gen = torch.Generator().manual_seed(0)
    grads, modality = [], []
    for m, d in enumerate(DIMS):
        shapes = encoder_grad_shapes(d)
        grads += [(torch.randn(s, generator=gen) * 1e-3).to(DEVICE) for s in shapes]
        modality += [m] * len(shapes)
    return grads, modality


def per_parameter_modulation(grads, modality, coefficients, noise):
    """The public code's way: host-side coefficients, one ``.std().item()`` sync per parameter."""
    k = coefficients.tolist()
    for g, m in zip(grads, modality):
        g.mul_(k[m])
        if noise:
            std = g.std().item()
            g.add_(torch.zeros_like(g).normal_(0, std + NOISE_EPS))


def _fused_modulation(backend):
    def run(grads, modality, coefficients, noise):
        with use_backend(backend):
            modulate_gradients(grads, modality, coefficients, noise)

    return run


MODULATIONS = {
    "per_parameter_item": per_parameter_modulation,
    "fused_torch": _fused_modulation("torch"),
    "fused_native": pytest.param(_fused_modulation("native"), marks=needs_native),
    "fused_triton": pytest.param(_fused_modulation("triton"), marks=needs_cuda),
}


def _synchronised(fn):
    def run(*args):
        out = fn(*args)
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        return out

    return run


@pytest.mark.parametrize("noise", [True, False], ids=["noise", "scale_only"])
@pytest.mark.parametrize("impl", list(MODULATIONS.values()), ids=list(MODULATIONS))
def test_bench_modulation(benchmark, impl, noise):
    originals, modality = _encoder_grads()
    coefficients = torch.tensor([0.93, 1.0, 0.71], device=DEVICE)
    grads = [g.clone() for g in originals]

    def reset():
        torch._foreach_copy_(grads, originals)
        return (grads, modality, coefficients, noise), {}

    benchmark.group = f"modulation-{'noise' if noise else 'scale_only'}"
    benchmark.pedantic(_synchronised(impl), setup=reset, rounds=ROUNDS, warmup_rounds=1)
    n_elements = sum(g.numel() for g in grads)
    benchmark.extra_info.update(n_tensors=len(grads), n_elements=n_elements, device=str(DEVICE))
    record(benchmark, modulation_cost(n_elements, noise), grads[0].dtype)
    if benchmark.stats:
        benchmark.extra_info["elements_per_s"] = n_elements / benchmark.stats.stats.mean


def unfused_amw_head(z, weight, bias, labels, scale):
    """Per-modality composition of torch ops: normalise, linear, sum; scores by softmax + gather."""
    n_mod, _, hidden = z.shape
    fused, unimodal, scores = bias, [], []
    for m in range(n_mod):
        w_m = weight[:, m * hidden : (m + 1) * hidden]
        fused = fused + scale * F.linear(F.normalize(z[m], dim=-1), F.normalize(w_m, dim=-1))
        logits = F.linear(z[m], w_m, bias / n_mod)
        unimodal.append(logits)
        with torch.no_grad():
            scores.append(logits.softmax(-1).gather(1, labels[:, None]).sum())
    return fused, torch.stack(unimodal), torch.stack(scores)


def _packaged_amw_head(backend):
    def run(z, weight, bias, labels, scale):
        with use_backend(backend):
            return amw_head(z, weight, bias, labels, scale, "class")

    return run


AMW_HEADS = {
    "unfused_torch": unfused_amw_head,
    "twin_torch": _packaged_amw_head("torch"),
    "fused_triton": pytest.param(_packaged_amw_head("triton"), marks=needs_cuda),
}


@pytest.mark.parametrize("impl", list(AMW_HEADS.values()), ids=list(AMW_HEADS))
def test_bench_amw_head(benchmark, impl):
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(len(DIMS), N_UTTERANCES, HIDDEN, generator=gen).to(DEVICE).requires_grad_()
    weight = (torch.randn(N_CLASSES, len(DIMS) * HIDDEN, generator=gen) * 0.05).to(DEVICE).requires_grad_()
    bias = torch.zeros(N_CLASSES, device=DEVICE, requires_grad=True)
    labels = torch.randint(0, N_CLASSES, (N_UTTERANCES,), generator=gen).to(DEVICE)

    def step():
        fused, _, scores = impl(z, weight, bias, labels, 1.0)
        F.cross_entropy(fused, labels).backward()
        return scores

    benchmark.group = "amw_head"
    benchmark.pedantic(_synchronised(step), rounds=10 * ROUNDS, warmup_rounds=2)
    benchmark.extra_info.update(n_utterances=N_UTTERANCES, hidden=HIDDEN, n_modalities=len(DIMS), device=str(DEVICE))
    record(benchmark, amw_head_cost(len(DIMS), N_UTTERANCES, HIDDEN, N_CLASSES), z.dtype)
    if benchmark.stats:
        benchmark.extra_info["utterances_per_s"] = N_UTTERANCES / benchmark.stats.stats.mean
