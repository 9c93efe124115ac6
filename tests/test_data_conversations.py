"""The conversation corpus builder: audio features that carry what the text does not, the feature
cache surviving an interruption, a local sentence-transformers model, and bad audio."""

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

opensmile = pytest.importorskip("opensmile")
soundfile = pytest.importorskip("soundfile")

from ada2i_fast import train  # noqa: E402
from ada2i_fast.data import load_corpus  # noqa: E402
from ada2i_fast.data import conversations  # noqa: E402
from ada2i_fast.data.conversations import AudioError, build_conversation_corpus, main  # noqa: E402
from fixtures.conversations import (  # noqa: E402
    CLASSES, RATE, SENTENCES, TINY, read_csv, speech_like, tiny_sentence_model, write_conversations, write_csv,
    write_meld_clips,
)


def _build(folder, **options):
    options = dict(audio_column="audio", text_dim=4, feature_cache=folder / "features", workers=1) | options
    return build_conversation_corpus(folder, "generic", **options)


@pytest.fixture
def small(tmp_path):
    return write_conversations(tmp_path / "small", {"train": (4, 3), "dev": (2, 3), "test": (2, 3)})


def test_audio_carries_the_label_that_the_text_does_not(tmp_path, capsys):
    data = write_conversations(tmp_path / "data", {"train": (30, 4), "dev": (8, 4), "test": (12, 4)})
    out = tmp_path / "corpus"
    main(["--csv-dir", str(data), "--layout", "generic", "--audio-column", "audio", "--text-dim", "8",
          "--workers", "2", "--out", str(out)])
    assert "train with --data" in capsys.readouterr().out
    corpus = load_corpus("meld", out)
    assert corpus.classes == CLASSES and corpus.dims == {"a": 88, "t": 8}
    train_audio = corpus.splits["train"].features["a"]
    np.testing.assert_allclose(train_audio.mean(axis=0), 0, atol=1e-4)  # standardised with the train split
    source = json.loads((out / "manifest.json").read_text())["source"]
    assert source["audio"]["feature_set"] == "eGeMAPSv02" and source["audio"]["extractor"] == "openSMILE"
    assert source["audio"]["versions"]["opensmile"] == opensmile.__version__ and source["skipped"] == []

    scores = {}
    for modalities in ("ta", "t"):
        summary = train.main(["--dataset", "meld", "--data", str(out), "--modalities", modalities, "--epochs", "12",
                              "--out", str(tmp_path / modalities), *TINY])
        scores[modalities] = summary["test"]["weighted_f1"]
    print(f"weighted F1: text+audio {scores['ta']:.3f}, text {scores['t']:.3f}")
    assert scores["ta"] > scores["t"] + 0.4  # measured: 0.958 against 0.303


def test_a_rebuild_after_an_interruption_extracts_only_what_is_missing(small, monkeypatch):
    extracted = []
    real = conversations.extract_one

    def interrupted_after_five(path, *args):
        if len(extracted) == 5:
            raise KeyboardInterrupt
        extracted.append(path)
        return real(path, *args)

    monkeypatch.setattr(conversations, "extract_one", interrupted_after_five)
    with pytest.raises(KeyboardInterrupt):
        _build(small)
    assert len(list((small / "features").glob("*.npz"))) == 5

    monkeypatch.setattr(conversations, "extract_one", lambda path, *args: extracted.append(path) or real(path, *args))
    first = _build(small).corpus
    assert len(extracted) == 24 and len(set(extracted)) == 24  # the 5 cached ones are not among the last 19

    extracted.clear()
    again = _build(small).corpus
    assert extracted == []
    np.testing.assert_array_equal(again.splits["test"].features["a"], first.splits["test"].features["a"])


def test_the_extraction_bar_counts_each_file_as_it_finishes(small, monkeypatch):
    """The first file finishes last: the bar has counted every other file before it does (a pool's
    ordered map counts none until the first is done)."""
    paths = sorted((small / "audio").glob("*.wav"))[:4]
    others_counted = threading.Event()

    class Bar(conversations.tqdm):
        def update(self, n=1):
            super().update(n)
            if self.n == len(paths) - 1:
                others_counted.set()

    def extract(path, key, feature_set, cache_dir):
        if path == paths[0]:
            return "after the others were counted" if others_counted.wait(timeout=10) else "counted in order"
        return None

    monkeypatch.setattr(conversations, "ProcessPoolExecutor", ThreadPoolExecutor)
    monkeypatch.setattr(conversations, "extract_one", extract)
    monkeypatch.setattr(conversations, "tqdm", Bar)
    results = conversations._run_extraction(paths, ["key"] * 4, "eGeMAPSv02", small / "cache", workers=4)
    assert results == ["after the others were counted", None, None, None]


def test_a_damaged_or_edited_cache_file_is_one_error_naming_it(small):
    _build(small)
    first, second = sorted((small / "features").glob("*.npz"))[:2]
    first.write_bytes(first.read_bytes()[:40])
    with pytest.raises(AudioError, match=rf"damaged feature cache file {first} .*delete it and build again"):
        _build(small)
    first.unlink()
    with np.load(second) as saved:
        vector, key, digest = saved["features"], saved["key"], saved["sha256"]
    np.savez(second, features=vector + 1, key=key, sha256=digest)
    with pytest.raises(AudioError, match=rf"feature cache file {second} differs from the checksum written with it"):
        _build(small)


def test_two_swapped_cache_files_are_refused_not_read_as_each_others_audio(small):
    """Each vector's checksum was fine, so two swapped entries gave two utterances each other's audio."""
    _build(small)
    first, second = sorted((small / "features").glob("*.npz"))[:2]
    swap = small / "swap"
    first.rename(swap)
    second.rename(first)
    swap.rename(second)
    with pytest.raises(AudioError, match=rf"feature cache file ({first}|{second}) holds the features of another "
                                         r"file or feature set .*swapped.*delete it and build again"):
        _build(small)


def test_visual_vectors_are_read_per_utterance_and_standardised_with_train(small):
    rng = np.random.default_rng(0)
    for split in ("train", "dev", "test"):
        rows = read_csv(small / f"{split}.csv")
        for i, row in enumerate(rows):
            row["face"] = f"audio/{split}_{i}.npy"
            np.save(small / row["face"], rng.normal(5.0, 2.0, size=(1, 6)))
        write_csv(small / f"{split}.csv", rows)
    built = _build(small, visual_column="face")
    assert built.corpus.dims == {"a": 88, "t": 4, "v": 6}
    np.testing.assert_allclose(built.corpus.splits["train"].features["v"].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(built.corpus.splits["train"].features["v"].std(axis=0), 1, atol=1e-4)
    np.save(small / "audio" / "test_2.npy", np.zeros(5))
    with pytest.raises(ValueError, match=r"visual features .*test_2\.npy: dim 5, the first vector has 6"):
        _build(small, visual_column="face")


def test_a_local_sentence_transformers_model_gives_the_text_features(small, tmp_path, monkeypatch):
    pytest.importorskip("sentence_transformers")
    model = tiny_sentence_model(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a download attempt fails instead of reaching the network
    built = _build(small, text_model=model)
    train_split = built.corpus.splits["train"]
    assert built.corpus.dims == {"a": 88, "t": 12}
    texts = [row["text"] for row in read_csv(small / "train.csv")]  # corpus order is file order here
    first = texts.index(texts[0], 1)  # a later utterance with the same sentence gets the same embedding
    np.testing.assert_allclose(train_split.features["t"][first], train_split.features["t"][0], rtol=1e-5)
    assert built.source["text"]["extractor"] == "sentence-transformers"
    with pytest.raises(ValueError, match="--text-model .*nowhere: no such folder"):
        _build(small, text_model=tmp_path / "nowhere")


def _replace_audio(folder, row, name, samples=None, raw=None):
    """Point train row ``row`` at audio file ``name``, written from ``samples`` (or bytes ``raw``)."""
    rows = read_csv(folder / "train.csv")
    rows[row]["audio"] = f"audio/{name}"
    write_csv(folder / "train.csv", rows)
    if samples is not None:
        soundfile.write(folder / "audio" / name, samples, RATE)
    elif raw is not None:
        (folder / "audio" / name).write_bytes(raw)


def test_missing_and_unreadable_audio_are_one_error_naming_the_file(small):
    _replace_audio(small, 2, "gone.wav")
    with pytest.raises(AudioError, match=r"missing audio file .*audio/gone\.wav"):
        _build(small)
    _replace_audio(small, 2, "garbage.wav", raw=b"RIFF not really a wave file")
    with pytest.raises(AudioError, match=r"unreadable audio file .*audio/garbage\.wav"):
        _build(small)
    rows = read_csv(small / "dev.csv")
    rows[1]["audio"] = ""
    write_csv(small / "dev.csv", rows)
    with pytest.raises(ValueError, match=r"dev\.csv, line 3: empty 'audio'"):
        _build(small)


def test_silent_and_too_short_audio_stop_the_build_or_are_skipped_and_listed(small, capsys):
    _replace_audio(small, 0, "silent.wav", np.zeros(RATE // 2, np.float32))
    _replace_audio(small, 4, "short.wav", speech_like("happy", np.random.default_rng(0), seconds=0.05))
    with pytest.raises(AudioError, match=r"2 utterance\(s\) have unusable audio: .*silent\.wav \(silent .*"
                                         r"short\.wav \(too short \(0\.050 s < 0\.1 s\)\).*--skip-bad-audio"):
        _build(small)
    out = small / "corpus"
    main(["--csv-dir", str(small), "--layout", "generic", "--audio-column", "audio", "--text-dim", "4",
          "--workers", "1", "--skip-bad-audio", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "skipped train line 2:" in printed and "silent.wav (silent" in printed and "2 skipped" in printed
    skipped = json.loads((out / "manifest.json").read_text())["source"]["skipped"]
    assert [(s["split"], s["csv_line"], s["reason"].split()[0]) for s in skipped] == [
        ("train", 2, "silent"), ("train", 6, "too")]
    assert load_corpus("meld", out).splits["train"].num_utterances == 12 - 2


def test_non_finite_and_absurdly_loud_audio_are_skipped_with_their_reason_like_silence(small, capsys):
    """NaN passed the silence check (NaN < 1e-4 is false) and became one finite feature vector."""
    loud = speech_like("calm", np.random.default_rng(0)) * 1e30
    for row, name, samples in ((0, "nan.wav", np.full(8000, np.nan, np.float32)),
                               (3, "inf.wav", np.full(8000, np.inf, np.float32)), (5, "loud.wav", loud)):
        _replace_audio(small, row, name)
        soundfile.write(small / "audio" / name, samples, RATE, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"3 utterance\(s\) have unusable audio: .*nan\.wav \(non-finite samples "
                                         r"\(8000 of 8000 NaN or infinite\)\).*inf\.wav \(non-finite.*loud\.wav "
                                         r"\(absurd amplitude \(peak 4\.2e\+28 > 1e\+03\)\)"):
        _build(small)
    out = small / "corpus"
    main(["--csv-dir", str(small), "--layout", "generic", "--audio-column", "audio", "--text-dim", "4",
          "--workers", "1", "--skip-bad-audio", "--out", str(out)])
    assert "3 skipped" in capsys.readouterr().out
    skipped = json.loads((out / "manifest.json").read_text())["source"]["skipped"]
    assert [(s["csv_line"], s["reason"].split()[0]) for s in skipped] == [(2, "non-finite"), (5, "non-finite"),
                                                                         (7, "absurd")]
    assert np.isfinite(load_corpus("meld", out).splits["train"].features["a"]).all()


def _build_in_a_process(folder, *flags, seconds=90):
    """The builder's command on ``folder``, in a process killed after ``seconds`` (a hang fails the test)."""
    command = [sys.executable, "-m", "ada2i_fast.data.conversations", "--csv-dir", str(folder), "--layout", "generic",
               "--audio-column", "audio", "--text-dim", "4", "--workers", "1", "--out", str(folder / "corpus"), *flags]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=seconds, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the build did not end in {seconds} s")


def test_special_files_as_audio_are_refused_before_anything_reads_them(small):
    """The cache key hashed the whole file before anything checked it was one: a FIFO (or /dev/zero,
    /dev/urandom) as audio hung the build."""
    os.mkfifo(small / "audio" / "x.wav")
    _replace_audio(small, 1, "x.wav")
    done = _build_in_a_process(small)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (f"error: audio file {small / 'audio' / 'x.wav'} is not a regular "
                                                    "file (a device, FIFO, socket or folder); name a file")
    for device in ("/dev/zero", "/dev/urandom"):
        with pytest.raises(AudioError, match=rf"^audio file {device} is not a regular file"):
            conversations.cache_key(conversations.Path(device), "eGeMAPSv02")
        with pytest.raises(AudioError, match=rf"^audio file {device} is not a regular file"):
            conversations.read_audio(conversations.Path(device))


def test_audio_and_visual_paths_stay_inside_the_csv_dir_unless_a_flag_allows_more(small, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    soundfile.write(elsewhere / "clip.wav", speech_like("calm", np.random.default_rng(0)), RATE)
    (small / "audio" / "link.wav").symlink_to(elsewhere / "clip.wav")
    own = read_csv(small / "train.csv")[2]["audio"]
    for name in (str(elsewhere / "clip.wav"), "../elsewhere/clip.wav", "audio/../../elsewhere/clip.wav",
                 "audio/link.wav", "/dev/zero"):
        rows = read_csv(small / "train.csv")
        rows[2]["audio"] = name
        write_csv(small / "train.csv", rows)
        with pytest.raises(ValueError, match=r"train\.csv, line 4: 'audio' names .*, outside --csv-dir .*(paths are "
                                             r"relative to it.*); pass --allow-paths-outside-csv-dir to read files"):
            _build(small)
    rows[2]["audio"] = "../elsewhere/clip.wav"
    write_csv(small / "train.csv", rows)
    assert _build(small, paths_outside_csv_dir=True).corpus.splits["train"].num_utterances == 12
    rows[2]["audio"] = own  # inside again: the refusal below is the visual file's
    write_csv(small / "train.csv", rows)
    for split in ("train", "dev", "test"):
        rows = read_csv(small / f"{split}.csv")
        for row in rows:
            row["face"] = "../elsewhere/face.npy"
        write_csv(small / f"{split}.csv", rows)
    np.save(elsewhere / "face.npy", np.ones(3))
    with pytest.raises(ValueError, match=r"'face' names .*, outside --csv-dir"):
        _build(small, visual_column="face")
    assert "--allow-paths-outside-csv-dir" in conversations.build_parser().format_help()


def test_other_containers_need_ffmpeg_and_low_rates_are_refused(small, monkeypatch):
    monkeypatch.setattr(conversations.shutil, "which", lambda name: None)
    _replace_audio(small, 1, "clip.mp4", raw=b"\x00\x00\x00\x18ftypmp42")
    with pytest.raises(AudioError, match=r"clip\.mp4: a \.mp4 file is read through ffmpeg, which is not on PATH"):
        _build(small)
    _replace_audio(small, 1, "phone.wav")
    soundfile.write(small / "audio" / "phone.wav", np.random.default_rng(0).standard_normal(2000) * 0.1, 4000)
    with pytest.raises(AudioError, match=r"phone\.wav: sample rate 4000 Hz, under the 8000 Hz"):
        _build(small)
    rng = np.random.default_rng(1)
    high = np.interp(np.arange(int(0.4 * 44_100)) / 44_100, np.arange(6400) / RATE, speech_like("calm", rng))
    soundfile.write(small / "audio" / "phone.wav", high, 44_100)
    assert _build(small).corpus.splits["train"].num_utterances == 12  # resampled to 16 kHz


def test_meld_layout_finds_the_raw_clips_by_dialogue_and_utterance(tmp_path):
    write_meld_clips(tmp_path)
    built = build_conversation_corpus(tmp_path, "meld", audio_dir=tmp_path / "clips", text_dim=2,
                                      feature_cache=tmp_path / "features", workers=1)
    assert built.corpus.splits["dev"].dialogue_ids == ("dev_0", "dev_3")
    (tmp_path / "clips" / "test" / "dia3_utt0.wav").unlink()
    with pytest.raises(AudioError, match=r"missing audio file .*clips/test/dia3_utt0\.wav"):
        build_conversation_corpus(tmp_path, "meld", audio_dir=tmp_path / "clips", text_dim=2,
                                  feature_cache=tmp_path / "features", workers=1)
    (tmp_path / "elsewhere.wav").write_bytes((tmp_path / "clips" / "test" / "dia0_utt0.wav").read_bytes())
    (tmp_path / "clips" / "test" / "dia3_utt0.wav").symlink_to(tmp_path / "elsewhere.wav")  # the user's own link
    build_conversation_corpus(tmp_path, "meld", audio_dir=tmp_path / "clips", text_dim=2,
                              feature_cache=tmp_path / "features", workers=1)
    rows = read_csv(tmp_path / "test_sent_emo.csv")
    rows[2]["Dialogue_ID"] = "3/../../../elsewhere.wav#"
    write_csv(tmp_path / "test_sent_emo.csv", rows)
    with pytest.raises(ValueError, match=r"test_sent_emo\.csv, line 4: its Dialogue_ID and Utterance_ID give the clip "
                                         r".*/clips/test/dia3/\.\./\.\./\.\./elsewhere\.wav#_utt0\.wav, outside "
                                         r"--audio-dir's .*/clips/test$"):
        build_conversation_corpus(tmp_path, "meld", audio_dir=tmp_path / "clips", text_dim=2,
                                  feature_cache=tmp_path / "features", workers=1)
