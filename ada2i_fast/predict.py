"""Per-utterance predictions of a saved model, with each modality's share of the logits, as JSON lines.

    python -m ada2i_fast.predict --checkpoint RUN_OR_MODEL --csv FILE --out predictions.jsonl
    python -m ada2i_fast.predict --checkpoint RUN_OR_MODEL --out predictions.jsonl [--data PATH] [--split test]

``--csv FILE``: new conversations, a transcript CSV in the layout of the corpus the model was trained
on (its column names; ``--text-column`` and its kin rename them), featurised as that corpus was
(the model's featuriser: TF-IDF→SVD or the sentence model for the text, openSMILE and the train
split's standardisation for the audio). Dialogues are grouped by the dialogue columns in the order
the file first names them, utterances ordered by position. The label and speaker columns may be
absent; with a label column every line has ``gold``. A model whose corpus kept no featuriser (a
legacy pickle, a synthetic corpus, your own ``--embeddings``, an authors' checkpoint) is refused in
one line saying why. Without ``--csv``: a split of a corpus (the one the model records, or ``--data``).

One line per utterance, dialogues in file (or corpus) order, every line the same shape:

    {"dialogue_id": "d7", "utterance": 0, "gold": "neutral", "predicted": "joy",
     "probabilities": {"neutral": 0.61, ...},
     "contributions": {"a": {"neutral": 0.4, ...}, "t": {...}, "v": {...}},
     "bias": {"neutral": -0.02, ...}}

``utterance`` counts from 0 within the dialogue; a CSV's dialogue ids are its dialogue columns'
values joined by ``_``. ``contributions`` holds, per modality, its exact share of the fused logits
(``ClassifierHead.contributions``): per class, the modalities' shares plus ``bias`` are the logits
whose softmax is ``probabilities`` and whose argmax is ``predicted`` (to float rounding). The bias is
the same on every line; it is repeated so that each line stands alone (a header line would give the
file two kinds of line). Floats are the float32 values, written exactly.
"""

from __future__ import annotations

import argparse

from .atomic import atomic_open, strict_json
from .cli import add_saved_model_flags, user_errors_as_one_line
from .devices import PRECISIONS, check_device
from .inference.pipeline import COLUMNS, ConversationPipeline, prediction_records
from .inference.saved_model import open_checkpoint_and_corpus

SPLIT_ONLY = ("data", "dataset", "split")  # the flags of the split mode, which --csv replaces


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ada2i_fast.predict",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", required=True, help="the JSON-lines file to write (replaced atomically)")
    add_saved_model_flags(parser)
    parser.set_defaults(split=None)  # test, unless --csv
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="bf16: bfloat16 autocast; auto: bf16 where the device has bfloat16 arithmetic (default: fp32)",
    )
    new = parser.add_argument_group("new conversations (--csv)")
    new.add_argument("--csv", metavar="FILE", help="a transcript CSV of new conversations, in the layout of the "
                     "model's corpus, featurised with the model's featuriser (instead of --data/--split)")
    for field in COLUMNS:
        flag = "--dialogue-columns" if field == "dialogue" else f"--{field}-column"
        new.add_argument(flag, dest=f"{field}_column", metavar="NAME",
                         help=f"the {field} column{'s (comma-separated)' if field == 'dialogue' else ''} of --csv "
                         "(default: the corpus's)")
    new.add_argument("--audio-column", metavar="NAME", help="column holding each utterance's audio file, relative "
                     "to the CSV's folder (default: the corpus's audio column, if it had one)")
    new.add_argument("--audio-dir", metavar="DIR", help="MELD's layout: the clips are DIR/dia{Dialogue_ID}_utt"
                     "{Utterance_ID}.wav")
    new.add_argument("--visual-column", metavar="NAME", help="column holding each utterance's visual .npy "
                     "(default: the corpus's)")
    new.add_argument("--text-model", metavar="DIR", help="where the corpus's sentence-transformers model is on this "
                     "machine, when not where the corpus was built")
    new.add_argument("--feature-cache", metavar="DIR", help="keep the extracted audio features here (default: a "
                     "temporary folder)")
    new.add_argument("--workers", type=int, help="audio extraction processes (default: every core)")
    return parser


@user_errors_as_one_line
def main(argv=None) -> None:
    """The CLI (returns None: console scripts exit with what ``main`` returns). Bad flags, files or
    checkpoints end in one ``error:`` line."""
    parser = build_parser()
    write_predictions(parser.parse_args(argv), parser)


def write_predictions(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> int:
    """Writes ``args.out``; returns the number of utterances written."""
    device = check_device(args.device)
    if args.csv:
        records, what = csv_records(args, parser or build_parser(), device)
    else:
        records, what = split_records(args, device)
    written = 0
    with atomic_open(args.out) as handle:
        for record in records:
            handle.write((strict_json(record) + "\n").encode())
            written += 1
    print(f"wrote {written} predictions of {what} to {args.out}")
    return written


def split_records(args: argparse.Namespace, device):
    split = args.split or "test"
    model, corpus, recipe, weights = open_checkpoint_and_corpus(args.checkpoint, args.data, args.dataset)
    print(f"model: {weights}")
    records = prediction_records(model.to(device), corpus.splits[split], corpus.classes,
                                 batch_size=recipe.batch_size, device=device, precision=args.precision)
    return records, f"the {split} split of {corpus.source}"


def csv_records(args: argparse.Namespace, parser: argparse.ArgumentParser, device):
    given = [f"--{name}" for name in SPLIT_ONLY if getattr(args, name) != parser.get_default(name)]
    if given:
        raise ValueError(f"{', '.join(given)} choose(s) a corpus's split; --csv predicts on new conversations with "
                         "the model's own featuriser: drop one")
    pipeline = ConversationPipeline.from_pretrained(args.checkpoint, text_model=args.text_model, device=device,
                                                    precision=args.precision, feature_cache=args.feature_cache,
                                                    workers=args.workers)
    print(f"model: {args.checkpoint} (classes {', '.join(pipeline.classes)}, modalities "
          f"{pipeline.model.config.modalities})")
    columns = {field: getattr(args, f"{field}_column") for field in COLUMNS}
    conversations = pipeline.read_csv(args.csv, audio_column=args.audio_column, audio_dir=args.audio_dir,
                                      visual_column=args.visual_column, columns=columns)
    split = conversations.split
    return pipeline.predictions(conversations), f"the {split.num_dialogues} dialogues of {args.csv}"


if __name__ == "__main__":
    main()
