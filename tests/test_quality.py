"""Quality: worse pictures of the same face score lower."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from mobileface.stages import quality
from mobileface.types import Faces


@pytest.fixture(scope="module")
def score():
    from mobileface.detect import create_detector
    from mobileface.stages.landmarks.dlib68 import Landmarks68
    from mobileface.stages.pose.solvepnp import HeadPose

    detector = create_detector("retinaface")
    stages = [Landmarks68(), HeadPose(), quality.Quality()]

    def run(image):
        faces = detector.detect(image)
        assert len(faces) >= 1
        for stage in stages:
            stage(image, faces)
        return faces

    return run


def test_score_and_parts_are_in_range(score, astronaut_bgr):
    faces = score(astronaut_bgr)
    assert faces.quality.dtype == np.float32
    assert 0.0 < faces.quality[0] <= 1.0
    for part in quality.WEIGHTS:
        assert 0.0 <= faces.extra[part][0] <= 1.0, part
    assert faces.quality[0] > 0.5  # a sharp, well-lit, large face


def test_blur_darkness_and_size_lower_the_score(score, astronaut_bgr):
    sharp = score(astronaut_bgr)
    blurred = score(cv2.GaussianBlur(astronaut_bgr, (0, 0), 3))
    dark = score((astronaut_bgr * 0.15).astype(np.uint8))
    small = score(cv2.resize(astronaut_bgr, None, fx=0.15, fy=0.15, interpolation=cv2.INTER_AREA))
    assert blurred.extra["sharpness"][0] < sharp.extra["sharpness"][0] - 0.3
    assert dark.extra["brightness"][0] < 0.5 < sharp.extra["brightness"][0]
    assert small.extra["size"][0] < 0.2 < sharp.extra["size"][0]
    for worse in (blurred, dark, small):
        assert worse.quality[0] < sharp.quality[0] - 0.2


def test_closed_eyes_and_turned_head_lower_their_parts():
    landmarks = np.zeros((2, 68, 2))
    for i, eye in enumerate(((36, 37, 38, 39, 40, 41), (42, 43, 44, 45, 46, 47))):
        corner = 100 * i
        landmarks[:, eye[0]] = (corner, 0)
        landmarks[:, eye[3]] = (corner + 30, 0)
        for top, bottom, x in ((eye[1], eye[5], 10), (eye[2], eye[4], 20)):
            landmarks[0, top], landmarks[0, bottom] = (corner + x, -5), (corner + x, 5)  # open
            landmarks[1, top], landmarks[1, bottom] = (corner + x, -1), (corner + x, 1)  # closed
    ear = quality.eye_aspect_ratio(landmarks)
    assert ear[0, 0] > 0.3 and ear[1, 0] < 0.1
    frontal = np.clip(1 - np.hypot(np.array([0.0, 50.0]) / 60, 0), 0, 1)
    parts = {k: np.ones(2) for k in quality.WEIGHTS}
    parts["frontal"] = frontal
    combined = quality.combine(parts)
    assert combined[0] == pytest.approx(1.0) and combined[1] < 0.7


def test_no_face():
    faces = Faces(boxes=np.zeros((0, 4)), scores=np.zeros(0), landmarks68=np.zeros((0, 68, 2)),
                  pose=np.zeros((0, 3)))
    quality.Quality()(np.zeros((8, 8, 3), np.uint8), faces)
    assert faces.quality.shape == (0,)


def _reference_parts(image, landmarks68, pose):
    """The per-face version the vectorised one replaced (commit 7af6a80)."""
    from mobileface.stages.align import dlib_chip_transforms, warp_chips

    def dist(a, b):
        return np.linalg.norm(landmarks68[:, a] - landmarks68[:, b], axis=-1)

    ears = np.stack([(dist(p2, p6) + dist(p3, p5)) / (2.0 * np.maximum(dist(p1, p4), 1e-6))
                     for p1, p2, p3, p4, p5, p6 in ((36, 37, 38, 39, 40, 41),
                                                    (42, 43, 44, 45, 46, 47))], 1)
    mar = (dist(61, 67) + dist(62, 66) + dist(63, 65)) / (3.0 * np.maximum(dist(60, 64), 1e-6))
    chips = warp_chips(image, dlib_chip_transforms(landmarks68, 64, 0.0), 64)
    grey = np.stack([cv2.cvtColor(c, cv2.COLOR_BGR2GRAY) for c in chips])
    variance = np.array([cv2.Laplacian(c, cv2.CV_32F).var() for c in grey], np.float32)
    return ears, mar, variance, grey.reshape(len(grey), -1).mean(1)


def test_the_vectorised_parts_are_the_per_face_ones_on_real_faces(score, astronaut_bgr):
    from conftest import load_bgr

    for image in (load_bgr("mobileface/friends.jpg"), astronaut_bgr,
                  cv2.GaussianBlur(astronaut_bgr, (0, 0), 2)):
        faces = score(image)
        ears, mar, variance, mean_grey = _reference_parts(image, faces.landmarks68, faces.pose)
        np.testing.assert_allclose(quality.eye_aspect_ratio(faces.landmarks68), ears, rtol=1e-6)
        np.testing.assert_allclose(quality.mouth_aspect_ratio(faces.landmarks68), mar, rtol=1e-6)
        parts = quality.quality_parts(image, faces.landmarks68, faces.pose)
        np.testing.assert_allclose(parts["sharpness"], variance / (variance + 150), rtol=1e-5)
        expected = np.minimum(np.clip((mean_grey - 10) / 80, 0, 1),
                              1 - np.clip((mean_grey - 170) / 80, 0, 1))
        np.testing.assert_allclose(parts["brightness"], expected, rtol=1e-6)
