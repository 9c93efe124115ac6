"""A saved model and the corpus it is applied to, as ``evaluate`` and ``predict`` open them."""

from __future__ import annotations

from ..config import TrainConfig
from ..data import Corpus, load_corpus
from ..datasets import dataset_spec
from ..modules.model import Ada2I
from ..training.checkpoint import load_any_checkpoint


def open_checkpoint_and_corpus(checkpoint, data, dataset: str | None) -> tuple[Ada2I, Corpus, TrainConfig, str]:
    """The model of ``checkpoint`` (a run's best.pt or last.pt, a run folder, or the authors'), the
    corpus it is applied to, its recipe and which weights these are: ``data``, else the data the
    checkpoint records; ``dataset`` names the layout for a checkpoint that does not record it. A
    corpus whose classes differ from the model's is refused."""
    model, metadata = load_any_checkpoint(checkpoint)
    recorded_dataset = metadata.get("dataset")
    dataset_name = dataset or recorded_dataset
    if dataset_name is None:
        raise ValueError("this checkpoint does not record its dataset; pass --dataset")
    if dataset and recorded_dataset and dataset != recorded_dataset and not data:
        raise ValueError(
            f"this checkpoint was trained on {recorded_dataset}, not {dataset}; its classes would be misnamed "
            f"(drop --dataset, or pass --data with a corpus of the checkpoint's classes)"
        )
    recipe = TrainConfig.from_dict(metadata.get("train_config", {}), str(checkpoint))
    recorded_data = metadata.get("data")
    path = data or (None if recorded_data is None or recorded_data.startswith("synthetic") else recorded_data)
    corpus = load_corpus(
        dataset_name,
        path,
        seed=recipe.seed,
        synthetic_size=metadata.get("size", 1.0),
        task=metadata.get("task", "7class"),
        synthetic=metadata.get("synthetic", "redundant"),
    ).validate(num_classes=model.config.num_classes)
    trained_on = metadata.get("classes")
    if trained_on is not None:  # checkpoints written before the class table had full names hold abbreviations
        trained_on = dataset_spec(dataset_name).canonical(trained_on, metadata.get("task", "7class"))
    if trained_on is not None and list(trained_on) != list(corpus.classes):
        raise ValueError(
            f"the checkpoint predicts the classes {', '.join(trained_on)}; the data at {corpus.source} has "
            f"{', '.join(corpus.classes)}"
        )
    return model, corpus, recipe, metadata.get("weights", f"{checkpoint}: an authors' checkpoint")
