"""This package's checkpoints: written atomically, read back with torch's weights-only unpickler."""

from __future__ import annotations

import torch

from .atomic import atomic_open
from .config import Ada2IConfig, TrainConfig
from .model import Ada2I
from .torch_file import check_weights, load_weights, read_checkpoint

FORMAT = "ada2i_fast/1"


def save_checkpoint(path, model: Ada2I, **metadata) -> None:
    """Write ``model`` (config + weights + JSON-like ``metadata``) to ``path`` via a temp file and rename."""
    payload = {
        "format": FORMAT,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": metadata,
    }
    with atomic_open(path) as handle:
        torch.save(payload, handle)


def is_own_checkpoint(payload) -> bool:
    return isinstance(payload, dict) and payload.get("format") == FORMAT


def load_checkpoint(path) -> tuple[Ada2I, dict]:
    """``(model, metadata)`` from a file written by :func:`save_checkpoint`."""
    payload = read_checkpoint(path)
    if not is_own_checkpoint(payload):
        raise ValueError(f"{path}: not an ada2i_fast checkpoint (expected format {FORMAT!r})")
    for key in ("config", "state_dict", "metadata"):
        if not isinstance(payload.get(key), dict):
            raise ValueError(f"{path}: {key!r} must be a dict, found {type(payload.get(key)).__name__}")
    try:
        config = Ada2IConfig.from_dict(payload["config"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: invalid model config: {error}") from None
    with torch.device("meta"):  # the shapes the config implies, before allocating anything
        check_weights(Ada2I(config).state_dict(), payload["state_dict"], path)
    model = Ada2I(config)
    load_weights(model, payload["state_dict"], path)
    metadata = dict(payload["metadata"])
    # Checkpoints written before the recipe left the model config kept it there.
    recipe = {k: v for k, v in payload["config"].items() if k in TrainConfig.field_names()}
    metadata.setdefault("train_config", recipe)
    return model, metadata


def load_any_checkpoint(path, **reference_overrides) -> tuple[Ada2I, dict]:
    """Ours, or one written by the authors' training script (its metadata: the run's dataset, if recorded)."""
    payload = read_checkpoint(path)
    if is_own_checkpoint(payload):
        return load_checkpoint(path)
    dataset = getattr(payload.get("args") if isinstance(payload, dict) else None, "dataset", None)
    return Ada2I.from_reference_checkpoint(path, **reference_overrides), ({"dataset": dataset} if dataset else {})

