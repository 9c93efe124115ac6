"""Our checkpoints: a round trip, and files written by earlier versions of the package."""

from pathlib import Path

import torch

from ada2i_fast import Ada2I, TrainConfig
from ada2i_fast.training.checkpoint import load_checkpoint, save_checkpoint
from conftest import random_batch, tiny_config

FIXTURES = Path(__file__).parent / "fixtures"


def test_round_trip_keeps_weights_config_and_metadata(tmp_path):
    torch.manual_seed(0)
    model = Ada2I(tiny_config(amw_scale=7.0)).eval()
    save_checkpoint(tmp_path / "best.pt", model, epoch=2, train_config=TrainConfig(lr=1e-3).to_dict())
    loaded, metadata = load_checkpoint(tmp_path / "best.pt")
    assert loaded.config == model.config and metadata["epoch"] == 2
    assert TrainConfig(**metadata["train_config"]).lr == 1e-3
    batch = random_batch(model.config, [3, 1])
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(batch).log_probs, model(batch).log_probs, rtol=0, atol=0)


def test_a_checkpoint_from_before_the_config_split_loads_and_predicts_the_same():
    """Written by the package before the recipe left the model config (and before s had a default of 10):
    its training fields become the metadata's train_config, and its stored s = 1 is kept."""
    model, metadata = load_checkpoint(FIXTURES / "pre_redesign.pt")
    expected = torch.load(FIXTURES / "pre_redesign_expected.pt", weights_only=True)
    assert model.config.cosine_scale == 1.0
    assert TrainConfig(**metadata["train_config"]).alpha == 0.42
    batch = random_batch(model.config, expected["lengths"], seed=expected["seed"])
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(batch).log_probs, expected["log_probs"], rtol=0, atol=1e-6)
