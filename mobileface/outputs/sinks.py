"""Sinks: where processed frames go (annotated video, events file, a GUI).

A :class:`~mobileface.pipeline.runner.VideoRunner` hands every processed
frame to its sinks, in order, in its writer thread, so drawing and encoding
never hold up the analysis. Any object with these three methods is a sink.
"""
from __future__ import annotations

import json
import logging
import os
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

    def finish(self, summaries: list[TrackSummary]) -> None:
        """The end of the stream: the tracks that were still going."""

    def close(self) -> None:
        """Release files; called once, whatever happened."""


class VideoFileSink(Sink):
    """The annotated video; opened at once, so that a bad output path fails before the run."""

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int],
                 overlay: Overlay | None = None):
        self.writer = VideoWriter(path, fps, size)
        self.overlay = overlay or Overlay(OverlayOptions())

    def write(self, frame: Frame, result: FrameResult) -> None:
        self.writer.write(self.overlay.annotate(frame.image, result.faces))

    def close(self) -> None:
        self.writer.close()


class EventsSink(Sink):
    """One JSON line per finished track, with a best-shot crop saved beside it.

    Each line is written and flushed as soon as its track ends, so the file
    is complete up to any failure.
    """

    def __init__(self, path: str | os.PathLike, crops_dir: str | os.PathLike | None = None,
                 source: str = ""):
        self.path = check_writable(path, "events file")
        self.crops_dir = Path(crops_dir) if crops_dir else \
            self.path.with_name(self.path.stem + "_crops")
        try:
            self.crops_dir.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "w", encoding="utf-8")
        except OSError as exc:
            raise VideoError(f"cannot write events to {self.path} or crops to {self.crops_dir} "
                             f"({exc.strerror})") from None
        self.source = source
        self.count = 0

    def _emit(self, summary: TrackSummary) -> None:
        record = {"source": self.source, **summary.to_record(), "best_shot": None}
        if summary.best_shot is not None:
            crop = self.crops_dir / f"track_{summary.track_id:05d}.jpg"
            if cv2.imwrite(str(crop), summary.best_shot):
                record["best_shot"] = str(crop)
            else:
                log.warning("cannot write the best shot %s", crop)
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        self.count += 1

    def write(self, frame: Frame, result: FrameResult) -> None:
        for summary in result.finished:
            self._emit(summary)

    def finish(self, summaries: list[TrackSummary]) -> None:
        for summary in summaries:
            self._emit(summary)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
