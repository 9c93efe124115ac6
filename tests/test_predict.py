"""Per-modality logit contributions (the head's, the model's) and the predict CLI on a tiny trained run."""

import json

import pytest
import torch

from ada2i_fast import Ada2I, predict, train
from ada2i_fast.kernels.amw_head_torch import NORMALISATIONS, amw_head_contributions_torch, amw_head_torch
from ada2i_fast.modules.amw import ClassifierHead
from conftest import random_batch, tiny_config

TINY = ["--hidden", "32", "--rank", "3", "--ffn-dim", "64", "--drop-rate", "0.1", "--lr", "2e-3", "--quiet"]

# (compat, mmcosine) -> the head's normalisation: "class", "feature", and "none" from either mode.
HEADS = [("method", True), ("reference", True), ("method", False), ("reference", False)]


@pytest.mark.parametrize("normalisation", NORMALISATIONS)
@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_contributions_plus_bias_are_the_fused_logits(normalisation, scale):
    gen = torch.Generator().manual_seed(0)
    z, weight, bias = torch.randn(3, 11, 8, generator=gen), torch.randn(5, 24, generator=gen), torch.randn(5, generator=gen)
    fused, _, _ = amw_head_torch(z, weight, bias, None, scale, normalisation)
    contributions = amw_head_contributions_torch(z, weight, scale, normalisation)
    assert contributions.shape == (3, 11, 5)
    torch.testing.assert_close(contributions.sum(0) + bias, fused)


def test_an_unknown_normalisation_is_refused():
    with pytest.raises(ValueError, match="unknown normalisation 'rows'"):
        amw_head_contributions_torch(torch.zeros(1, 2, 3), torch.zeros(4, 3), 1.0, "rows")


@pytest.mark.parametrize("compat, mmcosine", HEADS)
def test_the_heads_contributions_add_up_to_its_forward(compat, mmcosine):
    head = ClassifierHead(tiny_config(compat=compat, mmcosine=mmcosine))
    z = torch.randn(3, 9, 16)
    fused, _, _ = head(z)
    torch.testing.assert_close(head.contributions(z).sum(0) + head.fc_out.bias, fused)


@pytest.mark.parametrize("compat, mmcosine", HEADS)
def test_predict_gives_contributions_that_reproduce_its_logits_and_labels(compat, mmcosine):
    config = tiny_config(compat=compat, mmcosine=mmcosine)
    model = Ada2I(config).train()
    batch = random_batch(config, [6, 3, 5])
    prediction = model.predict(batch)
    n = batch.num_utterances
    assert prediction.contributions.shape == (n, config.n_modalities, config.num_classes)
    assert prediction.bias.shape == (config.num_classes,)
    logits = prediction.contributions.sum(1) + prediction.bias
    torch.testing.assert_close(logits.softmax(-1), prediction.probabilities)
    assert torch.equal(logits.argmax(-1), prediction.labels)
    assert model.training and not model.head._forward_pre_hooks  # mode restored, nothing left hooked


def test_a_prediction_names_its_classes_and_its_modality_axis():
    config = tiny_config(modalities="ta", num_classes=3, class_names=("calm", "happy", "angry"))
    prediction = Ada2I(config).predict(random_batch(config, [4, 2]))
    assert prediction.modalities == "ta" and prediction.class_names == ("calm", "happy", "angry")
    assert prediction.label_names() == [config.class_names[i] for i in prediction.labels.tolist()]
    shares = prediction.contributions_by_modality()
    assert list(shares) == ["t", "a"] and torch.equal(shares["a"], prediction.contributions[:, 1])
    torch.testing.assert_close((sum(shares.values()) + prediction.bias).softmax(-1), prediction.probabilities)
    unnamed = Ada2I(tiny_config()).predict(random_batch(tiny_config(), [3]))
    with pytest.raises(ValueError, match="this model's classes are unnamed"):
        unnamed.label_names()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("predict") / "run"
    summary = train.main(["--dataset", "meld", "--size", "0.05", "--epochs", "1", "--out", str(out), *TINY])
    return out, summary


def _predict(checkpoint, out, *extra):
    predict.main(["--checkpoint", str(checkpoint), "--out", str(out), "--device", "cpu", *extra])
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_one_line_per_test_utterance_in_corpus_order(trained_run, tmp_path):
    run, summary = trained_run
    records = _predict(run / "model", tmp_path / "predictions.jsonl")
    _, corpus, _, _ = predict.open_checkpoint_and_corpus(run / "model", None, None)
    split = corpus.splits["test"]
    assert len(records) == split.num_utterances
    expected_keys = {"dialogue_id", "utterance", "gold", "predicted", "probabilities", "contributions", "bias"}
    assert all(set(r) == expected_keys for r in records)
    positions = [(split.dialogue_ids[d], u) for d, length in enumerate(split.lengths) for u in range(length)]
    assert [(r["dialogue_id"], r["utterance"]) for r in records] == positions
    assert [r["gold"] for r in records] == [corpus.classes[label] for label in split.labels]
    accuracy = sum(r["gold"] == r["predicted"] for r in records) / len(records)
    assert accuracy == pytest.approx(summary["test"]["accuracy"])


def test_probabilities_and_contributions_explain_each_prediction(trained_run, tmp_path):
    run, summary = trained_run
    classes = summary["classes"]
    for record in _predict(run / "model", tmp_path / "predictions.jsonl"):
        assert list(record["probabilities"]) == classes
        assert sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert list(record["contributions"]) == ["a", "t", "v"]
        logits = torch.tensor([sum(record["contributions"][m][c] for m in "atv") + record["bias"][c] for c in classes])
        assert classes[int(logits.argmax())] == record["predicted"]
        probabilities = torch.tensor([record["probabilities"][c] for c in classes])
        torch.testing.assert_close(logits.softmax(-1), probabilities, atol=1e-5, rtol=1e-4)


def test_bf16_predictions_stay_close_to_fp32(trained_run, tmp_path):
    run, summary = trained_run
    fp32 = _predict(run / "model", tmp_path / "fp32.jsonl")
    bf16 = _predict(run / "model", tmp_path / "bf16.jsonl", "--precision", "bf16")
    assert [(r["dialogue_id"], r["utterance"]) for r in bf16] == [(r["dialogue_id"], r["utterance"]) for r in fp32]
    for ours, reference in zip(bf16, fp32):
        for c in summary["classes"]:
            assert ours["probabilities"][c] == pytest.approx(reference["probabilities"][c], abs=0.03)
    agreement = sum(a["predicted"] == b["predicted"] for a, b in zip(bf16, fp32)) / len(fp32)
    assert agreement > 0.9


def test_another_split_can_be_asked_for(trained_run, tmp_path):
    run, _ = trained_run
    records = _predict(run / "model", tmp_path / "dev.jsonl", "--split", "dev")
    _, corpus, _, _ = predict.open_checkpoint_and_corpus(run / "model", None, None)
    assert len(records) == corpus.splits["dev"].num_utterances


def test_a_missing_checkpoint_is_one_error_line_and_writes_nothing(tmp_path):
    out = tmp_path / "predictions.jsonl"
    with pytest.raises(SystemExit, match=r"^error: checkpoint not found: .*nope\.pt$"):
        predict.main(["--checkpoint", str(tmp_path / "nope.pt"), "--out", str(out), "--device", "cpu"])
    assert not out.exists() and not list(tmp_path.iterdir())


def test_a_corpus_of_other_classes_is_refused(trained_run, tmp_path):
    run, _ = trained_run
    with pytest.raises(SystemExit, match=r"^error: this checkpoint was trained on meld, not iemocap"):
        predict.main(["--checkpoint", str(run / "model"), "--dataset", "iemocap", "--out", str(tmp_path / "p.jsonl")])
