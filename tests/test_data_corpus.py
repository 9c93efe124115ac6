import dataclasses

import numpy as np
import pytest

from ada2i_fast.data import Corpus, Split


def _split(lengths=(3, 1, 4), dims=(("a", 2), ("t", 3))):
    n = sum(lengths)
    rng = np.random.default_rng(0)
    return Split(
        features={m: rng.standard_normal((n, d)).astype(np.float32) for m, d in dims},
        labels=np.arange(n, dtype=np.int64) % 3,
        speakers=np.zeros(n, np.int64),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        dialogue_ids=tuple(f"dlg{i}" for i in range(len(lengths))),
    )


def _corpus(**splits):
    return Corpus("meld", ("x", "y", "z"), {"train": _split(), **splits}, "test")


def _fails(corpus, *needles, num_classes=None):
    with pytest.raises(ValueError) as info:
        corpus.validate(num_classes)
    for needle in needles:
        assert needle in str(info.value)


def test_valid_corpus_and_properties():
    corpus = _corpus(test=_split((2, 2)))
    assert corpus.validate() is corpus
    split = corpus.splits["train"]
    assert (split.num_dialogues, split.num_utterances, split.lengths.tolist()) == (3, 8, [3, 1, 4])
    assert (corpus.modalities, corpus.dims) == ("at", {"a": 2, "t": 3})


def test_take_keeps_dialogues_whole():
    split = _split()
    part = split.take([2, 0])
    assert part.dialogue_ids == ("dlg2", "dlg0") and part.lengths.tolist() == [4, 3]
    t = split.features["t"]
    np.testing.assert_array_equal(part.features["t"], np.concatenate([t[4:], t[:3]]))
    view = split.take([1, 2])
    assert np.shares_memory(view.features["a"], split.features["a"])
    np.testing.assert_array_equal(view.labels, split.labels[3:])


def test_label_out_of_range_names_dialogue():
    split = _split()
    split.labels[6] = 3
    _fails(_corpus(test=split), "split 'test'", "dialogue 'dlg2'", "'labels'", "label 3 out of range [0, 3)")
    _fails(_corpus(), "split 'train'", "dialogue 'dlg0'", "label 2 out of range [0, 2)", num_classes=2)


def test_inconsistent_dims_across_splits():
    wider = _split((2,), dims=(("a", 2), ("t", 4)))
    _fails(_corpus(test=wider), "split 'test'", "'dlg0'", "field 't'", "feature dim 4")


def test_ragged_columns_and_empty_dialogues():
    split = _split()
    short = dataclasses.replace(split, speakers=split.speakers[:-2])
    _fails(_corpus(test=short), "split 'test'", "dialogue 'dlg2'", "'speakers'", "ragged")
    short = dataclasses.replace(split, features={**split.features, "a": split.features["a"][:5]})
    _fails(_corpus(test=short), "dialogue 'dlg2'", "'a'", "ragged")
    empty = _split((2, 0, 1))
    _fails(_corpus(test=empty), "split 'test'", "dialogue 'dlg1'", "empty dialogue")


def test_non_finite_features_and_wrong_dtype():
    split = _split()
    split.features["t"][3, 1] = np.nan
    _fails(_corpus(dev=split), "split 'dev'", "dialogue 'dlg1'", "field 't'", "non-finite")
    split = _split()
    _fails(_corpus(dev=dataclasses.replace(split, labels=split.labels.astype(np.int32))), "'labels'", "int64")
