"""SORT-style face tracker: a Kalman filter per face and Hungarian matching on IoU.

After Bewley et al., "Simple Online and Realtime Tracking" (2016). Each track's
state is ``[x, y, s, r, vx, vy, vs]``: box centre, area, aspect ratio (held
constant) and the velocities of the first three; the filter is filterpy's
:class:`KalmanFilter` with SORT's noise settings. Each frame, every track is
predicted, predictions and detections are paired by the assignment that
maximises the total IoU (:mod:`mobileface.track.assignment`), and pairs below
``iou_threshold`` are rejected.

Differences from the reference sort.py, on purpose:

* ids belong to the tracker instance, start at 1, are given when a track is
  confirmed (so they are consecutive), and :meth:`SortTracker.reset` starts
  them again;
* it takes the frame's :class:`~mobileface.types.Faces` and returns the same
  rows, in the same order, with ``track_id`` filled (-1 for a detection whose
  track is not confirmed yet), followed by one row per confirmed track the
  detector missed in this frame, with its predicted box and ``predicted=True``;
* re-identification: a new track whose appearance (an embedding, given with
  :meth:`SortTracker.set_appearance`) matches a track lost within the last
  ``reid_seconds`` takes back that track's id;
* a track whose id can no longer come back is listed in ``finished`` after
  the update in which it ended, once;
* :meth:`SortTracker.cut` ends every track at once, for a scene cut in
  edited video, where a face of the next shot must not inherit the id of a
  face that happened to be at the same place.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from mobileface.detect.boxes import iou_matrix
from mobileface.track.assignment import linear_sum_assignment
from mobileface.types import Faces
from mobileface.vectors import normalise


def _box_to_z(box: np.ndarray) -> np.ndarray:
    w, h = box[2] - box[0], box[3] - box[1]
    return np.array([[box[0] + w / 2], [box[1] + h / 2], [w * h], [w / max(h, 1e-6)]])


def _x_to_box(x: np.ndarray) -> np.ndarray:
    area, ratio = max(float(x[2, 0]), 1e-6), max(float(x[3, 0]), 1e-6)
    w = np.sqrt(area * ratio)
    h = area / w
    cx, cy = float(x[0, 0]), float(x[1, 0])
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], np.float32)


class _Track:
    """One face's Kalman filter and counters (SORT's KalmanBoxTracker)."""

    def __init__(self, box: np.ndarray, key: int = 0):
        from filterpy.kalman import KalmanFilter

        kf = KalmanFilter(dim_x=7, dim_z=4)
        kf.F = np.eye(7)
        kf.F[0, 4] = kf.F[1, 5] = kf.F[2, 6] = 1.0
        kf.H = np.eye(4, 7)
        kf.R[2:, 2:] *= 10.0
        kf.P[4:, 4:] *= 1000.0  # velocities are unknown at first
        kf.P *= 10.0
        kf.Q[-1, -1] *= 0.01
        kf.Q[4:, 4:] *= 0.01
        kf.x[:4] = _box_to_z(box)
        self.kf = kf
        self.key = key         # the tracker's own serial number, from the track's first frame
        self.id = 0            # 0 until confirmed
        self.hits = 1          # consecutive frames with a detection
        self.misses = 0        # frames since the last detection
        self.box = np.asarray(box, np.float32)
        self.appearance: np.ndarray | None = None

    def predict(self) -> np.ndarray:
        if self.kf.x[2, 0] + self.kf.x[6, 0] <= 0:
            self.kf.x[6, 0] = 0.0  # the area would turn negative
        self.kf.predict()
        if self.misses > 0:
            self.hits = 0
        self.misses += 1
        self.box = _x_to_box(self.kf.x)
        return self.box

    def forecast(self) -> np.ndarray:
        """The box that :meth:`predict` will give for the next frame (nothing changes)."""
        x = self.kf.x.copy()
        if x[2, 0] + x[6, 0] <= 0:
            x[6, 0] = 0.0
        return _x_to_box(self.kf.F @ x)

    def update(self, box: np.ndarray) -> None:
        self.misses = 0
        self.hits += 1
        self.kf.update(_box_to_z(box))
        self.box = np.asarray(box, np.float32)


@dataclass
class _Lost:
    appearance: np.ndarray
    since: float


class SortTracker:
    """Track faces from frame to frame.

    max_age: frames a track survives without a detection (its box is predicted
        meanwhile); ids stay stable through shorter misses.
    min_hits: detections in a row before a new track is confirmed and given
        an id (the first ``min_hits`` frames of a session confirm at once).
    iou_threshold: the least IoU between a prediction and a detection to pair them.
    reid_seconds: how long a lost track's id can be taken back by a new track
        with the same appearance (0 turns re-identification off).
    reid_similarity: the least cosine similarity of two appearances for that.
    max_lost: at most this many lost tracks are remembered (oldest go first).
    first_id: the id of the first track (a restarted camera of the site service starts
        above every id its previous run gave, so that ids stay unique per camera and run).
    """

    def __init__(self, max_age: int = 15, min_hits: int = 2, iou_threshold: float = 0.3,
                 reid_seconds: float = 3.0, reid_similarity: float = 0.9, max_lost: int = 64,
                 first_id: int = 1):
        if max_age < 0:
            raise ValueError(f"max_age must be >= 0, got {max_age}")
        if min_hits < 1:
            raise ValueError(f"min_hits must be >= 1, got {min_hits}")
        if not 0.0 <= iou_threshold < 1.0:
            raise ValueError(f"iou_threshold must be in [0, 1), got {iou_threshold}")
        if reid_seconds < 0:
            raise ValueError(f"reid_seconds must be >= 0, got {reid_seconds}")
        if not -1.0 <= reid_similarity <= 1.0:
            raise ValueError(f"reid_similarity must be in [-1, 1], got {reid_similarity}")
        if max_lost < 0:
            raise ValueError(f"max_lost must be >= 0, got {max_lost}")
        if first_id < 1:
            raise ValueError(f"first_id must be >= 1, got {first_id}")
        self.first_id = int(first_id)
        import filterpy.kalman  # noqa: F401  (0.7 s to import: here, not in the first frame)
        self.max_age = int(max_age)
        self.min_hits = int(min_hits)
        self.iou_threshold = float(iou_threshold)
        self.reid_seconds = float(reid_seconds)
        self.reid_similarity = float(reid_similarity)
        self.max_lost = int(max_lost)
        self.reset()

    def reset(self) -> None:
        """Forget every track; the next confirmed track gets ``first_id`` again."""
        self._tracks: list[_Track] = []
        self._lost: OrderedDict[int, _Lost] = OrderedDict()
        self._next_id = self.first_id
        self._frames = 0
        self._now = 0.0
        self._pending_finished: list[int] = []
        self._next_key = 1
        #: ids that ended during the last update and will never come back
        self.finished: list[int] = []
        #: after an update: for each detection row, the key of the track it belongs to
        #: (keys number every track, confirmed or not, and are never reused in a session)
        self.keys = np.zeros(0, np.int64)

    @property
    def live_ids(self) -> list[int]:
        return [t.id for t in self._tracks if t.id]

    def forecast(self) -> tuple[np.ndarray, np.ndarray]:
        """The confirmed tracks detected in the last frame: their keys (as in :attr:`keys`)
        and their boxes predicted for the next frame, (K, 4) float32. Nothing changes: the
        next :meth:`update` predicts the same boxes."""
        seen = [t for t in self._tracks if t.misses == 0 and t.id]
        boxes = np.array([t.forecast() for t in seen], np.float32).reshape(-1, 4)
        return np.array([t.key for t in seen], np.int64), boxes

    def update(self, faces: Faces, timestamp: float | None = None) -> Faces:
        """Advance one frame with its detections; returns them with ``track_id`` and
        ``predicted`` filled, then the rows of the confirmed tracks missed in this frame.

        timestamp: the frame's time in seconds (video time for files); the
        frame's own ``faces.timestamp``, or the wall clock, when None. Only
        re-identification uses it. The ids that ended are in :attr:`finished`.
        """
        if not isinstance(faces, Faces):
            raise ValueError(f"the tracker takes Faces, got {type(faces).__name__}")
        boxes = faces.boxes
        if timestamp is None:
            timestamp = faces.timestamp
        self._frames += 1
        self._now = time.monotonic() if timestamp is None else float(timestamp)
        finished, self._pending_finished = self._pending_finished, []

        predictions = np.array([t.predict() for t in self._tracks], np.float32).reshape(-1, 4)
        valid = np.isfinite(predictions).all(1)
        if not valid.all():
            self._tracks = [t for t, ok in zip(self._tracks, valid) if ok]
            predictions = predictions[valid]
        pairs = self._match(predictions, boxes)
        matched_det = np.full(len(self._tracks), -1, np.int64)
        for ti, di in pairs:
            self._tracks[ti].update(boxes[di])
            matched_det[ti] = di
        unmatched = np.setdiff1d(np.arange(len(boxes)), pairs[:, 1] if len(pairs) else [])
        for di in unmatched:
            self._tracks.append(_Track(boxes[di], self._next_key))
            self._next_key += 1
            matched_det = np.append(matched_det, di)
        keys = np.zeros(len(boxes), np.int64)
        for track, di in zip(self._tracks, matched_det):
            if di >= 0:
                keys[di] = track.key
        self.keys = keys

        ids = np.full(len(faces), -1, np.int64)
        missed = []
        kept = []
        for track, di in zip(self._tracks, matched_det):
            if track.misses > self.max_age:
                if track.id:
                    self._lose(track, finished)
                continue
            kept.append(track)
            if not track.id and track.misses == 0 and \
                    (track.hits >= self.min_hits or self._frames <= self.min_hits):
                track.id = self._next_id
                self._next_id += 1
            if track.id and di >= 0:
                ids[di] = track.id
            elif track.id:
                missed.append(track)
        self._tracks = kept
        finished.extend(self._expire())
        self.finished = finished
        return self._rows(faces, ids, missed)

    @staticmethod
    def _rows(faces: Faces, ids: np.ndarray, missed: list[_Track]) -> Faces:
        detected = faces[slice(None)]
        detected.track_id = ids
        detected.predicted = np.zeros(len(faces), bool)
        if not missed:
            return detected
        predicted = Faces(np.array([t.box for t in missed], np.float32),
                          np.zeros(len(missed), np.float32),
                          track_id=np.array([t.id for t in missed], np.int64),
                          predicted=np.ones(len(missed), bool))
        return Faces.concat([detected, predicted])

    def cut(self) -> None:
        """End every live track now (a scene cut): the next detections start new tracks.

        Ended tracks are lost as usual: with an appearance they can still be
        re-identified within ``reid_seconds``, the others are listed as
        finished by the next update.
        """
        for track in self._tracks:
            if track.id:
                self._lose(track, self._pending_finished)
        self._tracks = []

    def _match(self, predictions: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(K, 2) pairs (track row, detection row) with IoU above the threshold."""
        if len(predictions) == 0 or len(boxes) == 0:
            return np.zeros((0, 2), np.int64)
        iou = iou_matrix(predictions, boxes)
        rows, cols = linear_sum_assignment(-iou)
        good = iou[rows, cols] >= max(self.iou_threshold, 1e-6)
        return np.stack([rows[good], cols[good]], 1).astype(np.int64)

    def _lose(self, track: _Track, finished: list[int]) -> None:
        """A confirmed track stopped: remember it for re-identification, or finish it."""
        if self.reid_seconds > 0 and track.appearance is not None and self.max_lost > 0:
            self._lost[track.id] = _Lost(track.appearance, self._now)
            while len(self._lost) > self.max_lost:
                finished.append(self._lost.popitem(last=False)[0])
        else:
            finished.append(track.id)

    def _expire(self) -> list[int]:
        gone = [tid for tid, lost in self._lost.items()
                if self._now - lost.since > self.reid_seconds]
        for tid in gone:
            del self._lost[tid]
        return gone

    def set_appearance(self, track_id: int, embedding: np.ndarray) -> int:
        """Give a live track its appearance; returns the id it has from now on.

        The first appearance of a track is compared with the tracks lost in
        the last ``reid_seconds``; when the most similar one reaches
        ``reid_similarity`` (cosine), the track takes back that id and the id
        it had is retired (it is never listed as finished: its history goes on
        under the old id). Later calls only replace the stored appearance.
        """
        track = next((t for t in self._tracks if t.id == track_id), None)
        if track is None:
            raise ValueError(f"no live track with id {track_id}")
        vector = normalise(np.reshape(embedding, -1))
        first = track.appearance is None
        track.appearance = vector
        if not first or not self._lost:
            return track.id
        ids = list(self._lost)
        gallery = np.stack([self._lost[i].appearance for i in ids])
        if gallery.shape[1] != vector.shape[0]:
            return track.id
        similarity = gallery @ vector
        best = int(similarity.argmax())
        if similarity[best] < self.reid_similarity:
            return track.id
        old_id = ids[best]
        del self._lost[old_id]
        track.id = old_id
        return old_id

    def flush(self) -> list[int]:
        """End of the stream: every id still live or lost, now finished."""
        ids = self._pending_finished + list(self._lost) + self.live_ids
        self._tracks = []
        self._lost.clear()
        self._pending_finished = []
        return ids
