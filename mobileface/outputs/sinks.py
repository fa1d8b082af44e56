"""Sinks: where processed frames go (annotated video, events file, a GUI).

A :class:`~mobileface.pipeline.runner.VideoRunner` hands every processed
frame to its sinks, in order, in its writer thread, so drawing and encoding
never hold up the analysis. Any object with these three methods is a sink.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import cv2

from mobileface.io.video import Frame, VideoError, VideoWriter, check_writable
from mobileface.outputs.annotators import Overlay, OverlayOptions
from mobileface.pipeline.video import FrameResult
from mobileface.track.memory import TrackSummary

log = logging.getLogger(__name__)


class Sink:
    """Receives every processed frame, in order, in the writer thread."""

    def write(self, frame: Frame, result: FrameResult) -> None:
        """One processed frame (``result.finished`` lists the tracks that just ended)."""

    def write_late(self, frame: Frame, result: FrameResult) -> None:
        """A live frame that reached the writer later than the runner's ``max_latency``:
        written as any other here (a recording or an events file keeps every frame); a
        display overrides this to drop it, passing ``result.finished`` on all the same.
        Optional: the runner calls ``write`` for a sink without it."""
        self.write(frame, result)

    def finish(self, summaries: list[TrackSummary]) -> None:
        """The end of the stream: the tracks that were still going."""

    def close(self) -> None:
        """Release files; called once, whatever happened."""

    def outcome(self) -> str | None:
        """After close: what is true of this sink's output, for the run's closing
        message ("the events file e.jsonl is complete up to track 7"); None to say nothing."""
        return None


class VideoFileSink(Sink):
    """The annotated video; opened at once, so that a bad output path fails before the run.

    show_enhanced: draw on the image the pipeline analysed (the low-light enhanced
    frame where enhancement was applied) instead of the frame as read.
    """

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int],
                 overlay: Overlay | None = None, show_enhanced: bool = False):
        self.writer = VideoWriter(path, fps, size)
        self.overlay = overlay or Overlay(OverlayOptions())
        self.show_enhanced = show_enhanced

    def write(self, frame: Frame, result: FrameResult) -> None:
        image = self.overlay.annotate(shown_image(frame, result, self.show_enhanced), result.faces)
        if not self.writer.frames:      # benchmark/startup.py reads this line (-v)
            log.debug("first annotated frame handed to the video at %.3f s (Unix time)",
                      time.time())
        self.writer.write(image)

    def close(self) -> None:
        self.writer.close()

    def outcome(self) -> str | None:
        writer = self.writer
        if writer.finalised:
            return f"the video {writer.path} is finalised and plays ({writer.frames} frames)"
        if writer.failure:
            return f"the video {writer.path} could not be finalised"
        return f"the video {writer.path} has no frames"


class EventsSink(Sink):
    """One JSON line per finished track, with a best-shot crop saved beside it.

    Each line is built whole and written with os.write as soon as its track
    ends, so that it reaches the file at once, not at the next flush. A write
    that fails (a full disk) is cut back to the end of the last whole line: the
    file stays complete up to that track, and later tracks are not written
    (``failure`` says why, :meth:`outcome` says how far the file goes).
    """

    def __init__(self, path: str | os.PathLike, crops_dir: str | os.PathLike | None = None,
                 source: str = "", append: bool = False):
        """append: add to the lines already in the file (a restarted camera of the site
        service continues its events file) instead of starting it again."""
        self.path = check_writable(path, "events file")
        self.crops_dir = Path(crops_dir) if crops_dir else default_crops_dir(self.path)
        flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_BINARY", 0) | (
            os.O_APPEND if append else os.O_TRUNC)
        try:
            self.crops_dir.mkdir(parents=True, exist_ok=True)
            self._fd: int | None = os.open(self.path, flags, 0o666)
            start = os.lseek(self._fd, 0, os.SEEK_END) if append else 0
        except OSError as exc:
            raise VideoError(f"cannot write events to {self.path} or crops to {self.crops_dir} "
                             f"({exc.strerror})") from None
        self.source = source
        self.count = 0
        #: track id -> the best-shot crop written for it (what other outputs refer to)
        self.crops: dict[int, str] = {}
        #: the track of the last whole line, and the bytes up to its end
        self.last_track: int | None = None
        self._complete = start
        #: why a line could not be written (the file is complete up to last_track), or None
        self.failure: str | None = None

    def _emit(self, summary: TrackSummary) -> None:
        if self.failure is not None:
            raise VideoError(self._failed())
        record = {"source": self.source, **summary.to_record(), "best_shot": None}
        if summary.best_shot is not None:
            record["best_shot"] = self._crop(summary)
        self._append((json.dumps(record) + "\n").encode("utf-8"))
        self.count += 1
        self.last_track = summary.track_id

    def _crop(self, summary: TrackSummary) -> str | None:
        """The best shot saved as a JPEG (its path), or None when it cannot be written."""
        crop = self.crops_dir / f"track_{summary.track_id:05d}.jpg"
        try:
            if cv2.imwrite(str(crop), summary.best_shot):
                self.crops[summary.track_id] = str(crop)
                return str(crop)
        except cv2.error:
            pass
        log.warning("cannot write the best shot %s", crop)
        crop.unlink(missing_ok=True)      # a full disk may have left half a JPEG
        return None

    def _append(self, line: bytes) -> None:
        """Write one whole line, or cut the file back to the last whole line and raise."""
        view = memoryview(line)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            self.failure = exc.strerror or str(exc)
            self._cut_back()
            raise VideoError(self._failed()) from None
        self._complete += len(line)

    def _cut_back(self) -> None:
        try:
            os.ftruncate(self._fd, self._complete)
            os.lseek(self._fd, self._complete, os.SEEK_SET)
        except OSError as exc:   # not a regular file (/dev/full): nothing to cut
            log.debug("cannot cut %s back to %d bytes: %s", self.path, self._complete, exc)

    def _failed(self) -> str:
        return f"cannot write the events file {self.path}: {self.failure}; {self._extent()}"

    def _extent(self) -> str:
        if self.last_track is None:
            return "it holds no track"
        return f"it is complete up to track {self.last_track} ({self.count} lines)"

    def write(self, frame: Frame, result: FrameResult) -> None:
        for summary in result.finished:
            self._emit(summary)

    def finish(self, summaries: list[TrackSummary]) -> None:
        for summary in summaries:
            self._emit(summary)

    def close(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.close(fd)      # network file systems report a failed write here
        except OSError as exc:
            self.failure = self.failure or exc.strerror or str(exc)
            raise VideoError(self._failed()) from None

    def outcome(self) -> str | None:
        if self.failure is None:
            return (f"the events file {self.path} is complete up to that point "
                    f"({self.count} tracks)")
        if self.last_track is None:
            return f"the events file {self.path} holds no track"
        return f"the events file {self.path} is complete up to track {self.last_track}"


def shown_image(frame: Frame, result: FrameResult, enhanced: bool):
    """What a sink draws on: the frame as read, or with ``enhanced`` the image the pipeline
    analysed (the same frame unless the low-light step enhanced it). Drawn on in place: the
    frame as read belongs to this frame's sinks alone, and so does the enhanced image."""
    return result.image if enhanced and result.image is not None else frame.image


def default_crops_dir(events: str | os.PathLike) -> Path:
    """Where best-shot crops go when no folder is given: beside the events file."""
    events = Path(events)
    return events.with_name(events.stem + "_crops")
