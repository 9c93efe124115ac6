"""The hyperparameter search on a tiny synthetic corpus: trials report dev F1 per epoch to a median
pruner, the best parameters are written as JSON, and the searched flags cannot be fixed by hand."""

import json

import pytest

optuna = pytest.importorskip("optuna")

from ada2i_fast import tune  # noqa: E402

TINY = ["--dataset", "meld", "--hidden", "16", "--ffn-dim", "32", "--drop-rate", "0.1", "--size", "0.03",
        "--epochs", "2", "--encoder-nlayers", "1", "--quiet"]


def test_a_few_trials_with_pruning_write_the_best_parameters(tmp_path):
    out = tmp_path / "tune"
    best = tune.main(["--out", str(out), "--trials", "3", "--prune-after", "1", "--warmup-epochs", "0", "--", *TINY])

    assert json.loads((out / "tune-best.json").read_text()) == json.loads(json.dumps(best))
    assert set(best["params"]) == set(tune.SEARCH_SPACE)
    for name, (low, high, _) in tune.SEARCH_SPACE.items():
        assert low <= best["params"][name] <= high
    study = optuna.load_study(study_name="tune", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == 3
    assert {t.state for t in study.trials} <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert best["dev_weighted_f1"] == max(t.value for t in complete)
    for trial in complete:  # the objective is the best epoch's dev F1, each reported on the way
        assert sorted(trial.intermediate_values) == [1, 2] and trial.value == max(trial.intermediate_values.values())
    assert best["train_command"].startswith("python -m ada2i_fast.train --dataset meld")
    assert f"--rank {best['params']['rank']}" in best["train_command"]


class _Trial:
    """What the epoch reporter touches of an optuna trial, with a pruner that always prunes."""

    def __init__(self):
        self.reported = []

    def report(self, value, step):
        self.reported.append((step, value))

    def should_prune(self):
        return True


def test_the_epoch_reporter_reports_dev_f1_and_prunes_when_told():
    trial = _Trial()
    with pytest.raises(optuna.TrialPruned, match="at epoch 3 is below the median"):
        tune.epoch_reporter(trial)({"epoch": 3, "dev": {"weighted_f1": 0.25}})
    assert trial.reported == [(3, 0.25)]


def test_the_searched_flags_are_refused(tmp_path):
    with pytest.raises(SystemExit, match=r"^error: .* sets --lr, --amw-scale for each trial itself"):
        tune.main(["--out", str(tmp_path), "--", *TINY, "--lr", "1e-3", "--amw-scale", "5"])
    recipe = tmp_path / "tune.yaml"
    recipe.write_text("dataset: meld\nlr: 0.001\n")
    with pytest.raises(SystemExit, match=r"^error: .*tune\.yaml: lr: python -m ada2i_fast\.tune sets it for each trial"):
        tune.main(["--config", str(recipe)])


def test_a_recipe_file_holds_the_trainer_keys_and_tunes_own_section_and_reads_back(tmp_path, capsys):
    recipe = tmp_path / "tune.yaml"
    recipe.write_text("dataset: meld\nsize: 0.03\nepochs: 2\ntune:\n  trials: 3\n  warmup_epochs: 0\n"
                      "sweep:\n  seeds: [1]   # the sweep's section: tune reads its own\n")
    printed = tune.main(["--config", str(recipe), "--print-config", "--trials", "5", "--", "--hidden", "16"])
    text = capsys.readouterr().out
    assert printed["tune"]["trials"] == 5 and printed["tune"]["warmup_epochs"] == 0  # the flag over the file
    assert printed["hidden"] == 16 and printed["epochs"] == 2 and "lr" not in printed and "seed" in printed
    assert "\ntune:\n" in text and "\n  trials: 5\n" in text
    (tmp_path / "printed.yaml").write_text(text)
    assert tune.main(["--config", str(tmp_path / "printed.yaml"), "--print-config"]) == printed
    assert capsys.readouterr().out == text


def _summary(dev_f1):
    """What tune reads of a run's summary."""
    return {"best_dev_weighted_f1": dev_f1, "test": {"weighted_f1": dev_f1 - 0.1}, "best_epoch": 1}


def _trials(out):
    return optuna.load_study(study_name="tune", storage=f"sqlite:///{out / 'study.db'}").trials


def test_a_new_launch_goes_on_with_the_search_instead_of_repeating_it(tmp_path, monkeypatch):
    monkeypatch.setattr(tune, "train_run", lambda argv, out, **kwargs: _summary(0.5))
    out = tmp_path / "tune"
    tune.main(["--out", str(out), "--trials", "1", "--", *TINY])
    tune.main(["--out", str(out), "--trials", "2", "--", *TINY])
    first, second = _trials(out)
    assert first.params != second.params
    assert tune.worker_seed(0, 0, 1) == tune.worker_seed(0, 0, 1) != tune.worker_seed(0, 1, 1)


def test_failed_trials_do_not_count_toward_the_trials(tmp_path, monkeypatch):
    runs = []

    def train_run(argv, out, **kwargs):
        runs.append(argv)
        if len(runs) == 1:
            raise RuntimeError("the first run breaks")
        return _summary(0.1 * len(runs))

    monkeypatch.setattr(tune, "train_run", train_run)
    out = tmp_path / "tune"
    best = tune.main(["--out", str(out), "--trials", "2", "--", *TINY])
    state = optuna.trial.TrialState
    assert [t.state for t in _trials(out)] == [state.FAIL, state.COMPLETE, state.COMPLETE]
    assert best["trials"] == {"complete": 2, "fail": 1} and best["trial"] == 2


def test_a_trainer_that_always_fails_stops_the_search_instead_of_looping(tmp_path, monkeypatch):
    def train_run(argv, out, **kwargs):
        raise RuntimeError("broken")

    monkeypatch.setattr(tune, "train_run", train_run)
    out = tmp_path / "tune"
    with pytest.raises(SystemExit, match=r"no trial of study 'tune' completed \({'fail': 3}\)"):
        tune.main(["--out", str(out), "--trials", "5", "--", *TINY])


def test_another_studys_database_is_refused_naming_the_setting_that_differs(tmp_path, monkeypatch):
    """The sampler's seed, the pruning and the search space were not recorded: a database of the same
    name and trainer flags searched with other settings was merged silently."""
    monkeypatch.setattr(tune, "train_run", lambda argv, out, **kwargs: _summary(0.5))
    out = tmp_path / "tune"
    tune.main(["--out", str(out), "--trials", "1", "--", *TINY])
    choose = "give those, or choose another --study-name or --out$"
    with pytest.raises(SystemExit, match=rf"^error: study 'tune' was started with the --sampler-seed 0, not 7; {choose}"):
        tune.main(["--out", str(out), "--trials", "2", "--sampler-seed", "7", "--", *TINY])
    with pytest.raises(SystemExit, match=rf"^error: study 'tune' was started with the --warmup-epochs 2, not 1; {choose}"):
        tune.main(["--out", str(out), "--trials", "2", "--warmup-epochs", "1", "--", *TINY])
    monkeypatch.setitem(tune.SEARCH_SPACE, "lr", (1e-4, 3e-3, True))
    with pytest.raises(SystemExit, match=r"^error: study 'tune' was started with the search space \{\"lr\": \[1e-05, "):
        tune.main(["--out", str(out), "--trials", "2", "--", *TINY])
    monkeypatch.undo()
    monkeypatch.setattr(tune, "train_run", lambda argv, out, **kwargs: _summary(0.5))
    tune.main(["--out", str(out), "--trials", "2", "--", *TINY])  # the same study goes on
    assert len(_trials(out)) == 2
