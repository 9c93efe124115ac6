"""Torch checkpoint files: written atomically with a checksum of every tensor and of the rest,
read without running anything in them and verified against those checksums, and their weights
loaded into a module only when every tensor fits (no model imports here)."""

from __future__ import annotations

import argparse
import hashlib

import torch

from ..atomic import atomic_open

CHECKSUMS = "checksums"  # the payload key holding the digests of the rest of the payload
_REST = "<everything but the tensors>"


def write_checkpoint(path, payload: dict) -> None:
    """``payload`` (tensors, plain containers, scalars and strings) with its checksums, atomically."""
    with atomic_open(path) as handle:
        torch.save({**payload, CHECKSUMS: _digests(payload)}, handle)


def read_checkpoint(path) -> dict:
    """The payload of a checkpoint file (ours or the authors'), refusing anything but tensors, plain
    containers and ``argparse.Namespace`` (nothing in the file runs) and a payload that differs
    from its checksums (files written without checksums, such as the authors', pass as they are)."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint not found: {path}") from None
    except Exception as error:
        raise ValueError(f"{path}: not a loadable checkpoint (refused or corrupt): {_essence(error)}") from error
    if isinstance(payload, dict) and CHECKSUMS in payload:
        payload = dict(payload)
        _verify(payload, payload.pop(CHECKSUMS), path)
    return payload


def _verify(payload: dict, recorded, path) -> None:
    found = _digests(payload)
    if not isinstance(recorded, dict):
        raise ValueError(f"{path}: its checksums are damaged; refusing the file")
    for key in sorted(found.keys() | recorded.keys()):
        if found.get(key) != recorded.get(key):
            what = "its metadata" if key == _REST else f"the tensor {key}"
            raise ValueError(f"{path}: {what} differs from the checksum written with it (the file was damaged or "
                             "edited after it was written); refusing it")


def _digests(payload: dict) -> dict[str, str]:
    """A blake2b digest of every tensor, by its path in the payload, and one of everything else."""
    digests, rest = {}, hashlib.blake2b(digest_size=16)

    def walk(value, where: str) -> None:
        if isinstance(value, torch.Tensor):
            digests[where] = tensor_digest(value)
            rest.update(f"{where}=tensor;".encode())
        elif isinstance(value, dict):
            rest.update(f"{where}=dict({len(value)});".encode())
            for key in sorted(value, key=repr):
                walk(value[key], f"{where}/{key}")
        elif isinstance(value, (list, tuple)):
            rest.update(f"{where}={type(value).__name__}({len(value)});".encode())
            for i, item in enumerate(value):
                walk(item, f"{where}/{i}")
        else:
            rest.update(f"{where}={value!r};".encode())

    walk(payload, "")
    digests[_REST] = rest.hexdigest()
    return digests


def tensor_digest(tensor: torch.Tensor) -> str:
    """A blake2b digest of a tensor's dtype, shape and bytes."""
    data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    digest = hashlib.blake2b(f"{tensor.dtype}{tuple(tensor.shape)}".encode(), digest_size=16)
    digest.update(memoryview(data))
    return digest.hexdigest()


def _essence(error: Exception) -> str:
    """torch's refusal without its advice (to load with ``weights_only=False``, which would run the file)."""
    advice = ("Weights only load failed", "Check the documentation", "Please file an issue", "You can use",
              "To allowlist", "WeightsUnpickler error:")
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    kept = [line for line in lines if not line.startswith(advice)] or lines[:1]
    return " ".join(kept)


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
