"""MobileFace's pose regressor (``mobileface_pose_emnme_v1.dat``): pose scores from 5 points.

The file is a pickled 3 x 11 matrix (a list of three lists of floats; read by
:mod:`mobileface.models.safe_pickle`, never unpickled). MobileFace's
``get_pose`` computes, for five points (image-left eye, image-right eye, nose,
image-left and image-right mouth corner: the order of ``Faces.kps5``):

    dist = max(y) - min(y) over the five points
    f    = [trunc(100 (x_i - mean x) / dist), trunc(100 (y_i - mean y) / dist)
            for each point i] + [1]                                  (11 values)
    out  = 100 * M f

:func:`pose_scores` reproduces this exactly (truncation towards zero
included), vectorised over faces. The outputs are scores in the file's units,
not degrees: about +-60 at 45 degrees of yaw.

What the three rows measure (MobileFace's docstring calls them pitch, roll,
yaw; that is not what they do). Established two ways:

* on synthetic 5-point faces rotated by known angles: row 0 moves with pitch
  only (about +1.1 per degree, face looking up positive, -8.5 for a frontal
  face), row 1 with yaw only (about -1.55 per degree: positive when the nose
  points to the image's *left*), row 2 with roll only (about +1.9 per degree,
  positive for a clockwise tilt on screen);
* on 117 real faces (eyes more than 30 px apart) of the project's photos and
  clips, against our solvePnP pose: correlation -0.84 for row 1 with yaw,
  0.69 for row 0 with pitch, 0.50 for row 2 with roll (small faces, whose 68
  points are poor, agree less).

:class:`MobileFacePose` therefore fills an extra column ``pose_mobileface``
(N, 3) with **yaw, pitch, roll scores in our sign convention** (pose.py):
``(-row1, row0, row2)``. It is a cheap coarse alternative to the solvePnP
pose (which fills ``pose`` in degrees), usable when only ``kps5`` are known.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mobileface.models import safe_pickle
from mobileface.errors import ModelError
from mobileface.stages.base import Stage
from mobileface.types import Faces

#: the extra Faces column the stage fills
COLUMN = "pose_mobileface"


def load_pose_matrix(path: str | Path) -> np.ndarray:
    """The (3, 11) float64 regression matrix, read without executing the pickle."""
    path = Path(path)
    value = safe_pickle.load(path)
    try:
        matrix = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ModelError(f"{path.name}: expected a 3 x 11 matrix of numbers") from None
    if matrix.shape != (3, 11) or not np.isfinite(matrix).all():
        raise ModelError(f"{path.name}: expected a finite 3 x 11 matrix, got shape {matrix.shape}")
    return matrix


def pose_scores(matrix: np.ndarray, kps5: np.ndarray) -> np.ndarray:
    """(N, 3) raw outputs of MobileFace's regressor, in the file's row order.

    kps5: (N, 5, 2) pixel points in ``Faces.kps5`` order. Faces whose five
    points have no vertical extent get NaN (MobileFace returns nothing).
    """
    points = np.asarray(kps5, np.float64)
    if points.ndim != 3 or points.shape[1:] != (5, 2):
        raise ValueError(f"kps5 must have shape (N, 5, 2), got {points.shape}")
    dist = points[:, :, 1].max(axis=1) - points[:, :, 1].min(axis=1)
    ok = dist > 0
    safe = np.where(ok, dist, 1.0)[:, None, None]
    features = np.trunc((points - points.mean(axis=1, keepdims=True)) / safe * 100)
    design = np.concatenate([features.reshape(len(points), 10), np.ones((len(points), 1))], 1)
    out = design @ np.asarray(matrix, np.float64).T * 100
    out[~ok] = np.nan
    return out


class MobileFacePose(Stage):
    """Fills the extra column ``pose_mobileface`` (N, 3): yaw, pitch, roll scores.

    Signs as in :mod:`mobileface.stages.pose.solvepnp` (yaw > 0: nose to the image's right;
    pitch > 0: looking up; roll > 0: clockwise); units are MobileFace's, not
    degrees (see the module docstring for what was measured).
    """

    name = "pose_mobileface"
    requires = ("kps5",)
    provides = (COLUMN,)

    def __init__(self, model_path: str | Path):
        self.matrix = load_pose_matrix(model_path)

    def scores(self, kps5: np.ndarray) -> np.ndarray:
        raw = pose_scores(self.matrix, kps5)
        return np.stack([-raw[:, 1], raw[:, 0], raw[:, 2]], axis=1).astype(np.float32)

    def process(self, image: np.ndarray, faces: Faces) -> None:
        faces.set_column(COLUMN, self.scores(faces.kps5))

    def fill_empty(self, faces: Faces) -> None:
        faces.set_column(COLUMN, np.zeros((0, 3), np.float32))
