"""Detection every few frames; in between, the tracked faces are re-found from their 68 points.

The detector is the costliest step of a frame (RetinaFace: about half of the
pipeline's CPU on 720p video). The 68-point predictor runs on every face of
every frame anyway, and it is an iterative fit that finds the face from a
box roughly where the face is. So on most frames the detector does not run:

* each track detected in the last frame is predicted one frame ahead by its
  Kalman filter (:meth:`SortTracker.forecast`);
* the 68 points are fitted from that predicted box: the track's points of the
  last frame, moved with its box, refined by the last levels of the 68-point
  cascade (``refit`` of :class:`~mobileface.stages.landmarks.dlib68.Landmarks68`,
  a fifth of a full fit; a landmarks stage without ``refit`` runs in full), so
  re-finding costs less than the 68 points of a detector frame;
* the face's new box is placed on the points the way the track's last
  detector box sat on its points (:func:`box_from_points`), so that boxes
  keep the detector's shape and size from frame to frame; the 5 points come
  from the 68 (:func:`kps5_from_landmarks`);
* the fit is checked: a small grey thumbnail of the new box must look like
  the track's thumbnail of the frame before (normalised cross-correlation of
  at least ``min_likeness``, :func:`face_patches`). The 68-point fit finds a
  face shape wherever it is started, so a face that jumped away from its
  forecast would otherwise be "re-found" on whatever lies there. When any face
  fails the check, the detector runs on this very frame instead.

The detector still runs (:class:`DetectionSchedule`) on the first frame, on
every ``every``-th frame (so a new face appears within ``every`` frames), on a
scene cut, and on the next frame whenever the last re-finding saw a face move
unlike its forecast (by more than ``max_error`` of its size: fast or sudden
motion) or leave the picture, or the last detection missed a face that the
frame before had (detectors miss a face for a frame now and then; re-finding
follows only the faces of the last frame), or found a face that no confirmed
track has: a new track is confirmed by detections alone (the tracker's
``min_hits``), never by re-finding, which finds a face wherever it looks. Only
confirmed tracks found in the last frame are re-found: re-finding a face the detector lost makes up faces where
there are none (measured: 49 boxes far from any detected face in the 275
frames of the Hamilton clip). So the gap between detections adapts to the
motion: ``every`` frames for steady faces, every frame while they move
unpredictably.

``every=1`` is detection on every frame, as before this module.
benchmark/scheduling.py measures what the schedule keeps of the faces found by
detection on every frame, and what it saves.
"""
from __future__ import annotations

import numpy as np

from mobileface.types import Faces

#: the detector runs at least on every this many frames (the pipeline's default)
DETECT_EVERY = 3
#: a re-found face whose box is further from its forecast than this share of its size
#: makes the next frame a detection frame
MAX_ERROR = 0.1
#: a re-found face with less than this share of its box inside the picture is dropped
MIN_INSIDE = 0.6
#: a re-found face whose thumbnail correlates less than this with its track's thumbnail of
#: the frame before is lost: the detector runs on the frame after all. Measured with boxes
#: of the detector on every frame: the same face one frame later correlates 0.735 or more
#: in 99.5 % of cases (Hamilton clip; friends1.mp4: 0.82), a box moved by half its width
#: 0.47 or less in 99 % (friends1.mp4: 0.57)
MIN_LIKENESS = 0.6
# iBUG 300-W points of the 5 RetinaFace points: right eye (image left), left eye,
# nose tip, right and left mouth corners
_RIGHT_EYE, _LEFT_EYE = slice(36, 42), slice(42, 48)
_NOSE, _MOUTH_RIGHT, _MOUTH_LEFT = 30, 48, 54


def kps5_from_landmarks(points: np.ndarray) -> np.ndarray:
    """(N, 68, 2) points -> (N, 5, 2) eye centres, nose tip and mouth corners, in the
    detector's order (:class:`~mobileface.types.Faces`)."""
    points = np.asarray(points, np.float32)
    return np.stack([points[:, _RIGHT_EYE].mean(1), points[:, _LEFT_EYE].mean(1),
                     points[:, _NOSE], points[:, _MOUTH_RIGHT], points[:, _MOUTH_LEFT]], 1)


def _frame(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre (N, 2) and size (N,) of each face's points (root mean square radius)."""
    centre = points.mean(1)
    size = np.sqrt(((points - centre[:, None]) ** 2).sum(2).mean(1))
    return centre, np.maximum(size, 1e-3)


def box_on_points(boxes: np.ndarray, points: np.ndarray) -> np.ndarray:
    """How each box (N, 4) sits on its points (N, 68, 2): (N, 4) centre offset and size,
    in units of the points' own size (see :func:`box_from_points`)."""
    centre, size = _frame(np.asarray(points, np.float64))
    boxes = np.asarray(boxes, np.float64)
    middle = (boxes[:, :2] + boxes[:, 2:]) / 2
    return np.column_stack([(middle - centre) / size[:, None],
                            (boxes[:, 2:] - boxes[:, :2]) / size[:, None]])


def box_from_points(placement: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Boxes (N, 4) placed on points (N, 68, 2) as ``placement`` (from :func:`box_on_points`)
    says."""
    centre, size = _frame(np.asarray(points, np.float64))
    middle = centre + placement[:, :2] * size[:, None]
    half = placement[:, 2:] * size[:, None] / 2
    return np.column_stack([middle - half, middle + half]).astype(np.float32)


class DetectionSchedule:
    """Which frames the detector runs on: every ``every``-th frame and scene cuts (decided
    from the frames alone, in :meth:`periodic`, so that a detection thread can run ahead),
    plus the frames the last re-finding asked for (:attr:`urgent`)."""

    def __init__(self, every: int = DETECT_EVERY):
        if every < 1:
            raise ValueError(f"detect_every must be >= 1, got {every}")
        self.every = int(every)
        self.reset()

    def reset(self) -> None:
        self._count = 0
        #: the next frame that was not detected must be (set by the re-finding)
        self.urgent = False

    def periodic(self, cut: bool) -> bool:
        """Whether the detector runs on the next frame of the stream (called once per frame,
        in order)."""
        due = cut or self._count % self.every == 0
        self._count += 1
        return due


class Refinder:
    """Re-finds the faces of the last frame's tracks in a frame the detector skipped.

    landmarks: the pipeline's 68-point stage (it fills ``landmarks68`` from ``boxes``).
    """

    def __init__(self, landmarks, max_error: float = MAX_ERROR, min_inside: float = MIN_INSIDE,
                 min_likeness: float = MIN_LIKENESS):
        self.landmarks = landmarks
        self.max_error = float(max_error)
        self.min_inside = float(min_inside)
        self.min_likeness = float(min_likeness)
        self.reset()

    def reset(self) -> None:
        #: per track key: how its box sits on its points (from its last detector box)
        self._placement: dict[int, np.ndarray] = {}
        #: per track key: its last detector score
        self._score: dict[int, float] = {}
        #: per track key: the thumbnail of its box in the last frame (face_patches)
        self._patch: dict[int, np.ndarray] = {}
        #: per track key: its box and its 68 points in the last frame
        self._last: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        #: the thumbnails of the rows re-found in this frame, for observe
        self._found_patches: np.ndarray | None = None
        self._typical: np.ndarray | None = None
        #: the confirmed tracks found in the last frame
        self._seen: set[int] = set()

    def refind(self, image: np.ndarray, tracker, faces: Faces) -> tuple[Faces | None, bool]:
        """The re-found faces of ``image`` (rows with boxes, scores, 5 and 68 points; the
        frame's index, timestamp, timings and enhancement from ``faces``, the detector's
        empty result), and whether the next frame needs the detector; None when a face was
        lost (this frame needs the detector)."""
        keys, forecast = tracker.forecast()
        found = Faces(forecast, np.array([self._score.get(int(k), 1.0) for k in keys],
                                         np.float32),
                      frame_index=faces.frame_index, timestamp=faces.timestamp,
                      timings=faces.timings, enhancement=faces.enhancement, found_by="tracks",
                      scene_cut=faces.scene_cut)
        if not len(found):
            return found, False
        self._fit(image, found, keys)
        placement = np.array([self._placement.get(int(k), self._default()) for k in keys])
        boxes = box_from_points(placement, found.landmarks68)
        found.boxes = boxes
        found.kps5 = kps5_from_landmarks(found.landmarks68)
        patches = face_patches(image, boxes)
        before = np.array([self._patch.get(int(k), np.zeros(PATCH * PATCH, np.float32))
                           for k in keys])
        if ((patches * before).sum(1) < self.min_likeness).any():
            self._found_patches = None
            return None, False
        inside = _inside_share(boxes, image.shape[1], image.shape[0])
        error = _box_error(forecast, boxes)
        urgent = bool((error > self.max_error).any() or (inside < 1.0).any())
        keep = inside >= self.min_inside
        self._found_patches = patches[keep]
        return (found if keep.all() else found[keep]), urgent

    def _fit(self, image: np.ndarray, found: Faces, keys: np.ndarray) -> None:
        """The 68 points of the forecast boxes: refitted from each track's last points where
        the stage can, else fitted in full."""
        last = [self._last.get(int(k)) for k in keys]
        if not hasattr(self.landmarks, "refit") or any(item is None for item in last):
            self.landmarks(image, found)
            return
        boxes = np.array([box for box, _ in last], np.float64)
        points = np.array([p for _, p in last], np.float64)
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        target = found.boxes.astype(np.float64)
        scale = np.sqrt(np.prod(target[:, 2:] - target[:, :2], 1) /
                        np.maximum(np.prod(boxes[:, 2:] - boxes[:, :2], 1), 1e-6))
        start = (points - centre[:, None]) * scale[:, None, None] + \
            ((target[:, :2] + target[:, 2:]) / 2)[:, None]
        self.landmarks.refit(image, found, start)

    def observe(self, image: np.ndarray, faces: Faces, keys: np.ndarray, missed: Faces) -> bool:
        """After tracking: remember how each detector box sits on its points (rows the
        detector found; re-found rows keep what their track had). Returns whether the next
        frame needs the detector: when the detector missed a track seen in the frame before
        (a face it lost for a frame, which re-finding cannot follow: the next frames would
        miss it until the next detection)."""
        urgent = False
        if faces.found_by == "detector":
            # a new face needs a second detection to be confirmed (the tracker's min_hits)
            urgent = bool((faces.track_id <= 0).any()) or \
                bool(set(missed.track_id.tolist()) & self._seen)
        self._seen = {int(t) for t in faces.track_id if t > 0}
        if faces.found_by == "detector" and len(faces) and faces.landmarks68 is not None:
            placement = box_on_points(faces.boxes, faces.landmarks68)
            for key, row, score in zip(keys, placement, faces.scores):
                self._placement[int(key)] = row
                self._score[int(key)] = float(score)
            self._typical = np.median(placement, 0)
        patches = self._found_patches if faces.found_by == "tracks" else None
        if patches is None or len(patches) != len(faces):
            patches = face_patches(image, faces.boxes)
        self._found_patches = None
        for key, patch in zip(keys, patches):
            self._patch[int(key)] = patch
        if faces.landmarks68 is not None:
            for key, box, points in zip(keys, faces.boxes, faces.landmarks68):
                self._last[int(key)] = (box, points)
        live = {int(k) for k in keys}
        for table in (self._placement, self._score, self._patch, self._last):
            for key in [k for k in table if k not in live]:
                del table[key]
        return urgent

    def _default(self) -> np.ndarray:
        """The placement of a track with no detector box of its own: the last frame's median
        (a face sits in a RetinaFace box much the same way whoever it is)."""
        return self._typical if self._typical is not None else np.array([0.0, 0.2, 2.4, 3.0])


#: side of the grey thumbnails that compare a face with itself one frame before
PATCH = 24


def face_patches(image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N, PATCH*PATCH) grey thumbnails of the boxes, each with zero mean and unit length
    (so that the dot product of two is their normalised cross-correlation). Big boxes are
    read every few pixels first (down to about twice the thumbnail's side)."""
    import cv2

    height, width = image.shape[:2]
    out = np.zeros((len(boxes), PATCH * PATCH), np.float32)
    for row, (x1, y1, x2, y2) in enumerate(np.round(boxes).astype(int)):
        x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
        if x2 - x1 < 2 or y2 - y1 < 2:
            continue
        step = max(1, min(x2 - x1, y2 - y1) // (2 * PATCH))
        crop = cv2.resize(image[y1:y2:step, x1:x2:step], (PATCH, PATCH),
                          interpolation=cv2.INTER_AREA)
        out[row] = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY).ravel()
    out -= out.mean(1, keepdims=True)
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    return np.divide(out, norm, out=np.zeros_like(out), where=norm > 1e-3)


def _inside_share(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """The share of each box's area inside the image."""
    x1, y1 = np.maximum(boxes[:, 0], 0), np.maximum(boxes[:, 1], 0)
    x2, y2 = np.minimum(boxes[:, 2], width), np.minimum(boxes[:, 3], height)
    inside = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inside / np.maximum(area, 1e-6)


def _box_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How far apart two boxes of the same face are, in shares of their size: the larger
    of the centre distance and the change of side length."""
    size = np.sqrt(np.maximum((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]), 1e-6))
    shift = np.hypot(*(((a[:, :2] + a[:, 2:]) - (b[:, :2] + b[:, 2:])) / 2).T) / size
    other = np.sqrt(np.maximum((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), 1e-6))
    return np.maximum(shift, np.abs(np.log(other / size)))
