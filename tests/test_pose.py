"""Head pose: the sign convention and sane angles on real photos."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import load_bgr
from mobileface.stages.pose import solvepnp as pose
from mobileface.types import Faces


@pytest.mark.parametrize("angles", [(0, 0, 0), (25, 0, 0), (0, -15, 0), (0, 0, 10), (-35, 12, -6)])
def test_recovers_a_synthetic_pose(angles):
    width, height = 640, 480
    rotation = pose.rotation_from_angles(*angles)
    camera = pose.camera_matrix(width, height)
    points3d = pose._CAMERA_STYLE @ rotation.T + [0, 0, 3000]
    projected = points3d @ camera.T
    landmarks = np.zeros((1, 68, 2))
    landmarks[0, pose.POSE_INDICES] = projected[:, :2] / projected[:, 2:]
    solved, _ = pose.solve_pose(landmarks, width, height)
    np.testing.assert_allclose(solved[0], angles, atol=0.05)


def test_the_batched_rotations_are_the_single_ones_and_invert():
    angles = np.array([(0, 0, 0), (25, -10, 5), (-70, 40, -30), (120, 5, 170), (10, 89, 0)])
    rotations = pose.rotations_from_angles(angles)
    for a, r in zip(angles, rotations):
        np.testing.assert_allclose(r, pose.rotation_from_angles(*a), atol=1e-12)
    np.testing.assert_allclose(pose.angles_from_rotations(rotations), angles, atol=1e-9)
    assert np.isnan(pose.angles_from_rotations(np.full((1, 3, 3), np.nan))).all()


def test_signs_are_the_documented_ones():
    # yaw > 0: the nose moves to the image's right of the eyes' midpoint.
    nose = pose.rotation_from_angles(30, 0, 0) @ [0, 0, -1]
    assert nose[0] > 0
    # pitch > 0: the nose moves up on screen (-y).
    assert (pose.rotation_from_angles(0, 20, 0) @ [0, 0, -1])[1] < 0
    # roll > 0: the eye line runs down to the right (+y), clockwise on screen.
    assert (pose.rotation_from_angles(0, 0, 20) @ [1, 0, 0])[1] > 0


def _poses(analyzer_stages, image):
    detector, landmarks, head_pose = analyzer_stages
    faces = detector.detect(image)
    landmarks(image, faces)
    head_pose(image, faces)
    return faces


@pytest.fixture(scope="module")
def stages():
    from mobileface.detect import create_detector
    from mobileface.stages.landmarks.dlib68 import Landmarks68

    return create_detector("retinaface"), Landmarks68(), pose.HeadPose()


def test_frontal_face_has_small_yaw(stages, astronaut_bgr):
    faces = _poses(stages, astronaut_bgr)
    assert abs(faces.pose[0, 0]) < 15 and abs(faces.pose[0, 2]) < 15


def test_frontal_photo_and_turned_photo(stages):
    frontal = _poses(stages, load_bgr("face_recognition/obama.jpg"))
    assert abs(frontal.pose[0, 0]) < 15
    # In obama2.jpg he looks towards the image's left: negative yaw, and its
    # mirror image turns the sign of yaw and roll but not of pitch.
    image = load_bgr("face_recognition/obama2.jpg")
    turned = _poses(stages, image)
    mirrored = _poses(stages, np.ascontiguousarray(image[:, ::-1]))
    assert turned.pose[0, 0] < -15
    assert mirrored.pose[0, 0] > 15
    assert abs(turned.pose[0, 0] + mirrored.pose[0, 0]) < 5
    assert abs(turned.pose[0, 1] - mirrored.pose[0, 1]) < 5
    assert np.sign(turned.pose[0, 2]) == -np.sign(mirrored.pose[0, 2])


def test_every_face_of_a_group_photo(stages):
    faces = _poses(stages, load_bgr("mobileface/friends.jpg"))
    assert faces.pose.shape == (6, 3) and faces.pose.dtype == np.float32
    assert np.isfinite(faces.pose).all()
    assert (np.abs(faces.pose) < 90).all()


def test_no_face_gives_an_empty_column():
    empty = Faces(boxes=np.zeros((0, 4)), scores=np.zeros(0), landmarks68=np.zeros((0, 68, 2)))
    faces = pose.HeadPose()(np.zeros((10, 10, 3), np.uint8), empty)
    assert faces.pose.shape == (0, 3)


def test_the_recorded_poses_of_two_real_clips():
    """The angles of 1,507 faces of two shared clips (tests/data/clip_faces.npz, recorded at
    commit 7af6a80): a faster solver must give these back."""
    import track_replay

    data = track_replay.load()
    for clip in track_replay.CLIPS:
        points = data[f"{clip}_pose_points"]
        landmarks = np.zeros((len(points), 68, 2))
        landmarks[:, pose.POSE_INDICES] = points
        angles, rotations = pose.solve_pose(landmarks, *data[f"{clip}_size"])
        np.testing.assert_allclose(angles, data[f"{clip}_pose"], atol=1e-3)
        np.testing.assert_allclose(pose.angles_from_rotations(rotations), angles, atol=1e-9)
