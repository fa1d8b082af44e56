"""Overlays: small annotators, each with ``annotate(scene, faces) -> scene``.

They draw in place on a BGR frame and never analyse anything. Colours follow
the track id, so a face keeps its colour for as long as it is tracked.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mobileface.identity.gallery import UNKNOWN
from mobileface.types import Faces, gender_label
from mobileface.stages.pose.solvepnp import rotations_from_angles

FONT = cv2.FONT_HERSHEY_SIMPLEX
#: a qualitative palette (BGR), indexed by track id
PALETTE = np.array([
    (75, 180, 60), (48, 130, 245), (200, 130, 0), (180, 30, 145), (60, 20, 220),
    (240, 240, 70), (49, 210, 210), (190, 190, 250), (128, 128, 0), (40, 110, 170),
    (0, 0, 128), (195, 255, 170), (0, 128, 128), (180, 215, 255), (128, 0, 0),
], np.uint8)
UNTRACKED = (160, 160, 160)


def colour(track_id: int) -> tuple[int, int, int]:
    if track_id <= 0:
        return UNTRACKED
    return tuple(int(c) for c in PALETTE[(track_id - 1) % len(PALETTE)])


def _scale(scene: np.ndarray) -> float:
    """Line and text size for the frame: 1.0 at 720 px high, no less than 0.7 (readable at 360p)."""
    return max(0.7, scene.shape[0] / 720.0)


def _text_block(scene: np.ndarray, lines: list[str], x: int, y: int, fg, bg, scale: float,
                below: int | None = None) -> None:
    """Lines of text on a filled background ending at y; where there is no room above y,
    starting at ``below`` instead (or at the top of the frame)."""
    font_scale = 0.55 * scale
    thickness = max(1, round(1.5 * scale))
    sizes = [cv2.getTextSize(t, FONT, font_scale, thickness) for t in lines]
    line_h = max(h + b for (_, h), b in sizes) + round(4 * scale)
    width = max(w for (w, _), _ in sizes) + round(8 * scale)
    top = y - line_h * len(lines)
    if top < 0:
        top = 0 if below is None else min(below, scene.shape[0] - line_h * len(lines))
    x = int(min(max(0, x), max(0, scene.shape[1] - width)))
    cv2.rectangle(scene, (x, top), (x + width, top + line_h * len(lines)), bg, cv2.FILLED)
    for i, text in enumerate(lines):
        baseline = top + line_h * (i + 1) - round(4 * scale)
        cv2.putText(scene, text, (x + round(4 * scale), baseline), FONT, font_scale, fg,
                    thickness, cv2.LINE_AA)


class BoxAnnotator:
    """Face boxes; boxes of tracks that are only predicted this frame are thin."""

    def annotate(self, scene: np.ndarray, faces: Faces) -> np.ndarray:
        thickness = max(1, round(2 * _scale(scene)))
        ids = _track_ids(faces)
        predicted = _predicted(faces)
        for box, tid, guess in zip(faces.boxes.astype(int), ids, predicted):
            cv2.rectangle(scene, tuple(box[:2]), tuple(box[2:]), colour(int(tid)),
                          1 if guess else thickness)
        return scene


class LabelAnnotator:
    """Track id, name (and similarity with ``show_scores``), age and gender above each face."""

    def __init__(self, show_scores: bool = False):
        self.show_scores = show_scores

    def lines(self, faces, row: int, ages_genders=None) -> list[str]:
        tid = int(faces.track_id[row]) if faces.track_id is not None else -1
        first = f"#{tid}" if tid > 0 else ""
        if faces.identity is not None and faces.identity[row]:
            first += f" {faces.identity[row]}"
            sim = faces.similarity[row]
            if self.show_scores and np.isfinite(sim):
                first += f" {sim:.2f}"
        out = [first.strip()] if first.strip() else []
        ages, genders = faces.age_and_gender() if ages_genders is None else ages_genders
        if ages is not None and np.isfinite(ages[row]):
            gender, _ = gender_label(genders[row])
            out.append(f"{(gender or '?')[0].upper()} {ages[row]:.0f}")
        return out

    def annotate(self, scene: np.ndarray, faces: Faces) -> np.ndarray:
        scale = _scale(scene)
        predicted = _predicted(faces)
        ids = _track_ids(faces)
        ages_genders = faces.age_and_gender()
        for row, box in enumerate(faces.boxes):
            lines = [] if predicted[row] else self.lines(faces, row, ages_genders)
            if not lines:
                continue
            tid = int(ids[row])
            known = faces.identity is not None and faces.identity[row] not in ("", UNKNOWN)
            bg = colour(tid)
            fg = (255, 255, 255) if not known else (0, 0, 0)
            if known:
                bg = tuple(min(255, c + 60) for c in bg)
            _text_block(scene, lines, int(box[0]), int(box[1]) - 2, fg, bg, scale,
                        below=int(box[3]) + 2)
        return scene


class LandmarkAnnotator:
    """The 68 points, as small square dots (all faces in one numpy assignment)."""

    def annotate(self, scene: np.ndarray, faces: Faces) -> np.ndarray:
        if faces.landmarks68 is not None:
            faces = faces[np.isfinite(faces.landmarks68).all((1, 2))]  # not the predicted rows
        if faces.landmarks68 is None or len(faces) == 0:
            return scene
        ids = _track_ids(faces)
        colours = np.array([colour(int(t)) for t in ids], np.uint8)           # (N, 3)
        half = max(1, round(1.5 * _scale(scene))) // 2 + 1
        offsets = np.arange(-half + 1, half)
        points = np.round(faces.landmarks68).astype(np.intp)                  # (N, 68, 2)
        xs = points[:, :, None, None, 0] + offsets[None, None, None, :]       # (N, 68, 1, k)
        ys = points[:, :, None, None, 1] + offsets[None, None, :, None]       # (N, 68, k, 1)
        xs, ys = np.broadcast_arrays(xs, ys)
        inside = (xs >= 0) & (xs < scene.shape[1]) & (ys >= 0) & (ys < scene.shape[0])
        rows = np.broadcast_to(np.arange(len(ids))[:, None, None, None], xs.shape)
        scene[ys[inside], xs[inside]] = colours[rows[inside]]
        return scene


class PoseAxisAnnotator:
    """Head-pose axes from the nose tip: x red (the face's right on screen), y green (up),
    z blue (out of the face); the axes of every face in three OpenCV calls, one per colour."""

    #: BGR of the x, y and z axes
    COLOURS = ((0, 0, 255), (0, 200, 0), (255, 80, 0))
    TIP = 0.15  # arrow-head length over arrow length, as cv2.arrowedLine's tipLength

    def annotate(self, scene: np.ndarray, faces: Faces) -> np.ndarray:
        if faces.pose is None or faces.landmarks68 is None or len(faces) == 0:
            return scene
        ok = np.isfinite(faces.pose).all(1) & np.isfinite(faces.landmarks68[:, 30]).all(1)
        if not ok.any():
            return scene
        thickness = max(1, round(2 * _scale(scene)))
        rotations = rotations_from_angles(faces.pose[ok])
        length = 0.5 * (faces.boxes[ok, 2] - faces.boxes[ok, 0]).astype(np.float64)
        origin = faces.landmarks68[ok, 30].astype(np.float64)
        start = origin.astype(np.int32)               # as int(): towards zero
        # Columns: the model's x (right), y (down) and z (into the face) in camera
        # axes; draw x, -y (up) and -z (out of the face). (3, N, 2) arrow ends:
        axes = (rotations[:, :2, :] * np.array([1.0, -1.0, -1.0])).transpose(2, 0, 1)
        ends = (origin + length[:, None] * axes).astype(np.int32)
        strokes = _arrow_strokes(np.broadcast_to(start, ends.shape), ends, self.TIP)
        for bgr, segments in zip(self.COLOURS, strokes):
            cv2.polylines(scene, list(segments), False, bgr, thickness, cv2.LINE_AA)
        return scene


def _arrow_strokes(start: np.ndarray, end: np.ndarray, tip: float) -> np.ndarray:
    """(..., 3, 2, 2) segments of arrows (shaft, then two head strokes) drawn as
    cv2.arrowedLine draws them: heads at 45 degrees, ``tip`` times the shaft's length."""
    d = (start - end) * (tip * np.sqrt(0.5))        # the shaft backwards, scaled
    dx, dy = d[..., 0], d[..., 1]
    left = np.round(end + np.stack([dx - dy, dx + dy], -1)).astype(np.int32)
    right = np.round(end + np.stack([dx + dy, dy - dx], -1)).astype(np.int32)
    segments = np.stack([np.stack([start, end], -2), np.stack([left, end], -2),
                         np.stack([right, end], -2)], -3)
    return segments.reshape(segments.shape[:-4] + (-1, 2, 2))


@dataclass
class OverlayOptions:
    boxes: bool = True
    labels: bool = True
    show_scores: bool = False
    landmarks: bool = False
    pose_axes: bool = False


class Overlay:
    """The annotators chosen by :class:`OverlayOptions`, applied in order."""

    def __init__(self, options: OverlayOptions | None = None):
        self.options = options = options or OverlayOptions()
        self.annotators = []
        if options.boxes:
            self.annotators.append(BoxAnnotator())
        if options.landmarks:
            self.annotators.append(LandmarkAnnotator())
        if options.pose_axes:
            self.annotators.append(PoseAxisAnnotator())
        if options.labels:
            self.annotators.append(LabelAnnotator(options.show_scores))

    def annotate(self, scene: np.ndarray, faces: Faces) -> np.ndarray:
        """Draw ``faces`` (a FaceAnalyzer's or a pipeline's) on ``scene``, in place."""
        for annotator in self.annotators:
            scene = annotator.annotate(scene, faces)
        return scene


def _track_ids(faces: Faces) -> np.ndarray:
    return faces.track_id if faces.track_id is not None else np.full(len(faces), -1)


def _predicted(faces: Faces) -> np.ndarray:
    return faces.predicted if faces.predicted is not None else np.zeros(len(faces), bool)


def draw_status(scene: np.ndarray, text: str) -> np.ndarray:
    """A line of status text (fps, latency) in the top-left corner."""
    scale = _scale(scene)
    _text_block(scene, [text], 0, 0, (255, 255, 255), (40, 40, 40), scale)
    return scene
