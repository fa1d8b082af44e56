"""find_main_face on a photo, on pre-aligned crops and on an image with no face."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from numpy.testing import assert_allclose

from conftest import load_bgr, shared_file
from mobileface.detect.locate import find_main_face, kps5_from_landmarks68

LFW100 = "mobileface/LFW-Aligned-100Pair"


def _unit(v):
    return v / np.linalg.norm(v)


def test_photo_face_is_detected_with_every_column(analyzer, astronaut_bgr):
    found = find_main_face(analyzer, astronaut_bgr)
    assert found.how == "detected" and found.found
    faces = found.faces
    assert len(faces) == 1
    assert faces.landmarks68.shape == (1, 68, 2) and faces.embedding.shape == (1, 128)
    assert faces.age is not None and faces.quality is not None


def test_the_largest_of_several_faces_is_kept(analyzer):
    image = load_bgr("face_recognition/two_people.jpg")
    everyone = analyzer.detector.detect(image)
    assert len(everyone) >= 2
    areas = np.prod(everyone.boxes[:, 2:] - everyone.boxes[:, :2], axis=1)
    found = find_main_face(analyzer, image)
    assert_allclose(found.faces.boxes[0], everyone.boxes[areas.argmax()])


def test_aligned_crops_are_padded_first_and_match_the_padded_image(analyzer):
    path = shared_file(f"{LFW100}/Jackie_Chan/Jackie_Chan_0002.jpg")
    crop = cv2.imread(str(path))
    found = find_main_face(analyzer, crop)
    assert found.how == "padded"
    # every column is what the analyzer gives on the padded image itself
    border = 25
    padded = cv2.copyMakeBorder(crop, border, border, border, border, cv2.BORDER_CONSTANT, value=0)
    direct = analyzer.analyze(padded)
    areas = np.prod(direct.boxes[:, 2:] - direct.boxes[:, :2], axis=1)
    direct = direct[[int(areas.argmax())]]
    assert_allclose(found.faces.boxes, direct.boxes - border, atol=1e-4)
    assert_allclose(found.faces.landmarks68, direct.landmarks68 - border, atol=1e-4)
    assert_allclose(found.faces.embedding, direct.embedding, atol=1e-4)


def test_same_person_crops_are_closer_than_other_people(analyzer):
    paths = [f"{LFW100}/Jackie_Chan/Jackie_Chan_0002.jpg",
             f"{LFW100}/Jackie_Chan/Jackie_Chan_0012.jpg",
             f"{LFW100}/Barbara_Walters/Barbara_Walters_0001.jpg"]
    emb = [_unit(find_main_face(analyzer, load_bgr(p)).faces.embedding[0]) for p in paths]
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.05


def test_a_small_image_without_a_face_is_used_whole_only_as_a_crop(analyzer):
    blank = np.full((100, 100, 3), 128, np.uint8)
    as_crop = find_main_face(analyzer, blank)          # auto: 100 px is crop-sized
    assert as_crop.how == "whole"
    assert_allclose(as_crop.faces.boxes[0], [0, 0, 100, 100])
    assert as_crop.faces.kps5.shape == (1, 5, 2) and as_crop.faces.embedding.shape == (1, 128)
    as_photo = find_main_face(analyzer, blank, kind="photo")
    assert as_photo.how == "none" and not as_photo.found and len(as_photo.faces) == 0
    big_blank = np.full((400, 600, 3), 128, np.uint8)
    assert find_main_face(analyzer, big_blank).how == "none"  # auto: too big for a crop


def test_kps5_from_landmarks_follows_the_faces_order():
    points = np.zeros((1, 68, 2), np.float32)
    points[0, 36:42] = [10, 20]     # subject's right eye, image left
    points[0, 42:48] = [30, 20]
    points[0, 30] = [20, 30]
    points[0, 48] = [12, 40]
    points[0, 54] = [28, 40]
    assert_allclose(kps5_from_landmarks68(points)[0],
                    [[10, 20], [30, 20], [20, 30], [12, 40], [28, 40]])


def test_bad_arguments_raise_value_error(analyzer, astronaut_bgr):
    with pytest.raises(ValueError, match="kind"):
        find_main_face(analyzer, astronaut_bgr, kind="selfie")
    with pytest.raises(ValueError, match="pad"):
        find_main_face(analyzer, astronaut_bgr, pad=-1)
