"""Reading a torch checkpoint file without running anything in it (no model imports here)."""

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
