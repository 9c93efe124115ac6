"""A trained model as the ecosystem shares one: a folder with ``config.json`` and ``model.safetensors``
(Hugging Face's layout), read without unpickling anything (safetensors holds raw tensors only).

``config.json`` holds ``model_type: "ada2i"``, the model's :class:`Ada2IConfig`, ``id2label`` and
``label2id`` (class names, as Hugging Face configs hold them) and the run's metadata; the safetensors
header holds a checksum of every tensor, verified on load, so a damaged or edited file is refused, as
is a folder whose config is another model's. ``featuriser/``, when present, is the featuriser of the
corpus the model was trained on (``data.featuriser``): what turns new conversations into its inputs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from ..atomic import atomic_open, strict_json
from ..config import Ada2IConfig
from .torch_file import check_weights, tensor_digest

MODEL_TYPE = "ada2i"
CONFIG, WEIGHTS = "config.json", "model.safetensors"
FEATURISER = "featuriser"  # the folder of the training corpus's featuriser (data.featuriser), when it has one
_CHECKSUMS = "ada2i_checksums"  # the safetensors header's metadata key


def save_pretrained(model, folder, metadata: dict | None = None, featuriser=None) -> Path:
    """Write ``model`` into ``folder`` (created if needed): the weights first, then the featuriser (a
    ``data.featuriser.Featuriser``, copied into ``featuriser/``; without one an older copy is removed),
    then the config, each atomically."""
    from safetensors.torch import save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    metadata = metadata or {}
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    digests = {name: tensor_digest(tensor) for name, tensor in state.items()}
    with atomic_open(folder / WEIGHTS) as handle:
        handle.write(save(state, metadata={_CHECKSUMS: json.dumps(digests, sort_keys=True)}))
    if featuriser is None:
        shutil.rmtree(folder / FEATURISER, ignore_errors=True)  # a copy an earlier save left
    else:
        featuriser.save(folder / FEATURISER)
    model_config = with_class_names(model.config, metadata)
    labels = model_config.id2label
    config = {"model_type": MODEL_TYPE, "ada2i_config": model_config.to_dict(),
              **({"id2label": {str(i): name for i, name in labels.items()}, "label2id": model_config.label2id}
                 if labels else {}),
              "metadata": metadata}
    with atomic_open(folder / CONFIG) as handle:
        handle.write((strict_json(config, indent=2) + "\n").encode())
    return folder


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
    the file for another model's config, a damaged header or a tensor that differs from its checksum."""
    folder = Path(folder)
    config, metadata = _read_config(folder / CONFIG)
    state, digests = _read_weights(folder / WEIGHTS)
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


def _read_config(path: Path) -> tuple[Ada2IConfig, dict]:
    try:
        values = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable JSON config ({error})") from None
    if not isinstance(values, dict) or values.get("model_type") != MODEL_TYPE:
        found = values.get("model_type") if isinstance(values, dict) else type(values).__name__
        raise ValueError(f"{path}: the config of another model (model_type {found!r}, expected {MODEL_TYPE!r})")
    if not isinstance(values.get("ada2i_config"), dict) or not isinstance(values.get("metadata", {}), dict):
        raise ValueError(f"{path}: 'ada2i_config' and 'metadata' must be objects")
    metadata = values.get("metadata", {})
    config = with_class_names(Ada2IConfig.from_dict(values["ada2i_config"], str(path)), metadata)
    id2label = values.get("id2label")
    if id2label is not None and id2label != {str(i): name for i, name in config.id2label.items()}:
        raise ValueError(f"{path}: id2label {id2label} disagrees with the class names of 'ada2i_config' "
                         f"{list(config.class_names or ())} (the file was edited); refusing it")
    return config, metadata


def _read_weights(path: Path) -> tuple[dict, dict]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as weights:
            header = weights.metadata() or {}
            state = {name: weights.get_tensor(name) for name in weights.keys()}
        digests = json.loads(header[_CHECKSUMS])
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable safetensors file of this package ({error})") from None
    return state, digests


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
