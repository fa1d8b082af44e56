import numpy as np
import pytest

from conftest import load_bgr
from mobileface.detect import create_detector
from mobileface.detect.boxes import iou_matrix, nms


@pytest.fixture(scope="module")
def detector():
    return create_detector("retinaface")


def test_two_people(detector):
    faces = detector.detect(load_bgr("face_recognition/two_people.jpg"))
    assert len(faces) == 2
    assert (faces.scores > 0.9).all()


def test_friends_has_six_faces(detector):
    faces = detector.detect(load_bgr("mobileface/friends.jpg"))
    assert len(faces) == 6


def test_astronaut_keypoints_inside_box_in_order(detector, astronaut_bgr):
    faces = detector.detect(astronaut_bgr)
    assert len(faces) == 1
    (x1, y1, x2, y2), kps = faces.boxes[0], faces.kps5[0]
    assert ((kps[:, 0] > x1) & (kps[:, 0] < x2) & (kps[:, 1] > y1) & (kps[:, 1] < y2)).all()
    assert kps[0, 0] < kps[1, 0] and kps[3, 0] < kps[4, 0]   # image-left first
    assert kps[0, 1] < kps[2, 1] < kps[3, 1]                   # eyes above nose above mouth


def test_small_input_size_still_finds_large_faces(astronaut_bgr):
    faces = create_detector("retinaface", input_size=320).detect(astronaut_bgr)
    assert len(faces) == 1


def test_blank_image_has_no_face(detector):
    assert len(detector.detect(np.full((360, 640, 3), 127, np.uint8))) == 0


def test_bad_options_raise():
    with pytest.raises(ValueError, match="input_size"):
        create_detector("retinaface", input_size=0)
    with pytest.raises(ValueError, match="unknown detector"):
        create_detector("yolo")


def test_nms_keeps_best_of_overlapping():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    keep = nms(boxes, np.array([0.5, 0.9, 0.7]), 0.4)
    assert keep.tolist() == [1, 2]
    np.testing.assert_allclose(iou_matrix(boxes[:1], boxes[:1]), [[1.0]])
