"""optim.Adam: torch's Adam in one C pass on the CPU (its numbers, state and state_dict), the skip
of a non-finite step, and the bfloat16 weights it refreshes."""

import copy

import pytest
import torch

from ada2i_fast import Ada2I
from ada2i_fast.kernels import cpu_native, use_backend
from ada2i_fast.modules.bf16_weights import matmul_weights
from ada2i_fast.training.optim import Adam
from conftest import tiny_config

EPS = torch.finfo(torch.float32).eps
needs_native = pytest.mark.skipif(not cpu_native.available(), reason="no C compiler for the native kernels")


def _parameters(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=gen)) for shape in ((33, 7), (5,), (1000,), (2, 3, 4))]


def _run(optimizer_class, steps=5, **options):
    params = _parameters()
    optimizer = optimizer_class(params, lr=1e-2, weight_decay=1e-2, **options)
    gen = torch.Generator().manual_seed(1)
    for step in range(steps):
        for i, p in enumerate(params):
            p.grad = None if (i == 1 and step == 2) else torch.randn(p.shape, generator=gen)  # one step without a grad
        optimizer.step()
    return params, optimizer


@needs_native
@pytest.mark.parametrize("fused", [False, True])
def test_native_adam_computes_torchs_adam(fused):
    ours, optimizer = _run(Adam)
    theirs, reference = _run(torch.optim.Adam, fused=fused)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=2e-6, atol=4 * EPS)  # a few ulps of |p| ~ 1
    for a, b in zip(ours, theirs):
        mine, torchs = optimizer.state[a], reference.state[b]
        assert float(mine["step"]) == float(torchs["step"])
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(mine[key], torchs[key], rtol=2e-6, atol=4 * EPS)


@needs_native
def test_state_dicts_move_between_native_and_torch_adam():
    ours, optimizer = _run(Adam, steps=3)
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    reference = torch.optim.Adam(theirs, lr=1e-2, weight_decay=1e-2, fused=True)
    reference.load_state_dict(copy.deepcopy(optimizer.state_dict()))  # as a checkpoint gives it: no shared tensors
    gen = torch.Generator().manual_seed(9)
    for a, b in zip(ours, theirs):
        a.grad = torch.randn(a.shape, generator=gen)
        b.grad = a.grad.clone()
    optimizer.step()
    reference.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=2e-6, atol=4 * EPS)  # a few ulps of |p| ~ 1


@pytest.mark.parametrize("backend", ["native", "torch"])
def test_a_step_flagged_non_finite_changes_nothing(backend):
    with use_backend(backend):
        params, optimizer = _run(Adam, steps=2)
        before = [p.detach().clone() for p in params]
        states = {k: v.clone() for k, v in optimizer.state[params[0]].items()}
        for p in params:
            p.grad = torch.full(p.shape, float("nan"))
        optimizer.found_inf = torch.ones(())
        optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(before, params))
    assert all(torch.equal(states[k], v) for k, v in optimizer.state[params[0]].items())


@needs_native
def test_the_step_refreshes_the_bf16_weights_in_its_pass():
    torch.manual_seed(0)
    model = Ada2I(tiny_config())
    optimizer = Adam(model.parameters(), lr=1e-3, weight_decay=0.0, bf16_weights=model.bf16_weights)
    copies = model.bf16_weights.current()
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizer.step()
    weights = matmul_weights(model)
    for name, copy in model.bf16_weights.current().items():
        assert copy is copies[name]  # written in place by the step, not cast again
        assert torch.equal(copy, weights[name].detach().to(torch.bfloat16))


def test_bf16_weights_follow_any_other_change_of_a_weight():
    model = Ada2I(tiny_config())
    name, weight = next(iter(matmul_weights(model).items()))
    model.bf16_weights.current()
    with torch.no_grad():
        weight.add_(1.0)
    assert torch.equal(model.bf16_weights.current()[name], weight.detach().to(torch.bfloat16))
    model.load_state_dict(Ada2I(tiny_config()).state_dict())
    assert torch.equal(model.bf16_weights.current()[name], weight.detach().to(torch.bfloat16))


def test_only_weights_that_meet_nothing_but_matmuls_get_a_bf16_copy():
    names = set(matmul_weights(Ada2I(tiny_config())))
    assert "encoders.t.lin_out.weight" in names and "afw.layers.0.att_weight" in names
    assert "encoders.t.transformer_encoder.layers.0.self_attn.in_proj_weight" in names
    assert not any("norm" in name or name.startswith("head.") for name in names)


@needs_native
def test_the_native_step_is_the_same_for_any_number_of_threads():
    results = []
    for threads in (1, 2):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            results.append(_run(Adam, steps=3)[0])
        finally:
            torch.set_num_threads(before)
    for one, two in zip(*results):
        assert torch.equal(one, two)
