"""Mutated legacy pickles, cache folders and the JSON files of a run folder (run.json, metrics.jsonl,
summary.json): each load ends in a ValueError naming the file (or loads a still valid file) quickly,
nothing in the file runs, and no MemoryError or RecursionError hides behind the error (the pre-scan's
and the JSON reader's bounds, not the machine's memory, stop an oversized file)."""

import contextlib
import json
import os
import pickle
import shutil
import signal
import time
import tracemalloc
import zipfile

import numpy as np
import pytest
from fixtures.legacy_data import legacy_dict, write_pickle
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ada2i_fast import train
from ada2i_fast.data import load_corpus
from ada2i_fast.data.cache import cache_path, load_cache
from ada2i_fast.data.legacy import read_legacy
from ada2i_fast.training.run_folder import read_records, read_run, read_run_identity

SECONDS_PER_CASE = 5.0


class _Payload:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory):
    return tmp_path_factory.mktemp("sentinel") / "pwned"


@pytest.fixture(scope="module")
def pieces(sentinel):
    """Valid pickles to mutate and fragments to splice into them."""
    data = legacy_dict("meld")
    hostile = pickle.dumps(_Payload(f"touch {sentinel}"), protocol=2)
    pickle.loads(hostile)  # control: the payload is live
    assert sentinel.exists()
    sentinel.unlink()
    return {
        "originals": {protocol: pickle.dumps(data, protocol=protocol) for protocol in (0, 2, 4, 5)},
        "fragments": [hostile, hostile[2:-1], pickle.dumps({"trainVid": ["x"]}, protocol=2)],
    }


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = write_pickle(tmp_path_factory.mktemp("cache") / "meld.pkl", legacy_dict("meld"))
    load_corpus("meld", path)
    directory = cache_path(path, "meld")
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    return path, directory, {p: p.read_bytes() for p in files}


mutations = st.lists(
    st.tuples(
        st.sampled_from(["flip", "truncate", "insert", "zero", "splice"]),
        st.floats(0, 1),
        st.binary(min_size=1, max_size=8),
        st.integers(0, 2),
    ),
    min_size=1,
    max_size=3,
)


def _mutate(data: bytes, steps, fragments=()) -> bytes:
    for kind, where, payload, fragment in steps:
        at = int(where * max(len(data) - 1, 0))
        if kind == "flip":
            data = data[:at] + bytes([data[at] ^ payload[0]]) + data[at + 1:] if data else data
        elif kind == "truncate":
            data = data[:at]
        elif kind == "insert":
            data = data[:at] + payload + data[at:]
        elif kind == "zero":
            data = data[:at] + bytes(len(payload)) + data[at + len(payload):]
        elif fragments:
            data = data[:at] + fragments[fragment] + data[at:]
    return data


@contextlib.contextmanager
def _time_limit(seconds: float):
    def expire(*_):
        raise TimeoutError(f"a load ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    start = time.perf_counter()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.perf_counter() - start < seconds


def _assert_named_error(error: ValueError, name) -> None:
    assert str(name) in str(error)
    assert not isinstance(error.__cause__, (MemoryError, RecursionError)), error.__cause__


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(protocol=st.sampled_from([0, 2, 4, 5]), steps=mutations)
def test_a_mutated_legacy_pickle_loads_or_gets_a_named_error(tmp_path_factory, pieces, sentinel, protocol, steps):
    path = tmp_path_factory.mktemp("fuzz") / "meld.pkl"
    path.write_bytes(_mutate(pieces["originals"][protocol], steps, pieces["fragments"]))
    with _time_limit(SECONDS_PER_CASE):
        try:
            corpus = read_legacy(path, "meld")
            assert corpus.splits["train"].num_dialogues >= 1
        except ValueError as error:
            _assert_named_error(error, path)
    assert not sentinel.exists()


@pytest.mark.filterwarnings("ignore")  # numpy's notes on a mangled .npy header are not the point here
@settings(max_examples=100, deadline=None)
@given(which=st.integers(0, 100), steps=mutations)
def test_a_mutated_cache_loads_or_gets_a_named_error(cache, which, steps):
    path, directory, originals = cache
    target = sorted(originals)[which % len(originals)]
    target.write_bytes(_mutate(originals[target], steps))
    try:
        for source in (directory, path):
            with _time_limit(SECONDS_PER_CASE):
                try:
                    load_corpus("meld", source)
                except ValueError as error:
                    _assert_named_error(error, directory)
    finally:
        for file, data in originals.items():
            file.write_bytes(data)
    load_cache(directory)  # restored: the next case starts from a valid cache


def _npz_with_a_lying_member(path, shape, payload_bytes):
    """An .npz whose features.npy declares float32 ``shape`` and unpacks to ``payload_bytes`` zeros after
    its header (streamed: the bomb is written without ever being in memory), plus a valid key and sha256."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("features.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False, "shape": shape})
            chunk = bytes(1 << 24)
            for start in range(0, payload_bytes, len(chunk)):
                member.write(chunk[:payload_bytes - start])
        for name, value in (("key", "k" * 32), ("sha256", "0" * 64)):
            with archive.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array(member, np.array(value))
    return path


def test_a_feature_cache_bomb_is_refused_before_it_is_decompressed(tmp_path):
    """A 1 MB cache entry unpacking to 2^28 zeros was decompressed (1 GiB) before its shape was checked;
    a small member whose header claims 2^28 values allocated them before the read failed."""
    from ada2i_fast.data.conversations import AudioError, _read_cached, cached_file

    bomb = _npz_with_a_lying_member(cached_file(tmp_path, "k" * 32), (1 << 28,), 4 << 28)
    liar = _npz_with_a_lying_member(cached_file(tmp_path, "l" * 32), (1 << 28,), 88 * 4)
    assert bomb.stat().st_size < 2 << 20
    tracemalloc.start()
    try:
        with pytest.raises(AudioError, match=rf"damaged feature cache file {bomb} \(features\.npy unpacks to "
                                             r"1073741952 bytes, more than the 4448 of a float32\[88\]\)"):
            _read_cached(tmp_path, "k" * 32, 88)
        with pytest.raises(AudioError, match=rf"damaged feature cache file {liar} \(features\.npy holds "
                                             r"float32\[268435456\], not float32\[88\]\)"):
            _read_cached(tmp_path, "l" * 32, 88)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak / 2**20:.0f} MiB allocated"


# --- the JSON files of a run folder ------------------------------------------------------------------

RUN_JSON = ("run.json", "metrics.jsonl", "summary.json")


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    train.main(["--dataset", "meld", "--size", "0.03", "--hidden", "8", "--rank", "2", "--ffn-dim", "8",
                "--encoder-nlayers", "1", "--epochs", "2", "--quiet", "--out", str(out)])
    return out, {name: (out / name).read_bytes() for name in RUN_JSON}


def _read_back(out) -> None:
    """What resume, report and analyze read of a run folder's JSON files."""
    read_run_identity(out)
    read_records(out / "metrics.jsonl")
    read_run(out)


def _reads_back_or_names_the_file(out, name) -> None:
    with _time_limit(SECONDS_PER_CASE):
        try:
            _read_back(out)
        except ValueError as error:
            _assert_named_error(error, out / name)
            assert "\n" not in str(error)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(RUN_JSON), steps=mutations)
def test_a_mutated_run_json_file_reads_back_or_gets_a_named_error(run_folder, name, steps):
    out, originals = run_folder
    (out / name).write_bytes(_mutate(originals[name], steps))
    try:
        _reads_back_or_names_the_file(out, name)
    finally:
        (out / name).write_bytes(originals[name])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=6),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=6,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(RUN_JSON), key=st.sampled_from(["run_id", "epoch", "best_epoch", "classes", "test",
                                                            "train_config", "best_dev_weighted_f1"]),
       value=json_values)
def test_a_run_json_file_with_any_value_reads_back_or_gets_a_named_error(run_folder, name, key, value):
    out, originals = run_folder
    text = originals[name].decode()
    records = [json.loads(line) for line in text.splitlines()] if name.endswith(".jsonl") else [json.loads(text)]
    records[0][key] = value
    (out / name).write_text("".join(json.dumps(record) + "\n" for record in records))
    try:
        _reads_back_or_names_the_file(out, name)
    finally:
        (out / name).write_bytes(originals[name])


BOMBS = {"deep": "[" * 100_000 + "]" * 100_000, "nested 40": '{"a": ' * 40 + "1" + "}" * 40,
         "size": " " * (17 * 2**20) + "{}", "1e400": '{"epoch": 1e400}', "NaN": '{"epoch": NaN}',
         "digits": '{"epoch": ' + "9" * 5000 + "}"}


@pytest.mark.parametrize("name", RUN_JSON)
@pytest.mark.parametrize("bomb", list(BOMBS))
def test_a_bomb_in_a_run_json_file_is_one_named_error(run_folder, tmp_path, name, bomb):
    out = tmp_path / "run"
    shutil.copytree(run_folder[0], out)
    text = BOMBS[bomb] * (2**6 if name == "metrics.jsonl" and bomb == "size" else 1)  # .jsonl may be larger
    (out / name).write_text(text)
    with _time_limit(SECONDS_PER_CASE), pytest.raises(ValueError) as refused:
        _read_back(out)
    _assert_named_error(refused.value, out / name)
