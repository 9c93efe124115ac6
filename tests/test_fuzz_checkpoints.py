"""Mutated checkpoint files, ours and the authors': each load ends in a named error (or loads a still
valid file) quickly, and nothing in the file runs."""

import argparse
import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ada2i_fast import Ada2I
from ada2i_fast.training.checkpoint import load_any_checkpoint, save_checkpoint
from conftest import tiny_config
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
