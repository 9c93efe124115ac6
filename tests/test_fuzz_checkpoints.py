"""Mutated checkpoint files, ours and the authors', and model folders (config.json, the safetensors
header): each load ends in a named error (or loads a still valid file whose predictions are finite)
quickly, and nothing in the file runs; depth and size bombs in every JSON a model folder holds too."""

import argparse
import json
import shutil
import struct
import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ada2i_fast import Ada2I
from ada2i_fast.training.checkpoint import load_any_checkpoint, save_checkpoint
from conftest import random_batch, tiny_config
from test_fuzz_loaders import _time_limit
from test_reference_checkpoint import authors_state_dict

SECONDS_PER_CASE = 5.0


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    save_checkpoint(folder / "ours.pt", Ada2I(tiny_config()), epoch=1, dataset="meld")
    authors = Ada2I(tiny_config(compat="reference"))
    args = argparse.Namespace(modalities="atv", dataset="meld", beta=0.55, drop_rate=0.5, mmcosine=True)
    torch.save({"args": args, "state_dict": authors_state_dict(authors)}, folder / "authors.pt")
    return {name: (folder / f"{name}.pt").read_bytes() for name in ("ours", "authors")}


mutations = st.lists(
    st.tuples(st.sampled_from(["flip", "truncate", "insert", "zero"]), st.floats(0, 1), st.binary(min_size=1, max_size=8)),
    min_size=1,
    max_size=3,
)


def _mutate(data: bytes, steps) -> bytes:
    for kind, where, payload in steps:
        at = max(0, int(where * (len(data) - 1)))
        if kind == "flip":
            data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :] if data else data
        elif kind == "truncate":
            data = data[:at]
        elif kind == "insert":
            data = data[:at] + payload + data[at:]
        else:
            data = data[:at] + bytes(len(payload)) + data[at + len(payload) :]
    return data


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(["ours", "authors"]), steps=mutations)
def test_a_mutated_checkpoint_loads_or_gets_a_named_error(originals, tmp_path_factory, which, steps):
    path = tmp_path_factory.mktemp("fuzz") / f"{which}.pt"
    path.write_bytes(_mutate(originals[which], steps))
    start = time.perf_counter()
    try:
        model, _ = load_any_checkpoint(path)
        assert all(torch.isfinite(p).all() for p in model.parameters())
    except ValueError as error:
        assert str(path) in str(error) or "reference checkpoint" in str(error)
    assert time.perf_counter() - start < SECONDS_PER_CASE


# --- model folders (save_pretrained) -----------------------------------------------------------------

@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pretrained") / "model"
    torch.manual_seed(0)
    Ada2I(tiny_config(class_names=("a", "b", "c", "d", "e"))).save_pretrained(
        folder, metadata={"epoch": 3, "dataset": "meld", "classes": ["a", "b", "c", "d", "e"]})
    return folder, {name: (folder / name).read_bytes() for name in ("config.json", "model.safetensors")}


def _fresh_copy(model_folder, tmp_path_factory):
    folder, originals = model_folder
    copy = tmp_path_factory.mktemp("fuzz") / "model"
    shutil.copytree(folder, copy)
    return copy, originals


def _loads_with_finite_predictions_or_names(folder, names) -> None:
    """Loading ``folder`` gives a model whose predictions are finite, or a ValueError naming one of ``names``."""
    with _time_limit(SECONDS_PER_CASE):
        try:
            model, _ = load_any_checkpoint(folder)
        except ValueError as error:
            assert any(str(name) in str(error) for name in names), error
            assert "\n" not in str(error) and not isinstance(error.__cause__, (MemoryError, RecursionError))
            return
        model.eval()
        with torch.no_grad():
            assert torch.isfinite(model(random_batch(model.config, [3, 2])).log_probs).all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["config.json", "model.safetensors"]), steps=mutations, in_header=st.booleans())
def test_a_mutated_model_folder_loads_or_gets_a_named_error(model_folder, tmp_path_factory, name, steps, in_header):
    folder, originals = _fresh_copy(model_folder, tmp_path_factory)
    data = originals[name]
    header = 8 + struct.unpack("<Q", data[:8])[0] if name == "model.safetensors" and in_header else len(data)
    (folder / name).write_bytes(_mutate(data[:header], steps) + data[header:])
    _loads_with_finite_predictions_or_names(folder, [folder])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8) | st.sampled_from(["at", "atv", "lstm", "reference", "method", "ta"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=8,
)
CONFIG_KEYS = ("modalities", "input_dims", "num_classes", "class_names", "hidden", "rank", "beta", "encoder",
               "encoder_nlayers", "ffn_dim", "mmt_nlayers", "drop_rate", "mmcosine", "amw_scale", "lambda_modal",
               "compat", "unknown")
TOP_KEYS = ("model_type", "ada2i_config", "id2label", "label2id", "weights_checksum", "metadata")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.sampled_from(CONFIG_KEYS + TOP_KEYS), st.booleans(), json_values),
                      min_size=1, max_size=3))
def test_config_json_with_any_values_loads_a_working_model_or_gets_a_named_error(model_folder, tmp_path_factory,
                                                                                  edits):
    folder, originals = _fresh_copy(model_folder, tmp_path_factory)
    config = json.loads(originals["config.json"])
    for key, delete, value in edits:
        where = config if key in TOP_KEYS else config.get("ada2i_config")
        if not isinstance(where, dict):  # an earlier edit removed or replaced the model's config
            continue
        if delete:
            where.pop(key, None)
        else:
            where[key] = value
    (folder / "config.json").write_text(json.dumps(config))
    _loads_with_finite_predictions_or_names(folder, [folder])


def _deep(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


def _bombs() -> dict:
    """JSON texts no file of this package holds: deep or wide nesting, a huge file, numbers beyond a double."""
    return {"deep": "[" * 100_000 + "]" * 100_000, "nested 40": _deep(40), "size": " " * (17 * 2**20) + "{}",
            "1e400": '{"beta": 1e400}', "NaN": '{"beta": NaN}', "digits": '{"hidden": ' + "9" * 5000 + "}",
            "not UTF-8": '{"a": "\xff"}'.encode("latin-1").decode("latin-1")}


@pytest.mark.parametrize("bomb", list(_bombs()))
def test_a_bomb_in_config_json_or_the_safetensors_checksum_field_is_one_named_error(model_folder, tmp_path_factory,
                                                                                   bomb):
    from safetensors.torch import load_file, save_file

    from ada2i_fast.checkpointing import pretrained

    text = _bombs()[bomb]
    folder, _ = _fresh_copy(model_folder, tmp_path_factory)
    (folder / "config.json").write_bytes(text.encode("latin-1"))
    _loads_with_finite_predictions_or_names(folder, [folder / "config.json"])
    if bomb in ("size", "not UTF-8"):  # the header is a string the safetensors reader decoded already
        return
    folder, originals = _fresh_copy(model_folder, tmp_path_factory)
    save_file(load_file(folder / "model.safetensors"), folder / "model.safetensors",
              metadata={pretrained._CHECKSUMS: text})
    config = json.loads(originals["config.json"])
    (folder / "config.json").write_text(json.dumps({**config, "weights_checksum": pretrained._weights_checksum(text)}))
    _loads_with_finite_predictions_or_names(folder, [folder / "model.safetensors"])


def test_a_safetensors_header_claiming_a_huge_length_is_one_named_error(model_folder, tmp_path_factory):
    folder, originals = _fresh_copy(model_folder, tmp_path_factory)
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 2**62) + originals["model.safetensors"][8:])
    _loads_with_finite_predictions_or_names(folder, [folder / "model.safetensors"])
