"""Models that are damaged, replaced or odd: the converted cache is checked against its sha256
record, NaN and empty outputs are refused naming the model, deeply nested JSON is one line,
verify works with every embedder, and a missing provider is warned about once."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from conftest import shared_file
from mobileface.cli.main import main
from mobileface.convert import dlib_resnet
from mobileface.errors import ModelError
from mobileface.models import registry, runtime
from mobileface.stages.embed.dlib_resnet import DlibEmbedder
from mobileface.types import Faces

DEEP = "[" * 100000


@pytest.fixture
def logs(caplog, monkeypatch):
    """caplog that sees our records even after a CLI run in this process (configure_logging
    stops the "mobileface" logger from propagating to the root, where caplog listens)."""
    monkeypatch.setattr(logging.getLogger("mobileface"), "propagate", True)
    caplog.set_level(logging.INFO, logger="mobileface")
    return caplog


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private model cache holding the converted float model and its record."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("MOBILEFACE_CACHE", str(folder))
    return folder


def _save(path, nodes, inputs, outputs, inits=()):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, "test",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _dlib_like(path, weight: float = 1.0, size: int = 128):
    """Input "images" N x 3 x 150 x 150 -> "embedding" N x size: channel means times a
    constant matrix (``weight`` NaN makes a damaged model, finite another valid one)."""
    from onnx import helper, numpy_helper

    w = np.full((3, size), weight, np.float32) + np.arange(size, dtype=np.float32)
    nodes = [helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "w"], ["embedding"])]
    return _save(path, nodes, [("images", ["N", 3, 150, 150])], [("embedding", ["N", size])],
                 [numpy_helper.from_array(w, "w")])


def _spec_for(tmp_path, model_name: str) -> dict:
    return {"name": "probe", "model": model_name, "input_size": 16, "color": "rgb",
            "mean": 0, "std": 1, "align": "arcface", "cosine_threshold": 0.5}


# ---------------------------------------------------------------------------
# 1. the converted-model cache


@pytest.mark.parametrize("fault", ["replaced", "truncated", "no record", "bad record"])
def test_an_untrusted_cache_file_is_converted_again_never_used(cache, tmp_path, logs, fault):
    good_path = dlib_resnet.converted_model_path()
    good = good_path.read_bytes()
    if fault == "replaced":        # another valid ONNX file of the same inputs and outputs
        good_path.write_bytes(_dlib_like(tmp_path / "other.onnx").read_bytes())
    elif fault == "truncated":
        good_path.write_bytes(good[: len(good) // 2])
    elif fault == "no record":     # e.g. a cache left by an earlier version
        registry.record_path(good_path).unlink()
    else:
        registry.record_path(good_path).write_text(DEEP)
    logs.clear()
    path = dlib_resnet.converted_model_path()
    assert path == good_path and path.read_bytes() == good
    warnings = [r for r in logs.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "converting again" in warnings[0].getMessage()
    # repaired: the next use neither warns nor converts
    logs.clear()
    calls = []
    original = dlib_resnet.convert
    dlib_resnet.convert = lambda *a: calls.append(a) or original(*a)
    try:
        assert dlib_resnet.converted_model_path() == good_path
    finally:
        dlib_resnet.convert = original
    assert calls == [] and not logs.records


def test_the_embedder_never_runs_a_replaced_cache_file(cache, tmp_path, astronaut_bgr):
    from mobileface import FaceAnalyzer

    reference = FaceAnalyzer(stages=("embed",)).analyze(astronaut_bgr).embedding
    model = dlib_resnet.converted_model_path()
    model.write_bytes(_dlib_like(tmp_path / "other.onnx").read_bytes())
    faces = FaceAnalyzer(stages=("embed",)).analyze(astronaut_bgr)
    np.testing.assert_allclose(faces.embedding, reference, rtol=1e-5, atol=1e-6)


def test_models_command_shows_a_bad_cache(cache, tmp_path, capsys):
    def row() -> tuple[int, dict]:
        code = main(["models", "--json"])
        rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
        return code, rows["dlib_resnet_v1"]

    code, dlib = row()
    assert code == 0 and dlib["status"] == "ok" and dlib["cache"].startswith("not converted")
    assert not cache.exists()                       # looking does not create the cache
    model = dlib_resnet.converted_model_path()
    code, dlib = row()
    assert code == 0 and (dlib["status"], dlib["cache"]) == ("ok", "ok")
    model.write_bytes(_dlib_like(tmp_path / "other.onnx").read_bytes())
    code, dlib = row()
    assert code == 1
    assert dlib["status"] == "cache: sha256 mismatch, will be converted again"
    assert main(["models"]) == 1
    assert "cache: sha256 mismatch, will be converted again" in capsys.readouterr().out
    dlib_resnet.converted_model_path()
    assert row()[0] == 0


# ---------------------------------------------------------------------------
# 2. non-finite outputs are refused, naming the model


def test_a_nan_embedder_model_is_a_model_error_naming_it(tmp_path, astronaut_bgr):
    from mobileface import FaceAnalyzer

    broken = DlibEmbedder(model_path=_dlib_like(tmp_path / "nan.onnx", weight=np.nan),
                          model_id="dlib_resnet_v1-int8:broken")
    analyzer = FaceAnalyzer(stages=["landmarks", broken])
    with pytest.raises(ModelError, match="dlib_resnet_v1-int8:broken.*NaN") as exc:
        analyzer.analyze(astronaut_bgr)
    assert "\n" not in str(exc.value)


def test_a_model_of_another_shape_is_refused_when_loaded(tmp_path):
    with pytest.raises(ModelError, match="N x 128"):
        DlibEmbedder(model_path=_dlib_like(tmp_path / "wide.onnx", size=64), model_id="x")


def test_onnx_embedders_refuse_nan_and_empty_outputs_at_load(tmp_path):
    from onnx import helper, numpy_helper

    from mobileface.stages.embed import create_embedder

    nan = numpy_helper.from_array(np.full((1, 3), np.nan, np.float32), "nan")
    pooled = [helper.make_node("GlobalAveragePool", ["x"], ["p"]),
              helper.make_node("Flatten", ["p"], ["f"], axis=1)]
    _save(tmp_path / "nan.onnx", pooled + [helper.make_node("Mul", ["f", "nan"], ["y"])],
          [("x", ["N", 3, 16, 16])], [("y", ["N", 3])], [nan])
    ends = [numpy_helper.from_array(np.array(v, np.int64), n)
            for v, n in (([0], "zero"), ([1], "axis"))]
    empty = pooled + [helper.make_node("Slice", ["f", "zero", "zero", "axis"], ["y"])]
    _save(tmp_path / "empty.onnx", empty, [("x", ["N", 3, 16, 16])], [("y", ["N", "D"])], ends)
    _save(tmp_path / "empty0.onnx", empty, [("x", ["N", 3, 16, 16])], [("y", ["N", 0])], ends)
    for name, message in (("nan.onnx", "NaN"), ("empty.onnx", "empty"),
                          ("empty0.onnx", "empty")):
        with pytest.raises(ModelError, match=message) as exc:
            create_embedder(_spec_for(tmp_path, str(tmp_path / name)))
        assert "probe" in str(exc.value) and "\n" not in str(exc.value)


class _Session:
    """A stand-in onnxruntime session returning fixed outputs."""

    def __init__(self, *outputs):
        self.outputs = outputs

    def run(self, names, feeds):
        n = len(next(iter(feeds.values())))
        return [np.broadcast_to(o, (n, *o.shape[1:])).copy() if o.shape[0] == 1 else o
                for o in self.outputs]


def test_nan_ages_and_genders_are_a_model_error(analyzer, astronaut_bgr):
    from mobileface.stages.attributes import Attributes

    faces = analyzer.analyze(astronaut_bgr)
    stage = Attributes()
    stage.age_session = _Session(np.full((1, 81), np.nan, np.float32))
    with pytest.raises(ModelError, match="age_v1"):
        stage(astronaut_bgr, faces)
    stage = Attributes()
    stage.gender_session = _Session(np.array([[np.inf, 0.0]], np.float32))
    with pytest.raises(ModelError, match="gender_v1"):
        stage(astronaut_bgr, faces)


def test_nan_detector_outputs_are_a_model_error_not_no_face(astronaut_bgr):
    from mobileface.detect import create_detector

    retina = create_detector("retinaface", input_size=160)
    real = retina.session.run(None, {"input": retina._prepare(astronaut_bgr)[0]})
    retina.session = _Session(real[0], np.full_like(real[1], np.nan), real[2])
    with pytest.raises(ModelError, match="retinaface.*NaN"):
        retina.detect(astronaut_bgr)
    mtcnn = create_detector("mtcnn")

    class NanPnet:
        def run(self, names, feeds):
            reg, prob = real_pnet.run(names, feeds)
            return reg, np.full_like(prob, np.nan)

    real_pnet, mtcnn.pnet = mtcnn.pnet, NanPnet()
    with pytest.raises(ModelError, match="mtcnn_pnet.*NaN"):
        mtcnn.detect(astronaut_bgr)


# ---------------------------------------------------------------------------
# 3. JSON nested too deeply


def test_deeply_nested_json_is_one_line_everywhere(tmp_path, monkeypatch, cache):
    from mobileface.stages.embed import INT8_EMBEDDER, create_embedder
    from mobileface.stages.embed.int8 import int8_paths
    from mobileface.stages.embed.spec import load_spec

    spec = tmp_path / "deep.json"
    spec.write_text(DEEP)
    with pytest.raises(ValueError, match="not valid JSON \\(nested too deeply\\)"):
        load_spec(spec)
    with pytest.raises(ValueError, match="nested too deeply"):
        create_embedder(str(spec))
    cache.mkdir()
    int8_paths()[1].write_text(DEEP)
    with pytest.raises(ModelError, match="nested too deeply"):
        create_embedder(INT8_EMBEDDER)
    manifest = tmp_path / "manifest.json"
    manifest.write_text(DEEP)
    with monkeypatch.context() as patch:
        patch.setattr(registry, "MANIFEST_PATH", manifest)
        registry.load_manifest.cache_clear()   # (a failed load is never cached)
        with pytest.raises(ModelError, match="nested too deeply"):
            registry.load_manifest()
        manifest.write_text('{"models": [1, 2]}')            # JSON, but not a manifest
        with pytest.raises(ModelError, match="manifest"):
            registry.load_manifest()
    registry.load_manifest.cache_clear()


def test_cli_with_a_deep_spec_is_one_line(tmp_path, capsys, astronaut_bgr):
    import cv2

    image = tmp_path / "a.png"
    cv2.imwrite(str(image), astronaut_bgr)
    spec = tmp_path / "deep.json"
    spec.write_text(DEEP)
    assert main(["verify", str(image), str(image), "--embedder", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "nested too deeply" in err and err.count("\n") == 1 and "Traceback" not in err


# ---------------------------------------------------------------------------
# 4. verify with every embedder


def test_verify_with_the_int8_embedder(monkeypatch, capsys):
    """dlib-int8 is dlib's network too: compared by euclidean distance, no spec needed. (The
    int8 file is stood in for by the float model, as tools/optimize_model.py would
    install one; its guard is tested in test_optimize.py.)"""
    from mobileface.stages.embed import int8

    def fake_int8(runtime=None):
        return DlibEmbedder(runtime, model_path=dlib_resnet.converted_model_path(),
                            model_id="dlib_resnet_v1-int8:test")

    monkeypatch.setattr(int8, "int8_embedder", fake_int8)
    obama = str(shared_file("face_recognition/obama.jpg"))
    obama2 = str(shared_file("face_recognition/obama2.jpg"))
    biden = str(shared_file("face_recognition/biden.jpg"))
    assert main(["-q", "verify", obama, obama2, "--json", "--embedder", "dlib-int8"]) == 0
    same = json.loads(capsys.readouterr().out)
    assert same["same_person"] is True and same["metric"] == "distance"
    assert same["model_id"] == "dlib_resnet_v1-int8:test" and same["threshold"] == 0.6
    assert main(["-q", "verify", obama, biden, "--embedder", "dlib-int8"]) == 0
    assert "different people" in capsys.readouterr().out
    assert main(["verify", obama, obama2, "--embedder", "dlib-int8", "--threshold", "-1"]) == 2
    assert "positive" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_verify_refuses_a_non_finite_threshold(value, capsys):
    obama = str(shared_file("face_recognition/obama.jpg"))
    assert main(["verify", obama, obama, "--json", "--threshold", value]) == 2
    captured = capsys.readouterr()
    assert "finite" in captured.err and captured.out == ""


# ---------------------------------------------------------------------------
# 5. a missing provider: one warning for the whole run


def test_a_missing_provider_is_warned_about_once_for_all_models(monkeypatch, logs):
    import onnxruntime as ort

    from mobileface import FaceAnalyzer

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is available here: nothing falls back")
    monkeypatch.setattr(runtime, "_warned", set())
    logs.set_level(logging.DEBUG, logger="mobileface.models.runtime")
    analyzer = FaceAnalyzer(providers=("cuda", "cpu"))
    warnings = [r for r in logs.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "CUDAExecutionProvider" in warnings[0].getMessage()
    # every model, RetinaFace included, says where it runs (debug) and runs on the CPU
    labels = set(analyzer.runtime.active)
    assert {"RetinaFace", "age", "gender", "embed"} <= labels
    assert set(analyzer.runtime.active.values()) == {"CPUExecutionProvider"}
    logs.clear()
    FaceAnalyzer(detector="mtcnn", stages=("embed",), providers=("cuda", "cpu"))
    assert not [r for r in logs.records if r.levelno >= logging.WARNING]


def test_finite_output_passes_good_values_through():
    values = np.ones((2, 3), np.float32)
    assert runtime.finite_output(values, "m") is values
    assert runtime.finite_output(np.array([1, 2]), "m").dtype.kind == "i"
    for bad, message in ((np.zeros((1, 0)), "empty"), (np.array([1.0, np.inf]), "NaN")):
        with pytest.raises(ModelError, match=f"^m: .*{message}"):
            runtime.finite_output(bad, "m")


def test_an_empty_frame_still_gets_an_empty_embedding(tmp_path):
    embedder = DlibEmbedder(model_path=_dlib_like(tmp_path / "ok.onnx"), model_id="x")
    faces = Faces.empty()
    faces.landmarks68 = np.zeros((0, 68, 2), np.float32)
    assert embedder(np.zeros((50, 50, 3), np.uint8), faces).embedding.shape == (0, 128)
