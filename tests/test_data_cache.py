import json
import os

import numpy as np
import pytest
from fixtures.legacy_data import legacy_dict, write_pickle

from ada2i_fast.data import CacheError, load_corpus
from ada2i_fast.data import cache as cache_module
from ada2i_fast.data.cache import MANIFEST, cache_path
from ada2i_fast.data.legacy import load_legacy


def assert_same_corpus(a, b):
    assert (a.name, a.classes, list(a.splits)) == (b.name, b.classes, list(b.splits))
    for name, x in a.splits.items():
        y = b.splits[name]
        assert x.dialogue_ids == y.dialogue_ids
        for field in ("labels", "speakers", "offsets"):
            np.testing.assert_array_equal(getattr(x, field), getattr(y, field))
            assert getattr(x, field).dtype == getattr(y, field).dtype
        assert x.features.keys() == y.features.keys()
        for m in x.features:
            assert x.features[m].dtype == y.features[m].dtype
            np.testing.assert_array_equal(x.features[m], y.features[m])


@pytest.mark.parametrize("dataset,task", [("iemocap", "7class"), ("meld", "7class"), ("mosei", "2class")])
def test_cache_matches_the_source_exactly(tmp_path, dataset, task):
    path = write_pickle(tmp_path / f"{dataset}.pkl", legacy_dict(dataset, n_train=20))
    cached = load_corpus(dataset, path, seed=5, task=task)
    assert cache_path(path, dataset, task=task).is_dir()
    assert cached.source == str(path)
    assert_same_corpus(cached, load_legacy(path, dataset, task=task, seed=5))
    features = cached.splits["test"].features["t"]
    assert isinstance(features, np.memmap) and not features.flags.writeable
    # Second load: from the cache alone, no temp dirs left behind.
    assert_same_corpus(load_corpus(dataset, path, seed=5, task=task), cached)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, cache_path(path, dataset, task=task).name])


def test_second_load_does_not_read_the_pickle(tmp_path, monkeypatch):
    path = write_pickle(tmp_path / "meld.pkl", legacy_dict("meld"))
    first = load_corpus("meld", path)

    def fail(*args, **kwargs):
        raise AssertionError("the pickle was read again")

    monkeypatch.setattr(cache_module, "read_legacy", fail)
    assert_same_corpus(load_corpus("meld", path), first)
    os.utime(path, ns=(0, 0))  # touched but identical: the sha256 keeps the cache
    assert_same_corpus(load_corpus("meld", path), first)


def test_changed_source_rebuilds_the_cache(tmp_path):
    path = write_pickle(tmp_path / "meld.pkl", legacy_dict("meld", seed=0))
    before = load_corpus("meld", path)
    write_pickle(path, legacy_dict("meld", seed=1, n_train=14))
    after = load_corpus("meld", path)
    assert_same_corpus(after, load_legacy(path, "meld"))
    assert after.splits["train"].num_dialogues != before.splits["train"].num_dialogues


def test_cache_dir_argument_and_loading_a_cache_directory(tmp_path):
    path = write_pickle(tmp_path / "iemocap.pkl", legacy_dict("iemocap"))
    cache_dir = tmp_path / "caches"
    corpus = load_corpus("iemocap", path, cache_dir=cache_dir, seed=2)
    (directory,) = cache_dir.iterdir()
    assert directory == cache_path(path, "iemocap", cache_dir=cache_dir)
    from_directory = load_corpus("iemocap", directory, seed=2)
    assert from_directory.source == str(directory)
    assert_same_corpus(from_directory, corpus)
    with pytest.raises(CacheError, match="caches dataset 'iemocap'"):
        load_corpus("meld", directory)


@pytest.fixture
def built_cache(tmp_path):
    path = write_pickle(tmp_path / "meld.pkl", legacy_dict("meld"))
    load_corpus("meld", path)
    return path, cache_path(path, "meld")


def test_truncated_array_is_detected(built_cache):
    path, directory = built_cache
    npy = directory / "train" / "t.npy"
    npy.write_bytes(npy.read_bytes()[:-40])
    with pytest.raises(CacheError, match=r"t\.npy.*truncated"):
        load_corpus("meld", path)


def test_edited_manifest_is_detected(built_cache):
    path, directory = built_cache
    manifest = json.loads((directory / MANIFEST).read_text())
    manifest["splits"]["test"]["dialogue_ids"][0] = "someone_else"
    (directory / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CacheError, match="manifest was modified"):
        load_corpus("meld", directory)


def test_swapped_array_is_detected(built_cache):
    path, directory = built_cache
    labels = np.load(directory / "test" / "labels.npy")
    np.save(directory / "test" / "labels.npy", labels[:-1])
    with pytest.raises(CacheError, match=r"labels\.npy.*manifest says"):
        load_corpus("meld", path)


def test_load_corpus_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="iemocap, meld, mosei"):
        load_corpus("cmu-mosi")
    with pytest.raises(FileNotFoundError, match="no meld data at"):
        load_corpus("meld", tmp_path / "missing.pkl")
    with pytest.raises(ValueError, match="unknown mosei task"):
        load_corpus("mosei", task="3class")


def test_unwritable_cache_location_warns_and_reads_the_pickle(tmp_path, monkeypatch):
    path = write_pickle(tmp_path / "meld.pkl", legacy_dict("meld"))

    def refuse(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(cache_module, "write_cache", refuse)
    with pytest.warns(UserWarning, match="could not write the data cache"):
        corpus = load_corpus("meld", path)
    assert_same_corpus(corpus, load_legacy(path, "meld"))
    assert not cache_path(path, "meld").exists()
