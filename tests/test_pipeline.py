"""Predictions on new conversations: the corpus's featuriser (kept by the builders, copied into model/),
the predict CLI's --csv, the ConversationPipeline, and the one-line refusals."""

import json
import shutil

import numpy as np
import pytest
import torch

from ada2i_fast import Ada2I, Ada2IConfig, ConversationPipeline, predict, train
from ada2i_fast.checkpointing.pretrained import CONFIG, FEATURISER
from ada2i_fast.data import load_corpus
from ada2i_fast.data import transcripts
from ada2i_fast.data.cache import write_cache
from ada2i_fast.data.featuriser import corpus_featuriser, fit_tfidf_svd
from ada2i_fast.inference.pipeline import prediction_records
from fixtures.conversations import (
    CLASSES, TINY, read_csv, tiny_sentence_model, write_conversations, write_csv, write_meld_clips,
)

CUES = {"angry": ("furious", "shouting"), "calm": ("quiet", "relaxed"), "happy": ("delighted", "laughing")}
FILLER = "so then we went home and it was the day you know".split()


def _text_rows(dialogues, length, seed, prefix="d"):
    """Generic-layout rows whose text carries the label, in a shuffled file order (positions out of order)."""
    rng = np.random.default_rng(seed)
    rows = []
    for d in range(dialogues):
        for u in range(length):
            label = CLASSES[rng.integers(len(CLASSES))]
            words = [*rng.choice(FILLER, size=3), CUES[label][rng.integers(2)]]
            rng.shuffle(words)
            rows.append(dict(dialogue=f"{prefix}{d}", position=u, speaker="ab"[u % 2], text=" ".join(words),
                             label=label))
    return [rows[i] for i in rng.permutation(len(rows))]


def _predict(checkpoint, out, *flags):
    predict.main(["--checkpoint", str(checkpoint), "--out", str(out), "--device", "cpu", *flags])
    return [json.loads(line) for line in out.read_text().splitlines()]


def _assert_same_predictions(ours, theirs, ids=lambda i: i):
    assert [(ids(r["dialogue_id"]), r["utterance"]) for r in ours] == [(r["dialogue_id"], r["utterance"]) for r in theirs]
    for a, b in zip(ours, theirs):
        assert a["predicted"] == b["predicted"] and a.get("gold") == b.get("gold")
        np.testing.assert_allclose(list(a["probabilities"].values()), list(b["probabilities"].values()), atol=1e-6)


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    _write_splits(root / "csv", {"train": 24, "dev": 6, "test": 8}, length=4)
    transcripts.main(["--csv-dir", str(root / "csv"), "--layout", "generic", "--text-dim", "8",
                      "--out", str(root / "corpus")])
    train.main(["--dataset", "meld", "--data", str(root / "corpus"), "--epochs", "2", "--out", str(root / "run"), *TINY])
    return root


def test_a_text_model_predicts_named_emotions_on_a_csv_the_corpus_never_saw(text_run, tmp_path):
    model = text_run / "run" / "model"
    config = json.loads((model / CONFIG).read_text())
    assert config["id2label"] == {"0": "angry", "1": "calm", "2": "happy"} and config["label2id"]["happy"] == 2
    assert "synthetic" not in config["metadata"] and "size" not in config["metadata"]  # a real corpus's run
    assert (model / FEATURISER / "featuriser.json").is_file()

    new = [{k: v for k, v in row.items() if k != "label"} for row in _text_rows(3, 5, seed=9, prefix="new")]
    write_csv(tmp_path / "new.csv", new)
    records = _predict(text_run / "run", tmp_path / "new.jsonl", "--csv", str(tmp_path / "new.csv"))
    first_named = list(dict.fromkeys(row["dialogue"] for row in new))
    assert [(r["dialogue_id"], r["utterance"]) for r in records] == [(d, u) for d in first_named for u in range(5)]
    assert all("gold" not in r and r["predicted"] in CLASSES and list(r["probabilities"]) == list(CLASSES)
               and list(r["contributions"]) == ["t"] for r in records)

    # The same dialogues in memory, through a copy of model/ with the corpus gone: the folder is self-contained.
    shutil.copytree(model, tmp_path / "shared")
    text_run.joinpath("corpus").rename(text_run / "corpus-away")
    try:
        pipeline = ConversationPipeline.from_pretrained(tmp_path / "shared")
        by_position = {(row["dialogue"], int(row["position"])): row["text"] for row in new}
        dialogues = [[by_position[d, u] for u in range(5)] for d in first_named]
        results = pipeline(dialogues)
    finally:
        text_run.joinpath("corpus-away").rename(text_run / "corpus")
    assert pipeline.classes == CLASSES and not pipeline.model.training
    _assert_same_predictions([r for dialogue in results for r in dialogue], records,
                             ids=lambda i: first_named[int(i)])


def test_the_test_split_through_the_csv_path_equals_predict_on_the_split(text_run, tmp_path):
    through_csv = _predict(text_run / "run", tmp_path / "csv.jsonl", "--csv", str(text_run / "csv" / "test.csv"))
    on_split = _predict(text_run / "run", tmp_path / "split.jsonl", "--split", "test")
    _assert_same_predictions(through_csv, on_split, ids=lambda i: f"test_{i}")


def test_the_corpus_keeps_its_featuriser_which_reproduces_its_features(text_run):
    directory = text_run / "corpus"
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["featuriser"]["text"] == "tfidf-svd" and manifest["featuriser"]["modalities"] == "t"
    featuriser = corpus_featuriser(str(directory))
    corpus = load_corpus("meld", directory)
    rows = transcripts.read_rows(text_run / "csv" / "dev.csv", transcripts.LAYOUTS["generic"], id_prefix=("dev",))
    np.testing.assert_allclose(featuriser.features("t", rows.texts)["t"][rows.order],
                               corpus.splits["dev"].features["t"], rtol=1e-5, atol=1e-6)


def test_the_featuriser_is_sklearns_tfidf_svd_on_held_out_text():
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    rng = np.random.default_rng(0)
    words = "Hello world it's a GREAT day, isn't it? Café naïve über x y zz 42 don't stop-me now!".split()
    train_texts = [" ".join(rng.choice(words, size=int(rng.integers(2, 9)))) for _ in range(80)]
    held_out = [" ".join(rng.choice(words + ["unseen", "Words"], size=int(rng.integers(1, 9)))) for _ in range(30)]
    held_out += ["nothing known here", "hello hello hello world"]
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    svd = TruncatedSVD(n_components=6, random_state=3).fit(vectorizer.fit_transform(train_texts))
    ours = fit_tfidf_svd(train_texts, 6, seed=3).featuriser()
    expected = svd.transform(vectorizer.transform(held_out))
    np.testing.assert_allclose(ours.transform(held_out), expected, rtol=1e-5, atol=1e-6)
    assert not ours.transform(["nothing known here"]).any()


def test_a_text_dim_cut_by_too_few_terms_is_said(capsys):
    fit_tfidf_svd(["one two", "two three", "three four", "four one", "one three", "two four"] * 3, 768, seed=0)
    assert "text dim 9, not 768: the training transcripts give only 10 distinct terms" in capsys.readouterr().out


@pytest.fixture(scope="module")
def audio_run(tmp_path_factory):
    pytest.importorskip("opensmile")
    root = tmp_path_factory.mktemp("audio")
    write_conversations(root / "csv", {"train": (8, 3), "dev": (3, 3), "test": (3, 3)})
    from ada2i_fast.data import conversations

    conversations.main(["--csv-dir", str(root / "csv"), "--layout", "generic", "--audio-column", "audio",
                        "--text-dim", "4", "--workers", "1", "--out", str(root / "corpus")])
    train.main(["--dataset", "meld", "--data", str(root / "corpus"), "--modalities", "at", "--epochs", "2",
                "--out", str(root / "run"), *TINY])
    return root


def test_a_text_and_audio_model_predicts_on_new_conversations_with_their_audio(audio_run, tmp_path):
    write_conversations(tmp_path, {"new": (2, 3)}, seed=5, files="new.csv")
    rows = read_csv(tmp_path / "new.csv")
    for row in rows:
        del row["label"]
    write_csv(tmp_path / "new.csv", rows)
    records = _predict(audio_run / "run", tmp_path / "new.jsonl", "--csv", str(tmp_path / "new.csv"), "--workers", "1")
    assert len(records) == 6 and all(list(r["contributions"]) == ["a", "t"] and "gold" not in r for r in records)

    pipeline = ConversationPipeline.from_pretrained(audio_run / "run" / "model", workers=1)
    dialogues = [[{"text": row["text"], "audio": tmp_path / row["audio"]} for row in rows[d * 3:d * 3 + 3]]
                 for d in range(2)]
    _assert_same_predictions([r for dialogue in pipeline(dialogues) for r in dialogue], records)

    through_csv = _predict(audio_run / "run", tmp_path / "csv.jsonl", "--csv", str(audio_run / "csv" / "test.csv"),
                           "--workers", "1")
    on_split = _predict(audio_run / "run", tmp_path / "split.jsonl", "--split", "test")
    _assert_same_predictions(through_csv, on_split, ids=lambda i: f"test_{i}")


def test_a_sentence_model_corpus_featurises_with_that_model_found_where_it_now_is(tmp_path, monkeypatch):
    pytest.importorskip("opensmile")
    pytest.importorskip("sentence_transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    write_conversations(tmp_path / "csv", {"train": (3, 2), "dev": (1, 2), "test": (2, 2)})
    from ada2i_fast.data import conversations

    conversations.main(["--csv-dir", str(tmp_path / "csv"), "--layout", "generic", "--audio-column", "audio",
                        "--text-model", str(tiny_sentence_model(tmp_path)), "--workers", "1",
                        "--out", str(tmp_path / "corpus")])
    corpus = load_corpus("meld", tmp_path / "corpus")
    featuriser = corpus_featuriser(str(tmp_path / "corpus"))
    assert featuriser.text.kind == "sentence-transformers" and featuriser.text.model == str(tmp_path / "model")
    model = Ada2I(Ada2IConfig(modalities="t", input_dims=corpus.dims, num_classes=3, class_names=CLASSES, hidden=8,
                              rank=2, ffn_dim=8))
    ConversationPipeline(model, featuriser).save_pretrained(tmp_path / "saved")
    expected = list(prediction_records(model.eval(), corpus.splits["test"], CLASSES, batch_size=10,
                                       device=torch.device("cpu")))  # the corpus's own features, as predict --split
    (tmp_path / "model").rename(tmp_path / "moved")
    with pytest.raises(ValueError, match=r"sentence-transformers model .*/model, which is not on this machine; put "
                                         r"it there, or name its copy with --text-model DIR"):
        ConversationPipeline.from_pretrained(tmp_path / "saved").predict_csv(tmp_path / "csv" / "test.csv")
    pipeline = ConversationPipeline.from_pretrained(tmp_path / "saved", text_model=tmp_path / "moved")
    _assert_same_predictions(pipeline.predict_csv(tmp_path / "csv" / "test.csv"), expected, ids=lambda i: f"test_{i}")


def test_meld_clips_of_new_conversations_are_found_with_audio_dir(tmp_path):
    pytest.importorskip("opensmile")
    from ada2i_fast.data.conversations import build_conversation_corpus

    write_meld_clips(tmp_path)
    built = build_conversation_corpus(tmp_path, "meld", audio_dir=tmp_path / "clips", text_dim=2,
                                      feature_cache=tmp_path / "features", workers=1)
    corpus = built.corpus
    model = Ada2I(Ada2IConfig(modalities="at", input_dims=corpus.dims, num_classes=7, class_names=corpus.classes,
                              hidden=8, rank=2, ffn_dim=8))
    pipeline = ConversationPipeline(model, built.featuriser, workers=1)
    records = pipeline.predict_csv(tmp_path / "test_sent_emo.csv", audio_dir=tmp_path / "clips" / "test")
    expected = prediction_records(model, corpus.splits["test"], corpus.classes, batch_size=10,
                                  device=torch.device("cpu"))
    _assert_same_predictions(records, list(expected), ids=lambda i: f"test_{i}")
    with pytest.raises(ValueError, match=r"this model uses audio: name each utterance's file with --audio-column"):
        pipeline.predict_csv(tmp_path / "test_sent_emo.csv")


def test_missing_audio_is_one_error_line(audio_run, tmp_path):
    pipeline = ConversationPipeline.from_pretrained(audio_run / "run", workers=1)
    with pytest.raises(ValueError, match=r"^dialogue 0, utterance 0 has no 'audio': this model uses audio"):
        pipeline([["okay let us see"]])
    rows = [dict(dialogue=0, position=0, text="well here we are", audio="gone.wav")]
    write_csv(tmp_path / "gone.csv", rows)
    with pytest.raises(SystemExit, match=r"^error: missing audio file .*gone\.wav$"):
        _predict(audio_run / "run", tmp_path / "p.jsonl", "--csv", str(tmp_path / "gone.csv"), "--workers", "1")
    write_csv(tmp_path / "none.csv", [{k: v for k, v in row.items() if k != "audio"} for row in rows])
    with pytest.raises(SystemExit, match=r"^error: .*none\.csv: no column 'audio'"):
        _predict(audio_run / "run", tmp_path / "p.jsonl", "--csv", str(tmp_path / "none.csv"))


def test_a_model_that_uses_fewer_modalities_than_its_corpus_needs_only_its_own(audio_run):
    pipeline = ConversationPipeline.from_pretrained(audio_run / "run", workers=1)
    text_only = ConversationPipeline(pipeline.model.restricted_to("t"), pipeline.featuriser)
    [[record]] = text_only([["okay let us see"]])
    assert list(record["contributions"]) == ["t"] and record["predicted"] in CLASSES
    with pytest.raises(ValueError, match=r"this model does not use audio \(its modalities are 't'\)"):
        text_only.read_csv(audio_run / "csv" / "test.csv", audio_column="audio")


def test_a_csv_missing_columns_or_mixed_with_split_flags_is_one_error_line(text_run, tmp_path):
    write_csv(tmp_path / "bad.csv", [dict(dialogue="x", position=0, words="hello there")])
    with pytest.raises(SystemExit, match=r"^error: .*bad\.csv: no column 'text' \(the file has \['dialogue', "
                                         r"'position', 'words'\]\)$"):
        _predict(text_run / "run", tmp_path / "p.jsonl", "--csv", str(tmp_path / "bad.csv"))
    records = _predict(text_run / "run", tmp_path / "p.jsonl", "--csv", str(tmp_path / "bad.csv"), "--text-column",
                       "words")
    assert len(records) == 1
    with pytest.raises(SystemExit, match=r"^error: --split choose\(s\) a corpus's split; --csv predicts"):
        _predict(text_run / "run", tmp_path / "p.jsonl", "--csv", str(tmp_path / "bad.csv"), "--split", "dev")
    write_csv(tmp_path / "odd.csv", [dict(dialogue="x", position=0, text="hi", label="bored")])
    with pytest.raises(SystemExit, match=r"odd\.csv, line 2: unknown label 'bored' .* expected one of angry, calm, "):
        _predict(text_run / "run", tmp_path / "p.jsonl", "--csv", str(tmp_path / "odd.csv"))


def _text_model(tmp_path, metadata, featuriser=None, dim=8):
    config = Ada2IConfig(modalities="t", input_dims={"t": dim}, num_classes=3, class_names=CLASSES, hidden=8, rank=2,
                         ffn_dim=8)
    return Ada2I(config).save_pretrained(tmp_path / "model", metadata={"dataset": "meld", **metadata},
                                         featuriser=featuriser)


@pytest.mark.parametrize("kind, message", [
    ("legacy", r"the model was trained on the legacy pickle .*meld\.pkl, whose features were made elsewhere: "
               r"nothing here can featurise new conversations"),
    ("synthetic", r"the model was trained on a synthetic meld redundant .*, not on real conversations"),
    ("older corpus", r"the corpus .*old was built before corpora kept their featuriser: rebuild it in place"),
])
def test_a_model_without_a_featuriser_says_why_in_one_line(kind, message, tmp_path):
    if kind == "legacy":
        data = tmp_path / "meld.pkl"
        data.write_bytes(b"not read")
    elif kind == "synthetic":
        data = "synthetic meld redundant (seed 12, size 0.05)"
    else:
        corpus = transcripts.build_transcript_corpus(_write_splits(tmp_path), "generic", text_dim=8)
        data = tmp_path / "old"
        write_cache(corpus, data, source={"kind": "transcripts", "layout": "generic"})  # no featuriser
    model = _text_model(tmp_path, {"data": str(data)})
    write_csv(tmp_path / "new.csv", [dict(dialogue=0, position=0, text="hello")])
    with pytest.raises(SystemExit, match=rf"^error: {message}"):
        _predict(model, tmp_path / "p.jsonl", "--csv", str(tmp_path / "new.csv"))


def _write_splits(folder, dialogues=None, length=3):
    """train.csv, dev.csv and test.csv of ``_text_rows`` in ``folder``; returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    for seed, (split, count) in enumerate((dialogues or {"train": 6, "dev": 6, "test": 6}).items()):
        write_csv(folder / f"{split}.csv", _text_rows(count, length, seed))
    return folder


def test_a_corpus_of_your_own_embeddings_cannot_featurise_new_text(tmp_path):
    _write_splits(tmp_path)
    (tmp_path / "emb").mkdir()
    for split in ("train", "dev", "test"):
        np.save(tmp_path / "emb" / f"{split}.npy", np.random.default_rng(0).normal(size=(18, 5)).astype(np.float32))
    transcripts.main(["--csv-dir", str(tmp_path), "--layout", "generic", "--embeddings", str(tmp_path / "emb"),
                      "--out", str(tmp_path / "corpus")])
    featuriser = corpus_featuriser(str(tmp_path / "corpus"))
    model = _text_model(tmp_path, {"data": str(tmp_path / "corpus")}, featuriser, dim=5)
    assert (model / FEATURISER).is_dir()
    write_csv(tmp_path / "new.csv", [dict(dialogue=0, position=0, text="hello")])
    with pytest.raises(SystemExit, match=r"^error: the corpus's text features are your own embeddings \(--embeddings "
                                         r".*emb\): this model cannot featurise new text"):
        _predict(model, tmp_path / "p.jsonl", "--csv", str(tmp_path / "new.csv"))


def test_a_damaged_featuriser_or_edited_class_names_are_refused(text_run, tmp_path):
    folder = shutil.copytree(text_run / "run" / "model", tmp_path / "model")
    config = json.loads((folder / CONFIG).read_text())
    config["id2label"]["0"] = "furious"
    (folder / CONFIG).write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config\.json: id2label .* disagrees with the class names"):
        Ada2I.from_pretrained(folder)
    shutil.copy(text_run / "run" / "model" / CONFIG, folder / CONFIG)
    components = folder / FEATURISER / "text_components.npy"
    array = np.load(components)
    components.unlink()  # a hard link to the corpus's file: replace it, never write through it
    np.save(components, array * 2)
    with pytest.raises(ValueError, match=r"text_components\.npy: differs from the checksum written with it"):
        ConversationPipeline.from_pretrained(folder)
    assert np.array_equal(np.load(text_run / "corpus" / "featuriser" / "text_components.npy"), array)


def test_from_pretrained_gives_an_eval_mode_model_whose_forward_passes_agree(tmp_path):
    from conftest import random_batch, tiny_config

    config = tiny_config(drop_rate=0.5, class_names=("a", "b", "c", "d", "e"))
    Ada2I(config).train().save_pretrained(tmp_path / "model")
    model = Ada2I.from_pretrained(tmp_path / "model")
    assert not model.training and model.config.class_names == config.class_names
    batch = random_batch(config, [4, 2])
    torch.testing.assert_close(model(batch).log_probs, model(batch).log_probs, rtol=0, atol=0)


def test_a_run_on_a_real_corpus_records_no_synthetic_fields_and_resumes(text_run, tmp_path):
    out = tmp_path / "run"
    train.main(["--dataset", "meld", "--data", str(text_run / "corpus"), "--epochs", "1", "--keep-last",
                "--out", str(out), *TINY])
    identity = json.loads((out / "run.json").read_text())
    assert "size" not in identity and "synthetic" not in identity
    summary = train.main(["--resume", str(out), "--epochs", "2"])
    assert summary["epochs_run"] == 2 and summary["data"] == str(text_run / "corpus")


def test_an_older_corpus_rebuilt_in_place_gives_its_models_their_featuriser(tmp_path):
    from ada2i_fast.training.run_folder import data_identity

    csv_dir = _write_splits(tmp_path / "csv")
    corpus = transcripts.build_transcript_corpus(csv_dir, "generic", text_dim=8)
    write_cache(corpus, tmp_path / "old", source={"kind": "transcripts", "layout": "generic"})  # as built before
    identity = data_identity(load_corpus("meld", tmp_path / "old"))
    model = _text_model(tmp_path, {"data": str(tmp_path / "old"), "data_identity": identity})
    build = ["--csv-dir", str(csv_dir), "--layout", "generic", "--text-dim", "8", "--out", str(tmp_path / "old")]
    transcripts.main(build)  # the same command, in place: the same corpus, now with its featuriser
    assert len(_predict(model, tmp_path / "p.jsonl", "--csv", str(csv_dir / "test.csv"))) == 18
    transcripts.main([*build, "--text-dim", "6"])  # another corpus in its place
    with pytest.raises(SystemExit, match=r"^error: the corpus .*old changed since .*model was trained on it"):
        _predict(model, tmp_path / "p.jsonl", "--csv", str(csv_dir / "test.csv"))
