import copy
import math

import pytest
import torch
import torch.nn.functional as F

from ada2i_fast import Ada2I
from ada2i_fast.kernels import backend, modulation_torch, use_backend
from ada2i_fast.modules.balance import apply_modulation, clip_and_modulate_gradients, disparity_ratios, modulation_coefficients
from ada2i_fast.training.step import train_step
from conftest import random_batch, tiny_config, tiny_step_inputs


def test_weakest_modality_gets_ratio_one_and_coefficient_one():
    ratios = disparity_ratios(torch.tensor([6.0, 2.0, 3.0]))
    assert ratios.tolist() == [3.0, 1.0, 1.5]
    k = modulation_coefficients(ratios, alpha=0.5)
    expected = [1 - math.tanh(1.5), 1.0, 1 - math.tanh(0.75)]
    assert torch.allclose(k, torch.tensor(expected))


def test_coefficient_jumps_at_ratio_one():
    # k = 1 - tanh(alpha * rho) for rho > 1: alpha * rho, not alpha * (rho - 1), so k drops at once.
    k = modulation_coefficients(torch.tensor([1.0, 1.0 + 1e-6]), alpha=0.42)
    continuous = modulation_coefficients(torch.tensor([1.0, 1.0 + 1e-6, 2.0]), alpha=0.42, curve="continuous")
    torch.testing.assert_close(continuous, torch.tensor([1.0, 1.0, 1 - math.tanh(0.42)]), rtol=1e-6, atol=1e-6)
    assert k[0] == 1.0
    assert abs(k[1].item() - (1 - math.tanh(0.42))) < 1e-6


def test_scores_sum_gold_softmax_of_unnormalised_logits():
    torch.manual_seed(0)
    config = tiny_config()
    model = Ada2I(config)
    out = model(random_batch(config, [4, 3]))
    probs = out.unimodal_logits.softmax(-1)
    gold = probs[:, torch.arange(out.labels.numel()), out.labels].sum(1)
    torch.testing.assert_close(out.scores, gold)
    torch.testing.assert_close(disparity_ratios(out.scores), gold / gold.min())


def test_modulation_touches_only_encoder_gradients():
    torch.manual_seed(0)
    config = tiny_config()
    model = Ada2I(config)
    model.loss(model(random_batch(config, [4, 3]))).backward()
    before = {name: p.grad.clone() for name, p in model.named_parameters()}
    k = torch.tensor([0.5, 1.0, 0.25])
    apply_modulation(model.encoder_parameters(), k, noise=False)
    for name, p in model.named_parameters():
        if name.startswith("encoders."):
            scale = k[config.modalities.index(name.split(".")[1])]
            torch.testing.assert_close(p.grad, before[name] * scale, rtol=0, atol=0)
        else:
            assert torch.equal(p.grad, before[name]), name


def test_noise_has_the_std_of_the_scaled_gradient():
    n = 1_000_000
    param = torch.nn.Parameter(torch.zeros(n))
    param.grad = torch.randn(n, generator=torch.Generator().manual_seed(0)) * 2.0
    scaled = param.grad * 0.5
    apply_modulation([[param]], torch.tensor([0.5]), noise=True, generator=torch.Generator().manual_seed(1))
    noise = param.grad - scaled
    sigma = scaled.std().item()
    # Six standard errors: of the mean (sigma/sqrt(n)) and of the sample std (sigma/sqrt(2n)).
    assert abs(noise.mean().item()) < 6 * sigma / math.sqrt(n)
    assert abs(noise.std().item() - sigma) < 6 * sigma / math.sqrt(2 * n)


@pytest.mark.parametrize("modulate", [False, True])
def test_training_step_never_syncs_with_the_host(no_host_sync, modulate, monkeypatch):
    # The torch paths, as a device runs them: the native CPU kernels and the CPU's parallel noise draw
    # read their seeds and coefficients from CPU tensors, which waits for nothing.
    monkeypatch.setattr(modulation_torch, "draws_in_streams", lambda device: False)
    monkeypatch.setattr(backend, "_state", {"backend": "torch"})
    model, recipe, optimizer, batch = tiny_step_inputs()
    generator = torch.Generator().manual_seed(0)
    before = [p.detach().clone() for p in model.parameters()]
    replica = copy.deepcopy(model)
    rng = torch.get_rng_state()  # the dropout draws of the step, replayed below
    with no_host_sync():
        logs = train_step(model, batch, optimizer, recipe, modulate=modulate, generator=generator)
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert set(logs) >= {"loss", "classification", "feature", "ratios", "coefficients", "unimodal_loss"}

    # The same forward and backward by hand, on the pre-step copy with the same dropout draws.
    torch.set_rng_state(rng)
    out = replica(batch)
    labels = batch.labels.reshape(-1)[batch.mask.reshape(-1)]
    classification = -out.log_probs[torch.arange(labels.numel()), labels].mean()
    torch.testing.assert_close(logs["classification"], classification.detach(), rtol=1e-6, atol=0)
    torch.testing.assert_close(logs["feature"], out.feature_loss.detach(), rtol=1e-6, atol=0)
    torch.testing.assert_close(logs["loss"], (classification + out.feature_loss).detach(), rtol=1e-6, atol=0)
    unimodal = torch.stack([F.cross_entropy(logits, labels) for logits in out.unimodal_logits.detach()])
    torch.testing.assert_close(logs["unimodal_loss"], unimodal, rtol=1e-6, atol=0)
    gold = out.unimodal_logits.detach().softmax(-1)[:, torch.arange(labels.numel()), labels].sum(1)
    ratios = [g / min(gold.tolist()) for g in gold.tolist()]
    torch.testing.assert_close(logs["ratios"], torch.tensor(ratios), rtol=1e-6, atol=0)
    coefficients = [1 - math.tanh(0.42 * r) if r > 1 else 1.0 for r in ratios]
    torch.testing.assert_close(logs["coefficients"], torch.tensor(coefficients), rtol=1e-6, atol=0)
    # The head is never modulated: its update is Adam's first step on the clipped gradient.
    (classification + out.feature_loss).backward()
    norm = torch.cat([p.grad.flatten() for p in replica.parameters() if p.grad is not None]).norm()
    clip = min(1.0, recipe.max_grad_norm / (norm.item() + 1e-6))
    for name in ("head.fc_out.weight", "head.fc_out.bias"):
        p0 = dict(replica.named_parameters())[name]
        g = p0.grad * clip + recipe.weight_decay * p0.detach()
        step = recipe.lr * g / (g.abs() + 1e-8)  # m_hat = g, v_hat = g^2 after one step
        # Two float32 ulps of the parameter: the fused kernel rounds in its own order (one ulp apart on AMX CPUs).
        torch.testing.assert_close(dict(model.named_parameters())[name].detach(), p0.detach() - step,
                                   rtol=2 * torch.finfo(torch.float32).eps, atol=1e-12)


def test_the_sync_guard_catches_syncs(no_host_sync):
    x = torch.ones(3)
    for sync in (lambda: x.sum().item(), lambda: bool(x.sum()), lambda: float(x[0]), lambda: x.tolist(), lambda: x[x > 0]):
        with pytest.raises(RuntimeError, match="host sync"), no_host_sync():
            sync()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_step_never_syncs_on_cuda():
    model, recipe, optimizer, batch = tiny_step_inputs("cuda")
    generator = torch.Generator(device="cuda").manual_seed(0)
    train_step(model, batch, optimizer, recipe, modulate=True, generator=generator)  # lazy state and kernel caches
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        train_step(model, batch, optimizer, recipe, modulate=True, generator=generator)
    finally:
        torch.cuda.set_sync_debug_mode(0)


@pytest.mark.parametrize("max_norm", [1e-3, 1e6])  # clipping, and a norm under the limit
def test_fused_clip_and_modulation_equal_the_clip_then_the_modulation(max_norm):
    torch.manual_seed(0)
    models = [Ada2I(tiny_config()) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    for p, q in zip(*(m.parameters() for m in models)):
        p.grad = torch.randn_like(p)
        q.grad = p.grad.clone()
    k = torch.tensor([0.3, 1.0, 0.7])
    with use_backend("native"):
        norm, encoder_norms = clip_and_modulate_gradients(list(models[0].parameters()), models[0].encoder_parameters(),
                                                          k, max_norm=max_norm, noise=False)
    want_norm = torch.nn.utils.clip_grad_norm_(models[1].parameters(), max_norm)
    want_encoder_norms = [torch.cat([p.grad.flatten() for p in params]).norm() for params in models[1].encoder_parameters()]
    apply_modulation(models[1].encoder_parameters(), k, noise=False)
    torch.testing.assert_close(norm, want_norm, rtol=1e-6, atol=0)
    torch.testing.assert_close(encoder_norms, torch.stack(want_encoder_norms), rtol=1e-5, atol=0)
    for p, q in zip(*(m.parameters() for m in models)):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-12)
