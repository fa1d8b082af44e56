"""MobileFace's non-network models: the pickled pose matrix (read without executing
pickles), the 3-point dlib landmark models and the alignment template."""
from __future__ import annotations

import os
import pickle

import cv2
import numpy as np
import pytest

from conftest import load_bgr, shared_file, shared_model
from mobileface.models import safe_pickle
from mobileface.errors import ModelError
from mobileface.types import Faces

# ---------------------------------------------------------------------------
# The restricted pickle reader


class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


@pytest.mark.parametrize("protocol", range(0, 6))
def test_pickle_that_calls_os_system_is_refused_and_not_run(protocol, tmp_path):
    marker = tmp_path / "was-run"
    payload = pickle.dumps(_Evil(os.system, f"touch {marker}"), protocol=protocol)
    with pytest.raises(safe_pickle.PickleRefused, match="system") as info:
        safe_pickle.loads(payload)
    assert "nothing in it was executed" in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("func", [eval, exec, getattr, __import__])
def test_other_builtins_are_refused(func):
    with pytest.raises(safe_pickle.PickleRefused):
        safe_pickle.loads(pickle.dumps(_Evil(func, "1"), protocol=4))


def test_numpy_globals_cannot_be_abused(tmp_path):
    # An allowed global called with the wrong arguments, BUILD on a list, and an
    # object array (whose items are pickles) are all refused.
    crafted = (b"\x80\x04cnumpy.core.multiarray\n_reconstruct\n"
               b"cos\nsystem\n\x85R.")
    with pytest.raises(safe_pickle.PickleRefused, match="os.system"):
        safe_pickle.loads(crafted)
    with pytest.raises(safe_pickle.PickleRefused):
        safe_pickle.loads(b"\x80\x04]K\x01b.")                       # BUILD on a list
    with pytest.raises(safe_pickle.PickleRefused):
        safe_pickle.loads(pickle.dumps(np.array([1, None], dtype=object), protocol=4))
    with pytest.raises(safe_pickle.PickleRefused):
        safe_pickle.loads(pickle.dumps(np.zeros(2, dtype=[("a", "f4"), ("b", "i4")]), protocol=4))


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_numpy_arrays_and_plain_data_are_read(protocol):
    arrays = [np.arange(12, dtype=">f4").reshape(3, 4), np.asfortranarray(np.eye(3) * 2.5),
              np.arange(5, dtype=np.int64), np.zeros((0, 3)), np.array([1 + 2j])]
    for array in arrays:
        got = safe_pickle.loads(pickle.dumps(array, protocol=protocol))
        assert got.dtype == array.dtype and got.shape == array.shape
        np.testing.assert_array_equal(got, array)
    value = {"a": [1, 2.5, (3, None, True)], "b": b"x", "c": "text"}
    assert safe_pickle.loads(pickle.dumps(value, protocol=protocol)) == value


@pytest.mark.parametrize("data", [b"", b"\x80\x03]q\x00(G?", b"not a pickle",
                                  b"\x80\x03]q\x00(G?\xf0\x00\x00\x00\x00\x00\x00e"])
def test_truncated_or_garbage_pickles_are_refused(data):
    with pytest.raises(safe_pickle.PickleRefused):
        safe_pickle.loads(data)


# ---------------------------------------------------------------------------
# The pose regressor


@pytest.fixture(scope="module")
def pose_stage():
    from mobileface.stages.pose.mobileface import MobileFacePose

    return MobileFacePose(shared_model("mobileface/mobileface_pose_emnme_v1.dat"))


def test_pose_matrix_is_read_without_unpickling(pose_stage):
    assert pose_stage.matrix.shape == (3, 11) and pose_stage.matrix.dtype == np.float64
    data = shared_model("mobileface/mobileface_pose_emnme_v1.dat").read_bytes()
    assert data[:2] == b"\x80\x03"            # a real pickle (protocol 3) of nested lists
    assert np.isclose(pose_stage.matrix[0, 0], 0.00211993, atol=1e-8)


def test_pose_scores_follow_mobileface_formula(pose_stage):
    from mobileface.stages.pose.mobileface import pose_scores

    rng = np.random.default_rng(3)
    kps = rng.uniform(0, 200, size=(6, 5, 2))
    got = pose_scores(pose_stage.matrix, kps)
    for k, row in zip(kps, got):                   # one face at a time, plain Python
        top, bottom = min(p[1] for p in k), max(p[1] for p in k)
        cx, cy = sum(p[0] for p in k) / 5, sum(p[1] for p in k) / 5
        feats = []
        for x, y in k:
            feats += [int((x - cx) / (bottom - top) * 100), int((y - cy) / (bottom - top) * 100)]
        feats.append(1)
        expected = [100 * sum(m * f for m, f in zip(mrow, feats)) for mrow in pose_stage.matrix]
        np.testing.assert_allclose(row, expected, rtol=1e-12, atol=1e-9)
    flat = kps[:1].copy()
    flat[:, :, 1] = 50
    assert np.isnan(pose_scores(pose_stage.matrix, flat)).all()


def test_pose_scores_on_real_faces(pose_stage):
    """A frontal face scores near zero yaw; a turned one scores with the sign of the
    solvePnP yaw, and its mirror image with the opposite sign."""
    from mobileface.detect import create_detector

    detector = create_detector("retinaface")

    def yaw(image):
        faces = pose_stage(image, detector.detect(image)[[0]])
        return float(faces.extra["pose_mobileface"][0, 0])

    frontal = load_bgr("face_recognition/obama.jpg")       # solvePnP yaw about +2
    turned = load_bgr("face_recognition/obama2.jpg")       # solvePnP yaw about -27
    assert abs(yaw(frontal)) < 15
    assert yaw(turned) < -20
    assert yaw(cv2.flip(turned, 1)) > 20
    empty = Faces(boxes=np.zeros((0, 4)), scores=np.zeros(0), kps5=np.zeros((0, 5, 2)))
    assert pose_stage(frontal, empty).extra["pose_mobileface"].shape == (0, 3)


def test_bad_pose_files(tmp_path):
    from mobileface.stages.pose.mobileface import load_pose_matrix

    wrong = tmp_path / "wrong.dat"
    wrong.write_bytes(pickle.dumps([[1.0, 2.0]], protocol=3))
    with pytest.raises(ModelError, match="3 x 11"):
        load_pose_matrix(wrong)
    with pytest.raises(ModelError):
        load_pose_matrix(tmp_path / "absent.dat")


# ---------------------------------------------------------------------------
# The 3-point landmark models and the alignment template


@pytest.mark.parametrize("name,third", [("eme", "mouth"), ("ene", "nose")])
def test_three_point_landmark_models(name, third):
    from mobileface.detect import create_detector
    from mobileface.stages.landmarks.shape_predictor import ShapePredictorLandmarks

    stage = ShapePredictorLandmarks(shared_model(f"mobileface/mobileface_landmark_{name}_v1.dat"),
                                    column=f"landmarks_{name}")
    assert stage.num_points == 3
    detector = create_detector("retinaface")
    points, kps = [], []
    for name_ in ("obama.jpg", "obama2.jpg", "biden.jpg", "two_people.jpg",
                  "lin-manuel-miranda.png", "alex-lacamoire.png"):
        image = load_bgr(f"face_recognition/{name_}")
        faces = stage(image, detector.detect(image))
        assert faces.extra[f"landmarks_{name}"].shape == (len(faces), 3, 2)
        assert faces.landmarks68 is None
        points.append(faces.extra[f"landmarks_{name}"])
        kps.append(faces.kps5)
    points, kps = np.concatenate(points), np.concatenate(kps)
    assert len(points) == 7
    ref = np.stack([kps[:, 0], kps[:, 1], (kps[:, 3] + kps[:, 4]) / 2 if third == "mouth"
                    else kps[:, 2]], 1)
    eye_distance = np.linalg.norm(kps[:, 1] - kps[:, 0], axis=1)
    error = np.linalg.norm(points - ref, axis=2).mean(1) / eye_distance
    assert np.median(error) < 0.1, error


def test_three_point_model_cannot_fill_landmarks68():
    from mobileface.stages.landmarks.shape_predictor import ShapePredictorLandmarks

    path = shared_model("mobileface/mobileface_landmark_eme_v1.dat")
    with pytest.raises(ValueError, match="3 points"):
        ShapePredictorLandmarks(path, column="landmarks68")
    assert ShapePredictorLandmarks(path).column == "landmarks3"


def test_alignment_template_marks_the_lfw_crops():
    """mobileface_align_v1.npy holds the eyes and mouth centre as fractions of the chip
    side: in the 100x100 LFW-Aligned crops the detector finds them there."""
    import glob

    from mobileface.detect import create_detector

    template = np.load(shared_model("mobileface/mobileface_align_v1.npy"), allow_pickle=False)
    assert template.shape == (3, 2) and template.dtype == np.float32
    folder = shared_file("mobileface/LFW-Aligned-100Pair/Aaron_Sorkin/Aaron_Sorkin_0001.jpg").parents[1]
    detector = create_detector("retinaface", input_size=320)
    found = []
    for path in sorted(glob.glob(str(folder / "*" / "*.jpg")))[:30]:
        crop = cv2.copyMakeBorder(cv2.imread(path), 60, 60, 60, 60, cv2.BORDER_CONSTANT)
        kps = detector.detect(crop).kps5[0] - 60
        found.append([kps[0], kps[1], (kps[3] + kps[4]) / 2])
    median = np.median(np.array(found), axis=0)
    assert np.abs(median - template * 100).max() < 3.0, median


def test_embedder_aligned_from_a_landmark_column(tmp_path):
    """MobileFace V1 on chips aligned from the eme model's points instead of kps5."""
    from mobileface.convert import mxnet
    from mobileface.detect import create_detector
    from mobileface.stages.embed import create_embedder
    from mobileface.stages.landmarks.shape_predictor import ShapePredictorLandmarks

    model = mxnet.convert(shared_model("mobileface/MobileFace_Identification_V1-symbol.json"),
                          shared_model("mobileface/MobileFace_Identification_V1-0000.params"),
                          "1,1,100,100")
    mxnet.save(model, tmp_path / "v1.onnx")
    embedder = create_embedder({
        "name": "v1_eme", "model": str(tmp_path / "v1.onnx"), "input_size": 100, "color": "gray",
        "mean": 127.5, "std": 127.5, "normalize": "l2",
        "align": {"method": "template", "units": "fraction", "points": "eyes_mouth",
                  "transform": "similarity", "source": "landmarks_eme",
                  "template": str(shared_model("mobileface/mobileface_align_v1.npy"))}})
    assert embedder.requires == ()
    landmarks = ShapePredictorLandmarks(shared_model("mobileface/mobileface_landmark_eme_v1.dat"),
                                        column="landmarks_eme")
    detector = create_detector("retinaface")
    emb = {}
    for name in ("obama.jpg", "obama2.jpg", "biden.jpg"):
        image = load_bgr(f"face_recognition/{name}")
        emb[name] = embedder(image, landmarks(image, detector.detect(image))).embedding[0]
    assert emb["obama.jpg"] @ emb["obama2.jpg"] > emb["obama.jpg"] @ emb["biden.jpg"] + 0.2


def test_analyze_runs_mobileface_landmark_and_pose_files(capsys):
    """A user runs MobileFace's own small models from the command line, beside ours."""
    import json

    from mobileface.cli.main import main

    image = shared_file("face_recognition/obama.jpg")
    eme = shared_model("mobileface/mobileface_landmark_eme_v1.dat")
    pose = shared_model("mobileface/mobileface_pose_emnme_v1.dat")
    code = main(["analyze", str(image), "--json", "--no-embedding",
                 "--shape-predictor", str(eme), "--mobileface-pose", str(pose)])
    assert code == 0
    (face,) = json.loads(capsys.readouterr().out)["faces"]
    points = np.array(face["landmarks_eme"])
    assert points.shape == (3, 2)
    x1, y1, x2, y2 = face["box"]
    assert ((points[:, 0] > x1) & (points[:, 0] < x2) & (points[:, 1] > y1)
            & (points[:, 1] < y2)).all()
    # Obama faces the camera: MobileFace's yaw score agrees in sign with solvePnP's yaw
    # only loosely, but both are small next to a turned face's
    assert len(face["pose_mobileface"]) == 3 and abs(face["pose_mobileface"][0]) < 40
    code = main(["analyze", str(image), "--shape-predictor", "/nonexistent.dat"])
    assert code == 2 and "does not exist" in capsys.readouterr().err
