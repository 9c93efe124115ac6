"""Per-utterance predictions of a saved model, with each modality's share of the logits, as JSON lines:
``python -m ada2i_fast.predict --checkpoint PATH --out predictions.jsonl [--data PATH] [--split test]``.

One line per utterance of the split, dialogues in corpus order, every line the same shape:

    {"dialogue_id": "d7", "utterance": 0, "gold": "neutral", "predicted": "joy",
     "probabilities": {"neutral": 0.61, ...},
     "contributions": {"a": {"neutral": 0.4, ...}, "t": {...}, "v": {...}},
     "bias": {"neutral": -0.02, ...}}

``utterance`` counts from 0 within the dialogue. ``contributions`` holds, per modality, its exact
share of the fused logits (``ClassifierHead.contributions``): per class, the modalities' shares plus
``bias`` are the logits whose softmax is ``probabilities`` and whose argmax is ``predicted`` (to float
rounding). The bias is the same on every line; it is repeated so that each line stands alone (a
header line would give the file two kinds of line). Floats are the float32 values, written exactly.
"""

from __future__ import annotations

import argparse
from typing import Iterator

import torch

from .atomic import atomic_open, strict_json
from .data import Split, iterate_batches
from .data.batching import batch_order
from .cli import user_errors_as_one_line
from .devices import PRECISIONS, check_device
from .model import Ada2I
from .saved_model import add_saved_model_flags, open_checkpoint_and_corpus


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ada2i_fast.predict",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", required=True, help="the JSON-lines file to write (replaced atomically)")
    add_saved_model_flags(parser)
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="bf16: bfloat16 autocast; auto: bf16 where the device has bfloat16 arithmetic (default: fp32)",
    )
    return parser


@user_errors_as_one_line
def main(argv=None) -> None:
    """The CLI (returns None: console scripts exit with what ``main`` returns). Bad flags, files or
    checkpoints end in one ``error:`` line."""
    write_predictions(build_parser().parse_args(argv))


def write_predictions(args: argparse.Namespace) -> int:
    """Writes ``args.out``; returns the number of utterances written."""
    device = check_device(args.device)
    model, corpus, recipe, weights = open_checkpoint_and_corpus(args.checkpoint, args.data, args.dataset)
    print(f"model: {weights}")
    split = corpus.splits[args.split]
    records = prediction_records(
        model.to(device), split, corpus.classes, batch_size=recipe.batch_size, device=device, precision=args.precision
    )
    written = 0
    with atomic_open(args.out) as handle:
        for record in records:
            handle.write((strict_json(record) + "\n").encode())
            written += 1
    print(f"wrote {written} predictions of the {args.split} split of {corpus.source} to {args.out}")
    return written


def prediction_records(
    model: Ada2I, split: Split, classes, *, batch_size: int, device: torch.device, precision: str = "fp32"
) -> Iterator[dict]:
    """One JSON-ready record per utterance of ``split``, in corpus order (see the module docstring)."""
    classes = list(classes)
    modalities = model.config.modalities
    batches = iterate_batches(split, modalities, batch_size, shuffle=False)
    for dialogues, batch in zip(batch_order(split, batch_size, shuffle=False), batches):
        prediction = model.predict(batch.to(device), precision)
        bias = dict(zip(classes, prediction.bias.tolist()))
        rows = zip(prediction.labels.tolist(), prediction.probabilities.tolist(), prediction.contributions.tolist())
        for dialogue in dialogues.tolist():
            start = int(split.offsets[dialogue])
            for utterance in range(int(split.lengths[dialogue])):
                predicted, probabilities, contributions = next(rows)
                yield {
                    "dialogue_id": split.dialogue_ids[dialogue],
                    "utterance": utterance,
                    "gold": classes[int(split.labels[start + utterance])],
                    "predicted": classes[predicted],
                    "probabilities": dict(zip(classes, probabilities)),
                    "contributions": {m: dict(zip(classes, row)) for m, row in zip(modalities, contributions)},
                    "bias": bias,
                }


if __name__ == "__main__":
    main()
