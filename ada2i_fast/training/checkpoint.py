"""This package's checkpoints: written atomically with checksums, read back with torch's weights-only
unpickler and verified; a saved model opened from ``best.pt``, a run's ``last.pt`` or a run folder."""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpointing.pretrained import is_pretrained_folder, load_pretrained, with_class_names
from ..checkpointing.torch_file import check_weights, read_checkpoint, write_checkpoint
from ..config import Ada2IConfig, TrainConfig
from ..memory import check_model_fits
from ..modules.model import Ada2I
from .run_folder import MODEL_FOLDER
from .run_state import FORMAT as RUN_STATE_FORMAT
from .run_state import RunState

FORMAT = "ada2i_fast/1"
# What best.pt's metadata may hold, and of which type (a run writes all of them; older files fewer).
METADATA_TYPES = {
    "epoch": int, "dev_weighted_f1": float, "train_config": dict, "dataset": str, "data": str, "size": (int, float),
    "task": str, "synthetic": str, "classes": list, "data_identity": str, "run_id": str,
}


def save_checkpoint(path, model: Ada2I, **metadata) -> None:
    """Write ``model`` (config + weights + JSON-like ``metadata``) to ``path`` atomically, with checksums."""
    write_checkpoint(path, {
        "format": FORMAT,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": metadata,
    })


def is_own_checkpoint(payload) -> bool:
    return isinstance(payload, dict) and payload.get("format") == FORMAT


def load_checkpoint(path) -> tuple[Ada2I, dict]:
    """``(model, metadata)`` from a file written by :func:`save_checkpoint`."""
    payload = read_checkpoint(path)
    if not is_own_checkpoint(payload):
        raise ValueError(f"{path}: not an ada2i_fast checkpoint (expected format {FORMAT!r})")
    return _own_model(payload, path)


def _own_model(payload: dict, path) -> tuple[Ada2I, dict]:
    for key in ("config", "state_dict", "metadata"):
        if not isinstance(payload.get(key), dict):
            raise ValueError(f"{path}: {key!r} must be a dict, found {type(payload.get(key)).__name__}")
    model = _model_of(payload["config"], payload["state_dict"], path)
    metadata = dict(payload["metadata"])
    _check_metadata(metadata, path)
    model.config = with_class_names(model.config, metadata)
    # Checkpoints written before the recipe left the model config kept it there.
    recipe = {k: v for k, v in payload["config"].items() if k in TrainConfig.field_names()}
    metadata.setdefault("train_config", recipe)
    return model, metadata


def _model_of(config: dict, state: dict, path) -> Ada2I:
    """The model of ``config`` with the weights ``state``, checked on a meta-device skeleton first."""
    try:
        config = Ada2IConfig.from_dict(config)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: invalid model config: {error}") from None
    check_model_fits(config, str(path))
    with torch.device("meta"):  # the shapes the config implies, before allocating anything
        model = Ada2I(config)
    skeleton = model.state_dict()
    check_weights(skeleton, state, path)
    # Assigned, not copied into initialised weights: loading draws nothing from the global random state.
    model.load_state_dict({k: v.to(skeleton[k].dtype) for k, v in state.items()}, assign=True)
    return model


def _check_metadata(metadata: dict, path) -> None:
    for key, kind in METADATA_TYPES.items():
        value = metadata.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise ValueError(f"{path}: metadata {key!r} should be {_type_name(kind)}, found {value!r:.60}")
    if "classes" in metadata and not all(isinstance(name, str) for name in metadata["classes"]):
        raise ValueError(f"{path}: metadata 'classes' should be a list of class names")


def _type_name(kind) -> str:
    return " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__


def load_any_checkpoint(path, **reference_overrides) -> tuple[Ada2I, dict]:
    """A saved model: a model folder (``Ada2I.save_pretrained``; a finished run's ``model/``), ours
    (``best.pt``), a run's current state (``last.pt``, its metadata saying so in ``weights``), a run
    folder (its ``model/``, else ``best.pt``, else ``last.pt`` when no epoch has ended), or a checkpoint
    written by the authors' training script (metadata: the run's dataset, if recorded)."""
    path = saved_model_path(Path(path))
    if is_pretrained_folder(path):
        model, metadata = _load_model_folder(path)
        _check_metadata(metadata, path / "config.json")
        return model, {"weights": f"{path}: the best-dev model (epoch {metadata.get('epoch', '?')})", **metadata}
    payload = read_checkpoint(path)
    if is_own_checkpoint(payload):
        model, metadata = _own_model(payload, path)
        return model, {"weights": f"{path}: the best-dev state (epoch {metadata.get('epoch', '?')})", **metadata}
    if isinstance(payload, dict) and payload.get("format") == RUN_STATE_FORMAT:
        state = RunState.from_dict(payload, path)
        metadata = dict(state.run_info, train_config=state.train_config, epoch=state.finished_epochs)
        _check_metadata(metadata, path)
        steps = state.progress.get("steps", 0) if isinstance(state.progress, dict) else 0
        metadata["weights"] = (f"{path}: the current weights after {state.finished_epochs} epoch(s)"
                               + (f" and {steps} step(s) of epoch {state.epoch}" if steps else "")
                               + ", not the best-dev state")
        model = _model_of(state.model_config, state.model, path)
        model.config = with_class_names(model.config, metadata)
        return model, metadata
    if isinstance(payload, dict) and "state_dict" in payload and "args" in payload:
        dataset = getattr(payload.get("args"), "dataset", None)
        return Ada2I.from_reference_checkpoint(path, **reference_overrides), ({"dataset": dataset} if dataset else {})
    raise ValueError(f"{path}: neither a model of this package (best.pt), a run state (last.pt) nor an authors' "
                     "checkpoint (a dict with 'args' and 'state_dict')")


def _load_model_folder(path: Path) -> tuple[Ada2I, dict]:
    """:func:`load_pretrained`; a run's model/ that a cut-short save left mixed is refused saying that
    ``train --resume RUN`` writes it again from the run's state."""
    try:
        return load_pretrained(path, Ada2I)
    except ValueError as error:
        run = path.parent
        if path.name == MODEL_FOLDER and (run / "last.pt").is_file() and "(a save was cut short" in str(error):
            raise ValueError(f"{error}; train --resume {run} writes it again from the run's last.pt") from None
        raise


def saved_model_path(path: Path) -> Path:
    """``path``, or for a run folder what holds its model: model/, else best.pt, else last.pt."""
    if not path.is_dir() or is_pretrained_folder(path):
        return path
    if is_pretrained_folder(path / MODEL_FOLDER):
        return path / MODEL_FOLDER
    for name in ("best.pt", "last.pt"):
        if (path / name).is_file():
            return path / name
    raise ValueError(f"{path}: neither a model folder (config.json + model.safetensors) nor a training run folder "
                     "(model/, best.pt or last.pt)")
