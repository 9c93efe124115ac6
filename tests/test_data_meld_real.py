"""The loaders on the real MELD dialogue structure and labels (transcripts in ../shared, not in the repo).

The legacy meld.pkl has no dev ids, so the file written here puts the CSVs' train then dev
dialogues in ``trainVid``; the loader then carves the first int(0.1 * 1152) = 115 as dev (SPEC §1).
Text features are a hashed bag of words; audio/visual are random (no such features ship).
"""

import csv
import re
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from fixtures.legacy_data import write_pickle

from ada2i_fast.data import iterate_batches, load_corpus, make_synthetic
from ada2i_fast.data.legacy import read_legacy

MELD_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "meld"
CLASS_INDEX = {"neutral": 0, "surprise": 1, "fear": 2, "sadness": 3, "joy": 4, "disgust": 5, "anger": 6}
REAL = {"train": (1038, 9989), "dev": (114, 1109), "test": (280, 2610)}

pytestmark = pytest.mark.skipif(not MELD_DIR.is_dir(), reason=f"real MELD transcripts not found at {MELD_DIR}")


def _read_dialogues(split: str) -> dict[str, list[dict]]:
    dialogues: dict[str, list[dict]] = {}
    with open(MELD_DIR / f"{split}_sent_emo.csv", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            dialogues.setdefault(f"{split}_{row['Dialogue_ID']}", []).append(row)
    return dialogues


def _hashed_bag_of_words(text: str, dim: int = 768) -> np.ndarray:
    vector = np.zeros(dim, np.float32)
    for token in re.findall(r"[a-z']+", text.lower()):
        vector[zlib.crc32(token.encode()) % dim] += 1.0
    return vector / max(1.0, float(np.linalg.norm(vector)))


@pytest.fixture(scope="module")
def real():
    return {split: _read_dialogues(split) for split in REAL}


@pytest.fixture(scope="module")
def meld_pkl(real, tmp_path_factory):
    rng = np.random.default_rng(0)
    speaker_ids: dict[str, int] = {}
    data = {key: {} for key in ("label", "speakers", "text", "audio", "visual", "sentence")}
    data["trainVid"] = list(real["train"]) + list(real["dev"])
    data["testVid"] = list(real["test"])
    for dialogues in real.values():
        for vid, rows in dialogues.items():
            n = len(rows)
            data["label"][vid] = [CLASS_INDEX[r["Emotion"]] for r in rows]
            data["speakers"][vid] = [speaker_ids.setdefault(r["Speaker"], len(speaker_ids)) for r in rows]
            data["sentence"][vid] = [r["Utterance"] for r in rows]
            data["text"][vid] = [_hashed_bag_of_words(r["Utterance"]) for r in rows]
            data["audio"][vid] = list(rng.standard_normal((n, 300), dtype=np.float32))
            data["visual"][vid] = list(rng.standard_normal((n, 342), dtype=np.float32))
    return write_pickle(tmp_path_factory.mktemp("meld") / "meld.pkl", data)


def test_real_meld_through_the_legacy_loader(real, meld_pkl):
    raw = read_legacy(meld_pkl, "meld")
    train_and_dev = raw.splits["train"]
    assert (train_and_dev.num_dialogues, train_and_dev.num_utterances) == (1038 + 114, 9989 + 1109)
    assert (raw.splits["test"].num_dialogues, raw.splits["test"].num_utterances) == REAL["test"]
    train_labels = train_and_dev.labels[: REAL["train"][1]]
    counts = dict(zip(raw.classes, np.bincount(train_labels, minlength=7).tolist()))
    assert counts == {"neutral": 4710, "surprise": 1205, "fear": 268, "sadness": 683, "joy": 1743, "disgust": 271,
                      "anger": 1109}
    assert train_and_dev.lengths.max() == 24 and raw.splits["test"].lengths.max() == 33

    corpus = load_corpus("meld", meld_pkl, seed=12)
    file_ids = list(real["train"]) + list(real["dev"])
    assert list(corpus.splits["dev"].dialogue_ids) == file_ids[:115]
    assert list(corpus.splits["train"].dialogue_ids) == file_ids[115:]
    assert corpus.splits["dev"].num_utterances + corpus.splits["train"].num_utterances == 9989 + 1109
    assert corpus.dims == {"a": 300, "t": 768, "v": 342}
    utterances = sum(b.num_utterances for b in iterate_batches(corpus.splits["test"], "atv", 10, shuffle=True, seed=0))
    assert utterances == 2610


def test_synthetic_meld_lengths_match_real(real):
    synthetic = make_synthetic("meld", seed=12)
    for split, dialogues in real.items():
        lengths = np.array([len(rows) for rows in dialogues.values()])
        fake = synthetic.splits[split].lengths
        assert (len(fake), fake.sum()) == (len(lengths), lengths.sum())
        assert abs(fake.mean() - lengths.mean()) < 1 and fake.max() <= lengths.max()
        assert abs(np.median(fake) - np.median(lengths)) <= 1
    real_labels = Counter(r["Emotion"] for rows in real["train"].values() for r in rows)
    fake_counts = np.bincount(synthetic.splits["train"].labels, minlength=7)
    for name, index in CLASS_INDEX.items():
        assert abs(fake_counts[index] - real_labels[name]) / 9989 < 0.04
