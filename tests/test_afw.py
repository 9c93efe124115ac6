"""The AFW layer gives the same values and gradients on the factored path as on the literal oracle."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ada2i_fast.config import Semantics
from ada2i_fast.kernels import tensor_ring, use_backend
from ada2i_fast.modules.afw import AFWLayer


def _layer_inputs(n_mod, lengths, hidden, rank, dtype, reference, seed=0):
    torch.manual_seed(seed)
    semantics = Semantics.of("reference" if reference else "method", mmcosine=True, amw_scale=None)
    layer = AFWLayer(n_mod, hidden, rank, beta=0.3, semantics=semantics).to(dtype)
    t = max(lengths)
    h = torch.randn(n_mod, len(lengths), t, hidden, dtype=dtype, requires_grad=True)
    mask = torch.arange(t) < torch.tensor(lengths).unsqueeze(1)
    return layer, h, mask


def _values_and_grads(layer, h, mask, backend):
    layer.zero_grad()
    h.grad = None
    with use_backend(backend):
        y, feature_loss = layer(h, mask, mask.flatten().nonzero().flatten())
    # A fixed random projection of every output so each gradient path is exercised.
    probe = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
    ((y * probe * mask[..., None]).sum() + feature_loss).backward()
    grads = {name: p.grad.clone() for name, p in layer.named_parameters()}
    grads["h"] = h.grad.clone()
    return y.detach()[:, mask], feature_loss.detach(), grads


@pytest.mark.parametrize(
    "n_mod, lengths, hidden, rank, reference",
    [
        (3, [9, 4, 1], 300, 11, False),
        (3, [9, 4, 1], 300, 11, True),
        (2, [6, 6], 200, 6, False),
        (1, [5, 2], 200, 6, False),
        (3, [1], 200, 6, False),
        (2, [7, 3], 64, 11, True),
    ],
)
def test_factored_matches_literal_float32(n_mod, lengths, hidden, rank, reference):
    layer, h, mask = _layer_inputs(n_mod, lengths, hidden, rank, torch.float32, reference)
    y_lit, loss_lit, grads_lit = _values_and_grads(layer, h, mask, "literal")
    y_fac, loss_fac, grads_fac = _values_and_grads(layer, h, mask, "torch")
    torch.testing.assert_close(y_fac, y_lit, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(loss_fac, loss_lit, rtol=1e-5, atol=1e-6)
    for name in grads_lit:
        torch.testing.assert_close(grads_fac[name], grads_lit[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("n_mod, reference", [(1, False), (2, True), (3, False)])
def test_gradcheck_float64(n_mod, reference):
    torch.manual_seed(0)
    b, t, hidden, rank = 2, 3, 4, 2
    mask = torch.tensor([[True, True, True], [True, False, False]])
    inputs = (
        torch.randn(n_mod, b, t, hidden, dtype=torch.float64, requires_grad=True),
        torch.randn(n_mod, 4 * rank, hidden, dtype=torch.float64, requires_grad=True),
        torch.randn(n_mod, 4 * rank, dtype=torch.float64, requires_grad=True),
        torch.randn(n_mod, hidden, rank * rank, dtype=torch.float64, requires_grad=True),
        torch.randn(n_mod, hidden, dtype=torch.float64, requires_grad=True),
    )
    for backend in ("torch", "literal"):

        def op(h, rw, rb, aw, ab):
            with use_backend(backend):
                return tensor_ring(h, mask, rw, rb, aw, ab, 0.7, mean_over_padding=reference)

        assert torch.autograd.gradcheck(op, inputs)
    with use_backend("literal"):
        expected = tensor_ring(*inputs[:1], mask, *inputs[1:], 0.7, mean_over_padding=reference)
    with use_backend("torch"):
        found = tensor_ring(*inputs[:1], mask, *inputs[1:], 0.7, mean_over_padding=reference)
    for e, f in zip(expected, found):
        torch.testing.assert_close(f, e, rtol=1e-10, atol=1e-12)


def test_padding_is_ignored_by_the_masked_mean_only():
    layer, h, mask = _layer_inputs(3, [4, 2], 16, 3, torch.float64, reference=False)
    garbage = h.detach().clone()
    garbage[:, ~mask] = 1e3
    for reference, should_match in ((False, True), (True, False)):
        layer.semantics = Semantics.of("reference" if reference else "method", mmcosine=True, amw_scale=None)
        y_clean, _ = layer(h.detach(), mask, mask.flatten().nonzero().flatten())
        y_garbage, _ = layer(garbage, mask, mask.flatten().nonzero().flatten())
        assert torch.allclose(y_clean[:, mask], y_garbage[:, mask]) == should_match
    method = Semantics.of("method", mmcosine=True, amw_scale=None)
    reference = Semantics.of("reference", mmcosine=True, amw_scale=None)
    flat = mask.flatten().nonzero().flatten()
    # Method: each dialogue's rows equal those of the dialogue run alone, cut to its own length.
    layer.semantics = method
    y_batch, _ = layer(garbage, mask, flat)
    for b, n in enumerate([4, 2]):
        y_alone, _ = layer(garbage[:, b : b + 1, :n], torch.ones(1, n, dtype=torch.bool), torch.arange(n))
        torch.testing.assert_close(y_batch[:, b, :n], y_alone[:, 0], rtol=1e-12, atol=1e-12)
    # Reference: the padded rows enter M_m as if they were utterances of the dialogue.
    layer.semantics = reference
    y_reference, _ = layer(garbage, mask, flat)
    layer.semantics = method
    every_row = torch.ones_like(mask)
    y_all_real, _ = layer(garbage, every_row, every_row.flatten().nonzero().flatten())
    torch.testing.assert_close(y_reference, y_all_real, rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    n_mod=st.integers(1, 3),
    lengths=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    hidden=st.integers(1, 9),
    rank=st.integers(1, 5),
    reference=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_factored_equals_literal_on_any_shape(n_mod, lengths, hidden, rank, reference, seed):
    generator = torch.Generator().manual_seed(seed)
    t = max(lengths)
    mask = torch.arange(t) < torch.tensor(lengths).unsqueeze(1)
    args = [
        torch.randn(shape, generator=generator, dtype=torch.float64)
        for shape in (
            (n_mod, len(lengths), t, hidden),
            (n_mod, 4 * rank, hidden),
            (n_mod, 4 * rank),
            (n_mod, hidden, rank * rank),
            (n_mod, hidden),
        )
    ]
    outputs = {}
    for backend in ("literal", "torch"):
        with use_backend(backend):
            outputs[backend] = tensor_ring(args[0], mask, *args[1:], 0.4, mean_over_padding=reference)
    for found, expected in zip(outputs["torch"], outputs["literal"]):
        torch.testing.assert_close(found[:, mask], expected[:, mask], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("n_mod", [1, 2, 3])
def test_reference_feature_loss_is_one_l1_mean_over_the_concatenated_modalities(n_mod):
    """The public code concatenates every modality's mapped rows and targets, then takes one L1 mean."""
    layer, h, mask = _layer_inputs(n_mod, [3, 1], 8, 2, torch.float64, reference=True)
    h = h.detach()
    y, loss = layer(h, mask, mask.flatten().nonzero().flatten())
    mapped = [torch.nn.functional.linear(h[j], layer.map_weight[j], layer.map_bias[j]) for j in range(n_mod)]
    expected = torch.nn.functional.l1_loss(torch.cat(mapped), torch.cat(list(y)))
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("n_mod", [1, 2, 3])
def test_method_feature_loss_is_the_mean_over_modalities_of_real_rows(n_mod):
    layer, h, mask = _layer_inputs(n_mod, [3, 1], 8, 2, torch.float64, reference=False)
    h = h.detach()
    _, loss = layer(h, mask, mask.flatten().nonzero().flatten())
    _, a = tensor_ring(h, mask, layer.rank_weight, layer.rank_bias, layer.att_weight, layer.att_bias, 0.3)
    per_modality = [
        torch.nn.functional.l1_loss(torch.nn.functional.linear(h[j][mask], layer.map_weight[j], layer.map_bias[j]), a[j][mask])
        for j in range(n_mod)
    ]
    torch.testing.assert_close(loss, torch.stack(per_modality).mean(), rtol=1e-12, atol=0)
