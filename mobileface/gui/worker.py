"""The pipeline in a worker QThread, and the newest analysed frame handed to the window.

A :class:`RunThread` opens the source and runs :class:`mobileface.pipeline.runner.VideoRunner`
(its reader, detector, inference and writer threads) until the source ends
or :meth:`RunThread.stop` is called. The window is never blocked:

* the writer thread annotates each frame and puts it into a one-frame
  mailbox (:class:`~mobileface.pipeline.slot.LatestSlot`); the window is signalled only when the
  mailbox was empty, and takes whatever is newest when it gets to it, so
  frames never pile up in the UI thread (the newest frame wins);
* from a live source, a frame older than ``RunRequest.max_latency`` (from its
  capture) is not shown: the writer does not draw one that reaches it late,
  and the window drops one that is late by the time it gets to it
  (:attr:`ViewFrame.show_until`); both are counted;
* changes the window asks for (threshold, facebank reloaded, low-light mode)
  are stored here and applied by the inference thread between two frames, the
  only thread that may touch the pipeline's tracks; the overlays and whether
  the enhanced frame is shown are read by the writer thread.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PyQt6.QtCore import QThread, pyqtSignal
from PyQt6.QtGui import QImage

from mobileface.outputs.annotators import Overlay, OverlayOptions
from mobileface.errors import MobileFaceError
from mobileface.identity.gallery import Gallery
from mobileface.pipeline import FacePipeline, FrameResult, PipelineConfig, RunningMode
from mobileface.outputs.sinks import Sink, shown_image
from mobileface.pipeline.runner import RunStats, VideoRunner
from mobileface.pipeline.slot import LatestSlot
from mobileface.io.video import Frame, VideoSource, describe, parse_source

log = logging.getLogger(__name__)

#: how often the tracks still going are sent to the window (unknown faces), seconds
LIVE_TRACKS_EVERY = 1.0
#: how often fps and latency are sent, seconds
PROGRESS_EVERY = 0.5
#: camera or stream: seconds to wait for it to open
OPEN_TIMEOUT = 5.0
#: frames read ahead of the analysis (files): few, so that what is shown is recent
QUEUE_SIZE = 2
#: live sources: seconds from capture after which a frame is no longer shown
MAX_LATENCY = 0.1


def to_qimage(bgr: np.ndarray) -> QImage:
    """A deep copy of a BGR uint8 image as a QImage (safe to hand to another thread)."""
    bgr = np.ascontiguousarray(bgr)
    height, width = bgr.shape[:2]
    return QImage(bgr.data, width, height, bgr.strides[0], QImage.Format.Format_BGR888).copy()


@dataclass
class RunRequest:
    """What to run: the source and the pipeline settings."""

    source: str | int
    begin: float = 0.0
    duration: float | None = None
    detector: str = "retinaface"
    det_size: int = 480
    #: model precision: auto, fp32 or int8 (see mobileface.models.precision)
    precision: str = "auto"
    #: the detector on at least every this many frames (None: the pipeline's default)
    detect_every: int | None = None
    threshold: float | None = None
    facebank: Path | None = None
    #: play video files at their frame rate (off: as fast as the analysis goes)
    realtime: bool = True
    #: low-light enhancement: auto (dark frames only), on or off
    enhance: str = "auto"
    #: show the enhanced frame (where enhancement was applied) instead of the frame as read
    show_enhanced: bool = False
    reconnect_attempts: int = 5
    #: live sources: frames older than this (seconds from capture) are not shown; None: all
    max_latency: float | None = MAX_LATENCY


@dataclass
class ViewFrame:
    """One analysed frame, as the window shows it."""

    run: int
    index: int
    timestamp: float
    image: np.ndarray       # the frame as analysed (BGR, enhanced where it was), for enrolment
    view: QImage            # annotated
    result: FrameResult
    captured_at: float = 0.0            # time.perf_counter() when it was read (captured)
    #: live: time.perf_counter() after which it is too old to show; None: always shown
    show_until: float | None = None
    marks: dict = field(default_factory=dict)   # the runner's steps (Frame.marks)

    def too_late(self, now: float | None = None) -> bool:
        return self.show_until is not None and \
            (time.perf_counter() if now is None else now) > self.show_until


@dataclass
class Progress:
    fps: float              # frames analysed per second, over the last second or so
    latency: float          # seconds from reading (capturing) the last frame to its sinks
    analysis: float         # seconds the pipeline spent on the last frame
    frames: int
    dropped: int            # live sources: frames replaced before they were analysed
    late: int = 0           # live sources: frames analysed too late to be shown (max_latency)


class PipelineHolder:
    """One pipeline kept across runs (loading the models takes seconds), and the
    facebank it follows. Used by one run at a time."""

    def __init__(self):
        self._pipeline: FacePipeline | None = None
        self._key = None
        self._banks: dict[Path, object] = {}

    def pipeline(self, request: RunRequest) -> FacePipeline:
        key = (request.detector, request.det_size, request.precision, request.detect_every)
        if self._pipeline is None or self._key != key:
            self._pipeline = None
            # STREAM: a camera's frames may be dropped; files bring their timestamps
            self._pipeline = FacePipeline.from_config(PipelineConfig(
                detector=request.detector, det_size=request.det_size, mode=RunningMode.STREAM,
                precision=request.precision,
                **({} if request.detect_every is None else {"detect_every": request.detect_every})))
            self._key = key
        pipeline = self._pipeline
        pipeline.set_threshold(request.threshold)     # None: the embedder's own
        pipeline.enhancer.mode = request.enhance
        return pipeline

    def facebank(self, spec):
        """The facebank of a folder or a postgresql:// URL, opened once."""
        from mobileface.identity.store import open_facebank

        if spec not in self._banks:
            self._banks[spec] = open_facebank(spec)
        return self._banks[spec]


class _ViewSink(Sink):
    """In the runner's writer thread: draw the overlays, hand the newest frame over."""

    def __init__(self, thread: "RunThread"):
        self.thread = thread

    def write(self, frame: Frame, result: FrameResult) -> None:
        thread = self.thread
        view = thread.overlay.annotate(shown_image(frame, result, thread.show_enhanced).copy(),
                                       result.faces)
        limit = thread.max_latency
        item = ViewFrame(thread.run_id, frame.index, frame.timestamp,
                         frame.image if result.image is None else result.image,
                         to_qimage(view), result, frame.read_at,
                         None if limit is None else frame.read_at + limit, frame.marks)
        if thread.mailbox.put(item):
            thread.frameReady.emit()
        self._ended(result)

    def write_late(self, frame: Frame, result: FrameResult) -> None:
        """Too old to show (the runner counts it): not drawn; its ended tracks still go."""
        self._ended(result)

    def _ended(self, result: FrameResult) -> None:
        if result.finished:
            self.thread.tracks.emit(self.thread.run_id, list(result.finished), True)

    def finish(self, summaries) -> None:
        if summaries:
            self.thread.tracks.emit(self.thread.run_id, list(summaries), True)


class RunThread(QThread):
    """One run of the pipeline over one source."""

    frameReady = pyqtSignal()                 # the mailbox has a frame (it was empty)
    progress = pyqtSignal(object)             # Progress
    status = pyqtSignal(str)                  # what it is doing ("loading the models"...)
    failed = pyqtSignal(str)                  # one line, for the window
    tracks = pyqtSignal(int, object, bool)    # run id, [TrackSummary], final (ended)
    ended = pyqtSignal(int, object)           # run id, RunStats (None: it never ran)

    def __init__(self, run_id: int, request: RunRequest, holder: PipelineHolder,
                 mailbox: LatestSlot, overlay: OverlayOptions, parent=None,
                 open_source: Callable[[RunRequest], VideoSource] | None = None):
        """open_source(request): the source to run on (default: a VideoSource of
        ``request.source``); a benchmark or a test gives its own live stand-in."""
        super().__init__(parent)
        self.run_id = run_id
        self.request = request
        self.holder = holder
        self.mailbox = mailbox
        self.overlay = Overlay(overlay)
        self.show_enhanced = request.show_enhanced
        self.label = describe(parse_source(request.source))
        self._lock = threading.Lock()
        self._runner: VideoRunner | None = None
        self._stopping = False
        self._paused = False
        self._threshold: float | None = None
        self._enhance: str | None = None
        self._reload = False
        self._times: deque[float] = deque(maxlen=30)
        self._analysis = 0.0
        self._pace_origin: float | None = None
        self._next_live = 0.0
        self._next_progress = 0.0
        self._live = False
        self._open_source = open_source or _open_source
        #: live sources: the limit the writer and the window apply (None for files)
        self.max_latency: float | None = None

    # -- asked by the window (any thread) --------------------------------------------

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            if self._runner is not None:
                self._runner.stop()

    def set_paused(self, paused: bool) -> None:
        with self._lock:
            self._paused = paused
            if self._runner is not None:
                (self._runner.pause if paused else self._runner.resume)()

    @property
    def paused(self) -> bool:
        return self._paused

    def set_threshold(self, threshold: float) -> None:
        with self._lock:
            self._threshold = float(threshold)

    def reload_facebank(self) -> None:
        with self._lock:
            self._reload = True

    def set_enhance(self, mode: str) -> None:
        """The low-light mode from the next frame on (off, auto, on)."""
        with self._lock:
            self._enhance = mode

    def set_show_enhanced(self, show: bool) -> None:
        self.show_enhanced = bool(show)   # read by the writer thread

    def set_overlay(self, options: OverlayOptions) -> None:
        self.overlay = Overlay(options)   # one reference swap: the writer takes either

    # -- the thread ---------------------------------------------------------------------

    def run(self) -> None:
        stats: RunStats | None = None
        try:
            stats = self._run()
        except (MobileFaceError, ValueError) as exc:
            self.failed.emit(str(exc))
        except Exception as exc:  # never let a worker take the window down
            log.debug("the run failed", exc_info=True)
            self.failed.emit(f"the run failed: {type(exc).__name__}: {exc}")
        finally:
            self.ended.emit(self.run_id, stats)

    def _run(self) -> RunStats | None:
        request = self.request
        self.status.emit(f"opening {self.label}…")
        source = self._open_source(request)
        try:
            self.status.emit("loading the models…")
            pipeline = self.holder.pipeline(request)
            pipeline.set_facebank(Gallery.empty())
            if request.facebank is not None:
                try:
                    pipeline.set_facebank(self.holder.facebank(request.facebank))
                except MobileFaceError as exc:
                    self.failed.emit(f"the facebank is not used: {exc}")
                    pipeline.set_facebank(Gallery.empty())
        except BaseException:
            source.close()
            raise
        self._live = source.live
        self.max_latency = request.max_latency if source.live else None
        runner = VideoRunner(source, pipeline, [_ViewSink(self)], queue_size=QUEUE_SIZE,
                             on_result=self._on_result, on_progress=self._on_progress,
                             progress_every=PROGRESS_EVERY, max_latency=self.max_latency)
        with self._lock:
            if self._stopping:
                source.close()
                return None
            self._runner = runner
            if self._paused:
                runner.pause()
        self.status.emit(f"running on {self.label}")
        stats = runner.run()
        self._emit_progress(stats)
        if stats.error:
            self.failed.emit(stats.error)
        elif stats.truncated:
            self.failed.emit(f"{self.label} ended early: the file is truncated or corrupt")
        return stats

    # -- in the runner's inference thread, between two frames -----------------------------

    def _on_result(self, frame: Frame, result: FrameResult) -> None:
        runner, pipeline = self._runner, self._runner.pipeline
        now = time.perf_counter()
        self._times.append(now)
        self._analysis = sum(result.timings.get(k, 0.0) for k in ("detect", "total")
                             if k in result.timings)
        with self._lock:
            threshold, self._threshold = self._threshold, None
            reload, self._reload = self._reload, False
            enhance, self._enhance = self._enhance, None
        if enhance is not None:
            pipeline.enhancer.mode = enhance              # the detector's next frame
        if threshold is not None:
            pipeline.set_threshold(threshold)             # every track is voted again
        if reload:
            try:
                pipeline.reload_facebank()
            except MobileFaceError as exc:
                self.failed.emit(f"facebank not reloaded: {exc}")
        if now >= self._next_live:
            self._next_live = now + LIVE_TRACKS_EVERY
            self.tracks.emit(self.run_id, pipeline.live_summaries(), False)
        if self.request.realtime and not self._live:
            self._pace(frame, runner)

    def _pace(self, frame: Frame, runner: VideoRunner) -> None:
        """Hold a video file to its frame rate (the first frame sets the clock)."""
        now = time.perf_counter()
        if self._pace_origin is None or now - (self._pace_origin + frame.timestamp) > 0.25:
            self._pace_origin = now - frame.timestamp      # start, or behind (after a pause)
        target = self._pace_origin + frame.timestamp
        while not self._stopping and not runner.paused:
            left = target - time.perf_counter()
            if left <= 0:
                break
            time.sleep(min(left, 0.05))

    def _on_progress(self, stats: RunStats) -> None:
        self._emit_progress(stats)

    def _emit_progress(self, stats: RunStats) -> None:
        times = self._times
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and \
            times[-1] > times[0] else 0.0
        self.progress.emit(Progress(fps, stats.last_latency, self._analysis, stats.frames,
                                    stats.dropped, stats.late))


def _open_source(request: RunRequest) -> VideoSource:
    return VideoSource(request.source, begin=request.begin, duration=request.duration,
                       reconnect_attempts=request.reconnect_attempts, open_timeout=OPEN_TIMEOUT)
