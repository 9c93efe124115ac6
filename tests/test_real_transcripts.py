"""Ada2I learns real conversations: text-only MELD transcripts from ../shared (skipped when absent).

The full comparison over scales and seeds is ``benchmarks/real_transcripts.py``; here one seed
of the library's defaults (meld preset, s from the config) for fewer epochs.
"""

from pathlib import Path

import numpy as np
import pytest

from ada2i_fast import train
from ada2i_fast.data.cache import write_cache
from ada2i_fast.data.transcripts import build_transcript_corpus
from ada2i_fast.studies.baselines import baseline_f1

MELD_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "meld"
EPOCHS = 6

pytestmark = pytest.mark.skipif(not MELD_DIR.is_dir(), reason=f"real MELD transcripts not found at {MELD_DIR}")


@pytest.fixture(scope="module")
def corpus():
    return build_transcript_corpus(MELD_DIR, "meld")


def test_split_sizes_and_train_class_counts(corpus):
    sizes = {name: (s.num_dialogues, s.num_utterances) for name, s in corpus.splits.items()}
    assert sizes == {"train": (1038, 9989), "dev": (114, 1109), "test": (280, 2610)}
    counts = dict(zip(corpus.classes, np.bincount(corpus.splits["train"].labels, minlength=7).tolist()))
    assert counts == {"neutral": 4710, "surprise": 1205, "fear": 268, "sadness": 683, "joy": 1743, "disgust": 271,
                      "anger": 1109}
    assert corpus.dims == {"t": 768}


def test_text_only_defaults_beat_the_majority_and_reach_logistic_regression(corpus, tmp_path):
    write_cache(corpus, tmp_path / "corpus", source={"kind": "transcripts", "layout": "meld", "path": str(MELD_DIR)})
    summary = train.main(["--dataset", "meld", "--data", str(tmp_path / "corpus"), "--epochs", str(EPOCHS),
                           "--out", str(tmp_path / "run"), "--quiet"])
    baselines = baseline_f1(corpus)
    test_f1 = summary["test"]["weighted_f1"]
    print(f"test weighted F1 {test_f1:.3f} | majority {baselines['majority']:.3f} | "
          f"logistic regression {baselines['logistic_regression']:.3f}")
    assert summary["config"]["modalities"] == "t"
    assert test_f1 >= baselines["majority"] + 0.10
    assert test_f1 >= baselines["logistic_regression"] - 0.01
