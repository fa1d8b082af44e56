"""What the engine remembers of each track: bounded, and released when the track ends.

Over a track, age is the median of its samples, gender a confidence-weighted
vote, and the best shot (the face at its highest quality) is kept with its
embedding. The identity is a vote over the track's recognition decisions
(:class:`mobileface.identity.gallery.IdentityVote`).
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from mobileface.identity.gallery import IdentityVote
from mobileface.types import gender_label


@dataclass(frozen=True)
class MemoryLimits:
    """How much of a track is kept: age/gender samples, and the window of identity votes."""

    attribute_samples: int = 15
    vote_window: int = 9
    hysteresis: int = 2
    confirm_votes: int = 3


@dataclass
class TrackSummary:
    """What is known about a finished track (one line of the events file)."""

    track_id: int
    identity: str | None
    similarity: float | None
    first_frame: int
    last_frame: int
    first_time: float
    last_time: float
    frames: int
    age: float | None
    gender: str | None
    gender_confidence: float | None
    best_quality: float
    pose_range: dict[str, list[float]]
    best_shot: np.ndarray | None = None
    best_shot_frame: int = -1
    #: frames of the track in which it was detected in a low-light enhanced frame
    enhanced_frames: int = 0
    #: the normalised embedding of the best shot (None without recognition); not in the record
    embedding: np.ndarray | None = None

    def to_record(self) -> dict:
        def rounded(value, digits):
            return None if value is None or not math.isfinite(value) else round(value, digits)

        return {"track_id": self.track_id, "identity": self.identity,
                "similarity": rounded(self.similarity, 4),
                "first_frame": self.first_frame, "last_frame": self.last_frame,
                "first_time": round(self.first_time, 3), "last_time": round(self.last_time, 3),
                "frames": self.frames, "age": rounded(self.age, 1), "gender": self.gender,
                "gender_confidence": rounded(self.gender_confidence, 4),
                "best_quality": round(self.best_quality, 4),
                "best_shot_frame": self.best_shot_frame, "pose_range": self.pose_range,
                "enhanced_frames": self.enhanced_frames}


class TrackState:
    """Bounded memory of one track."""

    def __init__(self, track_id: int, frame_index: int, timestamp: float, limits: MemoryLimits):
        self.id = track_id
        self.first_frame = self.last_frame = frame_index
        self.first_time = self.last_time = timestamp
        self.frames = 0
        self.enhanced_frames = 0
        self.pose_min = np.full(3, np.inf, np.float32)
        self.pose_max = np.full(3, -np.inf, np.float32)
        self.ages: deque[float] = deque(maxlen=limits.attribute_samples)
        self.genders: deque[float] = deque(maxlen=limits.attribute_samples)
        #: (normalised embedding, quality good enough to vote) of recent runs
        self.embeddings: deque[tuple[np.ndarray, bool]] = deque(maxlen=limits.vote_window)
        self.vote = IdentityVote(limits.vote_window, limits.hysteresis, limits.confirm_votes)
        self.best_quality = -1.0
        self.best_shot: np.ndarray | None = None
        self.best_shot_frame = -1
        self.best_embedding: np.ndarray | None = None
        self.last_run = -(10 ** 9)
        self.runs = 0
        self.missing = 0  # frames in a row without a detection

    def seen(self, frame_index: int, timestamp: float, pose: np.ndarray | None,
             enhanced: bool = False) -> None:
        """Detected in this frame (``enhanced``: in the low-light enhanced frame)."""
        self.last_frame, self.last_time = frame_index, timestamp
        self.frames += 1
        self.enhanced_frames += bool(enhanced)
        self.missing = 0
        if pose is not None and np.isfinite(pose).all():
            np.minimum(self.pose_min, pose, out=self.pose_min)
            np.maximum(self.pose_max, pose, out=self.pose_max)

    @property
    def age(self) -> float:
        return float(np.median(self.ages)) if self.ages else float("nan")

    @property
    def male_share(self) -> float:
        """Confidence-weighted vote: each sample votes for its side with weight |2p - 1|."""
        if not self.genders:
            return float("nan")
        p = np.asarray(self.genders)
        weight = np.abs(2.0 * p - 1.0)
        male, total = float(weight[p >= 0.5].sum()), float(weight.sum())
        return male / total if total > 0 else 0.5

    def absorb(self, other: "TrackState") -> None:
        """Take in a newer track that turned out to be this one (re-identification)."""
        self.last_frame, self.last_time = other.last_frame, other.last_time
        self.frames += other.frames
        self.enhanced_frames += other.enhanced_frames
        np.minimum(self.pose_min, other.pose_min, out=self.pose_min)
        np.maximum(self.pose_max, other.pose_max, out=self.pose_max)
        self.ages.extend(other.ages)
        self.genders.extend(other.genders)
        self.embeddings.extend(other.embeddings)
        if other.best_quality > self.best_quality:
            self.best_quality, self.best_shot = other.best_quality, other.best_shot
            self.best_shot_frame = other.best_shot_frame
            self.best_embedding = other.best_embedding
        self.last_run, self.runs = other.last_run, self.runs + other.runs
        self.missing = 0



    def summary(self, identity: str | None, similarity: float | None) -> TrackSummary:
        """What is known of this track now (identity and similarity: the vote's, or None
        without recognition)."""
        gender, confidence = gender_label(self.male_share)
        pose_known = np.isfinite(self.pose_min).all()
        pose_range = {name: ([round(float(self.pose_min[i]), 1), round(float(self.pose_max[i]), 1)]
                             if pose_known else None)
                      for i, name in enumerate(("yaw", "pitch", "roll"))}
        return TrackSummary(
            track_id=self.id, identity=identity, similarity=similarity,
            first_frame=self.first_frame, last_frame=self.last_frame,
            first_time=self.first_time, last_time=self.last_time, frames=self.frames,
            age=self.age if self.ages else None, gender=gender, gender_confidence=confidence,
            best_quality=max(self.best_quality, 0.0), pose_range=pose_range,
            best_shot=self.best_shot, best_shot_frame=self.best_shot_frame,
            enhanced_frames=self.enhanced_frames, embedding=self.best_embedding)


def crop_best_shot(frame: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """The face with a margin of a quarter of its size, scaled down to ``size`` (longer side)."""
    x1, y1, x2, y2 = box
    mx, my = (x2 - x1) * 0.25, (y2 - y1) * 0.25
    h, w = frame.shape[:2]
    x1, y1 = int(max(0, x1 - mx)), int(max(0, y1 - my))
    x2, y2 = int(min(w, x2 + mx)), int(min(h, y2 + my))
    crop = frame[y1:max(y2, y1 + 1), x1:max(x2, x1 + 1)]
    scale = size / max(crop.shape[:2])
    if scale < 1.0:
        target = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
        return cv2.resize(crop, target, interpolation=cv2.INTER_AREA)
    return crop.copy()
