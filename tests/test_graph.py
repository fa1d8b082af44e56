"""Folding per-channel Mul/Add after Conv into the convolution (mobileface.models.graph)."""
from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from conftest import load_bgr  # noqa: E402
from mobileface.models import graph, registry  # noqa: E402


def _unoptimised(model) -> "ort.InferenceSession":
    """A session that runs the graph as it is (onnxruntime fuses Conv+Mul itself otherwise)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def face_blobs(analyzer):
    from mobileface.stages.attributes import Attributes

    blobs = []
    for name in ("mobileface/friends.jpg", "face_recognition/obama.jpg",
                 "face_recognition/two_people.jpg"):
        image = load_bgr(name)
        faces = analyzer.analyze(image)
        blobs.append(Attributes.blobs(image, faces))
    return np.concatenate([b[0] for b in blobs]), np.concatenate([b[1] for b in blobs])


@pytest.mark.parametrize("name, blob_index, removed", [("age_v1", 0, 22), ("gender_v1", 1, 10)])
def test_folded_nets_give_the_same_outputs_on_real_faces(face_blobs, name, blob_index, removed):
    source = registry.onnx_bytes(name)
    model = onnx.load_from_string(source)
    before = graph.op_counts(model)
    assert graph.fold_conv_affine(model) == removed
    after = graph.op_counts(model)
    assert after["Conv"] == before["Conv"]
    assert sum(after.values()) == sum(before.values()) - removed
    if name == "age_v1":        # 11 Conv + 11 Mul + 16 Add: the 11 affine pairs fold, 5 residual Adds stay
        assert (before["Mul"], before["Add"], after["Mul"], after["Add"]) == (11, 16, 0, 5)
    else:                       # 4 affine pairs, and 2 scalar Muls into the Gemms' weights
        assert (before["Mul"], before["Add"], after["Mul"], after["Add"]) == (6, 4, 0, 0)
    blob = face_blobs[blob_index]
    assert len(blob) >= 8                       # the faces of three photos
    expected = _unoptimised(source).run(None, {"images": blob})[0]
    got = _unoptimised(model).run(None, {"images": blob})[0]
    assert_allclose(got, expected, atol=1e-4)
    assert expected.std(0).max() > 1e-3         # the faces differ: a real comparison


def test_folded_model_is_cached_by_source_sha256(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILEFACE_CACHE", str(tmp_path))
    path = graph.folded_model("age_v1")
    assert path.parent == tmp_path and registry.get_spec("age_v1").sha256[:16] in path.name
    assert graph.op_counts(onnx.load(str(path)))["Mul"] == 0
    stamp = path.stat().st_mtime_ns
    assert graph.folded_model("age_v1") == path and path.stat().st_mtime_ns == stamp
    path.write_bytes(path.read_bytes()[:-1] + b"\0")       # damaged: folded again
    graph.folded_model("age_v1")
    assert registry.check_cached(path) == "ok"


def _conv_then(op: str, const: np.ndarray, extra_use: bool = False, const_first: bool = False):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    b = rng.normal(size=4).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1]),
             helper.make_node(op, ["k", "y"] if const_first else ["y", "k"], ["z"])]
    outputs = [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)]
    if extra_use:
        nodes.append(helper.make_node("Relu", ["y"], ["r"]))
        outputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, None))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     [1, 3, 8, 8])], outputs,
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"),
                           numpy_helper.from_array(const, "k")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("op", ["Mul", "Add", "Sub", "Div"])
@pytest.mark.parametrize("shape", [(1, 4, 1, 1), (4, 1, 1), (1,), ()])
def test_per_channel_constants_fold_exactly(op, shape):
    const = (np.arange(1, 5, dtype=np.float32) * 0.5).reshape(shape) if shape not in ((1,), ()) \
        else np.full(shape, 1.5, np.float32)
    model = _conv_then(op, const)
    x = np.random.default_rng(1).normal(size=(1, 3, 8, 8)).astype(np.float32)
    expected = _unoptimised(model).run(None, {"x": x})[0]
    assert graph.fold_conv_affine(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Conv"]
    assert {i.name for i in model.graph.initializer} == {"z__folded_W", "z__folded_B"}
    assert_allclose(_unoptimised(model).run(None, {"x": x})[0], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["width-constant", "used-twice", "constant-minus-conv"])
def test_what_is_not_affine_per_channel_stays(case):
    if case == "width-constant":        # (8,) broadcasts over the width, not the channels
        model = _conv_then("Mul", np.arange(8, dtype=np.float32))
    elif case == "used-twice":          # the Conv's output is needed unscaled as well
        model = _conv_then("Mul", np.ones((1, 4, 1, 1), np.float32), extra_use=True)
    else:                               # k - conv: the pass folds only conv (op) k
        model = _conv_then("Sub", np.ones((1, 4, 1, 1), np.float32), const_first=True)
    before = [n.op_type for n in model.graph.node]
    assert graph.fold_conv_affine(model) == 0
    assert [n.op_type for n in model.graph.node] == before


@pytest.mark.parametrize("flatten", [True, False])
def test_a_scalar_mul_before_a_gemm_goes_into_its_weights(flatten):
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Mul", ["r", "s"], ["m"])]
    if flatten:
        nodes.append(helper.make_node("Flatten", ["m"], ["f"]))
    nodes.append(helper.make_node("Gemm", ["f" if flatten else "m", "w", "b"], ["y"], alpha=2.0))
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([0.5], np.float32), "s"),
         numpy_helper.from_array(rng.normal(size=(6, 3)).astype(np.float32), "w"),
         numpy_helper.from_array(rng.normal(size=3).astype(np.float32), "b")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.normal(size=(2, 6)).astype(np.float32)
    expected = _unoptimised(model).run(None, {"x": x})[0]
    assert graph.fold_conv_affine(model) == 1
    assert "Mul" not in graph.op_counts(model)
    assert_allclose(_unoptimised(model).run(None, {"x": x})[0], expected, rtol=1e-6)
