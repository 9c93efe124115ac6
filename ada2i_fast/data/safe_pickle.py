"""A pickle reader that can only rebuild builtin containers/scalars and numpy arrays/scalars.

``pickle.load`` calls whatever global a file names; this unpickler resolves globals from a fixed
table instead of importing them, so a hostile file fails before any of its code runs.
"""

from __future__ import annotations

import builtins
import collections
import pickle
from typing import BinaryIO

import numpy as np

try:
    from numpy._core import multiarray as _multiarray, numeric as _numeric
except ImportError:  # numpy < 2 has no numpy._core
    from numpy.core import multiarray as _multiarray, numeric as _numeric


class UnsafePickleError(ValueError):
    """The pickle names a global outside the allowlist; nothing of it was executed."""


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Protocol-2 pickles store bytes as `_codecs.encode(str, "latin1")`; any other codec is refused.
    if encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"refused _codecs.encode with encoding {encoding!r} (only latin-1 is allowed)")
    return text.encode("latin-1")


_BUILTINS = ("dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int", "float", "complex",
             "bool")
_NUMPY = {
    "multiarray._reconstruct": _multiarray._reconstruct,
    "multiarray.scalar": _multiarray.scalar,
    "numeric._frombuffer": _numeric._frombuffer,
}
ALLOWED_GLOBALS = {
    **{(module, name): getattr(builtins, name) for module in ("builtins", "__builtin__") for name in _BUILTINS},
    **{(f"{package}.{path.rpartition('.')[0]}", path.rpartition(".")[2]): obj
       for package in ("numpy.core", "numpy._core") for path, obj in _NUMPY.items()},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,
    ("_codecs", "encode"): _latin1_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only :data:`ALLOWED_GLOBALS`; py2-era pickles load with ``encoding="latin1"``."""

    def __init__(self, file: BinaryIO) -> None:
        super().__init__(file, encoding="latin1")

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refused to load global {module}.{name}: only builtin containers/scalars and numpy "
                "arrays/scalars may appear in a data pickle"
            ) from None


def safe_load(file: BinaryIO):
    """``pickle.load`` restricted to :data:`ALLOWED_GLOBALS`."""
    return RestrictedUnpickler(file).load()
