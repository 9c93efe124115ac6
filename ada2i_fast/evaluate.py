"""Test report for a saved model, ours or the authors': ``python -m ada2i_fast.evaluate --checkpoint PATH``."""

from __future__ import annotations

import argparse
import os

import torch

from .checkpoint import load_any_checkpoint
from .config import DATASETS, TrainConfig
from .devices import check_device
from .data import load_corpus
from .eval_loop import evaluate_split


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ada2i_fast.evaluate", description=__doc__)
    parser.add_argument("--checkpoint", required=True, help="best.pt of a training run, or an authors' checkpoint")
    parser.add_argument(
        "--data",
        default=os.environ.get("ADA2I_DATA"),
        help="legacy pickle or cache; default: the data recorded in the checkpoint",
    )
    parser.add_argument("--dataset", choices=DATASETS, default=None, help="needed for authors' checkpoints")
    parser.add_argument("--split", choices=("train", "dev", "test"), default="test")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser


def main(argv=None) -> dict:
    try:
        return report(build_parser().parse_args(argv))
    except (ValueError, FileNotFoundError) as error:  # bad checkpoint or data: one clear line, no traceback
        raise SystemExit(f"error: {error}") from error


def report(args: argparse.Namespace) -> dict:
    model, metadata = load_any_checkpoint(args.checkpoint)
    recorded_dataset = metadata.get("dataset")
    dataset = args.dataset or recorded_dataset
    if dataset is None:
        raise ValueError("this checkpoint does not record its dataset; pass --dataset")
    if args.dataset and recorded_dataset and args.dataset != recorded_dataset and not args.data:
        raise ValueError(
            f"this checkpoint was trained on {recorded_dataset}, not {args.dataset}; its classes would be misnamed "
            f"(drop --dataset, or pass --data with a corpus of the checkpoint's classes)"
        )
    recipe = TrainConfig(**metadata.get("train_config", {}))
    recorded = metadata.get("data")
    path = args.data or (None if recorded is None or recorded.startswith("synthetic") else recorded)
    corpus = load_corpus(
        dataset,
        path,
        seed=recipe.seed,
        synthetic_size=metadata.get("size", 1.0),
        task=metadata.get("task", "7class"),
    ).validate(num_classes=model.config.num_classes)
    trained_on = metadata.get("classes")
    if trained_on is not None and list(trained_on) != list(corpus.classes):
        raise ValueError(
            f"the checkpoint predicts the classes {', '.join(trained_on)}; the data at {corpus.source} has "
            f"{', '.join(corpus.classes)}"
        )
    device = check_device(args.device)
    result = evaluate_split(model.to(device), corpus.splits[args.split], batch_size=recipe.batch_size, device=device)
    print(f"{args.split} on {corpus.source}: accuracy {result.accuracy:.4f} | weighted F1 {result.weighted_f1:.4f}")
    print(result.report(corpus.classes))
    return result.summary(corpus.classes)


if __name__ == "__main__":
    main()
