"""Running the pipeline on a stream: a reader thread, the inference loop and a writer thread.

They are joined by bounded queues. From a file every frame is processed, in
order (the reader waits when the queue is full). From a live source (camera,
stream URL) only the newest frame is kept: the reader overwrites a frame the
inference loop has not taken yet and counts it as dropped. The writer thread
hands each processed frame to the sinks (annotated video, events file, a GUI)
so that drawing and encoding never hold up inference.

Live latency (from a frame's capture, :attr:`Frame.read_at`, to the moment it is
handed to the sinks) is kept low by construction: every step holds at most one
frame waiting (the reader's and the detector's newest-frame slots, a writer queue
of one), so a slow step makes the step before it drop frames, never queue them.
With ``max_latency``, a live frame that still reaches the writer later than that
is counted as late and handed to each sink's ``write_late`` (see
:class:`~mobileface.outputs.sinks.Sink`): a display drops it, a recording or an
events file keeps it. Each frame's ``marks`` say when each step took it.

The inference loop is itself split in two threads (``detect_thread``, on by
default): one runs the detector on frame t+1 while the other analyses frame
t (onnxruntime, OpenCV and most of numpy release the GIL, so on two cores the
detector's convolutions overlap the landmarks, pose and per-track work). From
a live source the detector starts on the newest frame just in time: once the
analysis has taken the frame before, and as long after as the analysis takes
less a detection (both estimated from the last frames), so that its frame does
not wait for the analysis nor get replaced by a newer one, wasting the cores.

Whatever ends the run (the end of the file, an error in any thread, a camera
that does not come back, Ctrl-C, :meth:`VideoRunner.stop`), the tracks still
going are summarised and every sink is closed: the output video is finalised
and plays, the events file is complete up to that point. :func:`stop_on_signals`
makes SIGTERM and SIGHUP (what service managers and closed terminals send) end
a run that way too, instead of killing the process mid-file.
"""
from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

from mobileface.errors import MobileFaceError
from mobileface.io.video import Frame, VideoSource
from mobileface.pipeline.slot import LatestSlot
from mobileface.pipeline.video import FacePipeline, FrameResult
from mobileface.track.memory import TrackSummary

log = logging.getLogger(__name__)

_END = object()
#: live, detector thread: start detecting this long before the analysis is expected to be
#: free (the estimates vary from frame to frame; the analysis waiting costs frames per second)
JUST_IN_TIME_MARGIN = 0.003
#: weight of the newest frame in the running estimates of detection and analysis times
ESTIMATE_WEIGHT = 0.2

#: what a user, a terminal or a service manager sends to end a process (SIGHUP is POSIX only)
TERMINATION_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                            if hasattr(signal, name))


@dataclass
class RunStats:
    frames: int = 0             # processed
    enhanced: int = 0           # ... of which the low-light step enhanced
    dropped: int = 0            # live sources: frames replaced before they were processed
    seconds: float = 0.0
    tracks: int = 0             # tracks that ended (all of them, at the end)
    identities: Counter = field(default_factory=Counter)   # name -> tracks
    error: str | None = None
    interrupted: bool = False   # Ctrl-C or a signal (see stop_on_signals) ended the run
    signal: int | None = None   # ... which one (the first handled, if several came)
    outputs_saved: bool = False  # every sink closed without an error: the outputs are whole
    reconnects: int = 0
    truncated: bool = False
    last_latency: float = 0.0   # seconds from reading (capturing) a frame to its sinks
    late: int = 0               # live sources: frames that reached the sinks after max_latency

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class VideoRunner:
    """Run ``pipeline`` over ``source`` and feed ``sinks``; :meth:`run` blocks until done.

    on_progress(stats) is called from the inference loop about every
    ``progress_every`` seconds; on_result(frame, result) for every processed
    frame, also from the inference loop (keep it quick).

    max_latency: live sources only, seconds: a processed frame older than this when
    the writer hands it over goes to each sink's ``write_late`` instead of ``write``
    (a display drops it) and is counted in ``stats.late``. None: every frame is
    written. Files ignore it: every frame is written, in order.
    """

    def __init__(self, source: VideoSource, pipeline: FacePipeline, sinks=(),
                 queue_size: int = 8, on_progress: Callable[[RunStats], None] | None = None,
                 progress_every: float = 0.5,
                 on_result: Callable[[Frame, FrameResult], None] | None = None,
                 detect_thread: bool = True, max_latency: float | None = None):
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        if max_latency is not None and not max_latency > 0:
            raise ValueError(f"max_latency must be a number of seconds > 0, got {max_latency}")
        self.max_latency = max_latency if source.live else None
        self.source = source
        self.pipeline = pipeline
        self.sinks = list(sinks)
        self.on_progress = on_progress
        self.on_result = on_result
        self.progress_every = progress_every
        self.stats = RunStats()
        self._stop = threading.Event()
        self._resumed = threading.Event()
        self._resumed.set()
        self._frames = LatestSlot(final=_END) if source.live else queue.Queue(maxsize=queue_size)
        self.detect_thread = detect_thread
        # detected frames wait here for the analysis: few, so that live latency stays low
        # Live: the newest detected frame waits there too, so that the analysis never takes
        # a frame the detector held while newer ones came in.
        self._detected = LatestSlot(final=_END) if source.live else queue.Queue(maxsize=queue_size)
        # Live: one analysed frame at most waits for the writer; when the sinks are slower
        # than the analysis, the analysis waits and the slots before it drop frames, so no
        # frame queues behind the sinks (their per-frame events are all kept: nothing
        # analysed is dropped here).
        self._results: queue.Queue = queue.Queue(maxsize=1 if source.live else queue_size)
        self._errors: list[str] = []
        #: running estimates (seconds) of a detection and an analysis, for the live detector
        self._detect_time = 0.0
        self._analyse_time = 0.0

    def stop(self) -> None:
        """Ask the run to end soon (from any thread); it still finalises its outputs."""
        self._stop.set()
        self._resumed.set()

    def interrupt(self, signum: int) -> None:
        """Stop because of a signal (Ctrl-C, SIGTERM...): as :meth:`stop`, and the stats
        say so and which signal was handled first, for the caller's message and exit status."""
        self.stats.interrupted = True
        if self.stats.signal is None:
            self.stats.signal = int(signum)
        self.stop()

    def pause(self) -> None:
        """Hold the analysis (from any thread). A file waits where it is; a live
        source goes on being read, and its frames are dropped meanwhile."""
        self._resumed.clear()

    def resume(self) -> None:
        self._resumed.set()

    @property
    def paused(self) -> bool:
        return not self._resumed.is_set()

    def _fail(self, message: str) -> None:
        if message not in self._errors:
            self._errors.append(message)
        self._stop.set()

    @contextmanager
    def _failures(self, what: str):
        """Any exception of a thread's loop ends the run with a one-line reason."""
        try:
            yield
        except MobileFaceError as exc:
            self._fail(str(exc))
        except Exception as exc:  # a decoder or model crash must not leave the run hanging
            log.debug("%s failed", what, exc_info=True)
            self._fail(f"{what} failed: {type(exc).__name__}: {exc}")

    def queued(self) -> int:
        """Frames read, or detected, or analysed, that wait for the next step now."""
        return sum(getattr(q, "qsize", lambda: 0)() for q in
                   (self._frames, self._detected, self._results))

    def _dropped(self) -> int:
        """Live sources: frames replaced, by newer ones, before their analysis."""
        return sum(getattr(q, "replaced", 0) for q in (self._frames, self._detected))

    def _put(self, q, item) -> bool:
        """Put a frame into a bounded queue, giving up if the run is stopping (the end
        marker always goes in); a newest-item slot takes it at once."""
        if isinstance(q, LatestSlot):
            q.put(item)
            return True
        while True:
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                if self._stop.is_set() and item is not _END:
                    return False
                if self._stop.is_set():
                    try:  # make room for the end marker
                        q.get_nowait()
                    except queue.Empty:
                        pass

    # -- threads -------------------------------------------------------------------

    def _read_loop(self) -> None:
        try:
            with self._failures(f"reading {self.source.label}"):
                while not self._stop.is_set():
                    frame = self.source.read()
                    if frame is None:
                        break
                    if not self._put(self._frames, frame):
                        break
        finally:
            self._put(self._frames, _END)

    def _get(self, q, feeder: threading.Thread):
        """The next item of ``q``, or _END once the run stops and its feeder is gone."""
        while True:
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set() and not feeder.is_alive():
                    return _END

    def _detect_loop(self, reader: threading.Thread) -> None:
        try:
            with self._failures("detection"):
                while True:
                    if self.source.live and not self._wait_for_the_analysis():
                        break
                    frame = self._get(self._frames, reader)
                    if frame is _END or self._stop.is_set():
                        break
                    frame.marks["detect"] = time.perf_counter()
                    faces = self.pipeline.detect(frame.image, frame.index, frame.timestamp)
                    frame.marks["detected"] = time.perf_counter()
                    self._detect_time = _estimate(self._detect_time, frame.marks["detected"]
                                                  - frame.marks["detect"])
                    if not self._put(self._detected, (frame, faces)):
                        break
        finally:
            self._put(self._detected, _END)

    def _wait_for_the_analysis(self) -> bool:
        """Live: wait until the analysis has taken the detected frame, then until it is
        expected to want the next one (less a detection); False when the run stops."""
        while not self._detected.wait_empty(0.1):
            if self._stop.is_set():
                return False
        lead = self._analyse_time - self._detect_time - JUST_IN_TIME_MARGIN
        if lead > 0 and self._stop.wait(lead):
            return False
        return not self._stop.is_set()

    def _write_loop(self) -> None:
        failed = False
        while True:
            item = self._results.get()
            if item is _END:
                break
            if failed:
                continue  # keep draining so the inference loop never blocks
            try:
                if isinstance(item, list):
                    for sink in self.sinks:
                        sink.finish(item)
                else:
                    self._write(*item)
            except Exception as exc:
                log.debug("writer failed", exc_info=True)
                failed = True
                self._fail(f"writing the output failed: {exc}")

    def _write(self, frame: Frame, result: FrameResult) -> None:
        """Hand one processed frame to the sinks (late ones to ``write_late``)."""
        now = time.perf_counter()
        frame.marks["write"] = now
        latency = now - frame.read_at
        self.stats.last_latency = latency
        late = self.max_latency is not None and latency > self.max_latency
        if late:
            self.stats.late += 1
        for sink in self.sinks:
            (getattr(sink, "write_late", sink.write) if late else sink.write)(frame, result)

    # -- the inference loop ----------------------------------------------------------

    def run(self) -> RunStats:
        stats = self.stats
        reader = threading.Thread(target=self._read_loop, name="mobileface-reader", daemon=True)
        writer = threading.Thread(target=self._write_loop, name="mobileface-writer", daemon=True)
        detector = threading.Thread(target=self._detect_loop, args=(reader,),
                                    name="mobileface-detector", daemon=True)
        start = time.perf_counter()
        reader.start()
        writer.start()
        if self.detect_thread:
            detector.start()
        try:
            with self._failures("analysis"):
                self._analyse(reader, detector, start)
        except KeyboardInterrupt:    # Ctrl-C without stop_on_signals
            self.interrupt(signal.SIGINT)
        finally:
            self._stop.set()
            summaries = self.pipeline.finish()
            self._count_summaries(summaries)
            self._results.put(summaries)
            self._results.put(_END)
            writer.join()
            if self.detect_thread:
                detector.join(timeout=5.0)
            reader.join(timeout=5.0)
            stats.outputs_saved = self._close_sinks()
            self.source.close()
            stats.seconds = time.perf_counter() - start
            stats.dropped = self._dropped()
            stats.reconnects = self.source.reconnects
            stats.truncated = self.source.truncated
            stats.error = "; ".join(self._errors) or None
        return stats

    def _close_sinks(self) -> bool:
        """Close every sink, even after one fails; whether all of them closed cleanly
        (only then may a caller tell the user the output is saved)."""
        saved = True
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:
                log.debug("closing a sink failed", exc_info=True)
                saved = False
                self._fail(f"closing the output failed: {exc}")
        return saved

    def _next(self, reader: threading.Thread, detector: threading.Thread):
        """(frame, its result) of the next frame, or None at the end."""
        if self.detect_thread:
            item = self._get(self._detected, detector)
            if item is _END or self._stop.is_set():
                return None
            frame, faces = item
            frame.marks["analyse"] = time.perf_counter()
            return frame, self.pipeline.process(frame.image, frame.index, frame.timestamp, faces)
        frame = self._get(self._frames, reader)
        if frame is _END or self._stop.is_set():
            return None
        frame.marks["analyse"] = time.perf_counter()
        return frame, self.pipeline.process(frame.image, frame.index, frame.timestamp)

    def _analyse(self, reader: threading.Thread, detector: threading.Thread,
                 start: float) -> None:
        """The inference loop: analyse frames until the end, hand them to the writer."""
        stats = self.stats
        next_progress = start + self.progress_every
        while True:
            while not self._resumed.wait(0.1):
                pass
            item = self._next(reader, detector)
            if item is None:
                return
            frame, result = item
            frame.marks["analysed"] = time.perf_counter()
            self._analyse_time = _estimate(self._analyse_time, frame.marks["analysed"]
                                           - frame.marks["analyse"])
            self._count(result)
            stats.frames += 1
            if self.on_result is not None:
                self.on_result(frame, result)
            # The writer drains its queue until the end marker, whatever happens.
            self._results.put((frame, result))
            now = time.perf_counter()
            if self.on_progress is not None and now >= next_progress:
                next_progress = now + self.progress_every
                stats.seconds = now - start
                stats.dropped = self._dropped()
                self.on_progress(stats)

    def _count(self, result: FrameResult) -> None:
        self.stats.enhanced += bool(result.enhancement is not None and result.enhancement.applied)
        self._count_summaries(result.finished)

    def _count_summaries(self, summaries: list[TrackSummary]) -> None:
        for summary in summaries:
            self.stats.tracks += 1
            if summary.identity:
                self.stats.identities[summary.identity] += 1


def _estimate(previous: float, seconds: float) -> float:
    """A running estimate (exponentially weighted), the first value as it is."""
    return seconds if previous <= 0 else previous + ESTIMATE_WEIGHT * (seconds - previous)


@contextmanager
def on_signals(callback: Callable[[int], None], signals=TERMINATION_SIGNALS):
    """While the block runs, each of ``signals`` calls ``callback(signum)``; the previous
    handlers come back when it ends.

    Python's default for SIGTERM and SIGHUP kills the process at once, so nothing gets
    finalised. Only the main thread may install signal handlers: from any other thread
    this does nothing (the main thread's own handlers stay as they are).
    """
    if threading.current_thread() is not threading.main_thread():
        log.debug("not in the main thread: signals keep their handlers")
        yield
        return

    def handler(signum, _frame):
        log.debug("%s received", signal.Signals(signum).name)
        callback(signum)

    previous = {}
    try:
        for signum in signals:
            previous[signum] = signal.signal(signum, handler)
        yield
    finally:
        for signum, old in previous.items():
            # None: a handler set outside Python, which cannot be put back; the default is
            # the closest
            signal.signal(signum, signal.SIG_DFL if old is None else old)


@contextmanager
def stop_on_signals(runner: VideoRunner, signals=TERMINATION_SIGNALS):
    """While the block runs, the termination ``signals`` stop ``runner`` gracefully.

    They call :meth:`VideoRunner.interrupt`, so the run ends as on Ctrl-C, its outputs
    finalised (an .mp4 killed mid-file has no index and does not play); SIGINT too,
    so that a Ctrl-C arriving while the run finalises cannot cut that short. Later
    signals (systemd sends SIGHUP right after SIGTERM) only ask again. Main thread
    only, see :func:`on_signals`.
    """
    with on_signals(runner.interrupt, signals):
        yield
