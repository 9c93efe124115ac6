"""A command line that explains itself (issue 20): the start line says how long the run is at most and
where it writes, the end line lists every file with its size, last.pt stays only when asked, a run
can be extended, a stopped run can be evaluated, and every source names the classes alike."""

import json
import os
import re
import signal

import pytest

from ada2i_fast import TrainConfig, evaluate, report, train
from ada2i_fast.data import make_synthetic
from ada2i_fast.data.transcripts import LAYOUTS
from ada2i_fast.datasets import DATASETS
from ada2i_fast.training import trainer
from ada2i_fast.training.step import train_step

TINY = ["--dataset", "meld", "--size", "0.05", "--hidden", "16", "--rank", "3", "--ffn-dim", "32",
        "--drop-rate", "0.1", "--lr", "2e-3"]


def test_the_start_line_tells_the_whole_story_and_the_end_line_every_file(tmp_path, capsys):
    out = tmp_path / "run"
    train.main([*TINY, "--out", str(out), "--epochs", "2", "--patience", "5", "--quiet"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (f"run {out}: 2 epochs x 6 steps at most | gradient modulation never runs: it starts at epoch "
                        f"4 (--start-mod), after the run's last (--epochs 2) | data synthetic meld (seed 12, size 0.05): "
                        f"train 52 dialogues, dev 6, test 14, modalities atv | device cpu, fp32")
    written = re.fullmatch(rf"wrote {out}: (.*) \(best\.pt and last\.pt removed: .*--keep-last keeps them.*\)",
                           lines[-1])
    assert written, lines[-1]
    files = dict(re.findall(r"([\w./]+) \(([\d.]+ [kMG]?B)\)", written.group(1)))
    assert set(files) == {"run.json", "metrics.jsonl", "model/", "summary.json", "training.png"}
    assert set(os.listdir(out)) - {".lock"} == {name.rstrip("/") for name in files}


def test_the_start_line_promises_early_stopping_and_warns_of_modulation_only_when_they_can_happen(tmp_path, capsys,
                                                                                                  monkeypatch):
    def stop(*args, **kwargs):  # the start line is all this test needs
        os.kill(os.getpid(), signal.SIGINT)
        return train_step(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_step", stop)
    with pytest.raises(SystemExit):
        train.main([*TINY, "--out", str(tmp_path / "run"), "--epochs", "3", "--patience", "1", "--start-mod", "3",
                    "--quiet"])
    first = capsys.readouterr().out.splitlines()[0]
    assert ("3 epochs x 6 steps at most (early stopping after 1 epoch without a better dev F1 can end it sooner) | "
            "data synthetic meld") in first
    assert "never runs" not in first
    assert TrainConfig(epochs=3, start_mod=4).unmodulated_note() is not None
    assert TrainConfig(epochs=3, start_mod=4, modulation=False).unmodulated_note() is None  # --no-modulation says it
    assert TrainConfig(epochs=4, start_mod=4).unmodulated_note() is None


def test_the_whole_run_bar_counts_every_step_of_every_epoch(tmp_path, capsys):
    train.main([*TINY, "--out", str(tmp_path / "run"), "--epochs", "2"])
    bars = capsys.readouterr().err
    assert "run (<= 2 epochs)" in bars and "12/12" in bars and "epoch 2" in bars


def test_a_kept_run_is_extended_by_resume_with_more_epochs_and_records_it(tmp_path):
    out = tmp_path / "run"
    train.main([*TINY, "--out", str(out), "--epochs", "1", "--keep-last", "--quiet"])
    summary = train.main(["--resume", str(out), "--epochs", "2", "--quiet"])
    assert summary["epochs_run"] == 2 and summary["train_config"]["epochs"] == 2
    assert [r["epoch"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())] == [1, 2]
    extensions = json.loads((out / "run.json").read_text())["extensions"]
    assert [(e["after_epoch"], e["epochs"]) for e in extensions] == [(1, 2)]
    with pytest.raises(SystemExit, match=r"--epochs 2: the run in .* has already trained 2 epoch\(s\)"):
        train.main(["--resume", str(out), "--epochs", "2", "--quiet"])
    with pytest.raises(SystemExit, match=r"--resume continues a run with its own settings; drop --lr"):
        train.main(["--resume", str(out), "--epochs", "3", "--lr", "0.1", "--quiet"])

    removed = tmp_path / "removed"
    train.main([*TINY, "--out", str(removed), "--epochs", "1", "--quiet"])
    with pytest.raises(SystemExit, match=r"the run has finished and its last\.pt was removed; a run to be extended "
                                         r"later needs --keep-last; train a new run there with --out .* --overwrite"):
        train.main(["--resume", str(removed), "--epochs", "2", "--quiet"])


def test_a_run_stopped_in_its_first_epoch_is_evaluated_from_its_last_pt(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    calls = {"n": 0}

    def step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return train_step(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_step", step)
    with pytest.raises(SystemExit):
        train.main([*TINY, "--out", str(out), "--epochs", "2", "--quiet"])
    assert not (out / "best.pt").exists()
    capsys.readouterr()
    result = evaluate.main(["--checkpoint", str(out)])
    said = capsys.readouterr().out
    assert f"model: {out / 'last.pt'}: the current weights after 0 epoch(s) and 2 step(s) of epoch 1" in said
    assert 0 <= result["weighted_f1"] <= 1


def test_every_source_names_the_classes_alike():
    meld = DATASETS["meld"].classes
    assert make_synthetic("meld", seed=0, size=0.03).classes == meld == LAYOUTS["meld"].classes
    assert meld == ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")
    assert DATASETS["meld"].canonical(("neu", "sup", "fea", "sad", "joy", "dis", "ang")) == meld
    assert make_synthetic("iemocap", seed=0, size=0.03).classes == DATASETS["iemocap"].classes


def test_report_takes_labels_and_formats_and_names_a_dated_folder_by_its_parent(tmp_path):
    dated = tmp_path / "meld" / "20261129-101500"
    train.main([*TINY, "--out", str(dated), "--epochs", "1", "--quiet"])
    assert report.run_labels([dated]) == ["meld"]
    for fmt, signature in (("pdf", b"%PDF"), ("svg", b"<?xml")):
        written = report.write_report([dated], tmp_path / fmt, labels=["Ada2I, seed 12"], suffix=f".{fmt}")
        assert {p.name for p in written} == {f"balance.{fmt}", f"dev_f1.{fmt}", f"confusion.{fmt}"}
        assert all(p.read_bytes().startswith(signature) for p in written)
    with pytest.raises(SystemExit, match=r"--name gives 2 label\(s\) for 1 run folder\(s\)"):
        report.main([str(dated), "--name", "a", "b"])


@pytest.mark.parametrize("module", ["train", "evaluate", "predict", "report", "analyze", "sweep", "tune",
                                    "data.transcripts"])
def test_every_flag_has_help_text(module):
    import importlib

    parser = importlib.import_module(f"ada2i_fast.{module}").build_parser()
    bare = [action.option_strings[0] for action in parser._actions
            if action.option_strings and (not action.help or action.help.startswith("(default"))]
    assert not bare, bare
