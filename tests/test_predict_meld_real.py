"""New conversations on the real MELD transcripts (../shared, not in the repo; skipped when absent): a text
corpus at a small text dim, a model saved with its featuriser, and predictions on a CSV of a few test
dialogues that equal those on the corpus's own test split."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ada2i_fast import Ada2I, Ada2IConfig, ConversationPipeline, predict
from ada2i_fast.data import load_corpus
from ada2i_fast.data.featuriser import corpus_featuriser
from ada2i_fast.data.transcripts import main as build_transcripts
from ada2i_fast.inference.pipeline import prediction_records

MELD_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "meld"

pytestmark = pytest.mark.skipif(not MELD_DIR.is_dir(), reason=f"real MELD transcripts not found at {MELD_DIR}")


def _first_dialogues(source, target, count):
    """The rows of the first ``count`` dialogues of ``source``, written to ``target`` without the labels."""
    with open(source, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    kept = list(dict.fromkeys(row["Dialogue_ID"] for row in rows))[:count]
    columns = [c for c in reader.fieldnames if c not in ("Emotion", "Sentiment")]
    with open(target, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(row for row in rows if row["Dialogue_ID"] in kept)
    return kept


def test_meld_transcripts_of_a_few_new_dialogues_are_featurised_as_the_corpus_was(tmp_path):
    corpus_dir = tmp_path / "corpus"
    build_transcripts(["--csv-dir", str(MELD_DIR), "--layout", "meld", "--text-dim", "16", "--out", str(corpus_dir)])
    corpus = load_corpus("meld", corpus_dir)
    torch.manual_seed(0)
    model = Ada2I(Ada2IConfig.preset("meld", modalities="t", input_dims={"t": 16}, class_names=corpus.classes,
                                     hidden=16, rank=3, ffn_dim=32))
    ConversationPipeline(model, corpus_featuriser(str(corpus_dir))).save_pretrained(tmp_path / "model")

    dialogues = _first_dialogues(MELD_DIR / "test_sent_emo.csv", tmp_path / "new.csv", 3)
    predict.main(["--checkpoint", str(tmp_path / "model"), "--csv", str(tmp_path / "new.csv"), "--out",
                  str(tmp_path / "new.jsonl"), "--device", "cpu"])
    records = [json.loads(line) for line in (tmp_path / "new.jsonl").read_text().splitlines()]
    test = corpus.splits["test"].take([0, 1, 2])
    assert [r["dialogue_id"] for r in records] == [d for d, n in zip(dialogues, test.lengths) for _ in range(n)]
    assert all("gold" not in r and tuple(r["probabilities"]) == corpus.classes for r in records)
    on_split = prediction_records(model.eval(), test, corpus.classes, batch_size=10, device=torch.device("cpu"))
    for ours, theirs in zip(records, on_split, strict=True):
        np.testing.assert_allclose(list(ours["probabilities"].values()), list(theirs["probabilities"].values()),
                                   atol=1e-6)

    pipeline = ConversationPipeline.from_pretrained(tmp_path / "model")
    [said] = pipeline([["Oh my God, you're back!", "I missed you so much.", "Where the hell were you?"]])
    assert [r["utterance"] for r in said] == [0, 1, 2] and all(r["predicted"] in corpus.classes for r in said)
