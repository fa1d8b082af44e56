"""dlib face-recognition ResNet -> ONNX: parity with dlib, the embed stage, errors, cache."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, load_bgr
from mobileface.models import registry
from mobileface.convert import dlib_resnet
from mobileface.errors import ModelError

MEANS_RGB = np.array([122.782, 117.001, 104.298], np.float32)


@pytest.fixture(scope="module")
def dat_path():
    return registry.verified_path("dlib_resnet_v1")


@pytest.fixture(scope="module")
def onnx_session(dat_path):
    import onnxruntime as ort

    model = dlib_resnet.convert(dat_path)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def dlib_models(dat_path):
    dlib = pytest.importorskip("dlib")
    return (dlib.get_frontal_face_detector(),
            dlib.shape_predictor(str(registry.verified_path("dlib_shape_predictor_68"))),
            dlib.face_recognition_model_v1(str(dat_path)))


def _blob(chips_rgb: np.ndarray) -> np.ndarray:
    x = (chips_rgb.astype(np.float32) - MEANS_RGB) / 256.0
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _astronaut_rgb():
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def _photo_rgb(name: str):
    return np.ascontiguousarray(load_bgr(f"face_recognition/{name}")[:, :, ::-1])


@pytest.mark.parametrize("source", ["astronaut", "obama.jpg", "biden.jpg", "two_people.jpg"])
def test_matches_dlib_descriptor(source, dlib_models, onnx_session):
    import dlib

    detector, predictor, recogniser = dlib_models
    img = _astronaut_rgb() if source == "astronaut" else _photo_rgb(source)
    rects = detector(img, 1)
    assert len(rects) >= 1
    chips = np.stack([np.asarray(dlib.get_face_chip(img, predictor(img, r), 150, 0.25))
                      for r in rects])
    expected = np.stack([np.asarray(recogniser.compute_face_descriptor(chip)) for chip in chips])
    got = onnx_session.run(None, {"images": _blob(chips)})[0]
    assert got.shape == (len(chips), 128) and got.dtype == np.float32
    diff = np.abs(got - expected).max()
    assert diff <= 1e-5, f"max abs diff {diff:.3g}"
    # batch-independent: one face at a time gives the same numbers
    single = onnx_session.run(None, {"images": _blob(chips[:1])})[0]
    assert np.abs(single[0] - got[0]).max() <= 1e-5


@pytest.fixture(scope="module")
def face_pipeline():
    from mobileface.detect import create_detector
    from mobileface.stages.embed.dlib_resnet import DlibEmbedder
    from mobileface.stages.landmarks.dlib68 import Landmarks68

    return create_detector("retinaface"), Landmarks68(), DlibEmbedder()


def _embed(pipeline, name: str) -> np.ndarray:
    detector, landmarks, embedder = pipeline
    bgr = load_bgr(f"face_recognition/{name}")
    faces = embedder(bgr, landmarks(bgr, detector.detect(bgr)))
    assert len(faces) == 1
    assert faces.embedding.shape == (1, 128) and faces.embedding.dtype == np.float32
    return faces.embedding[0]


def test_embedder_same_and_different_person(face_pipeline):
    from mobileface.stages.embed.dlib_resnet import DISTANCE_THRESHOLD

    obama, obama2, biden = (_embed(face_pipeline, n) for n in ("obama.jpg", "obama2.jpg", "biden.jpg"))
    assert DISTANCE_THRESHOLD == 0.6
    assert np.linalg.norm(obama - obama2) < DISTANCE_THRESHOLD
    assert np.linalg.norm(obama - biden) > DISTANCE_THRESHOLD


def test_embedder_no_faces(face_pipeline):
    from mobileface.types import Faces

    _, _, embedder = face_pipeline
    faces = Faces(boxes=np.zeros((0, 4)), scores=np.zeros(0), landmarks68=np.zeros((0, 68, 2)))
    embedder(np.zeros((100, 100, 3), np.uint8), faces)
    assert faces.embedding.shape == (0, 128)


@pytest.mark.parametrize("damage", ["truncated", "cut_to_header", "flipped_byte", "trailing", "empty"])
def test_damaged_file_raises_model_error(damage, dat_path, tmp_path):
    data = bytearray(dat_path.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "cut_to_header":
        data = data[:100]
    elif damage == "flipped_byte":
        data[1] ^= 0x40        # the add_loss_layer version
    elif damage == "trailing":
        data += b"\x00"
    else:
        data = bytearray()
    bad = tmp_path / "bad.dat"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelError) as info:
        dlib_resnet.convert(bad)
    assert "\n" not in str(info.value)


def test_wrong_layer_name_raises_model_error(dat_path, tmp_path):
    data = dat_path.read_bytes()
    bad = tmp_path / "bad.dat"
    bad.write_bytes(data.replace(b"max_pool_2", b"max_pool_9", 1))
    with pytest.raises(ModelError, match="max_pool_2"):
        dlib_resnet.convert(bad)


def test_missing_file_raises_model_error(tmp_path):
    with pytest.raises(ModelError):
        dlib_resnet.convert(tmp_path / "absent.dat")
    with pytest.raises(ModelError):
        dlib_resnet.converted_model_path(tmp_path / "absent.dat")


def test_converted_model_is_cached(monkeypatch, tmp_path, dat_path):
    monkeypatch.setenv("MOBILEFACE_CACHE", str(tmp_path))
    first = dlib_resnet.converted_model_path()
    digest = registry.sha256_file(dat_path)
    assert first == tmp_path / f"dlib_resnet_v1-{digest[:16]}.onnx"
    assert first.is_file()
    record = registry.record_path(first)                            # its sha256 record
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name, record.name]  # no temp
    assert registry.check_cached(first, source_sha256=digest) == "ok"
    stamp = first.stat().st_mtime_ns

    calls = []
    monkeypatch.setattr(dlib_resnet, "convert", lambda *a: calls.append(a))
    second = dlib_resnet.converted_model_path()
    assert second == first
    assert first.stat().st_mtime_ns == stamp
    assert calls == []


def test_cli_writes_model(tmp_path):
    import onnx

    out = tmp_path / "dlib.onnx"
    result = subprocess.run([sys.executable, "tools/dlib_to_onnx.py", "-o", str(out)],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    model = onnx.load(str(out))
    assert [i.name for i in model.graph.input] == ["images"]
    assert [o.name for o in model.graph.output] == ["embedding"]


def test_cli_error_is_one_line(tmp_path):
    bad = tmp_path / "bad.dat"
    bad.write_bytes(b"\x01\x01garbage")
    env = dict(os.environ, PYTHONPATH="")
    result = subprocess.run([sys.executable, "tools/dlib_to_onnx.py", "--dat", str(bad),
                             "-o", str(tmp_path / "x.onnx")],
                            cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_damaged_cache_file_is_converted_again(monkeypatch, tmp_path, caplog):
    from mobileface.stages.embed.dlib_resnet import DlibEmbedder

    monkeypatch.setenv("MOBILEFACE_CACHE", str(tmp_path))
    cached = DlibEmbedder().model_path
    good = cached.read_bytes()
    cached.write_bytes(good[: len(good) // 3])  # e.g. a full disk
    embedder = DlibEmbedder()
    assert embedder.model_path.read_bytes() == good
    assert "converting again" in caplog.text


def test_unwritable_cache_is_a_clear_error(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MOBILEFACE_CACHE", str(blocker / "cache"))
    with pytest.raises(ModelError, match="MOBILEFACE_CACHE"):
        dlib_resnet.converted_model_path()
