import argparse
import json
import os
import re
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ada2i_fast import Ada2I, Batch
from ada2i_fast.checkpointing import reference_checkpoint
from conftest import random_batch, tiny_config

# Keys and shapes of the authors' MELD checkpoint, recorded from their public code (see the file's "comment").
AUTHORS_MELD = json.loads((Path(__file__).parent / "fixtures" / "authors_meld_state_dict.json").read_text())

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


# ---- the authors' MELD layout as recorded from their public code, independent of authors_state_dict ----------------


def _authors_meld_state(seed=0) -> "OrderedDict[str, torch.Tensor]":
    """Random tensors with exactly the recorded keys and shapes, scaled like a trained model (O(1) activations)."""
    generator = torch.Generator().manual_seed(seed)
    state = OrderedDict()
    for key, shape in AUTHORS_MELD["state_dict"].items():
        value = torch.randn(shape, generator=generator)
        if len(shape) == 2:
            value /= shape[1] ** 0.5
        elif ".norm" in key and key.endswith(".weight"):
            value = 1 + 0.1 * value
        else:
            value *= 0.1
        state[key] = value
    return state


def _authors_args(**changes) -> argparse.Namespace:
    return argparse.Namespace(**{**AUTHORS_MELD["args"], **changes})


def _names(key: str, message: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(key)}(?![\w.])", message) is not None


def _authors_forward(state, args, features, lengths, rank_names=("trans_q1", "trans_q2", "trans_k1", "trans_k2")):
    """The public code's forward with dropout off (model/encoder.py, model/AFW.py, model/net.py at the recorded
    commit), from torch.nn primitives and the recorded key names only: (log-probs of the real utterances, the
    feature loss summed over AFW layers). ``rank_names`` is (q1, q2, k1, k2): G_Q = q1 (x) q2, G_K = k1 (x) k2."""
    mods = args.modalities
    x = []
    for m in mods:
        d = args.embedding_dim[args.dataset][m]
        heads = next((h for h in range(5, 15) if d % h == 0), 1)
        encoder = nn.Module()
        encoder.transformer_encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d, heads, dropout=0.0, batch_first=True), args.encoder_nlayers,
            enable_nested_tensor=False,
        )
        encoder.lin_out = nn.Linear(d, args.hidden_dim)
        prefix = f"net.encoder.{m}."
        encoder.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)
        encoder.eval()
        x.append(encoder.lin_out(encoder.transformer_encoder(features[m])))
    feature_loss = 0.0
    for layer in range(args.mmt_nlayers):
        p = f"net.mmt.layers.{layer}."

        def linear(module, inputs):  # module: the path below the layer, e.g. "attention.trans_q1.0.lin"
            return F.linear(inputs, state[f"{p}{module}.weight"], state[f"{p}{module}.bias"])

        g, summary = [], []
        for j in range(len(mods)):
            q1, q2, k1, k2 = (linear(f"attention.{name}.{j}.lin", x[j]) for name in rank_names)
            g.append((q1.unsqueeze(-1) * q2.unsqueeze(-2)) * (k1.unsqueeze(-1) * k2.unsqueeze(-2)))
            summary.append(g[j].mean(dim=1))  # over all T, padding included
        out = []
        for j in range(len(mods)):
            c = g[j]
            for other in range(len(mods)):
                if other != j:
                    c = torch.einsum("ijkl,ilo->ijko", c, summary[other])
            att = linear(f"attention.lin_att.{j}.lin", c.flatten(2))
            out.append(att * x[j] + args.beta * x[j])
        mapped = torch.cat([linear(f"wmn.fc.{j}", x[j]) for j in range(len(mods))], dim=1)
        feature_loss = feature_loss + F.l1_loss(mapped, torch.cat(out, dim=1))  # the target aliases the output
        x = out
    hidden = args.hidden_dim
    weight, bias = state["net.fc_out.weight"], state["net.fc_out.bias"]
    logits = 0
    for j in range(len(mods)):
        z = torch.cat([x[j][b, :n] for b, n in enumerate(lengths)])
        w = weight[:, j * hidden : (j + 1) * hidden]
        logits = logits + F.normalize(z, dim=1) @ F.normalize(w.T, dim=1) + bias / len(mods)
    return F.log_softmax(logits, dim=1), feature_loss


@pytest.fixture(scope="module")
def authors_meld_file(tmp_path_factory):
    state = _authors_meld_state()
    path = tmp_path_factory.mktemp("authors") / AUTHORS_MELD["checkpoint_file"].split("/")[-1]
    torch.save({"args": _authors_args(), "state_dict": state}, path)
    return path, state


def test_the_recorded_authors_meld_checkpoint_loads_whole(authors_meld_file):
    path, state = authors_meld_file
    model = Ada2I.from_reference_checkpoint(path)
    config = model.config
    assert config.compat == "reference"
    assert (config.modalities, config.input_dims, config.num_classes) == ("atv", {"a": 300, "t": 768, "v": 342}, 7)
    sizes = (config.hidden, config.rank, config.mmt_nlayers, config.encoder_nlayers, config.ffn_dim)
    assert sizes == (200, 6, 2, 2, 2048)
    assert (config.beta, config.drop_rate, config.mmcosine) == (0.55, 0.5, True)
    recorded = sum(torch.Size(shape).numel() for shape in AUTHORS_MELD["state_dict"].values())
    assert recorded == AUTHORS_MELD["n_parameters"] == 18_564_043
    assert sum(p.numel() for p in model.parameters()) == recorded
    # Every recorded tensor is consumed exactly once and nothing else fills the model: the loaded state holds
    # the same multiset of values as the file.
    loaded = model.state_dict()
    assert sum(v.numel() for v in loaded.values()) == recorded
    found = torch.cat([v.flatten() for v in loaded.values()]).sort().values
    wanted = torch.cat([v.flatten() for v in state.values()]).sort().values
    assert torch.equal(found, wanted)


def test_the_loaded_model_computes_what_the_authors_code_computes(authors_meld_file):
    """Their forward, written from the recorded key names, against ours on the converted weights: a wrong guess
    of what a key means (which projection is q2, which is k1, ...) changes the numbers."""
    path, state = authors_meld_file
    model = Ada2I.from_reference_checkpoint(path, drop_rate=0.0).train()  # train mode: the feature loss too
    args = _authors_args()
    lengths = [4, 2, 3]
    generator = torch.Generator().manual_seed(1)
    features = {m: torch.randn(3, 4, d, generator=generator) for m, d in args.embedding_dim["meld"].items()}
    for b, n in enumerate(lengths):
        for x in features.values():
            x[b, n:] = 0
    labels = torch.randint(0, 7, (3, 4), generator=generator)
    with torch.no_grad():
        output = model(Batch.build(features, lengths, labels))
        log_probs, feature_loss = _authors_forward(state, args, features, lengths)
        swapped, _ = _authors_forward(state, args, features, lengths, ("trans_q1", "trans_k1", "trans_q2", "trans_k2"))
    torch.testing.assert_close(output.log_probs, log_probs, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(output.feature_loss, feature_loss, rtol=1e-4, atol=1e-5)
    assert (swapped - log_probs).abs().max() > 1e-2, "the check cannot tell q2 from k1"


def _renamed(key: str) -> str:
    return key + "_renamed"


def _load_error(monkeypatch, state, models):
    """The exception (or None) of loading ``state`` through the loader behind ``from_reference_checkpoint``,
    reading from memory and reusing one model per config (a MELD model is 18.5 M parameters)."""
    monkeypatch.setattr(reference_checkpoint, "read_reference_file", lambda path: (_authors_args(), dict(state)))

    def model_cls(config):
        key = json.dumps(config.to_dict(), sort_keys=True)
        if key not in models:
            models[key] = Ada2I(config)
        return models[key]

    try:
        reference_checkpoint.load_reference_checkpoint(model_cls, "in-memory.pt")
    except Exception as error:  # noqa: BLE001 - what is raised is the point
        return error
    return None


def _failures(monkeypatch, mode, keys):
    state = {k: torch.zeros(s) for k, s in AUTHORS_MELD["state_dict"].items()}
    models = {}
    failures = {}
    for key in keys:
        broken = dict(state)
        value = broken.pop(key)
        if mode == "rename":
            broken[_renamed(key)] = value
        error = _load_error(monkeypatch, broken, models)
        named = error is not None and any(_names(k, str(error)) for k in (key, _renamed(key)))
        if not (isinstance(error, ValueError) and named):
            failures[key] = repr(error)
    return failures


@pytest.mark.parametrize("mode", ["drop", "rename"])
def test_dropping_or_renaming_any_recorded_key_names_it(monkeypatch, mode):
    assert _failures(monkeypatch, mode, list(AUTHORS_MELD["state_dict"])) == {}


def test_a_missing_recorded_key_is_named_when_loading_the_file(tmp_path, authors_meld_file):
    _, state = authors_meld_file
    for key in ("net.mmt.layers.1.attention.trans_k1.2.lin.weight", "net.mmt.layers.0.wmn.fc.0.bias"):
        broken = OrderedDict((k, v) for k, v in state.items() if k != key)
        torch.save({"args": _authors_args(), "state_dict": broken}, tmp_path / "missing.pt")
        with pytest.raises(ValueError, match=rf"lacks key '{re.escape(key)}'"):
            Ada2I.from_reference_checkpoint(tmp_path / "missing.pt")
