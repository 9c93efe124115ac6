"""The balance analyses on a tiny sweep's worth of run folders (VARIANT/seed-N, trained here)."""

import json
import shutil
import statistics
from types import SimpleNamespace

import pytest

from ada2i_fast import analyze, evaluate, train
from ada2i_fast.studies import analyses
from ada2i_fast.studies import plots as analysis_plots
from conftest import whole_epoch_ticks
from ada2i_fast.inference.saved_model import open_checkpoint_and_corpus
from ada2i_fast.studies.robustness import robustness

TINY = ["--dataset", "meld", "--synthetic", "complementary", "--size", "0.03", "--epochs", "2", "--start-mod", "2",
        "--hidden", "16", "--rank", "3", "--ffn-dim", "32", "--drop-rate", "0.1", "--lr", "2e-3",
        "--encoder-nlayers", "1", "--quiet", "--trace"]
VARIANTS = {"at": [], "a": [], "t": [], "no-modulation": ["--no-modulation"], "no-grad-noise": ["--no-grad-noise"],
            "no-amw": ["--no-amw"], "no-afw": ["--no-afw"]}


@pytest.fixture(scope="module")
def sweep_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep") / "study"
    for variant, flags in VARIANTS.items():
        modalities = variant if variant in ("at", "a", "t") else "at"
        for seed in (1, 2):
            train.main([*TINY, "--modalities", modalities, *flags, "--seed", str(seed),
                        "--out", str(root / variant / f"seed-{seed}")])
    return root


def _summary(root, variant, seed):
    return json.loads((root / variant / f"seed-{seed}" / "summary.json").read_text())


def test_the_tables_are_the_runs_numbers(sweep_runs):
    runs = analyses.SweepRuns(sweep_runs)
    assert runs.full == "at" and sorted(runs.variant("full")) == [1, 2]
    summaries = {(v, s): _summary(sweep_runs, v, s) for v in VARIANTS for s in (1, 2)}

    unimodal = analyses.unimodal(runs)
    audio = next(row for row in unimodal["rows"] if row["modality"] == "a")
    alone = [summaries[("a", s)]["test"]["weighted_f1"] for s in (1, 2)]
    assert audio["alone_test"] == {"mean": statistics.fmean(alone), "std": statistics.stdev(alone), "n": 2}
    inside = [summaries[("at", s)]["test"]["unimodal_weighted_f1"]["a"] for s in (1, 2)]
    assert audio["inside_test"]["mean"] == pytest.approx(statistics.fmean(inside))

    gaps = analyses.gaps(runs)
    text = next(row for row in gaps["rows"] if row["variant"] == "t")
    paired = [summaries[("at", s)]["test"]["weighted_f1"] - summaries[("t", s)]["test"]["weighted_f1"] for s in (1, 2)]
    assert text["gap_test"]["mean"] == pytest.approx(statistics.fmean(paired))
    assert [row["variant"] for row in gaps["rows"]] == ["a", "t"]

    ratios = analyses.ratios(runs)
    history = [json.loads(line) for line in (sweep_runs / "no-afw" / "seed-1" / "metrics.jsonl").read_text().splitlines()]
    spread = statistics.fmean(max(r["ratio"].values()) - 1 for r in history if r["epoch"] >= 2)
    assert analyses._ratio_spread(runs.variant("no-afw")[1]) == pytest.approx(spread)
    assert [row["variant"] for row in ratios["rows"]] == ["full", "no-amw", "no-afw", "no-modulation"]
    assert ratios["curves"]["full"]["t"]["1"]["mean"] == pytest.approx(
        statistics.fmean(json.loads((sweep_runs / "at" / f"seed-{s}" / "metrics.jsonl").read_text().splitlines()[0])
                         ["ratio"]["t"] for s in (1, 2)))


def test_robustness_drops_or_corrupts_one_modality_of_the_saved_models(sweep_runs):
    best = sweep_runs / "at" / "seed-1" / "model"
    model, corpus, recipe, _ = open_checkpoint_and_corpus(best, None, None)
    result = robustness(model, corpus, levels=(0.0, 1.0, 100.0), seed=1, batch_size=recipe.batch_size)
    assert result["clean"] == pytest.approx(evaluate.main(["--checkpoint", str(best)])["weighted_f1"])
    assert result["noise"]["a"][0] == result["clean"] == result["noise"]["t"][0]
    alone = open_checkpoint_and_corpus(best, None, None)[0].restricted_to("t")
    from ada2i_fast.training.eval_loop import evaluate_split
    without_audio = evaluate_split(alone, corpus.splits["test"], batch_size=10, device="cpu").weighted_f1
    assert result["missing"]["a"] == pytest.approx(without_audio)
    assert result["noise"]["t"][2] != result["clean"]  # noise a hundred stds wide changes the predictions


def test_the_command_writes_every_analysis_and_plots_the_tables_numbers(sweep_runs, tmp_path, monkeypatch):
    drawn = {}
    original = analysis_plots.save_figure

    def keep(fig, path):
        drawn[path.name] = [line.get_ydata() for ax in fig.axes for line in ax.get_lines()]
        original(fig, path)

    monkeypatch.setattr(analysis_plots, "save_figure", keep)
    analyze.main(["all", str(sweep_runs), "--out", str(tmp_path), "--levels", "0", "2", "--name", "tiny"])
    for name in analyze.ANALYSES:
        assert (tmp_path / f"{name}.png").stat().st_size > 0
        assert (tmp_path / f"{name}.md").read_text().startswith("## ")
    ratios = json.loads((tmp_path / "ratios.json").read_text())
    full_text = [stat["mean"] for stat in ratios["curves"]["full"]["t"].values()]
    assert any(list(y) == full_text for y in drawn["ratios.png"])
    robust = json.loads((tmp_path / "robustness.json").read_text())
    assert any(list(y) == [stat["mean"] for stat in robust["rows"][0]["noise"]["a"]] for y in drawn["robustness.png"])
    assert "tiny, 2 seeds" in (tmp_path / "gaps.md").read_text()
    with pytest.raises(SystemExit, match=r"^error: .*nowhere: no such folder"):
        analyze.main(["gaps", str(tmp_path / "nowhere")])



def test_the_modulation_table_is_the_traced_steps_numbers(sweep_runs):
    runs = analyses.SweepRuns(sweep_runs)
    result = analyses.modulation(runs)
    steps = {v: [json.loads(line) for line in (sweep_runs / v / "seed-1" / "steps.jsonl").read_text().splitlines()]
             for v in ("at", "no-modulation")}
    modulated = {v: [s for s in rows if s["epoch"] >= 2] for v, rows in steps.items()}
    text = next(row for row in result["rows"] if row["modality"] == "t")
    k_seed_1 = statistics.fmean(s["coefficient"]["t"] for s in modulated["at"])
    k_seed_2 = analyses._step_means(runs.variant("full")[2])["t"]["k"]
    assert text["k"]["mean"] == pytest.approx((k_seed_1 + k_seed_2) / 2)
    ratio_1 = (statistics.fmean(s["update_norm"]["t"] for s in modulated["at"])
               / statistics.fmean(s["update_norm"]["t"] for s in modulated["no-modulation"]))
    assert ratio_1 in [pytest.approx(r) for r in _per_seed_ratios(runs, "t")]
    own = {v: [_summary(sweep_runs, v, seed)["best_epoch"] for seed in (1, 2)] for v in ("at", "no-modulation")}
    own_dev = {v: [next(json.loads(line) for line in (sweep_runs / v / f"seed-{seed}" / "metrics.jsonl").read_text()
                        .splitlines() if json.loads(line)["epoch"] == epoch)["dev"]["unimodal_weighted_f1"]["t"]
                   for seed, epoch in zip((1, 2), own[v])] for v in own}
    assert text["own_dev_full"]["mean"] == pytest.approx(statistics.fmean(own_dev["at"]))
    assert text["own_dev_gain_full"]["mean"] == pytest.approx(
        statistics.fmean(a - b for a, b in zip(own_dev["at"], own_dev["no-modulation"])))
    assert "own head: gain over unmodulated (dev)" in result["markdown"]
    for s in modulated["no-modulation"]:  # without modulation nothing scales or adds to the gradients
        assert s["grad_norm_after"] == pytest.approx(s["grad_norm_before"], rel=1e-5)  # the before: the clip's pass


def _per_seed_ratios(runs, m):
    full, other = runs.variant("full"), runs.variant("no-modulation")
    return [analyses._step_means(full[s])[m]["update"] / analyses._step_means(other[s])[m]["update"] for s in (1, 2)]


def test_the_gaps_legend_covers_no_bar(tmp_path, monkeypatch):
    figures = {}
    monkeypatch.setattr(analysis_plots, "save_figure", lambda fig, path: figures.setdefault(path.name, fig))
    gaps = {"at": 0.01, "av": 0.12, "tv": 0.05, "a": 0.2, "t": 0.06, "v": 0.25}  # the tallest bar on the right
    rows = [dict(variant=v, kind="pair" if len(v) == 2 else "single", gap_test=dict(mean=g, std=0.02, n=3),
                 gap_dev=dict(mean=g - 0.01, std=0.02, n=3)) for v, g in gaps.items()]
    analysis_plots.plot_gaps(SimpleNamespace(full="atv"), {"rows": rows}, tmp_path / "gaps.png", title="gaps")
    fig = figures["gaps.png"]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]
    bars = [patch.get_window_extent(renderer) for ax in fig.axes for patch in ax.patches]
    assert legends and len(bars) == 2 * len(rows)
    for legend in legends:
        box = legend.get_window_extent(renderer)
        assert not any(box.overlaps(bar) for bar in bars)


SHORT_STUDY = """\
dataset: meld
synthetic: complementary
size: 0.03
epochs: 1            # modulation starts at the preset's epoch 4: no epoch of this study modulates
hidden: 16
rank: 3
ffn_dim: 32
drop_rate: 0.1
lr: 2e-3
encoder_nlayers: 1
trace: true
sweep:
  seeds: [1]
  variants: [at, t]
  keep_weights: true
  out: {out}
"""


def test_all_on_a_sweep_that_never_modulated_writes_what_it_can_and_says_what_it_skipped(tmp_path, monkeypatch,
                                                                                         capsys):
    pytest.importorskip("optuna")
    from ada2i_fast import sweep

    recipe = tmp_path / "study.yaml"
    recipe.write_text(SHORT_STUDY.format(out=tmp_path / "sweep"))
    sweep.main(["--config", str(recipe)])
    assert ("gradient modulation never runs: it starts at epoch 4 (--start-mod), after the run's last (--epochs 1): "
            "no trial modulates") in capsys.readouterr().out
    runs = tmp_path / "sweep" / "modality-sweep"

    ticks = {}
    original = analysis_plots.save_figure

    def keep(fig, path):
        ticks[path.name] = whole_epoch_ticks(fig)
        original(fig, path)

    monkeypatch.setattr(analysis_plots, "save_figure", keep)
    analyze.main(["all", str(runs), "--out", str(tmp_path / "analysis"), "--levels", "1"])  # returns: exit 0
    said = capsys.readouterr().out
    for name in ("unimodal", "scores", "gaps", "robustness"):
        assert (tmp_path / "analysis" / f"{name}.md").is_file()
    for name in ("ratios", "modulation"):
        assert not (tmp_path / "analysis" / f"{name}.md").exists()
        assert (f"skipped {name}: no run of the full model (at) reached a modulated epoch (modulation starts at epoch "
                "4, the runs trained 1 epoch(s)); train the sweep with --epochs above --start-mod") in said
    assert set(ticks["scores.png"]) == {1.0}  # a whole epoch per panel, and no line at epoch 4 stretching the axis

    for name in ("ratios", "modulation"):
        with pytest.raises(SystemExit, match=rf"^error: {name}: no run of the full model \(at\) reached a modulated "
                                             "epoch"):
            analyze.main([name, str(runs)])

    def cannot(analysis, *args):
        raise analyses.NotAvailable(f"{analysis}: a reason")

    monkeypatch.setattr(analyze, "write_analysis", cannot)
    with pytest.raises(SystemExit, match=r"^error: .*: no analysis could run \(see the reasons above\)$"):
        analyze.main(["all", str(runs)])
    assert "skipped robustness: a reason" in capsys.readouterr().out


def test_unfinished_cells_are_left_out_by_name_and_gaps_without_a_finished_variant_is_one_line(sweep_runs, tmp_path,
                                                                                               capsys):
    root = tmp_path / "study"
    shutil.copytree(sweep_runs / "at" / "seed-1", root / "at" / "seed-1")
    (root / "a" / "seed-1").mkdir(parents=True)
    shutil.copy(sweep_runs / "a" / "seed-1" / "metrics.jsonl", root / "a" / "seed-1")  # a run still training
    with pytest.raises(SystemExit, match=r"^error: gaps: no finished run of a pair or single modality to compare the "
                                         r"full model \(at\) with$"):
        analyze.main(["gaps", str(root)])
    assert "left out, unfinished (no summary.json yet): a/seed-1" in capsys.readouterr().out
    analyze.main(["all", str(root), "--levels", "1"])
    said = capsys.readouterr().out
    assert "skipped gaps: no finished run of a pair or single modality" in said and "Traceback" not in said
