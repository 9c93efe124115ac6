"""The transcript corpus builder: layouts, grouping and order, features, the CLI, and its errors."""

import csv
import json

import numpy as np
import pytest

from ada2i_fast import train
from ada2i_fast.data import load_corpus
from ada2i_fast.data.transcripts import TranscriptError, build_transcript_corpus, main

MELD_COLUMNS = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID"]
WORDS = "happy sad angry calm great awful fine terrible lovely scary wow yes no maybe".split()


def _meld_rows(n_dialogues, seed):
    rng = np.random.default_rng(seed)
    emotions = ["neutral", "joy", "anger", "surprise"]
    rows = []
    for d in range(n_dialogues):
        for u in range(int(rng.integers(1, 6))):
            words = " ".join(rng.choice(WORDS, size=4))
            rows.append({"Sr No.": len(rows) + 1, "Utterance": f"{words} {d}", "Speaker": f"P{rng.integers(3)}",
                         "Emotion": emotions[(d + u) % 4], "Sentiment": "neutral", "Dialogue_ID": d, "Utterance_ID": u})
    return rows


def _write(path, rows, columns=MELD_COLUMNS):
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def meld_dir(tmp_path):
    for split, n in (("train", 30), ("dev", 6), ("test", 8)):
        _write(tmp_path / f"{split}_sent_emo.csv", _meld_rows(n, seed=len(split)))
    return tmp_path


def test_meld_layout_groups_orders_and_keeps_speakers(tmp_path):
    rows = [
        dict(zip(MELD_COLUMNS, r))
        for r in [
            (1, "second of seven", "Ross", "joy", "-", 7, 2),
            (2, "hello there", "Rachel", "neutral", "-", 3, 0),
            (3, "first of seven", "Rachel", "anger", "-", 7, 0),
            (4, "hi again", "Ross", "surprise", "-", 3, 1),
        ]
    ]
    for split in ("train", "dev", "test"):
        _write(tmp_path / f"{split}_sent_emo.csv", rows)
    corpus = build_transcript_corpus(tmp_path, "meld", text_dim=3)
    train_split = corpus.splits["train"]
    assert corpus.classes == ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")
    assert corpus.modalities == "t" and corpus.dims == {"t": 3}
    assert train_split.dialogue_ids == ("train_7", "train_3")  # the order the file first names them
    assert train_split.lengths.tolist() == [2, 2]
    assert train_split.labels.tolist() == [6, 4, 0, 1]  # by Utterance_ID within each dialogue
    assert train_split.speakers.tolist() == [0, 1, 0, 1]  # Rachel 0, Ross 1
    # Identical texts get identical features; the rows follow the reordering.
    np.testing.assert_array_equal(corpus.splits["test"].features["t"], train_split.features["t"])


def test_tfidf_is_fitted_on_train_only(meld_dir):
    corpus = build_transcript_corpus(meld_dir, "meld", text_dim=8)
    x = corpus.splits["train"].features["t"]
    assert x.dtype == np.float32 and x.shape == (corpus.splits["train"].num_utterances, 8)
    _write(meld_dir / "test_sent_emo.csv", _meld_rows(8, seed=99))
    again = build_transcript_corpus(meld_dir, "meld", text_dim=8)
    np.testing.assert_array_equal(again.splits["train"].features["t"], x)


def test_emorynlp_layout_and_its_classes(tmp_path):
    columns = ["Utterance", "Speaker", "Emotion", "Scene_ID", "Utterance_ID", "Season", "Episode"]
    for split in ("train", "dev", "test"):
        rows = [
            dict(Utterance="so calm here", Speaker="['Monica Geller']", Emotion="Peaceful", Scene_ID=1, Utterance_ID=0,
                 Season=1, Episode=1),
            dict(Utterance="i am so mad", Speaker="['Joey Tribbiani']", Emotion="Mad", Scene_ID=1, Utterance_ID=1,
                 Season=1, Episode=1),
            dict(Utterance="another scene", Speaker="['Joey Tribbiani']", Emotion="Joyful", Scene_ID=1, Utterance_ID=0,
                 Season=1, Episode=2),
        ]
        _write(tmp_path / f"emorynlp_{split}_final.csv", rows, columns)
    corpus = build_transcript_corpus(tmp_path, "emorynlp", text_dim=2)
    assert corpus.classes == ("Neutral", "Joyful", "Peaceful", "Powerful", "Scared", "Mad", "Sad")
    assert corpus.splits["dev"].dialogue_ids == ("dev_1_1_1", "dev_1_2_1")
    assert corpus.splits["dev"].labels.tolist() == [2, 5, 1]


def test_generic_layout_from_cli_flags_and_user_embeddings(tmp_path):
    columns = ["conv", "turn", "who", "said", "feeling"]
    rng = np.random.default_rng(0)
    for split in ("train", "dev", "test"):
        rows = [dict(conv=c, turn=t, who="ab"[t % 2], said=f"words {c} {t}", feeling=["pos", "neg"][(c + t) % 2])
                for c in range(3) for t in (1, 0)]
        _write(tmp_path / f"{split}.tsv.csv", rows, columns)
        np.save(tmp_path / f"{split}.npy", rng.standard_normal((len(rows), 5)))
    out = tmp_path / "corpus"
    main(["--csv-dir", str(tmp_path), "--layout", "generic", "--files", "{split}.tsv.csv", "--text-column", "said",
          "--speaker-column", "who", "--label-column", "feeling", "--position-column", "turn",
          "--dialogue-columns", "conv", "--embeddings", str(tmp_path), "--out", str(out)])
    corpus = load_corpus("meld", out)
    assert corpus.classes == ("neg", "pos") and corpus.dims == {"t": 5}
    assert corpus.splits["train"].num_dialogues == 3
    # Row 1 of the file (turn 0 of conversation 0) comes first in the corpus.
    np.testing.assert_allclose(corpus.splits["train"].features["t"][0], np.load(tmp_path / "train.npy")[1], rtol=1e-6)


def test_the_trainer_reads_a_transcript_corpus_text_only(meld_dir, tmp_path, capsys):
    out = tmp_path / "corpus"
    main(["--csv-dir", str(meld_dir), "--out", str(out), "--text-dim", "16"])
    assert "train with --data" in capsys.readouterr().out
    assert json.loads((out / "manifest.json").read_text())["source"]["modalities"] == "t"
    tiny = ["--hidden", "16", "--rank", "3", "--ffn-dim", "32", "--epochs", "1", "--quiet"]
    summary = train.main(["--dataset", "meld", "--data", str(out), "--out", str(tmp_path / "run"), *tiny])
    assert summary["config"]["modalities"] == "t"
    assert summary["classes"] == ["neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"]
    with pytest.raises(SystemExit, match="no modality 'a'"):
        train.main(["--dataset", "meld", "--data", str(out), "--modalities", "at", "--out", str(tmp_path / "x"), *tiny])


def _error(tmp_path, path=None):
    with pytest.raises(TranscriptError) as caught:
        build_transcript_corpus(path or tmp_path, "meld", text_dim=4)
    return str(caught.value)


def test_bad_transcripts_get_errors_naming_file_and_line(meld_dir):
    train_csv = meld_dir / "train_sent_emo.csv"
    original = train_csv.read_bytes()
    lines = original.splitlines(keepends=True)

    train_csv.write_bytes(b"".join(lines[:3]) + lines[3].replace(b",", b"caf\xe9,", 1) + b"".join(lines[4:]))
    message = _error(meld_dir)
    assert "train_sent_emo.csv, line 4: not UTF-8" in message

    rows = list(csv.DictReader(original.decode().splitlines()))
    rows[4]["Utterance"] = "   "
    _write(train_csv, rows)
    assert "train_sent_emo.csv, line 6: empty utterance" in _error(meld_dir)

    rows[4]["Utterance"], rows[2]["Emotion"] = "fine", "bored"
    _write(train_csv, rows)
    assert "line 4: unknown label 'bored'" in _error(meld_dir)

    rows[2]["Emotion"], rows[1]["Utterance_ID"] = "joy", rows[0]["Utterance_ID"]
    rows[1]["Dialogue_ID"] = rows[0]["Dialogue_ID"]
    _write(train_csv, rows)
    assert "lines 2 and 3: dialogue '0' has two utterances at Utterance_ID 0" in _error(meld_dir)

    _write(train_csv, [{k: v for k, v in r.items() if k != "Speaker"} for r in rows],
           [c for c in MELD_COLUMNS if c != "Speaker"])
    assert "no column 'Speaker'" in _error(meld_dir)

    train_csv.unlink()
    assert "missing split 'train'" in _error(meld_dir)


def test_cli_refuses_to_replace_a_folder_that_is_not_a_corpus(meld_dir, tmp_path):
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("precious")
    with pytest.raises(SystemExit, match=r"^error: .*mine exists and is not a corpus or cache folder .*; name a new folder"):
        main(["--csv-dir", str(meld_dir), "--out", str(keep)])
    assert (keep / "notes.txt").read_text() == "precious"
    with pytest.raises(SystemExit, match="error: missing split"):
        main(["--csv-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "new")])


def _generic_rows():
    return [dict(dialogue=d, position=u, speaker="ab"[u % 2], text=f"{WORDS[d]} {WORDS[u + 5]}",
                 label=["pos", "neg"][(d + u) % 2]) for d in range(3) for u in range(2)]


def test_generic_layout_needs_a_file_per_split(tmp_path):
    columns = ["dialogue", "position", "speaker", "text", "label"]
    for name in ("all.csv", "a.csv", "b.csv", "c.csv"):
        _write(tmp_path / name, _generic_rows(), columns)
    common = ["--csv-dir", str(tmp_path), "--layout", "generic"]
    with pytest.raises(SystemExit, match=r"^error: train and dev would both read .*all\.csv: .* --train-file"):
        main([*common, "--files", "all.csv", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match=r"^error: dev and test would both read .*all\.csv"):
        main([*common, "--files", "all.csv", "--train-file", "a.csv", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match=r"^error: train and test would both read .*a\.csv"):
        main([*common, "--train-file", "a.csv", "--dev-file", "b.csv", "--test-file", "./a.csv",
              "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match=r"^error: --files '\{bogus\}.csv': unknown placeholder \{bogus\}"):
        main([*common, "--files", "{bogus}.csv", "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()

    main([*common, "--files", "all.csv", "--train-file", "a.csv", "--dev-file", "b.csv", "--test-file", "c.csv",
          "--text-dim", "2", "--out", str(tmp_path / "corpus")])
    files = json.loads((tmp_path / "corpus" / "manifest.json").read_text())["source"]["files"]
    assert {split: record["path"] for split, record in files.items()} == {
        "train": str(tmp_path / "a.csv"), "dev": str(tmp_path / "b.csv"), "test": str(tmp_path / "c.csv")}
