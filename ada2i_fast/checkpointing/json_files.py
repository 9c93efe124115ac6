"""Reading back the files a run, a model folder or a corpus build names: only regular files
(:func:`open_regular_file`, checked on the opened descriptor), and JSON bounded in size and nesting depth,
strict (no ``NaN`` or ``Infinity``, which this package never writes), and every refusal a
``ValueError`` naming the file. What each file must hold is checked by its reader with
:func:`expect_object` and :func:`expect_string_map`."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

MAX_DEPTH = 32  # every file this package writes nests a few levels; a config.json 6
MAX_FILE_BYTES = 16 * 2**20  # a config.json, run.json or summary.json (each a few kB)
MAX_RECORDS_BYTES = 1 * 2**30  # metrics.jsonl or steps.jsonl (steps.jsonl: about 500 bytes a step)


def read_json(path, *, max_bytes: int = MAX_FILE_BYTES):
    """The JSON value in the file ``path``."""
    path = Path(path)
    return parse_json(read_text(path, max_bytes=max_bytes), str(path))


def read_json_object(path, *, max_bytes: int = MAX_FILE_BYTES) -> dict:
    """The JSON object in the file ``path``."""
    return expect_object(read_json(path, max_bytes=max_bytes), str(path))


def read_json_lines(path, *, max_bytes: int = MAX_RECORDS_BYTES) -> list[tuple[int, object]]:
    """``(line number, value)`` for every non-blank line of the JSON-lines file ``path``."""
    path = Path(path)
    lines = read_text(path, max_bytes=max_bytes).splitlines()
    return [(n, parse_json(line, f"{path}, line {n}")) for n, line in enumerate(lines, 1) if line.strip()]


def read_text(path: Path, *, max_bytes: int) -> str:
    """The UTF-8 text of the regular file ``path``, refused above ``max_bytes`` before it is read whole."""
    with open_regular_file(path, "file") as handle:
        try:
            data = handle.read(max_bytes + 1)
        except OSError as error:
            raise ValueError(f"{path}: cannot be read ({error.strerror or error})") from None
    if len(data) > max_bytes:
        raise ValueError(f"{path}: larger than {max_bytes} bytes, far more than this package writes there; refusing it")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text (byte {error.start}); the file is damaged") from None


def open_regular_file(path: Path, what: str, error: type[ValueError] = ValueError):
    """``path`` opened for binary reading, refused (``error``, naming ``what`` and the path) unless it is
    a regular file: a device never ends (/dev/zero) and a FIFO blocks. Checked on the opened descriptor,
    so nothing swaps the file in between."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens at once instead of waiting for a writer
    except FileNotFoundError:
        raise error(f"missing {what} {path}") from None
    except OSError as problem:
        raise error(f"unreadable {what} {path} ({problem.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise error(f"{what} {path} is not a regular file (a device, FIFO, socket or folder); name a file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def parse_json(text: str, where: str, *, max_depth: int = MAX_DEPTH):
    """The JSON value of ``text`` (from ``where``), nested at most ``max_depth`` deep, every number finite."""
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise ValueError(f"{where}: nested deeper than {max_depth} levels; refusing it") from None
    except ValueError as error:  # json.JSONDecodeError, a non-finite number, an integer of over 4300 digits
        raise ValueError(f"{where}: not JSON ({error})") from None
    if nesting_depth(value, max_depth) > max_depth:
        raise ValueError(f"{where}: nested deeper than {max_depth} levels; refusing it")
    return value


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of the range of a double")
    return value


def nesting_depth(value, limit: int) -> int:
    """How deep containers nest in ``value`` (a scalar: 0), counted up to ``limit + 1``."""
    depth, level = 0, [value]
    while depth <= limit:
        containers = [item for item in level if isinstance(item, (dict, list))]
        if not containers:
            break
        depth += 1
        level = [child for item in containers for child in (item.values() if isinstance(item, dict) else item)]
    return depth


def expect_object(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a JSON object, found {_kind(value)}")
    return value


def expect_string_map(value, where: str) -> dict[str, str]:
    """``value``, a JSON object whose values are all strings."""
    bad = next((key for key, item in expect_object(value, where).items() if not isinstance(item, str)), None)
    if bad is not None:
        raise ValueError(f"{where}: {bad!r} should be a string, found {_kind(value[bad])}")
    return value


def _kind(value) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")
