"""Overlays drawn for all faces at once look as the per-face OpenCV calls they replaced."""
from __future__ import annotations

import cv2
import numpy as np

from mobileface.outputs import annotators
from mobileface.stages.pose.solvepnp import rotation_from_angles
from mobileface.types import Faces


def _faces(n: int = 6, seed: int = 0) -> Faces:
    rng = np.random.default_rng(seed)
    corners = rng.uniform(50, 1000, (n, 2))
    size = rng.uniform(60, 200, (n, 1))
    boxes = np.concatenate([corners, corners + size], 1).astype(np.float32)
    landmarks = corners[:, None] + rng.uniform(0, 1, (n, 68, 2)) * size[:, None]
    landmarks = landmarks.astype(np.float32)
    pose = rng.uniform(-60, 60, (n, 3)).astype(np.float32)
    return Faces(boxes, np.ones(n, np.float32), landmarks68=landmarks, pose=pose,
                 track_id=np.arange(1, n + 1), predicted=np.zeros(n, bool))


def _arrowed_lines(scene: np.ndarray, faces: Faces) -> np.ndarray:
    """The per-face version (commit 7af6a80): three cv2.arrowedLine calls per face."""
    thickness = max(1, round(2 * annotators._scale(scene)))
    for box, pose, points in zip(faces.boxes, faces.pose, faces.landmarks68):
        rotation = rotation_from_angles(*pose)
        length = 0.5 * float(box[2] - box[0])
        origin = points[30]
        for axis, bgr in zip((rotation[:, 0], -rotation[:, 1], -rotation[:, 2]),
                             annotators.PoseAxisAnnotator.COLOURS):
            end = origin + length * axis[:2]
            cv2.arrowedLine(scene, tuple(int(v) for v in origin), tuple(int(v) for v in end),
                            bgr, thickness, cv2.LINE_AA, tipLength=0.15)
    return scene


def test_pose_axes_are_the_arrowed_lines_of_each_face():
    for seed in range(3):
        faces = _faces(seed=seed)
        blank = np.zeros((720, 1280, 3), np.uint8)
        ours = annotators.PoseAxisAnnotator().annotate(blank.copy(), faces)
        theirs = _arrowed_lines(blank.copy(), faces)
        drawn = (theirs > 0).any(2)
        assert drawn.sum() > 1000
        # the same pixels; only where two strokes cross can the anti-aliased blend differ
        differ = (np.abs(ours.astype(int) - theirs).max(2) > 8)
        assert differ.sum() <= 0.02 * drawn.sum()
        assert ((ours > 0).any(2) == drawn).mean() > 0.999


def test_rows_without_pose_or_points_are_skipped():
    faces = _faces(3)
    faces.pose[0] = np.nan
    faces.landmarks68[1] = np.nan
    scene = annotators.PoseAxisAnnotator().annotate(np.zeros((720, 1280, 3), np.uint8), faces)
    only = annotators.PoseAxisAnnotator().annotate(np.zeros((720, 1280, 3), np.uint8), faces[[2]])
    np.testing.assert_array_equal(scene, only)
    empty = Faces(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                  landmarks68=np.zeros((0, 68, 2), np.float32), pose=np.zeros((0, 3), np.float32))
    annotators.PoseAxisAnnotator().annotate(scene, empty)


def test_the_overlay_draws_every_part():
    faces = _faces(4)
    faces.identity = np.array(["ann", "", "bob", "unknown"], object)
    faces.similarity = np.array([0.8, np.nan, 0.7, 0.2], np.float32)
    overlay = annotators.Overlay(annotators.OverlayOptions(show_scores=True, landmarks=True,
                                                           pose_axes=True))
    scene = overlay.annotate(np.zeros((720, 1280, 3), np.uint8), faces)
    assert (scene > 0).any(2).mean() > 0.01
