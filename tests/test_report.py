"""The report CLI: PNGs of a tiny trained run, runs overlaid, and one error line for a folder that is not a run."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ada2i_fast import report, train
from ada2i_fast.training import plots
from conftest import whole_epoch_ticks

TINY = ["--hidden", "32", "--rank", "3", "--ffn-dim", "64", "--drop-rate", "0.1", "--lr", "2e-3", "--quiet"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    train.main(["--dataset", "meld", "--size", "0.05", "--epochs", "2", "--out", str(out), *TINY])
    return out


def _copy_of_run(run: Path, to: Path) -> Path:
    """A second run folder holding just what the report reads."""
    to.mkdir(parents=True)
    for name in ("metrics.jsonl", "summary.json"):
        shutil.copy(run / name, to / name)
    return to


def _assert_pngs(paths):
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE), path
        assert len(data) > 5_000, path


@pytest.fixture
def drawn(monkeypatch):
    """What each figure saved by ``plots`` drew: per file name, its lines' y data and its images' arrays."""
    figures = {}
    save = plots.save_figure

    def keep(fig, path):
        figures[Path(path).name] = dict(lines=[list(line.get_ydata()) for ax in fig.axes for line in ax.get_lines()],
                                        images=[np.asarray(image.get_array()) for ax in fig.axes for image in ax.images],
                                        axes=len(fig.axes), epoch_ticks=whole_epoch_ticks(fig),
                                        legend=[t.get_text() for legend in fig.legends for t in legend.get_texts()])
        save(fig, path)

    monkeypatch.setattr(plots, "save_figure", keep)
    return figures


def test_one_run_gets_its_pictures_in_its_own_folder_and_they_draw_its_numbers(trained_run, tmp_path, drawn):
    run = _copy_of_run(trained_run, tmp_path / "run")
    report.main([str(run)])
    _assert_pngs([run / "balance.png", run / "dev_f1.png", run / "confusion.png"])
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run / "summary.json").read_text())
    for m in "atv":
        assert [r["ratio"][m] for r in history] in drawn["balance.png"]["lines"]
        assert [r["coefficient"][m] for r in history] in drawn["balance.png"]["lines"]
        assert [r["dev"]["unimodal_weighted_f1"][m] for r in history] in drawn["dev_f1.png"]["lines"]
    assert [r["dev"]["weighted_f1"] for r in history] in drawn["dev_f1.png"]["lines"]
    counts = np.asarray(summary["test"]["confusion_matrix"], dtype=float)
    totals = counts.sum(1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    np.testing.assert_allclose(drawn["confusion.png"]["images"][0], shares)


def test_several_runs_are_overlaid_in_a_report_folder_beside_them(trained_run, tmp_path):
    runs = [_copy_of_run(trained_run, tmp_path / name) for name in ("seed1", "seed2")]
    report.main([str(run) for run in runs])
    out = tmp_path / "report"
    assert sorted(p.name for p in out.iterdir()) == [
        "balance.png", "confusion-seed1.png", "confusion-seed2.png", "dev_f1.png"
    ]
    _assert_pngs(out.iterdir())


def test_out_names_the_folder_and_runs_of_one_name_are_told_apart(trained_run, tmp_path):
    runs = [_copy_of_run(trained_run, tmp_path / group / "run") for group in ("lr1", "lr2")]
    written = report.write_report(runs, tmp_path / "pictures")
    assert {p.name for p in written} == {"balance.png", "dev_f1.png", "confusion-lr1-run.png", "confusion-lr2-run.png"}
    _assert_pngs(written)


def test_a_folder_without_metrics_is_one_error_line_naming_it(tmp_path):
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    with pytest.raises(SystemExit, match=r"^error: .*not-a-run: no metrics\.jsonl; not a training run folder"):
        report.main([str(empty)])
    with pytest.raises(SystemExit, match=r"^error: .*missing: no such run folder$"):
        report.main([str(tmp_path / "missing")])
    assert not list(empty.iterdir())


def test_an_unfinished_or_damaged_run_is_named(trained_run, tmp_path):
    run = _copy_of_run(trained_run, tmp_path / "run")
    (run / "summary.json").unlink()
    with pytest.raises(SystemExit, match=r"^error: .*run: no summary\.json; the run has not finished"):
        report.main([str(run)])
    shutil.copy(trained_run / "summary.json", run / "summary.json")
    with open(run / "metrics.jsonl", "a") as metrics:
        metrics.write('{"epoch": 3, "ratio": \n')
    with pytest.raises(SystemExit, match=r"^error: .*metrics\.jsonl, line 3: not JSON"):
        report.main([str(run)])


def test_the_epoch_axes_tick_whole_epochs(trained_run, tmp_path, drawn):
    report.main([str(_copy_of_run(trained_run, tmp_path / "run"))])
    for name in ("balance.png", "dev_f1.png"):
        ticks = drawn[name]["epoch_ticks"]
        assert ticks and all(t == int(t) for t in ticks), (name, ticks)  # a 2-epoch run: 1 and 2, not 1.25, 1.5, ...


def test_a_run_of_one_modality_has_nothing_to_balance_and_is_left_out_of_the_balance_picture(trained_run, tmp_path,
                                                                                               drawn, capsys):
    text = tmp_path / "text"
    train.main(["--dataset", "meld", "--size", "0.05", "--epochs", "1", "--modalities", "t", "--out", str(text), *TINY])
    assert drawn["training.png"]["axes"] == 2  # losses and dev F1; no ratio panel of a flat ρ = 1
    assert drawn["training.png"]["epoch_ticks"] and all(t == int(t) for t in drawn["training.png"]["epoch_ticks"])
    capsys.readouterr()

    report.main([str(text)])
    assert not (text / "balance.png").exists() and "balance.png" not in drawn
    assert "balance.png: no picture for text: a run of one modality has nothing to balance" in capsys.readouterr().out
    _assert_pngs([text / "dev_f1.png", text / "confusion.png"])

    both = _copy_of_run(trained_run, tmp_path / "atv")
    report.main([str(both), str(text), "--out", str(tmp_path / "both")])
    assert [label.split(" (")[0] for label in drawn["balance.png"]["legend"]] == ["atv"]
    assert "balance.png: leaves out text" in capsys.readouterr().out
