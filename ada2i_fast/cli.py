"""What every command line of the package shares: flags derived from the config fields, one error
mapping (a user's mistake or a damaged file is one ``error:`` line, never a traceback) and the
console scripts."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
from typing import Callable

from .datasets import DATASETS, SPLITS
from .devices import default_device

# What a command's bad input raises: bad flags and files (ValueError and its subclasses), missing,
# unreadable or unwritable paths and full disks (OSError).
USER_ERRORS = (ValueError, OSError)


def user_errors_as_one_line(main: Callable) -> Callable:
    """``main`` with every :data:`USER_ERRORS` ending in ``SystemExit("error: ...")``."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except USER_ERRORS as error:
            raise SystemExit(f"error: {one_line(error)}") from error

    return wrapped


def one_line(error: Exception) -> str:
    """The message of ``error``; an OSError's without its ``[Errno N]`` prefix, naming its file."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror + (f": {error.filename}" if error.filename else "")
    return str(error)


def console_script(main: Callable) -> Callable[[], None]:
    """The console-script entry of ``main``: it runs ``main()`` and exits 0 whatever ``main`` returns
    (a console script exits with its function's return value)."""

    @functools.wraps(main)
    def script() -> None:
        main()

    return script


def add_data_flag(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``--data PATH``, defaulting to ``$ADA2I_DATA``."""
    parser.add_argument("--data", default=os.environ.get("ADA2I_DATA"), help=f"{help_text} (default: $ADA2I_DATA)")


def add_config_flags(parser: argparse.ArgumentParser, config_cls, role: str, title: str):
    """One flag per field of ``config_cls`` with ``role``: ``--field-name``, its help, its choices and
    its default per preset; the parsed value is None when the flag is absent (the preset decides).
    Returns the flags' argument group."""
    group = parser.add_argument_group(title)
    for f in dataclasses.fields(config_cls):
        if f.metadata["role"] != role:
            continue
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata['help']} {_defaults(config_cls, f)}".strip()
        if f.type == "bool":
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            kind = {"int": int, "float": float, "str": str}.get(str(f.type).split(" |")[0], float)
            group.add_argument(flag, type=kind, default=None, choices=f.metadata["choices"], help=help_text)
    return group


def _defaults(config_cls, f: dataclasses.Field) -> str:
    if "(default" in f.metadata["help"]:
        return ""
    values = {name: getattr(config_cls.preset(name), f.name) for name in DATASETS}
    if len({repr(v) for v in values.values()}) == 1:
        return f"(default: {_shown(next(iter(values.values())))})"
    return "(default: " + ", ".join(f"{name} {_shown(value)}" for name, value in values.items()) + ")"


def _shown(value) -> str:
    return ("on" if value else "off") if isinstance(value, bool) else str(value)


def changed_flags(args: argparse.Namespace, parser: argparse.ArgumentParser, allowed) -> list[str]:
    """The flags given a value other than their default, except ``allowed`` (destinations)."""
    dests = dict.fromkeys(action.dest for action in parser._actions
                          if action.option_strings and action.default is not argparse.SUPPRESS)
    return ["--" + dest.replace("_", "-") for dest in dests
            if dest not in allowed and getattr(args, dest) != parser.get_default(dest)]


def add_recipe_flags(parser: argparse.ArgumentParser, what: str) -> None:
    """``--config FILE.yaml`` and ``--print-config`` (config_file)."""
    parser.add_argument("--config", metavar="FILE.yaml",
                        help=f"read {what} from a recipe file: YAML whose keys are the flags without -- (start_mod: 4, "
                        "modulation: false, no_afw: true; null: the default), each checked as its flag; flags given "
                        "on the command line override the file (README: Recipe files)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved recipe (the file and the flags merged, the dataset's preset filled "
                        "in) as YAML that --config reads back to the same run, and exit without training")


def add_saved_model_flags(parser: argparse.ArgumentParser) -> None:
    """--checkpoint, --data, --dataset, --split and --device, as every command on a saved model takes them."""
    parser.add_argument("--checkpoint", required=True,
                        help="a training run's folder (its model/ once the run has finished, else its best.pt, or "
                        "its last.pt before any epoch ended), a model folder (config.json + model.safetensors: a run's "
                        "model/ or save_pretrained's), a run's best.pt or last.pt (the current weights), or an "
                        "authors' checkpoint")
    add_data_flag(parser, "legacy pickle, cache or transcript corpus to apply the model to; without it and "
                  "$ADA2I_DATA, the data recorded in the checkpoint")
    parser.add_argument("--dataset", choices=tuple(DATASETS), default=None,
                        help="the data layout, needed for an authors' checkpoint that does not record it")
    parser.add_argument("--split", choices=SPLITS, default="test", help="which split (default: test)")
    parser.add_argument("--device", default=default_device(),
                        help="where the model runs (default: cuda where there is one, else cpu)")
