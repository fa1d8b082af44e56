"""MXNet checkpoint -> ONNX without MXNet: parity with MXNet's own outputs, operator
semantics on small synthetic graphs, and clear errors for bad or unsupported input."""
from __future__ import annotations

import json
import struct
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, shared_model
from mobileface.convert import mxnet
from mobileface.errors import ModelError
from scripts import load_script

MODELS = {"V1": "1,1,100,100", "V2": "1,3,112,112", "V3": "1,3,112,112"}


def _files(version: str):
    return (shared_model(f"mobileface/MobileFace_Identification_{version}-symbol.json"),
            shared_model(f"mobileface/MobileFace_Identification_{version}-0000.params"))


def _session(model):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def reference():
    return np.load(shared_model("mobileface/mxnet_reference_outputs.npz"), allow_pickle=False)


@pytest.mark.parametrize("version", sorted(MODELS))
def test_matches_mxnet_reference_outputs(version, reference):
    symbol, params = _files(version)
    session = _session(mxnet.convert(symbol, params, MODELS[version]))
    inputs = reference[f"{version}_input"]
    expected = reference[f"{version}_output"]
    assert inputs.shape[0] == 16 and expected.shape == (16, 256)
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert inp.name == "data" and inp.shape[1:] == list(inputs.shape[1:]) and out.shape == ["N", 256]
    got = session.run(None, {"data": inputs})[0]
    diff = np.abs(got - expected).max()
    assert diff <= 1e-4, f"{version}: max abs diff {diff:.3g}"
    # batch-independent: one face alone gives the same numbers
    single = session.run(None, {"data": inputs[5:6]})[0]
    assert np.abs(single[0] - got[5]).max() <= 1e-5


def test_v1_reference_faces_separate_people(reference):
    """V1's reference batch holds 8 LFW pairs: same-person pairs are the most similar."""
    out = reference["V1_output"]
    names = [str(f).split("/")[1] for f in reference["files"]]
    sim = out @ out.T
    same = np.array([[a == b for b in names] for a in names]) & ~np.eye(16, dtype=bool)
    different = ~same & ~np.eye(16, dtype=bool)
    assert sim[same].mean() > sim[different].mean() + 0.3


@pytest.mark.parametrize("version", ["V2", "V3"])
def test_colour_models_on_raw_pixels_separate_people(version, reference):
    """V2/V3 normalise inside the graph ((px - 127.5) * 0.0078125): fed raw pixels of the
    reference faces (undoing the reference's own (px - 127.5) / 127.5), same-person
    pairs are closer than different-person pairs."""
    symbol, params = _files(version)
    session = _session(mxnet.convert(symbol, params, MODELS[version]))
    raw = np.round(reference[f"{version}_input"] * 127.5 + 127.5).astype(np.float32)
    out = session.run(None, {"data": raw})[0]
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    names = [str(f).split("/")[1] for f in reference["files"]]
    sim = out @ out.T
    same = np.array([[a == b for b in names] for a in names]) & ~np.eye(16, dtype=bool)
    different = ~same & ~np.eye(16, dtype=bool)
    assert sim[same].mean() > sim[different].mean() + 0.1


@pytest.mark.parametrize("magic", [0xF993FAC8, 0xF993FACA])
def test_params_reader_v1_v3_headers_and_other_float_types(tmp_path, magic):
    arrays = {"arg:a": np.arange(6, dtype="<f8").reshape(2, 3),
              "arg:b": np.array([0.5, -2], dtype="<f2")}
    if magic == 0xF993FACA:           # NumPy shape semantics: 0-d arrays exist
        arrays["arg:scalar"] = np.float32(7.0)
    _write_params(tmp_path / "x.params", arrays, magic=magic)
    got = mxnet.load_params(tmp_path / "x.params")
    assert set(got) == set(arrays)
    for name, array in arrays.items():
        assert got[name].dtype == np.asarray(array).dtype
        np.testing.assert_array_equal(got[name], array)


def test_params_reader_reads_both_formats():
    for version in ("V1", "V2"):   # V1: legacy array headers; V2: NDARRAY_V2_MAGIC
        params = mxnet.load_params(_files(version)[1])
        assert params["arg:conv1_weight"].shape == (32, 1 if version == "V1" else 3, 3, 3)
        assert params["aux:bn1_moving_var"].dtype == np.float32
        assert (params["aux:bn1_moving_var"] > 0).all()


# ---------------------------------------------------------------------------
# Synthetic graphs: MXNet semantics of each operator against numpy


_FLAGS = {np.dtype("<f4"): 0, np.dtype("<f8"): 1, np.dtype("<f2"): 2}


def _write_params(path, arrays: dict[str, np.ndarray], legacy: bool = False,
                  magic: int = 0xF993FAC9) -> None:
    """Write an MXNet NDArray list file (V2 or V3 headers, or the legacy ones)."""
    out = [struct.pack("<QQQ", 0x112, 0, len(arrays))]
    for array in arrays.values():
        array = np.ascontiguousarray(array)
        if array.dtype not in _FLAGS:
            array = array.astype(np.float32)
        if legacy:
            out.append(struct.pack(f"<I{array.ndim}I", array.ndim, *array.shape))
        elif magic == 0xF993FAC8:   # V1: no storage type
            out.append(struct.pack(f"<Ii{array.ndim}q", magic, array.ndim, *array.shape))
        else:
            out.append(struct.pack(f"<Iii{array.ndim}q", magic, 0, array.ndim, *array.shape))
        out.append(struct.pack("<iii", 1, 0, _FLAGS[array.dtype]))
        out.append(array.tobytes())
    out.append(struct.pack("<Q", len(arrays)))
    for name in arrays:
        out.append(struct.pack("<Q", len(name)) + name.encode())
    path.write_bytes(b"".join(out))


class _Net:
    """Build a tiny MXNet symbol graph node by node."""

    def __init__(self):
        self.nodes = [{"op": "null", "name": "data", "inputs": []}]
        self.params: dict[str, np.ndarray] = {}

    def var(self, name: str, value: np.ndarray, aux: bool = False) -> int:
        self.nodes.append({"op": "null", "name": name, "inputs": []})
        self.params[f"{'aux' if aux else 'arg'}:{name}"] = np.asarray(value, np.float32)
        return len(self.nodes) - 1

    def op(self, op: str, name: str, inputs: list[int], **attrs) -> int:
        node = {"op": op, "name": name, "inputs": [[i, 0, 0] for i in inputs]}
        if attrs:
            node["attrs"] = {k: str(v) for k, v in attrs.items()}
        self.nodes.append(node)
        return len(self.nodes) - 1

    def save(self, tmp_path, head: int, legacy: bool = False):
        symbol = tmp_path / "net-symbol.json"
        symbol.write_text(json.dumps({"nodes": self.nodes, "arg_nodes": [],
                                      "heads": [[head, 0, 0]]}))
        params = tmp_path / "net-0000.params"
        _write_params(params, self.params, legacy)
        return symbol, params

    def run(self, tmp_path, head: int, x: np.ndarray, legacy: bool = False) -> np.ndarray:
        symbol, params = self.save(tmp_path, head, legacy)
        model = mxnet.convert(symbol, params, (1, *x.shape[1:]))
        return _session(model).run(None, {"data": x.astype(np.float32)})[0]


RNG = np.random.default_rng(0)


@pytest.mark.parametrize("legacy", [False, True])
def test_batchnorm_defaults_fix_gamma_and_eps(tmp_path, legacy):
    x = RNG.normal(size=(2, 3, 4, 4)).astype(np.float32)
    gamma, beta = np.array([2.0, 3.0, 4.0]), np.array([0.1, 0.2, 0.3])
    mean, var = np.array([0.5, -0.5, 0.0]), np.array([0.01, 1.0, 2.0])
    net = _Net()
    ids = [net.var("g", gamma), net.var("b", beta), net.var("m", mean, True), net.var("v", var, True)]
    head = net.op("BatchNorm", "bn", [0, *ids])          # MXNet defaults: fix_gamma, eps 1e-3
    got = net.run(tmp_path, head, x, legacy)
    c = (slice(None), None, None)
    expected = (x - mean[c]) / np.sqrt(var[c] + 1e-3) + beta[c]   # gamma fixed at 1
    np.testing.assert_allclose(got, expected, atol=1e-5)

    net.nodes[head]["attrs"] = {"fix_gamma": "False", "eps": "2e-05"}
    got = net.run(tmp_path, head, x)
    np.testing.assert_allclose(got, (x - mean[c]) / np.sqrt(var[c] + 2e-5) * gamma[c] + beta[c],
                               atol=1e-4)


def _pool_ref(x, k, s, p, kind, ceil=False):
    """MXNet pooling: windows clipped to the padded input; avg divides by the clipped size."""
    n, c, h, w = x.shape
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=fill)
    size = [((d + 2 * p - k + (s - 1 if ceil else 0)) // s) + 1 for d in (h, w)]
    out = np.empty((n, c, *size), np.float32)
    for i in range(size[0]):
        for j in range(size[1]):
            win = xp[:, :, i * s:i * s + k, j * s:j * s + k]
            out[:, :, i, j] = win.max((2, 3)) if kind == "max" else win.mean((2, 3))
    return out


@pytest.mark.parametrize("kind,convention", [("max", "valid"), ("avg", "valid"),
                                             ("max", "full"), ("avg", "full")])
def test_pooling(tmp_path, kind, convention):
    x = RNG.normal(size=(1, 2, 8, 8)).astype(np.float32)   # "full" gives 5x5, "valid" 4x4
    net = _Net()
    head = net.op("Pooling", "pool", [0], kernel="(3, 3)", stride="(2, 2)", pad="(1, 1)",
                  pool_type=kind, pooling_convention=convention)
    got = net.run(tmp_path, head, x)
    np.testing.assert_allclose(got, _pool_ref(x, 3, 2, 1, kind, convention == "full"), atol=1e-5)


def test_global_pooling_fc_prelu_l2(tmp_path):
    x = RNG.normal(size=(3, 4, 5, 5)).astype(np.float32)
    w, b = RNG.normal(size=(6, 4)), RNG.normal(size=6)
    slopes = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    net = _Net()
    pool = net.op("Pooling", "gp", [0], global_pool="True", pool_type="avg", kernel="(7, 7)")
    fc = net.op("FullyConnected", "fc", [pool, net.var("fc_weight", w), net.var("fc_bias", b)],
                num_hidden=6)
    act = net.op("LeakyReLU", "prelu", [fc, net.var("prelu_gamma", slopes)], act_type="prelu")
    head = net.op("L2Normalization", "l2", [act])
    got = net.run(tmp_path, head, x)
    h = x.mean((2, 3)) @ w.T + b
    h = np.where(h > 0, h, h * slopes)
    np.testing.assert_allclose(got, h / np.sqrt((h ** 2).sum(1, keepdims=True) + 1e-10), atol=1e-5)


def test_grouped_conv_scalars_activation_concat(tmp_path):
    x = RNG.normal(size=(1, 4, 6, 6)).astype(np.float32) * 100 + 127.5
    w = RNG.normal(size=(4, 2, 3, 3))
    net = _Net()
    sub = net.op("_minus_scalar", "sub", [0], scalar="127.5")
    mul = net.op("_mul_scalar", "mul", [sub], scalar="0.0078125")
    conv = net.op("Convolution", "conv", [mul, net.var("conv_weight", w)], kernel="(3, 3)",
                  pad="(1, 1)", num_filter="4", num_group="2", no_bias="True")
    relu6 = net.op("_minimum_scalar", "min6", [net.op("_maximum_scalar", "max0", [conv],
                                                      scalar="0")], scalar="6")
    leaky = net.op("LeakyReLU", "leaky", [conv], act_type="leaky", slope="0.1")
    added = net.op("elemwise_add", "_plus0", [relu6, leaky])
    head = net.op("Concat", "cat", [added, net.op("Activation", "sig", [conv], act_type="sigmoid")],
                  dim="1", num_args="2")
    got = net.run(tmp_path, head, x)
    xn = (x - np.float32(127.5)) * np.float32(0.0078125)
    xp = np.pad(xn, ((0, 0), (0, 0), (1, 1), (1, 1)))
    conv_ref = np.zeros((1, 4, 6, 6))
    for o in range(4):
        g = o // 2
        for i in range(6):
            for j in range(6):
                conv_ref[0, o, i, j] = (xp[0, 2 * g:2 * g + 2, i:i + 3, j:j + 3] * w[o]).sum()
    expected = np.concatenate([np.clip(conv_ref, 0, 6) + np.where(conv_ref > 0, conv_ref, 0.1 * conv_ref),
                               1 / (1 + np.exp(-conv_ref))], axis=1)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_internal_output_node(tmp_path):
    x = RNG.normal(size=(2, 3)).astype(np.float32)
    net = _Net()
    fc = net.op("FullyConnected", "fc1", [0, net.var("fc1_weight", np.eye(3))], num_hidden=3,
                no_bias="True")
    head = net.op("SoftmaxOutput", "softmax", [fc, net.var("softmax_label", np.zeros(2))])
    symbol, params = net.save(tmp_path, head)
    model = mxnet.convert(symbol, params, (1, 3, 1, 1), output="fc1_output")
    assert [o.name for o in model.graph.output] == ["fc1_output"]
    got = _session(model).run(None, {"data": x.reshape(2, 3, 1, 1)})[0]
    np.testing.assert_allclose(got, x, atol=1e-6)
    with pytest.raises(ModelError, match="no node named 'fc9'"):
        mxnet.convert(symbol, params, (1, 3, 1, 1), output="fc9")


def test_softmax_output_needs_no_label(tmp_path):
    """A training graph's SoftmaxOutput head converts without its label variable."""
    x = RNG.normal(size=(2, 3)).astype(np.float32)
    net = _Net()
    fc = net.op("FullyConnected", "fc1", [0, net.var("fc1_weight", np.eye(3))], num_hidden=3,
                no_bias="True")
    net.nodes.append({"op": "null", "name": "softmax_label", "inputs": []})
    head = net.op("SoftmaxOutput", "softmax", [fc, len(net.nodes) - 1], normalization="valid")
    got = net.run(tmp_path, head, x.reshape(2, 3, 1, 1))
    np.testing.assert_allclose(got, np.exp(x) / np.exp(x).sum(1, keepdims=True), atol=1e-6)


# ---------------------------------------------------------------------------
# Errors


def test_unsupported_operator_is_named(tmp_path):
    net = _Net()
    head = net.op("Deconvolution", "up", [0], kernel="(2, 2)", num_filter="3")
    symbol, params = net.save(tmp_path, head)
    with pytest.raises(ModelError, match="unsupported MXNet operator 'Deconvolution'") as info:
        mxnet.convert(symbol, params, (1, 3, 8, 8))
    assert "\n" not in str(info.value)


def test_unsupported_attribute_is_named(tmp_path):
    net = _Net()
    head = net.op("Pooling", "pool", [0], kernel="(2, 2)", pool_type="lp", p_value="2")
    symbol, params = net.save(tmp_path, head)
    with pytest.raises(ModelError, match="pool_type 'lp'"):
        mxnet.convert(symbol, params, (1, 3, 8, 8))
    net.nodes[head]["attrs"] = {"kernel": "(2, 2)", "frobnicate": "3"}
    symbol, params = net.save(tmp_path, head)
    with pytest.raises(ModelError, match="unsupported attribute.*frobnicate=3"):
        mxnet.convert(symbol, params, (1, 3, 8, 8))


def test_mismatched_symbol_and_params():
    symbol, _ = _files("V2")
    _, params = _files("V3")
    with pytest.raises(ModelError, match="not a parameter|shape"):
        mxnet.convert(symbol, params, MODELS["V2"])


def test_wrong_input_shape_is_a_clear_error():
    symbol, params = _files("V1")
    with pytest.raises(ModelError, match="shape"):
        mxnet.convert(symbol, params, "1,3,100,100")   # V1 is grayscale
    with pytest.raises(ValueError, match="four positive integers"):
        mxnet.convert(symbol, params, "1,100,100")


@pytest.mark.parametrize("damage", ["truncated", "magic", "empty", "trailing", "names"])
def test_damaged_params_raise_model_error(damage, tmp_path):
    data = bytearray(_files("V3")[1].read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "magic":
        data[0] ^= 0xFF
    elif damage == "empty":
        data = bytearray()
    elif damage == "trailing":
        data += b"\x00"
    else:
        data[-5:] = b"\xff\xfe\xfd\xfc\xfb"     # the last name is no longer UTF-8
    bad = tmp_path / "bad.params"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelError) as info:
        mxnet.load_params(bad)
    assert "\n" not in str(info.value) and "bad.params" in str(info.value)


@pytest.mark.parametrize("text", ["", "{", "[]", '{"nodes": [{"op": "null"}], "heads": [[0, 0, 0]]}',
                                  '{"nodes": [{"op": "Flatten", "name": "f", "inputs": [[3, 0, 0]]}],'
                                  ' "heads": [[0, 0, 0]]}'])
def test_corrupt_symbol_raises_model_error(text, tmp_path):
    bad = tmp_path / "bad-symbol.json"
    bad.write_text(text)
    with pytest.raises(ModelError) as info:
        mxnet.load_symbol(bad)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------
# The command-line tool


def _tool(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "tools/convert_mxnet.py", *map(str, args)],
                          cwd=cwd, capture_output=True, text=True)


def test_tool_converts(tmp_path, reference):
    import onnx

    symbol, params = _files("V3")
    out = tmp_path / "v3.onnx"
    main = load_script("tools/convert_mxnet.py").main
    assert main(["--symbol", str(symbol), "--params", str(params), "--input-shape", "1,3,112,112",
                 "-o", str(out)]) == 0
    model = onnx.load(str(out))
    got = _session(model).run(None, {"data": reference["V3_input"][:2]})[0]
    assert np.abs(got - reference["V3_output"][:2]).max() <= 1e-4
    assert [p.name for p in tmp_path.iterdir()] == ["v3.onnx"]   # no temporary file left


def test_tool_help():
    result = _tool("--help")
    assert result.returncode == 0 and "--input-shape" in result.stdout


@pytest.mark.parametrize("case", ["missing", "corrupt", "unsupported"])
def test_tool_errors_are_one_line(case, tmp_path):
    symbol, params = _files("V3")
    if case == "missing":
        params = tmp_path / "absent-0000.params"
    elif case == "corrupt":
        params = tmp_path / "corrupt-0000.params"
        params.write_bytes(b"\x12\x01" + bytes(30))
    else:
        text = symbol.read_text().replace('"op": "LeakyReLU"', '"op": "SwishGate"', 1)
        symbol = tmp_path / "odd-symbol.json"
        symbol.write_text(text)
    out = tmp_path / "x.onnx"
    result = _tool("--symbol", symbol, "--params", params, "--input-shape", "1,3,112,112", "-o", out)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()
    if case == "unsupported":
        assert "'SwishGate'" in result.stderr
