"""Reading torch checkpoint files without running anything in them, and loading their weights
into a module only when every tensor fits (no model imports here)."""

from __future__ import annotations

import argparse

import torch


def read_checkpoint(path) -> dict:
    """The raw payload of a checkpoint file (ours or the authors'), refusing anything but tensors,
    plain containers and ``argparse.Namespace``; nothing in the file runs."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint not found: {path}") from None
    except Exception as error:
        raise ValueError(f"{path}: not a loadable checkpoint (refused or corrupt): {error}") from error


def load_weights(model: torch.nn.Module, state: dict, path) -> None:
    """``model.load_state_dict(state)``, refusing a missing, extra, misshapen or non-finite tensor by name."""
    check_weights(model.state_dict(), state, path)
    model.load_state_dict(state)


def check_weights(expected: dict, state: dict, path) -> None:
    """Raise ``ValueError`` naming the first tensor of ``state`` that ``expected`` has not, or lacks,
    or whose shape differs, or that holds a NaN or inf."""
    missing, extra = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    if missing:
        raise ValueError(f"{path}: no tensor for {missing[0]!r}")
    if extra:
        raise ValueError(f"{path}: unexpected tensor {extra[0]!r}")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor) or value.shape != expected[key].shape:
            found = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"{path}: {key!r} should have shape {tuple(expected[key].shape)}, found {found}")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise ValueError(f"{path}: {key!r} holds non-finite values (NaN or inf); refusing to use these weights")
