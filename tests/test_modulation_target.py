"""--modulation-target update: k multiplies each encoder's optimizer update instead of its gradient,
for the native Adam, torch's fused Adam and SGD; k = 1 is the method's step bit for bit; no host
sync; the run records it. --optimizer sgd: fused SGD with momentum."""

import copy

import pytest
import torch

from ada2i_fast import Ada2I, TrainConfig
from ada2i_fast.kernels import use_backend
from ada2i_fast.training import step as step_module
from ada2i_fast.training.optim import Adam
from ada2i_fast.training.step import make_optimizer, train_step
from conftest import random_batch, tiny_config

K = torch.tensor([0.3, 1.0, 0.6])
OPTIMIZERS = [("adam", "native"), ("adam", "torch"), ("sgd", "native")]


def _stepped(optimizer_name, backend, monkeypatch, *, target, modulate, k, grad_noise=False):
    """A tiny model's parameters after one train step with the coefficients fixed at ``k``."""
    monkeypatch.setattr(step_module, "modulation_coefficients", lambda ratios, alpha, curve: k.clone())
    torch.manual_seed(0)
    config = tiny_config()
    model = Ada2I(config)
    recipe = TrainConfig(optimizer=optimizer_name, lr=1e-2, modulation_target=target, grad_noise=grad_noise)
    batch = random_batch(config, [5, 2, 3])
    with use_backend(backend):
        optimizer = make_optimizer(model, recipe)
        torch.manual_seed(1)  # the same dropout draws in every call
        train_step(model, batch, optimizer, recipe, modulate=modulate, generator=torch.Generator().manual_seed(2))
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("optimizer_name, backend", OPTIMIZERS)
def test_the_update_target_scales_each_encoders_update_by_its_k(optimizer_name, backend, monkeypatch):
    torch.manual_seed(0)
    start = {name: p.detach().clone() for name, p in Ada2I(tiny_config()).named_parameters()}
    scaled = _stepped(optimizer_name, backend, monkeypatch, target="update", modulate=True, k=K)
    plain = _stepped(optimizer_name, backend, monkeypatch, target="update", modulate=False, k=K)
    for name, value in scaled.items():
        change, unmodulated = value - start[name], plain[name] - start[name]
        if name.startswith("encoders."):
            k = K["atv".index(name.split(".")[1])]
            torch.testing.assert_close(change, k * unmodulated, rtol=1e-5, atol=1e-7)
        else:
            assert torch.equal(value, plain[name])  # AFW and head: their update as it is


@pytest.mark.parametrize("optimizer_name, backend", OPTIMIZERS)
def test_with_k_one_the_update_target_is_the_methods_step_bit_for_bit(optimizer_name, backend, monkeypatch):
    ones = torch.ones(3)
    update = _stepped(optimizer_name, backend, monkeypatch, target="update", modulate=True, k=ones, grad_noise=True)
    method = _stepped(optimizer_name, backend, monkeypatch, target="gradient", modulate=True, k=ones, grad_noise=True)
    assert all(torch.equal(update[name], method[name]) for name in method)


def test_the_update_target_step_never_syncs(no_host_sync, monkeypatch):
    from ada2i_fast.kernels import backend, modulation_torch

    monkeypatch.setattr(modulation_torch, "draws_in_streams", lambda device: False)
    monkeypatch.setattr(backend, "_state", {"backend": "torch"})
    torch.manual_seed(0)
    config = tiny_config()
    model = Ada2I(config)
    recipe = TrainConfig(alpha=0.42, modulation_target="update")
    optimizer, batch = make_optimizer(model, recipe), random_batch(config, [5, 2, 1])
    before = copy.deepcopy(model.state_dict())
    with no_host_sync():
        train_step(model, batch, optimizer, recipe, modulate=True, generator=torch.Generator().manual_seed(0))
    assert all(not torch.equal(before[k], v) for k, v in model.state_dict().items() if k.startswith("encoders."))


def test_sgd_is_fused_with_momentum_and_the_recipes_weight_decay():
    optimizer = make_optimizer(Ada2I(tiny_config()), TrainConfig(optimizer="sgd", lr=0.03, weight_decay=1e-4))
    assert isinstance(optimizer, torch.optim.SGD) and not isinstance(optimizer, Adam)
    assert optimizer.defaults["fused"] and optimizer.defaults["momentum"] == 0.9
    assert (optimizer.defaults["lr"], optimizer.defaults["weight_decay"]) == (0.03, 1e-4)


def test_unknown_targets_and_optimizers_are_refused():
    with pytest.raises(ValueError, match="modulation_target must be one of"):
        TrainConfig(modulation_target="weights")
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainConfig(optimizer="lamb")
