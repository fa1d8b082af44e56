"""SORT-style face tracker: a Kalman filter per face and Hungarian matching on IoU.

After Bewley et al., "Simple Online and Realtime Tracking" (2016). Each track's
state is ``[x, y, s, r, vx, vy, vs]``: box centre, area, aspect ratio (held
constant) and the velocities of the first three; the filter is the one SORT
gets from filterpy's ``KalmanFilter``, with SORT's noise settings, run for all
tracks at once on stacked arrays (N x 7 states, N x 7 x 7 covariances: one
numpy call per step however many faces; on the shared clips the same ids and
boxes as filterpy's per-track filter, tests/test_track_recorded.py). Each
frame, every track is predicted, predictions and detections are paired by the
assignment that maximises the total IoU (:mod:`mobileface.track.assignment`),
and pairs below ``iou_threshold`` are rejected.

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


def _boxes_to_z(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) xyxy -> (N, 4) measurements [x, y, s, r] (centre, area, aspect ratio)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return np.stack([boxes[:, 0] + w / 2, boxes[:, 1] + h / 2, w * h,
                     w / np.maximum(h, 1e-6)], 1)


def _states_to_boxes(x: np.ndarray) -> np.ndarray:
    """(N, 7) states -> (N, 4) float32 xyxy boxes."""
    area, ratio = np.maximum(x[:, 2], 1e-6), np.maximum(x[:, 3], 1e-6)
    w = np.sqrt(area * ratio)
    h = area / w
    return np.stack([x[:, 0] - w / 2, x[:, 1] - h / 2, x[:, 0] + w / 2, x[:, 1] + h / 2],
                    1).astype(np.float32)


# SORT's constant-velocity model and noise (filterpy's defaults, then SORT's changes).
_F = np.eye(7)
_F[0, 4] = _F[1, 5] = _F[2, 6] = 1.0
_R = np.eye(4)
_R[2:, 2:] *= 10.0
_P0 = np.eye(7)
_P0[4:, 4:] *= 1000.0  # velocities are unknown at first
_P0 *= 10.0
_Q = np.eye(7)
_Q[-1, -1] *= 0.01
_Q[4:, 4:] *= 0.01
_I7 = np.eye(7)


class _Tracks:
    """Every track's Kalman filter and counters, as parallel arrays (one row per track).

    x: (N, 7) states, P: (N, 7, 7) covariances; boxes: (N, 4) float32, the
    detection when the track was matched this frame, else its predicted box;
    ids (0 until confirmed), hits (consecutive frames with a detection) and
    misses (frames since the last detection); keys: the tracker's serial number of
    each track, from its first frame (confirmed or not); appearance: one embedding or
    None per track. The filter is the one SORT gets from filterpy (predict
    x = F x, P = F P F' + Q; update with the Joseph form of P), for all
    tracks at once.
    """

    def __init__(self, boxes: np.ndarray | None = None, keys: np.ndarray | None = None):
        n = 0 if boxes is None else len(boxes)
        self.x = np.zeros((n, 7))
        if n:
            self.x[:, :4] = _boxes_to_z(boxes)
        self.P = np.broadcast_to(_P0, (n, 7, 7)).copy()
        self.boxes = np.asarray(boxes if n else np.zeros((0, 4)), np.float32).reshape(-1, 4)
        self.ids = np.zeros(n, np.int64)
        self.hits = np.ones(n, np.int64)
        self.misses = np.zeros(n, np.int64)
        self.keys = np.zeros(n, np.int64) if keys is None else np.asarray(keys, np.int64)
        self.appearance: list[np.ndarray | None] = [None] * n

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, rows: np.ndarray) -> "_Tracks":
        """The tracks of ``rows`` (a boolean mask or indices), in that order."""
        rows = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.asarray(rows)
        out = _Tracks.__new__(_Tracks)
        for name in ("x", "P", "boxes", "ids", "hits", "misses", "keys"):
            setattr(out, name, getattr(self, name)[rows])
        out.appearance = [self.appearance[i] for i in rows]
        return out

    def extend(self, other: "_Tracks") -> None:
        for name in ("x", "P", "boxes", "ids", "hits", "misses", "keys"):
            setattr(self, name, np.concatenate([getattr(self, name), getattr(other, name)]))
        self.appearance += other.appearance

    def _next_states(self) -> np.ndarray:
        x = self.x.copy()
        x[x[:, 2] + x[:, 6] <= 0, 6] = 0.0  # the area would turn negative
        return x @ _F.T

    def predicted_boxes(self) -> np.ndarray:
        """(N, 4) float32: the boxes :meth:`predict` will give, without advancing."""
        return _states_to_boxes(self._next_states())

    def predict(self) -> np.ndarray:
        """Advance every track one frame; returns the (N, 4) predicted boxes."""
        self.x = self._next_states()
        self.P = _F @ self.P @ _F.T + _Q
        self.hits[self.misses > 0] = 0
        self.misses += 1
        self.boxes = _states_to_boxes(self.x)
        return self.boxes

    def update(self, rows: np.ndarray, boxes: np.ndarray) -> None:
        """Correct the tracks of ``rows`` with their detections ``boxes`` (one each)."""
        if len(rows) == 0:
            return
        x, P = self.x[rows], self.P[rows]
        S = P[:, :4, :4] + _R                        # H P H' + R, H = [I 0]
        K = P[:, :, :4] @ np.linalg.inv(S)           # P H' S^-1, (K, 7, 4)
        y = _boxes_to_z(boxes) - x[:, :4]
        self.x[rows] = x + (K @ y[:, :, None])[:, :, 0]
        I_KH = np.tile(_I7, (len(rows), 1, 1))
        I_KH[:, :, :4] -= K
        self.P[rows] = I_KH @ P @ I_KH.transpose(0, 2, 1) + K @ _R @ K.transpose(0, 2, 1)
        self.misses[rows] = 0
        self.hits[rows] += 1
        self.boxes[rows] = boxes


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
        self.max_age = int(max_age)
        self.min_hits = int(min_hits)
        self.iou_threshold = float(iou_threshold)
        self.reid_seconds = float(reid_seconds)
        self.reid_similarity = float(reid_similarity)
        self.max_lost = int(max_lost)
        self.reset()

    def reset(self) -> None:
        """Forget every track; the next confirmed track gets ``first_id`` again."""
        self._tracks = _Tracks()
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
        return self._tracks.ids[self._tracks.ids > 0].tolist()

    def forecast(self) -> tuple[np.ndarray, np.ndarray]:
        """The confirmed tracks detected in the last frame: their keys (as in :attr:`keys`)
        and their boxes predicted for the next frame, (K, 4) float32. Nothing changes: the
        next :meth:`update` predicts the same boxes."""
        tracks = self._tracks
        seen = (tracks.misses == 0) & (tracks.ids > 0)
        return tracks.keys[seen], tracks.predicted_boxes()[seen]

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

        tracks = self._tracks
        predictions = tracks.predict()
        valid = np.isfinite(predictions).all(1)
        if not valid.all():
            tracks = self._tracks = tracks.take(valid)
            predictions = tracks.boxes
        pairs = self._match(predictions, boxes)
        tracks.update(pairs[:, 0], boxes[pairs[:, 1]])
        matched_det = np.full(len(tracks), -1, np.int64)
        matched_det[pairs[:, 0]] = pairs[:, 1]
        free = np.ones(len(boxes), bool)
        free[pairs[:, 1]] = False
        unmatched = np.flatnonzero(free)
        if len(unmatched):
            keys = np.arange(self._next_key, self._next_key + len(unmatched))
            self._next_key += len(unmatched)
            tracks.extend(_Tracks(boxes[unmatched], keys))
            matched_det = np.concatenate([matched_det, unmatched])
        self.keys = np.zeros(len(boxes), np.int64)
        self.keys[matched_det[matched_det >= 0]] = tracks.keys[matched_det >= 0]

        expired = tracks.misses > self.max_age
        for row in np.flatnonzero(expired & (tracks.ids > 0)):
            self._lose(int(tracks.ids[row]), tracks.appearance[row], finished)
        if expired.any():
            tracks = self._tracks = tracks.take(~expired)
            matched_det = matched_det[~expired]
        confirm = (tracks.ids == 0) & (tracks.misses == 0)
        if self._frames > self.min_hits:
            confirm &= tracks.hits >= self.min_hits
        new = np.flatnonzero(confirm)
        tracks.ids[new] = np.arange(self._next_id, self._next_id + len(new))
        self._next_id += len(new)
        ids = np.full(len(faces), -1, np.int64)
        confirmed = tracks.ids > 0
        seen = confirmed & (matched_det >= 0)
        ids[matched_det[seen]] = tracks.ids[seen]
        finished.extend(self._expire())
        self.finished = finished
        missed = confirmed & (matched_det < 0)
        return self._rows(faces, ids, tracks.boxes[missed], tracks.ids[missed])

    @staticmethod
    def _rows(faces: Faces, ids: np.ndarray, missed_boxes: np.ndarray,
              missed_ids: np.ndarray) -> Faces:
        detected = faces[slice(None)]
        detected.track_id = ids
        detected.predicted = np.zeros(len(faces), bool)
        if not len(missed_ids):
            return detected
        predicted = Faces(missed_boxes, np.zeros(len(missed_ids), np.float32),
                          track_id=missed_ids, predicted=np.ones(len(missed_ids), bool))
        return Faces.concat([detected, predicted])

    def cut(self) -> None:
        """End every live track now (a scene cut): the next detections start new tracks.

        Ended tracks are lost as usual: with an appearance they can still be
        re-identified within ``reid_seconds``, the others are listed as
        finished by the next update.
        """
        tracks = self._tracks
        for row in np.flatnonzero(tracks.ids > 0):
            self._lose(int(tracks.ids[row]), tracks.appearance[row], self._pending_finished)
        self._tracks = _Tracks()

    def _match(self, predictions: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(K, 2) pairs (track row, detection row) with IoU above the threshold."""
        if len(predictions) == 0 or len(boxes) == 0:
            return np.zeros((0, 2), np.int64)
        iou = iou_matrix(predictions, boxes)
        rows, cols = linear_sum_assignment(-iou)
        good = iou[rows, cols] >= max(self.iou_threshold, 1e-6)
        return np.stack([rows[good], cols[good]], 1).astype(np.int64)

    def _lose(self, track_id: int, appearance: np.ndarray | None, finished: list[int]) -> None:
        """A confirmed track stopped: remember it for re-identification, or finish it."""
        if self.reid_seconds > 0 and appearance is not None and self.max_lost > 0:
            self._lost[track_id] = _Lost(appearance, self._now)
            while len(self._lost) > self.max_lost:
                finished.append(self._lost.popitem(last=False)[0])
        else:
            finished.append(track_id)

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
        rows = np.flatnonzero(self._tracks.ids == track_id)
        if len(rows) == 0:
            raise ValueError(f"no live track with id {track_id}")
        row = int(rows[0])
        vector = normalise(np.reshape(embedding, -1))
        first = self._tracks.appearance[row] is None
        self._tracks.appearance[row] = vector
        if not first or not self._lost:
            return track_id
        ids = list(self._lost)
        gallery = np.stack([self._lost[i].appearance for i in ids])
        if gallery.shape[1] != vector.shape[0]:
            return track_id
        similarity = gallery @ vector
        best = int(similarity.argmax())
        if similarity[best] < self.reid_similarity:
            return track_id
        old_id = ids[best]
        del self._lost[old_id]
        self._tracks.ids[row] = old_id
        return old_id

    def flush(self) -> list[int]:
        """End of the stream: every id still live or lost, now finished."""
        ids = self._pending_finished + list(self._lost) + self.live_ids
        self._tracks = _Tracks()
        self._lost.clear()
        self._pending_finished = []
        return ids
