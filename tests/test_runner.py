"""The threaded runner: every frame in order from files, newest frame from live sources,
pause, stop and failures that still finalise the outputs."""
from __future__ import annotations

import json
import threading
import time

import cv2
import pytest

from conftest import shared_file
from mobileface.pipeline import FacePipeline, PipelineConfig
from mobileface.outputs.sinks import EventsSink, Sink, VideoFileSink
from mobileface.pipeline.runner import VideoRunner
from mobileface.io.video import VideoSource


@pytest.fixture(scope="module")
def pipeline():
    return FacePipeline.from_config(PipelineConfig(det_size=320, recognition=False))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """60 frames of the Hamilton clip's close-up, as a small AVI."""
    capture = cv2.VideoCapture(str(shared_file("face_recognition/short_hamilton_clip.mp4")))
    capture.set(cv2.CAP_PROP_POS_FRAMES, 100)
    path = tmp_path_factory.mktemp("clip") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (640, 360))
    for _ in range(60):
        writer.write(capture.read()[1])
    writer.release()
    return path


class Recorder(Sink):
    def __init__(self):
        self.indices, self.finished, self.closed = [], [], False

    def write(self, frame, result):
        self.indices.append(frame.index)
        self.finished += result.finished

    def finish(self, summaries):
        self.finished += summaries

    def close(self):
        self.closed = True


def test_a_file_is_processed_whole_and_in_order(pipeline, clip):
    recorder = Recorder()
    stats = VideoRunner(VideoSource(clip), pipeline, [recorder]).run()
    assert stats.error is None and stats.frames == 60 and stats.dropped == 0
    assert recorder.indices == list(range(60)) and recorder.closed
    assert recorder.finished and stats.tracks == len(recorder.finished)


def test_pause_holds_and_resume_goes_on(pipeline, clip):
    recorder = Recorder()
    runner = VideoRunner(VideoSource(clip), pipeline, [recorder])
    seen_while_paused = []

    def pause_at_10(frame, result):
        if frame.index == 10:
            runner.pause()
            threading.Timer(0.5, lambda: (seen_while_paused.append(len(recorder.indices)),
                                          runner.resume())).start()

    runner.on_result = pause_at_10
    start = time.perf_counter()
    stats = runner.run()
    assert time.perf_counter() - start > 0.5
    assert seen_while_paused and seen_while_paused[0] <= 11 + 8   # at most a queue's worth
    assert stats.frames == 60 and recorder.indices == list(range(60))


def test_stop_ends_early_and_still_finalises(pipeline, clip, tmp_path):
    out, events = tmp_path / "out.mp4", tmp_path / "events.jsonl"
    source = VideoSource(clip)
    sinks = [VideoFileSink(out, source.fps, (source.width, source.height)),
             EventsSink(events)]
    runner = VideoRunner(source, pipeline, sinks)
    runner.on_result = lambda frame, result: runner.stop() if frame.index == 15 else None
    stats = runner.run()
    assert 16 <= stats.frames < 60 and stats.error is None
    capture = cv2.VideoCapture(str(out))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == stats.frames
    records = [json.loads(line) for line in events.read_text().splitlines()]
    assert records and all(r["last_frame"] <= stats.frames for r in records)


def test_a_failing_sink_stops_the_run_and_the_others_are_closed(pipeline, clip):
    class Broken(Sink):
        def write(self, frame, result):
            if frame.index == 5:
                raise OSError(28, "No space left on device")

    recorder = Recorder()
    stats = VideoRunner(VideoSource(clip), pipeline, [Broken(), recorder]).run()
    assert "writing the output failed" in stats.error and "No space left" in stats.error
    assert stats.frames < 60 and recorder.closed


def test_a_live_source_keeps_only_the_newest_frame(pipeline, clip):
    from mobileface.eval.mjpeg_server import MjpegServer

    capture = cv2.VideoCapture(str(clip))
    frames = [capture.read()[1] for _ in range(60)]
    with MjpegServer(frames, frames_per_connection=60, connections=1, interval=0.005) as server:
        recorder = Recorder()
        source = VideoSource(server.url, reconnect_attempts=1, reconnect_delay=0.05)
        runner = VideoRunner(source, pipeline, [recorder],
                             on_result=lambda frame, result: time.sleep(0.05))
        stats = runner.run()
    # the stream ends by disconnecting; the analysis was slower than the stream
    assert "disconnected" in stats.error
    assert stats.dropped > 10 and stats.frames + stats.dropped <= 60
    assert recorder.indices == sorted(recorder.indices)
