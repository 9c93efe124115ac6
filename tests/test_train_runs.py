"""Runs a person can trust: resume after an interruption, no lost work, no silent NaN, one clear error
for every bad flag (tiny synthetic corpora, CPU)."""

import dataclasses
import json
import os
import re
import signal

import pytest
import torch

from ada2i_fast import Ada2I, TrainConfig, evaluate, train
from ada2i_fast.checkpointing.torch_file import CHECKSUMS, write_checkpoint
from ada2i_fast.training import trainer
from ada2i_fast.training.checkpoint import load_any_checkpoint, save_checkpoint
from ada2i_fast.training.step import make_optimizer, train_step
from conftest import random_batch, tiny_config

TINY = ["--dataset", "meld", "--size", "0.05", "--hidden", "16", "--rank", "3", "--ffn-dim", "32",
        "--drop-rate", "0.1", "--lr", "2e-3", "--start-mod", "2", "--quiet"]


def _run(out, *extra):
    return train.main([*TINY, "--out", str(out), *extra])


def _comparable(out):
    summary = json.loads((out / "summary.json").read_text())
    summary.pop("timing"), summary.pop("run_id")  # every run has its own id
    metrics = [{k: v for k, v in json.loads(line).items() if k not in ("seconds", "utterances_per_second")}
               for line in (out / "metrics.jsonl").read_text().splitlines()]
    return summary, metrics, load_any_checkpoint(out)[0].state_dict()


def _steps_then(monkeypatch, action, at_steps):
    """Wrap the trainer's step: after the step numbers in ``at_steps`` (1-based, over the run), call ``action``."""
    calls = {"n": 0}

    def step(model, batch, *args, **kwargs):
        calls["n"] += 1
        batch = action(calls["n"], batch) if calls["n"] in at_steps else batch
        return train_step(model, batch, *args, **kwargs)

    monkeypatch.setattr(trainer, "train_step", step)


def _interrupt(n, batch):
    os.kill(os.getpid(), signal.SIGINT)  # the handler only records it; the step still runs whole
    return batch


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    _run(out, "--epochs", "3")
    return _comparable(out)


@pytest.mark.parametrize("stop_after_step", [6, 9])  # 6 steps make an epoch here: an epoch's end, and mid-epoch
def test_a_run_interrupted_and_resumed_ends_as_an_uninterrupted_one(tmp_path, monkeypatch, uninterrupted, capsys,
                                                                   stop_after_step):
    out = tmp_path / "run"

    _steps_then(monkeypatch, _interrupt, {stop_after_step})
    with pytest.raises(SystemExit) as stopped:
        _run(out, "--epochs", "3")
    assert stopped.value.code == 128 + signal.SIGINT
    assert f"Resume with: python -m ada2i_fast.train --resume {out}" in capsys.readouterr().err
    assert not (out / "summary.json").exists()
    monkeypatch.undo()
    train.main(["--resume", str(out), "--quiet"])
    summary, metrics, weights = _comparable(out)
    want_summary, want_metrics, want_weights = uninterrupted
    assert (summary, metrics) == (want_summary, want_metrics)
    assert all(torch.equal(weights[k], want_weights[k]) for k in want_weights)


def test_resume_refuses_changed_settings_and_a_folder_without_state(tmp_path):
    with pytest.raises(SystemExit, match="--resume continues a run with its own settings; drop --lr"):
        train.main(["--resume", str(tmp_path), "--lr", "1e-3"])
    with pytest.raises(SystemExit, match="no last.pt there"):
        train.main(["--resume", str(tmp_path)])


def _refusal(out, *flags) -> str:
    """The error of a new run into ``out``, which holds a run already."""
    with pytest.raises(SystemExit) as refused:
        _run(out, *flags)
    message = str(refused.value.code)
    assert message.startswith(f"error: {out} already holds a run (")
    return message


SMALL = ("--size", "0.03", "--batch-size", "30")  # a smaller corpus, in two steps an epoch


def test_an_existing_run_is_refused_with_advice_that_works_for_its_state(tmp_path, monkeypatch):
    kept = tmp_path / "kept"
    _run(kept, "--epochs", "1", "--keep-last", *SMALL)
    advice = _refusal(kept, "--epochs", "1")
    assert "(run.json, metrics.jsonl, best.pt, last.pt, model, summary.json, training.png)" in advice
    extend = re.search(r"kept its last\.pt: extend it with --resume (\S+) --epochs N \(N > (\d+)\), or replace it", advice)
    assert extend and extend.group(1) == str(kept)
    assert train.main(["--resume", extend.group(1), "--epochs", str(int(extend.group(2)) + 1), "--quiet"])["epochs_run"] == 2

    for name in ("best.pt", "last.pt"):  # as a run without --keep-last ends: nothing can continue it
        (kept / name).unlink()
    advice = _refusal(kept, "--epochs", "1")
    assert advice.endswith("it has finished and its last.pt was removed, so it cannot be continued: replace it with "
                           "--overwrite or choose another --out")
    _run(kept, "--epochs", "1", "--overwrite", "--seed", "3", *SMALL)
    assert json.loads((kept / "summary.json").read_text())["train_config"]["seed"] == 3
    assert len((kept / "metrics.jsonl").read_text().splitlines()) == 1

    stopped = tmp_path / "stopped"  # no epoch beats the first (lr 1e-12): early stopping ends it after epoch 2
    _steps_then(monkeypatch, _interrupt, {1})
    with pytest.raises(SystemExit):
        _run(stopped, "--epochs", "3", "--patience", "1", "--lr", "1e-12", "--keep-last", *SMALL)
    monkeypatch.undo()
    advice = _refusal(stopped, "--epochs", "1")
    resume = re.search(r"it stopped before its end: continue it with --resume (\S+), or replace it", advice)
    assert resume and train.main(["--resume", resume.group(1), "--quiet"])["epochs_run"] == 2
    advice = _refusal(stopped, "--epochs", "1")  # last.pt kept, but more epochs would not continue it
    assert "it stopped early after epoch 2" in advice and "--resume" not in advice


def test_an_interrupted_checkpoint_write_keeps_the_previous_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = Ada2I(tiny_config())
    save_checkpoint(tmp_path / "best.pt", model, epoch=1)
    before = (tmp_path / "best.pt").read_bytes()

    def torn_save(obj, handle):
        handle.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "best.pt", model, epoch=2)
    assert (tmp_path / "best.pt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]


def _poison(n, batch):
    return dataclasses.replace(batch, features={m: x * float("nan") for m, x in batch.features.items()})


def test_a_nan_batch_is_skipped_and_reported(tmp_path, monkeypatch):
    out = tmp_path / "run"
    _steps_then(monkeypatch, _poison, {2})
    summary = _run(out, "--epochs", "2")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_steps"] for r in records] == [1, 0]
    assert all(isinstance(r["train"]["loss"], float) for r in records)
    model, _ = load_any_checkpoint(out)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert summary["test"]["weighted_f1"] > 0


def test_a_step_with_a_non_finite_loss_changes_nothing():
    torch.manual_seed(0)
    config = tiny_config()
    model, recipe = Ada2I(config), TrainConfig()
    optimizer = make_optimizer(model, recipe)
    batch = random_batch(config, [3, 2])
    train_step(model, batch, optimizer, recipe, modulate=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    moments = [s["exp_avg"].clone() for s in optimizer.state.values()]
    logs = train_step(model, _poison(0, batch), optimizer, recipe, modulate=True)
    assert logs["skipped"] and logs["nonfinite_classification"] and logs["nonfinite_feature"]
    assert logs["loss"] == 0 and torch.equal(logs["ratios"], torch.zeros(3))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(m, s["exp_avg"]) and s["step"] == 1 for m, s in zip(moments, optimizer.state.values()))


def test_a_run_that_only_sees_nan_stops_naming_epoch_step_and_term_and_writes_no_best(tmp_path, monkeypatch):
    out = tmp_path / "run"
    _steps_then(monkeypatch, _poison, set(range(1, 100)))
    with pytest.raises(SystemExit, match=r"^error: stopped in epoch 1: 6 consecutive steps up to step 6 had a "
                                         r"non-finite loss .* \(non-finite loss terms: classification in 6, feature in 6\)$"):
        _run(out, "--epochs", "3", "--max-skipped-steps", "3")
    assert not (out / "best.pt").exists() and not (out / "model").exists()


def test_evaluate_refuses_non_finite_or_misshapen_weights_and_another_datasets_classes(tmp_path):
    out = tmp_path / "run"
    _run(out, "--epochs", "1", "--keep-last")
    payload = torch.load(out / "best.pt", weights_only=False)
    payload.pop(CHECKSUMS)
    key = "head.fc_out.weight"
    for name, change, message in (
        ("nan.pt", lambda w: w * float("nan"), "holds non-finite values"),
        ("shape.pt", lambda w: w[:, :-1], r"should have shape \(7, 48\), found \(7, 47\)"),
    ):
        broken = {**payload, "state_dict": {**payload["state_dict"], key: change(payload["state_dict"][key])}}
        write_checkpoint(tmp_path / name, broken)  # well-formed files with checksums of their own
        with pytest.raises(SystemExit, match=rf"^error: .*{name}: '{key}' {message}"):
            evaluate.main(["--checkpoint", str(tmp_path / name)])
    with pytest.raises(SystemExit, match="trained on meld, not iemocap"):
        evaluate.main(["--checkpoint", str(out / "best.pt"), "--dataset", "iemocap"])


def test_bad_flags_get_one_clear_line(tmp_path):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(SystemExit, match=r"^error: --out .*a_file is a file, not a folder"):
        _run(tmp_path / "a_file", "--epochs", "1")
    with pytest.raises(SystemExit, match=r"^error: --device 'gpu0'"):
        _run(tmp_path / "x", "--device", "gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match=r"^error: --device cuda: CUDA is not available here"):
            _run(tmp_path / "x", "--device", "cuda")


def test_without_out_every_run_gets_a_fresh_dated_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        train.main([*TINY, "--epochs", "1"])
    runs = sorted((tmp_path / "runs" / "meld").iterdir())
    assert len(runs) == 2 and all((run / "summary.json").is_file() for run in runs)
    assert capsys.readouterr().out.startswith(f"run {runs[0].relative_to(tmp_path)}: ")


def test_temp_files_of_a_killed_write_are_removed_when_the_run_continues(tmp_path):
    out = tmp_path / "run"
    _run(out, "--epochs", "1", "--keep-last")
    torn = out / ".last.pt.x1y2.tmp"
    torn.write_bytes(b"half of a state a SIGKILL cut short")
    train.main(["--resume", str(out), "--quiet"])  # a finished run: only the test report again
    assert not torn.exists() and (out / "last.pt").is_file()


@pytest.mark.parametrize("precision", ["fp32", "bf16", "auto"])
def test_the_precision_recorded_is_the_autocast_that_ran(tmp_path, monkeypatch, precision):
    from ada2i_fast.devices import cpu_has_bf16_instructions

    seen = []
    forward = Ada2I.forward

    def spy(model, batch):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else torch.float32)
        return forward(model, batch)

    monkeypatch.setattr(Ada2I, "forward", spy)
    summary = _run(tmp_path / "run", "--epochs", "1", "--precision", precision)
    ran = "bf16" if precision == "bf16" or (precision == "auto" and cpu_has_bf16_instructions()) else "fp32"
    assert summary["train_config"]["precision"] == ran
    steps = 6  # one epoch of TINY's training split; evaluation runs in float32
    assert seen[:steps] == [torch.bfloat16 if ran == "bf16" else torch.float32] * steps
    assert set(seen[steps:]) == {torch.float32}


def test_the_step_trace_records_scores_ratios_coefficients_and_norms_without_changing_the_run(
        tmp_path, monkeypatch, uninterrupted):
    out = tmp_path / "traced"
    _run(out, "--epochs", "3", "--trace")
    summary, metrics, weights = _comparable(out)
    want_summary, want_metrics, want_weights = uninterrupted
    assert all(torch.equal(weights[k], want_weights[k]) for k in want_weights)
    norms = ("grad_norm_before", "grad_norm_after", "update_norm")
    assert [{k: v for k, v in record.items() if k not in norms} for record in metrics] == want_metrics
    summary["train_config"].pop("trace"), want_summary["train_config"].pop("trace")
    assert summary == want_summary

    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert [(row["epoch"], row["step"]) for row in steps] == [(e, s) for e in (1, 2, 3) for s in range(1, 7)]
    for record in metrics:
        rows = [row for row in steps if row["epoch"] == record["epoch"]]
        for key in ("unimodal_score", "ratio", "coefficient", *norms):
            for m in "atv":
                assert record[key][m] == pytest.approx(sum(row[key][m] for row in rows) / len(rows), rel=1e-5)
    for row in steps:
        assert min(row["ratio"].values()) == 1.0 and all(0 < p < 1 for p in row["unimodal_score"].values())
        if row["epoch"] == 1:  # --start-mod 2: nothing modulated yet (the norm before: from the clip's own pass)
            assert row["grad_norm_after"] == pytest.approx(row["grad_norm_before"], rel=1e-5)
        assert all(norm > 0 for norm in row["update_norm"].values())

    # Without noise, modulation scales each encoder's gradient by exactly its coefficient.
    plain = tmp_path / "no-noise"
    _run(plain, "--epochs", "2", "--trace", "--no-grad-noise")
    for row in map(json.loads, (plain / "steps.jsonl").read_text().splitlines()):
        k = row["coefficient"] if row["epoch"] == 2 else dict.fromkeys("atv", 1.0)
        for m in "atv":
            assert row["grad_norm_after"][m] == pytest.approx(k[m] * row["grad_norm_before"][m], rel=1e-5)

    # An interrupted traced run resumes with the same trace.
    resumed = tmp_path / "resumed"
    _steps_then(monkeypatch, lambda n, batch: (os.kill(os.getpid(), signal.SIGINT), batch)[1], {9})
    with pytest.raises(SystemExit):
        _run(resumed, "--epochs", "3", "--trace")
    monkeypatch.undo()
    train.main(["--resume", str(resumed), "--quiet"])
    assert (resumed / "steps.jsonl").read_text() == (out / "steps.jsonl").read_text()
