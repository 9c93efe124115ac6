"""Roofline counts: the FLOPs and bytes of each benchmarked op, counted once from its shapes.

FLOPs count a multiply-add as 2. "Matmul FLOPs" are those of the GEMM-type ops (mm, bmm, baddbmm,
einsum, attention), which is what ``torch.utils.flop_counter.FlopCounterMode`` counts; elementwise
FLOPs are added where the op has them. Bytes are the compulsory traffic of the op, not that of one
implementation: its inputs read and its outputs written once (again in backward where backward needs
them), never the intermediates an implementation materialises, so GB/s is an effective bandwidth.

A benchmark calls ``record(benchmark, cost, dtype)`` after measuring; the conftest summary and
``report.py`` turn the stored counts into fractions of the machine's limits measured by
``test_bench_machine.py``.

Whole model (for ``test_bench_training.py``): with ``step`` a zero-argument callable that runs one
training step (or one inference pass)::

    cost = train_step_cost(step, model.parameters(), modulated=itertools.chain(*model.encoder_parameters()),
                           noise=recipe.grad_noise, extra_bytes=tensor_bytes(batch.features.values()))
    cost = inference_cost(predict, model.parameters(), extra_bytes=tensor_bytes(batch.features.values()))
    ...                       # benchmark.pedantic(step, ...)
    record(benchmark, cost, torch.float32)

Both run the callable once (use it as the warm-up: it does whatever one step does) under
``FlopCounterMode`` and return its matmul FLOPs with a lower bound of the bytes (see their docstrings).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Iterable

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from ada2i_fast.kernels import use_backend
from ada2i_fast.kernels.backend import get_backend

MODES = ("fwd", "fwd_bwd")


@dataclasses.dataclass(frozen=True)
class Cost:
    flops: float
    bytes: float

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.flops + other.flops, self.bytes + other.bytes)


def record(benchmark, cost: Cost, dtype: torch.dtype) -> None:
    """Store ``cost`` and the compute dtype in ``benchmark.extra_info``, with the achieved rates when measured."""
    info = benchmark.extra_info
    info.update(flops=cost.flops, bytes=cost.bytes, dtype=str(dtype).removeprefix("torch."), device_name=_device_name())
    if benchmark.stats:  # None (--benchmark-disable) or empty until measured
        seconds = benchmark.stats.stats.mean
        info["gflop_per_s"] = cost.flops / seconds / 1e9
        info["gb_per_s"] = cost.bytes / seconds / 1e9


def record_limit(benchmark, cost: Cost, dtype: torch.dtype) -> None:
    """``record`` for a machine limit: the rates of the fastest round, what the machine can reach."""
    record(benchmark, cost, dtype)
    if benchmark.stats:
        seconds = benchmark.stats.stats.min
        benchmark.extra_info.update(gflop_per_s=cost.flops / seconds / 1e9, gb_per_s=cost.bytes / seconds / 1e9)


def _device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def machine_name() -> str:
    """The CUDA device's name, else the CPU's model name and core count (for result files)."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    try:
        lines = open("/proc/cpuinfo").read().splitlines()
        model = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        model = "CPU"
    return f"{model}, {len(os.sched_getaffinity(0))} cores"


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


# --- machine limits (test_bench_machine.py) ---


def gemm_cost(n: int, itemsize: int) -> Cost:
    """An [n, n] @ [n, n] matmul: 2n³ FLOPs; both operands read and the product written once."""
    return Cost(2.0 * n**3, 3.0 * n * n * itemsize)


def stream_cost(nbytes: int) -> Cost:
    """One in-place pass over ``nbytes`` (scale by a constant): ``nbytes`` read and ``nbytes`` written back."""
    return Cost(float(nbytes) / 4, 2.0 * nbytes)


# --- tensor ring (SPEC §2 literal, §6 factored); shape: shapes.Shape (B, T, H, R, M) ---


def tensor_ring_matmul_flops(shape, mode: str, *, literal: bool) -> float:
    """The GEMM FLOPs of ``tensor_ring_literal`` or ``tensor_ring_factored``, N = B*T rows per modality.

    Both: the four rank projections (8NHR) and the attention map Linear(R² -> H) (2NR²H) per modality.
    Literal: the chain C_m = G_QK · M_l ... multiplies [R, R] matrices per row, (M-1)·2NR³ per modality.
    Factored: M_m = Uᵀ diag(mean weights) V (2NR²), w = V P_m (2NR²) per modality, and the chain products P_m per
    dialogue, M·(M-1)·2BR³, whose first factor is the identity. Backward runs two GEMMs per forward
    GEMM (every operand needs a gradient) except where an operand is a constant: the identity factor of
    each P_m; with one modality P_m is the identity itself and M_m feeds nothing, so the backward skips
    the GEMM of M_m and one of w's.
    """
    _check_mode(mode)
    n, b, h, r, m = shape.B * shape.T, shape.B, shape.H, shape.R, shape.M
    shared = 8 * n * h * r + 2 * n * r * r * h
    if literal:
        forward = m * (shared + (m - 1) * 2 * n * r**3)
        backward = 2 * forward
    else:
        chain = m * (m - 1) * 2 * b * r**3
        forward = m * (shared + 4 * n * r * r) + chain
        constant_operands = m * 2 * b * r**3 if m > 1 else 6 * n * r * r
        backward = 2 * forward - constant_operands
    return float(forward if mode == "fwd" else forward + backward)


def tensor_ring_cost(shape, mode: str, *, literal: bool, itemsize: int = 4) -> Cost:
    """One tensor-ring call (``mode`` "fwd" or "fwd_bwd") of the literal or the factored computation.

    FLOPs: the GEMMs of ``tensor_ring_matmul_flops`` plus the forward's elementwise work per modality,
    counted twice more for backward (each elementwise product's backward forms one product per input):
    factored 7NR (u, v, the mean weights, the 4R biases) + NR² (u ⊗ w) + 4NH (bias, a·h + β·h);
    literal 4NR (biases) + 5NR² (G_Q, G_K, G_QK, the masked mean) + 4NH.
    Bytes (the same for both): forward reads h, the mask and the parameters, writes y and a; backward
    reads dy, da, h, a and the parameters, writes dh and the parameter gradients.
    """
    n, h, r, m = shape.B * shape.T, shape.H, shape.R, shape.M
    if literal:
        elementwise = m * (4 * n * r + 5 * n * r * r + 4 * n * h)
    else:
        elementwise = m * (7 * n * r + n * r * r + 4 * n * h)
    activation = m * n * h * itemsize
    params = m * (4 * r * h + 4 * r + h * r * r + h) * itemsize
    forward_bytes = 3 * activation + params + n
    if mode == "fwd":
        return Cost(tensor_ring_matmul_flops(shape, mode, literal=literal) + elementwise, forward_bytes)
    return Cost(
        tensor_ring_matmul_flops(shape, mode, literal=literal) + 3 * elementwise,
        forward_bytes + 5 * activation + 2 * params,
    )


def afw_layer_cost(shape, n_real: int, *, literal: bool, itemsize: int = 4) -> Cost:
    """One AFW layer forward+backward: the tensor ring plus the feature loss on the ``n_real`` real rows.

    Feature loss FC_m(H_m) vs A_m, L1: FLOPs 6·M·n·H² (the map, its two backward GEMMs) and 3·M·n·H
    elementwise (bias, difference, abs) counted three times; bytes: forward reads the rows, the target
    and the map, backward reads the rows and the map again and writes the gradients of rows, target and
    map. Dropout is not counted.
    """
    m, h = shape.M, shape.H
    rows = m * n_real * h * itemsize
    mapping = m * (h * h + h) * itemsize
    feature_loss = Cost(6.0 * m * n_real * h * h + 9.0 * m * n_real * h, 5 * rows + 3 * mapping)
    return tensor_ring_cost(shape, "fwd_bwd", literal=literal, itemsize=itemsize) + feature_loss


# --- modality balancing (SPEC §3, §2 AMW head) ---

MODULATION_PASSES = {False: 2, True: 7}  # fused torch path: scale r+w; std r, noise w, addcmul r+r+w


def modulation_cost(n_elements: int, noise: bool, itemsize: int = 4) -> Cost:
    """The gradient modulation over ``n_elements`` gradient entries.

    FLOPs per element: 1 (scale by k_m); with noise 5 more: 3 for the std pass (centre, square,
    accumulate) and 2 for adding std·noise. Drawing the noise (integer RNG work and its transform)
    counts no FLOPs. Bytes: the passes over the gradients that ``modulate_gradients_torch`` makes,
    in float32: ``_foreach_mul_`` reads and writes g; with noise, ``std`` reads g, ``normal_`` writes
    the noise, ``addcmul_`` reads g and the noise and writes g.
    """
    return Cost(float(n_elements * (6 if noise else 1)), float(n_elements * MODULATION_PASSES[noise] * itemsize))


def amw_head_cost(n_modalities: int, n_utterances: int, hidden: int, n_classes: int, itemsize: int = 4) -> Cost:
    """The AMW head with the scores, forward + backward of the cross-entropy of the fused logits.

    FLOPs: forward the cosine logits and the unimodal logits, 2·MNHC each; backward the cosine GEMM's
    two gradients, 4·MNHC (the unimodal logits feed only the no-grad scores); normalising z and W,
    3 FLOPs per element forward, counted three times. Softmax, scores and loss on the [M, N, C]
    logits (1/H of the GEMM work) are not counted.
    Bytes: forward reads z, W, b and the labels (int64), writes the fused and unimodal logits and the
    scores; backward reads the logits' gradient, z and W and writes dz, dW and db.
    """
    m, n, h, c = n_modalities, n_utterances, hidden, n_classes
    flops = 8.0 * m * n * h * c + 9.0 * (m * n * h + m * c * h)
    z, w, logits = m * n * h, c * m * h, n * c
    forward = z + w + c + logits + m * logits + m
    backward = logits + 2 * z + 2 * w + c
    return Cost(flops, float((forward + backward) * itemsize + 8 * n))


# --- whole model (test_bench_training.py) ---

TRAIN_STEP_PARAMETER_PASSES = 13  # forward 1, backward 1, gradient written 1, clip 3, fused Adam 7


def train_step_cost(
    run_once: Callable[[], object],
    params: Iterable[torch.Tensor],
    *,
    modulated: Iterable[torch.Tensor] = (),
    noise: bool = True,
    extra_bytes: float = 0.0,
) -> Cost:
    """One training step: ``run_once()`` runs it once under ``FlopCounterMode``.

    FLOPs: matmul-type FLOPs only (mm, bmm, addmm, baddbmm, einsum, attention) of the forward and the
    backward pass; elementwise work, normalisations and the optimizer count nothing.
    Bytes, a lower bound in the parameters' dtype: ``params`` read in forward and in backward, their
    gradients written, the gradient clip reading them for the norm and reading and writing them to
    scale, fused Adam reading p, g, m, v and writing p, m, v (13 passes); the ``modulated`` gradients
    read and written by the modulation (2 passes, 7 with ``noise``, as ``modulation_cost``); plus
    ``extra_bytes`` (the input features: ``tensor_bytes(batch.features.values())``). Activations
    are not counted.
    """
    params, modulated = tensor_bytes(params), tensor_bytes(modulated)
    flops = count_matmul_flops(run_once)
    return Cost(flops, TRAIN_STEP_PARAMETER_PASSES * params + MODULATION_PASSES[noise] * modulated + extra_bytes)


def inference_cost(run_once: Callable[[], object], params: Iterable[torch.Tensor], extra_bytes: float = 0.0) -> Cost:
    """One inference pass: matmul-type FLOPs of ``run_once()`` (as ``train_step_cost``); bytes, a lower
    bound: ``params`` read once plus ``extra_bytes`` (the input features)."""
    params = tensor_bytes(params)
    return Cost(count_matmul_flops(run_once), params + extra_bytes)


def count_matmul_flops(run_once: Callable[[], object]) -> int:
    """FLOPs ``FlopCounterMode`` sees over one call, with the CPU flash attention counted like the CUDA one.

    Ops without a FLOP formula count nothing, so torch's fused transformer fast path
    (``nn.TransformerEncoderLayer`` in eval mode without autograd, as the authors' encoders run when
    predicting) is switched off while counting: the same layers then run as linear and attention ops.
    Triton kernels are invisible to it, so where the backend would pick them the call runs on the
    factored torch twins, which do the same work; an explicit ``torch`` or ``literal`` choice stands.
    """
    aten = torch.ops.aten
    cpu_attention = {
        aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *_, **__: sdpa_flop_count(q, k, v),
        aten._scaled_dot_product_flash_attention_for_cpu_backward: (
            lambda grad, q, k, v, *_, **__: sdpa_backward_flop_count(grad, q, k, v)
        ),
    }
    backend = "torch" if get_backend() in ("auto", "triton") else get_backend()
    counter = FlopCounterMode(display=False, custom_mapping=cpu_attention)
    fast_path = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the same math through ops the counter sees
    try:
        with counter, use_backend(backend):
            run_once()
    finally:
        torch.backends.mha.set_fastpath_enabled(fast_path)
    return counter.get_total_flops()


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
