"""Face quality in [0, 1] from landmarks, pose and pixels (MagFace's idea: use the best frames).

Each part is a score in [0, 1] (1 = good), kept in ``faces.extra``:

- ``eyes_open``:  eye aspect ratio (EAR, Soukupova & Cech 2016) of the more
  open eye, mapped linearly from 0.10 (closed) to 0.22 (open).
- ``mouth_closed``: 1 - mouth openness; the inner-lip aspect ratio is mapped
  from 0.05 (closed) to 0.50 (wide open). A talking mouth costs little.
- ``sharpness``: variance of the Laplacian of a 64x64 grey chip of the face,
  v / (v + 150). On the test photos sharp faces score 0.75-0.85 and the same
  faces blurred with a 3-px Gaussian 0.1-0.5; it also falls with contrast.
- ``brightness``: 1 at a mean grey of 90..170, falling linearly to 0 at 10 and 250.
- ``size``: face height (chin to brow, from the landmarks) mapped from 24 px
  (0) to 100 px (1): dlib's embedder sees a 150 px chip.
- ``frontal``: 1 - hypot(yaw / 60, pitch / 45), floored at 0.

The quality score is the weighted geometric mean of the parts, each floored at
0.02 so that one bad part lowers the score sharply without zeroing it:
    quality = prod(max(part, 0.02) ** weight)
with weights sharpness 0.25, frontal 0.25, size 0.2, eyes_open 0.15,
brightness 0.1, mouth_closed 0.05.
"""
from __future__ import annotations

import cv2
import numpy as np

from mobileface.stages.align import dlib_chip_transforms, warp_chips
from mobileface.stages.base import Stage
from mobileface.types import Faces

WEIGHTS = {
    "sharpness": 0.25,
    "frontal": 0.25,
    "size": 0.20,
    "eyes_open": 0.15,
    "brightness": 0.10,
    "mouth_closed": 0.05,
}
PART_FLOOR = 0.02
SHARPNESS_HALF = 150.0
CHIP_SIZE = 64


def _ramp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


# Point pairs whose distances the parts use, measured in one gather for all faces:
# per eye (image-left 36-41, image-right 42-47) p2-p6, p3-p5 and p1-p4; for the inner
# lips 61-67, 62-66, 63-65 and 60-64.
_EYE_PAIRS = np.array([[(37, 41), (38, 40), (36, 39)], [(43, 47), (44, 46), (42, 45)]])
_MOUTH_PAIRS = np.array([(61, 67), (62, 66), (63, 65), (60, 64)])


def _distances(points: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """(N, *pairs.shape[:-1]) distances between the points of each pair."""
    points = np.asarray(points)
    return np.linalg.norm(points[:, pairs[..., 0]] - points[:, pairs[..., 1]], axis=-1)


def eye_aspect_ratio(landmarks68: np.ndarray) -> np.ndarray:
    """(N, 2) EAR of the image-left eye (36-41) and image-right eye (42-47)."""
    d = _distances(landmarks68, _EYE_PAIRS)                   # (N, 2 eyes, 3)
    return (d[:, :, 0] + d[:, :, 1]) / (2.0 * np.maximum(d[:, :, 2], 1e-6))


def mouth_aspect_ratio(landmarks68: np.ndarray) -> np.ndarray:
    """(N,) inner-lip opening over inner-lip width (points 60-67)."""
    d = _distances(landmarks68, _MOUTH_PAIRS)                 # (N, 4)
    return d[:, :3].sum(1) / (3.0 * np.maximum(d[:, 3], 1e-6))


def laplacian_variance(grey_chips: np.ndarray) -> np.ndarray:
    """(N,) variance of each chip's Laplacian (OpenCV's 3 x 3 aperture, reflected border).

    One Laplacian of the chips stacked into one tall image; the rows where two
    chips meet are then given the reflected neighbour they have alone.
    """
    chips = np.asarray(grey_chips)
    n = len(chips)
    if n == 0:
        return np.zeros(0, np.float32)
    lap = cv2.Laplacian(chips.reshape(-1, chips.shape[2]), cv2.CV_32F).reshape(chips.shape)
    if n > 1:
        g = chips.astype(np.float32)
        lap[1:, 0] += g[1:, 1] - g[:-1, -1]     # above a chip's first row: its second
        lap[:-1, -1] += g[:-1, -2] - g[1:, 0]   # below its last row: the one before
    return lap.reshape(n, -1).var(1)


def quality_parts(image: np.ndarray, landmarks68: np.ndarray, pose: np.ndarray) -> dict[str, np.ndarray]:
    """Every part score, (N,) each, in [0, 1]."""
    chips = warp_chips(image, dlib_chip_transforms(landmarks68, CHIP_SIZE, 0.0), CHIP_SIZE)
    n = len(chips)
    # one conversion for every chip: stacked, they are one tall image
    tall = chips.reshape(n * CHIP_SIZE, CHIP_SIZE, 3)
    grey = (cv2.cvtColor(tall, cv2.COLOR_BGR2GRAY) if n else tall[:, :, 0]).reshape(
        n, CHIP_SIZE, CHIP_SIZE)
    variance = laplacian_variance(grey)
    mean_grey = grey.reshape(n, -1).mean(1)
    brow_y = landmarks68[:, 17:27, 1].mean(1)
    height = np.abs(landmarks68[:, 8, 1] - brow_y)
    yaw, pitch = pose[:, 0], pose[:, 1]
    return {
        "eyes_open": _ramp(eye_aspect_ratio(landmarks68).max(1), 0.10, 0.22),
        "mouth_closed": 1.0 - _ramp(mouth_aspect_ratio(landmarks68), 0.05, 0.50),
        "sharpness": variance / (variance + SHARPNESS_HALF),
        "brightness": np.minimum(_ramp(mean_grey, 10, 90), 1.0 - _ramp(mean_grey, 170, 250)),
        "size": _ramp(height, 24, 100),
        "frontal": np.clip(1.0 - np.hypot(yaw / 60.0, pitch / 45.0), 0.0, 1.0),
    }


def combine(parts: dict[str, np.ndarray]) -> np.ndarray:
    """The weighted geometric mean documented above."""
    log_q = sum(w * np.log(np.maximum(parts[k], PART_FLOOR)) for k, w in WEIGHTS.items())
    return np.exp(log_q).astype(np.float32)


class Quality(Stage):
    """Fills ``quality`` and one ``extra`` column per part."""

    name = "quality"
    requires = ("landmarks68", "pose")
    provides = ("quality",)

    def process(self, image: np.ndarray, faces: Faces) -> None:
        parts = quality_parts(image, faces.landmarks68, faces.pose)
        for key, values in parts.items():
            faces.extra[key] = values.astype(np.float32)
        faces.quality = combine(parts)

    def fill_empty(self, faces: Faces) -> None:
        faces.quality = np.zeros(0, np.float32)
        for key in WEIGHTS:
            faces.extra[key] = np.zeros(0, np.float32)
