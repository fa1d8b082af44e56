"""The frame pipeline: cheap stages on every frame, recognition once per track.

Every frame: detect -> track -> 68 points -> head pose -> quality. A scene
cut (edited video) ends every track, so that a face of the next shot never
inherits the name of a face that stood at the same place
(:class:`SceneCutDetector`).

Per track, not per frame: alignment, attributes (age, gender) and the
embedding run for a track's face only when

* the track is new;
* its quality beats the best it had when these last ran (by ``quality_gain``);
* its identity is not confirmed yet, every ``recheck_frames`` frames (for
  faces good enough to recognise, see ``min_quality``);
* it reappears after ``reappear_frames`` frames or more in which it was not
  detected (a one-frame miss of the detector is not a reappearance).

Over a track, age is the median of its samples, gender a confidence-weighted
vote, and the best shot (the face at its highest quality) is kept. The
identity is a vote over the track's recognition decisions with hysteresis
(:class:`mobileface.identity.gallery.IdentityVote`); decisions come only from faces
of quality ``min_quality`` or better (MagFace's idea: recognise from good
frames). Per-track state is bounded (fixed-length windows, one small best-shot
crop) and a track's state is released when the tracker finishes it.
"""
from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np

from mobileface.pipeline.image import FaceAnalyzer
from mobileface.identity.gallery import UNKNOWN, Gallery, IdentityVote, MATCH_MODES
from mobileface.io.image import to_bgr8
from mobileface.track.sort import SortTracker, Tracks
from mobileface.types import Faces

log = logging.getLogger(__name__)


@dataclass
class PipelineConfig:
    """Everything that changes what the pipeline does (defaults suit 720p video)."""

    detector: str = "retinaface"
    det_size: int = 640
    det_threshold: float | None = None
    providers: tuple[str, ...] = ("cpu",)
    #: onnxruntime threads per model: 1, because the runner detects the next frame while
    #: it analyses this one, so both cores are busy already (0: onnxruntime decides)
    threads: int = 1
    embedder: object = None
    #: embed and name faces (off: attributes only, no facebank needed)
    recognition: bool = True
    #: age and gender
    attributes: bool = True
    #: cosine similarity a match must reach (None: the embedder's own threshold)
    threshold: float | None = None
    #: ... and by how much it must beat the best other person
    margin: float = 0.03
    #: a person's similarity: the best of their images or their mean ("mean")
    match_mode: str = "best"
    #: recognition decisions (and periodic re-checks) only from faces this good
    min_quality: float = 0.3
    recheck_frames: int = 5
    quality_gain: float = 0.05
    #: a track missed for this many frames in a row gets per-track work when it is seen again
    reappear_frames: int = 5
    #: at most this many tracks get per-track work in one frame (the rest wait)
    max_per_frame: int = 8
    vote_window: int = 9
    hysteresis: int = 2
    confirm_votes: int = 3
    #: age and gender samples kept per track
    attribute_samples: int = 15
    max_age: int = 15
    min_hits: int = 2
    iou_threshold: float = 0.3
    reid_seconds: float = 3.0
    #: cosine similarity for re-identification (None: threshold + 0.01)
    reid_similarity: float | None = None
    #: the longer side of the kept best-shot crop, pixels
    best_shot_size: int = 192
    #: how often the facebank is checked for changes by other processes, seconds
    facebank_poll: float = 1.0
    #: thumbnail difference that counts as a scene cut (0: never cut)
    scene_cut: float = 20.0

    def __post_init__(self) -> None:
        if self.match_mode not in MATCH_MODES:
            raise ValueError(f"match_mode must be one of {MATCH_MODES}, got {self.match_mode!r}")
        if self.threshold is not None and not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {self.threshold}")
        if not 0.0 <= self.margin < 2.0:
            raise ValueError(f"margin must be in [0, 2), got {self.margin}")
        for name in ("recheck_frames", "reappear_frames", "max_per_frame", "vote_window", "hysteresis",
                     "confirm_votes", "attribute_samples", "best_shot_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


class SceneCutDetector:
    """A hard cut between two frames: their small grey thumbnails differ a lot.

    The measure is the mean absolute difference of 64x36 grey thumbnails, in
    grey levels. On the test clips, cuts score 27-31 and the fastest motion
    (a head turning close to the camera) 14; the default threshold is 20.
    """

    def __init__(self, threshold: float = 20.0):
        self.threshold = float(threshold)
        self._previous: np.ndarray | None = None

    def reset(self) -> None:
        self._previous = None

    def __call__(self, frame: np.ndarray) -> bool:
        step = max(1, min(frame.shape[0] // 36, frame.shape[1] // 64) // 2)
        small = cv2.resize(frame[::step, ::step], (64, 36), interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.int16)
        previous, self._previous = self._previous, grey
        if previous is None or self.threshold <= 0:
            return False
        return float(np.abs(grey - previous).mean()) > self.threshold


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
                "best_shot_frame": self.best_shot_frame, "pose_range": self.pose_range}


class TrackState:
    """Bounded memory of one track."""

    def __init__(self, track_id: int, frame_index: int, timestamp: float, config: PipelineConfig):
        self.id = track_id
        self.first_frame = self.last_frame = frame_index
        self.first_time = self.last_time = timestamp
        self.frames = 0
        self.pose_min = np.full(3, np.inf, np.float32)
        self.pose_max = np.full(3, -np.inf, np.float32)
        self.ages: deque[float] = deque(maxlen=config.attribute_samples)
        self.genders: deque[float] = deque(maxlen=config.attribute_samples)
        #: (normalised embedding, quality good enough to vote) of recent runs
        self.embeddings: deque[tuple[np.ndarray, bool]] = deque(maxlen=config.vote_window)
        self.vote = IdentityVote(config.vote_window, config.hysteresis, config.confirm_votes)
        self.best_quality = -1.0
        self.best_shot: np.ndarray | None = None
        self.best_shot_frame = -1
        self.best_embedding: np.ndarray | None = None
        self.last_run = -(10 ** 9)
        self.runs = 0
        self.missing = 0  # frames in a row without a detection

    def seen(self, frame_index: int, timestamp: float, pose: np.ndarray | None) -> None:
        self.last_frame, self.last_time = frame_index, timestamp
        self.frames += 1
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


@dataclass
class FrameResult:
    """One processed frame."""

    faces: Faces                 # detections, with track_id, identity, age... per row
    tracks: Tracks               # every live track, predicted boxes included
    finished: list[TrackSummary] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step
    recognised: int = 0          # faces that got per-track work in this frame


class FacePipeline:
    """Runs the stages on frames of one stream, in order.

    facebank: a :class:`mobileface.identity.facebank.Facebank` (checked for changes
    every ``config.facebank_poll`` seconds) or a fixed
    :class:`mobileface.identity.gallery.Gallery`, or None (everybody is unknown).
    """

    def __init__(self, config: PipelineConfig | None = None, facebank=None):
        self.config = config = config or PipelineConfig()
        stages = ["landmarks", "pose", "quality"]
        if config.attributes:
            stages.append("attributes")
        if config.recognition:
            stages.append("embed")
        analyzer = FaceAnalyzer(detector=config.detector, det_size=config.det_size,
                                det_threshold=config.det_threshold, providers=config.providers,
                                threads=config.threads, stages=stages, embedder=config.embedder)
        self.analyzer = analyzer
        self.detector = analyzer.detector
        by_name = {s.name: s for s in analyzer.stages}
        # Our numpy 68-point predictor for every face count: dlib's is faster alone for
        # one to three faces but holds the GIL, which stalls the detector thread of the
        # runner (friends1.mp4: 63 fps with ours, 49 with dlib's, same points).
        by_name["landmarks"].batch_from = 1
        self.frame_stages = [by_name[n] for n in ("landmarks", "pose", "quality")]
        self.attributes = by_name.get("attributes")
        self.embedder = by_name.get("embed")
        self.model_id = getattr(self.embedder, "model_id", None)
        self.threshold = config.threshold if config.threshold is not None else \
            getattr(self.embedder, "threshold", None)
        if self.embedder is not None and self.threshold is None:
            raise ValueError(f"the embedder {self.model_id} has no recognition threshold "
                             "(cosine_threshold in its spec): give one (-th/--threshold)")
        if self.threshold is None:
            self.threshold = 1.0  # no recognition: nothing is ever matched
        reid = config.reid_similarity if config.reid_similarity is not None else \
            min(self.threshold + 0.01, 1.0)
        self.tracker = SortTracker(max_age=config.max_age, min_hits=config.min_hits,
                                   iou_threshold=config.iou_threshold,
                                   reid_seconds=config.reid_seconds if self.embedder else 0.0,
                                   reid_similarity=reid)
        self.cuts = SceneCutDetector(config.scene_cut)
        self.states: dict[int, TrackState] = {}
        self.frames = 0
        self.facebank = None
        self.gallery = Gallery.empty()
        self._next_poll = 0.0
        if facebank is not None:
            self.set_facebank(facebank)

    # -- facebank ----------------------------------------------------------------

    def set_facebank(self, facebank) -> None:
        """Use a Facebank (followed for changes) or a fixed Gallery from now on."""
        if not self.config.recognition:
            return
        if isinstance(facebank, Gallery):
            self.facebank = None
            self.set_gallery(facebank)
            return
        self.facebank = facebank
        self.set_gallery(facebank.gallery(self.model_id))
        self._next_poll = time.monotonic() + self.config.facebank_poll

    def set_gallery(self, gallery: Gallery) -> None:
        """Match against ``gallery`` from now on; every live track is voted again."""
        self.gallery = gallery
        for state in self.states.values():
            self._revote(state)

    def reload_facebank(self) -> None:
        """Read the facebank again now (after a change made through this process)."""
        if self.facebank is not None:
            self.set_gallery(self.facebank.gallery(self.model_id))

    def _poll_facebank(self) -> None:
        if self.facebank is None or time.monotonic() < self._next_poll:
            return
        self._next_poll = time.monotonic() + self.config.facebank_poll
        if self.facebank.changed():
            log.info("the facebank changed: reloading it")
            self.reload_facebank()

    def _decide(self, embeddings: np.ndarray) -> list[tuple[int | None, float]]:
        """(person id or None, similarity) for each normalised embedding."""
        if len(self.gallery) == 0:
            return [(None, float("nan"))] * len(embeddings)
        matches = self.gallery.match(embeddings, self.config.match_mode)
        chosen = matches.decide(self.threshold, self.config.margin)
        return [(int(self.gallery.person_ids[c]) if c >= 0 else None, float(s))
                for c, s in zip(chosen, matches.best)]

    def _revote(self, state: TrackState) -> None:
        voting = [e for e, good in state.embeddings if good]
        decisions = self._decide(np.stack(voting)) if voting else []
        state.vote.replay(decisions)

    # -- frames --------------------------------------------------------------------

    def reset(self) -> None:
        """Start a new session: ids restart, every track is forgotten (nothing is reported)."""
        self.tracker.reset()
        self.cuts.reset()
        self.states.clear()
        self.frames = 0

    def detect(self, frame: np.ndarray) -> Faces:
        """The detector alone.

        :meth:`process` calls it unless it is given the detections; a runner
        may call it from another thread (one thread at a time) to overlap the
        detection of a frame with the analysis of the frame before.
        """
        return self.detector.detect(to_bgr8(frame, "frame"))

    def process(self, frame: np.ndarray, frame_index: int | None = None,
                timestamp: float | None = None, faces: Faces | None = None) -> FrameResult:
        """Analyse one BGR frame of the stream (frames must come in order).

        timestamp: seconds (the video's time for files, the wall clock for
        live sources when None). faces: this frame's detections from
        :meth:`detect`, when they were made beforehand.
        """
        frame = to_bgr8(frame, "frame")
        frame_index = self.frames if frame_index is None else int(frame_index)
        timestamp = time.monotonic() if timestamp is None else float(timestamp)
        self.frames += 1
        timings: dict[str, float] = {}
        start = time.perf_counter()
        if faces is None:
            faces = self.detect(frame)
            timings["detect"] = time.perf_counter() - start
        faces.frame_index, faces.timestamp = frame_index, timestamp

        mark = time.perf_counter()
        if self.cuts(frame):
            self.tracker.cut()
        tracks = self.tracker.update(faces.boxes, faces.scores, timestamp)
        faces.track_id = tracks.ids_for_detections(len(faces))
        timings["track"] = time.perf_counter() - mark
        for stage in self.frame_stages:
            mark = time.perf_counter()
            stage(frame, faces)
            timings[stage.name] = time.perf_counter() - mark

        mark = time.perf_counter()
        self._poll_facebank()
        due, recheck = self._update_states(faces, tracks, frame_index, timestamp)
        if len(due):
            self._per_track_work(frame, faces, due, recheck, frame_index)
        self._fill_columns(faces)
        finished = [self._finish(tid) for tid in tracks.finished if tid in self.states]
        timings["per_track"] = time.perf_counter() - mark
        timings["total"] = time.perf_counter() - start
        return FrameResult(faces, tracks, finished, timings, recognised=len(due))

    def finish(self) -> list[TrackSummary]:
        """End of the stream: a summary of every track still known, and a fresh tracker."""
        ids = self.tracker.flush()
        summaries = [self._finish(tid) for tid in ids if tid in self.states]
        summaries += [self._finish(tid) for tid in list(self.states)]
        self.reset()
        return sorted(summaries, key=lambda s: s.track_id)

    def _update_states(self, faces: Faces, tracks: Tracks, frame_index: int,
                       timestamp: float) -> tuple[np.ndarray, np.ndarray]:
        """Record this frame in every track's state; returns the rows due for per-track
        work, and which of them are only periodic identity re-checks."""
        cfg = self.config
        for tid in tracks.track_id[tracks.predicted]:
            state = self.states.get(int(tid))
            if state is not None:
                state.missing += 1
        candidates = []
        for row, tid in enumerate(faces.track_id):
            if tid <= 0:
                continue
            state = self.states.get(int(tid))
            if state is None:
                state = self.states[int(tid)] = TrackState(int(tid), frame_index, timestamp, cfg)
            reappeared = state.missing >= cfg.reappear_frames
            state.seen(frame_index, timestamp, faces.pose[row])
            quality = float(faces.quality[row])
            if state.runs == 0:
                priority = 0            # new
            elif reappeared:
                priority = 1
            elif quality > state.best_quality + cfg.quality_gain:
                priority = 2
            elif (self.embedder is not None and not state.vote.confirmed
                  and quality >= cfg.min_quality
                  and frame_index - state.last_run >= cfg.recheck_frames):
                priority = 3
            else:
                continue
            candidates.append((priority, -quality, row))
        candidates.sort()
        chosen = candidates[:cfg.max_per_frame]
        rows = np.array([row for _, _, row in chosen], np.int64)
        # A periodic re-check is for the identity: age and gender keep their samples.
        recheck = np.array([priority == 3 for priority, _, _ in chosen], bool)
        return rows, recheck

    def _per_track_work(self, frame: np.ndarray, faces: Faces, rows: np.ndarray,
                        recheck: np.ndarray, frame_index: int) -> None:
        cfg = self.config
        sub = faces[rows]
        if self.embedder is not None:
            self.embedder(frame, sub)
        ages = genders = None
        if self.attributes is not None and not recheck.all():
            described = sub[~recheck]
            self.attributes(frame, described)
            ages = np.full(len(sub), np.nan, np.float32)
            genders = ages.copy()
            ages[~recheck], genders[~recheck] = described.age, described.gender
        embeddings = None
        if sub.embedding is not None:
            from mobileface.identity.gallery import normalise
            embeddings = normalise(sub.embedding)
        for k, row in enumerate(rows):
            tid = int(faces.track_id[row])
            state = self.states[tid]
            quality = float(sub.quality[k])
            state.runs += 1
            state.last_run = frame_index
            best = quality > state.best_quality
            if best:
                state.best_quality = quality
                state.best_shot = self._crop(frame, faces.boxes[row])
                state.best_shot_frame = frame_index
            if ages is not None and not recheck[k]:
                state.ages.append(float(ages[k]))
                state.genders.append(float(genders[k]))
            if embeddings is None:
                continue
            good = quality >= cfg.min_quality
            state.embeddings.append((embeddings[k], good))
            if good:
                person, similarity = self._decide(embeddings[k:k + 1])[0]
                state.vote.add(person, similarity)
            if not best:
                continue
            state.best_embedding = embeddings[k]
            # The track's appearance for re-identification: its best face so far.
            new_id = self.tracker.set_appearance(tid, embeddings[k])
            if new_id != tid:
                log.debug("track %d is track %d again (re-identified)", tid, new_id)
                old = self.states.get(new_id)
                if old is None:
                    old = self.states[new_id] = TrackState(new_id, state.first_frame,
                                                           state.first_time, cfg)
                old.absorb(self.states.pop(tid))
                self._revote(old)
                faces.track_id[faces.track_id == tid] = new_id

    def _crop(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        """The face with a margin of a quarter of its size, scaled down to best_shot_size."""
        x1, y1, x2, y2 = box
        mx, my = (x2 - x1) * 0.25, (y2 - y1) * 0.25
        h, w = frame.shape[:2]
        x1, y1 = int(max(0, x1 - mx)), int(max(0, y1 - my))
        x2, y2 = int(min(w, x2 + mx)), int(min(h, y2 + my))
        crop = frame[y1:max(y2, y1 + 1), x1:max(x2, x1 + 1)]
        scale = self.config.best_shot_size / max(crop.shape[:2])
        if scale < 1.0:
            size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
            return cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
        return crop.copy()

    def _fill_columns(self, faces: Faces) -> None:
        """Per row: the track's identity, similarity, median age and gender vote."""
        n = len(faces)
        identity = np.full(n, "", object)
        similarity = np.full(n, np.nan, np.float32)
        age = np.full(n, np.nan, np.float32)
        gender = np.full(n, np.nan, np.float32)
        for row, tid in enumerate(faces.track_id):
            state = self.states.get(int(tid))
            if state is None:
                continue
            identity[row] = self.identity_of(state)
            similarity[row] = state.vote.similarity
            age[row] = state.age
            gender[row] = state.male_share
        if self.embedder is not None:
            faces.identity, faces.similarity = identity, similarity
        if self.config.attributes:
            faces.age, faces.gender = age, gender

    def identity_of(self, state: TrackState) -> str:
        if state.vote.current is None:
            return UNKNOWN
        return self.gallery.name_of(state.vote.current) or UNKNOWN

    def live_summaries(self) -> list[TrackSummary]:
        """What is known so far about every track still going (they go on).

        Call it from the thread that runs :meth:`process`, between frames.
        """
        return [self._summary(state) for _, state in sorted(self.states.items())]

    def _finish(self, track_id: int) -> TrackSummary:
        return self._summary(self.states.pop(track_id))

    def _summary(self, state: TrackState) -> TrackSummary:
        male = state.male_share
        has_gender = math.isfinite(male)
        pose_known = np.isfinite(state.pose_min).all()
        pose_range = {name: ([round(float(state.pose_min[i]), 1), round(float(state.pose_max[i]), 1)]
                             if pose_known else None)
                      for i, name in enumerate(("yaw", "pitch", "roll"))}
        recognised = self.embedder is not None
        return TrackSummary(
            track_id=state.id,
            identity=self.identity_of(state) if recognised else None,
            similarity=state.vote.similarity if recognised else None,
            first_frame=state.first_frame, last_frame=state.last_frame,
            first_time=state.first_time, last_time=state.last_time, frames=state.frames,
            age=state.age if state.ages else None,
            gender=("male" if male >= 0.5 else "female") if has_gender else None,
            gender_confidence=max(male, 1.0 - male) if has_gender else None,
            best_quality=max(state.best_quality, 0.0), pose_range=pose_range,
            best_shot=state.best_shot, best_shot_frame=state.best_shot_frame,
            embedding=state.best_embedding)
