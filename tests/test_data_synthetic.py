import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from ada2i_fast.datasets import DATASETS
from ada2i_fast.data import make_synthetic
from ada2i_fast.data.synthetic import MIN_DIALOGUES, SHAPES, VIEWS, view_maps


@pytest.fixture(scope="module")
def full():
    return {dataset: make_synthetic(dataset, seed=12) for dataset in ("iemocap", "meld", "mosei")}


@pytest.mark.parametrize("dataset", ["iemocap", "meld", "mosei"])
def test_real_split_sizes_dims_and_classes(full, dataset):
    corpus = full[dataset].validate()
    assert corpus.classes == DATASETS[dataset].classes
    assert corpus.dims == DATASETS[dataset].dims
    for name, (dialogues, utterances, longest) in SHAPES[dataset].splits.items():
        split = corpus.splits[name]
        assert (split.num_dialogues, split.num_utterances) == (dialogues, utterances)
        assert split.lengths.min() >= 1 and split.lengths.max() <= longest
        assert all(x.dtype == np.float32 and x.shape[0] == utterances for x in split.features.values())


def test_spec_split_sizes():
    meld, iemocap = SHAPES["meld"].splits, SHAPES["iemocap"].splits
    assert {k: v[:2] for k, v in meld.items()} == {"train": (1038, 9989), "dev": (114, 1109), "test": (280, 2610)}
    assert iemocap["train"][0] + iemocap["dev"][0] == 120 and iemocap["train"][1] + iemocap["dev"][1] == 5810
    assert iemocap["test"][:2] == (31, 1623)


def test_dialogue_length_statistics(full):
    meld = full["meld"].splits["train"].lengths
    assert abs(meld.mean() - 9.6) < 0.1 and 8 <= np.median(meld) <= 10
    assert meld.max() <= 24 and meld.min() == 1
    assert full["meld"].splits["test"].lengths.max() <= 33
    iemocap = np.concatenate([s.lengths for s in full["iemocap"].splits.values()])
    assert abs(iemocap.mean() - 49.2) < 1 and 80 <= iemocap.max() <= 110


def test_class_priors(full):
    meld = np.bincount(full["meld"].splits["train"].labels, minlength=7) / 9989
    expected = np.array(SHAPES["meld"].class_counts) / 9989
    assert np.abs(meld - expected).max() < 0.04
    labels = np.concatenate([s.labels for s in full["iemocap"].splits.values()])
    iemocap = np.bincount(labels, minlength=6) / len(labels)
    assert np.abs(iemocap - np.array([648, 1084, 1708, 1103, 1041, 1849]) / 7433).max() < 0.06


def test_labels_persist_within_dialogues(full):
    split = full["iemocap"].splits["train"]
    same_dialogue = np.ones(split.num_utterances - 1, bool)
    same_dialogue[split.offsets[1:-1] - 1] = False
    repeats = (split.labels[1:] == split.labels[:-1])[same_dialogue].mean()
    prior = np.bincount(split.labels) / split.num_utterances
    assert repeats > 0.7 > (prior**2).sum() + 0.3


def test_deterministic_from_seed():
    a, b, c = (make_synthetic("meld", seed=s, size=0.05) for s in (4, 4, 5))
    for name in a.splits:
        x, y, z = a.splits[name], b.splits[name], c.splits[name]
        for m in "atv":
            np.testing.assert_array_equal(x.features[m], y.features[m])
        np.testing.assert_array_equal(x.labels, y.labels)
        np.testing.assert_array_equal(x.speakers, y.speakers)
        np.testing.assert_array_equal(x.offsets, y.offsets)
        assert not np.array_equal(x.features["t"][:5], z.features["t"][:5])
    assert a.source == "synthetic meld (seed 4, size 0.05)"


def test_size_scales_dialogues():
    corpus = make_synthetic("iemocap", seed=0, size=0.1)
    assert [s.num_dialogues for s in corpus.splits.values()] == [11, MIN_DIALOGUES, MIN_DIALOGUES]
    assert abs(corpus.splits["train"].lengths.mean() - 48.4) < 1
    mosei = make_synthetic("mosei", seed=0, size=0.02, task="2class")
    assert mosei.classes == ("negative", "positive") and set(np.unique(mosei.splits["train"].labels)) == {0, 1}


def test_informativeness_text_over_audio_over_visual():
    corpus = make_synthetic("meld", seed=0, size=0.3)
    train, test = corpus.splits["train"], corpus.splits["test"]
    f1 = {}
    for m in "tav":
        model = LogisticRegression(C=0.05, max_iter=300).fit(train.features[m], train.labels)
        f1[m] = f1_score(test.labels, model.predict(test.features[m]), average="weighted")
    assert f1["t"] > f1["a"] + 0.05 and f1["a"] > f1["v"] + 0.05, f1


def _probe_f1(corpus, modalities: str) -> float:
    """Weighted test F1 of a per-utterance logistic regression on the concatenated features."""
    train, test = corpus.splits["train"], corpus.splits["test"]
    features = lambda split: np.concatenate([split.features[m] for m in modalities], axis=1)  # noqa: E731
    model = LogisticRegression(C=0.05, max_iter=300).fit(features(train), train.labels)
    return f1_score(test.labels, model.predict(features(test)), average="weighted")


@pytest.mark.parametrize("dataset", ["iemocap", "meld", "mosei"])
def test_complementary_views_take_all_three_modalities_to_tell_every_class_apart(dataset):
    views = view_maps(dataset)
    classes = DATASETS[dataset].classes
    assert all(sorted(name for group in groups for name in group) == sorted(classes)
               for groups in VIEWS[dataset].values())
    told_apart = lambda ms: len({tuple(views[m][c] for m in ms) for c in range(len(classes))}) == len(classes)  # noqa: E731
    assert told_apart("atv")
    assert not any(told_apart(ms) for ms in ("t", "at", "tv", "av"))


def test_the_complementary_family_keeps_labels_and_noise_and_changes_only_the_signal():
    redundant = make_synthetic("meld", seed=7, size=0.05)
    complementary = make_synthetic("meld", seed=7, size=0.05, family="complementary")
    assert complementary.source == "synthetic meld complementary (seed 7, size 0.05)"
    for name, split in redundant.splits.items():
        other = complementary.splits[name]
        np.testing.assert_array_equal(split.labels, other.labels)
        np.testing.assert_array_equal(split.offsets, other.offsets)
        assert not np.array_equal(split.features["t"], other.features["t"])
    again = make_synthetic("meld", seed=7, size=0.05, family="complementary")
    for name, split in complementary.splits.items():
        for m in "atv":
            np.testing.assert_array_equal(split.features[m], again.splits[name].features[m])
    with pytest.raises(ValueError, match="unknown synthetic family 'mixed'"):
        make_synthetic("meld", seed=7, size=0.05, family="mixed")


def test_in_the_complementary_corpus_text_alone_cannot_reach_text_and_audio():
    # Measured with this probe at size 0.5: text 0.550 / 0.579 / 0.537 and text + audio 0.603 / 0.632 / 0.579
    # for seeds 1 / 2 / 3 (gaps 0.042 to 0.053); in the redundant family at 0.3, text + audio adds 0.006.
    corpus = make_synthetic("meld", seed=1, size=0.5, family="complementary")
    text, text_audio, full = (_probe_f1(corpus, ms) for ms in ("t", "at", "atv"))
    assert text_audio > text + 0.03, (text, text_audio)
    assert full > text_audio, (text_audio, full)
