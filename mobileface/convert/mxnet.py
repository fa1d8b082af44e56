"""Convert MXNet symbol/params checkpoints (``X-symbol.json`` + ``X-0000.params``) to ONNX.

MXNet itself is never imported (it is retired and needs numpy < 1.24): the two
files are parsed with the standard library and numpy, and the graph is written
with the ``onnx`` helpers. Anything this converter does not understand (an
operator, an attribute with a non-default value, a malformed file) is refused
with a one-line :class:`~mobileface.errors.ModelError` that names it, never
silently approximated.

**The .params file** (MXNet's NDArray list, src/ndarray/ndarray.cc,
``NDArray::Save``/``Load``), all little-endian:

* header: uint64 magic ``0x112``, uint64 reserved; then uint64 count and that
  many arrays; then uint64 count and that many names (uint64 length + bytes).
  Names are ``arg:NAME`` (weights) or ``aux:NAME`` (batch-norm running stats).
* each array starts with a uint32 that is either a magic (``0xF993FAC9``: V2,
  with a storage type; ``0xF993FACA``: V3, NumPy shape semantics;
  ``0xF993FAC8``: V1) or, in the legacy format, the number of dimensions.
  V2/V3: int32 storage type (0 = dense; sparse arrays are refused), then the
  shape as int32 ndim + ndim int64 sizes. V1: the shape the same way. Legacy:
  ndim uint32 sizes. An empty shape (V3: ndim -1) is an array without data.
  Otherwise the context follows (int32 device type, int32 device id), then an
  int32 type flag (0 float32, 1 float64, 2 float16, 3 uint8, 4 int32, 5 int8,
  6 int64) and the raw C-order data.

**The symbol file** is JSON: ``nodes`` (each ``op``, ``name``, attributes in
``attrs`` — ``attr`` or ``param`` in files written by MXNet < 1.0 — and
``inputs`` as ``[node, output, version]`` triples), ``arg_nodes`` and ``heads``.
Nodes are in topological order; ``op == "null"`` nodes are variables: weights
found in the .params file, or the data input. Attribute values are strings
(``"(3, 3)"``, ``"True"``, ``"0.0078125"``).

**Operators** (MXNet semantics -> ONNX opset 17), with MXNet's defaults where
an attribute is absent:

* ``Convolution`` (2-D, NCHW; kernel, stride, dilate, pad, num_group, no_bias)
  -> Conv with ``group``.
* ``BatchNorm`` -> BatchNormalization with the running mean and variance.
  Defaults: ``eps = 1e-3`` (not ONNX's 1e-5), ``fix_gamma = True`` (gamma is
  then taken as 1 whatever the file holds), ``fix_beta = False``, ``axis = 1``.
* ``Activation`` (relu, sigmoid, tanh, softrelu, softsign); ``LeakyReLU``
  (leaky with ``slope`` default 0.25, prelu with a learned per-channel gamma,
  elu, selu, gelu, rrelu at inference = leaky with the mean of its bounds).
* ``elemwise_add``/``_Plus``/``_plus``/``broadcast_add`` and the sub, mul, div
  families; ``_plus_scalar``, ``_minus_scalar``, ``_rminus_scalar``,
  ``_mul_scalar``, ``_div_scalar``, ``_rdiv_scalar``, ``_maximum_scalar``,
  ``_minimum_scalar``, ``_power_scalar``, ``clip`` (scalars are float32, as
  MXNet applies them to float32 data).
* ``Pooling`` (max, avg, sum; ``global_pool``; conventions valid and full;
  ``count_include_pad`` default True).
* ``FullyConnected`` (``flatten`` default True: the input is flattened to
  (N, -1); weight (num_hidden, in)) -> Gemm; ``Flatten``; ``Concat``;
  ``softmax``/``SoftmaxActivation``/``SoftmaxOutput`` -> Softmax;
  ``Dropout``, ``_copy``, ``identity``, ``BlockGrad`` -> Identity.
* ``L2Normalization`` (``mode`` instance (default): over all axes but the
  batch; channel; spatial; ``eps = 1e-10``): ``x / sqrt(sum(x^2) + eps)``.

The ONNX model has one input named like the MXNet data variable (usually
``data``) with a free batch dimension ``N`` and the given C, H, W, and one
output per head, named ``<node>_output`` as MXNet names them.
"""
from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mobileface.errors import ModelError

OPSET = 17
LIST_MAGIC = 0x112
NDARRAY_V1_MAGIC = 0xF993FAC8
NDARRAY_V2_MAGIC = 0xF993FAC9
NDARRAY_V3_MAGIC = 0xF993FACA
#: MXNet's type flags -> numpy dtypes (mshadow/base.h)
TYPE_FLAGS = {0: "<f4", 1: "<f8", 2: "<f2", 3: "u1", 4: "<i4", 5: "i1", 6: "<i8"}
_MAX_DIMS = 8


# ---------------------------------------------------------------------------
# .params


class _Bytes:
    def __init__(self, data: bytes, label: str):
        self.data = data
        self.pos = 0
        self.label = label

    def fail(self, message: str) -> ModelError:
        return ModelError(f"cannot read {self.label}: {message} (byte {self.pos} of "
                          f"{len(self.data)}); not an MXNet .params file, or a corrupt one")

    def take(self, count: int, what: str) -> bytes:
        if count < 0 or self.pos + count > len(self.data):
            raise self.fail(f"the file ends inside {what}")
        chunk = self.data[self.pos:self.pos + count]
        self.pos += count
        return chunk

    def unpack(self, fmt: str, what: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def u32(self, what: str) -> int:
        return self.unpack("<I", what)

    def i32(self, what: str) -> int:
        return self.unpack("<i", what)

    def u64(self, what: str) -> int:
        return self.unpack("<Q", what)


def _read_shape(r: _Bytes, legacy_ndim: int | None = None) -> tuple[int, ...] | None:
    if legacy_ndim is not None:
        ndim = legacy_ndim
        if ndim > _MAX_DIMS:
            raise r.fail(f"implausible array header {ndim:#x}")
        return tuple(r.u32("a legacy shape") for _ in range(ndim))
    ndim = r.i32("the number of dimensions")
    if ndim == -1:                     # an unknown shape (NumPy semantics): no data follows
        return None
    if ndim < 0 or ndim > _MAX_DIMS:
        raise r.fail(f"implausible number of dimensions {ndim}")
    dims = struct.unpack(f"<{ndim}q", r.take(8 * ndim, "a shape"))
    if any(d < 0 for d in dims):
        raise r.fail(f"negative size in shape {dims}")
    return dims


def _read_array(r: _Bytes, index: int) -> np.ndarray | None:
    what = f"array {index}"
    magic = r.u32(f"the header of {what}")
    if magic in (NDARRAY_V2_MAGIC, NDARRAY_V3_MAGIC):
        stype = r.i32(f"the storage type of {what}")
        if stype != 0:
            raise r.fail(f"{what} is sparse (storage type {stype}); only dense arrays "
                         "are supported")
        shape = _read_shape(r)
    elif magic == NDARRAY_V1_MAGIC:
        shape = _read_shape(r)
    else:
        shape = _read_shape(r, legacy_ndim=magic)
    # An empty shape is MXNet's "none" array, without data; with NumPy shape
    # semantics (V3) it is a 0-d scalar and "none" is ndim -1.
    if shape is None or (len(shape) == 0 and magic != NDARRAY_V3_MAGIC):
        return None
    r.i32(f"the device type of {what}")
    r.i32(f"the device id of {what}")
    flag = r.i32(f"the data type of {what}")
    if flag not in TYPE_FLAGS:
        raise r.fail(f"unknown data type flag {flag} of {what}")
    dtype = np.dtype(TYPE_FLAGS[flag])
    count = int(np.prod(shape, dtype=np.int64))
    raw = r.take(count * dtype.itemsize, f"the data of {what} {shape}")
    return np.frombuffer(raw, dtype).reshape(shape).copy()


def parse_params(data: bytes, label: str = "params") -> dict[str, np.ndarray]:
    """MXNet's NDArray list file -> {name: array}; names keep their arg:/aux: prefix."""
    r = _Bytes(data, label)
    magic = r.u64("the file header")
    if magic != LIST_MAGIC:
        raise r.fail(f"bad file magic {magic:#x} (expected {LIST_MAGIC:#x})")
    r.u64("the reserved header field")
    count = r.u64("the number of arrays")
    if count > len(data) // 16:
        raise r.fail(f"implausible number of arrays {count}")
    arrays = [_read_array(r, i) for i in range(count)]
    name_count = r.u64("the number of names")
    if name_count != count:
        raise r.fail(f"{count} arrays but {name_count} names")
    names = []
    for i in range(name_count):
        length = r.u64(f"the length of name {i}")
        if length > 4096:
            raise r.fail(f"implausible name length {length}")
        try:
            names.append(r.take(length, f"name {i}").decode("utf-8"))
        except UnicodeDecodeError:
            raise r.fail(f"name {i} is not UTF-8") from None
    if r.pos != len(data):
        raise r.fail(f"{len(data) - r.pos} unexpected trailing bytes")
    if len(set(names)) != len(names):
        raise r.fail("duplicate array names")
    return {name: array for name, array in zip(names, arrays) if array is not None}


def load_params(path) -> dict[str, np.ndarray]:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_params(data, path.name)


# ---------------------------------------------------------------------------
# symbol JSON


@dataclass
class Node:
    op: str
    name: str
    attrs: dict[str, str]
    inputs: list[tuple[int, int]]


@dataclass
class Symbol:
    nodes: list[Node]
    heads: list[tuple[int, int]]


def parse_symbol(text: str, label: str = "symbol") -> Symbol:
    """The symbol JSON -> nodes and heads (structure checked, operators not yet)."""
    def fail(message: str) -> ModelError:
        return ModelError(f"cannot read {label}: {message}; not an MXNet symbol file, "
                          "or a corrupt one")

    try:
        graph = json.loads(text)
    except ValueError as exc:
        raise fail(f"invalid JSON ({exc})") from None
    if not isinstance(graph, dict) or not isinstance(graph.get("nodes"), list) \
            or not isinstance(graph.get("heads"), list):
        raise fail("no 'nodes' and 'heads' lists")
    nodes = []
    for i, raw in enumerate(graph["nodes"]):
        if not isinstance(raw, dict) or not isinstance(raw.get("op"), str) \
                or not isinstance(raw.get("name"), str):
            raise fail(f"node {i} has no 'op' and 'name'")
        attrs = raw.get("attrs", raw.get("attr", raw.get("param", {}))) or {}
        if not isinstance(attrs, dict):
            raise fail(f"node {i} ({raw['name']}) has malformed attributes")
        inputs = []
        for entry in raw.get("inputs", []):
            if not isinstance(entry, list) or len(entry) < 2 \
                    or not all(isinstance(v, int) for v in entry[:2]):
                raise fail(f"node {i} ({raw['name']}) has a malformed input {entry!r}")
            if not 0 <= entry[0] < i:
                raise fail(f"node {i} ({raw['name']}) takes input from node {entry[0]}, "
                           "which does not come before it")
            inputs.append((entry[0], entry[1]))
        nodes.append(Node(raw["op"], raw["name"], {str(k): str(v) for k, v in attrs.items()},
                          inputs))
    heads = []
    for entry in graph["heads"]:
        if not isinstance(entry, list) or len(entry) < 2 \
                or not isinstance(entry[0], int) or not 0 <= entry[0] < len(nodes):
            raise fail(f"malformed head {entry!r}")
        heads.append((entry[0], entry[1]))
    if not heads:
        raise fail("the graph has no outputs")
    return Symbol(nodes, heads)


def load_symbol(path) -> Symbol:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_symbol(text, path.name)


# ---------------------------------------------------------------------------
# attribute parsing


_TRUE = {"true", "1"}
_FALSE = {"false", "0"}


class _Attrs:
    """A node's attributes with MXNet's defaults; every attribute must be consumed."""

    def __init__(self, node: Node):
        self.node = node
        self.values = {k: v for k, v in node.attrs.items() if not k.startswith("__")}
        self.used: set[str] = set()

    def fail(self, message: str) -> ModelError:
        return ModelError(f"{self.node.op} node {self.node.name!r}: {message}")

    def raw(self, key: str) -> str | None:
        self.used.add(key)
        value = self.values.get(key)
        return None if value in (None, "None") else value

    def ignore(self, *keys: str) -> None:
        self.used.update(keys)

    def bool(self, key: str, default: bool) -> bool:
        value = self.raw(key)
        if value is None:
            return default
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise self.fail(f"attribute {key}={value!r} is not a boolean")

    def float(self, key: str, default: float | None = None) -> float:
        value = self.raw(key)
        if value is None:
            if default is None:
                raise self.fail(f"attribute {key} is missing")
            return default
        try:
            return float(value)
        except ValueError:
            raise self.fail(f"attribute {key}={value!r} is not a number") from None

    def int(self, key: str, default: int | None = None) -> int:
        value = self.float(key, None if default is None else float(default))
        if value != int(value):
            raise self.fail(f"attribute {key}={value!r} is not an integer")
        return int(value)

    def str(self, key: str, default: str) -> str:
        value = self.raw(key)
        return default if value is None else value

    def tuple(self, key: str, default: tuple[int, ...] | None) -> tuple[int, ...] | None:
        value = self.raw(key)
        if value is None or value.strip() in ("()", "[]", ""):
            return default
        if not re.fullmatch(r"[\s(\[]*-?\d+(\s*,\s*-?\d+)*\s*,?[\s)\]]*", value):
            raise self.fail(f"attribute {key}={value!r} is not a tuple of integers")
        return tuple(int(v) for v in re.findall(r"-?\d+", value))

    def finish(self) -> None:
        unknown = sorted(set(self.values) - self.used)
        if unknown:
            listed = ", ".join(f"{k}={self.values[k]}" for k in unknown)
            raise self.fail(f"unsupported attribute(s) {listed}")


# ---------------------------------------------------------------------------
# graph building

_ADD = {"elemwise_add", "_Plus", "_plus", "_add", "broadcast_add", "broadcast_plus"}
_SUB = {"elemwise_sub", "_Minus", "_minus", "_sub", "broadcast_sub", "broadcast_minus"}
_MUL = {"elemwise_mul", "_Mul", "_mul", "broadcast_mul"}
_DIV = {"elemwise_div", "_Div", "_div", "broadcast_div"}
_BINARY = {**{op: "Add" for op in _ADD}, **{op: "Sub" for op in _SUB},
           **{op: "Mul" for op in _MUL}, **{op: "Div" for op in _DIV}}
_SCALAR = {"_plus_scalar": ("Add", False), "_PlusScalar": ("Add", False),
           "_minus_scalar": ("Sub", False), "_MinusScalar": ("Sub", False),
           "_rminus_scalar": ("Sub", True), "_RMinusScalar": ("Sub", True),
           "_mul_scalar": ("Mul", False), "_MulScalar": ("Mul", False),
           "_div_scalar": ("Div", False), "_DivScalar": ("Div", False),
           "_rdiv_scalar": ("Div", True), "_RDivScalar": ("Div", True),
           "_maximum_scalar": ("Max", False), "_MaximumScalar": ("Max", False),
           "_minimum_scalar": ("Min", False), "_MinimumScalar": ("Min", False),
           "_power_scalar": ("Pow", False), "_PowerScalar": ("Pow", False)}
_IDENTITY = {"_copy", "identity", "BlockGrad", "stop_gradient", "Dropout"}
#: operators whose later inputs matter only in training (SoftmaxOutput's label)
_INFERENCE_INPUTS = {"SoftmaxOutput": 1}
_ACTIVATIONS = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softrelu": "Softplus",
                "softsign": "Softsign"}

#: every operator the converter maps
SUPPORTED_OPS = tuple(sorted(
    set(_BINARY) | set(_SCALAR) | _IDENTITY
    | {"Convolution", "BatchNorm", "Activation", "LeakyReLU", "Pooling", "FullyConnected",
       "Flatten", "L2Normalization", "Concat", "concat", "clip", "softmax",
       "SoftmaxActivation", "SoftmaxOutput"}))


@dataclass
class _Value:
    name: str                 # ONNX value name
    shape: tuple[int, ...]    # with the (example) batch size first


@dataclass
class _Graph:
    nodes: list = field(default_factory=list)
    inits: list = field(default_factory=list)
    names: set = field(default_factory=set)

    def unique(self, base: str) -> str:
        name, i = base, 1
        while name in self.names:
            i += 1
            name = f"{base}_{i}"
        self.names.add(name)
        return name

    def const(self, base: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.unique(base)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def add(self, op: str, inputs: list[str], base: str, **attrs) -> str:
        from onnx import helper

        out = self.unique(base)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out


def _conv_size(size: int, kernel: int, stride: int, pad: int, dilate: int = 1,
               ceil: bool = False) -> int:
    span = size + 2 * pad - dilate * (kernel - 1) - 1
    return (-(-span // stride) if ceil else span // stride) + 1


class _Converter:
    def __init__(self, symbol: Symbol, params: dict[str, np.ndarray], label: str):
        self.symbol = symbol
        self.label = label
        self.weights: dict[str, np.ndarray] = {}
        for key, value in params.items():
            kind, _, name = key.partition(":")
            if not name:                     # very old files have no arg:/aux: prefix
                kind, name = "arg", key
            if kind not in ("arg", "aux"):
                raise ModelError(f"{label}: unexpected parameter name {key!r}")
            self.weights[name] = value
        self.graph = _Graph()
        self.values: dict[tuple[int, int], _Value] = {}
        self.data_node: int | None = None

    # -- helpers ---------------------------------------------------------------

    def fail(self, node: Node, message: str) -> ModelError:
        return ModelError(f"{node.op} node {node.name!r}: {message}")

    def weight(self, node: Node, index: int, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """The parameter array feeding input ``index`` of ``node`` (float32)."""
        if index >= len(node.inputs):
            raise self.fail(node, f"input {index} is missing")
        source = self.symbol.nodes[node.inputs[index][0]]
        if source.op != "null" or source.name not in self.weights:
            raise self.fail(node, f"input {index} ({source.name!r}) is not a parameter "
                                  "in the .params file")
        array = self.weights[source.name]
        if not np.issubdtype(array.dtype, np.floating):
            raise self.fail(node, f"parameter {source.name!r} has type {array.dtype}")
        if shape is not None and array.shape != shape:
            raise self.fail(node, f"parameter {source.name!r} has shape {array.shape}, "
                                  f"expected {shape}")
        return array.astype(np.float32)

    def input(self, node: Node, index: int = 0) -> _Value:
        if index >= len(node.inputs):
            raise self.fail(node, f"input {index} is missing")
        key = node.inputs[index]
        if key not in self.values:
            source = self.symbol.nodes[key[0]]
            raise self.fail(node, f"input {index} is output {key[1]} of {source.op} node "
                                  f"{source.name!r}, which is not a tensor this converter "
                                  "produces")
        return self.values[key]

    # -- conversion ------------------------------------------------------------

    def needed(self, outputs: list[tuple[int, int]]) -> list[int]:
        seen, stack = set(), [i for i, _ in outputs]
        while stack:
            i = stack.pop()
            if i not in seen:
                seen.add(i)
                node = self.symbol.nodes[i]
                inputs = node.inputs[:_INFERENCE_INPUTS.get(node.op, len(node.inputs))]
                stack.extend(j for j, _ in inputs)
        return sorted(seen)

    def run(self, input_shape: tuple[int, ...], outputs: list[tuple[int, int]]):
        from onnx import TensorProto, helper

        needed = self.needed(outputs)
        data = [i for i in needed if self.symbol.nodes[i].op == "null"
                and self.symbol.nodes[i].name not in self.weights]
        if len(data) != 1:
            names = ", ".join(repr(self.symbol.nodes[i].name) for i in data) or "none"
            raise ModelError(f"{self.label}: the graph must have exactly one input that is not "
                             f"a parameter in the .params file, found {names} (are the "
                             "symbol and params files from the same model?)")
        self.data_node = data[0]
        input_name = self.graph.unique(self.symbol.nodes[data[0]].name)
        self.values[(data[0], 0)] = _Value(input_name, tuple(input_shape))
        for i in needed:
            node = self.symbol.nodes[i]
            if node.op == "null":
                continue
            value = self.convert_node(node)
            self.values[(i, 0)] = value
        graph_outputs = []
        for index, out in outputs:
            node = self.symbol.nodes[index]
            if out != 0 or (index, 0) not in self.values:
                raise ModelError(f"{self.label}: output {out} of {node.op} node {node.name!r} "
                                 "cannot be an output of the converted model")
            value = self.values[(index, 0)]
            name = f"{node.name}_output"
            if name in self.graph.names and value.name != name:
                name = self.graph.unique(name)
            self.graph.nodes.append(helper.make_node("Identity", [value.name], [name],
                                                     name=f"{name}_identity"))
            self.graph.names.add(name)
            graph_outputs.append(helper.make_tensor_value_info(
                name, TensorProto.FLOAT, ["N", *value.shape[1:]]))
        graph_input = helper.make_tensor_value_info(input_name, TensorProto.FLOAT,
                                                    ["N", *input_shape[1:]])
        return graph_input, graph_outputs

    def convert_node(self, node: Node) -> _Value:
        op = node.op
        attrs = _Attrs(node)
        if op == "Convolution":
            value = self.convolution(node, attrs)
        elif op == "BatchNorm":
            value = self.batchnorm(node, attrs)
        elif op == "Activation":
            value = self.activation(node, attrs)
        elif op == "LeakyReLU":
            value = self.leaky_relu(node, attrs)
        elif op in _BINARY:
            value = self.binary(node, _BINARY[op], broadcast=op.startswith("broadcast_"))
        elif op in _SCALAR:
            value = self.scalar(node, attrs, *_SCALAR[op])
        elif op == "clip":
            value = self.clip(node, attrs)
        elif op == "Pooling":
            value = self.pooling(node, attrs)
        elif op == "FullyConnected":
            value = self.fully_connected(node, attrs)
        elif op == "Flatten":
            value = self.flatten(node, self.input(node))
        elif op in ("Concat", "concat"):
            value = self.concat(node, attrs)
        elif op == "L2Normalization":
            value = self.l2_normalization(node, attrs)
        elif op in ("softmax", "SoftmaxActivation", "SoftmaxOutput"):
            value = self.softmax(node, attrs)
        elif op in _IDENTITY:
            if op == "Dropout":
                mode = attrs.str("mode", "training")
                if mode != "training":
                    raise self.fail(node, f"dropout mode {mode!r} drops at inference "
                                          "(random); only mode 'training' is supported")
                attrs.ignore("p", "axes", "cudnn_off")
            x = self.input(node)
            value = _Value(self.graph.add("Identity", [x.name], node.name), x.shape)
        else:
            raise ModelError(f"unsupported MXNet operator {op!r} (node {node.name!r}); "
                             f"supported: {', '.join(SUPPORTED_OPS)}")
        attrs.finish()
        return value

    def convolution(self, node: Node, a: _Attrs) -> _Value:
        x = self.input(node)
        kernel = a.tuple("kernel", None)
        if kernel is None or len(kernel) != 2:
            raise self.fail(node, f"only 2-D convolutions are supported (kernel {kernel})")
        stride = a.tuple("stride", (1, 1))
        dilate = a.tuple("dilate", (1, 1))
        pad = a.tuple("pad", (0, 0))
        if len(stride) != 2 or len(dilate) != 2 or len(pad) != 2:
            raise self.fail(node, "stride, dilate and pad must have two values")
        filters = a.int("num_filter")
        groups = a.int("num_group", 1)
        no_bias = a.bool("no_bias", False)
        layout = a.str("layout", "NCHW")
        if layout != "NCHW":
            raise self.fail(node, f"layout {layout!r} is not supported (only NCHW)")
        a.ignore("workspace", "cudnn_tune", "cudnn_off")
        if len(x.shape) != 4:
            raise self.fail(node, f"input has shape {x.shape}, expected (N, C, H, W)")
        channels = x.shape[1]
        if groups < 1 or channels % groups or filters % groups:
            raise self.fail(node, f"{channels} input channels and {filters} filters cannot "
                                  f"be split into {groups} groups")
        weight = self.weight(node, 1, (filters, channels // groups, *kernel))
        inputs = [x.name, self.graph.const(self.symbol.nodes[node.inputs[1][0]].name, weight)]
        if not no_bias:
            bias = self.weight(node, 2, (filters,))
            inputs.append(self.graph.const(self.symbol.nodes[node.inputs[2][0]].name, bias))
        out = self.graph.add("Conv", inputs, node.name, kernel_shape=list(kernel),
                             strides=list(stride), dilations=list(dilate),
                             pads=[pad[0], pad[1], pad[0], pad[1]], group=groups)
        size = tuple(_conv_size(x.shape[2 + i], kernel[i], stride[i], pad[i], dilate[i])
                     for i in range(2))
        if min(size) < 1:
            raise self.fail(node, f"the {x.shape[2]}x{x.shape[3]} input is too small")
        return _Value(out, (x.shape[0], filters, *size))

    def batchnorm(self, node: Node, a: _Attrs) -> _Value:
        x = self.input(node)
        eps = a.float("eps", 1e-3)
        fix_gamma = a.bool("fix_gamma", True)
        fix_beta = a.bool("fix_beta", False)
        axis = a.int("axis", 1)
        a.ignore("momentum", "use_global_stats", "cudnn_off", "output_mean_var",
                 "min_calib_range", "max_calib_range")
        if axis != 1:
            raise self.fail(node, f"axis={axis} is not supported (only the channel axis 1)")
        if len(x.shape) < 2:
            raise self.fail(node, f"input has shape {x.shape}")
        c = x.shape[1]
        gamma = self.weight(node, 1, (c,))
        beta = self.weight(node, 2, (c,))
        mean = self.weight(node, 3, (c,))
        var = self.weight(node, 4, (c,))
        if fix_gamma:
            gamma = np.ones_like(gamma)
        if fix_beta:
            beta = np.zeros_like(beta)
        names = [self.graph.const(self.symbol.nodes[node.inputs[i][0]].name, arr)
                 for i, arr in ((1, gamma), (2, beta), (3, mean), (4, var))]
        out = self.graph.add("BatchNormalization", [x.name, *names], node.name, epsilon=eps)
        return _Value(out, x.shape)

    def activation(self, node: Node, a: _Attrs) -> _Value:
        x = self.input(node)
        act = a.str("act_type", "")
        if act not in _ACTIVATIONS:
            raise self.fail(node, f"act_type {act!r} is not supported "
                                  f"(supported: {', '.join(_ACTIVATIONS)})")
        return _Value(self.graph.add(_ACTIVATIONS[act], [x.name], node.name), x.shape)

    def leaky_relu(self, node: Node, a: _Attrs) -> _Value:
        x = self.input(node)
        act = a.str("act_type", "leaky")
        slope = a.float("slope", 0.25)
        lower = a.float("lower_bound", 0.125)
        upper = a.float("upper_bound", 0.334)
        g = self.graph
        if act == "leaky":
            out = g.add("LeakyRelu", [x.name], node.name, alpha=slope)
        elif act == "rrelu":      # at inference: the mean of the random slope's range
            out = g.add("LeakyRelu", [x.name], node.name, alpha=(lower + upper) / 2)
        elif act == "elu":
            out = g.add("Elu", [x.name], node.name, alpha=slope)
        elif act == "selu":       # MXNet's and ONNX's constants agree to float precision
            out = g.add("Selu", [x.name], node.name)
        elif act == "gelu":       # 0.5 x (1 + erf(x / sqrt 2))
            scaled = g.add("Mul", [x.name, g.const("gelu_scale", np.float32(1 / np.sqrt(2)))],
                           f"{node.name}_scaled")
            erf = g.add("Erf", [scaled], f"{node.name}_erf")
            one = g.add("Add", [erf, g.const("gelu_one", np.float32(1.0))], f"{node.name}_1p")
            half = g.add("Mul", [x.name, g.const("gelu_half", np.float32(0.5))],
                         f"{node.name}_half")
            out = g.add("Mul", [half, one], node.name)
        elif act == "prelu":
            if len(x.shape) < 2:
                raise self.fail(node, f"input has shape {x.shape}")
            gamma = self.weight(node, 1)
            if gamma.shape not in ((x.shape[1],), (1,)):
                raise self.fail(node, f"prelu gamma has shape {gamma.shape} for "
                                      f"{x.shape[1]} channels")
            # one slope per channel (axis 1), broadcast over the spatial axes
            slope_shape = (gamma.size,) + (1,) * (len(x.shape) - 2)
            name = g.const(self.symbol.nodes[node.inputs[1][0]].name, gamma.reshape(slope_shape))
            out = g.add("PRelu", [x.name, name], node.name)
        else:
            raise self.fail(node, f"act_type {act!r} is not supported "
                                  "(leaky, prelu, elu, selu, gelu, rrelu)")
        return _Value(out, x.shape)

    def binary(self, node: Node, op: str, broadcast: bool) -> _Value:
        if len(node.inputs) != 2:
            raise self.fail(node, f"expected 2 inputs, got {len(node.inputs)}")
        a, b = self.input(node, 0), self.input(node, 1)
        if broadcast:
            try:
                shape = np.broadcast_shapes(a.shape, b.shape)
            except ValueError:
                raise self.fail(node, f"shapes {a.shape} and {b.shape} do not "
                                      "broadcast") from None
        else:
            if a.shape != b.shape:
                raise self.fail(node, f"shapes {a.shape} and {b.shape} differ")
            shape = a.shape
        return _Value(self.graph.add(op, [a.name, b.name], node.name), tuple(shape))

    def scalar(self, node: Node, a: _Attrs, op: str, reverse: bool) -> _Value:
        x = self.input(node)
        value = np.float32(a.float("scalar"))
        a.ignore("is_int")
        const = self.graph.const(f"{node.name}_scalar", value)
        inputs = [const, x.name] if reverse else [x.name, const]
        return _Value(self.graph.add(op, inputs, node.name), x.shape)

    def clip(self, node: Node, a: _Attrs) -> _Value:
        x = self.input(node)
        low = self.graph.const(f"{node.name}_min", np.float32(a.float("a_min")))
        high = self.graph.const(f"{node.name}_max", np.float32(a.float("a_max")))
        return _Value(self.graph.add("Clip", [x.name, low, high], node.name), x.shape)

    def pooling(self, node: Node, a: _Attrs) -> _Value:
        x = self.input(node)
        pool = a.str("pool_type", "max")
        global_pool = a.bool("global_pool", False)
        convention = a.str("pooling_convention", "valid")
        include_pad = a.bool("count_include_pad", True)
        kernel = a.tuple("kernel", None)
        stride = a.tuple("stride", (1, 1))
        pad = a.tuple("pad", (0, 0))
        layout = a.str("layout", "NCHW")
        a.ignore("cudnn_off", "p_value")
        if layout != "NCHW" or len(x.shape) != 4:
            raise self.fail(node, f"only 2-D NCHW pooling is supported (input {x.shape})")
        if pool not in ("max", "avg", "sum"):
            raise self.fail(node, f"pool_type {pool!r} is not supported (max, avg, sum)")
        g = self.graph
        if global_pool:
            if pool == "max":
                out = g.add("GlobalMaxPool", [x.name], node.name)
            elif pool == "avg":
                out = g.add("GlobalAveragePool", [x.name], node.name)
            else:
                axes = g.const(f"{node.name}_axes", np.array([2, 3], np.int64))
                out = g.add("ReduceSum", [x.name, axes], node.name, keepdims=1)
            return _Value(out, (*x.shape[:2], 1, 1))
        if kernel is None or len(kernel) != 2 or len(stride) != 2 or len(pad) != 2:
            raise self.fail(node, f"kernel {kernel}, stride {stride}, pad {pad}: need 2-D")
        if convention not in ("valid", "full"):
            raise self.fail(node, f"pooling_convention {convention!r} is not supported "
                                  "(valid, full)")
        ceil = convention == "full"
        options = dict(kernel_shape=list(kernel), strides=list(stride),
                       pads=[pad[0], pad[1], pad[0], pad[1]], ceil_mode=int(ceil))
        if pool == "max":
            out = g.add("MaxPool", [x.name], node.name, **options)
        else:
            avg = g.add("AveragePool", [x.name], node.name if pool == "avg" else
                        f"{node.name}_avg", count_include_pad=int(include_pad or pool == "sum"),
                        **options)
            out = avg if pool == "avg" else g.add(
                "Mul", [avg, g.const(f"{node.name}_area", np.float32(kernel[0] * kernel[1]))],
                node.name)
        size = tuple(_conv_size(x.shape[2 + i], kernel[i], stride[i], pad[i], ceil=ceil)
                     for i in range(2))
        if min(size) < 1:
            raise self.fail(node, f"the {x.shape[2]}x{x.shape[3]} input is too small")
        return _Value(out, (*x.shape[:2], *size))

    def flatten(self, node: Node, x: _Value, base: str | None = None) -> _Value:
        flat = (x.shape[0], int(np.prod(x.shape[1:], dtype=np.int64)))
        return _Value(self.graph.add("Flatten", [x.name], base or node.name, axis=1), flat)

    def fully_connected(self, node: Node, a: _Attrs) -> _Value:
        x = self.input(node)
        hidden = a.int("num_hidden")
        no_bias = a.bool("no_bias", False)
        flatten = a.bool("flatten", True)
        g = self.graph
        if flatten:
            if len(x.shape) != 2:
                x = self.flatten(node, x, f"{node.name}_flatten")
            inputs_count = x.shape[1]
        else:
            inputs_count = x.shape[-1]
        weight = self.weight(node, 1, (hidden, inputs_count))
        w_name = g.const(self.symbol.nodes[node.inputs[1][0]].name, weight)
        b_name = None
        if not no_bias:
            b_name = g.const(self.symbol.nodes[node.inputs[2][0]].name,
                             self.weight(node, 2, (hidden,)))
        if len(x.shape) == 2:
            inputs = [x.name, w_name] + ([b_name] if b_name else [])
            out = g.add("Gemm", inputs, node.name, transB=1)
        else:   # flatten=False: a matrix product over the last axis
            wt = g.add("Transpose", [w_name], f"{node.name}_wt", perm=[1, 0])
            out = g.add("MatMul", [x.name, wt], node.name if b_name is None
                        else f"{node.name}_matmul")
            if b_name is not None:
                out = g.add("Add", [out, b_name], node.name)
        return _Value(out, (*x.shape[:-1], hidden))

    def concat(self, node: Node, a: _Attrs) -> _Value:
        axis = a.int("dim", 1)
        count = a.int("num_args", len(node.inputs))
        if count != len(node.inputs) or count < 1:
            raise self.fail(node, f"num_args={count} but {len(node.inputs)} inputs")
        values = [self.input(node, i) for i in range(count)]
        rank = len(values[0].shape)
        axis = axis + rank if axis < 0 else axis
        if not 1 <= axis < rank:
            raise self.fail(node, f"cannot concatenate along axis {axis}")
        for v in values:
            if len(v.shape) != rank or any(v.shape[i] != values[0].shape[i]
                                           for i in range(rank) if i != axis):
                raise self.fail(node, f"shapes {[v.shape for v in values]} do not concatenate")
        shape = list(values[0].shape)
        shape[axis] = sum(v.shape[axis] for v in values)
        return _Value(self.graph.add("Concat", [v.name for v in values], node.name, axis=axis),
                      tuple(shape))

    def l2_normalization(self, node: Node, a: _Attrs) -> _Value:
        x = self.input(node)
        eps = a.float("eps", 1e-10)
        mode = a.str("mode", "instance")
        rank = len(x.shape)
        if mode == "instance":
            axes = list(range(1, rank))
        elif mode == "channel":
            axes = [1]
        elif mode == "spatial":
            axes = list(range(2, rank))
        else:
            raise self.fail(node, f"mode {mode!r} is not supported (instance, channel, spatial)")
        if not axes or rank < 2:
            raise self.fail(node, f"mode {mode!r} needs more axes than {x.shape}")
        g = self.graph
        square = g.add("Mul", [x.name, x.name], f"{node.name}_square")
        total = g.add("ReduceSum", [square, g.const(f"{node.name}_axes", np.array(axes, np.int64))],
                      f"{node.name}_sum", keepdims=1)
        shifted = g.add("Add", [total, g.const(f"{node.name}_eps", np.float32(eps))],
                        f"{node.name}_eps_add")
        norm = g.add("Sqrt", [shifted], f"{node.name}_norm")
        return _Value(g.add("Div", [x.name, norm], node.name), x.shape)

    def softmax(self, node: Node, a: _Attrs) -> _Value:
        x = self.input(node)
        if node.op == "softmax":
            axis = a.int("axis", -1)
            if a.raw("temperature") not in (None, "1", "1.0"):
                raise self.fail(node, "softmax temperature is not supported")
            a.ignore("use_length", "dtype")
        elif node.op == "SoftmaxActivation":
            mode = a.str("mode", "instance")
            axis = -1 if mode == "instance" else 1
            if mode == "instance" and len(x.shape) != 2:
                x = self.flatten(node, x, f"{node.name}_flatten")
        else:   # SoftmaxOutput: the label input and loss settings matter only in training
            if a.bool("multi_output", False):
                raise self.fail(node, "multi_output softmax is not supported")
            axis = 1
            a.ignore("grad_scale", "ignore_label", "use_ignore", "preserve_shape",
                     "normalization", "out_grad", "smooth_alpha")
        return _Value(self.graph.add("Softmax", [x.name], node.name, axis=axis), x.shape)


# ---------------------------------------------------------------------------
# public API


def parse_input_shape(text: str) -> tuple[int, ...]:
    """'1,3,112,112' -> (1, 3, 112, 112); ValueError when it is not N,C,H,W positive ints."""
    parts = [p.strip() for p in str(text).replace("x", ",").split(",") if p.strip()]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"input shape {text!r} must be integers N,C,H,W") from None
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"input shape {text!r} must be four positive integers N,C,H,W")
    return shape


def _select_outputs(symbol: Symbol, output: str | None) -> list[tuple[int, int]]:
    if output is None:
        return list(symbol.heads)
    wanted = output[:-len("_output")] if output.endswith("_output") else output
    matches = [i for i, n in enumerate(symbol.nodes) if n.name == wanted and n.op != "null"]
    if not matches:
        raise ModelError(f"the graph has no node named {output!r}")
    return [(matches[-1], 0)]


def convert(symbol_path, params_path, input_shape, output: str | None = None):
    """Convert an MXNet checkpoint to an ``onnx.ModelProto``.

    input_shape: (N, C, H, W) or "N,C,H,W"; the ONNX model keeps C, H, W and a
    free batch dimension. output: an internal node to use as the output (such
    as "fc1" of an InsightFace training graph) instead of the graph's heads.
    """
    import onnx
    from onnx import helper

    from mobileface.models import registry

    if isinstance(input_shape, str):
        input_shape = parse_input_shape(input_shape)
    input_shape = tuple(int(v) for v in input_shape)
    if len(input_shape) != 4 or min(input_shape) < 1:
        raise ValueError(f"input shape {input_shape} must be four positive integers N,C,H,W")
    symbol_path, params_path = Path(symbol_path), Path(params_path)
    symbol = load_symbol(symbol_path)
    params = load_params(params_path)
    converter = _Converter(symbol, params, symbol_path.name)
    graph_input, graph_outputs = converter.run(input_shape, _select_outputs(symbol, output))
    g = converter.graph
    graph = helper.make_graph(g.nodes, symbol_path.stem.removesuffix("-symbol"),
                              [graph_input], graph_outputs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="mobileface.convert.mxnet")
    model.ir_version = 8
    helper.set_model_props(model, {
        "source_symbol": symbol_path.name,
        "source_symbol_sha256": registry.sha256_file(symbol_path),
        "source_params": params_path.name,
        "source_params_sha256": registry.sha256_file(params_path),
        "input_shape": ",".join(map(str, input_shape)),
    })
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # onnx raises its own checker and inference errors
        raise ModelError(f"the converted graph of {symbol_path.name} is not valid ONNX: "
                         f"{str(exc).splitlines()[0]}") from None
    return model


def save(model, path) -> Path:
    """Write ``model`` (a ModelProto or its bytes) to ``path`` atomically.

    A partial file is never left behind: the bytes go to a temporary file in
    the same folder, which is then renamed.
    """
    from mobileface.convert.dlib_resnet import _write_atomically

    path = Path(path)
    data = model if isinstance(model, bytes) else model.SerializeToString()
    try:
        _write_atomically(data, path)
    except OSError as exc:
        raise ModelError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path
