import argparse
import os

import pytest
import torch

from ada2i_fast import Ada2I
from conftest import random_batch, tiny_config

RANK_PARTS = ("trans_q1", "trans_k1", "trans_q2", "trans_k2")


def authors_state_dict(model: Ada2I) -> dict:
    """``model``'s weights in the key layout of the authors' training script."""
    config = model.config
    r = config.rank
    state = {}
    for key, value in model.encoders.state_dict().items():
        state[f"net.encoder.{key}"] = value
    for layer_index, layer in enumerate(model.afw.layers):
        prefix = f"net.mmt.layers.{layer_index}."
        for j in range(config.n_modalities):
            for part in ("weight", "bias"):
                rank = getattr(layer, f"rank_{part}")[j]
                for i, name in enumerate(RANK_PARTS):
                    state[f"{prefix}attention.{name}.{j}.lin.{part}"] = rank[i * r : (i + 1) * r].clone()
                state[f"{prefix}attention.lin_att.{j}.lin.{part}"] = getattr(layer, f"att_{part}")[j].clone()
                state[f"{prefix}wmn.fc.{j}.{part}"] = getattr(layer, f"map_{part}")[j].clone()
    state["net.fc_out.weight"] = model.head.fc_out.weight.detach().clone()
    state["net.fc_out.bias"] = model.head.fc_out.bias.detach().clone()
    return state


def _save(path, state, **args):
    namespace = argparse.Namespace(modalities="atv", dataset="meld", beta=0.55, drop_rate=0.5, mmcosine=True, **args)
    torch.save({"args": namespace, "state_dict": state}, path)


@pytest.fixture
def authors_model():
    torch.manual_seed(0)
    return Ada2I(tiny_config(compat="reference", beta=0.55)).eval()


def test_round_trip_reproduces_the_model(tmp_path, authors_model):
    path = tmp_path / "best.pth"
    _save(path, authors_state_dict(authors_model))
    loaded = Ada2I.from_reference_checkpoint(path).eval()
    assert loaded.config.compat == "reference"
    assert (loaded.config.hidden, loaded.config.rank, loaded.config.input_dims) == (16, 3, {"a": 12, "t": 20, "v": 10})
    batch = random_batch(authors_model.config, [4, 2])
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch).log_probs, authors_model(batch).log_probs, rtol=0, atol=0)


def test_modality_order_follows_the_runs_string(tmp_path):
    torch.manual_seed(0)
    model = Ada2I(tiny_config(compat="reference", modalities="tv")).eval()
    path = tmp_path / "tv.pth"
    torch.save(
        {"args": argparse.Namespace(modalities="tv", beta=0.55), "state_dict": authors_state_dict(model)},
        path,
    )
    loaded = Ada2I.from_reference_checkpoint(path).eval()
    assert loaded.config.modalities == "tv"
    batch = random_batch(model.config, [3])
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch).log_probs, model(batch).log_probs, rtol=0, atol=0)


def test_mismatching_checkpoint_names_the_key(tmp_path, authors_model):
    state = authors_state_dict(authors_model)
    state["net.mmt.layers.1.wmn.fc.2.weight"] = torch.zeros(16, 15)
    _save(tmp_path / "bad.pth", state)
    with pytest.raises(ValueError, match=r"'net\.mmt\.layers\.1\.wmn\.fc\.2\.weight': expected shape \(16, 16\), found \(16, 15\)"):
        Ada2I.from_reference_checkpoint(tmp_path / "bad.pth")
    del state["net.mmt.layers.1.wmn.fc.2.weight"]
    _save(tmp_path / "missing.pth", state)
    with pytest.raises(ValueError, match=r"lacks key 'net\.mmt\.layers\.1\.wmn\.fc\.2\.weight'"):
        Ada2I.from_reference_checkpoint(tmp_path / "missing.pth")


class _Hostile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_hostile_checkpoint_is_refused_and_never_runs(tmp_path, authors_model):
    marker = tmp_path / "pwned"
    torch.save({"args": _Hostile(marker), "state_dict": authors_state_dict(authors_model)}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="refused or corrupt"):
        Ada2I.from_reference_checkpoint(tmp_path / "evil.pth")
    assert not marker.exists()
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="refused or corrupt"):
        Ada2I.from_reference_checkpoint(tmp_path / "junk.pth")
