"""Train Ada2I with the recipe of SPEC §4: ``python -m ada2i_fast.train --dataset meld``.

Read top to bottom: flags (derived from the config fields) -> ``run_setup`` (data, configs, output
folder, or the saved state of ``--resume``) -> ``training.trainer.Trainer``: model, epochs (train, dev,
early stopping), test report of the best-dev state.

Several GPUs or nodes (``distributed``): launch the same command with torchrun, one process per
GPU; each runs on ``cuda:LOCAL_RANK`` (NCCL), or on the CPU with gloo::

    torchrun --nproc_per_node=4 -m ada2i_fast.train --dataset meld ...
    # on each of 2 nodes (the data at the same path on both; files are written by rank 0's node):
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \\
        --rdzv-id=RUN -m ada2i_fast.train --dataset meld ...

Each global batch of ``--batch-size`` dialogues is split over the processes and the update is the
single-process update on the whole batch. ``--resume`` continues a distributed run with the same
number of processes only.
"""

from __future__ import annotations

import argparse
import sys

from .cli import USER_ERRORS, console_script, user_errors_as_one_line
from .config_file import parse_with_recipe, recipe_yaml
from .devices import check_device, default_device
from .training import distributed
from .training.run_setup import build_parser, new_run, resolved_flags, resumed_run
from .training.trainer import RunInterrupted


@user_errors_as_one_line
def main(argv=None) -> dict:
    """The CLI: flags -> run setup -> training; bad data or flags end in one ``error:`` line, an
    interrupt in the command that continues the run (exit status 128 + the signal).

    Launched by torchrun (WORLD_SIZE, RANK, LOCAL_RANK set), it joins the process group first and
    leaves it at the end; rank 0 alone reads the run folder and writes it, and an error on any
    process ends every process, rank 0 printing it."""
    parser = build_parser()
    args, _ = parse_with_recipe(parser, argv)
    if args.print_config:
        return print_recipe(parser, args)
    joined = False
    context = distributed.SINGLE
    try:
        check_device(args.device or default_device())
        if distributed.launched_by_torchrun() and not distributed.initialized():
            _, args.device = distributed.init(args.device or default_device())
            joined = True
        context = distributed.current()
        setup = resumed_run(args, parser, context) if args.resume is not None else new_run(args, context)
        return setup.run()
    except RunInterrupted as interrupted:
        if context.is_main:
            print(interrupted.message, file=sys.stderr)
        raise SystemExit(interrupted.code) from None
    except USER_ERRORS as error:
        if not context.is_main:
            raise SystemExit(1) from error  # rank 0 says what went wrong
        raise
    finally:
        if joined:
            distributed.shutdown()


def print_recipe(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict:
    """``--print-config``: the new run's resolved recipe as YAML on stdout; returns it."""
    if args.resume is not None:
        raise ValueError("--print-config prints a new run's recipe; a resumed run's is in its run.json (drop --resume)")
    values = resolved_flags(args)
    print(recipe_yaml(parser, values, command=parser.prog), end="")
    return values


console = console_script(main)

if __name__ == "__main__":
    main()
