"""Dropout (kernels.dropout): the keep probability, the backward pass's mask, the fused ReLU and
residual forms, dtypes and odd sizes, in the native C kernel (its mask recomputed from the seed) and
in the torch fallback."""

import subprocess
import sys

import pytest
import torch

from ada2i_fast.kernels import cpu_native, use_backend
from ada2i_fast.kernels.dropout import dropout
from ada2i_fast.modules.dropout import Dropout

BACKENDS = ["native", "torch"]
needs_native = pytest.mark.skipif(not cpu_native.available(), reason="no C compiler for the native kernels")


def _within_six_standard_errors(kept_fraction: float, p: float, n: int) -> bool:
    return abs(kept_fraction - (1 - p)) < 6 * (p * (1 - p) / n) ** 0.5


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("p", [0.3, 0.5, 0.9])
def test_each_element_is_kept_with_probability_one_minus_p(backend, p):
    n = 1_000_003  # not a multiple of the kernel's blocks or groups
    torch.manual_seed(0)
    x = torch.ones(n, requires_grad=True)
    with use_backend(backend):
        out = dropout(x, p)
    assert _within_six_standard_errors((out != 0).double().mean().item(), p, n)
    torch.testing.assert_close(out.unique(), torch.tensor([0.0, 1 / (1 - p)]))
    out.sum().backward()
    assert torch.equal(x.grad, out.detach())  # the backward pass passes exactly the kept elements


@needs_native
def test_the_native_mask_has_no_correlation_between_neighbours_or_blocks():
    torch.manual_seed(1)
    with use_backend("native"):
        kept = (dropout(torch.ones(1 << 20), 0.5) != 0).double()
    centred = kept - kept.mean()
    for lag in (1, 3, 4, 1024):  # neighbours, a generator call's four words, one block to the next
        correlation = (centred[:-lag] * centred[lag:]).mean() / centred.var()
        assert abs(correlation) < 6 / (kept.numel() ** 0.5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(7,), (33, 5), (3, 17, 129)])
def test_backward_multiplies_by_the_forward_mask(backend, dtype, shape):
    torch.manual_seed(2)
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    grad = torch.randn(shape, dtype=dtype)
    with use_backend(backend):
        out = dropout(x, 0.4)
    out.backward(grad)
    kept = out.detach() != 0
    assert out.dtype == dtype and x.grad.dtype == dtype
    torch.testing.assert_close(out.detach(), torch.where(kept, (x.detach().float() / 0.6).to(dtype), 0))
    torch.testing.assert_close(x.grad, torch.where(kept, (grad.float() / 0.6).to(dtype), 0))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_relu_equals_relu_then_the_same_mask(backend, dtype):
    torch.manual_seed(3)
    x = torch.randn(41, 37, dtype=dtype, requires_grad=True)
    grad = torch.randn(41, 37, dtype=dtype)
    with use_backend(backend):
        torch.manual_seed(4)
        fused = dropout(x, 0.3, relu=True)
        torch.manual_seed(4)
        masked_ones = dropout(torch.ones_like(x), 0.3)  # the same seed gives the same mask
    fused.backward(grad)
    kept = masked_ones != 0
    torch.testing.assert_close(fused.detach(), torch.where(kept, (torch.relu(x.detach()).float() / 0.7).to(dtype), 0))
    torch.testing.assert_close(x.grad, torch.where(kept & (x.detach() > 0), (grad.float() / 0.7).to(dtype), 0))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("x_dtype, residual_dtype", [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16),
                                                     (torch.bfloat16, torch.float32), (torch.float32, torch.bfloat16)])
def test_fused_residual_add_equals_residual_plus_dropout(backend, x_dtype, residual_dtype):
    torch.manual_seed(5)
    x = torch.randn(19, 23, dtype=x_dtype, requires_grad=True)
    residual = torch.randn(19, 23, dtype=residual_dtype, requires_grad=True)
    with use_backend(backend):
        torch.manual_seed(6)
        fused = dropout(x, 0.5, residual=residual)
        torch.manual_seed(6)
        plain = dropout(x.detach(), 0.5)
    assert fused.dtype == torch.result_type(x, residual)
    torch.testing.assert_close(fused.detach(), residual.detach() + plain)
    grad = torch.randn(fused.shape, dtype=fused.dtype)
    fused.backward(grad)
    assert x.grad.dtype == x_dtype and residual.grad.dtype == residual_dtype
    torch.testing.assert_close(residual.grad, grad.to(residual_dtype))
    torch.testing.assert_close(x.grad, torch.where(plain != 0, grad * 2, 0).to(x_dtype))


def test_relu_and_residual_together_are_refused():
    with pytest.raises(ValueError, match="not both"):
        dropout(torch.ones(3), 0.5, relu=True, residual=torch.ones(3))


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_same_mask_and_eval_mode_is_the_identity(backend):
    x = torch.randn(1000)
    with use_backend(backend):
        torch.manual_seed(7)
        first = dropout(x, 0.5)
        torch.manual_seed(7)
        again = dropout(x, 0.5)
        other = dropout(x, 0.5)
        module = Dropout(0.5).eval()
        assert module(x) is x and dropout(x, 0.0) is x
        assert torch.equal(dropout(x, 0.5, training=False, relu=True), torch.relu(x))
    assert torch.equal(first, again) and not torch.equal(first, other)


@needs_native
def test_the_native_mask_is_the_same_for_any_number_of_threads():
    code = ("import torch; from ada2i_fast.kernels.dropout import dropout; torch.set_num_threads({threads}); "
            "torch.manual_seed(0); print(hash(tuple(dropout(torch.ones(300001), 0.5).nonzero().flatten().tolist())))")
    outputs = {subprocess.run([sys.executable, "-c", code.format(threads=threads)], capture_output=True, text=True,
                              check=True, timeout=120).stdout for threads in (1, 2)}
    assert len(outputs) == 1


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_without_dropout_the_relu_form_is_relu_and_draws_nothing(backend, dtype):
    x = torch.randn(1001, dtype=dtype, requires_grad=True)
    torch.manual_seed(8)
    with use_backend(backend):
        out = dropout(x, 0.5, training=False, relu=True)
    assert torch.equal(torch.get_rng_state(), torch.manual_seed(8).get_state())
    assert torch.equal(out, torch.relu(x.detach()))
    out.sum().backward()
    assert torch.equal(x.grad, (x.detach() > 0).to(dtype))
