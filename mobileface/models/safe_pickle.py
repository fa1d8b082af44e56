"""Read numeric data from pickle files without executing them.

A pickle is a program: loading one with :mod:`pickle` can call any Python
function the file names (``os.system`` included). This module never calls
:func:`pickle.load`. It walks the opcodes itself (:func:`pickletools.genops`
only decodes them) and understands a small, closed set:

* containers and numbers: lists, tuples, dicts, ints, floats, bools, None,
  strings and bytes, with the memo (PUT/GET/MEMOIZE), MARK and FRAME;
* the globals that NumPy's own ``ndarray`` pickles name, and nothing else:
  ``numpy.core.multiarray._reconstruct`` / ``numpy._core.multiarray._reconstruct``
  with ``numpy.ndarray`` (protocols 0-4), ``numpy.core.numeric._frombuffer`` /
  ``numpy._core.numeric._frombuffer`` (protocol 5, in-band buffer) and
  ``numpy.dtype``. Their REDUCE and BUILD opcodes are *interpreted* — the
  array is rebuilt from its shape, dtype string and raw bytes with
  :func:`numpy.frombuffer` — never executed.

Every other global, opcode or call is refused with :class:`PickleRefused`
before anything from the file is used. Object and structured dtypes are
refused too (an object array's contents are themselves pickles).
"""
from __future__ import annotations

import pickletools
from pathlib import Path
from typing import Any

import numpy as np

from mobileface.errors import ModelError

_RECONSTRUCT = {("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct")}
_FROMBUFFER = {("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}
_NDARRAY = ("numpy", "ndarray")
_DTYPE = ("numpy", "dtype")
_ALLOWED_GLOBALS = _RECONSTRUCT | _FROMBUFFER | {_NDARRAY, _DTYPE}
_MAX_BYTES = 1 << 30


class PickleRefused(ModelError):
    """The pickle asks for something this reader does not allow (nothing was executed)."""


class _Global:
    def __init__(self, module: str, name: str):
        self.key = (module, name)


class _DType:
    def __init__(self, spec: str):
        self.spec = spec
        self.byteorder = "|"

    def build(self, state: Any) -> None:
        # (version, byteorder, subarray, names, fields, elsize, alignment, flags)
        if not isinstance(state, tuple) or len(state) < 5:
            raise PickleRefused("malformed numpy dtype state")
        if state[2] is not None or state[3] is not None or state[4] is not None:
            raise PickleRefused("structured or sub-array numpy dtypes are not accepted")
        if state[1] not in ("<", ">", "|", "="):
            raise PickleRefused(f"unknown byte order {state[1]!r} in a numpy dtype")
        self.byteorder = state[1]

    def resolve(self) -> np.dtype:
        try:
            base = np.dtype(self.spec)
        except TypeError:
            raise PickleRefused(f"unknown numpy dtype {self.spec!r}") from None
        if base.kind not in "biufc" or base.fields is not None:
            raise PickleRefused(f"numpy dtype {self.spec!r} is not a plain number type "
                                "(object arrays hold pickles)")
        return base.newbyteorder(self.byteorder) if self.byteorder in "<>" else base


class _Array:
    """An ndarray described by a pickle, turned into a real one by :func:`_finish`."""

    def __init__(self):
        self.array: np.ndarray | None = None

    def build(self, state: Any) -> None:
        # (version, shape, dtype, is_fortran, raw data)
        if not isinstance(state, tuple) or len(state) != 5 or not isinstance(state[2], _DType):
            raise PickleRefused("malformed numpy array state")
        _, shape, dtype, fortran, raw = state
        self.array = _array_from(raw, dtype, shape, "F" if fortran else "C")


def _array_from(raw: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    if not isinstance(dtype, _DType):
        raise PickleRefused("a numpy array without a plain dtype")
    if isinstance(raw, str):            # Python 2 pickles store the bytes as latin-1 text
        raw = raw.encode("latin-1")
    if not isinstance(raw, (bytes, bytearray)):
        raise PickleRefused("numpy array data that is not raw bytes (an object array?)")
    if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise PickleRefused(f"bad numpy array shape {shape!r}")
    dt = dtype.resolve()
    count = int(np.prod(shape, dtype=np.int64))
    if count * dt.itemsize != len(raw):
        raise PickleRefused(f"numpy array data has {len(raw)} bytes, shape {shape} of {dt} "
                            f"needs {count * dt.itemsize}")
    return np.frombuffer(bytes(raw), dt).reshape(shape, order=order).copy()


def _finish(value: Any) -> Any:
    if isinstance(value, _Array):
        if value.array is None:
            raise PickleRefused("a numpy array without its data")
        return value.array
    if isinstance(value, (_Global, _DType)):
        raise PickleRefused("a bare numpy type object is not data")
    if isinstance(value, list):
        return [_finish(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_finish(v) for v in value)
    if isinstance(value, dict):
        return {_finish(k): _finish(v) for k, v in value.items()}
    return value


_PUSH_ARG = {"BININT", "BININT1", "BININT2", "INT", "LONG", "LONG1", "LONG4", "BINFLOAT",
             "FLOAT", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "UNICODE",
             "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8", "BINSTRING",
             "SHORT_BINSTRING", "STRING"}
_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False, "EMPTY_LIST": list,
              "EMPTY_TUPLE": tuple, "EMPTY_DICT": dict}


def loads(data: bytes, label: str = "pickle") -> Any:
    """The value a pickle describes, for plain data and NumPy arrays only (see the module)."""
    stack: list = []
    marks: list[int] = []
    memo: dict = {}

    def refuse(message: str) -> PickleRefused:
        return PickleRefused(f"{label}: refused to read the pickle: {message}; "
                             "nothing in it was executed")

    def pop_mark() -> list:
        if not marks:
            raise refuse("unbalanced MARK")
        start = marks.pop()
        items = stack[start:]
        del stack[start:]
        return items

    def pop():
        if not stack:
            raise refuse("stack underflow")
        return stack.pop()

    try:
        ops = list(pickletools.genops(data))
    except Exception as exc:  # pickletools raises ValueError and others on bad input
        raise refuse(f"not a valid pickle ({exc})") from None
    for op, arg, _pos in ops:
        name = op.name
        if name in ("PROTO", "FRAME"):
            continue
        if name == "STOP":
            if len(stack) != 1 or marks:
                raise refuse("malformed end of pickle")
            try:
                return _finish(stack[0])
            except PickleRefused as exc:
                raise refuse(str(exc)) from None
        if name in _PUSH_ARG:
            if isinstance(arg, (bytes, str)) and len(arg) > _MAX_BYTES:
                raise refuse("implausibly large value")
            stack.append(bytes(arg) if name == "BYTEARRAY8" else arg)
        elif name in _CONSTANTS:
            value = _CONSTANTS[name]
            stack.append(value() if callable(value) else value)
        elif name == "MARK":
            marks.append(len(stack))
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = stack[-1] if stack else None
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1] if stack else None
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            if arg not in memo:
                raise refuse(f"memo key {arg} used before it was set")
            stack.append(memo[arg])
        elif name == "APPEND":
            value = pop()
            if not stack or not isinstance(stack[-1], list):
                raise refuse("APPEND to something that is not a list")
            stack[-1].append(value)
        elif name == "APPENDS":
            items = pop_mark()
            if not stack or not isinstance(stack[-1], list):
                raise refuse("APPENDS to something that is not a list")
            stack[-1].extend(items)
        elif name == "LIST":
            stack.append(pop_mark())
        elif name == "TUPLE":
            stack.append(tuple(pop_mark()))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            count = int(name[-1])
            if len(stack) < count:
                raise refuse("stack underflow")
            items = tuple(stack[-count:])
            del stack[-count:]
            stack.append(items)
        elif name == "DICT":
            items = pop_mark()
            stack.append(dict(zip(items[::2], items[1::2])))
        elif name in ("SETITEM", "SETITEMS"):
            items = [pop(), pop()][::-1] if name == "SETITEM" else pop_mark()
            if not stack or not isinstance(stack[-1], dict):
                raise refuse(f"{name} on something that is not a dict")
            for key, value in zip(items[::2], items[1::2]):
                if not isinstance(key, (str, int, float, bytes, tuple, bool, type(None))):
                    raise refuse("a dict key that is not a plain value")
                stack[-1][key] = value
        elif name in ("GLOBAL", "STACK_GLOBAL"):
            if name == "GLOBAL":
                module, _, attr = str(arg).partition(" ")
            else:
                attr, module = pop(), pop()
                if not isinstance(module, str) or not isinstance(attr, str):
                    raise refuse("STACK_GLOBAL with non-string names")
            if (module, attr) not in _ALLOWED_GLOBALS:
                raise refuse(f"it names {module}.{attr}, which is not one of the NumPy "
                             "array reconstruction functions this reader accepts")
            stack.append(_Global(module, attr))
        elif name == "REDUCE":
            args, func = pop(), pop()
            if not isinstance(func, _Global) or not isinstance(args, tuple):
                raise refuse("a call of something other than an accepted NumPy global")
            if func.key in _RECONSTRUCT:
                if not args or not isinstance(args[0], _Global) or args[0].key != _NDARRAY:
                    raise refuse("numpy _reconstruct of something other than numpy.ndarray")
                stack.append(_Array())
            elif func.key in _FROMBUFFER:
                if len(args) != 4:
                    raise refuse("malformed numpy _frombuffer call")
                try:
                    stack.append(_array_from(args[0], args[1], args[2], str(args[3])))
                except PickleRefused as exc:
                    raise refuse(str(exc)) from None
            elif func.key == _DTYPE:
                if not args or not isinstance(args[0], str):
                    raise refuse("malformed numpy dtype call")
                stack.append(_DType(args[0]))
            else:
                raise refuse(f"a call of {'.'.join(func.key)}")
        elif name == "BUILD":
            state, target = pop(), pop()
            if not isinstance(target, (_Array, _DType)):
                raise refuse("BUILD (set state) on something other than a NumPy array or dtype")
            try:
                target.build(state)
            except PickleRefused as exc:
                raise refuse(str(exc)) from None
            stack.append(target)
        else:
            raise refuse(f"opcode {name} is not accepted")
    raise refuse("no STOP opcode")


def load(path: str | Path) -> Any:
    """:func:`loads` of a file (ModelError when it cannot be read)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from None
    return loads(data, path.name)
