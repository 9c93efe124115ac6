"""--tensorboard: event files TensorBoard's own reader opens, with the run's numbers under the documented tags."""

import dataclasses
import json
import sys

import pytest

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from ada2i_fast import train  # noqa: E402
from ada2i_fast.training.trainer import Trainer  # noqa: E402

TINY = ["--dataset", "meld", "--size", "0.05", "--hidden", "16", "--rank", "3", "--ffn-dim", "32",
        "--drop-rate", "0.1", "--lr", "2e-3", "--start-mod", "2", "--quiet"]


def _events(folder):
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def test_event_files_hold_the_run_per_step_and_per_epoch(tmp_path, monkeypatch):
    evaluate = Trainer.evaluate

    def best_dev_in_epoch_one(trainer, split):  # so that the run's last epoch is not its best
        result = evaluate(trainer, split)
        return dataclasses.replace(result, weighted_f1=1.0 / trainer.epoch) if split == "dev" else result

    monkeypatch.setattr(Trainer, "evaluate", best_dev_in_epoch_one)
    out = tmp_path / "run"
    train.main([*TINY, "--out", str(out), "--epochs", "2", "--tensorboard"])
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    events = _events(out / "tensorboard")
    tags = events.Tags()

    per_step = [e.step for e in events.Scalars("train/loss_per_step")]
    steps_per_epoch = len(per_step) // 2
    assert per_step == list(range(1, 2 * steps_per_epoch + 1)) and steps_per_epoch > 1
    for m in "atv":
        rho, k = events.Scalars(f"rho/{m}"), events.Scalars(f"k/{m}")
        assert len(rho) == len(k) == len(per_step)
        for epoch, record in enumerate(metrics):
            in_epoch = slice(epoch * steps_per_epoch, (epoch + 1) * steps_per_epoch)
            assert sum(e.value for e in rho[in_epoch]) / steps_per_epoch == pytest.approx(record["ratio"][m], rel=1e-5)
            assert sum(e.value for e in k[in_epoch]) / steps_per_epoch == pytest.approx(record["coefficient"][m], rel=1e-5)

    def by_epoch(tag):
        return [(e.step, e.value) for e in events.Scalars(tag)]

    assert by_epoch("dev/weighted_f1") == [(r["epoch"], pytest.approx(r["dev"]["weighted_f1"])) for r in metrics]
    assert by_epoch("train/loss") == [(r["epoch"], pytest.approx(r["train"]["loss"])) for r in metrics]
    assert by_epoch("lr") == [(r["epoch"], pytest.approx(r["lr"])) for r in metrics]
    for m in "atv":
        assert by_epoch(f"dev/unimodal_weighted_f1/{m}") == [
            (r["epoch"], pytest.approx(r["dev"]["unimodal_weighted_f1"][m])) for r in metrics]
    assert {"dev/loss", "dev/accuracy", "throughput/utterances_per_second", "throughput/seconds_per_step"} <= set(
        tags["scalars"])
    # The test scores of the best-dev model sit where the run ended, on the per-epoch scalars' axis.
    assert summary["best_epoch"] == 1 and len(metrics) == 2
    assert by_epoch("test/weighted_f1") == [(2, pytest.approx(summary["test"]["weighted_f1"]))]
    assert by_epoch("test/accuracy") == [(2, pytest.approx(summary["test"]["accuracy"]))]
    assert [e.step for e in events.Images("dev/confusion_matrix")] == [1, 2]
    (test_image,) = events.Images("test/confusion_matrix")
    assert test_image.encoded_image_string.startswith(b"\x89PNG") and test_image.step == 2


def test_without_the_flag_there_are_no_event_files_and_overwrite_removes_old_ones(tmp_path):
    out = tmp_path / "run"
    train.main([*TINY, "--out", str(out), "--epochs", "1", "--tensorboard"])
    assert (out / "tensorboard").is_dir()
    train.main([*TINY, "--out", str(out), "--epochs", "1", "--overwrite"])
    assert not (out / "tensorboard").exists()


def test_without_tensorboard_installed_the_flag_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # its import fails
    with pytest.raises(SystemExit, match=r'--tensorboard needs the tensorboard package: pip install "ada2i-fast\[tensorboard\]"'):
        train.main([*TINY, "--out", str(tmp_path / "run"), "--epochs", "1", "--tensorboard"])
