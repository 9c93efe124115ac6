"""A bounded pickle reader that can only rebuild builtin containers/scalars and numpy arrays/scalars.

``pickle.load`` calls whatever global a file names; this unpickler resolves globals from a fixed
table instead of importing them, so a hostile file fails before any of its code runs. Before
unpickling, ``pickle_scan.check_pickle`` walks the opcodes (no object is built) and refuses what
would let a small file exhaust memory or time. numpy's own array and dtype unpickling trusts its input (a wrong object count segfaults), so
array states are checked here before numpy sees them.

Every failure is a :class:`PickleLoadError` (a ValueError) whose message names the file.
"""

from __future__ import annotations

import builtins
import collections
import io
import math
import pickle
import reprlib
from os import PathLike
from typing import BinaryIO

import numpy as np

try:
    from numpy._core import multiarray as _multiarray, numeric as _numeric
except ImportError:  # numpy < 2 has no numpy._core
    from numpy.core import multiarray as _multiarray, numeric as _numeric

from .pickle_scan import PickleLoadError, UnsafePickleError, collector_paused, check_pickle

MAX_ARRAY_DIMS = 32

_SHORT = reprlib.Repr()  # for values quoted in messages: a hostile one may be huge
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 2, 40, 40


def safe_load_file(path: str | PathLike):
    """:func:`safe_load` of the file at ``path``; errors name it (OSError, such as a missing file, passes)."""
    with open(path, "rb") as f:
        return safe_load(f, name=str(path))


def safe_load(file: BinaryIO, *, name: str | None = None):
    """``pickle.load`` restricted to :data:`ALLOWED_GLOBALS`, after :func:`check_pickle`.

    Reads the whole file into memory (the checks need its size). ``name`` (default: the file's
    ``name`` attribute) starts every error message.
    """
    name = name or str(getattr(file, "name", "<pickle>"))
    data = file.read()
    try:
        with collector_paused():
            check_pickle(data)
            unpickler = RestrictedUnpickler(io.BytesIO(data), byte_budget=len(data))
            obj = unpickler.load()
            return _without_pending_arrays(obj) if unpickler.pending_arrays else obj
    except PickleLoadError as error:
        raise type(error)(f"{name}: {error}") from error.__cause__
    except Exception as error:  # noqa: BLE001 - whatever the C unpickler raises, the file is unreadable
        raise PickleLoadError(f"{name}: not a readable data pickle ({type(error).__name__}: {error})") from error






class _NotCallable:
    """Stands in for a class a data pickle may name but must never call (``numpy.ndarray``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}, not callable from a data pickle>"


_NDARRAY = _NotCallable("numpy.ndarray")


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Protocol-2 pickles store bytes as `_codecs.encode(str, "latin1")`; any other codec is refused.
    if encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"refused _codecs.encode with encoding {_SHORT.repr(encoding)} (only latin-1 is allowed)")
    return text.encode("latin-1")


def _no_int_size(make):
    """``bytes``/``bytearray`` as a pickle may call them: from data, never from a size (``bytes(10**10)``)."""

    def checked(*args):
        if args and isinstance(args[0], int):
            size = args[0] if abs(args[0]) < 2**63 else "a huge int"
            raise UnsafePickleError(f"refused {make.__name__}({size}): a data pickle stores its bytes")
        return make(*args)

    return checked


def _checked_shape(shape) -> tuple[int, ...]:
    if type(shape) is tuple and len(shape) <= MAX_ARRAY_DIMS:
        for d in shape:
            if type(d) is not int or d < 0:
                break
        else:
            return shape
    raise UnsafePickleError(f"refused array shape {_SHORT.repr(shape)}: expected a tuple of non-negative ints")


def _plain_dtype(dtype) -> np.dtype:
    """A fresh copy of a plain (non-structured) dtype; its pickled state may have been tampered with."""
    if not isinstance(dtype, np.dtype):
        raise UnsafePickleError(f"refused {type(dtype).__name__} where a numpy dtype belongs")
    if dtype.names is not None or dtype.fields is not None or dtype.subdtype is not None:
        raise UnsafePickleError("refused a structured or sub-array numpy dtype (data pickles hold plain arrays)")
    try:
        return np.dtype(dtype.str)
    except (TypeError, ValueError):
        raise UnsafePickleError(f"refused an inconsistent numpy dtype {dtype.str!r}") from None


def _new_dtype(spec, align=False, copy=True) -> np.dtype:
    if not isinstance(spec, str):
        raise UnsafePickleError(f"refused numpy.dtype({_SHORT.repr(spec)}): a pickled dtype is named by a string")
    # Always a copy: the pickle's BUILD that follows would otherwise edit numpy's shared dtype.
    return np.dtype(spec, align=bool(align), copy=True)


def _checked_scalar(dtype, data=None):
    dtype = _plain_dtype(dtype)
    if dtype.hasobject or not isinstance(data, (bytes, str)) or len(data) != dtype.itemsize:
        raise UnsafePickleError(f"refused a numpy {dtype} scalar that is not {dtype.itemsize} bytes of data")
    return _multiarray.scalar(dtype, data)


def _checked_frombuffer(buffer, dtype, shape, order):
    dtype, shape = _plain_dtype(dtype), _checked_shape(shape)
    if dtype.hasobject or not isinstance(buffer, (bytes, bytearray)) or order not in ("C", "F"):
        raise UnsafePickleError(f"refused a numpy {dtype} array from {type(buffer).__name__} in order {_SHORT.repr(order)}")
    if len(buffer) != math.prod(shape) * dtype.itemsize:
        raise UnsafePickleError(f"refused a numpy {dtype}{list(shape)} array from {len(buffer)} bytes")
    return _numeric._frombuffer(buffer, dtype, shape, order)


class _PendingArray(np.ndarray):
    """What ``_reconstruct`` hands to the pickle's BUILD: an array whose state is checked before numpy's.

    :func:`safe_load` turns these into plain ndarrays once the file is loaded.
    """

    def __setstate__(self, state) -> None:
        np.ndarray.__setstate__(self, _checked_array_state(state))


def _checked_array_state(state) -> tuple:
    if type(state) is not tuple or len(state) not in (4, 5):
        raise UnsafePickleError("refused an ndarray state that is not (version, shape, dtype, fortran, data)")
    version, shape, dtype, fortran, data = state if len(state) == 5 else (1, *state)
    shape, dtype = _checked_shape(shape), _plain_dtype(dtype)
    if type(version) is not int or type(fortran) not in (bool, int):
        raise UnsafePickleError("refused an ndarray state with a non-int version or fortran flag")
    count = 1
    for d in shape:
        count *= d
    if dtype.hasobject:
        if not isinstance(data, list) or len(data) != count:
            raise UnsafePickleError(f"refused an object array of shape {list(shape)} whose state does not list "
                                    f"{count} objects")
    elif not isinstance(data, (bytes, str)) or len(data) != count * dtype.itemsize:
        raise UnsafePickleError(
            f"refused a {dtype}{list(shape)} array whose data is not {count * dtype.itemsize} bytes"
        )
    return version, shape, dtype, int(fortran), data


_BUILTINS = ("dict", "list", "tuple", "set", "frozenset", "str", "int", "float", "complex", "bool")
_NUMPY_PATHS = {"multiarray._reconstruct", "multiarray.scalar", "numeric._frombuffer"}
_NUMPY_MODULES = ("numpy.core", "numpy._core")
ALLOWED_GLOBALS = {
    **{(module, name): getattr(builtins, name) for module in ("builtins", "__builtin__") for name in _BUILTINS},
    **{(module, name): _no_int_size(getattr(builtins, name))
       for module in ("builtins", "__builtin__") for name in ("bytes", "bytearray")},
    **{(f"{package}.{path.rpartition('.')[0]}", path.rpartition(".")[2]): path
       for package in _NUMPY_MODULES for path in _NUMPY_PATHS},  # bound per unpickler (they need its budget)
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _new_dtype,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,
    ("_codecs", "encode"): _latin1_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only :data:`ALLOWED_GLOBALS`; py2-era pickles load with ``encoding="latin1"``.

    ``byte_budget`` bounds the arrays ``_reconstruct`` may allocate (the file's size: a pickled
    array's data is in the file). Run :func:`check_pickle` first: this class alone does not bound
    declared lengths, memo slots, nesting or shared references.
    """

    def __init__(self, file: BinaryIO, *, byte_budget: int) -> None:
        super().__init__(file, encoding="latin1")
        self.byte_budget = byte_budget
        self.pending_arrays = 0
        self._numpy = {
            "multiarray._reconstruct": self._reconstruct,
            "multiarray.scalar": _checked_scalar,
            "numeric._frombuffer": _checked_frombuffer,
        }

    def find_class(self, module: str, name: str):
        try:
            found = ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refused to load global {module}.{name}: only builtin containers/scalars and numpy "
                "arrays/scalars may appear in a data pickle"
            ) from None
        return self._numpy[found] if isinstance(found, str) else found

    def persistent_load(self, pid):
        raise UnsafePickleError("refused a persistent id (data pickles never use them)")

    def _reconstruct(self, subtype, shape, typecode) -> np.ndarray:
        self.pending_arrays += 1
        if subtype is _NDARRAY and shape == (0,) and typecode in (b"b", "b"):  # how numpy pickles every array
            return np.ndarray.__new__(_PendingArray, (0,), np.int8)
        if subtype is not _NDARRAY or not isinstance(typecode, (str, bytes)) or len(typecode) > 8:
            raise UnsafePickleError(f"refused numpy _reconstruct({_SHORT.repr(subtype)}, ..., {_SHORT.repr(typecode)})")
        shape, dtype = _checked_shape(shape), np.dtype(typecode)
        if dtype.hasobject or math.prod(shape) * dtype.itemsize > self.byte_budget:
            raise UnsafePickleError(f"refused numpy _reconstruct of a {dtype}{list(shape)} array")
        return np.ndarray.__new__(_PendingArray, shape, dtype)


_ATOMS = frozenset((str, bytes, int, float, bool, complex, type(None)))


def _without_pending_arrays(root):
    """``root`` with every :class:`_PendingArray` replaced by a plain ndarray view of it.

    Lists, dicts and object arrays are updated in place, tuples rebuilt; sets and dict keys are
    hashable and so hold no arrays. Recursion is bounded by :data:`MAX_NESTING` (the scan).
    """
    done: dict[int, object] = {}

    def plain(obj):
        if type(obj) in _ATOMS:
            return obj
        key = id(obj)
        if key in done:
            return done[key]
        done[key] = out = obj  # provisional: a cycle back to obj sees obj itself
        if isinstance(obj, list):
            for i, item in enumerate(obj):
                kind = type(item)
                if kind is _PendingArray and not item.dtype.hasobject:  # the common case, without a call
                    obj[i] = item.view(np.ndarray)
                elif kind not in _ATOMS and (new := plain(item)) is not item:
                    obj[i] = new
        elif isinstance(obj, dict):
            changed = [(k, new) for k, item in obj.items()
                       if type(item) not in _ATOMS and (new := plain(item)) is not item]
            for k, new in changed:
                obj[k] = new
        elif type(obj) is tuple:
            items = [plain(item) for item in obj]
            if any(new is not item for new, item in zip(items, obj)):
                out = tuple(items)
        elif isinstance(obj, np.ndarray):
            out = obj.view(np.ndarray) if type(obj) is _PendingArray else obj
            if out.dtype.hasobject:
                flat = out.reshape(-1, order="A")
                for i, item in enumerate(flat):
                    if type(item) not in _ATOMS and (new := plain(item)) is not item:
                        flat[i] = new
        done[key] = out
        return out

    return plain(root)
