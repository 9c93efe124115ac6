"""The transformer encoder's packed path against torch's own layers over the padded grid."""

import pytest
import torch

from ada2i_fast import Ada2I
from ada2i_fast.modules.encoders import TransformerEncoder
from ada2i_fast.modules.rows import padded_grid, real_rows
from conftest import random_batch, tiny_config

LAYOUTS = [[7], [5, 2, 7, 1], [1, 1], [3, 9, 6, 9]]


def _encoder_and_batch(lengths, **overrides):
    torch.manual_seed(0)
    config = tiny_config(drop_rate=0.0, **overrides)
    encoder = TransformerEncoder(config.input_dims["t"], config)
    batch = random_batch(config, lengths)
    return encoder, batch, batch.features["t"].clone().requires_grad_()


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("lengths", LAYOUTS, ids=str)
def test_packed_rows_equal_torchs_masked_layers_values_and_gradients(lengths, training):
    encoder, batch, x = _encoder_and_batch(lengths)
    encoder.train(training)
    layout = batch.mask, batch.lengths, batch.flat_index
    packed = encoder(x, *layout)
    padded = encoder.lin_out(encoder.transformer_encoder(x, src_key_padding_mask=~batch.mask))
    real = batch.mask
    torch.testing.assert_close(packed[real], padded[real], rtol=1e-5, atol=1e-6)
    assert torch.equal(packed[~real], torch.zeros_like(packed[~real]))
    leaves = [x, *encoder.parameters()]
    weights = torch.randn_like(packed[real])
    ours = torch.autograd.grad((packed[real] * weights).sum(), leaves)
    torchs = torch.autograd.grad((padded[real] * weights).sum(), leaves)
    for name, a, b in zip(["x", *(n for n, _ in encoder.named_parameters())], ours, torchs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m: f"grad of {name}: {m}")


def test_reference_mode_runs_the_whole_grid_unmasked():
    encoder, batch, x = _encoder_and_batch([5, 2, 7], compat="reference")
    expected = encoder.lin_out(encoder.transformer_encoder(x))
    torch.testing.assert_close(encoder(x, batch.mask, batch.lengths, batch.flat_index), expected)


def test_packed_training_with_dropout_keeps_padding_out_and_is_seeded():
    config = tiny_config(drop_rate=0.5)
    encoder = TransformerEncoder(config.input_dims["t"], config).train()
    batch = random_batch(config, [4, 1, 6])
    layout = batch.mask, batch.lengths, batch.flat_index
    torch.manual_seed(3)
    first = encoder(batch.features["t"], *layout)
    torch.manual_seed(3)
    again = encoder(batch.features["t"], *layout)
    assert torch.equal(first, again) and torch.isfinite(first).all()
    assert torch.equal(first[~batch.mask], torch.zeros_like(first[~batch.mask]))


def test_bf16_predict_agrees_with_fp32_and_returns_float32():
    torch.manual_seed(0)
    config = tiny_config()
    model = Ada2I(config)
    batch = random_batch(config, [6, 3, 5])
    fp32, bf16 = model.predict(batch), model.predict(batch, precision="bf16")
    assert bf16.probabilities.dtype == torch.float32 and bf16.contributions.dtype == torch.float32
    torch.testing.assert_close(bf16.probabilities, fp32.probabilities, rtol=0, atol=3e-2)
    torch.testing.assert_close(bf16.contributions.sum(1) + bf16.bias, fp32.contributions.sum(1) + fp32.bias, rtol=0, atol=0.1)
    auto = model.predict(batch, precision="auto")
    assert auto.probabilities.dtype == torch.float32
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, auto, got 'fp16'"):
        model.predict(batch, precision="fp16")


def _autocast_probabilities(model, batch):
    model.eval()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        return model(batch).log_probs.float().exp()


def test_bf16_predict_reuses_cast_weights_exactly_as_autocast_and_notices_changes():
    torch.manual_seed(0)
    config = tiny_config()
    model = Ada2I(config)
    batch = random_batch(config, [6, 3, 5])
    first = model.predict(batch, precision="bf16").probabilities
    assert torch.equal(first, _autocast_probabilities(model, batch))
    assert not any("bf16" in key for key in model.state_dict())
    with torch.no_grad():
        model.encoders["t"].lin_out.weight.mul_(-1.0)  # changed in place, as an optimizer step does
    changed = model.predict(batch, precision="bf16").probabilities
    assert torch.equal(changed, _autocast_probabilities(model, batch)) and not torch.equal(changed, first)
    model.load_state_dict(Ada2I(config).state_dict())  # replaced
    assert torch.equal(model.predict(batch, precision="bf16").probabilities, _autocast_probabilities(model, batch))


def test_real_rows_and_padded_grid_move_rows_and_gradients_without_accumulating():
    grid = torch.randn(2, 6, 3, requires_grad=True)
    index = torch.tensor([0, 2, 3, 5])
    rows = real_rows(grid, index, 1)
    torch.testing.assert_close(rows, grid.index_select(1, index))
    weights = torch.randn(rows.shape)
    (rows * weights).sum().backward()
    expected = torch.zeros(2, 6, 3)
    expected[:, index] = weights
    assert torch.equal(grid.grad, expected)
    packed = torch.randn(4, 3, requires_grad=True)
    padded = padded_grid(packed, index, 6)
    assert torch.equal(padded[index], packed.detach()) and not padded[[1, 4]].any()
    padded.sum().backward()
    assert torch.equal(packed.grad, torch.ones(4, 3))


def test_bf16_rows_rounded_up_to_a_bucket_change_no_real_output_or_gradient(monkeypatch):
    import ada2i_fast.modules.encoders as encoders

    config = tiny_config(drop_rate=0.5)
    encoder = TransformerEncoder(config.input_dims["t"], config).train()
    batch = random_batch(config, [4, 1, 6])  # 11 real rows
    layout = batch.mask, batch.lengths, batch.flat_index
    found = []
    for bucket in (1, 16):
        monkeypatch.setattr(encoders, "ROW_BUCKET", bucket)
        x = batch.features["t"].clone().requires_grad_()
        torch.manual_seed(3)  # the same dropout masks: the real rows come first either way
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = encoder(x, *layout)
        out.float().square().sum().backward()
        found.append((out.detach().float(), x.grad, [p.grad.clone() for p in encoder.parameters()]))
        encoder.zero_grad()
    (out_1, x_1, p_1), (out_16, x_16, p_16) = found
    torch.testing.assert_close(out_16, out_1, rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(x_16, x_1, rtol=2e-2, atol=2e-2)
    for a, b in zip(p_16, p_1):
        torch.testing.assert_close(a, b, rtol=5e-2, atol=5e-2)
