"""End-to-end runs of the training and evaluation CLIs on tiny synthetic corpora."""

import json

import pytest

from ada2i_fast import evaluate, train

TINY = ["--hidden", "32", "--rank", "3", "--ffn-dim", "64", "--drop-rate", "0.1", "--lr", "2e-3", "--quiet"]


def _run(tmp_path, name, *extra):
    out = tmp_path / name
    summary = train.main(["--dataset", "meld", "--out", str(out), *TINY, *extra])
    return out, summary


def test_same_seed_gives_identical_metrics(tmp_path):
    out_a, a = _run(tmp_path, "a", "--size", "0.05", "--epochs", "2")
    out_b, b = _run(tmp_path, "b", "--size", "0.05", "--epochs", "2")
    a.pop("timing"), b.pop("timing"), a.pop("run_id"), b.pop("run_id")
    assert a == b
    strip = lambda line: {k: v for k, v in json.loads(line).items() if k not in ("seconds", "utterances_per_second")}
    assert [strip(l) for l in (out_a / "metrics.jsonl").read_text().splitlines()] == [
        strip(l) for l in (out_b / "metrics.jsonl").read_text().splitlines()
    ]


def test_a_tiny_run_learns_and_writes_every_output(tmp_path, capsys):
    out, summary = _run(tmp_path, "run", "--size", "0.15", "--epochs", "5")
    assert "synthetic" in summary["data"]
    assert "no data file given" in capsys.readouterr().err
    for name in ("model/model.safetensors", "model/config.json", "metrics.jsonl", "summary.json", "training.png"):
        assert (out / name).stat().st_size > 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 5 and set(records[0]["ratio"]) == {"a", "t", "v"}
    assert records[-1]["train"]["loss"] < 0.6 * records[0]["train"]["loss"]
    # Always predicting the majority class scores p * 2p / (1 + p) in weighted F1 (p: its share of the test set).
    support = [c["support"] for c in summary["test"]["per_class"].values()]
    p = max(support) / sum(support)
    assert summary["test"]["weighted_f1"] > p * 2 * p / (1 + p) + 0.08

    report = evaluate.main(["--checkpoint", str(out / "model")])
    assert report["weighted_f1"] == pytest.approx(summary["test"]["weighted_f1"])


def test_a_missing_data_path_is_an_error_not_a_fallback(tmp_path):
    with pytest.raises(SystemExit, match=r"^error: --data .*nope\.pkl: no such file or folder"):
        train.main(["--dataset", "meld", "--data", str(tmp_path / "nope.pkl"), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_unknown_dataset_is_refused(capsys):
    with pytest.raises(SystemExit):
        train.main(["--dataset", "cmu"])
    assert "invalid choice: 'cmu'" in capsys.readouterr().err


def test_bad_files_get_one_clear_error_line(tmp_path):
    corrupt = tmp_path / "best.pt"
    corrupt.write_bytes(b"\x80\x04 truncated")
    with pytest.raises(SystemExit, match=r"^error: .*best\.pt: not a loadable checkpoint"):
        evaluate.main(["--checkpoint", str(corrupt)])
    hostile = tmp_path / "meld.pkl"
    hostile.write_bytes(b"cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode() + b"'\ntR.")
    with pytest.raises(SystemExit, match=r"^error: .*os"):
        train.main(["--dataset", "meld", "--data", str(hostile), "--epochs", "1", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "pwned").exists()


def test_ablation_switches_are_recorded(tmp_path):
    _, summary = _run(tmp_path, "ablated", "--size", "0.03", "--epochs", "1", "--no-afw", "--no-amw", "--no-grad-noise")
    assert summary["ablations"] == {"afw": False, "amw": False, "modulation": True, "grad_noise": False}
    assert summary["config"]["mmt_nlayers"] == 0 and summary["config"]["mmcosine"] is False
    with pytest.raises(SystemExit, match="--no-afw and --mmt-nlayers contradict"):
        train.main(["--dataset", "meld", "--no-afw", "--mmt-nlayers", "2", "--out", str(tmp_path / "x"), *TINY])


def test_the_complementary_corpus_is_chosen_by_flag_and_reopened_by_evaluate(tmp_path):
    out, summary = _run(tmp_path, "complementary", "--size", "0.05", "--epochs", "1", "--synthetic", "complementary")
    assert summary["data"] == "synthetic meld complementary (seed 12, size 0.05)" and summary["synthetic"] == "complementary"
    report = evaluate.main(["--checkpoint", str(out)])
    assert report["weighted_f1"] == pytest.approx(summary["test"]["weighted_f1"])
    with pytest.raises(SystemExit, match=r"^error: --synthetic complementary chooses the corpus made without --data"):
        train.main(["--dataset", "meld", "--data", str(out / "summary.json"), "--synthetic", "complementary",
                    "--out", str(tmp_path / "x")])
