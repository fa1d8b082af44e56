"""Per-track event messages (``new``, ``update``, ``end``) from the engine's frames.

The engine (:class:`~mobileface.pipeline.video.FacePipeline`) reports every
frame's faces and the tracks that just ended; a consumer of an event stream
(Home Assistant, an NVR, an alarm panel) wants one message when a person
appears, when what is known of them changes, and when they leave, as
Frigate's ``frigate/events`` gives. :class:`TrackEvents` turns one camera's
frames into such messages:

* ``new`` the first time the detector finds a track (the tracker's predicted
  rows, faces the detector missed, never start one);
* ``update`` when the track's identity changes (unknown -> a name, a name ->
  another), and otherwise at most every ``update_interval`` seconds of stream
  time while the track is detected (a heartbeat: it is still there);
* ``end`` when the engine finishes the track. Its fields are those of the
  events file's line (:meth:`~mobileface.track.memory.TrackSummary.to_record`);
  a track that the engine never finishes (its id was merged into an older one
  by re-identification) ends after ``forget_after`` seconds unseen.

Every message is plain JSON (unknown values are null, never NaN) and carries
``event_id`` = ``{camera}:{run_id}:{track_id}:{type}:{n}``, where ``n``
counts the track's messages from 0. The same stream gives the same ids, so a
consumer drops duplicates (at-least-once delivery) by ``event_id``. ``id`` is
the track's id, the same in all of its messages (Frigate's event ``id``).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from mobileface.identity.gallery import UNKNOWN
from mobileface.pipeline.video import FrameResult
from mobileface.track.memory import TrackSummary
from mobileface.types import gender_label

#: the fields of every message's state (its top level, ``before`` and ``after``)
STATE_FIELDS = (
    "id", "camera", "track_id", "label", "identity", "sub_label", "similarity", "age",
    "gender", "gender_confidence", "quality", "pose_range", "first_frame", "last_frame",
    "first_time", "last_time", "frames", "best_shot", "best_shot_frame",
)
AXES = ("yaw", "pitch", "roll")


def finite(value, digits: int | None = None):
    """A number as plain Python (rounded to ``digits``), None when unknown or not finite."""
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value):
        return None
    return value if digits is None else round(value, digits)


def known_name(name) -> str | None:
    """A recognised name, or None for nobody ("", "Unknown" or no recognition at all)."""
    if name is None:
        return None
    name = str(name)
    return None if name in ("", UNKNOWN) else name


@dataclass
class _Track:
    """What the messages of one live track need (bounded: a few numbers per track)."""

    track_id: int
    first_frame: int
    first_time: float
    last_frame: int = -1
    last_time: float = 0.0
    seen_time: float = 0.0       # stream time of its last row, detected or predicted
    frames: int = 0
    identity: str | None = None
    similarity: float | None = None
    age: float | None = None
    male: float | None = None
    best_quality: float | None = None
    pose_min: np.ndarray = field(default_factory=lambda: np.full(3, np.inf, np.float32))
    pose_max: np.ndarray = field(default_factory=lambda: np.full(3, -np.inf, np.float32))
    sent: int = 0                # messages so far (the n of the next event id)
    sent_time: float = -math.inf
    before: dict | None = None   # the state of its last message

    def pose_range(self) -> dict[str, list[float] | None]:
        known = bool(np.isfinite(self.pose_min).all())
        return {axis: ([round(float(self.pose_min[i]), 1), round(float(self.pose_max[i]), 1)]
                       if known else None) for i, axis in enumerate(AXES)}


class TrackEvents:
    """The ``new``/``update``/``end`` messages of one camera's tracks, in order.

    camera: the camera's name (in every message and topic). run_id: this run
    of the camera; with the camera and the track id it makes the event ids
    unique, so a track id must not come back within one run (a pipeline's
    ``reset()`` restarts its ids: use a new TrackEvents with a new run_id).
    update_interval: seconds of stream time between two updates of a track
    whose identity has not changed (None: only on changes). forget_after:
    stream seconds after which a track that is no longer in any row, and that
    the engine did not finish, ends anyway. best_shot: gives the reference of a
    finished track's best-shot crop (a path or URL, None when there is none),
    e.g. where an events sink saved it.
    """

    def __init__(self, camera: str, run_id: str, update_interval: float | None = 5.0,
                 forget_after: float = 60.0,
                 best_shot: Callable[[TrackSummary], str | None] | None = None):
        if not camera or not run_id:
            raise ValueError("TrackEvents needs a camera name and a run id")
        if update_interval is not None and not update_interval > 0:
            raise ValueError(f"update_interval must be > 0 seconds or None, got {update_interval}")
        if not forget_after > 0:
            raise ValueError(f"forget_after must be > 0 seconds, got {forget_after}")
        self.camera, self.run_id = str(camera), str(run_id)
        self.update_interval = update_interval
        self.forget_after = float(forget_after)
        self.best_shot = best_shot
        self.tracks: dict[int, _Track] = {}
        self.finished = False

    # -- the engine's frames ------------------------------------------------------------

    def messages(self, result: FrameResult, frame_time: float | None = None) -> list[dict]:
        """The messages of one processed frame, in order: ``new`` and ``update`` for its
        detected rows, then ``end`` for the tracks that ended with it.

        frame_time: when the frame was taken (Unix seconds, Frigate's ``frame_time``;
        now when None).
        """
        if self.finished:
            raise ValueError(f"the stream of camera {self.camera!r} has finished; a new one "
                             "needs a new TrackEvents (with a new run_id)")
        frame_time = time.time() if frame_time is None else float(frame_time)
        faces = result.faces
        now = float(faces.timestamp) if faces.timestamp is not None else 0.0
        out = []
        if faces.track_id is not None and len(faces):
            predicted = faces.predicted if faces.predicted is not None else \
                np.zeros(len(faces), bool)
            for row, tid in enumerate(faces.track_id):
                tid = int(tid)
                if tid <= 0:
                    continue
                if predicted[row]:
                    if tid in self.tracks:
                        self.tracks[tid].seen_time = now
                    continue
                message = self._seen(faces, row, tid, now, frame_time)
                if message is not None:
                    out.append(message)
        for summary in result.finished:
            out.append(self._end(summary, frame_time))
        out += self._expire(now, frame_time)
        return out

    def finish(self, summaries: list[TrackSummary], frame_time: float | None = None) -> list[dict]:
        """The end of the stream: ``end`` for each of ``summaries`` (the engine's
        ``finish()``), then for every track it did not list."""
        frame_time = time.time() if frame_time is None else float(frame_time)
        out = [self._end(summary, frame_time) for summary in summaries]
        out += [self._end_unfinished(tid, frame_time) for tid in sorted(self.tracks)]
        self.finished = True
        return out

    def present(self) -> tuple[int, list[str]]:
        """(how many tracks are going on, the sorted names of those recognised)."""
        names = sorted({t.identity for t in self.tracks.values() if t.identity is not None})
        return len(self.tracks), names

    # -- one track -----------------------------------------------------------------------

    def _seen(self, faces, row: int, tid: int, now: float, frame_time: float) -> dict | None:
        track = self.tracks.get(tid)
        fresh = track is None
        if fresh:
            track = self.tracks[tid] = _Track(tid, int(faces.frame_index), now)
        previous = track.identity
        _observe(track, faces, row, now)
        if fresh:
            kind = "new"
        elif track.identity != previous:
            kind = "update"
        elif self.update_interval is not None and \
                now - track.sent_time >= self.update_interval - 1e-6:
            kind = "update"
        else:
            return None
        track.sent_time = now
        return self._message(track, kind, self._state(track), frame_time)

    def _state(self, track: _Track) -> dict:
        gender, confidence = gender_label(np.nan if track.male is None else track.male)
        return {"id": self._track_key(track.track_id), "camera": self.camera,
                "track_id": track.track_id, "label": "face", "identity": track.identity,
                "sub_label": track.identity, "similarity": finite(track.similarity, 4),
                "age": finite(track.age, 1), "gender": gender, "gender_confidence": confidence,
                "quality": finite(track.best_quality, 4), "pose_range": track.pose_range(),
                "first_frame": track.first_frame, "last_frame": track.last_frame,
                "first_time": round(track.first_time, 3), "last_time": round(track.last_time, 3),
                "frames": track.frames, "best_shot": None, "best_shot_frame": -1}

    def _end(self, summary: TrackSummary, frame_time: float) -> dict:
        """The end of a track the engine finished: the events file's record, as a state."""
        track = self.tracks.pop(summary.track_id, None) or \
            _Track(summary.track_id, summary.first_frame, summary.first_time)
        record = summary.to_record()
        identity = known_name(record["identity"])
        state = {"id": self._track_key(summary.track_id), "camera": self.camera,
                 "track_id": summary.track_id, "label": "face", "identity": identity,
                 "sub_label": identity, "similarity": record["similarity"],
                 "age": record["age"], "gender": record["gender"],
                 "gender_confidence": record["gender_confidence"],
                 "quality": record["best_quality"], "pose_range": record["pose_range"],
                 "first_frame": record["first_frame"], "last_frame": record["last_frame"],
                 "first_time": record["first_time"], "last_time": record["last_time"],
                 "frames": record["frames"], "best_shot": None,
                 "best_shot_frame": record["best_shot_frame"]}
        if self.best_shot is not None and summary.best_shot is not None:
            state["best_shot"] = self.best_shot(summary)
        return self._message(track, "end", state, frame_time)

    def _end_unfinished(self, tid: int, frame_time: float) -> dict:
        """The end of a track the engine never finished, from what its messages knew."""
        track = self.tracks.pop(tid)
        return self._message(track, "end", self._state(track), frame_time)

    def _expire(self, now: float, frame_time: float) -> list[dict]:
        stale = [tid for tid, t in self.tracks.items() if now - t.seen_time > self.forget_after]
        return [self._end_unfinished(tid, frame_time) for tid in sorted(stale)]

    def _message(self, track: _Track, kind: str, state: dict, frame_time: float) -> dict:
        n = track.sent
        track.sent += 1
        message = {"event_id": f"{state['id']}:{kind}:{n}", "type": kind, **state,
                   "frame_time": round(frame_time, 3), "before": track.before, "after": state}
        track.before = state
        return message

    def _track_key(self, track_id: int) -> str:
        return f"{self.camera}:{self.run_id}:{track_id}"


def _observe(track: _Track, faces, row: int, now: float) -> None:
    """Take in one detected row of the track: its identity, the track's age and gender
    votes, its quality and pose."""
    track.last_frame, track.last_time, track.seen_time = int(faces.frame_index), now, now
    track.frames += 1
    if faces.identity is not None:
        track.identity = known_name(faces.identity[row])
        track.similarity = finite(faces.similarity[row]) if faces.similarity is not None else None
    if faces.track_age is not None:
        track.age = finite(faces.track_age[row])
        track.male = finite(faces.track_gender[row])
    if faces.quality is not None:
        quality = finite(faces.quality[row])
        if quality is not None and (track.best_quality is None or quality > track.best_quality):
            track.best_quality = quality
    if faces.pose is not None and np.isfinite(faces.pose[row]).all():
        np.minimum(track.pose_min, faces.pose[row], out=track.pose_min)
        np.maximum(track.pose_max, faces.pose[row], out=track.pose_max)
