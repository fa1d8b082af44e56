"""Live latency: from each frame's capture to the annotated frame shown, at 720p and 30 fps.

    python benchmark/latency.py [--seconds 20] [--max-latency 0.1] [--json-out latency.json]

The frames of ../shared/data/mobileface/friends1.mp4 (720p, real faces), looped
and paced in real time at 30 fps, come from two live sources:

* **camera**: an in-process camera stand-in (:class:`PacedCamera`, a live
  source with VideoSource's interface) that "captures" frame k at start + k/30 s
  and stamps it with that time; a read that comes late gets the newest frame
  (the ones missed meanwhile are counted as dropped, as a camera overwrites
  them);
* **mjpeg**: the local MJPEG server (mobileface.eval.mjpeg_server) on
  127.0.0.1, read by VideoSource over HTTP as a stream URL; each frame carries
  its position in the loop as a pixel code, and its capture time is the moment
  the server sent it.

Each source feeds two paths, one after the other, ``--seconds`` in all:

* **headless**: VideoRunner in STREAM mode with apps/infer_on_video.py's live
  defaults (det_size 480, one onnxruntime thread per model, low-light "auto",
  recognition against a facebank of two people, every stage on), and a sink
  that draws the app's overlay, then records now - capture (the frame is
  "shown" there); ``--max-latency`` is given to the runner, and frames it hands
  to ``write_late`` (too late) are not shown;
* **viewer**: the PyQt6 viewer's RunThread (offscreen), its writer-thread sink
  and the ``frameReady`` signal into the window's own display slot
  (MainWindow._frame_ready, in the GUI thread, with its real event loop); the
  time is taken when that slot has put the frame on screen. The viewer drops
  frames older than ``--max-latency`` itself (RunRequest.max_latency, 0.1 s by
  default), in the writer thread and again in the window.

The first second of each run (from the first frame shown) is not counted
(warm-up); the viewer's models are loaded before its runs. Prints one table of
latencies (p50, p95, max of the frames shown; how many were shown, dropped
before the analysis (by the camera, or replaced in the runner's slots), too
late to show, and shown although older than 100 ms), one of where the time goes
(median and p95 of each step of the frames shown, from the runner's per-frame
marks), then a last line of JSON
(``p50_ms``, ``p95_ms``, ``max_ms``: headless path, camera; the other runs under
their own keys; also written to --json-out).
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mobileface.cli.common import emit_json as emit
from mobileface.eval.bench import DATA, demo_facebank
from mobileface.io.video import Frame, VideoSource
from mobileface.outputs.annotators import Overlay, OverlayOptions
from mobileface.outputs.sinks import Sink, shown_image
from mobileface.pipeline import FacePipeline, PipelineConfig
from mobileface.pipeline.runner import VideoRunner

log = logging.getLogger("benchmark.latency")

DEFAULT_VIDEO = DATA / "mobileface" / "friends1.mp4"
FPS = 30.0
#: apps/infer_on_video.py's defaults for video and live sources
APP_DET_SIZE, APP_THREADS = 480, 1
#: the target: no frame older than this is shown
SHOWN_LIMIT = 0.1
WARM_UP = 1.0
#: the pixel code of a frame's position in the loop: 16 blocks of 16x16 pixels in the
#: bottom-left corner, 8 bits and their complement (JPEG keeps them: its blocks are 8x8)
CODE_BLOCK, CODE_BITS = 16, 8
RUNS = ("headless_camera", "headless_mjpeg", "viewer_camera", "viewer_mjpeg")
#: the steps of the breakdown: (label, from mark, to mark)
STEPS = (
    ("capture -> read (network, decode)", "captured", "read"),
    ("wait in the reader's slot", "read", "detect"),
    ("detect (+ low-light)", "detect", "detected"),
    ("wait in the detector's slot", "detected", "analyse"),
    ("analyse (track, stages, identity)", "analyse", "analysed"),
    ("wait in the writer queue", "analysed", "write"),
    ("sink: draw (+ signal, display)", "write", "shown"),
    ("total", "captured", "shown"),
)


# -- the sources --------------------------------------------------------------------


def load_frames(video: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(video))
    frames = []
    while len(frames) < 1000:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    capture.release()
    if not frames:
        raise SystemExit(f"no frames in {video}")
    return frames


def stamp(image: np.ndarray, value: int) -> np.ndarray:
    image = image.copy()
    bits = [(value >> i) & 1 for i in range(CODE_BITS)]
    y = image.shape[0] - CODE_BLOCK
    for i, bit in enumerate(bits + [1 - b for b in bits]):
        image[y:, i * CODE_BLOCK:(i + 1) * CODE_BLOCK] = 255 if bit else 0
    return image


def read_stamp(image: np.ndarray) -> int | None:
    """The value :func:`stamp` put into ``image``, or None when the code does not check."""
    y = image.shape[0] - CODE_BLOCK
    strip = image[y + 4:y + CODE_BLOCK - 4, :2 * CODE_BITS * CODE_BLOCK].reshape(
        CODE_BLOCK - 8, 2 * CODE_BITS, CODE_BLOCK, 3)[:, :, 4:-4]
    bits = strip.mean(axis=(0, 2, 3)) > 127
    value, check = bits[:CODE_BITS], bits[CODE_BITS:]
    if not np.all(value != check):
        return None
    return int(sum(1 << i for i, b in enumerate(value) if b))


class PacedCamera:
    """A live source with VideoSource's interface: frame k is captured at start + k / fps
    (the first read starts the clock) and stamped with that time; ends after ``seconds``."""

    live = True
    label = "camera stand-in"
    reconnects = 0
    truncated = False
    expected_frames = None

    def __init__(self, frames: list[np.ndarray], seconds: float, fps: float = FPS):
        self.frames, self.seconds, self.fps = frames, seconds, fps
        self.height, self.width = frames[0].shape[:2]
        self.missed = 0             # captured, overwritten before a read took them
        self._start: float | None = None
        self._next = 0
        self._closed = False

    def read(self) -> Frame | None:
        now = time.perf_counter()
        if self._start is None:
            self._start = now
        k = self._next
        newest = int((now - self._start) * self.fps)
        if newest > k:                       # read late: the camera kept only the newest
            self.missed += newest - k
            k = newest
        if self._closed or k / self.fps >= self.seconds:
            return None
        captured = self._start + k / self.fps
        if captured > now:
            time.sleep(captured - now)
        self._next = k + 1
        # a new buffer per frame, as a camera gives: the sinks draw on it
        return Frame(k, k / self.fps, self.frames[k % len(self.frames)].copy(), captured)

    def close(self) -> None:
        self._closed = True


class StampedServer:
    """The MJPEG server serving the stamped loop in real time; the send time of each
    position in the loop (the newest send: a loop lasts seconds, a frame's trip less)."""

    def __init__(self, frames: list[np.ndarray], seconds: float):
        from mobileface.eval.mjpeg_server import MjpegServer

        self.count = len(frames)
        self.sent = [0.0] * self.count
        self.server = MjpegServer([stamp(f, i) for i, f in enumerate(frames)],
                                  frames_per_connection=int((seconds + 30) * FPS),
                                  connections=1, interval=1.0 / FPS, realtime=True,
                                  on_send=self._sent)
        self.url = self.server.url

    def _sent(self, number: int) -> None:
        self.sent[number % self.count] = time.perf_counter()

    def captured(self, image: np.ndarray) -> float | None:
        value = read_stamp(image)
        return None if value is None or value >= self.count else self.sent[value]

    def __enter__(self) -> "StampedServer":
        self.server.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.server.__exit__(*exc)


# -- what is measured -------------------------------------------------------------------


@dataclass
class Record:
    """Per frame that reached the display or sink: its steps' times and whether shown."""

    start: float | None = None        # when the first frame shown was read
    latencies: list[float] = field(default_factory=list)
    steps: dict[str, list[float]] = field(default_factory=dict)
    shown: int = 0
    late: int = 0                     # too late, not shown
    shown_over_limit: int = 0
    dropped: int = 0
    unstamped: int = 0

    def add(self, marks: dict[str, float]) -> None:
        """A frame shown (counted from the start; measured after the warm-up)."""
        self.shown += 1
        self.shown_over_limit += marks["shown"] - marks["captured"] > SHOWN_LIMIT
        if self.start is None:
            self.start = marks["read"]
        if marks["read"] - self.start < WARM_UP:
            return
        self.latencies.append(marks["shown"] - marks["captured"])
        for label, a, b in STEPS:
            if a in marks and b in marks:
                self.steps.setdefault(label, []).append(marks[b] - marks[a])

    def summary(self) -> dict:
        ms = 1000 * np.asarray(self.latencies or [np.nan])
        out = {"p50_ms": round(float(np.percentile(ms, 50)), 1),
               "p95_ms": round(float(np.percentile(ms, 95)), 1),
               "max_ms": round(float(ms.max()), 1), "measured": len(self.latencies),
               "shown": self.shown, "dropped": self.dropped, "late": self.late,
               "shown_over_100ms": self.shown_over_limit}
        out["steps_ms"] = {label: [round(1000 * float(np.percentile(v, 50)), 1),
                                   round(1000 * float(np.percentile(v, 95)), 1)]
                           for label, v in self.steps.items()}
        if self.unstamped:
            out["unstamped"] = self.unstamped
        return out


def capture_marks(frame_marks: dict, read_at: float, captured: float | None) -> dict:
    marks = dict(frame_marks)
    marks["read"] = read_at
    marks["captured"] = read_at if captured is None else captured
    return marks


class DisplaySink(Sink):
    """Stands for a display: draws the app's overlay on the frame, then it is shown."""

    def __init__(self, record: Record, server: StampedServer | None):
        self.record, self.server = record, server
        self.overlay = Overlay(OverlayOptions())        # the app's default overlay

    def _captured(self, frame: Frame) -> float | None:
        if self.server is None:
            return None
        captured = self.server.captured(frame.image)
        self.record.unstamped += captured is None
        return captured

    def write(self, frame: Frame, result) -> None:
        captured = self._captured(frame)                # before the overlay covers it
        self.overlay.annotate(shown_image(frame, result, False), result.faces)
        marks = capture_marks(frame.marks, frame.read_at, captured)
        marks["shown"] = time.perf_counter()
        self.record.add(marks)

    def write_late(self, frame: Frame, result) -> None:
        """Too old to show (the runner counts it in stats.late)."""


# -- the two paths ----------------------------------------------------------------------


def headless(pipeline: FacePipeline, frames, source_kind: str, seconds: float,
             max_latency: float | None) -> dict:
    pipeline.reset()
    record = Record()
    if source_kind == "camera":
        source = PacedCamera(frames, seconds)
        runner = VideoRunner(source, pipeline, [DisplaySink(record, None)],
                             max_latency=max_latency)
        stats = runner.run()
        record.dropped, record.late = stats.dropped + source.missed, stats.late
    else:
        with StampedServer(frames, seconds) as server:
            source = VideoSource(server.url, reconnect_attempts=1, reconnect_delay=0.1)
            runner = VideoRunner(source, pipeline, [DisplaySink(record, server)],
                                 max_latency=max_latency)
            timer = threading.Timer(seconds, runner.stop)
            timer.start()
            try:
                stats = runner.run()
            finally:
                timer.cancel()
                runner.stop()
        record.dropped, record.late = stats.dropped, stats.late
    if stats.error:
        log.warning("headless %s: %s", source_kind, stats.error)
    return record.summary()


def viewer(app, window, frames, source_kind: str, seconds: float, facebank: Path,
           max_latency: float | None) -> dict:
    """The viewer's worker and the window's display slot, with Qt's event loop running."""
    from PyQt6.QtCore import QEventLoop, QTimer

    from mobileface.gui.worker import RunRequest, RunThread

    record = Record()
    server = StampedServer(frames, seconds) if source_kind == "mjpeg" else None
    camera = PacedCamera(frames, seconds) if server is None else None
    display = window._frame_ready

    def shown() -> None:               # the window's own slot, then the time it finished
        before = window.latest
        display()
        now = time.perf_counter()
        item = window.latest
        if item is not before:
            captured = server.captured(item.image) if server else None
            record.unstamped += server is not None and captured is None
            marks = capture_marks(item.marks, item.captured_at, captured)
            marks["shown"] = now
            record.add(marks)

    if server is not None:
        server.__enter__()
    try:
        window.run_id += 1
        window.mailbox.take()
        window.shown_latency, window.late_frames = None, 0
        request = RunRequest(source=server.url if server else "camera stand-in",
                             facebank=facebank, realtime=False, reconnect_attempts=1,
                             max_latency=max_latency)
        thread = RunThread(window.run_id, request, window.holder, window.mailbox,
                           window.overlay_options(),
                           open_source=None if camera is None else (lambda _request: camera))
        stats: list = []
        thread.frameReady.connect(shown)
        thread.failed.connect(lambda text: log.warning("viewer %s: %s", source_kind, text))
        thread.ended.connect(lambda run, s: stats.append(s))
        thread.start()
        loop = QEventLoop()
        thread.finished.connect(loop.quit)
        QTimer.singleShot(int(1000 * (seconds + 30)), loop.quit)    # whatever happens
        if server is not None:
            QTimer.singleShot(int(1000 * seconds), thread.stop)
        loop.exec()
        thread.stop()
        thread.wait(10000)
        app.processEvents()
    finally:
        if server is not None:
            server.__exit__(None, None, None)
    if stats and stats[0] is not None:
        record.dropped = stats[0].dropped + (camera.missed if camera else 0)
        record.late = stats[0].late + window.late_frames
    return record.summary()


# -- the report -------------------------------------------------------------------------


def table(results: dict[str, dict]) -> str:
    lines = [f"{'path, source':<18}{'shown':>7}{'dropped':>8}{'late':>6}"
             f"{'>100ms shown':>13}{'p50 ms':>8}{'p95 ms':>8}{'max ms':>8}"]
    for name, r in results.items():
        lines.append(f"{name:<18}{r['shown']:>7}{r['dropped']:>8}"
                     f"{r['late']:>6}{r['shown_over_100ms']:>13}{r['p50_ms']:>8.1f}"
                     f"{r['p95_ms']:>8.1f}{r['max_ms']:>8.1f}")
    lines += ["", "where the time goes, ms (median / p95)",
              f"{'step':<36}" + "".join(f"{name:>18}" for name in results)]
    for label, _a, _b in STEPS:
        cells = []
        for r in results.values():
            v = r["steps_ms"].get(label)
            cells.append(f"{v[0]:>8.1f} / {v[1]:>6.1f}" if v else f"{'-':>17}")
        lines.append(f"{label:<36}" + "".join(f"{c:>18}" for c in cells))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--video", default=str(DEFAULT_VIDEO))
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="measured seconds in all, shared by the runs (default: 20)")
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS))
    parser.add_argument("--max-latency", type=float, default=SHOWN_LIMIT,
                        help="frames older than this (seconds from capture) are not shown: "
                             "the runner's max_latency and the viewer's (default: 0.1, the "
                             "viewer's own; 0: none, every frame is shown)")
    parser.add_argument("--json-out")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    each = args.seconds / len(args.runs)
    frames = load_frames(Path(args.video))
    pipeline = FacePipeline.from_config(PipelineConfig(mode="stream", det_size=APP_DET_SIZE,
                                                       threads=APP_THREADS))
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        facebank = Path(tmp) / "facebank"
        demo_facebank(facebank, pipeline)
        for name in args.runs:
            path, kind = name.split("_")
            if path == "headless":
                results[name] = headless(pipeline, frames, kind, each, args.max_latency or None)
        viewer_runs = [name for name in args.runs if name.startswith("viewer")]
        if viewer_runs:
            results.update(_viewer_runs(viewer_runs, frames, each, facebank, Path(tmp),
                                        args.max_latency or None))
    results = {name: results[name] for name in args.runs}
    print(table(results), flush=True)
    first = results[args.runs[0]]
    out = {"source": Path(args.video).name, "fps": FPS, "size": list(frames[0].shape[1::-1]),
           "seconds_each": round(each, 1), "max_latency": args.max_latency or None,
           **{k: first[k] for k in ("p50_ms", "p95_ms", "max_ms")},
           "path": args.runs[0], **results}
    emit(out, args.json_out)
    return 0


def _viewer_runs(names, frames, seconds: float, facebank: Path, tmp: Path,
                 max_latency: float | None) -> dict:
    from PyQt6.QtWidgets import QApplication

    from mobileface.gui.window import MainWindow

    from mobileface.gui.worker import RunRequest

    app = QApplication.instance() or QApplication(["latency"])
    window = MainWindow(tmp / "viewer.json", facebank)
    window.resize(1280, 800)
    window.show()
    window.holder.pipeline(RunRequest(source=0))     # its models loaded before the runs
    settle = time.monotonic() + 2.0                  # the facebank panel filled meanwhile
    while time.monotonic() < settle:
        app.processEvents()
        time.sleep(0.02)
    try:
        return {name: viewer(app, window, frames, name.split("_")[1], seconds, facebank,
                             max_latency) for name in names}
    finally:
        window.close()
        app.processEvents()


if __name__ == "__main__":
    sys.exit(main())
