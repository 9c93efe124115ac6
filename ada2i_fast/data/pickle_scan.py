"""The opcode pre-scan of a data pickle: limits checked before any object is built.

:func:`check_pickle` walks the opcodes and refuses what would let a small file exhaust memory or
time: declared lengths beyond the end of the file, memo slots far past the file's size, nesting
deeper than :data:`MAX_NESTING`, and structures whose shared references ("billion laughs")
expand past :data:`EXPANSION_PER_BYTE` elements per file byte.
"""

from __future__ import annotations

import contextlib
import gc
import pickle
import pickletools
import struct

MAX_NESTING = 100  # containers inside containers; legacy data files nest about 8 deep
EXPANSION_PER_BYTE = 4  # elements the loaded object may expand to (shared references counted each time)
MIN_EXPANSION = 1 << 22  # ... but small files may always expand this far (~32 MiB of array data)
PAYLOAD_BYTES_PER_ELEMENT = 8  # a string/bytes payload of n bytes counts as 1 + n // 8 elements


class PickleLoadError(ValueError):
    """A data pickle could not be loaded (corrupt, truncated, over a limit or refused); nothing of it ran."""


class UnsafePickleError(PickleLoadError):
    """The pickle names a global or an opcode outside the allowlist; nothing of it was executed."""


@contextlib.contextmanager
def collector_paused():
    # Scan and load build many small acyclic objects; the cyclic GC running while they pile up
    # doubles the time of both.
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


_KIND_MEMBERS = {
    # The order of the kinds is the order the scan tests them in: the most frequent first.
    "MEMOIZE": ("MEMOIZE",),
    "BINARY_GET": ("BINGET", "LONG_BINGET"),
    "FIXED_LEAF": ("NONE", "NEWTRUE", "NEWFALSE", "BININT1", "BININT2", "BININT", "BINFLOAT"),
    "TUPLE1": ("TUPLE1",),
    "SMALL_TUPLE": ("TUPLE2", "TUPLE3"),
    "MARK": ("MARK",),
    "REDUCE": ("REDUCE",),
    "FROM_MARK": ("TUPLE", "LIST", "DICT", "FROZENSET"),
    "BUILD": ("BUILD",),
    "COUNTED_LEAF": ("SHORT_BINUNICODE", "SHORT_BINBYTES", "SHORT_BINSTRING", "LONG1", "BINUNICODE", "BINBYTES",
                     "BINSTRING", "LONG4", "BINUNICODE8", "BINBYTES8", "BYTEARRAY8"),
    "ADD_FROM_MARK": ("APPENDS", "SETITEMS", "ADDITEMS"),
    "EMPTY_CONTAINER": ("EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET", "EMPTY_TUPLE"),
    "BINARY_PUT": ("BINPUT", "LONG_BINPUT"),
    "ADD_ITEMS": ("APPEND", "SETITEM"),
    "FRAME": ("FRAME",),
    "STACK_GLOBAL": ("STACK_GLOBAL",),
    "TEXT": ("INT", "LONG", "FLOAT", "STRING", "UNICODE", "GLOBAL", "GET", "PUT"),
    "POP": ("POP",),
    "POP_MARK": ("POP_MARK",),
    "DUP": ("DUP",),
    "PROTO": ("PROTO",),
    "STOP": ("STOP",),
    "REFUSED": ("PERSID", "BINPERSID", "EXT1", "EXT2", "EXT4", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "NEXT_BUFFER",
                "READONLY_BUFFER"),
}
# The size of an opcode's argument: fixed bytes, or (negative for signed) the width of a length prefix;
# for APPEND / SETITEM / TUPLEn, the number of items it takes from the stack.
_ARG_SIZES = {"BININT1": 1, "BININT2": 2, "BININT": 4, "BINFLOAT": 8, "BINGET": 1, "LONG_BINGET": 4, "BINPUT": 1,
              "LONG_BINPUT": 4, "SHORT_BINUNICODE": 1, "SHORT_BINBYTES": 1, "SHORT_BINSTRING": 1, "LONG1": 1,
              "BINUNICODE": 4, "BINBYTES": 4, "BINSTRING": -4, "LONG4": -4, "BINUNICODE8": 8, "BINBYTES8": 8,
              "BYTEARRAY8": 8, "TUPLE2": 2, "TUPLE3": 3, "APPEND": 1, "SETITEM": 2}
_KINDS = {name: number for number, name in enumerate(_KIND_MEMBERS, start=1)}  # 0: not an opcode
_NAMES = {ord(op.code): op.name for op in pickletools.opcodes}
_KIND = [0] * 256
_ARG = [0] * 256
for _code, _name in _NAMES.items():
    _KIND[_code] = next(_KINDS[k] for k, members in _KIND_MEMBERS.items() if _name in members)
    _ARG[_code] = _ARG_SIZES.get(_name, 0)
_UNPACK = {1: struct.Struct("<B").unpack_from, 4: struct.Struct("<I").unpack_from,
           8: struct.Struct("<Q").unpack_from, -4: struct.Struct("<i").unpack_from}
# A scalar is (expanded elements, nesting depth); a container or object [elements, depth, stored]:
# ``stored`` once it is counted into another, after which it may not grow.
_LEAF = (1, 0)


class _ScanError(PickleLoadError):
    pass


def check_pickle(data: bytes) -> None:
    """Refuse ``data`` unless it is one well-formed pickle within the limits of this module.

    A stack machine over the opcodes that tracks, instead of objects, how many elements each
    would expand to (a memo reference counts its target again) and how deeply it nests. It
    does not check what the C unpickler checks itself (stack underflow across a mark, which
    globals are allowed). Raises :class:`PickleLoadError` naming the byte.
    """
    size = len(data)
    if size == 0:
        raise PickleLoadError("empty file, not a pickle")
    budget = max(EXPANSION_PER_BYTE * size, MIN_EXPANSION)
    try:
        with collector_paused():
            _scan(data, budget)
    except _Failure as failure:
        raise failure.explained(size) from None


class _Failure(Exception):
    """Where the scan stopped (``start``: the opcode's byte offset, ``op``: the opcode) and why."""

    def __init__(self, start: int, op: int, error: Exception) -> None:
        self.start, self.op, self.error = start, op, error

    def explained(self, size: int) -> PickleLoadError:
        error, where = self.error, f"byte {self.start}"
        name = _NAMES.get(self.op, f"0x{self.op:02x}")
        if isinstance(error, UnsafePickleError):
            return UnsafePickleError(f"{where}: {error}")
        if isinstance(error, _ScanError):
            why = str(error)
        elif isinstance(error, IndexError):
            why = "truncated (no STOP opcode)" if self.start >= size - 1 else f"{name} on an empty stack"
        elif isinstance(error, KeyError):
            why = f"memo slot {error} was never stored"
        else:  # struct.error, ValueError from int(): a cut or garbled argument
            why = f"truncated or malformed {name} argument"
        return PickleLoadError(f"not a readable data pickle: {where}: {why}")


def _scan(data: bytes, budget: int) -> None:
    (MEMOIZE, BINARY_GET, FIXED_LEAF, TUPLE1, SMALL_TUPLE, MARK, REDUCE, FROM_MARK, BUILD, COUNTED_LEAF,
     ADD_FROM_MARK, EMPTY_CONTAINER, BINARY_PUT, ADD_ITEMS, FRAME, STACK_GLOBAL, TEXT, POP, POP_MARK, DUP, PROTO,
     STOP, REFUSED) = map(_KINDS.__getitem__, (
        "MEMOIZE", "BINARY_GET", "FIXED_LEAF", "TUPLE1", "SMALL_TUPLE", "MARK", "REDUCE", "FROM_MARK", "BUILD",
        "COUNTED_LEAF", "ADD_FROM_MARK", "EMPTY_CONTAINER", "BINARY_PUT", "ADD_ITEMS", "FRAME", "STACK_GLOBAL", "TEXT",
        "POP", "POP_MARK", "DUP", "PROTO", "STOP", "REFUSED"))
    kinds, args, unpack, leaf, max_nesting = _KIND, _ARG, _UNPACK, _LEAF, MAX_NESTING
    size = len(data)
    stack: list = []
    push = stack.append
    marks: list[int] = []
    memo: dict[int, object] = {}
    pos = start = op = 0
    try:
        while True:
            start = pos
            op = data[pos]
            kind = kinds[op]
            pos += 1
            if kind == MEMOIZE:
                memo[len(memo)] = stack[-1]
            elif kind == BINARY_GET:
                width = args[op]
                push(memo[unpack[width](data, pos)[0]])
                pos += width
            elif kind == FIXED_LEAF:
                pos += args[op]
                push(leaf)
            elif kind == TUPLE1:
                item = stack[-1]
                if type(item) is list:
                    item[2] = True
                stack[-1] = node = [item[0] + 1, item[1] + 1, False]
                if node[0] > budget or node[1] > max_nesting:
                    _over_limit(node, budget)
            elif kind == SMALL_TUPLE:
                count = args[op]
                items = stack[-count:]
                if len(items) < count:
                    raise IndexError
                del stack[-count:]
                push(_container(items, budget))
            elif kind == MARK:
                if len(marks) >= max_nesting:
                    raise _ScanError(f"marks nested more than {max_nesting} deep")
                marks.append(len(stack))
            elif kind == REDUCE:
                arguments = stack.pop()
                if type(arguments) is list:
                    arguments[2] = True
                # The result replaces the callable, which find_class alone decides may run.
                stack[-1] = [arguments[0], arguments[1], False]
            elif kind == FROM_MARK:
                items = stack[marks.pop():]
                del stack[len(stack) - len(items):]
                push(_container(items, budget))
            elif kind == BUILD:
                item = stack.pop()
                node = stack[-1]
                if type(node) is not list or node[2]:
                    raise _ScanError("BUILD on a plain value, or on an object already stored in another")
                if type(item) is list:
                    item[2] = True
                node[0] += item[0]
                if item[1] >= node[1]:
                    node[1] = item[1] + 1
                if node[0] > budget or node[1] > max_nesting:
                    _over_limit(node, budget)
            elif kind == COUNTED_LEAF:
                width = args[op]
                length = unpack[width](data, pos)[0]
                pos += abs(width)
                if not 0 <= length <= size - pos:
                    raise _ScanError(f"{_NAMES[op]} declares {length} bytes, {size - pos} remain in the file")
                pos += length
                push(leaf if length < PAYLOAD_BYTES_PER_ELEMENT else (1 + length // PAYLOAD_BYTES_PER_ELEMENT, 0))
            elif kind == ADD_FROM_MARK:
                items = stack[marks.pop():]
                del stack[len(stack) - len(items):]
                _add(stack[-1], items, budget)
            elif kind == EMPTY_CONTAINER:
                push([1, 1, False])
            elif kind == BINARY_PUT:
                width = args[op]
                _put(memo, unpack[width](data, pos)[0], stack[-1], size)
                pos += width
            elif kind == ADD_ITEMS:
                count = args[op]
                items = stack[-count:]
                if len(items) < count:
                    raise IndexError
                del stack[-count:]
                _add(stack[-1], items, budget)
            elif kind == FRAME:
                length = unpack[8](data, pos)[0]
                pos += 8
                if length > size - pos:
                    raise _ScanError(f"FRAME declares {length} bytes, {size - pos} remain in the file")
            elif kind == STACK_GLOBAL:
                if len(stack) < 2:
                    raise IndexError
                del stack[-2:]
                push(leaf)
            elif kind == TEXT:
                pos = _text_opcode(data, pos, op, stack, memo)
            elif kind == POP:
                if marks and len(stack) == marks[-1]:
                    marks.pop()  # POP of a MARK, as the unpickler allows
                else:
                    stack.pop()
            elif kind == POP_MARK:
                del stack[marks.pop():]
            elif kind == DUP:
                push(stack[-1])
            elif kind == PROTO:
                if data[pos] > pickle.HIGHEST_PROTOCOL:
                    raise _ScanError(f"protocol {data[pos]} is newer than this Python reads")
                pos += 1
            elif kind == STOP:
                if len(stack) != 1 or marks:
                    raise _ScanError("STOP with a malformed stack")
                if pos != size:
                    raise _ScanError(f"{size - pos} bytes after the end of the pickle")
                return
            elif kind == REFUSED:
                raise UnsafePickleError(f"refused opcode {_NAMES[op]} (data pickles never use it)")
            else:
                raise _ScanError(f"byte 0x{op:02x} is not a pickle opcode")
            if pos > size:
                raise _ScanError(f"truncated: {_NAMES[op]} runs past the end of the file")
    except (IndexError, KeyError, ValueError, struct.error) as error:  # PickleLoadError is a ValueError
        raise _Failure(start, op, error) from None


def _text_opcode(data: bytes, pos: int, op: int, stack: list, memo: dict) -> int:
    """The protocol-0 opcodes whose argument is a line (GLOBAL: two); returns the position after it."""
    end = _line_end(data, pos, op)
    name = _NAMES[op]
    if name == "GLOBAL":
        end = _line_end(data, end + 1, op)
        stack.append(_LEAF)
    elif name == "GET":
        stack.append(memo[int(data[pos:end])])
    elif name == "PUT":
        _put(memo, int(data[pos:end]), stack[-1], len(data))
    else:
        stack.append((1 + (end - pos) // PAYLOAD_BYTES_PER_ELEMENT, 0))
    return end + 1


def _container(items: list, budget: int) -> list:
    node = [1, 1, False]
    _add(node, items, budget)
    return node


def _add(node: list, items: list, budget: int) -> None:
    if type(node) is not list:
        raise _ScanError("items added to a plain value, not a container")
    if node[2]:
        # Counts are summed when a container is stored; growing it afterwards would hide its size.
        raise _ScanError("a container grew after it was stored in another (a cycle, which data never has)")
    elements, depth, _ = node
    for item in items:
        elements += item[0]
        if item[1] >= depth:
            depth = item[1] + 1
        if type(item) is list:
            if item is node:
                raise _ScanError("a container holds itself (a cycle, which data never has)")
            item[2] = True
    node[0], node[1] = elements, depth
    if elements > budget or depth > MAX_NESTING:
        _over_limit(node, budget)


def _over_limit(node: list, budget: int):
    if node[1] > MAX_NESTING:
        raise _ScanError(f"containers nested more than {MAX_NESTING} deep")
    raise _ScanError(
        f"the object expands to more than {budget} elements (shared references counted each time; "
        f"limit: {EXPANSION_PER_BYTE} per file byte, at least {MIN_EXPANSION})"
    )


def _put(memo: dict, index: int, node, size: int) -> None:
    # The C unpickler grows its memo to twice the largest index; a pickle stores at most one
    # object per byte, so a larger index is a memory attack, not data.
    if index > size:
        raise _ScanError(f"memo slot {index} is beyond what a {size}-byte file can hold")
    memo[index] = node


def _line_end(data: bytes, pos: int, op: int) -> int:
    end = data.find(b"\n", pos)
    if end < 0:
        raise _ScanError(f"truncated: {_NAMES[op]} argument has no end of line")
    return end
