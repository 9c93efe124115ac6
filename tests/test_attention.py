"""Attention with dropout on its weights (kernels.attention): the native path, whose backward pass
recomputes the dropped weights, equals the unfused ops with the same mask, values and gradients."""

import pytest
import torch
import torch.nn.functional as F

from ada2i_fast.kernels import cpu_native, use_backend
from ada2i_fast.kernels.attention import _masked_softmax, attention
from ada2i_fast.kernels.dropout import dropout

needs_native = pytest.mark.skipif(not cpu_native.available(), reason="no C compiler for the native kernels")
TOLERANCE = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}


def _inputs(dtype, b=3, heads=2, t=7, d=5):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(b, heads, t, d, generator=gen).to(dtype).requires_grad_() for _ in range(3))
    mask = torch.arange(t) < torch.tensor([7, 3, 1]).unsqueeze(1)  # odd lengths, one dialogue of one utterance
    return q, k, v, mask


def _values_and_grads(fn, q, k, v, mask, seed):
    torch.manual_seed(seed)
    out = fn(q, k, v, mask)
    out.backward(torch.ones_like(out) + torch.arange(out.numel(), dtype=out.dtype).view(out.shape) / out.numel())
    grads = [x.grad.clone() for x in (q, k, v)]
    for x in (q, k, v):
        x.grad = None
    return out.detach(), grads


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_native_dropout_attention_equals_the_unfused_ops_with_the_same_mask(dtype):
    q, k, v, mask = _inputs(dtype)
    with use_backend("native"):
        fused = _values_and_grads(lambda q, k, v, mask: attention(q, k, v, mask[:, None, None, :], p=0.4),
                                  q, k, v, mask, seed=1)
        unfused = _values_and_grads(
            lambda q, k, v, mask: torch.matmul(dropout(_masked_softmax(q, k, mask[:, None, None, :]), 0.4), v),
            q, k, v, mask, seed=1)
    torch.testing.assert_close(fused[0], unfused[0], **TOLERANCE[dtype])
    for a, b in zip(fused[1], unfused[1]):
        torch.testing.assert_close(a, b, **TOLERANCE[dtype])


@pytest.mark.parametrize("backend", ["native", "torch"])
def test_without_dropout_attention_is_torchs_and_padded_keys_get_no_weight(backend):
    q, k, v, mask = _inputs(torch.float32)
    with use_backend(backend):
        out = attention(q, k, v, mask[:, None, None, :])
        torch.manual_seed(2)
        dropped = attention(q, k, v, mask[:, None, None, :], p=0.5)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :]))
    v_padded = v.detach().clone()
    v_padded[2, :, 1:] = 1e6  # keys beyond the third dialogue's single utterance
    with use_backend(backend):
        torch.manual_seed(2)
        again = attention(q, k, v_padded, mask[:, None, None, :], p=0.5)
    torch.testing.assert_close(again[2], dropped[2])
