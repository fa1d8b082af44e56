"""Convert dlib's face-recognition ResNet (dlib_face_recognition_resnet_model_v1.dat) to ONNX.

The .dat file is read with numpy only (dlib is never imported here). The parse
is driven by the network template of dlib's examples/dnn_face_recognition_ex.cpp
and must end exactly at the end of the file, so any other network, a truncated
file or a corrupted one is refused with :class:`~mobileface.errors.ModelError`.

Facts about dlib's serialisation used here (dlib/serialize.h, dlib/cuda/tensor.h,
dlib/dnn/core.h, dlib/dnn/layers.h, dlib/dnn/input.h, dlib/dnn/loss.h):

* integers: a control byte (low 4 bits: byte count, bit 0x80: negative), then the
  magnitude, little-endian; bools: the byte ``'0'`` or ``'1'``; strings: length,
  then bytes; floats and doubles: an integer mantissa ``m`` then an integer
  exponent ``e``, value ``m * 2**e``.
* ``resizable_tensor``: version 2, n, k, nr, nc, then n*k*nr*nc raw little-endian
  float32; ``alias_tensor``: version 1, n, k, nr, nc.
* ``add_loss_layer``: version 1, loss details, subnetwork. ``add_layer``: version
  (2; the innermost one, on top of the input layer, 2 or 3), subnetwork, layer
  details, 3 bools, x_grad, cached_output, then params_grad (outer layers,
  version 2) or grad_final [+ sample expansion factor, version 3] (innermost).
  ``add_tag_layer``/``add_skip_layer``: version 1, subnetwork (no name).
* Each layer's details start with its name: ``con_4``, ``affine_``, ``relu_``,
  ``max_pool_2``, ``avg_pool_2``, ``add_prev_``, ``fc_2``, ``loss_metric_2``,
  ``input_rgb_image_sized``.

Network semantics: convolutions are cross-correlations with the stored padding
(stride 2 layers have padding 0 and round down); ``affine_`` is a per-channel
``gamma * x + beta`` (batch norm frozen at training end) and is folded into the
preceding convolution; ``add_prev`` adds two tensors zero-padding the smaller
one at the end of each dimension (channels, bottom, right); the downsampling
shortcut is a 2x2 stride-2 average pool; the final fc has no bias and the
network does not normalise its output.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mobileface.models import registry
from mobileface.errors import ModelError

log = logging.getLogger(__name__)

MODEL_NAME = "dlib_resnet_v1"
INPUT_NAME = "images"
OUTPUT_NAME = "embedding"
INPUT_SIZE = 150
EMBEDDING_SIZE = 128
OPSET = 17

# ---------------------------------------------------------------------------
# The network template, outermost layer first (as dlib writes the version
# headers). Each entry is (kind, params...).


def _block(n: int, stride: int) -> list[tuple]:
    # BN<con<N,3,3,1,1,relu<BN<con<N,3,3,stride,stride,SUBNET>>>>> with BN = affine
    return [("affine",), ("con", n, 3, 1), ("relu",), ("affine",), ("con", n, 3, stride)]


def _ares(n: int) -> list[tuple]:
    # relu<add_prev1<block<N,affine,1,tag1<SUBNET>>>>
    return [("relu",), ("add_prev", 1)] + _block(n, 1) + [("tag", 1)]


def _ares_down(n: int) -> list[tuple]:
    # relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,affine,2,tag1<SUBNET>>>>>>>
    return ([("relu",), ("add_prev", 2), ("avg_pool", 2, 2), ("skip", 1), ("tag", 2)]
            + _block(n, 2) + [("tag", 1)])


def _template() -> list[tuple]:
    layers: list[tuple] = [("fc", EMBEDDING_SIZE), ("avg_pool", 0, 1)]   # avg_pool_everything
    layers += _ares_down(256)                                            # alevel0
    layers += _ares(256) + _ares(256) + _ares_down(256)                  # alevel1
    layers += _ares(128) + _ares(128) + _ares_down(128)                  # alevel2
    layers += _ares(64) + _ares(64) + _ares(64) + _ares_down(64)         # alevel3
    layers += _ares(32) + _ares(32) + _ares(32)                          # alevel4
    layers += [("max_pool", 3, 2), ("relu",), ("affine",), ("con", 32, 7, 2)]
    return layers


TEMPLATE = tuple(_template())

# ---------------------------------------------------------------------------
# Low-level reader


class _Reader:
    def __init__(self, data: bytes, label: str):
        self.data = data
        self.pos = 0
        self.label = label

    def fail(self, message: str) -> ModelError:
        return ModelError(f"cannot convert {self.label}: {message} (byte {self.pos} of "
                          f"{len(self.data)}); the file is corrupt or not dlib's "
                          f"face-recognition ResNet v1")

    def _take(self, count: int, what: str) -> bytes:
        end = self.pos + count
        if count < 0 or end > len(self.data):
            raise self.fail(f"file ends inside {what}")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def int(self, what: str, max_bytes: int = 8) -> int:
        control = self._take(1, what)[0]
        size = control & 0x0F
        if size == 0 or size > max_bytes or control & 0x70:
            self.pos -= 1
            raise self.fail(f"bad integer control byte 0x{control:02x} in {what}")
        value = int.from_bytes(self._take(size, what), "little")
        return -value if control & 0x80 else value

    def uint(self, what: str, max_bytes: int = 8) -> int:
        value = self.int(what, max_bytes)
        if value < 0:
            raise self.fail(f"negative {what} ({value})")
        return value

    def bool(self, what: str) -> bool:
        byte = self._take(1, what)
        if byte not in (b"0", b"1"):
            self.pos -= 1
            raise self.fail(f"bad bool byte {byte!r} in {what}")
        return byte == b"1"

    def string(self, what: str, max_len: int = 64) -> str:
        length = self.uint(f"length of {what}")
        if length > max_len:
            raise self.fail(f"implausible length {length} for {what}")
        raw = self._take(length, what)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail(f"non-ASCII {what}") from None

    def expect_name(self, *allowed: str) -> str:
        start = self.pos
        try:
            name = self.string("layer name")
        except ModelError:
            self.pos = start
            raise self.fail(f"expected layer {allowed[0]!r}") from None
        if name not in allowed:
            self.pos = start
            raise self.fail(f"expected layer {' or '.join(map(repr, allowed))}, found {name!r}")
        return name

    def float(self, what: str) -> float:
        mantissa = self.int(f"mantissa of {what}")
        exponent = self.int(f"exponent of {what}", 2)
        return float(np.ldexp(float(mantissa), exponent))

    def version(self, what: str, allowed: tuple[int, ...]) -> int:
        start = self.pos
        value = self.int(f"version of {what}")
        if value not in allowed:
            self.pos = start
            raise self.fail(f"unexpected version {value} of {what} (expected "
                            f"{' or '.join(map(str, allowed))})")
        return value

    def dims(self, what: str) -> tuple[int, int, int, int]:
        dims = tuple(self.uint(f"size of {what}") for _ in range(4))
        if any(d > (1 << 31) for d in dims):
            raise self.fail(f"implausible shape {dims} of {what}")
        return dims  # type: ignore[return-value]

    def tensor(self, what: str) -> np.ndarray:
        self.version(what, (2,))
        dims = self.dims(what)
        count = int(np.prod(dims, dtype=np.int64))
        raw = self._take(4 * count, f"data of {what}")
        return np.frombuffer(raw, "<f4").astype(np.float32).reshape(dims)

    def alias(self, what: str) -> tuple[int, int, int, int]:
        self.version(what, (1,))
        return self.dims(what)


# ---------------------------------------------------------------------------
# Parsed network


@dataclass
class Layer:
    kind: str
    spec: tuple
    weight: np.ndarray | None = None   # con: (O, I, kh, kw); fc: (in, out)
    bias: np.ndarray | None = None     # con: (O,)
    gamma: np.ndarray | None = None    # affine
    beta: np.ndarray | None = None     # affine
    stride: int = 1
    padding: tuple[int, int] = (0, 0)
    window: tuple[int, int] = (0, 0)


@dataclass
class DlibNet:
    means_rgb: tuple[float, float, float]
    size: int
    layers: list[Layer] = field(default_factory=list)   # innermost (input side) first
    margin: float = 0.0
    dist_thresh: float = 0.0


def _read_con(r: _Reader, spec: tuple) -> Layer:
    _, filters, ksize, stride = spec
    name = r.expect_name("con_4", "con_5", "con_6")
    params = r.tensor("con_ params").reshape(-1)
    num_filters = r.int("con_ num_filters")
    nr, nc = r.int("con_ nr"), r.int("con_ nc")
    stride_y, stride_x = r.int("con_ stride_y"), r.int("con_ stride_x")
    pad_y, pad_x = r.int("con_ padding_y"), r.int("con_ padding_x")
    fshape = r.alias("con_ filters")
    bshape = r.alias("con_ biases")
    for what in ("learning_rate_multiplier", "weight_decay_multiplier",
                 "bias_learning_rate_multiplier", "bias_weight_decay_multiplier"):
        r.float(f"con_ {what}")
    use_bias = r.bool("con_ use_bias") if name in ("con_5", "con_6") else True
    if name == "con_6" and r.bool("con_ use_relu"):
        raise r.fail("con_ with a fused relu is not part of this network")
    if (num_filters, nr, nc, stride_y, stride_x) != (filters, ksize, ksize, stride, stride):
        raise r.fail(f"con_ is {num_filters} filters {nr}x{nc} stride {stride_y},{stride_x}; "
                     f"the template expects {filters} filters {ksize}x{ksize} stride {stride}")
    if not (0 <= pad_y < nr and 0 <= pad_x < nc):
        raise r.fail(f"con_ padding {pad_y},{pad_x} out of range")
    if fshape[0] != filters or fshape[2:] != (ksize, ksize):
        raise r.fail(f"con_ filter shape {fshape} does not match the template")
    nweights = int(np.prod(fshape))
    nbias = int(np.prod(bshape)) if use_bias else 0
    if use_bias and nbias != filters:
        raise r.fail(f"con_ bias shape {bshape} does not match {filters} filters")
    if params.size != nweights + nbias:
        raise r.fail(f"con_ has {params.size} parameters, expected {nweights + nbias}")
    bias = params[nweights:].copy() if use_bias else np.zeros(filters, np.float32)
    return Layer("con", spec, weight=params[:nweights].reshape(fshape).copy(), bias=bias,
                 stride=stride, padding=(pad_y, pad_x), window=(nr, nc))


def _read_affine(r: _Reader, spec: tuple) -> Layer:
    r.expect_name("affine_")
    params = r.tensor("affine_ params").reshape(-1)
    gshape = r.alias("affine_ gamma")
    bshape = r.alias("affine_ beta")
    mode = r.int("affine_ mode")
    if mode != 0:   # CONV_MODE: one gamma/beta per channel
        raise r.fail(f"affine_ mode {mode} is not the per-channel mode 0")
    channels = gshape[1]
    if gshape != (1, channels, 1, 1) or bshape != gshape or params.size != 2 * channels:
        raise r.fail(f"affine_ shapes {gshape}/{bshape} with {params.size} parameters")
    return Layer("affine", spec, gamma=params[:channels].copy(), beta=params[channels:].copy())


def _read_pool(r: _Reader, spec: tuple) -> Layer:
    kind, window, stride = spec
    r.expect_name(f"{kind}_2")
    nr, nc = r.int(f"{kind} nr"), r.int(f"{kind} nc")
    stride_y, stride_x = r.int(f"{kind} stride_y"), r.int(f"{kind} stride_x")
    pad_y, pad_x = r.int(f"{kind} padding_y"), r.int(f"{kind} padding_x")
    if (nr, nc, stride_y, stride_x) != (window, window, stride, stride):
        raise r.fail(f"{kind} is {nr}x{nc} stride {stride_y},{stride_x}; the template "
                     f"expects {window}x{window} stride {stride}")
    if (pad_y, pad_x) != (0, 0):
        raise r.fail(f"{kind} padding {pad_y},{pad_x} (only 0 is supported)")
    return Layer(kind, spec, stride=stride, window=(nr, nc))


def _read_fc(r: _Reader, spec: tuple) -> Layer:
    r.expect_name("fc_2")
    num_outputs = r.int("fc_ num_outputs")
    num_inputs = r.int("fc_ num_inputs")
    params = r.tensor("fc_ params").reshape(-1)
    wshape = r.alias("fc_ weights")
    r.alias("fc_ biases")
    bias_mode = r.int("fc_ bias_mode")
    for what in ("learning_rate_multiplier", "weight_decay_multiplier",
                 "bias_learning_rate_multiplier", "bias_weight_decay_multiplier"):
        r.float(f"fc_ {what}")
    if num_outputs != spec[1]:
        raise r.fail(f"fc_ has {num_outputs} outputs, the template expects {spec[1]}")
    if bias_mode != 1:   # FC_NO_BIAS
        raise r.fail(f"fc_ bias mode {bias_mode}; the template has no bias (mode 1)")
    if wshape != (num_inputs, num_outputs, 1, 1) or params.size != num_inputs * num_outputs:
        raise r.fail(f"fc_ weights {wshape} with {params.size} parameters for "
                     f"{num_inputs} inputs and {num_outputs} outputs")
    return Layer("fc", spec, weight=params.reshape(num_inputs, num_outputs).copy())


def _read_details(r: _Reader, spec: tuple) -> Layer:
    kind = spec[0]
    if kind == "con":
        return _read_con(r, spec)
    if kind == "affine":
        return _read_affine(r, spec)
    if kind in ("max_pool", "avg_pool"):
        return _read_pool(r, spec)
    if kind == "fc":
        return _read_fc(r, spec)
    if kind == "relu":
        r.expect_name("relu_")
        return Layer("relu", spec)
    if kind == "add_prev":
        r.expect_name("add_prev_")
        return Layer("add_prev", spec)
    raise AssertionError(kind)


def parse(data: bytes, label: str = "dlib network") -> DlibNet:
    """Parse the serialised loss_metric network into layers (input side first)."""
    r = _Reader(data, label)
    r.version("add_loss_layer", (1,))
    r.expect_name("loss_metric_2")
    margin = r.float("loss_metric_ margin")
    dist_thresh = r.float("loss_metric_ dist_thresh")

    # Version headers of the nested layers, outermost first.
    versions = []
    for i, spec in enumerate(TEMPLATE):
        if spec[0] in ("tag", "skip"):
            versions.append(r.version(f"add_{spec[0]}_layer", (1,)))
        elif i == len(TEMPLATE) - 1:
            versions.append(r.version("the input add_layer", (2, 3)))
        else:
            versions.append(r.version("add_layer", (1, 2)))

    r.expect_name("input_rgb_image_sized")
    means = tuple(r.float(f"input mean {c}") for c in ("red", "green", "blue"))
    nr, nc = r.int("input rows"), r.int("input columns")
    if (nr, nc) != (INPUT_SIZE, INPUT_SIZE):
        raise r.fail(f"input size {nr}x{nc}, expected {INPUT_SIZE}x{INPUT_SIZE}")
    if not all(0.0 <= m <= 255.0 for m in means):
        raise r.fail(f"implausible input means {means}")

    net = DlibNet(means_rgb=means, size=nr, margin=margin, dist_thresh=dist_thresh)  # type: ignore[arg-type]
    # Details and trailers, innermost first.
    for i in range(len(TEMPLATE) - 1, -1, -1):
        spec = TEMPLATE[i]
        if spec[0] in ("tag", "skip"):
            net.layers.append(Layer(spec[0], spec))
            continue
        net.layers.append(_read_details(r, spec))
        for what in ("this_layer_setup_called", "gradient_input_is_stale",
                     "get_output_and_gradient_input_disabled"):
            r.bool(what)
        r.tensor("x_grad")
        r.tensor("cached_output")
        if i == len(TEMPLATE) - 1:
            r.tensor("grad_final")
            if versions[i] == 3:
                r.int("sample_expansion_factor")
        elif versions[i] == 2:
            r.tensor("params_grad")
    if r.pos != len(data):
        raise r.fail(f"{len(data) - r.pos} unexpected trailing bytes after the network")
    return net


# ---------------------------------------------------------------------------
# ONNX graph


def _conv_out(size: int, window: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - window) // stride + 1


def build_onnx(net: DlibNet):
    """An onnx.ModelProto computing the network on normalised NCHW RGB input."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    counter = [0]

    def fresh(prefix: str) -> str:
        counter[0] += 1
        return f"{prefix}_{counter[0]}"

    def const(prefix: str, array: np.ndarray) -> str:
        name = fresh(prefix)
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    current = INPUT_NAME
    shape = (3, net.size, net.size)      # (C, H, W) of `current`
    tags: dict[int, tuple[str, tuple]] = {}
    pending_conv = None                  # a con waiting for a possible affine to fold

    def flush():
        nonlocal current, shape, pending_conv
        if pending_conv is None:
            return
        layer, weight, bias = pending_conv
        out = fresh("conv")
        pad_y, pad_x = layer.padding
        nodes.append(helper.make_node(
            "Conv", [current, const("w", weight.astype(np.float32)),
                     const("b", bias.astype(np.float32))], [out],
            kernel_shape=list(layer.window), strides=[layer.stride] * 2,
            pads=[pad_y, pad_x, pad_y, pad_x]))
        current = out
        shape = (weight.shape[0], _conv_out(shape[1], layer.window[0], layer.stride, pad_y),
                 _conv_out(shape[2], layer.window[1], layer.stride, pad_x))
        pending_conv = None

    for layer in net.layers:
        kind = layer.kind
        if kind == "con":
            flush()
            if layer.weight.shape[1] != shape[0]:
                raise ModelError(f"con_ expects {layer.weight.shape[1]} input channels, "
                                 f"gets {shape[0]}")
            pending_conv = (layer, layer.weight.astype(np.float64), layer.bias.astype(np.float64))
            continue
        if kind == "affine" and pending_conv is not None:
            conv, weight, bias = pending_conv
            if layer.gamma.size != weight.shape[0]:
                raise ModelError(f"affine_ has {layer.gamma.size} channels after a con_ "
                                 f"with {weight.shape[0]} filters")
            gamma = layer.gamma.astype(np.float64)
            pending_conv = (conv, weight * gamma[:, None, None, None],
                            bias * gamma + layer.beta.astype(np.float64))
            continue
        flush()
        if kind == "affine":      # not after a con_: keep as Mul + Add
            c = layer.gamma.size
            mul, out = fresh("affine_mul"), fresh("affine")
            nodes.append(helper.make_node("Mul", [current, const("gamma", layer.gamma.reshape(1, c, 1, 1))], [mul]))
            nodes.append(helper.make_node("Add", [mul, const("beta", layer.beta.reshape(1, c, 1, 1))], [out]))
            current = out
        elif kind == "relu":
            out = fresh("relu")
            nodes.append(helper.make_node("Relu", [current], [out]))
            current = out
        elif kind in ("max_pool", "avg_pool"):
            out = fresh(kind)
            if layer.window == (0, 0):
                nodes.append(helper.make_node("GlobalAveragePool" if kind == "avg_pool"
                                              else "GlobalMaxPool", [current], [out]))
                shape = (shape[0], 1, 1)
            else:
                op = "AveragePool" if kind == "avg_pool" else "MaxPool"
                nodes.append(helper.make_node(op, [current], [out], kernel_shape=list(layer.window),
                                              strides=[layer.stride] * 2, pads=[0, 0, 0, 0]))
                shape = (shape[0], _conv_out(shape[1], layer.window[0], layer.stride, 0),
                         _conv_out(shape[2], layer.window[1], layer.stride, 0))
            current = out
        elif kind == "tag":
            tags[layer.spec[1]] = (current, shape)
        elif kind == "skip":
            current, shape = tags[layer.spec[1]]
        elif kind == "add_prev":
            other, other_shape = tags[layer.spec[1]]
            target = tuple(max(a, b) for a, b in zip(shape, other_shape))
            inputs = []
            for name, s in ((current, shape), (other, other_shape)):
                if s != target:
                    padded = fresh("pad")
                    pads = np.array([0, 0, 0, 0, 0] + [t - d for t, d in zip(target, s)], np.int64)
                    nodes.append(helper.make_node("Pad", [name, const("pads", pads)], [padded],
                                                  mode="constant"))
                    name = padded
                inputs.append(name)
            out = fresh("add")
            nodes.append(helper.make_node("Add", inputs, [out]))
            current, shape = out, target
        elif kind == "fc":
            if layer.weight.shape[0] != shape[0] * shape[1] * shape[2]:
                raise ModelError(f"fc_ expects {layer.weight.shape[0]} inputs, gets "
                                 f"{shape[0] * shape[1] * shape[2]}")
            flat = fresh("flatten")
            nodes.append(helper.make_node("Flatten", [current], [flat], axis=1))
            nodes.append(helper.make_node("MatMul", [flat, const("fc_w", layer.weight)], [OUTPUT_NAME]))
            current = OUTPUT_NAME
            shape = (layer.weight.shape[1],)
        else:
            raise AssertionError(kind)
    flush()
    if current != OUTPUT_NAME:
        raise ModelError("the dlib network does not end with its fc layer")

    graph = helper.make_graph(
        nodes, "dlib_face_recognition_resnet_model_v1",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, net.size, net.size])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", shape[0]])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="mobileface.convert.dlib_resnet")
    model.ir_version = 8
    means = ",".join(f"{m:.6g}" for m in net.means_rgb)
    helper.set_model_props(model, {
        "source": "dlib_face_recognition_resnet_model_v1.dat",
        "input": f"RGB 150x150 face chip (dlib get_face_chip, padding 0.25), "
                 f"(pixel - mean) / 256, RGB means {means}, NCHW",
        "output": "128-d descriptor, not normalised; same person if euclidean distance < 0.6",
    })
    onnx.checker.check_model(model)
    return model


# ---------------------------------------------------------------------------
# Public API


def convert(dat_path) -> "onnx.ModelProto":  # noqa: F821
    """Parse dlib's .dat network at ``dat_path`` and return the ONNX model."""
    path = Path(dat_path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from None
    return build_onnx(parse(data, path.name))


#: bumped whenever the converter writes a different graph, so that caches it made are redone
CONVERTER_VERSION = 1


def converted_model_path(dat_path=None) -> Path:
    """The cached ONNX file for ``dat_path`` (default: the verified registry model).

    Converted on first use and kept at ``registry.cache_dir()`` under a name keyed
    by the sha256 of the source file, with a record of the ONNX file's own sha256
    beside it (:func:`registry.write_cached`; each file written to a temporary
    file then renamed, so an interrupted conversion never leaves a partial file
    behind). The cached file is checked against its record on every call: one
    damaged on disk or replaced by another model (which would still load, and
    give other people's embeddings or NaN) is converted again, never used.
    """
    if dat_path is None:
        source = registry.verified_path(MODEL_NAME)
        digest = registry.get_spec(MODEL_NAME).sha256  # what verified_path just checked
    else:
        source = Path(dat_path)
        if not source.is_file():
            raise ModelError(f"dlib network file {source} does not exist")
        digest = registry.sha256_file(source)
    cache = registry.cache_dir()
    target = _cache_target(cache, digest)
    state = registry.check_cached(target, **_record_facts(digest))
    if state == "ok":
        return target
    if state != "missing":
        log.warning("the cached model %s cannot be trusted (%s: damaged, replaced or left by "
                    "an older version); converting again", target, state)
    model = convert(source)
    try:
        registry.write_cached(model.SerializeToString(), target, **_record_facts(digest))
    except OSError as exc:
        raise ModelError(f"cannot write the converted model to {cache} ({exc.strerror}); "
                         "set MOBILEFACE_CACHE to a writable folder") from None
    return target


#: what cache_status says before the first conversion
NOT_CONVERTED = "not converted yet (converted on first use)"


def cache_status() -> str:
    """The registry model's cache as ``mobileface models`` shows it: "ok", "not converted
    yet (converted on first use)" or "<problem>, will be converted again".

    Looks without converting, and without creating the cache folder.
    """
    digest = registry.get_spec(MODEL_NAME).sha256
    state = registry.check_cached(_cache_target(registry.default_cache_dir(), digest),
                                  **_record_facts(digest))
    if state == "missing":
        return NOT_CONVERTED
    return state if state == "ok" else f"{state}, will be converted again"


def _cache_target(cache: Path, digest: str) -> Path:
    return cache / f"{MODEL_NAME}-{digest[:16]}.onnx"


def _record_facts(digest: str) -> dict:
    """What the record of a converted file must say besides its sha256: the whole source
    sha256 (the name holds 16 digits of it) and the converter that wrote it."""
    return {"source_sha256": digest, "converter": CONVERTER_VERSION}


#: kept for mobileface.convert.mxnet, which writes its models the same way
_write_atomically = registry.write_atomically
