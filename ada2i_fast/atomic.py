"""Write files so that a crash leaves either the old file or the new one, never a torn one."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator


@contextlib.contextmanager
def atomic_open(path) -> Iterator[BinaryIO]:
    """A binary handle on a temp file beside ``path``, renamed over it once the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it owner-only; the result follows the umask
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if _out_of_space(error):
            raise OSError(errno.ENOSPC, f"no space left on the device of {path.parent} while writing {path.name} "
                          f"(any earlier {path.name} is intact); free some space and run the command again") from None
        raise


# How torch.save's C++ writer (PyTorchStreamWriter) words a write the disk refused: a failed write, or a
# short one it notices by the file position ("[enforce fail at inline_container.cc:672] unexpected pos ...").
TORCH_WRITE_FAILURES = ("file write failed", "unexpected pos")


def _out_of_space(error: BaseException) -> bool:
    """A full disk, as ``os.write`` reports it or as torch.save's C++ writer rewords it."""
    if isinstance(error, OSError):
        return error.errno == errno.ENOSPC
    return isinstance(error, RuntimeError) and any(failure in str(error) for failure in TORCH_WRITE_FAILURES)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path, value) -> None:
    with atomic_open(path) as handle:
        handle.write((strict_json(value, indent=2) + "\n").encode())


def strict_json(value, **dumps_options) -> str:
    """JSON with every non-finite float written as null (``NaN`` is not JSON)."""
    return json.dumps(_finite_or_none(value), allow_nan=False, **dumps_options)


def _finite_or_none(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value
