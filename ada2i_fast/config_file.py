"""Recipe files: ``--config FILE.yaml`` for ``train``, ``sweep`` and ``tune``, and ``--print-config``.

A recipe file is a YAML mapping whose keys are the trainer's flags without ``--``, as their
destinations spell them (``start_mod: 4``, ``modulation: false``, ``no_afw: true``, ``quiet: true``);
``null`` means the flag's default. A ``sweep:`` or ``tune:`` section holds that command's own flags
(``seeds: [12, 13, 14]``), so one file can describe a run and the studies of it: ``train`` reads the
top-level keys only, ``sweep`` and ``tune`` the top-level keys (their trials' trainer flags) and
their own section. Each value is checked as its flag is (type, choices), an error names the file
and the key, and flags given on the command line override the file.

The file is read with ``yaml.safe_load`` (no tags that build objects), at most
:data:`MAX_BYTES`, and only a flat mapping of single values (and lists for flags that take
several) is accepted, so a hostile file (deep nesting, alias bombs, huge numbers) is one error line.
"""

from __future__ import annotations

import argparse
import difflib
import reprlib
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

MAX_BYTES = 64 * 1024  # a recipe is a few dozen short lines
SECTIONS = ("sweep", "tune")
# Flags that are no key of a recipe, and why.
NOT_KEYS = {
    "help": "not a recipe key",
    "config": "a recipe file cannot name another one",
    "print_config": "give --print-config on the command line",
    "resume": "a recipe describes a new run; continue a run with --resume DIR on the command line",
}
SCALARS = (str, int, float)

_shown = reprlib.Repr()
_shown.maxstring = _shown.maxother = 100
_shown.maxlist = 6


@dataclass(frozen=True)
class RecipeFile:
    """A recipe file's top-level mapping, read and bounded."""

    path: Path
    mapping: dict

    @classmethod
    def read(cls, path: str | Path) -> "RecipeFile":
        path = Path(path)
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            raise ValueError(f"{path}: larger than {MAX_BYTES // 1024} KiB; a recipe is a mapping of a few dozen keys")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
        mapping = _load_yaml(text, path)
        if mapping is None:  # an empty file
            mapping = {}
        if not isinstance(mapping, dict):
            raise ValueError(f"{path}: expected a mapping of keys (lr: 0.001), got a YAML {_kind(mapping)}")
        odd = [k for k in mapping if not isinstance(k, str)]
        if odd:
            raise ValueError(f"{path}: every key must be a flag's name, got {_shown.repr(odd[0])}")
        return cls(path, mapping)

    def part(self, section: str | None) -> dict:
        """The keys of ``section`` (None: the top level, without the sections)."""
        if section is None:
            return {k: v for k, v in self.mapping.items() if k not in SECTIONS}
        keys = self.mapping.get(section)
        if keys is None:
            return {}
        if not isinstance(keys, dict):
            raise ValueError(f"{self.path}: {section}: expected a mapping of {section}'s keys, got a YAML {_kind(keys)}")
        return keys

    def name(self, key: str, section: str | None) -> str:
        """How an error names ``key`` of ``section``: the file, then the key."""
        return f"{self.path}: {section + '.' if section else ''}{key}"


def _load_yaml(text: str, path: Path):
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        where = f", line {error.problem_mark.line + 1}" if error.problem_mark is not None else ""
        reason = _shown.repr(error.problem or error.context or "")[1:-1]
        raise ValueError(f"{path}{where}: not a YAML recipe ({reason})") from None
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not a YAML recipe ({_shown.repr(str(error))[1:-1]})") from None
    except RecursionError:
        raise ValueError(f"{path}: nested too deeply; a recipe is a flat mapping of keys") from None
    except ValueError as error:  # e.g. an integer of more digits than Python converts, or a bad date
        raise ValueError(f"{path}: not a YAML recipe ({str(error).split(';')[0]})") from None


def _kind(value) -> str:
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    if isinstance(value, bool):
        return "boolean"
    return "number" if isinstance(value, (int, float)) else type(value).__name__


# --- keys and values, checked as the flags are -------------------------------------------------

def recipe_keys(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """Each key a recipe may give for ``parser``'s flags: the destination of a ``--x/--no-x`` flag
    or of a flag taking a value, and the name of a switch (``no_afw``, ``quiet``)."""
    keys = {}
    for action in parser._actions:
        if not action.option_strings or action.dest in NOT_KEYS:
            continue
        if isinstance(action, argparse.BooleanOptionalAction) or action.nargs != 0:
            key = action.dest
        else:
            key = next(s for s in action.option_strings if s.startswith("--"))[2:].replace("-", "_")
        keys.setdefault(key, action)
    return keys


def check_keys(recipe: RecipeFile, section: str | None, parser: argparse.ArgumentParser,
               refused: dict[str, str] | None = None) -> tuple[dict, dict]:
    """The values of ``recipe``'s keys of ``section`` for ``parser``, by destination, and the key that
    gave each; an unknown key, a ``refused`` one (key: why) or a value its flag would refuse is a
    ``ValueError`` naming the file and the key. ``null`` keys are left out (the flag's default)."""
    keys, refused = recipe_keys(parser), {**NOT_KEYS, **(refused or {})}
    given = recipe.part(section)
    for key in given:
        if key in refused:
            raise ValueError(f"{recipe.name(key, section)}: {refused[key]}")
    unknown = [key for key in given if key not in keys]
    if unknown:
        raise ValueError(f"{recipe.path}: unknown key{'s' if len(unknown) > 1 else ''} "
                         + ", ".join(_unknown(key, keys, section) for key in unknown[:10])
                         + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
                         + f"; a key is a flag of {parser.prog} without -- (start_mod: 4)")
    values, sources = {}, {}
    for key, value in given.items():
        if value is None:
            continue
        action = keys[key]
        checked = _checked_value(action, value, recipe.name(key, section))
        if checked is not None:
            values[action.dest], sources[action.dest] = checked, recipe.name(key, section)
    return values, sources


def _unknown(key: str, keys: dict, section: str | None) -> str:
    shown = f"{section}.{key}" if section else key
    close = difflib.get_close_matches(key, keys, n=1)
    return _shown.repr(shown)[1:-1] + (f" (did you mean {close[0]}?)" if close else "")


def _checked_value(action: argparse.Action, value, name: str):
    """``value`` as the flag of ``action`` would store it; None for a switch given ``false``."""
    if action.nargs == 0 or isinstance(action, argparse.BooleanOptionalAction):
        if not isinstance(value, bool):
            raise ValueError(f"{name}: expected true or false, got {_shown.repr(value)}")
        if isinstance(action, argparse.BooleanOptionalAction):
            return value
        return action.const if value else None
    if action.nargs in ("+", "*"):
        items = value if isinstance(value, list) else [value]
        if action.nargs == "+" and not items:
            raise ValueError(f"{name}: expected at least one value")
        return [_converted(action, item, name) for item in items]
    return _converted(action, value, name)


def _converted(action: argparse.Action, value, name: str):
    """One value through the flag's type and choices, as argparse converts the text of a flag."""
    kind = getattr(action.type, "__name__", "str") if action.type is not None else "str"
    if isinstance(value, bool) or not isinstance(value, SCALARS):
        raise ValueError(f"{name}: expected a single {kind} value, got a YAML {_kind(value)}"
                         + (" (quote it to give a string)" if isinstance(value, bool) and kind == "str" else ""))
    text = str(value)
    try:
        converted = action.type(text) if action.type is not None else text
    except argparse.ArgumentTypeError as error:
        raise ValueError(f"{name}: {error}") from None
    except (TypeError, ValueError):
        raise ValueError(f"{name}: invalid {kind} value: {_shown.repr(value)}") from None
    if action.choices is not None and converted not in action.choices:
        raise ValueError(f"{name}: invalid choice: {_shown.repr(converted)} (choose from "
                         + ", ".join(map(str, action.choices)) + ")")
    return converted


# --- the command line over the file ------------------------------------------------------------

def parse_with_recipe(parser: argparse.ArgumentParser, argv, *, section: str | None = None
                      ) -> tuple[argparse.Namespace, RecipeFile | None]:
    """``argv`` parsed by ``parser`` over the keys of ``section`` of the recipe file its ``--config``
    names (:func:`parse_over_recipe`); returns the parsed flags and the file (None without one)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    path = _given_on_command_line(parser, argv).get("config")
    recipe = RecipeFile.read(path) if path is not None else None
    return parse_over_recipe(parser, argv, recipe, section=section), recipe


def parse_over_recipe(parser: argparse.ArgumentParser, argv: list[str], recipe: RecipeFile | None, *,
                      section: str | None = None, refused: dict[str, str] | None = None) -> argparse.Namespace:
    """``argv`` parsed by ``parser`` over the keys of ``section`` of ``recipe``: a flag given on the
    command line wins. ``args.from_file`` maps each destination the file decided to the file and key
    that gave it (error messages name them)."""
    if recipe is None:
        args = parser.parse_args(argv)
        args.from_file = {}
        return args
    values, sources = check_keys(recipe, section, parser, refused)
    given = _given_on_command_line(parser, argv)
    args = parser.parse_args(argv, argparse.Namespace(**values))
    args.from_file = {dest: name for dest, name in sources.items() if dest not in given}
    return args


def _given_on_command_line(parser: argparse.ArgumentParser, argv: list[str]) -> dict:
    """The destinations ``argv`` sets, with their values (a destination argparse leaves alone keeps
    the marker it was given)."""
    unset = object()
    dests = {a.dest for a in parser._actions if a.option_strings}
    namespace = argparse.Namespace(**dict.fromkeys(dests, unset))
    parser.parse_args(argv, namespace)
    return {dest: value for dest, value in vars(namespace).items() if dest in dests and value is not unset}


def as_flags(parser: argparse.ArgumentParser, values: dict) -> list[str]:
    """``values`` (by destination) as the command-line flags of ``parser`` that give them, in the
    parser's order."""
    flags, done = [], set()
    for action in parser._actions:
        if action.dest not in values or action.dest in done or not action.option_strings:
            continue
        done.add(action.dest)
        value, option = values[action.dest], action.option_strings[0]
        if isinstance(action, argparse.BooleanOptionalAction):
            flags.append(option if value else "--no-" + option[2:])
        elif action.nargs == 0:
            flags += [option] if value == action.const else []
        elif action.nargs in ("+", "*"):
            flags += [option, *map(str, value)]
        else:
            text = str(value)
            flags += [f"{option}={text}"] if text.startswith("-") else [option, text]
    return flags


# --- the resolved recipe as a file -------------------------------------------------------------

def recipe_yaml(parser: argparse.ArgumentParser, values: dict, *, command: str, section: str | None = None,
                section_values: dict | None = None, section_parser: argparse.ArgumentParser | None = None) -> str:
    """A recipe file of ``values`` (by destination), grouped and titled as ``parser``'s --help groups
    them; with ``section``, that section's ``section_values`` as ``section_parser`` groups them."""
    lines = [f"# {command} --config FILE reads this recipe back; flags given with it override its keys.",
             "# null: the flag's default (the data or the machine decides it; see --help)."]
    lines += _grouped(parser, values, indent="")
    if section is not None:
        lines += ["", f"{section}:"] + _grouped(section_parser, section_values, indent="  ")
    return "\n".join(lines) + "\n"


def _grouped(parser: argparse.ArgumentParser, values: dict, indent: str) -> list[str]:
    lines, done = [], set()
    for group in parser._action_groups:
        entries = list(dict.fromkeys(a.dest for a in group._group_actions if a.dest in values and a.dest not in done))
        if entries:
            lines += ["", f"{indent}# {group.title}"]
            lines += [f"{indent}{dest}: {_yaml_value(values[dest])}" for dest in entries]
            done.update(entries)
    return lines


def _yaml_value(value) -> str:
    """``value`` as one line of YAML (quoted where YAML would read it as something else)."""
    return yaml.safe_dump([value], default_flow_style=True, width=1 << 30, allow_unicode=True).strip()[1:-1]
