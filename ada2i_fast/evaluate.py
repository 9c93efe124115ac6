"""Test report for a saved model, ours or the authors': ``python -m ada2i_fast.evaluate --checkpoint PATH``."""

from __future__ import annotations

import argparse

from .cli import add_saved_model_flags, console_script, user_errors_as_one_line
from .devices import check_device
from .inference.saved_model import open_checkpoint_and_corpus
from .training.eval_loop import evaluate_split


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ada2i_fast.evaluate", description=__doc__)
    add_saved_model_flags(parser)
    return parser


@user_errors_as_one_line
def main(argv=None) -> dict:
    """The CLI; returns the report's summary. Bad flags, files or checkpoints end in one ``error:`` line."""
    return report(build_parser().parse_args(argv))


def report(args: argparse.Namespace) -> dict:
    model, corpus, recipe, weights = open_checkpoint_and_corpus(args.checkpoint, args.data, args.dataset)
    device = check_device(args.device)
    print(f"model: {weights}")
    result = evaluate_split(model.to(device), corpus.splits[args.split], batch_size=recipe.batch_size, device=device)
    print(f"{args.split} on {corpus.source}: accuracy {result.accuracy:.4f} | weighted F1 {result.weighted_f1:.4f}")
    print(result.report(corpus.classes))
    return result.summary(corpus.classes)


console = console_script(main)

if __name__ == "__main__":
    main()
