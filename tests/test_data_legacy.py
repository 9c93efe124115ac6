import collections
import io
import os
import pickle
import random

import numpy as np
import pytest
from fixtures.legacy_data import DIMS, labels_of, legacy_dict, write_pickle

from ada2i_fast.data import UnsafePickleError
from ada2i_fast.data.legacy import load_legacy, read_legacy
from ada2i_fast.data.safe_pickle import safe_load

FIELDS = {"a": "audio", "t": "text", "v": "visual"}


def _dialogue_ids(corpus, split):
    return list(corpus.splits[split].dialogue_ids)


@pytest.mark.parametrize("dataset", ["iemocap", "meld", "mosei"])
@pytest.mark.parametrize("protocol", [2, 5])
def test_layout_round_trips(tmp_path, dataset, protocol):
    data = legacy_dict(dataset)
    path = write_pickle(tmp_path / f"{dataset}.pkl", data, protocol)
    corpus = load_legacy(path, dataset, seed=3)
    assert set(corpus.splits) == {"train", "dev", "test"}
    assert corpus.source == str(path)
    file_ids = data["trainVid"] + data.get("valVid", [])
    assert sorted(_dialogue_ids(corpus, "train") + _dialogue_ids(corpus, "dev")) == sorted(file_ids)
    for split in corpus.splits.values():
        for d, vid in enumerate(split.dialogue_ids):
            rows = slice(split.offsets[d], split.offsets[d + 1])
            for m, field in FIELDS.items():
                np.testing.assert_array_equal(split.features[m][rows], np.stack(data[field][vid]))
            np.testing.assert_array_equal(split.labels[rows], labels_of(data, dataset, vid))
            if dataset == "iemocap":
                np.testing.assert_array_equal(split.speakers[rows], [{"M": 0, "F": 1}[s] for s in data["speaker"][vid]])
            if dataset == "meld":
                np.testing.assert_array_equal(split.speakers[rows], data["speakers"][vid])
    assert corpus.dims == {m: DIMS[field] for m, field in FIELDS.items()}


def test_plain_python_lists_and_sets_of_ids_load(tmp_path):
    data = legacy_dict("meld")
    data["text"] = {vid: [v.tolist() for v in vectors] for vid, vectors in data["text"].items()}
    data["trainVid"] = set(data["trainVid"])
    corpus = read_legacy(write_pickle(tmp_path / "meld.pkl", data), "meld")
    assert list(corpus.splits["train"].dialogue_ids) == sorted(data["trainVid"])
    assert corpus.splits["train"].features["t"].dtype == np.float32


def test_dev_split_rules(tmp_path):
    meld = legacy_dict("meld", n_train=25)
    corpus = load_legacy(write_pickle(tmp_path / "meld.pkl", meld), "meld", seed=1)
    assert _dialogue_ids(corpus, "dev") == meld["trainVid"][:2]  # int(0.1 * 25), file order
    assert _dialogue_ids(corpus, "train") == meld["trainVid"][2:]

    iemocap = legacy_dict("iemocap", n_train=30)
    path = write_pickle(tmp_path / "iemocap.pkl", iemocap)
    shuffled = list(iemocap["trainVid"])
    random.Random(7).shuffle(shuffled)
    corpus = load_legacy(path, "iemocap", seed=7)
    assert _dialogue_ids(corpus, "dev") == shuffled[:3]
    assert _dialogue_ids(corpus, "train") == shuffled[3:]
    assert _dialogue_ids(load_legacy(path, "iemocap", seed=8), "dev") != shuffled[:3]

    mosei = legacy_dict("mosei")
    corpus = load_legacy(write_pickle(tmp_path / "mosei.pkl", mosei), "mosei", task="2class")
    assert _dialogue_ids(corpus, "dev") == mosei["valVid"]
    assert _dialogue_ids(corpus, "train") == mosei["trainVid"]
    assert corpus.classes == ("negative", "positive")
    assert set(np.unique(corpus.splits["train"].labels)) <= {0, 1}


def test_too_few_training_dialogues_for_a_dev_split(tmp_path):
    path = write_pickle(tmp_path / "meld.pkl", legacy_dict("meld", n_train=9))
    with pytest.raises(ValueError, match="too few to carve a dev split"):
        load_legacy(path, "meld")


ZOO = {
    "matrix": np.arange(6, dtype=np.float32).reshape(2, 3),
    "fortran": np.asfortranarray(np.ones((3, 2))),
    "strings": np.array(["ab", "c"]),
    "scalars": (np.float32(1.5), np.int64(3), 1.0, "a", b"zz", None, True),
    "containers": (collections.OrderedDict(a=[1, 2]), collections.defaultdict(list, k=[1]), {1, 2}, frozenset("x")),
}


def _assert_zoo(out):
    for key in ("matrix", "fortran", "strings"):
        np.testing.assert_array_equal(out[key], ZOO[key])
        assert out[key].dtype == ZOO[key].dtype
    assert out["scalars"] == ZOO["scalars"] and out["containers"] == ZOO["containers"]


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_safe_load_rebuilds_builtins_and_numpy_at_every_protocol(protocol):
    _assert_zoo(safe_load(io.BytesIO(pickle.dumps(ZOO, protocol=protocol))))


def test_safe_load_reads_numpy1_module_names():
    data = pickle.dumps(ZOO, protocol=2)
    assert b"numpy._core.multiarray" in data
    _assert_zoo(safe_load(io.BytesIO(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))))


class _Payload:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_hostile_pickle_is_refused_before_anything_runs(tmp_path):
    data = legacy_dict("meld")
    marker = tmp_path / "pwned"
    data["text"][data["trainVid"][0]][0] = _Payload(f"touch {marker}")
    path = write_pickle(tmp_path / "meld.pkl", data)
    with pytest.raises(UnsafePickleError, match=r"posix\.system|os\.system"):
        load_legacy(path, "meld")
    assert not marker.exists()
    # Control: the payload is live; plain pickle.load would have run it.
    with open(path, "rb") as f:
        pickle.load(f)
    assert marker.exists()


@pytest.mark.parametrize("payload", [
    (eval, ("1 + 1",)),
    (getattr, (np.ndarray, "tofile")),
    (np.load, ("x.npy",)),
    (__import__("codecs").encode, ("text", "rot13")),
])
def test_other_globals_are_refused(tmp_path, payload):
    class Reducer:
        def __reduce__(self):
            return payload

    path = write_pickle(tmp_path / "bad.pkl", {"trainVid": [Reducer()]}, protocol=2)
    with pytest.raises(UnsafePickleError, match="refused"):
        read_legacy(path, "meld")


def _broken(dataset="meld"):
    data = legacy_dict(dataset)
    return data, data["trainVid"][4]


def _assert_load_error(tmp_path, data, *needles, dataset="meld"):
    path = write_pickle(tmp_path / f"{dataset}.pkl", data)
    with pytest.raises(ValueError) as info:
        read_legacy(path, dataset)
    for needle in needles:
        assert needle in str(info.value)


def test_wrong_dim_in_one_utterance(tmp_path):
    data, vid = _broken()
    data["audio"][vid][-1] = np.zeros(3, np.float32)
    _assert_load_error(tmp_path, data, repr(vid), "'audio'", "differ in size")


def test_wrong_dim_in_one_dialogue(tmp_path):
    data, vid = _broken()
    data["visual"][vid] = [np.zeros(9, np.float32) for _ in data["visual"][vid]]
    _assert_load_error(tmp_path, data, repr(vid), "'visual'", "feature dim 9")


def test_ragged_dialogue(tmp_path):
    data, vid = _broken()
    data["text"][vid].append(np.zeros(DIMS["text"], np.float32))
    _assert_load_error(tmp_path, data, repr(vid), "ragged", "'text'")


def test_label_out_of_range(tmp_path):
    data, vid = _broken("iemocap")
    data["label"][vid][0] = 6
    _assert_load_error(tmp_path, data, repr(vid), "'labels'", "out of range", dataset="iemocap")


@pytest.mark.parametrize("field", ["audio", "label", "speakers"])
def test_missing_key_for_one_dialogue(tmp_path, field):
    data, vid = _broken()
    del data[field][vid]
    _assert_load_error(tmp_path, data, repr(vid), repr(field), "missing")


def test_missing_field_and_split_keys(tmp_path):
    data, vid = _broken("mosei")
    del data["label"]["2class"]
    path = write_pickle(tmp_path / "mosei.pkl", data)
    with pytest.raises(ValueError, match=r"label\['2class'\].*missing from the file"):
        read_legacy(path, "mosei", task="2class")
    del data["testVid"]
    _assert_load_error(tmp_path, data, "'testVid'", dataset="mosei")


def test_empty_dialogue_and_bad_speaker(tmp_path):
    data, vid = _broken("iemocap")
    for field in ("audio", "text", "visual", "label", "speaker", "sentence"):
        data[field][vid] = []
    _assert_load_error(tmp_path, data, repr(vid), "empty dialogue", dataset="iemocap")
    data, vid = _broken("iemocap")
    data["speaker"][vid][0] = "X"
    _assert_load_error(tmp_path, data, repr(vid), "'speaker'", "'M' or 'F'", dataset="iemocap")
