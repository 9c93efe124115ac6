"""Models as the ecosystem shares them: config.json + model.safetensors, loaded by from_pretrained without
unpickling anything, refused in one line when damaged, edited or another model's."""

import json
import sys
import types

import pytest
import torch

from ada2i_fast import Ada2I, evaluate, train
from ada2i_fast.checkpointing.pretrained import CONFIG, WEIGHTS
from conftest import random_batch, tiny_config

TINY = ["--dataset", "meld", "--size", "0.05", "--hidden", "16", "--rank", "3", "--ffn-dim", "32",
        "--drop-rate", "0.1", "--lr", "2e-3", "--quiet"]


def test_from_pretrained_of_save_pretrained_predicts_identically_without_unpickling(tmp_path, monkeypatch):
    torch.manual_seed(4)
    model = Ada2I(tiny_config()).eval()
    folder = model.save_pretrained(tmp_path / "model", metadata={"note": "x"})
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG, WEIGHTS]

    def no_pickles(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", no_pickles)
    loaded = Ada2I.from_pretrained(folder)
    batch = random_batch(tiny_config(), [4, 2])
    torch.testing.assert_close(loaded.predict(batch).probabilities, model.predict(batch).probabilities, rtol=0, atol=0)
    assert loaded.config == model.config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrained") / "run"
    train.main([*TINY, "--out", str(out), "--epochs", "1"])
    return out


def test_a_finished_run_leaves_its_best_model_as_a_folder_evaluate_reads(run):
    summary = json.loads((run / "summary.json").read_text())
    config = json.loads((run / "model" / CONFIG).read_text())
    assert config["model_type"] == "ada2i" and config["metadata"]["epoch"] == summary["best_epoch"]
    report = evaluate.main(["--checkpoint", str(run / "model")])
    assert report["weighted_f1"] == pytest.approx(summary["test"]["weighted_f1"])


def _copy(run, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir(parents=True)
    for name in (CONFIG, WEIGHTS):
        (folder / name).write_bytes((run / "model" / name).read_bytes())
    return folder


def test_a_tampered_header_edited_weights_or_another_models_config_are_one_error_line(run, tmp_path):
    folder = _copy(run, tmp_path)
    data = bytearray((folder / WEIGHTS).read_bytes())
    data[8:20] = b"{garbage!!!!"
    (folder / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(SystemExit, match=rf"^error: {folder / WEIGHTS}: not a readable safetensors file of this package"):
        evaluate.main(["--checkpoint", str(folder)])

    folder = _copy(run, tmp_path / "edited")
    data = bytearray((folder / WEIGHTS).read_bytes())
    data[-40:-36] = bytes(b ^ 0xFF for b in data[-40:-36])  # inside the last tensor's bytes
    (folder / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(SystemExit, match=r"model\.safetensors: the tensor .* differs from the checksum written with it"):
        evaluate.main(["--checkpoint", str(folder)])

    folder = _copy(run, tmp_path / "bert")
    (folder / CONFIG).write_text(json.dumps({"model_type": "bert", "hidden_size": 768}))
    with pytest.raises(SystemExit, match=r"config\.json: the config of another model \(model_type 'bert', expected "
                                         r"'ada2i'\)"):
        evaluate.main(["--checkpoint", str(folder)])
    config = json.loads((run / "model" / CONFIG).read_text())
    config["ada2i_config"]["hidden"] = 17
    (folder / CONFIG).write_text(json.dumps(config))
    with pytest.raises(SystemExit, match=r"model\.safetensors: .* should have shape"):
        evaluate.main(["--checkpoint", str(folder)])


def test_push_to_hub_uploads_the_saved_folder_or_says_how_to_install_the_hub_client(tmp_path, monkeypatch):
    calls = []

    class FakeApi:
        def create_repo(self, repo_id, exist_ok):
            calls.append(("create_repo", repo_id, exist_ok))

        def upload_folder(self, folder_path, repo_id, **options):
            calls.append(("upload_folder", sorted(p.name for p in (tmp_path / "model").iterdir()), repo_id, options))
            return "https://huggingface.co/me/ada2i/commit/1"

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(HfApi=FakeApi))
    model = Ada2I(tiny_config())
    url = model.push_to_hub("me/ada2i", tmp_path / "model", commit_message="first")
    assert url.endswith("/commit/1")
    assert calls == [("create_repo", "me/ada2i", True),
                     ("upload_folder", [CONFIG, WEIGHTS], "me/ada2i", {"commit_message": "first"})]

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails
    with pytest.raises(ValueError, match=r'pip install "ada2i-fast\[hub\]"'):
        model.push_to_hub("me/ada2i", tmp_path / "model")
