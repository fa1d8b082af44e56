"""ONNX embedders by explicit spec: validation, preprocessing, the stage, real MobileFace
models in the analyzer and on the command line."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import ROOT, load_bgr, shared_file, shared_model
from mobileface.stages.embed import create_embedder
from mobileface.stages.embed.onnx import OnnxEmbedder
from mobileface.stages.embed.spec import EmbedderSpec, load_spec, save_spec
from mobileface.errors import ModelError
from mobileface.types import Faces
from scripts import load_script

# ---------------------------------------------------------------------------
# A tiny synthetic model: the mean of each input channel (N, C, S, S) -> (N, C)


def _mean_model(path, channels=3, size=16, batch="N"):
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["y"], axis=1)]
    graph = helper.make_graph(
        nodes, "channel_means",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, channels, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, channels])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _spec(tmp_path, **changes):
    data = {"name": "means", "model": "means.onnx", "input_size": 16, "color": "rgb",
            "mean": 0, "std": 1, "align": "arcface"}
    data.update(changes)
    return data


def _face(kps_scale=1.0, centre=(100.0, 100.0)):
    """One face whose kps5 sit on the ArcFace template around ``centre``."""
    from mobileface.stages.align import ARCFACE_TEMPLATE_112

    kps = (ARCFACE_TEMPLATE_112 - 56) * kps_scale + np.array(centre)
    return Faces(boxes=[[50, 50, 150, 150]], scores=[0.9], kps5=kps[None].astype(np.float32))


@pytest.fixture
def means_onnx(tmp_path):
    return _mean_model(tmp_path / "means.onnx")


def test_colour_order_and_normalisation_reach_the_model(tmp_path, means_onnx):
    image = np.zeros((200, 200, 3), np.uint8)
    image[:] = (10, 20, 30)                                     # B, G, R
    for color, expected in (("rgb", [30, 20, 10]), ("bgr", [10, 20, 30])):
        embedder = create_embedder(EmbedderSpec.from_dict(_spec(tmp_path, color=color),
                                                          base=tmp_path))
        faces = embedder(image, _face())
        np.testing.assert_allclose(faces.embedding, [expected], atol=1e-4)
    spec = _spec(tmp_path, color="rgb", mean=[30, 10, 0], std=[2, 5, 10], normalize="none")
    faces = create_embedder(EmbedderSpec.from_dict(spec, base=tmp_path))(image, _face())
    np.testing.assert_allclose(faces.embedding, [[0, 2, 1]], atol=1e-4)
    spec = _spec(tmp_path, normalize="l2")
    faces = create_embedder(EmbedderSpec.from_dict(spec, base=tmp_path))(image, _face())
    np.testing.assert_allclose(faces.embedding, [np.array([30, 20, 10]) / np.sqrt(1400)], atol=1e-6)


def test_gray_uses_opencv_conversion(tmp_path):
    import cv2

    _mean_model(tmp_path / "gray.onnx", channels=1)
    image = np.zeros((200, 200, 3), np.uint8)
    image[:] = (10, 200, 90)
    spec = _spec(tmp_path, model="gray.onnx", color="gray", mean=127.5, std=127.5)
    faces = create_embedder(EmbedderSpec.from_dict(spec, base=tmp_path))(image, _face())
    grey = cv2.cvtColor(image[:1, :1], cv2.COLOR_BGR2GRAY)[0, 0]
    np.testing.assert_allclose(faces.embedding, [[(grey - 127.5) / 127.5]], atol=1e-5)


def test_chips_follow_the_alignment(tmp_path, means_onnx):
    """The chip is cut where the spec says: a bright square around the face's points
    fills an ArcFace chip, but only the centre of a dlib-padded or template chip."""
    image = np.zeros((400, 400, 3), np.uint8)
    image[150:250, 150:250] = 255
    faces = _face(kps_scale=100 / 112, centre=(200, 200))      # the square is the 112 chip
    arc = create_embedder(EmbedderSpec.from_dict(_spec(tmp_path), base=tmp_path))
    assert arc.chips(image, faces).mean() > 220                 # (edges blur at 16 px)
    eyes_mouth = np.array([[0.25, 0.25], [0.75, 0.25], [0.5, 0.75]])
    wide = dict(method="template", template=(eyes_mouth * 0.5 + 0.25).tolist(), units="fraction",
                points="eyes_mouth", transform="affine")
    chips = create_embedder(EmbedderSpec.from_dict(_spec(tmp_path, align=wide),
                                                   base=tmp_path)).chips(image, faces)
    assert 0.1 * 255 < chips.mean() < 0.6 * 255                # the square fills only the middle
    assert chips[0, 8, 8].max() > 200 and chips[0, 0, 0].max() == 0


def test_affine_template_maps_points_exactly():
    from mobileface.stages.embed.spec import Alignment

    align = Alignment.from_value({"method": "template", "template": [[0.3, 0.3], [0.7, 0.3],
                                                                      [0.5, 0.8]],
                                  "units": "fraction", "points": "eyes_mouth",
                                  "transform": "affine"}, ROOT)
    rng = np.random.default_rng(1)
    kps = rng.uniform(50, 150, size=(4, 5, 2))
    faces = Faces(boxes=np.zeros((4, 4)), scores=np.ones(4), kps5=kps)
    m = align.transforms(faces, 100)
    src = np.stack([kps[:, 0], kps[:, 1], (kps[:, 3] + kps[:, 4]) / 2], 1)
    mapped = np.einsum("nij,nkj->nki", m[:, :, :2], src) + m[:, None, :, 2]
    np.testing.assert_allclose(mapped, np.broadcast_to([[30, 30], [70, 30], [50, 80]], (4, 3, 2)),
                               atol=1e-9)


def test_batched_and_fixed_batch_models_agree(tmp_path):
    _mean_model(tmp_path / "means.onnx")
    _mean_model(tmp_path / "one.onnx", batch=1)
    rng = np.random.default_rng(2)
    image = rng.integers(0, 255, (300, 300, 3), np.uint8)
    faces = Faces(boxes=np.zeros((3, 4)), scores=np.ones(3),
                  kps5=np.concatenate([_face(c, (150, 150)).kps5 for c in (0.5, 0.8, 1.0)]))
    a = create_embedder(EmbedderSpec.from_dict(_spec(tmp_path), base=tmp_path))
    b = create_embedder(EmbedderSpec.from_dict(_spec(tmp_path, model="one.onnx"), base=tmp_path))
    assert b.batch_one and not a.batch_one
    ea, eb = a(image, faces).embedding.copy(), b(image, faces).embedding
    assert ea.shape == (3, 3) and np.abs(ea - eb).max() < 1e-5
    assert len(set(map(tuple, np.round(ea, 3)))) == 3          # three different chips


def test_model_id_names_model_and_preprocessing(tmp_path, means_onnx):
    from mobileface.models.registry import sha256_file

    base = create_embedder(EmbedderSpec.from_dict(_spec(tmp_path), base=tmp_path))
    name, model_hash, prep = base.model_id.split(":")
    assert name == "means" and model_hash == sha256_file(means_onnx)[:16] and len(prep) == 8
    other = create_embedder(EmbedderSpec.from_dict(_spec(tmp_path, color="bgr"), base=tmp_path))
    assert other.model_id != base.model_id                      # same file, other chips
    same = create_embedder(EmbedderSpec.from_dict(_spec(tmp_path), base=tmp_path))
    assert same.model_id == base.model_id


def test_empty_frame_and_missing_points(tmp_path, means_onnx):
    embedder = create_embedder(EmbedderSpec.from_dict(_spec(tmp_path), base=tmp_path))
    empty = Faces(boxes=np.zeros((0, 4)), scores=np.zeros(0), kps5=np.zeros((0, 5, 2)))
    faces = embedder(np.zeros((50, 50, 3), np.uint8), empty)
    assert faces.embedding.shape == (0, 3)
    with pytest.raises(ValueError, match="kps5"):
        embedder(np.zeros((50, 50, 3), np.uint8), Faces(boxes=[[0, 0, 9, 9]], scores=[1]))
    extra = dict(method="template", template=[[0.3, 0.3], [0.7, 0.3], [0.5, 0.8]],
                 units="fraction", points="eyes_mouth", transform="similarity",
                 source="landmarks_eme")
    needs_column = create_embedder(EmbedderSpec.from_dict(_spec(tmp_path, align=extra),
                                                          base=tmp_path))
    with pytest.raises(ValueError, match="landmarks_eme"):
        needs_column(np.zeros((50, 50, 3), np.uint8), _face(0.2, (25, 25)))


def test_spec_json_round_trip_and_create_embedder_forms(tmp_path, means_onnx, monkeypatch):
    spec = EmbedderSpec.from_dict(_spec(tmp_path, sha256=None, cosine_threshold=0.4), base=tmp_path)
    path = save_spec(spec, tmp_path / "means.json")
    assert json.loads(path.read_text())["model"] == "means.onnx"   # relative to the spec
    assert load_spec(path) == spec
    monkeypatch.chdir(tmp_path)
    for form in (str(path), path, spec, _spec(tmp_path)):
        assert isinstance(create_embedder(form), OnnxEmbedder)
    with pytest.raises(ValueError, match="unknown embedder"):
        create_embedder("arcface-r100")


BAD_FIELDS = [
    ({"colour": "rgb"}, "unknown spec field"),
    ({"color": "yuv"}, "color"),
    ({"mean": [1, 2]}, "mean"),
    ({"std": 0}, "std"),
    ({"std": "1"}, "std"),
    ({"input_size": [112, 96]}, "square"),
    ({"input_size": 4}, "input_size"),
    ({"align": "mtcnn"}, "align.method"),
    ({"align": {"method": "dlib", "padding": -1}}, "padding"),
    ({"align": {"method": "template", "template": [[0.1, 0.1]], "units": "fraction",
                "points": "eyes_mouth", "transform": "affine"}}, "shape"),
    ({"align": {"method": "template", "template": [[0.3, 0.3], [0.7, 0.3], [0.5, 0.8]],
                "units": "fraction", "points": "eyes_mouth"}}, "align.transform"),
    ({"align": {"method": "template", "template": [[3, 3], [7, 3], [5, 8]], "units": "fraction",
                "points": "eyes_mouth", "transform": "affine"}}, r"\[0, 1\]"),
    ({"align": {"method": "template", "template": [[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]],
                "units": "fraction", "points": "eyes_mouth", "transform": "affine"}}, "collinear"),
    ({"normalize": "unit"}, "normalize"),
    ({"sha256": "abc"}, "sha256"),
    ({"cosine_threshold": 2}, "cosine_threshold"),
    ({"name": "a:b"}, "name"),
]


@pytest.mark.parametrize("change,message", BAD_FIELDS)
def test_bad_spec_fields_raise_value_error(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        EmbedderSpec.from_dict(_spec(tmp_path, **change), base=tmp_path)


def test_missing_field_and_bad_files(tmp_path, means_onnx):
    data = _spec(tmp_path)
    del data["align"]
    with pytest.raises(ValueError, match="'align' is required"):
        EmbedderSpec.from_dict(data)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_spec(bad_json)
    with pytest.raises(ValueError, match="cannot read"):
        load_spec(tmp_path / "absent.json")
    # a pickled (object) template is refused: templates are read without pickle
    np.save(tmp_path / "evil.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    template = dict(method="template", template="evil.npy", units="fraction",
                    points="eyes_mouth", transform="affine")
    with pytest.raises(ValueError, match="without pickle"):
        EmbedderSpec.from_dict(_spec(tmp_path, align=template), base=tmp_path)


def test_model_problems_raise_model_error(tmp_path, means_onnx):
    with pytest.raises(ModelError, match="does not exist"):
        create_embedder(EmbedderSpec.from_dict(_spec(tmp_path, model="nope.onnx"), base=tmp_path))
    with pytest.raises(ModelError, match="sha256"):
        create_embedder(EmbedderSpec.from_dict(_spec(tmp_path, sha256="0" * 64), base=tmp_path))
    with pytest.raises(ModelError, match="shape"):                  # a 16 px model, 32 px spec
        create_embedder(EmbedderSpec.from_dict(_spec(tmp_path, input_size=32), base=tmp_path))
    with pytest.raises(ModelError, match="shape"):                  # 3 channels, gray spec
        create_embedder(EmbedderSpec.from_dict(_spec(tmp_path, color="gray"), base=tmp_path))
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError):
        create_embedder(EmbedderSpec.from_dict(_spec(tmp_path, model="junk.onnx"), base=tmp_path))


# ---------------------------------------------------------------------------
# MobileFace's converted models, end to end


@pytest.fixture(scope="module")
def mobileface_specs(tmp_path_factory):
    """MobileFace V1-V3 converted into a temporary folder, with their spec files."""
    folder = tmp_path_factory.mktemp("mobileface")
    template = shared_model("mobileface/mobileface_align_v1.npy")
    main = load_script("tools/convert_mxnet.py").main
    specs = {}
    for v, shape in (("1", "1,1,100,100"), ("2", "1,3,112,112"), ("3", "1,3,112,112")):
        extra = ["--align-template", str(template)] if v == "1" else []
        out = folder / f"mobileface_v{v}.onnx"
        assert main(["--symbol", str(shared_model(f"mobileface/MobileFace_Identification_V{v}-symbol.json")),
                     "--params", str(shared_model(f"mobileface/MobileFace_Identification_V{v}-0000.params")),
                     "--input-shape", shape, "-o", str(out), "--spec-preset", f"mobileface-v{v}",
                     *extra]) == 0
        specs[f"v{v}"] = out.with_suffix(".json")
    return specs


def test_converter_writes_a_matching_spec(mobileface_specs):
    spec = load_spec(mobileface_specs["v1"])
    assert (spec.name, spec.input_size, spec.color, spec.mean, spec.std) == \
        ("mobileface_v1", 100, "gray", (127.5,), (127.5,))
    template = np.load(shared_model("mobileface/mobileface_align_v1.npy"), allow_pickle=False)
    np.testing.assert_allclose(spec.align.template, template, atol=1e-6)
    v2 = load_spec(mobileface_specs["v2"])
    assert (v2.input_size, v2.color, v2.mean, v2.align.method) == (112, "rgb", (0.0,) * 3, "arcface")
    assert v2.sha256 and v2.cosine_threshold is not None


def test_converter_spec_errors(tmp_path):
    main = load_script("tools/convert_mxnet.py").main
    args = ["--symbol", str(shared_model("mobileface/MobileFace_Identification_V1-symbol.json")),
            "--params", str(shared_model("mobileface/MobileFace_Identification_V1-0000.params")),
            "--input-shape", "1,1,100,100", "-o", str(tmp_path / "v1.onnx")]
    assert main([*args, "--spec-preset", "mobileface-v1"]) == 1          # no template given
    assert main([*args, "--spec", "--color", "gray"]) == 1                # mean, std, align missing
    assert list(tmp_path.iterdir()) == []                                 # nothing written


@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
def test_mobileface_embedders_tell_people_apart(version, mobileface_specs):
    from mobileface.detect import create_detector

    embedder = create_embedder(mobileface_specs[version])
    detector = create_detector("retinaface")
    emb = {}
    for name in ("obama.jpg", "obama2.jpg", "biden.jpg"):
        image = load_bgr(f"face_recognition/{name}")
        faces = embedder(image, detector.detect(image))
        assert faces.embedding.shape == (1, 256) and faces.embedding.dtype == np.float32
        emb[name] = faces.embedding[0]
    same = float(emb["obama.jpg"] @ emb["obama2.jpg"])
    other = float(emb["obama.jpg"] @ emb["biden.jpg"])
    assert same > other + 0.2, (same, other)


def test_analyzer_with_a_converted_embedder(mobileface_specs):
    from mobileface import FaceAnalyzer

    analyzer = FaceAnalyzer(stages=["embed"], embedder=str(mobileface_specs["v2"]))
    faces = analyzer.analyze(load_bgr("mobileface/friends.jpg"))
    assert faces.embedding.shape == (6, 256)
    sim = faces.embedding @ faces.embedding.T
    assert (sim[~np.eye(6, dtype=bool)] < 0.38).all()   # six different people
    stage = analyzer.stages[-1]
    assert stage.model_id.startswith("mobileface_v2:")


def test_cli_with_embedder(mobileface_specs, capsys, tmp_path):
    from mobileface.cli.main import main

    obama = str(shared_file("face_recognition/obama.jpg"))
    obama2 = str(shared_file("face_recognition/obama2.jpg"))
    biden = str(shared_file("face_recognition/biden.jpg"))
    spec = str(mobileface_specs["v2"])
    assert main(["-q", "analyze", obama, "--json", "--embedder", spec]) == 0
    record = json.loads(capsys.readouterr().out)
    assert len(record["faces"][0]["embedding"]) == 256
    assert main(["-q", "verify", obama, obama2, "--json", "--embedder", spec]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["same_person"] is True and result["metric"] == "similarity"
    assert result["model_id"].startswith("mobileface_v2:")
    assert main(["-q", "verify", obama, biden, "--json", "--embedder", spec]) == 0
    assert json.loads(capsys.readouterr().out)["same_person"] is False
    data = json.loads(mobileface_specs["v2"].read_text())
    data.pop("cosine_threshold")
    data["model"] = str(mobileface_specs["v2"].with_suffix(".onnx"))
    no_threshold = tmp_path / "no_threshold.json"
    no_threshold.write_text(json.dumps(data))
    assert main(["verify", obama, obama2, "--embedder", str(no_threshold)]) == 2
    assert "give --threshold" in capsys.readouterr().err
    assert main(["-q", "verify", obama, obama2, "--json", "--embedder", str(no_threshold),
                 "--threshold", "0.3"]) == 0
    assert json.loads(capsys.readouterr().out)["threshold"] == 0.3
    assert main(["verify", obama, obama2, "--embedder", str(no_threshold),
                 "--threshold", "1.5"]) == 2
    assert "[-1, 1]" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "model": "x.onnx", "input_size": 112, "color": "rgb",
                               "mean": 0, "std": 1, "align": "sideways"}))
    assert main(["verify", obama, biden, "--embedder", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "align.method" in err and err.count("\n") == 1 and "Traceback" not in err
