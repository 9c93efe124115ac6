"""Recipe files (--config FILE.yaml) and --print-config: a file gives the run the same flags would, a
flag overrides it, the printed recipe reads back to the same recipe, and a bad or hostile file is one
error line."""

import json
import re
import time

import pytest

from ada2i_fast import train

FLAGS = ["--dataset", "meld", "--size", "0.03", "--hidden", "16", "--rank", "3", "--ffn-dim", "32",
         "--drop-rate", "0.1", "--lr", "2e-3", "--epochs", "1", "--encoder-nlayers", "1", "--no-afw", "--no-modulation",
         "--compat", "reference", "--quiet"]
RECIPE = """\
# the same run as FLAGS
dataset: meld
size: 0.03
hidden: 16
rank: 3
ffn_dim: 32
drop_rate: 0.1
lr: 2e-3          # YAML reads this as a string; the flag's type reads it as --lr does
epochs: 1
encoder_nlayers: 1
no_afw: true
modulation: false
compat: reference
quiet: true
amw_scale: null   # null: the flag's default
sweep:            # another command's section: train reads the top level only
  seeds: [1, 2]
"""


def _recipe_of(out):
    """What run.json records of a run's recipe (everything but its id and start time)."""
    identity = json.loads((out / "run.json").read_text())
    return {k: v for k, v in identity.items() if k not in ("run_id", "started")}


def _write(tmp_path, text, name="r.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def by_flags(tmp_path_factory):
    """The recipe run.json records of a run trained with FLAGS."""
    out = tmp_path_factory.mktemp("flags") / "run"
    train.main([*FLAGS, "--out", str(out)])
    return _recipe_of(out)


def test_a_recipe_file_trains_the_run_its_flags_would_and_flags_override_it(tmp_path, by_flags):
    recipe = _write(tmp_path, RECIPE)
    train.main(["--config", str(recipe), "--out", str(tmp_path / "file")])
    by_file = _recipe_of(tmp_path / "file")
    assert by_file == by_flags
    assert by_file["model_config"]["mmt_nlayers"] == 0 and by_file["train_config"]["lr"] == 2e-3

    overridden = train.main(["--config", str(recipe), "--lr", "0.01", "--modulation", "--print-config"])
    assert overridden["lr"] == 0.01 and overridden["modulation"] is True and overridden["epochs"] == 1


def test_the_printed_recipe_reads_back_to_the_same_recipe(tmp_path, capsys, by_flags):
    printed = train.main([*FLAGS, "--print-config"])
    text = capsys.readouterr().out
    for line in ("lr: 0.002", "modalities: null", "mmt_nlayers: 0", "compat: reference", "seed: 12", "device: null"):
        assert f"\n{line}\n" in text
    recipe = _write(tmp_path, text)
    assert train.main(["--config", str(recipe), "--print-config"]) == printed
    assert capsys.readouterr().out == text
    train.main(["--config", str(recipe), "--out", str(tmp_path / "file")])
    assert _recipe_of(tmp_path / "file") == by_flags


@pytest.mark.parametrize("text, message", [
    ("lr: fast\n", r"r\.yaml: lr: invalid float value: 'fast'"),
    ("encoder: gru\n", r"r\.yaml: encoder: invalid choice: 'gru' \(choose from transformer, lstm\)"),
    ("hidden: 2.5\n", r"r\.yaml: hidden: invalid int value: 2\.5"),
    ("modulation: 1\n", r"r\.yaml: modulation: expected true or false, got 1"),
    ("modalities: yes\n", r"r\.yaml: modalities: expected a single str value, got a YAML boolean \(quote it"),
    ("lr: [1, 2]\n", r"r\.yaml: lr: expected a single float value, got a YAML list"),
    ("epochs: 0\n", r"r\.yaml: epochs must be an int >= 1, got 0"),
    ("epoch: 3\nfoo: 1\n", r"r\.yaml: unknown keys epoch \(did you mean epochs\?\), foo; a key is a flag of "
                           r"python -m ada2i_fast\.train without --"),
    ("resume: runs/x\n", r"r\.yaml: resume: a recipe describes a new run; continue a run with --resume DIR"),
    ("- lr\n", r"r\.yaml: expected a mapping of keys \(lr: 0\.001\), got a YAML list"),
    ("lr: [1, 2\n", r"r\.yaml, line 2: not a YAML recipe \(expected ',' or '\]'"),
])
def test_a_bad_key_or_value_is_one_line_naming_the_file_and_key(tmp_path, text, message):
    recipe = _write(tmp_path, text)
    with pytest.raises(SystemExit) as refused:
        train.main(["--config", str(recipe), "--print-config"])
    error = str(refused.value.code)
    assert "\n" not in error
    assert error.startswith(f"error: {tmp_path}/") and re.search(message, error), error


def _alias_bomb() -> str:
    """9^9 strings, if anything walked the value."""
    levels = ['&a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"&{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)]
    return f"lr: [{', '.join(levels)}]\n"


@pytest.mark.parametrize("text, message", [
    (_alias_bomb(), "lr: expected a single float value, got a YAML list"),
    ("lr: " + "[" * 20_000 + "\n", "nested too deeply"),
    ("lr: 1\n" * 20_000, "larger than 64 KiB"),
    ("epochs: " + "9" * 5_000 + "\n", "not a YAML recipe"),
    ("x: &x [*x]\nseed: *x\n", "unknown key x"),
    ("lr: !!python/object/apply:os.system [echo pwned]\n", "could not determine a constructor"),
])
def test_a_hostile_file_is_one_error_line_at_once(tmp_path, text, message):
    recipe = _write(tmp_path, text)
    start = time.perf_counter()
    with pytest.raises(SystemExit) as refused:
        train.main(["--config", str(recipe), "--print-config"])
    assert time.perf_counter() - start < 5
    error = str(refused.value.code)
    assert "\n" not in error and error.startswith(f"error: {recipe}") and message in error, error


def test_a_resumed_run_takes_no_recipe_file(tmp_path):
    recipe = _write(tmp_path, "epochs: 3\n")
    with pytest.raises(SystemExit, match=r"--resume continues a run with its own settings; drop --config"):
        train.main(["--resume", str(tmp_path), "--config", str(recipe)])
    with pytest.raises(SystemExit, match=r"--print-config prints a new run's recipe"):
        train.main(["--resume", str(tmp_path), "--print-config"])
