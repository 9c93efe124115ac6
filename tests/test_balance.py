import math

import pytest
import torch

from ada2i_fast import Ada2I
from ada2i_fast.balance import apply_modulation, disparity_ratios, modulation_coefficients
from ada2i_fast.step import make_optimizer, train_step
from conftest import random_batch, tiny_config


def test_weakest_modality_gets_ratio_one_and_coefficient_one():
    ratios = disparity_ratios(torch.tensor([6.0, 2.0, 3.0]))
    assert ratios.tolist() == [3.0, 1.0, 1.5]
    k = modulation_coefficients(ratios, alpha=0.5)
    expected = [1 - math.tanh(1.5), 1.0, 1 - math.tanh(0.75)]
    assert torch.allclose(k, torch.tensor(expected))


def test_coefficient_jumps_at_ratio_one():
    # k = 1 - tanh(alpha * rho) for rho > 1: alpha * rho, not alpha * (rho - 1), so k drops at once.
    k = modulation_coefficients(torch.tensor([1.0, 1.0 + 1e-6]), alpha=0.42)
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
    torch.testing.assert_close(out.ratios, gold / gold.min())


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
def test_training_step_never_syncs_with_the_host(no_host_sync, modulate):
    torch.manual_seed(0)
    config = tiny_config()
    model = Ada2I(config)
    optimizer = make_optimizer(model)
    batch = random_batch(config, [5, 2, 1])
    generator = torch.Generator().manual_seed(0)
    before = [p.detach().clone() for p in model.parameters()]
    with no_host_sync():
        logs = train_step(model, batch, optimizer, modulate=modulate, generator=generator)
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert set(logs) >= {"loss", "classification", "feature", "ratios", "coefficients", "unimodal_loss"}
    assert torch.isfinite(logs["loss"])


def test_the_sync_guard_catches_syncs(no_host_sync):
    x = torch.ones(3)
    for sync in (lambda: x.sum().item(), lambda: bool(x.sum()), lambda: float(x[0]), lambda: x.tolist(), lambda: x[x > 0]):
        with pytest.raises(RuntimeError, match="host sync"), no_host_sync():
            sync()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_step_never_syncs_on_cuda():
    torch.manual_seed(0)
    config = tiny_config()
    model = Ada2I(config).cuda()
    optimizer = make_optimizer(model)
    batch = random_batch(config, [5, 2, 1]).to("cuda")
    generator = torch.Generator(device="cuda").manual_seed(0)
    train_step(model, batch, optimizer, modulate=True, generator=generator)  # lazy state and kernel caches
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        train_step(model, batch, optimizer, modulate=True, generator=generator)
    finally:
        torch.cuda.set_sync_debug_mode(0)
