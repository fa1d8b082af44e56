"""Our numpy ERT shape predictor (mobileface.stages.landmarks.ert) against dlib.shape_predictor on real faces."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import load_bgr
from mobileface.models import registry
from mobileface.errors import ModelError

SHARED_PHOTOS = [
    "face_recognition/obama.jpg",
    "face_recognition/two_people.jpg",
    "face_recognition/biden.jpg",
    "mobileface/friends.jpg",
]


@pytest.fixture(scope="module")
def model_path():
    return registry.verified_path("dlib_shape_predictor_68")


@pytest.fixture(scope="module")
def ours(model_path):
    from mobileface.stages.landmarks.ert import load_shape_predictor

    return load_shape_predictor(model_path)


@pytest.fixture(scope="module")
def reference(model_path):
    dlib = pytest.importorskip("dlib")
    return dlib, dlib.shape_predictor(str(model_path))


@pytest.fixture(scope="module")
def detector():
    from mobileface.detect import create_detector

    return create_detector("retinaface")


def predictor_rects(detector, image: np.ndarray) -> np.ndarray:
    """RetinaFace boxes mapped and rounded exactly as mobileface.stages.landmarks.dlib68 does."""
    from mobileface.stages.landmarks.dlib68 import predictor_boxes

    faces = detector.detect(image)
    assert len(faces) > 0
    return np.round(predictor_boxes(faces.boxes)).astype(int)


def dlib_points(reference, image: np.ndarray, rects: np.ndarray) -> np.ndarray:
    dlib, predictor = reference
    return np.array([[(p.x, p.y) for p in predictor(image, dlib.rectangle(*map(int, r))).parts()]
                     for r in rects], np.float32)


def assert_matches_dlib(ours, reference, image, rects):
    got = ours.predict(image, rects)
    want = dlib_points(reference, image, rects)
    assert got.shape == want.shape == (len(rects), 68, 2)
    assert got.dtype == np.float32
    diff = np.abs(got - want)
    # We follow dlib's float32 arithmetic step for step (same rounding of the
    # feature pixels, leaf vectors added in the same order), so the points are
    # the same whole pixels, not merely close.
    assert diff.mean() < 0.05 and diff.max() < 0.5, (diff.mean(), diff.max())
    np.testing.assert_array_equal(got, want)
    return got


def test_model_layout(ours):
    assert ours.num_parts == 68
    assert (ours.num_levels, ours.num_trees, ours.depth, ours.num_features) == (15, 500, 4, 500)


def test_astronaut_matches_dlib(ours, reference, detector, astronaut_bgr):
    rects = predictor_rects(detector, astronaut_bgr)
    assert_matches_dlib(ours, reference, astronaut_bgr, rects)


@pytest.mark.parametrize("photo", SHARED_PHOTOS)
def test_photos_match_dlib(ours, reference, detector, photo):
    image = load_bgr(photo)
    rects = predictor_rects(detector, image)
    assert_matches_dlib(ours, reference, image, rects)


def test_batch_equals_one_by_one(ours, detector):
    image = load_bgr("mobileface/friends.jpg")
    rects = predictor_rects(detector, image)
    assert len(rects) > 1
    batch = ours.predict(image, rects)
    single = np.concatenate([ours.predict(image, r[None]) for r in rects])
    np.testing.assert_array_equal(batch, single)


def test_boxes_off_the_image_and_odd_shapes_match_dlib(ours, reference, astronaut_bgr):
    """Feature pixels outside the image read 0 in dlib; boxes of any size and place."""
    h, w = astronaut_bgr.shape[:2]
    rng = np.random.default_rng(0)
    size = rng.uniform(20, 400, 40)
    x1, y1 = rng.uniform(-150, w, 40), rng.uniform(-150, h, 40)
    rects = np.round(np.stack([x1, y1, x1 + size * rng.uniform(0.6, 1.4, 40), y1 + size], 1))
    assert_matches_dlib(ours, reference, astronaut_bgr, rects.astype(int))


def test_channel_order_and_grey_give_the_same_points(ours, detector, astronaut_bgr):
    """dlib's intensity of a colour pixel is the integer channel mean: BGR == RGB == that grey."""
    rects = predictor_rects(detector, astronaut_bgr)
    bgr = ours.predict(astronaut_bgr, rects)
    rgb = ours.predict(np.ascontiguousarray(astronaut_bgr[:, :, ::-1]), rects)
    grey = (astronaut_bgr.astype(np.int32).sum(2) // 3).astype(np.uint8)
    np.testing.assert_array_equal(bgr, rgb)
    np.testing.assert_array_equal(bgr, ours.predict(grey, rects))


def test_unrounded_points_round_to_dlib_points(ours, detector, astronaut_bgr):
    rects = predictor_rects(detector, astronaut_bgr)
    exact = ours.predict(astronaut_bgr, rects, round=False)
    np.testing.assert_array_equal(np.floor(exact + 0.5), ours.predict(astronaut_bgr, rects))
    assert np.any(exact != np.round(exact))


def test_no_boxes(ours, astronaut_bgr):
    assert ours.predict(astronaut_bgr, np.zeros((0, 4))).shape == (0, 68, 2)


def test_rejects_non_uint8_images(ours):
    with pytest.raises(ValueError):
        ours.predict(np.zeros((10, 10, 3), np.float32), np.array([[0, 0, 5, 5]]))


def test_truncated_file_raises_model_error(model_path, tmp_path):
    from mobileface.stages.landmarks.ert import load_shape_predictor

    data = model_path.read_bytes()
    for cut in (len(data) // 2, len(data) - 3, 50):
        path = tmp_path / f"cut{cut}.dat"
        path.write_bytes(data[:cut])
        with pytest.raises(ModelError, match="truncated or corrupt"):
            load_shape_predictor(path)


def test_trailing_bytes_and_garbage_raise_model_error(model_path, tmp_path):
    from mobileface.stages.landmarks.ert import load_shape_predictor

    path = tmp_path / "extra.dat"
    path.write_bytes(model_path.read_bytes() + b"\x01\x02")
    with pytest.raises(ModelError):
        load_shape_predictor(path)
    path.write_bytes(b"not a model at all")
    with pytest.raises(ModelError):
        load_shape_predictor(path)
    with pytest.raises(ModelError):
        load_shape_predictor(tmp_path / "missing.dat")


def test_landmark_stage_gives_the_same_points_either_way(astronaut_bgr):
    """The stage runs dlib below BATCH_FROM faces and our predictor from there on."""
    from mobileface.detect import create_detector
    from mobileface.stages.landmarks.dlib68 import Landmarks68

    faces = create_detector("retinaface").detect(astronaut_bgr)[[0, 0, 0, 0, 0]]
    one_by_one = Landmarks68(batch_from=100)(astronaut_bgr, faces).landmarks68.copy()
    batched = Landmarks68(batch_from=1)(astronaut_bgr, faces).landmarks68
    np.testing.assert_array_equal(one_by_one, batched)


def test_the_decoded_model_is_cached_and_a_damaged_cache_is_decoded_again(
        ours, astronaut_bgr, tmp_path, monkeypatch, caplog):
    """The start-up cache of the 68-point model: arrays written once, the same points when
    loaded from them, and a cache file that no longer matches its record never used."""
    from mobileface.detect import create_detector
    from mobileface.stages.landmarks.ert import cached_shape_predictor

    monkeypatch.setenv("MOBILEFACE_CACHE", str(tmp_path))
    boxes = create_detector("retinaface").detect(astronaut_bgr).boxes
    expected = ours.predict(astronaut_bgr, boxes)
    first = cached_shape_predictor()
    cached = list(tmp_path.glob("dlib_shape_predictor_68-*.npz"))
    assert len(cached) == 1 and cached[0].with_name(cached[0].name + ".json").is_file()
    np.testing.assert_array_equal(first.predict(astronaut_bgr, boxes), expected)
    np.testing.assert_array_equal(cached_shape_predictor().predict(astronaut_bgr, boxes), expected)

    data = bytearray(cached[0].read_bytes())
    data[len(data) // 2] ^= 0xFF                     # one flipped byte in the leaf values
    cached[0].write_bytes(bytes(data))
    with caplog.at_level("WARNING"):
        again = cached_shape_predictor()
    assert "cannot be trusted" in caplog.text
    np.testing.assert_array_equal(again.predict(astronaut_bgr, boxes), expected)
    assert cached_shape_predictor().predict(astronaut_bgr, boxes).tolist() == expected.tolist()


def test_refitting_from_the_points_before_moves_them_towards_the_face(ours, astronaut_bgr):
    """Refitting (the last levels of the cascade, started from given points) brings points
    that start off the face closer to the full fit, and far closer than the same levels
    started from the mean shape: on video the start is the last frame's points moved with
    the track's forecast, and the refit follows the face from there."""
    from mobileface.detect import create_detector
    from mobileface.stages.landmarks.dlib68 import REFIT_LEVELS

    boxes = create_detector("retinaface").detect(astronaut_bgr).boxes
    full = ours.predict(astronaut_bgr, boxes, round=False)
    eyes = np.linalg.norm(full[:, 36:42].mean(1) - full[:, 42:48].mean(1), axis=1)
    moved = boxes + np.array([4, 3, 4, 3], np.float32)          # the next frame's box
    start = full + (4, 3)                                         # 5 px off the face
    first = ours.num_levels - REFIT_LEVELS
    refit = ours.predict(astronaut_bgr, moved, round=False, start=start, first_level=first)
    cold = ours.predict(astronaut_bgr, moved, round=False, first_level=first)

    def error(points):
        return np.linalg.norm(points - full, axis=2).mean(1) / eyes

    assert (error(refit) < error(start)).all()
    assert (error(refit) < 0.7 * error(cold)).all()
    # the whole cascade from the same start lands on the full fit
    whole = ours.predict(astronaut_bgr, moved, round=False, start=start)
    assert (error(whole) < 0.05).all()
