"""Any dlib shape-predictor ``.dat`` as a landmark stage, e.g. MobileFace's fast models.

MobileFace ships two dlib shape predictors, and both turned out to predict
**three** points, not 68 (read with our own ERT reader, mobileface/ert.py):

* ``mobileface_landmark_eme_v1.dat``: image-left eye, image-right eye, mouth
  centre (mean shape (0.30, 0.29), (0.69, 0.29), (0.50, 0.70) of the box);
* ``mobileface_landmark_ene_v1.dat``: image-left eye, image-right eye, nose
  tip (mean shape ... (0.50, 0.54)).

Both are cascades of 10 levels x 500 trees of depth 4 over 500 feature pixels
(the 68-point model has 15 levels). Three points cannot stand in for the 68
iBUG points that head pose, quality, age/gender chips and dlib's embedder
need, so a predictor with fewer or more than 68 points never fills
``landmarks68``: it fills an extra column (default ``landmarks<K>``), which an
embedder spec can align from (``"source"`` in a template alignment: the eme
points are exactly the ``eyes_mouth`` points of MobileFace's template).

Boxes: the models were fitted on square boxes like dlib's HOG detector's
(MobileFace's own example reshapes its detector's boxes to 0.75 x the box
height, shifted down by 0.1 of it). Fitting the square box that best places
each model's mean shape on RetinaFace's keypoints, over 31 faces, gave side =
1.17 x width = 0.84 x height and a centre 0.07 x height lower: the same as
the mapping landmarks.py uses for dlib's 68-point model, which is therefore
reused. With it, over those 31 faces, the eme points lie a median 5% of the
eye distance from RetinaFace's eyes and mouth centre (the mean shape placed
in the box alone: 15%), so the cascade does its job. On clearly turned faces
(friends.jpg, 30-50 degrees of yaw) the median is 16%: these small models
are for near-frontal faces.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mobileface.stages.landmarks.ert import load_shape_predictor
from mobileface.errors import ModelError
from mobileface.stages.landmarks.dlib68 import predictor_boxes
from mobileface.stages.base import Stage
from mobileface.types import Faces


class ShapePredictorLandmarks(Stage):
    """Fills ``column`` (N, K, 2) float32 with the points of a dlib shape predictor file.

    A 68-point model fills ``landmarks68`` by default; any other number of
    points K fills the extra column ``landmarks<K>`` (or ``column``) and is
    refused for ``landmarks68``. Runs our batched numpy predictor (no dlib).
    """

    name = "landmarks_dat"
    requires = ("boxes",)

    def __init__(self, model_path: str | Path, column: str | None = None):
        path = Path(model_path)
        if not path.is_file():
            raise ModelError(f"shape predictor file {path} does not exist")
        self.predictor = load_shape_predictor(path)
        self.num_points = int(self.predictor.num_parts)
        if column is None:
            column = "landmarks68" if self.num_points == 68 else f"landmarks{self.num_points}"
        if column == "landmarks68" and self.num_points != 68:
            raise ValueError(f"{path.name} predicts {self.num_points} points, not the 68 iBUG "
                             "points landmarks68 holds; give it another column name")
        if not isinstance(column, str) or not column.isidentifier():
            raise ValueError(f"column must be a name, got {column!r}")
        self.column = column
        self.provides = (column,)

    def process(self, image: np.ndarray, faces: Faces) -> None:
        boxes = np.round(predictor_boxes(faces.boxes))
        points = self.predictor.predict(image, boxes, round=False).astype(np.float32)
        faces.set_column(self.column, points)

    def fill_empty(self, faces: Faces) -> None:
        faces.set_column(self.column, np.zeros((0, self.num_points, 2), np.float32))
