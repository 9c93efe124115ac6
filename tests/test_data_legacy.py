import collections
import io
import os
import pickle
import random
import re
import struct
import time

import numpy as np
import pytest
from fixtures.legacy_data import DIMS, labels_of, legacy_dict, write_pickle

from ada2i_fast.data import LegacyDataError, PickleLoadError, UnsafePickleError, legacy
from ada2i_fast.data.legacy import load_legacy, read_legacy
from ada2i_fast.data.pickle_scan import check_pickle
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


# --- Hostile and malformed files: each ends quickly in a PickleLoadError naming the file. ---


def _billion_laughs(levels=9, width=10) -> bytes:
    """A list holding `width` references to a list holding `width` references to ... (10**9 leaves)."""
    body = bytearray(b"]q\x00")
    for level in range(levels):
        body += b"(" + (b"h" + bytes([level])) * width + b"lq" + bytes([level + 1])
    return bytes(body)


def _hostile_file(tmp_path, data: bytes):
    path = tmp_path / "meld.pkl"
    path.write_bytes(data)
    return path


def _refused(path, *needles, error=PickleLoadError, seconds=5.0):
    start = time.perf_counter()
    with pytest.raises(error) as info:
        read_legacy(path, "meld")
    assert time.perf_counter() - start < seconds
    message = str(info.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message
    assert not isinstance(info.value.__cause__, (MemoryError, RecursionError))
    return message


def test_billion_laughs_dialogue_id_is_refused_quickly(tmp_path):
    # {"trainVid": [<10**9-leaf list>], "testVid": [...]}: str() of that id is what used to hang.
    laughs = _billion_laughs()
    data = b"\x80\x02}q\xf0(X\x08\x00\x00\x00trainVid" + laughs + b"\x85X\x07\x00\x00\x00testVidh\x09\x85u."
    _refused(_hostile_file(tmp_path, data), "expands to more than")


def test_billion_laughs_dict_key_is_refused_before_hashing(tmp_path):
    # Tuples are hashable: as a dict key the unpickler itself would hash all 10**30 leaves.
    body = bytearray(b")q\x00")
    for level in range(30):
        body += b"(" + (b"h" + bytes([level])) * 10 + b"tq" + bytes([level + 1])
    data = b"\x80\x02}q\xf0" + bytes(body) + b"K\x01s."
    _refused(_hostile_file(tmp_path, data), "expands to more than")


def test_a_container_grown_after_it_was_stored_cannot_hide_its_size(tmp_path):
    data = bytearray(b"\x80\x02]q\x00]q\x01h\x00a0h\x00(" + b"K\x01" * 1000 + b"e0h\x01q\x02")
    for level in range(2, 8):
        data += b"(" + (b"h" + bytes([level])) * 10 + b"lq" + bytes([level + 1])
    _refused(_hostile_file(tmp_path, bytes(data) + b"."), "grew after it was stored")


@pytest.mark.parametrize("data,needle", [
    (b"\x80\x04\x8e" + struct.pack("<Q", 2**32), "BINBYTES8 declares 4294967296 bytes"),  # 11 bytes
    (b"\x80\x04X\xff\xff\xff\xffabc.", "BINUNICODE declares 4294967295 bytes"),
    (b"\x80\x04Nr\xff\xff\xff\xff.", "memo slot 4294967295"),  # the unpickler would size its memo to 2**33
    (b"\x80\x04\x95" + struct.pack("<Q", 2**40) + b"N.", "FRAME declares"),
])
def test_small_file_declaring_a_huge_object_is_refused_before_allocation(tmp_path, data, needle):
    _refused(_hostile_file(tmp_path, data), needle)


@pytest.mark.parametrize("data", [
    b"\x80\x02" + b"]" * 100_000 + b"a" * 99_999 + b".",  # lists
    b"\x80\x02)" + b"\x85" * 100_000 + b".",  # tuples
    b"\x80\x02" + b"(" * 100_000 + b"t" * 100_000 + b".",  # marks
])
def test_deep_nesting_is_refused(tmp_path, data):
    _refused(_hostile_file(tmp_path, data), "nested more than 100 deep")


@pytest.mark.parametrize("data,needle", [
    (b"", "empty file"),
    (pickle.dumps(legacy_dict("meld"), protocol=4)[:-7], "not a readable data pickle"),
    (pickle.dumps(legacy_dict("meld"), protocol=2)[:1000], "truncated"),
    (bytes(random.Random(0).getrandbits(8) for _ in range(4096)), "not a readable data pickle"),
    (pickle.dumps({"a": 1}, protocol=2) + b"junk", "bytes after the end of the pickle"),
    (b"\x80\x09N.", "protocol 9"),
])
def test_corrupt_files_get_a_clear_error(tmp_path, data, needle):
    _refused(_hostile_file(tmp_path, data), needle)


@pytest.mark.parametrize("data,needle", [
    (b"Pabc\n.", "PERSID"),
    (b"\x80\x02X\x01\x00\x00\x00aQ.", "BINPERSID"),
    (b"\x80\x02\x82\x01.", "EXT1"),
    (b"\x80\x02cbuiltins\ndict\n)\x81.", "NEWOBJ"),
])
def test_refused_opcodes(tmp_path, data, needle):
    _refused(_hostile_file(tmp_path, data), needle, error=UnsafePickleError)


def _numpy_state_pickle(array, old: bytes, new: bytes) -> bytes:
    data = pickle.dumps(array, protocol=2)
    assert old in data
    return data.replace(old, new)


@pytest.mark.parametrize("data,needle", [
    # An object array whose shape claims more objects than its state lists: numpy's own
    # __setstate__ segfaults on this (206 bytes).
    (_numpy_state_pickle(np.array([1, "x", None], dtype=object), b"K\x01K\x03\x85", b"K\x01K\x09\x85"),
     "does not list 9 objects"),
    (_numpy_state_pickle(np.array([1, "x", None], dtype=object), b"K\x01K\x03\x85", b"K\x01J\x00\xca\x9a\x3b\x85"),
     "does not list 1000000000 objects"),
    # A void dtype whose pickled flags claim it holds objects, with a list as its data: also a segfault.
    (_numpy_state_pickle(np.zeros(2, dtype="V8"), b"K\x08K\x01K\x00t", b"K\x08K\x01K?t")
     .replace(b"\x89h\x03X\x10\x00\x00\x00" + bytes(16) + b"q\x11h\x05\x86q\x12Rq\x13t", b"\x89]K\x01at"),
     "whose data is not 16 bytes"),
    (b"\x80\x02c__builtin__\nbytes\n\x8a\x05\x00\xe4\x0bT\x02\x85R.", "refused bytes(10000000000)"),
    (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n\x8a\x05\x00\xe4\x0bT\x02\x85C\x01b\x87R.",
     "refused numpy _reconstruct of a int8[10000000000] array"),
    (b"\x80\x02cnumpy\nndarray\nK\x05\x85\x85R.", "not callable"),
    (b"\x80\x02cnumpy\ndtype\nc__builtin__\ndict\n\x85R.", "named by a string"),
])
def test_numpy_states_are_checked_before_numpy_sees_them(tmp_path, data, needle):
    _refused(_hostile_file(tmp_path, data), needle)


def test_a_pickled_dtype_cannot_edit_numpys_shared_dtype():
    # np.dtype("f4", copy=False) is numpy's float32 singleton; a BUILD on it would change every float32.
    data = (b"\x80\x02cnumpy\ndtype\nX\x02\x00\x00\x00f4\x89\x89\x87R"
            b"(K\x03X\x01\x00\x00\x00>NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb.")
    loaded = safe_load(io.BytesIO(data))
    assert loaded.byteorder == ">" and np.dtype("f4").byteorder == "="


def test_realistic_pickle_passes_the_limits(tmp_path):
    data = legacy_dict("meld", n_train=200, n_test=50)
    for vid in data["trainVid"][:20]:  # shared vectors (a common zero fill) are fine
        data["visual"][vid] = [data["visual"][data["trainVid"][0]][0]] * len(data["visual"][vid])
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        path = write_pickle(tmp_path / f"meld{protocol}.pkl", data, protocol)
        check_pickle(path.read_bytes())
        assert read_legacy(path, "meld").splits["train"].num_dialogues == 200


# --- Content that used to be accepted silently. ---


def test_duplicate_dialogue_id_within_a_split(tmp_path):
    data, vid = _broken()
    data["trainVid"].append(vid)
    _assert_load_error(tmp_path, data, "split 'train'", "'trainVid'", f"dialogue id {vid!r} appears twice")


def test_dialogue_in_train_and_test(tmp_path):
    data, vid = _broken()
    data["testVid"].append(vid)
    _assert_load_error(tmp_path, data, repr(vid), "split 'train' (trainVid)", "split 'test' (testVid)", "leaks")


def test_mosei_dev_overlapping_test(tmp_path):
    data = legacy_dict("mosei")
    data["testVid"].append(data["valVid"][0])
    _assert_load_error(tmp_path, data, repr(data["valVid"][0]), "split 'dev'", "split 'test'", dataset="mosei")


def test_int_ids_become_strings_and_may_not_collide_with_string_ids(tmp_path):
    data = legacy_dict("meld")
    renamed = {vid: i for i, vid in enumerate(data["trainVid"] + data["testVid"])}
    for key in ("trainVid", "testVid"):
        data[key] = [renamed[vid] for vid in data[key]]
    for field in ("label", "speakers", "text", "audio", "visual", "sentence"):
        data[field] = {renamed[vid]: values for vid, values in data[field].items()}
    corpus = read_legacy(write_pickle(tmp_path / "meld.pkl", data), "meld")
    assert corpus.splits["test"].dialogue_ids == tuple(str(i) for i in data["testVid"])
    data["testVid"].append(str(data["trainVid"][0]))
    _assert_load_error(tmp_path, data, "dialogue id '0'", "leaks")


@pytest.mark.parametrize("bad_id,needle", [
    (1.5, "is a float"),
    (True, "is a bool"),
    (("a", "b"), "is a tuple"),
    (b"bytes", "is a bytes"),
    ("x" * 1000, "1000 characters long"),
    (2**70, "outside the 64-bit range"),
])
def test_dialogue_ids_must_be_strings_or_ints(tmp_path, bad_id, needle):
    data, _ = _broken()
    data["trainVid"][3] = bad_id
    _assert_load_error(tmp_path, data, "split 'train'", "dialogue id #3", needle)


def test_id_list_must_be_a_list(tmp_path):
    data, _ = _broken()
    data["testVid"] = "test_00"
    _assert_load_error(tmp_path, data, "'testVid'", "expected a list of dialogue ids, got str")


@pytest.mark.parametrize("labels", [
    lambda n: [True] + [1] * (n - 1),
    lambda n: np.ones(n, dtype=bool),
])
def test_bool_labels_are_refused(tmp_path, labels):
    data, vid = _broken()
    data["label"][vid] = labels(len(data["label"][vid]))
    _assert_load_error(tmp_path, data, repr(vid), "'label'", "booleans")


@pytest.mark.parametrize("labels,needle", [
    (lambda n: ["1"] * n, "one integer label"),
    (lambda n: [1.5] * n, "one integer label"),
    (lambda n: [float("inf")] * n, "one integer label"),
])
def test_non_integer_labels_are_refused(tmp_path, labels, needle):
    data, vid = _broken()
    data["label"][vid] = labels(len(data["label"][vid]))
    _assert_load_error(tmp_path, data, repr(vid), "'label'", needle)


def test_integral_float_labels_still_load(tmp_path):
    data, vid = _broken()
    data["label"][vid] = [float(y) for y in data["label"][vid]]
    corpus = read_legacy(write_pickle(tmp_path / "meld.pkl", data), "meld")
    assert corpus.splits["train"].labels.dtype == np.int64


@pytest.mark.parametrize("vectors,needle", [
    (lambda v: [[str(x) for x in row] for row in v], "strings"),
    (lambda v: [np.ones(len(row), dtype=bool) for row in v], "booleans"),
    (lambda v: [np.array([None] * len(row)) for row in v], "Python objects"),
    (lambda v: [[complex(x) for x in row] for row in v], "complex"),
])
def test_features_must_be_numbers(tmp_path, vectors, needle):
    data, vid = _broken()
    data["text"][vid] = vectors(data["text"][vid])
    _assert_load_error(tmp_path, data, repr(vid), "'text'", "features must be numbers", needle)


def test_bool_speakers_and_unhashable_iemocap_speakers(tmp_path):
    data, vid = _broken()
    data["speakers"][vid][0] = True
    _assert_load_error(tmp_path, data, repr(vid), "'speakers'", "booleans")
    data, vid = _broken("iemocap")
    data["speaker"][vid][0] = ["M"]
    _assert_load_error(tmp_path, data, repr(vid), "'speaker'", "'M' or 'F'", "['M']", dataset="iemocap")


def test_sanity_limits(tmp_path, monkeypatch):
    data, vid = _broken()
    monkeypatch.setattr(legacy, "MAX_UTTERANCES_PER_DIALOGUE", 3)
    first_long = next(v for v in data["trainVid"] if len(data["label"][v]) > 3)
    _assert_load_error(tmp_path, data, repr(first_long), f"{len(data['label'][first_long])} utterances (at most 3)")
    monkeypatch.setattr(legacy, "MAX_FEATURE_DIM", 5)
    monkeypatch.setattr(legacy, "MAX_UTTERANCES_PER_DIALOGUE", 100)
    _assert_load_error(tmp_path, data, "'text'", "1 to 5 numbers")
    monkeypatch.setattr(legacy, "MAX_DIALOGUES_PER_SPLIT", 10)
    _assert_load_error(tmp_path, data, "'trainVid'", "12 dialogue ids; expected 1 to 10")


def test_every_content_error_names_the_file(tmp_path):
    data, vid = _broken()
    data["label"][vid] = "not a list"
    path = write_pickle(tmp_path / "meld.pkl", data)
    with pytest.raises(LegacyDataError, match=re.escape(str(path))):
        read_legacy(path, "meld")


def test_loaded_arrays_are_plain_ndarrays_wherever_they_sit():
    shared = np.arange(4.0)
    obj = {
        "list": [shared, shared],
        "tuple": (np.ones(2), [np.zeros(1)]),
        "objects": np.array([np.ones(3), "x", None], dtype=object),
    }
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        out = safe_load(io.BytesIO(pickle.dumps(obj, protocol=protocol)))
        arrays = [*out["list"], out["tuple"][0], out["tuple"][1][0], out["objects"], out["objects"][0]]
        assert all(type(a) is np.ndarray for a in arrays)
        np.testing.assert_array_equal(out["list"][1], shared)
        assert out["objects"][1:].tolist() == ["x", None]


def test_safe_load_reads_a_python2_numpy_pickle():
    # What Python 2's cPickle writes for np.arange(3.0): py2 str opcodes for the typecode and the data.
    data = (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\nq\x02K\x00\x85U\x01b\x87Rq\x03"
            b"(K\x01K\x03\x85cnumpy\ndtype\nq\x04U\x02f8K\x00K\x01\x87Rq\x05(K\x03U\x01<NNNJ\xff\xff\xff\xff"
            b"J\xff\xff\xff\xffK\x00tb\x89U\x18" + np.arange(3.0).tobytes() + b"tb.")
    out = safe_load(io.BytesIO(data))
    assert type(out) is np.ndarray and out.dtype == np.float64
    np.testing.assert_array_equal(out, [0.0, 1.0, 2.0])
