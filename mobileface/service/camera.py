"""One camera of the site: its pipeline in this process, its outputs in its folder.

A :class:`CameraWorker` is what each Ray actor of the service holds (see
:mod:`.site`), and it runs without Ray as well (the tests do). It opens the
camera's source (retrying with backoff when it cannot, reporting why), runs
today's engine on it with the frame-rate cap and region of interest of its
config, and writes, in ``OUTPUT/NAME/``:

* ``events.jsonl`` and ``crops/``: one line per ended track, as
  ``infer_on_video --events`` writes them;
* ``recording.mp4`` when ``record = true``: the annotated video;
* ``progress.json``: how far it got, rewritten whole about every second.

Frames never leave the process; only events (JSONL, MQTT) and crops do.

A worker started again after a crash (``restart`` > 0, the actor's restart
count) continues where ``progress.json`` says the last one got to (a file from
that time, a live source from now), appends to the events file, and numbers its
tracks from ``restart * TRACK_ID_BLOCK + 1``, so that track ids stay unique per
camera and run. Tracks that were open at the crash are lost (at-least-once: a
consumer may see a track's ``new`` without its ``end``).
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np

from mobileface.errors import MobileFaceError
from mobileface.service.config import CameraConfig

log = logging.getLogger(__name__)

#: each restart of a camera numbers its tracks from a new block of this many ids
TRACK_ID_BLOCK = 1_000_000
#: how long a camera whose source cannot be opened waits between tries (doubling), seconds
OPEN_RETRY_FIRST, OPEN_RETRY_MAX = 1.0, 30.0


class CameraSource:
    """A VideoSource seen through the camera's frame-rate cap and region of interest."""

    def __init__(self, source, fps_cap: float | None = None, roi=None):
        self.inner = source
        self.fps_cap = fps_cap
        self.roi = roi
        self.skipped = 0
        self._next_time: float | None = None
        self.live, self.label = source.live, source.label
        self.fps = min(source.fps, fps_cap) if fps_cap else source.fps
        if roi is not None:
            x, y, w, h = roi
            if x + w > source.width or y + h > source.height:
                raise MobileFaceError(f"{source.label}: roi {list(roi)} lies outside the "
                                      f"{source.width}x{source.height} frame")
            self.width, self.height = w, h
        else:
            self.width, self.height = source.width, source.height

    def read(self):
        while True:
            frame = self.inner.read()
            if frame is None or self.fps_cap is None:
                break
            if self._next_time is None or frame.timestamp >= self._next_time - 1e-6:
                self._next_time = (self._next_time or frame.timestamp) + 1.0 / self.fps_cap
                if frame.timestamp > self._next_time:          # fell behind: catch up
                    self._next_time = frame.timestamp + 1.0 / self.fps_cap
                break
            self.skipped += 1
        if frame is not None and self.roi is not None:
            x, y, w, h = self.roi
            frame.image = np.ascontiguousarray(frame.image[y:y + h, x:x + w])
        return frame

    @property
    def reconnects(self) -> int:
        return self.inner.reconnects

    @property
    def truncated(self) -> bool:
        return self.inner.truncated

    def close(self) -> None:
        self.inner.close()


class CameraWorker:
    """The run of one camera. ``site`` holds the shared settings (facebank, mqtt, prefix,
    threshold, output, run_id); ``restart`` is how many times it was started before."""

    def __init__(self, camera: CameraConfig, site: dict, restart: int = 0):
        self.camera = camera
        self.site = site
        self.restart = int(restart)
        self.folder = Path(site["output"]) / camera.name
        self.folder.mkdir(parents=True, exist_ok=True)
        self.progress_path = self.folder / "progress.json"
        self._lock = threading.Lock()
        self._running = threading.Lock()
        self._stop = threading.Event()
        self._runner = None
        self._source = None
        self.state = "starting"
        self.error: str | None = None
        self.open_failures = 0
        self.stats = None
        self.mqtt = None
        self.latest_fps = 0.0
        self._last_progress = 0.0
        self._resume = self._read_progress() if self.restart else None
        self.node = os.uname().nodename

    # -- progress, for a restart ---------------------------------------------------

    def _read_progress(self) -> dict | None:
        try:
            progress = json.loads(self.progress_path.read_text())
        except (OSError, ValueError):
            return None
        if progress.get("run_id") != self.site.get("run_id"):
            return None          # another run's: start from the beginning
        return progress

    def _write_progress(self, frame, finished: bool = False) -> None:
        record = {"run_id": self.site.get("run_id"), "camera": self.camera.name,
                  "restart": self.restart, "frame": frame.index if frame else None,
                  "time": frame.timestamp if frame else None, "finished": finished}
        tmp = self.progress_path.with_name(".progress.json.tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self.progress_path)

    # -- running ---------------------------------------------------------------------

    def _open_source(self):
        """The camera's source, retried with backoff until it opens or the worker stops."""
        from mobileface.io.video import VideoSource

        begin = 0.0
        if self._resume and self.camera.is_file and self._resume.get("time") is not None:
            begin = float(self._resume["time"])
        delay = OPEN_RETRY_FIRST
        while not self._stop.is_set():
            try:
                return VideoSource(self.camera.source, begin=begin,
                                   reconnect_attempts=self.camera.reconnect)
            except MobileFaceError as exc:
                self.open_failures += 1
                self.error = str(exc)
                self.state = "retrying"
                if self.camera.is_file and not Path(self.camera.source).exists():
                    raise               # a file that is not there will not appear by waiting
                log.warning("camera %s: %s; retrying in %.0f s", self.camera.name, exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, OPEN_RETRY_MAX)
        return None

    def _pipeline(self, live: bool):
        from mobileface.pipeline import FacePipeline, PipelineConfig, RunningMode

        config = PipelineConfig(det_size=self.camera.det_size or 480,
                                threshold=self.site.get("threshold"),
                                enhance=self.camera.enhance or "auto",
                                **({} if self.camera.detect_every is None else
                                   {"detect_every": self.camera.detect_every}),
                                mode=RunningMode.STREAM if live else RunningMode.VIDEO)
        embedder = None
        if self.site.get("shared_embedder"):
            import ray

            from mobileface.service.shared_embed import RemoteEmbedder

            embedder = RemoteEmbedder(ray.get_actor("embedder", namespace="mobileface"))
        pipeline = FacePipeline.from_config(config, embedder=embedder)
        pipeline.tracker.first_id = self.restart * TRACK_ID_BLOCK + 1
        pipeline.tracker.reset()
        facebank = self.site.get("facebank")
        if facebank:
            from mobileface.identity.store import open_facebank

            pipeline.set_facebank(open_facebank(facebank, outlier_threshold=pipeline.threshold))
        return pipeline

    def _sinks(self, source, pipeline) -> list:
        from mobileface.outputs.annotators import Overlay, OverlayOptions
        from mobileface.outputs.sinks import EventsSink, VideoFileSink

        sinks, events = [], None
        append = self._resume is not None
        if self.camera.events:
            events = EventsSink(self.folder / "events.jsonl",
                                self.folder / "crops" if self.camera.crops else None,
                                source=self.camera.source, append=append)
            sinks.append(events)
        if self.camera.record:
            name = "recording.mp4" if not append else f"recording-{self.restart}.mp4"
            sinks.append(VideoFileSink(self.folder / name, source.fps,
                                       (source.width, source.height), Overlay(OverlayOptions())))
        if self.site.get("mqtt"):
            sinks.append(self._mqtt_sink(events))
        return sinks

    def _mqtt_sink(self, events):
        """The camera's track messages on MQTT: its own client, whose last will marks this
        camera (not the site) offline when its process dies."""
        from mobileface.outputs.mqtt import MqttEvents, MqttSink
        from mobileface.outputs.track_events import TrackEvents

        name = self.camera.name
        self.mqtt = MqttEvents(self.site["mqtt"], prefix=self.site.get("prefix", "mobileface"),
                               client_id=f"mobileface-{name}-{self.site.get('run_id')}-"
                                         f"{self.restart}", availability=f"{name}/available")
        crops = (lambda summary: events.crops.get(summary.track_id)) if events else None
        tracks = TrackEvents(name, str(self.site.get("run_id")), best_shot=crops)
        return MqttSink(self.mqtt, tracks, close_client=True)

    def run(self) -> dict:
        """Run until the source ends (a file) or :meth:`stop`; the final status. Asked
        again while it runs (a call the site retried), it waits for the run under way."""
        if not self._running.acquire(blocking=False):
            with self._running:
                return self.status()
        try:
            return self._run()
        finally:
            self._running.release()

    def _run(self) -> dict:
        from mobileface.pipeline.runner import VideoRunner

        # the models first: a live source opened before them would be read seconds late
        pipeline = self._pipeline(live=not self.camera.is_file)
        inner = self._open_source()
        if inner is None:
            self.state = "stopped"
            return self.status()
        sinks = []
        try:
            source = CameraSource(inner, self.camera.fps, self.camera.roi)
            sinks = self._sinks(source, pipeline)
        except BaseException:
            for sink in sinks:
                sink.close()
            inner.close()
            raise
        self._source = source
        runner = VideoRunner(source, pipeline, sinks, on_result=self._on_result,
                             on_progress=self._on_progress, progress_every=1.0)
        with self._lock:
            self._runner = runner
        if self._stop.is_set():
            runner.stop()
        self.state = "running"
        self.error = None
        stats = runner.run()
        self.stats = stats
        if stats.error:
            self.error = stats.error
        self.state = "stopped" if self._stop.is_set() else "ended"
        self._write_progress(self._last_frame, finished=self.state == "ended")
        return self.status()

    _last_frame = None

    def _on_result(self, frame, result) -> None:
        self._last_frame = frame
        now = time.monotonic()
        if now - self._last_progress >= 1.0:
            self._last_progress = now
            self._write_progress(frame)

    def _on_progress(self, stats) -> None:
        self.stats = stats
        self.latest_fps = stats.fps

    def stop(self) -> None:
        """Finish soon: the outputs are finalised, then :meth:`run` returns."""
        self._stop.set()
        with self._lock:
            if self._runner is not None:
                self._runner.stop()

    def status(self) -> dict:
        """fps, dropped frames, queue depth, tracks, last error and node, for the site."""
        stats, runner = self.stats, self._runner
        queue = runner.queued() if runner is not None else 0
        live_tracks = len(runner.pipeline.states) if runner is not None else 0
        return {"camera": self.camera.name, "state": self.state, "node": self.node,
                "restart": self.restart, "fps": round(stats.fps, 2) if stats else 0.0,
                "frames": stats.frames if stats else 0,
                "dropped": (stats.dropped if stats else 0) + (self._source.skipped
                                                              if self._source else 0),
                "queue": queue, "tracks": live_tracks,
                "tracks_ended": stats.tracks if stats else 0,
                "error": self.error, "open_failures": self.open_failures,
                "mqtt": self.mqtt.counters() if self.mqtt is not None else None}
