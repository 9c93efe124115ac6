"""The modality sweep on a tiny synthetic corpus: two worker processes sharing one SQLite study train
every (variant, seed) cell once, the report is rebuilt from the study alone, a second launch queues
only what is missing, and without optuna the command says how to install it."""

import json
import re
import subprocess
import sys
from collections import Counter

import pytest

optuna = pytest.importorskip("optuna")

from ada2i_fast import sweep  # noqa: E402
from ada2i_fast.studies import stats, variants  # noqa: E402

TINY = ["--dataset", "meld", "--hidden", "16", "--rank", "3", "--ffn-dim", "32", "--drop-rate", "0.1",
        "--lr", "2e-3", "--size", "0.03", "--epochs", "1", "--encoder-nlayers", "1", "--quiet"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TRAINED = re.compile(r"^worker (\d): +(\S+) seed (\d+): dev weighted F1", re.MULTILINE)


def _table_rows(markdown: str) -> list[str]:
    """The variant column of the Markdown table's body."""
    return [line.split("|")[1].strip() for line in markdown.splitlines() if line.startswith("| ") and "---" not in line][1:]


def _assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 5_000


def test_two_workers_share_one_study_and_train_every_cell_once(tmp_path, capfd):
    out = tmp_path / "sweep"
    report = sweep.main(["--out", str(out), "--seeds", "1", "2", "--workers", "2", "--", *TINY])

    cells = {(variant, seed) for variant in variants.SUBSETS for seed in (1, 2)}
    trained = Counter((variant, int(seed)) for _, variant, seed in TRAINED.findall(capfd.readouterr().out))
    assert set(trained) == cells and set(trained.values()) == {1}
    study = optuna.load_study(study_name="modality-sweep", storage=f"sqlite:///{out / 'study.db'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(sweep.cell_of(t) for t in complete) == sorted(cells)
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    for trial in complete:
        assert trial.value == trial.user_attrs["dev_weighted_f1"]
        assert 0 <= trial.user_attrs["test_weighted_f1"] <= 1
        variant, seed = sweep.cell_of(trial)
        run_dir = out / "modality-sweep" / variant / f"seed-{seed}"
        assert trial.user_attrs["run_dir"].endswith(str(run_dir.resolve()))
        assert (run_dir / "summary.json").is_file() and (run_dir / "train.log").is_file()
        assert not any((run_dir / name).exists() for name in ("model", "best.pt", "last.pt"))  # no --keep-weights

    assert _table_rows(report["markdown"]) == list(variants.SUBSETS)
    assert all(len(row["seeds"]) == 2 for row in report["rows"]) and not report["missing"]
    assert [row["variant"] for row in report["rows"] if "gap_to_full" in row] == list(variants.SUBSETS[1:])
    written = (out / "modality-sweep.md").read_text()
    assert written == report["markdown"]
    assert len(json.loads((out / "modality-sweep.json").read_text())["cells"]) == 14
    _assert_png(out / "modality-sweep.png")

    rebuilt = sweep.main(["--out", str(out), "--report-only", "--report", str(tmp_path / "again")])
    assert rebuilt["markdown"] == report["markdown"]
    assert (tmp_path / "again.md").read_text() == written
    _assert_png(tmp_path / "again.png")
    assert not TRAINED.findall(capfd.readouterr().out)


def test_a_second_launch_queues_only_the_missing_cells(tmp_path, capfd):
    out = tmp_path / "sweep"
    sweep.main(["--out", str(out), "--variants", "atv", "--seeds", "3", "--", *TINY])
    report = sweep.main(["--out", str(out), "--variants", "atv", "--ablations", "--seeds", "3", "--extend-study",
                         "--", *TINY])

    output = capfd.readouterr().out
    assert f"{len(sweep.ABLATIONS)} cells queued" in output
    assert Counter(variant for _, variant, _ in TRAINED.findall(output)) == Counter(["atv", *sweep.ABLATIONS])
    assert _table_rows(report["markdown"]) == ["atv", *sweep.ABLATIONS]
    assert all(row["verdict"] == "1 seed: no spread" for row in report["rows"] if "verdict" in row)  # one seed
    assert "± 0.000" not in report["markdown"] and "(1 seed: no spread)" in report["markdown"]
    summary = json.loads((out / "modality-sweep" / "no-afw" / "seed-3" / "summary.json").read_text())
    assert summary["ablations"]["afw"] is False and summary["config"]["modalities"] == "atv"

    with pytest.raises(SystemExit, match="was started with the trainer flags"):
        sweep.main(["--out", str(out), "--", *TINY, "--beta", "0.2"])

    # The same study as a recipe file: every trainer flag resolved at the top level, the sweep's own under sweep:.
    sweep.main(["--out", str(out), "--variants", "atv", "--ablations", "--seeds", "3", "--print-config", "--", *TINY])
    recipe = tmp_path / "study.yaml"
    recipe.write_text(capfd.readouterr().out)
    assert "\nlr: 0.002\nweight_decay: 1.0e-08\n" in recipe.read_text()
    assert "\nsweep:\n" in recipe.read_text() and "\n  seeds: [3]\n" in recipe.read_text()
    again = sweep.main(["--config", str(recipe)])
    assert "0 cells queued" in capfd.readouterr().out and again["markdown"] == report["markdown"]


def test_a_study_whose_trials_recorded_fewer_variants_as_parameters_goes_on(tmp_path, capfd):
    # Versions before the variants were user attributes suggested them from the VARIANTS of their day.
    out = tmp_path / "sweep"
    sweep.main(["--out", str(out), "--variants", "t", "--seeds", "1", "--", *TINY])
    study = optuna.load_study(study_name="modality-sweep", storage=f"sqlite:///{out / 'study.db'}")
    study.add_trial(optuna.trial.create_trial(
        params={"variant": "t"}, distributions={"variant": optuna.distributions.CategoricalDistribution(("t",))},
        state=optuna.trial.TrialState.FAIL))

    sweep.main(["--out", str(out), "--variants", "t", "a", "--seeds", "1", "--extend-study", "--", *TINY])

    assert Counter(variant for _, variant, _ in TRAINED.findall(capfd.readouterr().out)) == Counter(["t", "a"])


def _scored(argv, out, **kwargs):
    """A trial's summary without training it."""
    return {"best_dev_weighted_f1": 0.5, "test": {"weighted_f1": 0.4}, "best_epoch": 1}


def test_another_studys_database_is_refused_naming_the_difference_and_the_same_study_resumes(tmp_path, monkeypatch,
                                                                                           capfd):
    """Seeds and variants were not recorded: a database of the same name and trainer flags but other
    cells was merged silently, its seeds averaged into the report."""
    monkeypatch.setattr(sweep, "train_run", _scored)
    out = tmp_path / "sweep"
    sweep.main(["--out", str(out), "--variants", "t", "a", "--seeds", "1", "2", "--", *TINY])
    study = "^error: study 'modality-sweep' was started with the"
    choose = r"give those, pass --extend-study to add yours to its cells, or choose another --study-name or --out$"
    with pytest.raises(SystemExit, match=rf"{study} seeds 1 2, not 1 3; {choose}"):
        sweep.main(["--out", str(out), "--variants", "t", "a", "--seeds", "1", "3", "--", *TINY])
    with pytest.raises(SystemExit, match=rf"{study} variants t a, not t; {choose}"):
        sweep.main(["--out", str(out), "--variants", "t", "--seeds", "1", "2", "--", *TINY])
    capfd.readouterr()
    sweep.main(["--out", str(out), "--variants", "a", "t", "--seeds", "2", "1", "--", *TINY])  # the same cells
    assert "0 cells queued" in capfd.readouterr().out
    report = sweep.main(["--out", str(out), "--variants", "t", "--seeds", "3", "--extend-study", "--", *TINY])
    assert "1 cells queued" in capfd.readouterr().out and report["seeds"] == [1, 2, 3]
    recorded = optuna.load_study(study_name="modality-sweep", storage=f"sqlite:///{out / 'study.db'}").user_attrs
    assert (recorded["variants"], recorded["seeds"]) == (["t", "a"], [1, 2, 3])
    sweep.main(["--out", str(out), "--variants", "t", "a", "--seeds", "1", "2", "3", "--", *TINY])  # resumes
    assert "1 cells queued" in capfd.readouterr().out  # a, seed 3


def test_the_full_model_is_the_modalities_flag_and_ablations_keep_them(tmp_path, capfd):
    out = tmp_path / "sweep"
    report = sweep.main(["--out", str(out), "--modalities", "ta", "--variants", "at", "t", "no-afw", "--seeds", "5",
                         "--keep-weights", "--", *TINY])
    assert (out / "modality-sweep" / "t" / "seed-5" / "model" / "model.safetensors").is_file()
    assert report["full"] == "at"
    assert [(row["variant"], row["kind"]) for row in report["rows"]] == [("at", "full"), ("t", "single"),
                                                                          ("no-afw", "ablation")]
    assert [row["variant"] for row in report["rows"] if "gap_to_full" in row] == ["t", "no-afw"]
    summary = json.loads((out / "modality-sweep" / "no-afw" / "seed-5" / "summary.json").read_text())
    assert summary["config"]["modalities"] == "at" and summary["ablations"]["afw"] is False
    with pytest.raises(SystemExit, match=r"^error: --variants tv: not a subset of --modalities at"):
        sweep.main(["--out", str(tmp_path / "other"), "--modalities", "at", "--variants", "tv", "--", *TINY])
    with pytest.raises(SystemExit, match=r"^error: study 'modality-sweep' was started with the full model's "
                                         r"modalities at, not atv;"):
        sweep.main(["--out", str(out), "--modalities", "atv", "--variants", "atv", "--seeds", "5", "--", *TINY])
    with pytest.raises(SystemExit, match=r"^error: --modalities 'tx'"):
        sweep.main(["--out", str(out), "--modalities", "tx", "--", *TINY])


def test_flags_the_sweep_sets_itself_are_refused(tmp_path):
    with pytest.raises(SystemExit, match=r"^error: .* sets --seed, --modalities for each trial itself"):
        sweep.main(["--out", str(tmp_path), "--", *TINY, "--seed", "4", "--modalities", "at"])
    recipe = tmp_path / "study.yaml"
    recipe.write_text("dataset: meld\nseed: 4\nsweep:\n  seeds: [1]\n")
    with pytest.raises(SystemExit, match=r"^error: .*study\.yaml: seed: python -m ada2i_fast\.sweep sets it for each "
                                         r"trial itself; drop it$"):
        sweep.main(["--config", str(recipe)])
    recipe.write_text("sweep:\n  seeds: one\n")
    with pytest.raises(SystemExit, match=r"^error: .*study\.yaml: sweep\.seeds: invalid int value: 'one'$"):
        sweep.main(["--config", str(recipe)])
    with pytest.raises(SystemExit, match=r"^error: give --config and --print-config before --"):
        sweep.main(["--out", str(tmp_path), "--", "--config", str(recipe)])
    with pytest.raises(SystemExit, match=r"^error: no study database at"):
        sweep.main(["--out", str(tmp_path / "nothing"), "--report-only"])


def test_the_verdict_compares_the_gap_with_its_seed_spread_and_one_seed_claims_none():
    assert stats.verdict(stats.mean_std([-0.07, -0.03])) == "full model better"
    assert stats.verdict(stats.mean_std([-0.03, 0.01])) == "within seed spread"
    assert stats.verdict(stats.mean_std([0.07, 0.05])) == "variant better"
    assert stats.verdict(stats.mean_std([0.02])) == "1 seed: no spread"
    assert stats.pm(stats.mean_std([0.5])) == "0.500 (1 seed: no spread)"


def test_without_optuna_the_package_imports_and_the_commands_say_how_to_install_it(tmp_path):
    script = (
        "import sys; sys.modules['optuna'] = None\n"  # makes `import optuna` fail
        "import ada2i_fast, ada2i_fast.sweep, ada2i_fast.tune\n"
        "for command in (ada2i_fast.sweep, ada2i_fast.tune):\n"
        "    try:\n"
        "        command.main(['--out', 'unused'])\n"
        "    except SystemExit as stop:\n"
        "        print(stop.code)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    line = 'error: this command needs optuna; install it with: pip install "ada2i-fast[sweep]"'
    assert result.stdout.splitlines() == [line, line]
