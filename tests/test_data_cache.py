import json
import os
import re
import stat

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


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"format": NaN}', " " * (17 * 2**20) + "{}"])
def test_a_bomb_of_a_manifest_is_one_named_error(built_cache, tmp_path, text):
    """The manifest is read by the package's bounded JSON reader: a 100k-deep one raised RecursionError."""
    import shutil

    _, directory = built_cache
    copy = shutil.copytree(directory, tmp_path / "cache")
    (copy / MANIFEST).write_text(text)
    with pytest.raises(CacheError, match=rf"^unreadable manifest: {re.escape(str(copy / MANIFEST))}: "):
        load_corpus("meld", copy)


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


def _rewrite_manifest(directory, edit):
    """Edit a manifest and give it a matching checksum, as a careful hand (or an older version) would."""
    manifest = json.loads((directory / MANIFEST).read_text())
    edit(manifest)
    manifest["checksum"] = cache_module.manifest_checksum(manifest)
    (directory / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("split,key,alter", [
    ("test", "labels", lambda y: np.roll(y, 1)),  # labels shifted by one utterance
    ("train", "t", np.zeros_like),  # features zeroed
    ("dev", "offsets", lambda o: o),  # no-op control: dev is not a split of the pickle's cache
])
def test_altered_array_contents_are_detected(built_cache, split, key, alter):
    path, directory = built_cache
    npy = directory / split / f"{key}.npy"
    if not npy.exists():
        assert_same_corpus(load_corpus("meld", path), load_legacy(path, "meld"))
        return
    np.save(npy, alter(np.array(np.load(npy))))  # same shape and dtype, different values
    for target in (path, directory):
        with pytest.raises(CacheError, match=rf"{key}\.npy: its contents changed.*sha256 mismatch"):
            load_corpus("meld", target)


def test_verify_false_skips_the_hashes(built_cache):
    path, directory = built_cache
    npy = directory / "train" / "a.npy"
    np.save(npy, np.zeros_like(np.load(npy)))
    corpus = cache_module.load_cache(directory, verify=False)
    assert not corpus.splits["train"].features["a"].any()


@pytest.mark.parametrize("edit,needle", [
    (lambda m: m["splits"]["train"]["arrays"]["t"].pop("sha256"), "needs a 'shape', a 'dtype' and a 'sha256'"),
    (lambda m: m["splits"].update({"../elsewhere": m["splits"]["train"]}), "'splits' must map"),
    (lambda m: m["splits"]["test"]["arrays"].update({"../../x": m["splits"]["test"]["arrays"]["t"]}), "must list"),
    (lambda m: m["source"].pop("sha256"), "needs the pickle's 'size' and 'sha256'"),
    (lambda m: m.update(classes="neutral"), "'classes' a list of strings"),
])
def test_malformed_manifest_with_a_matching_checksum(built_cache, edit, needle):
    path, directory = built_cache
    _rewrite_manifest(directory, edit)
    with pytest.raises(CacheError, match=re.escape(needle)):
        load_corpus("meld", directory)


def test_edited_classes_are_detected(built_cache):
    path, directory = built_cache
    manifest = json.loads((directory / MANIFEST).read_text())
    manifest["classes"][0] = "calm"
    (directory / MANIFEST).write_text(json.dumps(manifest))
    for target in (path, directory):
        with pytest.raises(CacheError, match="manifest was modified"):
            load_corpus("meld", target)


def test_same_size_same_mtime_source_change_rebuilds(tmp_path):
    path = write_pickle(tmp_path / "meld.pkl", legacy_dict("meld", seed=0))
    before = load_corpus("meld", path)
    stat = path.stat()
    data = legacy_dict("meld", seed=0)
    vid = data["trainVid"][0]
    data["label"][vid][0] = (data["label"][vid][0] + 1) % 7  # same pickle size: one small int changed
    write_pickle(path, data)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    after = load_corpus("meld", path)
    assert after.splits["dev"].dialogue_ids[0] == vid  # meld's dev: the first training dialogue
    assert after.splits["dev"].labels[0] == data["label"][vid][0] != before.splits["dev"].labels[0]
    assert_same_corpus(after, load_legacy(path, "meld"))


def test_cache_folders_follow_the_umask(tmp_path):
    path = write_pickle(tmp_path / "meld.pkl", legacy_dict("meld"))
    old = os.umask(0o022)
    try:
        load_corpus("meld", path)
    finally:
        os.umask(old)
    directory = cache_path(path, "meld")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o755
    assert stat.S_IMODE((directory / "train").stat().st_mode) == 0o755
    assert stat.S_IMODE((directory / "train" / "t.npy").stat().st_mode) == 0o644
    assert stat.S_IMODE((directory / MANIFEST).stat().st_mode) == 0o644


def _as_version_1(manifest):
    manifest["version"] = 1
    for split in manifest["splits"].values():
        for spec in split["arrays"].values():
            spec.pop("sha256")


def test_version_1_legacy_cache_is_rebuilt_from_its_pickle(built_cache):
    path, directory = built_cache
    _rewrite_manifest(directory, _as_version_1)
    with pytest.raises(cache_module.StaleCacheError, match="older version"):
        load_corpus("meld", directory)
    assert_same_corpus(load_corpus("meld", path), load_legacy(path, "meld"))
    assert json.loads((directory / MANIFEST).read_text())["version"] == cache_module.VERSION


def _transcript_corpus(tmp_path, version=cache_module.VERSION):
    corpus = load_legacy(write_pickle(tmp_path / "source.pkl", legacy_dict("meld")), "meld")
    folder = tmp_path / "corpus"
    source = {"kind": "transcripts", "layout": "meld", "path": str(tmp_path / "csv")}
    cache_module.write_cache(corpus, folder, source=source)
    if version == 1:
        _rewrite_manifest(folder, _as_version_1)
    return folder


def test_version_1_transcript_corpus_says_how_to_rebuild_it(tmp_path):
    folder = _transcript_corpus(tmp_path, version=1)
    with pytest.raises(cache_module.StaleCacheError) as info:
        load_corpus("meld", folder)
    message = str(info.value)
    assert "python -m ada2i_fast.data.transcripts" in message and f"--csv-dir {tmp_path / 'csv'}" in message
    assert (folder / "train" / "t.npy").exists()


def test_a_transcript_corpus_at_a_cache_path_is_never_replaced(tmp_path):
    path = write_pickle(tmp_path / "meld.pkl", legacy_dict("meld"))
    folder = _transcript_corpus(tmp_path)
    os.replace(folder, cache_path(path, "meld"))
    before = (cache_path(path, "meld") / MANIFEST).read_text()
    with pytest.raises(CacheError, match="holds a 'transcripts' corpus"):
        load_corpus("meld", path)
    assert (cache_path(path, "meld") / MANIFEST).read_text() == before


def _cache_errors(tmp_path):
    """The message of every way a cache can be refused."""
    messages = []

    def refused(target, prepare):
        path = write_pickle(tmp_path / f"m{len(messages)}.pkl", legacy_dict("meld"))
        load_corpus("meld", path)
        directory = cache_path(path, "meld")
        prepare(directory)
        with pytest.raises(CacheError) as info:
            load_corpus("meld", path if target == "pickle" else directory)
        messages.append(str(info.value))

    def npy(directory):
        return directory / "train" / "t.npy"

    def nan_features_with_a_matching_hash(directory):
        np.save(npy(directory), np.full_like(np.load(npy(directory)), np.nan))
        digest = cache_module.array_sha256(np.load(npy(directory)))
        _rewrite_manifest(directory, lambda m: m["splits"]["train"]["arrays"]["t"].update(sha256=digest))

    refused("pickle", lambda d: (d / MANIFEST).write_text("{"))
    refused("dir", lambda d: (d / MANIFEST).write_text("{}"))
    refused("dir", lambda d: (d / MANIFEST).write_text((d / MANIFEST).read_text().replace("train_00", "train_99")))
    refused("dir", lambda d: _rewrite_manifest(d, _as_version_1))
    refused("pickle", lambda d: npy(d).write_bytes(npy(d).read_bytes()[:-40]))
    refused("pickle", lambda d: np.save(npy(d), np.load(npy(d))[:-1]))
    refused("pickle", lambda d: np.save(npy(d), np.zeros_like(np.load(npy(d)))))
    refused("dir", nan_features_with_a_matching_hash)
    refused("dir", lambda d: _rewrite_manifest(d, lambda m: m["source"].pop("size")))
    (tmp_path / "t").mkdir()
    folder = _transcript_corpus(tmp_path / "t", version=1)
    with pytest.raises(CacheError) as info:
        load_corpus("meld", folder)
    messages.append(str(info.value))
    return messages


def test_no_cache_error_advises_deleting(tmp_path):
    messages = _cache_errors(tmp_path)
    assert len(messages) == 10
    for message in messages:
        assert "delete" not in message.lower() and "rm -" not in message
        assert "rebuil" in message
    corrupt = [m for m in messages if "older version" not in m]
    assert len(corrupt) == 8 and all("rename or move the folder away and load that pickle again" in m for m in corrupt)
    assert sum("this folder is the cache of" in m and "holds nothing else" in m for m in corrupt) == 6


def test_write_cache_never_replaces_a_folder_of_other_files(tmp_path):
    corpus = load_legacy(write_pickle(tmp_path / "meld.pkl", legacy_dict("meld")), "meld")
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(CacheError, match="exists and is not a corpus or cache folder"):
        cache_module.write_cache(corpus, folder, source={"kind": "transcripts"})
    assert (folder / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meld.pkl", "mine"]
    empty = tmp_path / "empty"
    empty.mkdir()
    cache_module.write_cache(corpus, empty, source={"kind": "transcripts"})
    cache_module.write_cache(corpus, empty, source={"kind": "transcripts"})  # a cache folder: replaced
    assert_same_corpus(cache_module.load_cache(empty), corpus)
