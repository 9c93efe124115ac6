"""Inputs too large to hold are refused in one line naming the file, flag or size, before they
exhaust the machine: long CSV fields, endless dialogues, synthetic corpora and transcript corpora
larger than the available memory."""

import csv
import re

import pytest

from ada2i_fast import Ada2I, memory, train
from ada2i_fast.data import load_corpus, make_synthetic
from ada2i_fast.memory import FALLBACK_MEMORY, TooLargeForMemory, available_memory, model_parameters
from ada2i_fast.data.transcripts import MAX_FIELD_CHARS, TranscriptError, build_transcript_corpus, main
from conftest import tiny_config

COLUMNS = ["Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID"]
WORDS = "happy sad angry calm great awful fine terrible lovely scary".split()


def _write_meld(folder, train_rows):
    """MELD-layout files: ``train_rows`` for train, a few short dialogues for dev and test."""
    short = [dict(Utterance=f"{WORDS[d]} {WORDS[u + 3]}", Speaker="Ross", Emotion="joy", Dialogue_ID=d,
                  Utterance_ID=u) for d in range(3) for u in range(3)]
    for split, rows in (("train", train_rows + short), ("dev", short), ("test", short)):
        with open(folder / f"{split}_sent_emo.csv", "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    return folder


def _fake_meminfo(monkeypatch, tmp_path, text):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(text)
    monkeypatch.setattr(memory, "MEMINFO", meminfo)


def test_a_field_longer_than_the_limit_names_the_file_and_line_and_the_flag_raises_it(tmp_path):
    long_text = "word " * (MAX_FIELD_CHARS // 5 + 1)
    _write_meld(tmp_path, [dict(Utterance=long_text, Speaker="Ross", Emotion="joy", Dialogue_ID=9, Utterance_ID=0)])
    with pytest.raises(TranscriptError, match=r"train_sent_emo\.csv, line 2: field larger than field limit "
                                              r"\(131072\); raise --max-field-chars"):
        build_transcript_corpus(tmp_path, "meld", text_dim=2)
    assert csv.field_size_limit() == MAX_FIELD_CHARS

    out = tmp_path / "corpus"
    main(["--csv-dir", str(tmp_path), "--text-dim", "2", "--max-field-chars", str(2 * MAX_FIELD_CHARS),
          "--out", str(out)])
    assert load_corpus("meld", out).splits["train"].num_utterances == 10
    assert csv.field_size_limit() == MAX_FIELD_CHARS


def test_an_endless_dialogue_names_the_file_the_dialogue_and_its_length(tmp_path):
    rows = [dict(Utterance=f"{WORDS[u % 10]} {u}", Speaker="Ross", Emotion="joy", Dialogue_ID=7, Utterance_ID=u)
            for u in range(1001)]
    _write_meld(tmp_path, rows)
    with pytest.raises(SystemExit, match=r"^error: .*train_sent_emo\.csv: dialogue '7' has 1001 utterances, "
                                         r"more than --max-dialogue-length 1000"):
        main(["--csv-dir", str(tmp_path), "--text-dim", "2", "--out", str(tmp_path / "x")])
    corpus = build_transcript_corpus(tmp_path, "meld", text_dim=2, max_dialogue_length=1001)
    assert corpus.splits["train"].lengths.max() == 1001


def test_a_transcript_corpus_larger_than_the_available_memory_names_its_folder(tmp_path, monkeypatch):
    _write_meld(tmp_path, [])
    _fake_meminfo(monkeypatch, tmp_path, "MemTotal:  100 kB\nMemAvailable:  10 kB\n")
    with pytest.raises(TooLargeForMemory, match=rf"^a corpus of the 27 utterances in {tmp_path} needs about "
                                             r"32.8 kB; this machine has 10.2 kB available"):
        build_transcript_corpus(tmp_path, "meld", text_dim=300)
    build_transcript_corpus(tmp_path, "meld", text_dim=2)  # 27 utterances of 2 features fit in 10 kB


def test_a_synthetic_corpus_larger_than_the_available_memory_is_refused_before_it_is_drawn(tmp_path, monkeypatch):
    with pytest.raises(TooLargeForMemory, match=r"^synthetic size 100000.0 needs about 7.75 TB; this machine has "
                                             r".* available; choose a smaller --size$"):
        make_synthetic("meld", seed=0, size=1e5)
    with pytest.raises(TooLargeForMemory, match=r"^synthetic size inf needs"):
        make_synthetic("meld", seed=0, size=float("inf"))
    _fake_meminfo(monkeypatch, tmp_path, "MemAvailable:  50000 kB\n")  # 51.2 MB
    make_synthetic("meld", seed=0, size=0.5)  # about 39 MB
    with pytest.raises(TooLargeForMemory, match=r"size 1.0 needs about 77.5 MB; this machine has 51.2 MB available"):
        make_synthetic("meld", seed=0, size=1.0)


def test_train_refuses_a_synthetic_size_too_large_in_one_line(tmp_path):
    with pytest.raises(SystemExit, match=r"^error: synthetic size 100000.0 needs about 7.75 TB"):
        train.main(["--dataset", "meld", "--size", "1e5", "--out", str(tmp_path / "run"), "--quiet"])


def test_without_meminfo_the_bound_is_a_fixed_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "MEMINFO", tmp_path / "absent")
    assert available_memory() == FALLBACK_MEMORY
    _fake_meminfo(monkeypatch, tmp_path, "MemTotal:  100 kB\n")
    assert available_memory() == FALLBACK_MEMORY
    with pytest.raises(TooLargeForMemory, match=r"needs about 120 GB; this machine has 8.59 GB available"):
        make_synthetic("mosei", seed=0, size=569)


@pytest.mark.parametrize("overrides", [{}, dict(encoder="lstm"), dict(encoder="lstm", encoder_nlayers=3),
                                       dict(modalities="at", encoder_nlayers=3, mmt_nlayers=0),
                                       dict(mmcosine=False, rank=5, hidden=10)])
def test_the_weights_a_config_asks_for_are_counted_exactly_before_building(overrides):
    config = tiny_config(**overrides)
    assert model_parameters(config) == sum(p.numel() for p in Ada2I(config).parameters())


def test_a_model_larger_than_the_available_memory_is_refused_naming_the_estimate(tmp_path, monkeypatch):
    config = tiny_config(hidden=64)
    _fake_meminfo(monkeypatch, tmp_path, f"MemAvailable:  {4 * model_parameters(config) // 1024 - 1} kB\n")
    count = re.escape(f"{model_parameters(config):.3g}")
    with pytest.raises(TooLargeForMemory, match=rf"^this model \({count} weights: hidden 64, "
                                             r"rank 3, ffn_dim 24, 2 encoder and 2 AFW layer\(s\)\) needs about "
                                             r"[\d.]+ [kM]B; this machine has [\d.]+ [kM]B available"):
        Ada2I(config)
    Ada2I(tiny_config(hidden=32))
