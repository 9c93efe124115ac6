"""A trained model as the ecosystem shares one: a folder with ``config.json`` and ``model.safetensors``
(Hugging Face's layout), read without unpickling anything (safetensors holds raw tensors only).

``config.json`` holds ``model_type: "ada2i"``, the model's :class:`Ada2IConfig`, ``id2label`` and
``label2id`` (class names, as Hugging Face configs hold them) and the run's metadata; the safetensors
header holds a checksum of every tensor, verified on load, so a damaged or edited file is refused, as
is a folder whose config is another model's. ``config.json`` is written last and names the checksums
of the weights and of the featuriser saved with it, so a save cut short (a kill, a full disk) leaves
the old model or the new one: a folder whose files come from two saves is refused. ``featuriser/``, when present, is the featuriser of the
corpus the model was trained on (``data.featuriser``): what turns new conversations into its inputs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch

from ..atomic import atomic_open, strict_json
from ..config import Ada2IConfig
from ..memory import check_model_fits
from .json_files import expect_string_map, parse_json, read_json_object
from .torch_file import check_weights, tensor_digest

MODEL_TYPE = "ada2i"
CONFIG, WEIGHTS = "config.json", "model.safetensors"
FEATURISER = "featuriser"  # the folder of the training corpus's featuriser (data.featuriser), when it has one
_CHECKSUMS = "ada2i_checksums"  # the safetensors header's metadata key
_FEATURISER_DESCRIPTION = "featuriser.json"  # data.featuriser.DESCRIPTION, holding the featuriser's checksum
# What config.json holds besides ada2i_config, and of which JSON type.
_CONFIG_FIELDS = {"model_type": str, "metadata": dict, "id2label": dict, "label2id": dict, "weights_checksum": str,
                  "featuriser_checksum": str}


def save_pretrained(model, folder, metadata: dict | None = None, featuriser=None) -> Path:
    """Write ``model`` into ``folder`` (created if needed): the weights first, then the featuriser (a
    ``data.featuriser.Featuriser``, copied into ``featuriser/``; without one an older copy is removed),
    then the config naming both one's checksums, each atomically: a save cut short leaves a folder
    :func:`load_pretrained` refuses, never a model under another's config."""
    from safetensors.torch import save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    metadata = metadata or {}
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    checksums = json.dumps({name: tensor_digest(tensor) for name, tensor in state.items()}, sort_keys=True)
    with atomic_open(folder / WEIGHTS) as handle:
        handle.write(save(state, metadata={_CHECKSUMS: checksums}))
    if featuriser is None:
        shutil.rmtree(folder / FEATURISER, ignore_errors=True)  # a copy an earlier save left
        saved_with = {}
    else:
        saved_with = {"featuriser_checksum": featuriser.save(folder / FEATURISER)}
    model_config = with_class_names(model.config, metadata)
    labels = model_config.id2label
    config = {"model_type": MODEL_TYPE, "ada2i_config": model_config.to_dict(),
              **({"id2label": {str(i): name for i, name in labels.items()}, "label2id": model_config.label2id}
                 if labels else {}),
              "weights_checksum": _weights_checksum(checksums), **saved_with,
              "metadata": metadata}
    with atomic_open(folder / CONFIG) as handle:
        handle.write((strict_json(config, indent=2) + "\n").encode())
    return folder


def _weights_checksum(header_checksums: str) -> str:
    """One checksum of the weights file: of its header's checksums, which cover every tensor."""
    return hashlib.blake2b(header_checksums.encode(), digest_size=16).hexdigest()


def with_class_names(config: Ada2IConfig, metadata: dict) -> Ada2IConfig:
    """``config``, named with the ``classes`` of the run's metadata when it has no class names of its own
    (configs written before they held them)."""
    classes = metadata.get("classes")
    if config.class_names is not None or not isinstance(classes, list) or len(classes) != config.num_classes:
        return config
    return config.replace(class_names=tuple(classes))


def is_pretrained_folder(path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / CONFIG).is_file() and (path / WEIGHTS).is_file()


def load_pretrained(folder, model_class) -> tuple:
    """``(model, metadata)`` from a folder written by :func:`save_pretrained`; a ``ValueError`` naming
    the file for another model's config, a damaged header, a tensor that differs from its checksum
    or files of two saves (config.json names other weights or another featuriser)."""
    folder = Path(folder)
    values = _read_config_values(folder / CONFIG)
    config, metadata = _config_of(values, folder / CONFIG)
    header_checksums, state = _read_weights(folder / WEIGHTS)
    _check_one_save(folder, values, header_checksums)
    digests = _digests(header_checksums, folder / WEIGHTS)
    with torch.device("meta"):
        model = model_class(config)
    skeleton = model.state_dict()
    check_weights(skeleton, state, folder / WEIGHTS)
    for name, tensor in state.items():
        if digests.get(name) != tensor_digest(tensor):
            raise ValueError(f"{folder / WEIGHTS}: the tensor {name} differs from the checksum written with it (the "
                             "file was damaged or edited after it was written); refusing it")
    model.load_state_dict({k: v.to(skeleton[k].dtype) for k, v in state.items()}, assign=True)
    return model, metadata


def _read_config_values(path: Path) -> dict:
    """config.json's top level, each field of the type it must have."""
    values = read_json_object(path)
    if values.get("model_type") != MODEL_TYPE:
        raise ValueError(f"{path}: the config of another model (model_type {values.get('model_type')!r:.80}, "
                         f"expected {MODEL_TYPE!r})")
    if not isinstance(values.get("ada2i_config"), dict):
        raise ValueError(f"{path}: 'ada2i_config' must be an object")
    for key, kind in _CONFIG_FIELDS.items():
        if key in values and not isinstance(values[key], kind):
            raise ValueError(f"{path}: {key!r} must be {'an object' if kind is dict else 'a string'}, found "
                             f"{values[key]!r:.80}")
    return values


def _config_of(values: dict, path: Path) -> tuple[Ada2IConfig, dict]:
    metadata = values.get("metadata", {})
    config = with_class_names(Ada2IConfig.from_dict(values["ada2i_config"], str(path)), metadata)
    check_model_fits(config, str(path))
    id2label = values.get("id2label")
    if id2label is not None and id2label != {str(i): name for i, name in config.id2label.items()}:
        raise ValueError(f"{path}: id2label {id2label!r:.200} disagrees with the class names of 'ada2i_config' "
                         f"{list(config.class_names or ())} (the file was edited); refusing it")
    return config, metadata


def _check_one_save(folder: Path, values: dict, header_checksums: str) -> None:
    """Refuse weights or a featuriser other than those config.json was saved with (folders written
    before config.json named them pass as they are)."""
    mix = "(a save was cut short, or files of two saves were put together); refusing the folder"
    recorded = values.get("weights_checksum")
    if recorded is not None and recorded != _weights_checksum(header_checksums):
        raise ValueError(f"{folder}: {WEIGHTS} is not the weights {CONFIG} was saved with {mix}")
    featuriser = values.get("featuriser_checksum")
    description = folder / FEATURISER / _FEATURISER_DESCRIPTION
    if featuriser is None:
        return
    found = read_json_object(description).get("checksum") if description.is_file() else None
    if found != featuriser:
        raise ValueError(f"{folder}: {FEATURISER}/ is {'missing' if found is None else 'not the featuriser'} "
                         f"{CONFIG} was saved with {mix}")


def _read_weights(path: Path) -> tuple[str, dict]:
    """The safetensors header's checksums (as written) and the tensors of ``path``."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as weights:
            header = weights.metadata() or {}
            state = {name: weights.get_tensor(name) for name in weights.keys()}
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path}: not a readable safetensors file of this package ({error})") from None
    if _CHECKSUMS not in header:
        raise ValueError(f"{path}: not a safetensors file of this package (its header has no {_CHECKSUMS!r})")
    return header[_CHECKSUMS], state


def _digests(header_checksums: str, path: Path) -> dict[str, str]:
    where = f"{path}: the header's {_CHECKSUMS!r}"
    return expect_string_map(parse_json(header_checksums, where), where)


def push_to_hub(folder, repo_id: str, **upload_options) -> str:
    """Upload a folder written by :func:`save_pretrained` to the Hugging Face Hub (needs
    ``huggingface_hub`` and a login); returns the commit's URL."""
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise ValueError('pushing to the Hub needs huggingface_hub: pip install "ada2i-fast[hub]"') from None
    api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    return str(api.upload_folder(folder_path=str(folder), repo_id=repo_id, **upload_options))
