"""The video engine: cheap stages on every frame, recognition once per track.

Every frame: detect -> track -> the frame stages (68 points, head pose,
quality). A scene cut (edited video) ends every track, so that a face of the
next shot never inherits the name of a face that stood at the same place
(:class:`~mobileface.track.scene_cut.SceneCutDetector`).

The detector runs on every ``detect_every``-th frame, on scene cuts and when
faces move unpredictably; on the other frames the faces of the tracks are
re-found from their 68 points (:mod:`mobileface.track.refind`), which the
frame computes anyway.

Per track, not per frame: the per-track stages (``Stage.per_track``: the
embedding and the attributes, with the alignment they do) run for a track's
face only when

* the track is new;
* its quality beats the best it had when these last ran (by ``quality_gain``);
* its identity is not confirmed yet, every ``recheck_frames`` frames (for
  faces good enough to recognise, see ``min_quality``); such a re-check is for
  the identity, so only the stages that provide the embedding run;
* it reappears after ``reappear_frames`` frames or more in which it was not
  detected (a one-frame miss of the detector is not a reappearance).

The identity is a vote over the track's recognition decisions with hysteresis
(:class:`mobileface.identity.gallery.IdentityVote`); decisions come only from
faces of quality ``min_quality`` or better (MagFace's idea: recognise from
good frames). What is remembered of a track is bounded
(:mod:`mobileface.track.memory`) and released when the tracker finishes it.

Before detection, a low-light step (:class:`mobileface.enhance.LowLightEnhancer`,
``config.enhance``: auto by default) may enhance a dark frame; the detector,
the stages and the best shots then work on the enhanced frame (which measured
better for each, see README "Low-light enhancement"), the scene-cut check on the
frame as read.

The engine is made of parts: a detector, stages, a tracker, a low-light
enhancer and a config (:meth:`FacePipeline.from_config` builds the default
ones), so any of them can be replaced, by a fake in a test or by a remote or
batched model.
"""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from mobileface.enhance.lowlight import Enhancement, LowLightEnhancer
from mobileface.identity.gallery import normalise
from mobileface.identity.live import GalleryFollower
from mobileface.io.image import to_bgr8
from mobileface.pipeline.config import PipelineConfig, RunningMode
from mobileface.stages.base import Stage, order_stages, run_stages
from mobileface.track.memory import MemoryLimits, TrackState, TrackSummary, crop_best_shot
from mobileface.track.refind import DetectionSchedule, Refinder
from mobileface.track.scene_cut import SceneCutDetector
from mobileface.track.sort import SortTracker
from mobileface.types import ROW_COLUMNS, Faces

log = logging.getLogger(__name__)

#: priorities of per-track work (lower first); RECHECK is an identity-only re-check
NEW, REAPPEARED, BETTER, RECHECK = range(4)


@dataclass
class FrameResult:
    """One processed frame."""

    #: the detections (track_id, identity, age... per row), then the rows of the tracks
    #: the detector missed in this frame (``faces.predicted``)
    faces: Faces
    finished: list[TrackSummary] = field(default_factory=list)
    recognised: int = 0          # faces that got per-track work in this frame
    #: the image the detector and the stages analysed: the low-light enhanced frame when
    #: the enhancement was applied, else the frame itself
    image: np.ndarray | None = field(default=None, repr=False)

    @property
    def enhancement(self) -> Enhancement | None:
        """What the low-light step did to this frame (None when the pipeline has none)."""
        return self.faces.enhancement

    @property
    def timings(self) -> dict[str, float]:
        """Seconds spent on this frame by each step (the detector, the tracker, each stage)."""
        return self.faces.timings

    @property
    def detected(self) -> Faces:
        """The rows the detector found in this frame."""
        return self.faces if self.faces.predicted is None else self.faces[~self.faces.predicted]


class FacePipeline:
    """Runs the parts on the frames of one stream, in order.

    detector: anything with ``detect(image) -> Faces``.
    stages: per-face stages, in any order (:func:`order_stages` orders them);
        the frame stages must provide ``quality``; a per-track stage that
        provides ``embedding`` makes it recognise.
    tracker: a :class:`SortTracker` (the default one is built from the config).
    facebank: a facebank (:func:`mobileface.identity.store.open_facebank`; checked for
        changes every ``config.facebank_poll`` seconds), a fixed
        :class:`mobileface.identity.gallery.Gallery`, or None (all unknown).
    enhancer: a :class:`~mobileface.enhance.LowLightEnhancer` run before the
        detector, or None (frames are analysed as they are, nothing is reported).
    """

    def __init__(self, detector, stages: Sequence[Stage], tracker: SortTracker | None = None,
                 config: PipelineConfig | None = None, facebank=None,
                 enhancer: LowLightEnhancer | None = None):
        self.config = config = config or PipelineConfig()
        if config.mode is RunningMode.IMAGE:
            raise ValueError("FacePipeline runs VIDEO or STREAM mode; analyse single images "
                             "with FaceAnalyzer")
        self.detector = detector
        self.enhancer = enhancer
        ordered = order_stages(stages)
        self.frame_stages = [s for s in ordered if not s.per_track]
        self.track_stages = [s for s in ordered if s.per_track]
        if not any("quality" in s.provides for s in self.frame_stages):
            raise ValueError("the frame stages must provide quality: it decides when a track "
                             "gets per-track work")
        self.embedder = next((s for s in self.track_stages if "embedding" in s.provides), None)
        self.model_id = getattr(self.embedder, "model_id", None)
        if self.embedder is not None and config.threshold is None and \
                getattr(self.embedder, "threshold", None) is None:
            raise ValueError(f"the embedder {self.model_id} has no recognition threshold "
                             "(cosine_threshold in its spec): give one (-th/--threshold)")
        self.tracker = tracker if tracker is not None else self._default_tracker()
        self.cuts = SceneCutDetector(config.scene_cut)
        self.schedule = DetectionSchedule(config.detect_every)
        #: re-finds tracked faces on the frames the detector skips (None: detect on every
        #: frame, as with detect_every=1 or without a stage that fits the 68 points, and
        #: nothing else, from boxes alone)
        self.refinder = None
        points = next((s for s in self.frame_stages if tuple(s.provides) == ("landmarks68",)
                       and set(s.requires) <= {"boxes"}), None)
        if config.detect_every > 1 and points is not None:
            self.refinder = Refinder(points, config.refind_error)
        self.limits = MemoryLimits(config.attribute_samples, config.vote_window,
                                   config.hysteresis, config.confirm_votes)
        self.gallery = GalleryFollower(self.model_id, config.facebank_poll)
        self.states: dict[int, TrackState] = {}
        self.frames = 0
        self._last_timestamp: float | None = None
        self._analyzer = None
        #: the RuntimeConfig of the models from_config built (None for parts given)
        self.runtime = None
        if facebank is not None:
            self.set_facebank(facebank)

    @classmethod
    def from_config(cls, config: PipelineConfig | None = None, facebank=None,
                    embedder=None) -> "FacePipeline":
        """The default parts for ``config``: its low-light enhancer and detector, landmarks,
        pose and quality on every frame, and attributes and the embedding per track (as the
        config asks). ``embedder``: a stage that embeds in place of the config's (the site
        service's shared embedder, :class:`mobileface.service.shared_embed.RemoteEmbedder`)."""
        from mobileface.pipeline.image import build_stage, detector_from
        from mobileface.models.runtime import RuntimeConfig

        config = config or PipelineConfig()
        runtime = RuntimeConfig(providers=tuple(config.providers),
                                intra_op_threads=config.threads, precision=config.precision)
        names = ["landmarks", "pose", "quality"]
        if config.attributes:
            names.append("attributes")
        if config.recognition:
            names.append("embed")
        # The models load side by side (checking a file's sha256 and starting an onnxruntime
        # session mostly run outside the GIL): about a third off the start-up on two cores.
        with ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2))) as pool:
            found = pool.submit(detector_from, config.detector, config.det_size,
                                config.det_threshold, runtime)
            built = {name: pool.submit(build_stage, name, runtime, config.embedder)
                     for name in names if not (name == "embed" and embedder is not None)}
            stages = [built[name].result() if name in built else embedder for name in names]
            detector = found.result()
        # Our numpy 68-point predictor for every face count: dlib's is faster alone for
        # one to three faces but holds the GIL, which stalls the detector thread of the
        # runner (friends1.mp4: 63 fps with ours, 49 with dlib's, same points).
        stages[0].batch_from = 1
        pipeline = cls(detector, stages, config=config, facebank=facebank,
                       enhancer=LowLightEnhancer(config.enhance))
        pipeline.runtime = runtime
        return pipeline

    @property
    def analyzer(self):
        """A FaceAnalyzer made of this pipeline's detector and stages (the same models),
        for enrolling faces with the embedder that recognises them (photos: no low-light
        enhancement)."""
        from mobileface.pipeline.image import FaceAnalyzer

        if self._analyzer is None:
            self._analyzer = FaceAnalyzer(detector=self.detector,
                                          stages=self.frame_stages + self.track_stages)
        return self._analyzer

    @property
    def active_providers(self) -> list[str]:
        """The onnxruntime providers the models really run on (parts built by from_config)."""
        return [] if self.runtime is None else sorted(set(self.runtime.active.values()))

    def _default_tracker(self) -> SortTracker:
        cfg = self.config
        reid = cfg.reid_similarity if cfg.reid_similarity is not None else \
            min(self.threshold + 0.01, 1.0)
        return SortTracker(max_age=cfg.max_age, min_hits=cfg.min_hits,
                           iou_threshold=cfg.iou_threshold,
                           reid_seconds=cfg.reid_seconds if self.embedder else 0.0,
                           reid_similarity=reid)

    # -- identity settings and the facebank ------------------------------------------

    @property
    def threshold(self) -> float:
        """The cosine similarity a match must reach: the config's, else the embedder's
        (1.0 without recognition: nothing is ever matched)."""
        if self.config.threshold is not None:
            return self.config.threshold
        own = getattr(self.embedder, "threshold", None)
        return 1.0 if own is None else float(own)

    def set_threshold(self, threshold: float | None = None, margin: float | None = None) -> None:
        """Change the threshold (None: the embedder's own) and, when given, the margin;
        every live track is voted again."""
        margin = self.config.margin if margin is None else margin
        self.config = replace(self.config, threshold=threshold, margin=margin)
        self._revote_all()

    def set_facebank(self, facebank) -> None:
        """Use a Facebank (followed for changes) or a fixed Gallery from now on."""
        if self.embedder is None:
            return
        self.gallery.follow(facebank)
        self._revote_all()

    def set_gallery(self, gallery) -> None:
        """Match against a fixed ``gallery`` from now on; every live track is voted again."""
        self.set_facebank(gallery)

    def reload_facebank(self) -> None:
        """Read the facebank again now (after a change made through this process)."""
        self.gallery.reload()
        self._revote_all()

    def _decide(self, embeddings: np.ndarray) -> list[tuple[int | None, float]]:
        return self.gallery.decide(embeddings, self.threshold, self.config.margin,
                                   self.config.match_mode)

    def _revote(self, state: TrackState) -> None:
        voting = [e for e, good in state.embeddings if good]
        state.vote.replay(self._decide(np.stack(voting)) if voting else [])

    def _revote_all(self) -> None:
        for state in self.states.values():
            self._revote(state)

    # -- frames --------------------------------------------------------------------

    def reset(self) -> None:
        """Start a new session: ids restart, every track is forgotten (nothing is reported)."""
        self.tracker.reset()
        self.cuts.reset()
        self.schedule.reset()
        if self.refinder is not None:
            self.refinder.reset()
        if self.enhancer is not None:
            self.enhancer.reset()
        self.states.clear()
        self.frames = 0
        self._last_timestamp = None

    def detect(self, frame: np.ndarray, frame_index: int = -1,
               timestamp: float | None = None) -> Faces:
        """The scene-cut check, the low-light step and the detector (on the frames the
        schedule gives it), their times recorded in the result's timings;
        ``faces.enhancement`` says what the low-light step did and holds the image the
        detector saw, for :meth:`process`. On a frame the detector skips, the result has
        no rows and ``found_by="pending"``: :meth:`process` re-finds the tracked faces.

        :meth:`process` calls it unless it is given the detections; a runner
        may call it from another thread (one thread at a time, the frames in
        order: auto enhancement, cuts and the schedule follow the stream) to
        overlap the detection of a frame with the analysis of the frame before.
        """
        frame = to_bgr8(frame, "frame")
        cut = self.cuts(frame)     # the frame as read: enhancement switching on is no cut
        full = self.schedule.periodic(cut) or self.refinder is None
        enhancement = None
        if self.enhancer is not None:
            start = time.perf_counter()
            enhancement = self.enhancer(frame)
            enhance_seconds = time.perf_counter() - start
            frame = enhancement.image
        if full:
            faces = self._run_detector(frame)
            faces.frame_index, faces.timestamp = frame_index, timestamp
            self._frame_stages_early(frame, faces)
        else:
            faces = Faces.empty()
        faces.found_by = "detector" if full else "pending"
        faces.scene_cut = cut
        if enhancement is not None:
            faces.enhancement = enhancement
            if enhancement.mode != "off":
                faces.timings["enhance"] = enhance_seconds
        return faces

    def _frame_stages_early(self, image: np.ndarray, faces: Faces) -> None:
        """The frame stages need the detections alone (not the tracks): on a detector frame
        they run here, in the runner's detection thread, beside the analysis of the frame
        before. One that fails leaves its columns empty for :meth:`process`, which runs it
        again and so meets the error in frame order (after every frame before is done)."""
        try:
            run_stages(self.frame_stages, image, faces)
        except Exception:
            log.debug("a frame stage failed in detect(); process() runs it again", exc_info=True)
            for stage in self.frame_stages:
                for column in stage.provides:
                    if column in ROW_COLUMNS:
                        setattr(faces, column, None)
                    else:
                        faces.extra.pop(column, None)

    def _run_detector(self, image: np.ndarray) -> Faces:
        start = time.perf_counter()
        faces = self.detector.detect(image)
        faces.timings["detect"] = faces.timings.get("detect", 0.0) + time.perf_counter() - start
        return faces

    def _find(self, image: np.ndarray, faces: Faces) -> Faces:
        """This frame's faces when the detector skipped it: the tracks re-found, or the
        detector after all when the last frame asked for it or a face was lost."""
        if not self.schedule.urgent:
            found, self.schedule.urgent = self.refinder.refind(image, self.tracker, faces)
            if found is not None:
                return found
        found = self._run_detector(image)
        found.frame_index, found.timestamp = faces.frame_index, faces.timestamp
        run_stages(self.frame_stages, image, found)
        for step, seconds in faces.timings.items():     # a failed re-finding's time too
            found.timings[step] = found.timings.get(step, 0.0) + seconds
        found.enhancement, found.scene_cut = faces.enhancement, faces.scene_cut
        self.schedule.urgent = False
        return found

    def _stamp(self, timestamp: float | None, frame_index: int) -> float:
        """The frame's timestamp, checked against the running mode."""
        if timestamp is None:
            if self.config.mode is RunningMode.VIDEO:
                raise ValueError(f"VIDEO mode needs each frame's timestamp (frame {frame_index})")
            timestamp = time.monotonic()
        timestamp = float(timestamp)
        last = self._last_timestamp
        if last is not None and timestamp <= last:
            raise ValueError(f"{self.config.mode.name} mode needs increasing timestamps: frame "
                             f"{frame_index} at {timestamp:.3f} s follows {last:.3f} s "
                             "(reset() starts a new stream)")
        self._last_timestamp = timestamp
        return timestamp

    def process(self, frame: np.ndarray, frame_index: int | None = None,
                timestamp: float | None = None, faces: Faces | None = None) -> FrameResult:
        """Analyse one BGR frame of the stream (frames must come in order).

        timestamp: seconds, increasing (the video's time for files; in STREAM
        mode the clock when None). faces: this frame's detections from
        :meth:`detect`, when they were made beforehand.
        """
        frame = to_bgr8(frame, "frame")
        frame_index = self.frames if frame_index is None else int(frame_index)
        timestamp = self._stamp(timestamp, frame_index)
        self.frames += 1
        start = time.perf_counter()
        if faces is None:
            faces = self.detect(frame, frame_index, timestamp)
        faces.frame_index, faces.timestamp = frame_index, timestamp
        enhancement = faces.enhancement
        image = frame if enhancement is None else enhancement.image

        if faces.scene_cut:
            self.tracker.cut()
        if faces.found_by == "pending":
            faces = self._find(image, faces)
            faces.frame_index, faces.timestamp = frame_index, timestamp
        elif self.refinder is not None:
            self.schedule.urgent = False
        mark = time.perf_counter()
        tracked = self.tracker.update(faces, timestamp)
        faces = tracked[~tracked.predicted]
        missed = tracked[tracked.predicted]
        faces.timings["track"] = time.perf_counter() - mark
        # what the frame stages filled already is kept: all of it on a detector frame
        # (detect), the 68 points of re-found faces (the re-finding fitted them)
        run_stages([s for s in self.frame_stages
                    if not all(faces.column(c) is not None for c in s.provides)], image, faces)
        if self.refinder is not None and self.refinder.observe(image, faces, self.tracker.keys,
                                                               missed):
            self.schedule.urgent = True

        mark = time.perf_counter()
        if self.gallery.poll():
            self._revote_all()
        self._count_missed(missed)
        enhanced = enhancement is not None and enhancement.applied
        due, recheck = self._update_states(faces, frame_index, timestamp, enhanced)
        faces.timings["identity"] = time.perf_counter() - mark
        if len(due):
            self._per_track_work(image, faces, due, recheck, frame_index)
        mark = time.perf_counter()
        result = Faces.concat([faces, missed]) if len(missed) else faces
        self._fill_columns(result)
        finished = [self._finish(tid) for tid in self.tracker.finished if tid in self.states]
        faces.timings["identity"] += time.perf_counter() - mark
        faces.timings["total"] = time.perf_counter() - start
        return FrameResult(result, finished, recognised=len(due), image=image)

    def finish(self) -> list[TrackSummary]:
        """End of the stream: a summary of every track still known, and a fresh tracker."""
        ids = self.tracker.flush()
        summaries = [self._finish(tid) for tid in ids if tid in self.states]
        summaries += [self._finish(tid) for tid in list(self.states)]
        self.reset()
        return sorted(summaries, key=lambda s: s.track_id)

    def _count_missed(self, missed: Faces) -> None:
        for tid in missed.track_id:
            state = self.states.get(int(tid))
            if state is not None:
                state.missing += 1

    def _update_states(self, faces: Faces, frame_index: int, timestamp: float,
                       enhanced: bool) -> tuple[np.ndarray, np.ndarray]:
        """Record this frame in every track's state; returns the rows due for per-track
        work, and which of them are only periodic identity re-checks."""
        cfg = self.config
        candidates = []
        for row, tid in enumerate(faces.track_id):
            if tid <= 0:
                continue
            state = self.states.get(int(tid))
            if state is None:
                state = self.states[int(tid)] = TrackState(int(tid), frame_index, timestamp,
                                                           self.limits)
            reappeared = state.missing >= cfg.reappear_frames
            state.seen(frame_index, timestamp, None if faces.pose is None else faces.pose[row],
                       enhanced)
            quality = float(faces.quality[row])
            if state.runs == 0:
                priority = NEW
            elif reappeared:
                priority = REAPPEARED
            elif quality > state.best_quality + cfg.quality_gain:
                priority = BETTER
            elif (self.embedder is not None and not state.vote.confirmed
                  and quality >= cfg.min_quality
                  and frame_index - state.last_run >= cfg.recheck_frames):
                priority = RECHECK
            else:
                continue
            candidates.append((priority, -quality, row))
        candidates.sort()
        chosen = candidates[:cfg.max_per_frame]
        rows = np.array([row for _, _, row in chosen], np.int64)
        recheck = np.array([priority == RECHECK for priority, _, _ in chosen], bool)
        return rows, recheck

    def _run_track_stages(self, image: np.ndarray, sub: Faces, recheck: np.ndarray) -> None:
        """The per-track stages on the due rows; on identity-only re-checks, only the
        stages that lead to the embedding (age and gender keep their samples)."""
        for stage in self.track_stages:
            if "embedding" in stage.provides:
                stage(image, sub)
            elif not recheck.all():
                described = sub[~recheck]
                stage(image, described)
                _scatter(described, stage.provides, sub, ~recheck)

    def _per_track_work(self, image: np.ndarray, faces: Faces, rows: np.ndarray,
                        recheck: np.ndarray, frame_index: int) -> None:
        sub = faces[rows]
        self._run_track_stages(image, sub, recheck)
        self._keep_columns(faces, sub, rows)
        mark = time.perf_counter()
        embeddings = None if sub.embedding is None else normalise(sub.embedding)
        for k, row in enumerate(rows):
            tid = int(faces.track_id[row])
            state = self.states[tid]
            quality = float(sub.quality[k])
            state.runs += 1
            state.last_run = frame_index
            best = quality > state.best_quality
            if best:
                state.best_quality = quality
                state.best_shot = crop_best_shot(image, faces.boxes[row], self.config.best_shot_size)
                state.best_shot_frame = frame_index
            if sub.age is not None and not recheck[k]:
                state.ages.append(float(sub.age[k]))
                state.genders.append(float(sub.gender[k]))
            if embeddings is None:
                continue
            good = quality >= self.config.min_quality
            state.embeddings.append((embeddings[k], good))
            if good:
                person, similarity = self._decide(embeddings[k:k + 1])[0]
                state.vote.add(person, similarity)
            if best:
                state.best_embedding = embeddings[k]
                self._appearance(faces, tid, embeddings[k])
        faces.timings["identity"] += time.perf_counter() - mark

    def _keep_columns(self, faces: Faces, sub: Faces, rows: np.ndarray) -> None:
        """What the per-track stages computed, in the frame's own columns (NaN on the rows
        that got no per-track work in this frame)."""
        for stage in self.track_stages:
            _scatter(sub, stage.provides, faces, rows)

    def _appearance(self, faces: Faces, tid: int, embedding: np.ndarray) -> None:
        """The track's appearance for re-identification (its best face so far); a track
        that turns out to be one lost a moment ago takes back that track's id and memory."""
        new_id = self.tracker.set_appearance(tid, embedding)
        if new_id == tid:
            return
        log.debug("track %d is track %d again (re-identified)", tid, new_id)
        state = self.states.pop(tid)
        old = self.states.get(new_id)
        if old is None:
            old = self.states[new_id] = TrackState(new_id, state.first_frame, state.first_time,
                                                   self.limits)
        old.absorb(state)
        self._revote(old)
        faces.track_id[faces.track_id == tid] = new_id

    def _fill_columns(self, faces: Faces) -> None:
        """Per row: the track's identity and similarity (its vote), median age and gender
        vote (``track_age``, ``track_gender``)."""
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
        if any("age" in s.provides for s in self.track_stages):
            faces.track_age, faces.track_gender = age, gender

    def identity_of(self, state: TrackState) -> str:
        return self.gallery.name_of(state.vote.current)

    def live_summaries(self) -> list[TrackSummary]:
        """What is known so far about every track still going (they go on).

        Call it from the thread that runs :meth:`process`, between frames.
        """
        return [self._summary(state) for _, state in sorted(self.states.items())]

    def _finish(self, track_id: int) -> TrackSummary:
        return self._summary(self.states.pop(track_id))

    def _summary(self, state: TrackState) -> TrackSummary:
        if self.embedder is None:
            return state.summary(None, None)
        return state.summary(self.identity_of(state), state.vote.similarity)


def _scatter(part: Faces, columns, whole: Faces, rows: np.ndarray) -> None:
    """Copy ``columns`` of ``part`` into the ``rows`` of ``whole`` (NaN in its other rows)."""
    for column in columns:
        values = part.column(column)
        if values is not None:
            full = np.full((len(whole), *values.shape[1:]), np.nan, np.float32)
            full[rows] = values
            whole.set_column(column, full)
