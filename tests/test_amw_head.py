"""The AMW head: the torch twin's semantics on hand-computed cases, and the Triton kernels
(under TRITON_INTERPRET=1 on CPU) against the twin evaluated in float64."""

import importlib
import math

import pytest
import torch
import torch.nn.functional as F

from ada2i_fast.kernels import amw_head, backend, use_backend
from ada2i_fast.kernels.amw_head_torch import amw_head_torch
from conftest import KERNEL_DEVICE

amw_head_module = importlib.import_module("ada2i_fast.kernels.amw_head")  # the package exports the function

# Triton (fp32 accumulation) vs the float64 twin. Low-precision inputs are compared on the same
# rounded inputs; the outputs are rounded once to the input dtype (bf16 keeps 8 mantissa bits).
TOLERANCES = {
    torch.float32: dict(atol=2e-5, rtol=2e-5),
    torch.float16: dict(atol=4e-3, rtol=4e-3),
    torch.bfloat16: dict(atol=3e-2, rtol=3e-2),
}


def _inputs(n_mod, n, hidden, n_classes, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n_mod, n, hidden, generator=gen).to(dtype)
    weight = torch.randn(n_classes, n_mod * hidden, generator=gen).to(dtype)
    bias = torch.randn(n_classes, generator=gen).to(dtype)
    labels = torch.randint(0, n_classes, (n,), generator=gen)
    d_fused = torch.randn(n, n_classes, generator=gen, dtype=torch.float64)
    d_unimodal = torch.randn(n_mod, n, n_classes, generator=gen, dtype=torch.float64)
    return tuple(x.to(KERNEL_DEVICE) for x in (z, weight, bias)), *(x.to(KERNEL_DEVICE) for x in (labels, d_fused, d_unimodal))


def _run(backend_name, params, labels, scale, normalisation, d_fused, d_unimodal, dtype):
    leaves = [p.detach().to(dtype).requires_grad_() for p in params]
    with use_backend(backend_name):
        fused, unimodal, scores = amw_head(*leaves, labels, scale, normalisation)
    loss = 0
    if d_fused is not None:
        loss = loss + (fused.to(torch.float64) * d_fused).sum()
    if d_unimodal is not None:
        loss = loss + (unimodal.to(torch.float64) * d_unimodal).sum()
    loss.backward()
    return {
        "fused": fused, "unimodal": unimodal, "scores": scores,
        "dz": leaves[0].grad, "dweight": leaves[1].grad, "dbias": leaves[2].grad,
    }  # fmt: skip


def _assert_matches(got, want, dtype):
    for name, expected in want.items():
        actual = got[name]
        if expected is None:
            assert actual is None, name
            continue
        assert actual.dtype == dtype, name
        torch.testing.assert_close(actual.to(torch.float64), expected, **TOLERANCES[dtype], msg=name)


# (N, H, C): several row blocks, odd H in one or several hidden blocks, C not a power of two
SHAPES = [(37, 19, 6), (71, 75, 3)]


@pytest.mark.kernel_device
@pytest.mark.parametrize("normalisation", ["class", "feature", "none"])
@pytest.mark.parametrize("n_mod", [1, 2, 3])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "N{}-H{}-C{}".format(*s))
def test_triton_matches_twin_float32(normalisation, n_mod, shape):
    n, hidden, n_classes = shape
    params, labels, d_fused, d_unimodal = _inputs(n_mod, n, hidden, n_classes, torch.float32)
    want = _run("torch", params, labels, 1.7, normalisation, d_fused, d_unimodal, torch.float64)
    got = _run("triton", params, labels, 1.7, normalisation, d_fused, d_unimodal, torch.float32)
    _assert_matches(got, want, torch.float32)


@pytest.mark.kernel_device
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("normalisation", ["class", "feature"])
def test_triton_low_precision_inputs(dtype, normalisation):
    params, labels, d_fused, d_unimodal = _inputs(2, 21, 40, 5, dtype)
    want = _run("torch", params, labels, 1.0, normalisation, d_fused, d_unimodal, torch.float64)
    got = _run("triton", params, labels, 1.0, normalisation, d_fused, d_unimodal, dtype)
    _assert_matches(got, want, dtype)


@pytest.mark.kernel_device
@pytest.mark.parametrize("use_fused, use_unimodal", [(True, False), (False, True)])
def test_triton_backward_with_one_output_unused(use_fused, use_unimodal):
    params, labels, d_fused, d_unimodal = _inputs(3, 13, 9, 4, torch.float32)
    d_fused, d_unimodal = (d_fused if use_fused else None), (d_unimodal if use_unimodal else None)
    want = _run("torch", params, None, 2.0, "class", d_fused, d_unimodal, torch.float64)
    got = _run("triton", params, None, 2.0, "class", d_fused, d_unimodal, torch.float32)
    _assert_matches(got, want, torch.float32)


def _cosine_head_by_hand(z, weight, bias, scale):
    """SPEC §2 in float64, one modality and one class vector at a time: sum_m s*cos(z_m, W_m[c]) + b."""
    n_mod, _, hidden = z.shape
    fused = bias.double()
    for m in range(n_mod):
        block = weight[:, m * hidden : (m + 1) * hidden].double()
        z_m = z[m].double()
        cosines = (z_m @ block.T) / (z_m.norm(dim=1, keepdim=True) * block.norm(dim=1))
        fused = fused + scale * cosines
    return fused


def test_triton_scores_carry_no_gradient_and_fused_feeds_cross_entropy():
    (z, weight, bias), labels, _, _ = _inputs(3, 30, 12, 6, torch.float32)
    z.requires_grad_()
    with use_backend("triton"):
        fused, _, scores = amw_head(z, weight, bias, labels, 1.0, "class")
    assert not scores.requires_grad and scores.shape == (3,)
    F.cross_entropy(fused, labels).backward()
    z64 = z.detach().double().requires_grad_()
    want_fused = _cosine_head_by_hand(z64, weight, bias, 1.0)
    F.cross_entropy(want_fused, labels).backward()
    torch.testing.assert_close(fused.detach().double(), want_fused.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(z.grad.double(), z64.grad, rtol=1e-4, atol=1e-7)
    hidden = z.shape[-1]
    want_scores = torch.stack([
        (z64[m].detach() @ weight[:, m * hidden : (m + 1) * hidden].double().T + bias.double() / 3)
        .softmax(-1)[torch.arange(labels.numel()), labels].sum()
        for m in range(3)
    ])  # fmt: skip
    torch.testing.assert_close(scores.double(), want_scores, rtol=1e-5, atol=1e-5)


def test_auto_backend_on_cpu_and_missing_triton_use_the_twin(monkeypatch):
    (z, weight, bias), labels, d_fused, d_unimodal = _inputs(2, 5, 4, 3, torch.float32)

    def outputs_and_grads(fn):
        leaves = [p.detach().clone().requires_grad_() for p in (z, weight, bias)]
        fused, unimodal, scores = fn(*leaves, labels, 1.0, "class")
        ((fused.double() * d_fused).sum() + (unimodal.double() * d_unimodal).sum()).backward()
        return [fused, unimodal, scores] + [p.grad for p in leaves]

    def no_triton(*_args, **_kwargs):
        raise AssertionError("the Triton head ran")

    monkeypatch.setattr(amw_head_module._AMWHead, "apply", no_triton)
    twin = outputs_and_grads(amw_head_torch)
    for found, expected in zip(outputs_and_grads(amw_head), twin):  # auto on CPU tensors
        assert torch.equal(found, expected)
    monkeypatch.setattr(backend, "triton_available", lambda: False)
    with use_backend("triton"):
        for found, expected in zip(outputs_and_grads(amw_head), twin):
            assert torch.equal(found, expected)


def test_unknown_normalisation_is_rejected():
    (z, weight, bias), labels, _, _ = _inputs(1, 2, 2, 2, torch.float32)
    with pytest.raises(ValueError, match="normalisation"):
        amw_head(z, weight, bias, labels, 1.0, "rows")


# ---- the twin's semantics, by hand -------------------------------------------------------------


def test_cosine_logits_of_parallel_and_orthogonal_vectors():
    z = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])  # M=1, N=2, H=2
    weight = torch.tensor([[3.0, 0.0], [0.0, 5.0]])
    bias = torch.tensor([0.5, -0.5])
    fused, unimodal, scores = amw_head_torch(z, weight, bias, None, 2.0, "class")
    # parallel → cos 1, orthogonal → cos 0; then scale 2 and the whole bias
    torch.testing.assert_close(fused, torch.tensor([[2.5, -0.5], [0.5, 1.5]]))
    torch.testing.assert_close(unimodal, torch.tensor([[[3.5, -0.5], [0.5, 9.5]]]))
    assert scores is None


def test_class_and_feature_normalisation_differ():
    z = torch.tensor([[[1.0, 0.0]]])
    weight = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    bias = torch.zeros(2)
    by_class, _, _ = amw_head_torch(z, weight, bias, None, 1.0, "class")
    by_feature, _, _ = amw_head_torch(z, weight, bias, None, 1.0, "feature")
    # class rows: [1,1]/√2 and [0,1]; feature columns: [1,0] and [1,1]/√2
    torch.testing.assert_close(by_class, torch.tensor([[1 / math.sqrt(2), 0.0]]))
    torch.testing.assert_close(by_feature, torch.tensor([[1.0, 0.0]]))


def test_fused_logits_sum_over_modalities_with_the_bias_once():
    z = torch.tensor([[[2.0, 0.0]], [[0.0, 3.0]]])  # M=2, N=1, H=2
    weight = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]])
    bias = torch.tensor([1.0, 2.0])
    fused, unimodal, _ = amw_head_torch(z, weight, bias, None, 3.0, "class")
    # modality 0: cos [1, 0]; modality 1: cos [1, 0] → 3·[2, 0] + b
    torch.testing.assert_close(fused, torch.tensor([[7.0, 2.0]]))
    torch.testing.assert_close(unimodal, torch.tensor([[[2.5, 1.0]], [[3.5, 1.0]]]))


def test_none_normalisation_is_the_plain_concat_head():
    (z, weight, bias), labels, _, _ = _inputs(3, 7, 5, 4, torch.float64)
    fused, _, _ = amw_head_torch(z, weight, bias, labels, 10.0, "none")
    concat = torch.cat(list(z), dim=1)
    torch.testing.assert_close(fused, F.linear(concat, weight, bias))


def test_scores_sum_the_gold_softmax_of_the_unimodal_logits():
    log3 = math.log(3.0)
    z = torch.tensor([[[log3], [0.0]], [[log3], [0.0]]])  # M=2, N=2, H=1
    weight = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # W_0 = [0, 1]ᵀ, W_1 = [1, 0]ᵀ
    labels = torch.tensor([1, 0])
    z.requires_grad_()
    _, _, scores = amw_head_torch(z, weight, torch.zeros(2), labels, 1.0, "class")
    # modality 0: softmax [1/4, 3/4] at 1 plus [1/2, 1/2] at 0; modality 1: [3/4, 1/4] at 1 plus 1/2
    torch.testing.assert_close(scores, torch.tensor([1.25, 0.75]))
    assert not scores.requires_grad
