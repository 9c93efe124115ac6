"""Load checkpoints written by the authors' training script, without unpickling arbitrary objects.

Their file is ``torch.save({"args": argparse.Namespace, "state_dict": ...})`` with keys such as
``net.encoder.t.lin_out.weight``, ``net.mmt.layers.0.attention.trans_q1.{j}.lin.weight`` and
``net.fc_out.weight``, ``j`` being the modality's position in the run's ``--modalities`` string.
Shapes decide dims, hidden size, rank and layer counts; ``args`` decides the rest.
"""

from __future__ import annotations

import argparse
import re

import torch
from torch import Tensor

from ..config import Ada2IConfig
from ..datasets import DATASETS
from ..kernels import RANK_PROJECTIONS
from .torch_file import load_weights, read_checkpoint

_FIRST_RANK_KEY = "net.mmt.layers.0.attention.trans_q1.0.lin.weight"
_RANK_PARTS = tuple(f"trans_{name}" for name in RANK_PROJECTIONS)
_ARG_ALIASES = {
    "beta": ("beta",),
    "drop_rate": ("drop_rate", "dropout"),
    "mmcosine": ("mmcosine",),
    "encoder": ("encoder_modules", "encoder"),
}


def read_reference_file(path) -> tuple[argparse.Namespace, dict[str, Tensor]]:
    """The (args, state_dict) of an authors' checkpoint, via torch's weights-only unpickler."""
    payload = read_checkpoint(path)
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise ValueError(f"{path}: expected a dict with 'args' and 'state_dict'")
    args, state = payload.get("args"), payload["state_dict"]
    if not isinstance(args, argparse.Namespace):
        raise ValueError(f"{path}: 'args' must be an argparse.Namespace, found {type(args).__name__}")
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise ValueError(f"{path}: 'state_dict' must map names to tensors")
    return args, state


def config_from_reference(args: argparse.Namespace, state: dict[str, Tensor], **overrides) -> Ada2IConfig:
    modalities = getattr(args, "modalities", None)
    if not isinstance(modalities, str):
        raise ValueError("reference checkpoint args lack 'modalities' (e.g. 'atv')")
    first = modalities[0]
    encoder_prefix = f"net.encoder.{first}."
    lin_out = {m: _require(state, f"net.encoder.{m}.lin_out.weight") for m in modalities}
    hidden = lin_out[first].shape[0]
    rank = state[_FIRST_RANK_KEY].shape[0] if _FIRST_RANK_KEY in state else 1
    mmt_layers = {int(k.split(".")[3]) for k in state if k.startswith("net.mmt.layers.")}
    encoder_layers = {
        int(match.group(1))
        for k in state
        if (match := re.match(rf"net\.encoder\.{first}\.transformer_encoder\.layers\.(\d+)\.", k))
    }
    input_dims = {m: weight.shape[1] for m, weight in lin_out.items()}
    ffn = state.get(f"{encoder_prefix}transformer_encoder.layers.0.linear1.weight")
    dataset = getattr(args, "dataset", None)
    base = Ada2IConfig.preset(dataset).to_dict() if dataset in DATASETS else Ada2IConfig().to_dict()
    base.update(
        modalities=modalities,
        input_dims=input_dims,
        num_classes=_require(state, "net.fc_out.weight").shape[0],
        hidden=hidden,
        rank=rank,
        mmt_nlayers=len(mmt_layers),
        encoder_nlayers=max(len(encoder_layers), 1),
        ffn_dim=ffn.shape[0] if ffn is not None else base["ffn_dim"],
        compat="reference",
    )
    for field, names in _ARG_ALIASES.items():
        for name in names:
            if hasattr(args, name):
                try:
                    base[field] = type(base[field])(getattr(args, name))
                except (TypeError, ValueError):
                    raise ValueError(f"reference checkpoint args: {name}={getattr(args, name)!r} is not a "
                                     f"{type(base[field]).__name__}") from None
                break
    base.update(overrides)
    return Ada2IConfig.from_dict(base)


def convert_state_dict(state: dict[str, Tensor], expected: dict[str, Tensor], config: Ada2IConfig) -> dict[str, Tensor]:
    """The authors' keys -> this package's keys, stacking per-modality AFW weights.

    ``expected`` is the target model's state dict; each source tensor is checked against the shape
    it must have, so a mismatch names the authors' key.
    """
    state = dict(state)
    out = {}
    for ours, tensor in expected.items():
        if ours.startswith("encoders."):
            out[ours] = _take(state, "net.encoder." + ours[len("encoders.") :], tensor.shape)
    for part in ("weight", "bias"):
        out[f"head.fc_out.{part}"] = _take(state, f"net.fc_out.{part}", expected[f"head.fc_out.{part}"].shape)
    for layer in range(config.mmt_nlayers):
        prefix = f"net.mmt.layers.{layer}."
        ours = f"afw.layers.{layer}."
        for part in ("weight", "bias"):
            rank_shape = expected[f"{ours}rank_{part}"].shape[1:]
            rank_shape = (rank_shape[0] // 4, *rank_shape[1:])
            for group, source, shape in (
                ("rank", [f"attention.{name}.{{j}}.lin.{part}" for name in _RANK_PARTS], rank_shape),
                ("att", [f"attention.lin_att.{{j}}.lin.{part}"], expected[f"{ours}att_{part}"].shape[1:]),
                ("map", [f"wmn.fc.{{j}}.{part}"], expected[f"{ours}map_{part}"].shape[1:]),
            ):
                per_modality = [
                    torch.cat([_take(state, prefix + name.format(j=j), shape) for name in source])
                    for j in range(config.n_modalities)
                ]
                out[f"{ours}{group}_{part}"] = torch.stack(per_modality)
    if state:
        raise ValueError(f"reference checkpoint has unexpected key {sorted(state)[0]!r}")
    missing = sorted(set(expected) - set(out))
    if missing:
        raise ValueError(f"reference checkpoint lacks a tensor for {missing[0]!r}")
    return out


def _require(state: dict[str, Tensor], key: str) -> Tensor:
    if key not in state:
        raise ValueError(f"reference checkpoint lacks key {key!r}")
    return state[key]


def _take(state: dict[str, Tensor], key: str, shape) -> Tensor:
    value = _require(state, key)
    del state[key]
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"reference checkpoint {key!r}: expected shape {tuple(shape)}, found {tuple(value.shape)}")
    return value


def load_reference_checkpoint(model_cls, path, **overrides):
    """Build ``model_cls`` from the authors' checkpoint at ``path`` (semantics default to ``reference``)."""
    args, state = read_reference_file(path)
    config = config_from_reference(args, state, **overrides)
    model = model_cls(config)
    load_weights(model, convert_state_dict(state, model.state_dict(), config), path)
    return model
