"""Head pose (yaw, pitch, roll in degrees) from the 68 points by solvePnP.

Six of the 68 points (nose tip 30, chin 8, outer eye corners 36 and 45, mouth
corners 48 and 54) are fitted to a generic 3-D face, the widely used model of
Satya Mallick's "Head Pose Estimation using OpenCV and Dlib" (learnopencv.com),
in its units (about 0.1 mm). The camera is a pinhole with focal length equal to
the image width, centred, without distortion; with an unknown camera the angles
are approximate (a few degrees), which is what gating and display need.

Sign convention, stated in the image as displayed (y down):

* **yaw > 0**: the nose points to the image's right (the person turns to their
  own left); a mirror image flips the sign.
* **pitch > 0**: the face looks up.
* **roll > 0**: the head tilts clockwise on screen (for a face turned to
  the camera, the line from the image-left to the image-right eye runs down).

The angles are the intrinsic rotation R = Ry(yaw) Rx(pitch) Rz(roll): turn
about the vertical, then nod, then tilt about the face's own nose axis.

A frontal face is (0, 0, 0).
"""
from __future__ import annotations

import numpy as np

from mobileface.stages.base import Stage
from mobileface.types import Faces

#: the 68-point indices used, and their generic 3-D positions
POSE_INDICES = np.array([30, 8, 36, 45, 48, 54])
#: in the model's frame: x to the image right, y up, z towards the camera
MODEL_POINTS = np.array([
    (0.0, 0.0, 0.0),          # nose tip
    (0.0, -330.0, -65.0),     # chin
    (-225.0, 170.0, -135.0),  # image-left eye, outer corner
    (225.0, 170.0, -135.0),   # image-right eye, outer corner
    (-150.0, -150.0, -125.0),  # image-left mouth corner
    (150.0, -150.0, -125.0),  # image-right mouth corner
])
# Camera axes are x right, y down, z away from the camera: flipping y and z
# makes the rotation of a frontal face the identity.
_CAMERA_STYLE = MODEL_POINTS * np.array([1.0, -1.0, -1.0])


def _rx(a: float) -> np.ndarray:
    # Positive pitch moves the nose (0, 0, -1) towards -y, up on screen.
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, s], [0, -s, c]])


def _ry(a: float) -> np.ndarray:
    # Positive yaw swings the nose towards +x, the image's right.
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])


def _rz(a: float) -> np.ndarray:
    # Positive roll turns the eye line (1, 0, 0) towards +y, down on screen.
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def rotation_from_angles(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """The head rotation R = Ry(yaw) Rx(pitch) Rz(roll), angles in degrees.

    Intrinsic order: turn about the vertical, then nod, then tilt about the
    face's own nose axis. ``angles_from_rotations`` is its exact inverse for
    |pitch| < 90.
    """
    y, p, r = np.radians([yaw, pitch, roll])
    return _ry(y) @ _rx(p) @ _rz(r)


def rotations_from_angles(angles: np.ndarray) -> np.ndarray:
    """(N, 3) yaw, pitch, roll in degrees -> (N, 3, 3): :func:`rotation_from_angles` of each."""
    return _rotations(*np.radians(np.asarray(angles, np.float64).reshape(-1, 3)).T)


def _rotations(y: np.ndarray, p: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Ry(y) Rx(p) Rz(r) for arrays of angles in radians, multiplied out."""
    cy, sy, cp, sp, cr, sr = np.cos(y), np.sin(y), np.cos(p), np.sin(p), np.cos(r), np.sin(r)
    return np.stack([cy * cr + sy * sp * sr, sy * sp * cr - cy * sr, -sy * cp,
                     cp * sr, cp * cr, sp,
                     sy * cr - cy * sp * sr, -sy * sr - cy * sp * cr, cy * cp],
                    -1).reshape(-1, 3, 3)


def angles_from_rotations(rotations: np.ndarray) -> np.ndarray:
    """(N, 3, 3) head rotations (camera-style model axes -> camera) -> (N, 3) yaw, pitch, roll."""
    rotations = np.asarray(rotations, np.float64).reshape(-1, 3, 3)
    nose = -rotations[:, :, 2]  # R (0, 0, -1): where the face points
    yaw = np.arctan2(nose[:, 0], -nose[:, 2])
    pitch = np.arctan2(-nose[:, 1], np.hypot(nose[:, 0], nose[:, 2]))
    # Undo yaw and pitch; what is left of the eye line's direction (R e_x) is roll.
    undo = _rotations(yaw, pitch, np.zeros_like(yaw))
    across = np.einsum("nji,nj->ni", undo, rotations[:, :, 0])
    roll = np.arctan2(across[:, 1], across[:, 0])
    return np.degrees(np.stack([yaw, pitch, roll], 1))


def camera_matrix(width: int, height: int) -> np.ndarray:
    focal = float(width)
    return np.array([[focal, 0, width / 2.0], [0, focal, height / 2.0], [0, 0, 1]])


def solve_pose(landmarks68: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 68, 2) points -> (N, 3) angles in degrees and (N, 3, 3) rotations.

    One OpenCV solve per face (0.1 ms SQPnP + 0.17 ms Levenberg-Marquardt on the
    2-core machine). A batched numpy Levenberg-Marquardt of the same problem for
    all faces at once (weak-perspective starts at three yaws, 12 steps) was
    measured against it on the 1,507 faces of tests/data/clip_faces.npz and kept
    out: it is no faster for five faces (1.0 ms against 0.95 ms; numpy's cost per
    call, about 25 calls a step, outweighs OpenCV's per-face work until some 10
    faces), and the six points are noisy enough that the error is nearly flat
    along the yaw for 4 % of the faces, where it ends 1 to 80 degrees away from
    OpenCV's answer (at a lower error: OpenCV's LM stops early there).
    """
    import cv2

    camera = camera_matrix(width, height)
    points = np.ascontiguousarray(np.asarray(landmarks68, np.float64)[:, POSE_INDICES])
    rotations = np.empty((len(points), 3, 3))
    for i, image_points in enumerate(points):
        ok, rvec, tvec = cv2.solvePnP(_CAMERA_STYLE, image_points, camera, None,
                                      flags=cv2.SOLVEPNP_SQPNP)
        if ok:
            # Refine from the global SQPnP solution with Levenberg-Marquardt.
            rvec, tvec = cv2.solvePnPRefineLM(_CAMERA_STYLE, image_points, camera, None,
                                              rvec, tvec)
            rotations[i] = cv2.Rodrigues(rvec)[0]
        else:
            rotations[i] = np.nan
    return angles_from_rotations(rotations), rotations


class HeadPose(Stage):
    """Fills ``pose`` (N, 3) float32: yaw, pitch, roll in degrees (see module docs)."""

    name = "pose"
    requires = ("landmarks68",)
    provides = ("pose",)

    def process(self, image: np.ndarray, faces: Faces) -> None:
        angles, _ = solve_pose(faces.landmarks68, image.shape[1], image.shape[0])
        faces.pose = angles.astype(np.float32)

    def fill_empty(self, faces: Faces) -> None:
        faces.pose = np.zeros((0, 3), np.float32)
