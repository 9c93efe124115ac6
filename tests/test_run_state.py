"""The run-state schema of last.pt: fields round-trip, a new field needs no other edit, old files load,
and what is missing or foreign is named."""

import dataclasses

import pytest
import torch

from ada2i_fast.training.run_state import RunState, load_state, save_state


def _state(**changes) -> RunState:
    values = dict(model_config={"hidden": 4}, train_config={"seed": 3}, run_info={"dataset": "meld"},
                  model={"w": torch.arange(3.0)}, optimizer={"state": {}}, scheduler={"best": 1.0}, epoch=2,
                  finished_epochs=1, progress={"steps": 5}, best_f1=0.5, best_epoch=1,
                  rng=[{"torch": torch.get_rng_state()}], world_size=1)
    return RunState(**{**values, **changes})


def _equal(x, y) -> bool:
    """Deep equality of containers holding tensors."""
    if isinstance(x, torch.Tensor):
        return isinstance(y, torch.Tensor) and torch.equal(x, y)
    if isinstance(x, dict):
        return isinstance(y, dict) and x.keys() == y.keys() and all(_equal(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)):
        return type(x) is type(y) and len(x) == len(y) and all(map(_equal, x, y))
    return x == y


def _same(a: RunState, b: RunState) -> bool:
    return type(a) is type(b) and _equal(a.to_dict(), b.to_dict())


def test_a_state_round_trips_through_last_pt(tmp_path):
    state = _state()
    save_state(tmp_path / "last.pt", state)
    assert _same(load_state(tmp_path), state)


def test_a_new_resumable_field_is_one_edit_of_the_schema(tmp_path):
    @dataclasses.dataclass
    class WithNote(RunState):
        note: str = ""

    state = WithNote(**{f.name: getattr(_state(), f.name) for f in dataclasses.fields(RunState)}, note="hello")
    save_state(tmp_path / "last.pt", state)
    loaded = load_state(tmp_path, schema=WithNote)
    assert loaded.note == "hello" and _same(loaded, state)
    assert load_state(tmp_path).to_dict().keys() == _state().to_dict().keys()  # the base schema ignores it


def test_a_version_1_state_loads(tmp_path):
    old = {k: v for k, v in _state().to_dict().items() if k not in ("version", "rng")}
    old.update(format="ada2i_fast/run-state/1", rng={"torch": torch.get_rng_state()},
               rng_per_rank=[{"torch": torch.get_rng_state()}, {"torch": torch.get_rng_state()}], world_size=2)
    torch.save(old, tmp_path / "last.pt")
    state = load_state(tmp_path)
    assert len(state.rng) == 2 and state.world_size == 2


def test_missing_fields_foreign_files_and_another_world_size_are_named(tmp_path):
    values = _state().to_dict()
    del values["best_epoch"], values["scheduler"]
    torch.save(values, tmp_path / "last.pt")
    with pytest.raises(ValueError, match=r"last\.pt: the run state lacks best_epoch, scheduler"):
        load_state(tmp_path)
    torch.save({"format": "something else"}, tmp_path / "last.pt")
    with pytest.raises(ValueError, match=r"last\.pt: not a run state of this package"):
        load_state(tmp_path)
    with pytest.raises(ValueError, match=r"no last\.pt there"):
        load_state(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"trained by 1 process\(es\) and resumes only with as many \(this launch has 2\)"):
        _state().check_world_size(2, tmp_path)
