"""The threaded runner with fake sources, parts and sinks (no model, no ../shared).

File sources: every frame, in order, and the outputs are finalised; live
sources: the newest frame only, drops counted; stop, pause and failures in any
thread end the run with a one-line reason and every sink closed.
"""
from __future__ import annotations

import json
import threading
import time

import cv2
import pytest

from fakes import (FakeDetector, FakeFrameStage, FakeSource, RecordingSink, box_at,
                   fake_pipeline)
from mobileface.outputs.sinks import EventsSink, VideoFileSink
from mobileface.pipeline.runner import VideoRunner


def _two_visitors(i):
    """ada on frames 0-13, bob on 16-29 (at another place), nobody in between."""
    if i < 14:
        return [(box_at(20), "ada", 0.5 + 0.01 * i)]
    if i >= 16:
        return [(box_at(200), "bob", 0.5 + 0.01 * (i - 16))]
    return []


def _file_parts(**kw):
    return fake_pipeline(_two_visitors, max_age=1, reid_seconds=0.0, **kw)


def _events(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- 15. files ----------------------------------------------------------------------------


@pytest.mark.parametrize("detect_thread", [True, False])
def test_a_file_is_processed_whole_in_order_and_finished_tracks_reach_the_sinks(detect_thread):
    parts = _file_parts()
    sink = RecordingSink()
    source = FakeSource(30)
    stats = VideoRunner(source, parts.pipeline, [sink], queue_size=2,
                        detect_thread=detect_thread).run()
    assert stats.error is None and stats.frames == 30 and stats.dropped == 0
    assert sink.indices == list(range(30))
    assert parts.detector.calls == list(range(30))
    # ada ended during the run, bob at the end of the file
    assert [s.identity for s in sink.finished] == ["ada"]
    assert [s.identity for s in sink.final] == ["bob"]
    assert stats.tracks == 2 and stats.identities == {"ada": 1, "bob": 1}
    assert sink.closed == 1 and source.closed


def test_the_events_file_has_one_valid_line_per_track_with_a_best_shot(tmp_path):
    events = tmp_path / "events.jsonl"
    source = FakeSource(30)
    stats = VideoRunner(source, _file_parts().pipeline,
                        [EventsSink(events, source="fake.mp4")]).run()
    assert stats.error is None
    records = _events(events)
    assert [(r["track_id"], r["identity"]) for r in records] == [(1, "ada"), (2, "bob")]
    # bob's track starts when it is confirmed (min_hits=2 frames in a row: 16 and 17)
    assert [(r["first_frame"], r["last_frame"]) for r in records] == [(0, 13), (17, 29)]
    for record in records:
        assert record["source"] == "fake.mp4" and record["gender"] in ("male", "female")
        crop = cv2.imread(record["best_shot"])
        assert crop is not None and min(crop.shape[:2]) >= 60     # the face and a margin
    # the best shot is within quality_gain (0.05) of the track's best face (quality 0.63
    # on its last frame), and from one of its frames
    for record, (first, last) in zip(records, [(0, 13), (16, 29)]):
        assert first <= record["best_shot_frame"] <= last
        assert 0.63 - 0.05 - 1e-6 <= record["best_quality"] <= 0.63 + 1e-6


def test_the_annotated_video_plays_with_every_frame(tmp_path):
    out = tmp_path / "out.mp4"
    source = FakeSource(30)
    sink = VideoFileSink(out, source.fps, (source.width, source.height))
    stats = VideoRunner(source, _file_parts().pipeline, [sink]).run()
    assert stats.error is None and stats.frames == 30
    capture = cv2.VideoCapture(str(out))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(25.0)
    frames = []
    while len(frames) < 100:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    capture.release()
    assert len(frames) == 30 and frames[0].shape == (240, 320, 3)
    # the boxes are drawn: ada's frame differs from the plain background around her box
    assert abs(frames[5][60, 20:100].astype(int) - 90).max() > 40


# -- 16. live sources ---------------------------------------------------------------------


def test_a_live_source_faster_than_the_analysis_drops_frames_and_keeps_the_newest():
    parts = fake_pipeline(lambda i: [(box_at(100), "ada")], mode="stream",
                          frame_stage=FakeFrameStage(delay=0.03))
    source = FakeSource(300, live=True, interval=0.003)
    sink = RecordingSink()
    lags = []
    runner = VideoRunner(source, parts.pipeline, [sink],
                         on_result=lambda frame, result: lags.append(source.latest - frame.index))
    stats = runner.run()
    assert stats.error is None
    assert stats.dropped > 0 and stats.frames == len(sink.indices) < 150
    assert stats.frames + stats.dropped <= source.next_index
    assert sink.indices == sorted(set(sink.indices))           # increasing, none twice
    # the newest frames, not a backlog: the last one is near the end of the stream and the
    # lag does not grow (a queue of every frame would have reached only ~frame 40)
    assert sink.indices[-1] >= 240
    assert max(lags) <= 60 and max(lags[-5:]) <= max(lags[:10]) + 15


def test_without_the_detector_thread_a_live_frame_is_at_most_one_analysis_old():
    parts = fake_pipeline(lambda i: [(box_at(100), "ada")], mode="stream",
                          frame_stage=FakeFrameStage(delay=0.03))
    source = FakeSource(300, live=True, interval=0.003)
    lags = []
    runner = VideoRunner(source, parts.pipeline, [RecordingSink()], detect_thread=False,
                         on_result=lambda frame, result: lags.append(source.latest - frame.index))
    stats = runner.run()
    assert stats.error is None and stats.dropped > 0
    # one analysis (30 ms) is about 10 frames of the source (3 ms each)
    assert sorted(lags)[len(lags) // 2] <= 16


def test_stop_ends_a_live_run_promptly_and_finalises(tmp_path):
    parts = fake_pipeline(lambda i: [(box_at(100), "ada")], mode="stream",
                          frame_stage=FakeFrameStage(delay=0.01))
    source = FakeSource(None, live=True, interval=0.002)        # endless (capped)
    events = tmp_path / "events.jsonl"
    sink = RecordingSink()
    runner = VideoRunner(source, parts.pipeline, [sink, EventsSink(events)])
    timer = threading.Timer(0.4, runner.stop)
    timer.start()
    start = time.perf_counter()
    stats = runner.run()
    took = time.perf_counter() - start
    timer.cancel()
    assert 0.35 < took < 2.0
    assert stats.error is None and stats.frames > 5 and sink.closed == 1 and source.closed
    assert [r["identity"] for r in _events(events)] == ["ada"]


# -- 17. failures ---------------------------------------------------------------------------


def test_a_stage_that_fails_mid_run_ends_it_with_one_line_and_closed_outputs(tmp_path):
    events = tmp_path / "events.jsonl"
    parts = _file_parts(frame_stage=FakeFrameStage(fail_at=20))
    sink = RecordingSink()
    start = time.perf_counter()
    stats = VideoRunner(FakeSource(30), parts.pipeline, [sink, EventsSink(events)]).run()
    assert time.perf_counter() - start < 5.0
    assert stats.error == "stage 'fake_frame' failed: RuntimeError: the model crashed"
    assert sink.indices == list(range(20)) and sink.closed == 1
    records = _events(events)            # complete lines: ada, and bob's track cut short
    assert [r["track_id"] for r in records] == [1, 2] and records[0]["identity"] == "ada"
    assert records[1]["last_frame"] == 19


def test_the_error_of_a_failing_stage_names_the_stage():
    parts = _file_parts(frame_stage=FakeFrameStage(fail_at=20))
    stats = VideoRunner(FakeSource(30), parts.pipeline, [RecordingSink()]).run()
    assert "fake_frame" in stats.error, stats.error     # which model broke: a user must know


def test_a_detector_or_source_that_fails_ends_the_run_with_one_line():
    detector = FakeDetector(_two_visitors, fail_at=7)
    parts = _file_parts(detector=detector)
    sink = RecordingSink()
    stats = VideoRunner(FakeSource(30), parts.pipeline, [sink]).run()
    assert stats.error == "detection failed: RuntimeError: the fake detector broke"
    # the run ends soon: frames already detected may not be analysed, never later ones
    assert sink.indices == list(range(len(sink.indices))) and len(sink.indices) <= 7
    assert sink.closed == 1

    sink = RecordingSink()
    stats = VideoRunner(FakeSource(30, fail_at=12), _file_parts().pipeline, [sink]).run()
    assert stats.error == "reading fake.mp4 failed: RuntimeError: the fake source broke"
    assert sink.indices == list(range(len(sink.indices))) and len(sink.indices) <= 12
    assert sink.closed == 1


def test_a_failing_sink_ends_the_run_without_hanging_and_the_others_are_closed(tmp_path):
    broken, fine = RecordingSink(fail_at=5), RecordingSink()
    events = tmp_path / "events.jsonl"
    start = time.perf_counter()
    # a long file: the run must not read it to the end nor wait on a full queue
    stats = VideoRunner(FakeSource(2000), _file_parts().pipeline,
                        [broken, fine, EventsSink(events)], queue_size=2).run()
    assert time.perf_counter() - start < 5.0
    assert stats.error == "writing the output failed: [Errno 28] No space left on device"
    assert stats.frames < 2000 and broken.closed == fine.closed == 1
    assert fine.indices == list(range(5))           # the writer stopped at the failure
    for line in events.read_text().splitlines():
        json.loads(line)


def test_a_sink_that_fails_to_close_is_reported_and_the_others_still_close():
    class BadClose(RecordingSink):
        def close(self):
            raise OSError("disk gone")

    fine = RecordingSink()
    stats = VideoRunner(FakeSource(10), _file_parts().pipeline, [BadClose(), fine]).run()
    assert stats.frames == 10 and fine.closed == 1
    assert stats.error == "closing the output failed: disk gone"


# -- 18. pause and resume -------------------------------------------------------------------


def test_pause_holds_a_file_run_and_resume_goes_on_from_the_same_frame():
    parts = _file_parts()
    sink = RecordingSink()
    source = FakeSource(30)
    runner = VideoRunner(source, parts.pipeline, [sink], queue_size=4)
    seen = {}

    def resume():
        seen["processed"] = runner.stats.frames
        seen["paused"] = runner.paused
        seen["read"] = source.next_index
        runner.resume()

    def pause_at_10(frame, result):
        if frame.index == 10:
            runner.pause()
            threading.Timer(0.3, resume).start()

    runner.on_result = pause_at_10
    start = time.perf_counter()
    stats = runner.run()
    assert time.perf_counter() - start >= 0.3
    assert seen["paused"] is True and seen["processed"] == 11    # nothing analysed meanwhile
    assert seen["read"] <= 11 + 3 * 4 + 2          # the reader waits too (bounded queues)
    assert not runner.paused
    assert stats.frames == 30 and sink.indices == list(range(30)) and stats.dropped == 0


# -- 19. live latency: late frames, queues of one, per-step marks ---------------------------


class SlowEvery(FakeFrameStage):
    """Sleeps ``delay`` on the frames ``slow(index)`` picks, none on the others."""

    def __init__(self, slow, delay: float):
        super().__init__()
        self.slow, self.slow_delay = slow, delay

    def process(self, image, faces):
        if self.slow(faces.frame_index):
            time.sleep(self.slow_delay)
        super().process(image, faces)


class DisplaySink(RecordingSink):
    """A display: frames that come late are not shown (their ended tracks still count)."""

    def __init__(self):
        super().__init__()
        self.late: list[int] = []
        self.ages: dict[int, float] = {}       # age when the runner handed it over

    def write(self, frame, result):
        self.ages[frame.index] = frame.marks["write"] - frame.read_at
        super().write(frame, result)

    def write_late(self, frame, result):
        self.ages[frame.index] = frame.marks["write"] - frame.read_at
        self.late.append(frame.index)
        self.finished += result.finished


def test_a_live_frame_older_than_max_latency_is_not_shown_and_is_counted():
    # every third frame takes 0.2 s to analyse: it reaches the writer late, surely
    stage = SlowEvery(lambda i: i % 3 == 0, 0.2)
    parts = fake_pipeline(lambda i: [(box_at(100), "ada")], mode="stream", frame_stage=stage)
    display, recording = DisplaySink(), RecordingSink()
    source = FakeSource(40, live=True, interval=0.01)
    stats = VideoRunner(source, parts.pipeline, [display, recording], max_latency=0.1).run()
    assert stats.error is None
    slow = [i for i in stage.calls if i % 3 == 0]
    assert slow and set(slow) <= set(display.late)
    assert stats.late == len(display.late) and not set(display.late) & set(display.indices)
    # what was shown was younger than the limit when handed over; what was not, older
    assert all(display.ages[i] <= 0.1 for i in display.indices)
    assert all(display.ages[i] > 0.1 for i in display.late)
    # a sink without write_late of its own (a recording, events) still gets every frame
    assert recording.indices == sorted(display.indices + display.late)
    assert stats.frames == len(recording.indices)


def test_a_file_ignores_max_latency_every_frame_is_written_in_order():
    stage = SlowEvery(lambda i: i % 5 == 0, 0.15)
    parts = _file_parts(frame_stage=stage)
    display = DisplaySink()
    stats = VideoRunner(FakeSource(30), parts.pipeline, [display], max_latency=0.01).run()
    assert stats.error is None and stats.late == 0 and stats.dropped == 0
    assert display.indices == list(range(30)) and display.late == []


def test_max_latency_must_be_positive():
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="max_latency"):
            VideoRunner(FakeSource(3, live=True), _file_parts().pipeline, max_latency=bad)


def test_a_slow_live_sink_makes_the_steps_before_it_drop_frames_not_queue_them():
    parts = fake_pipeline(lambda i: [(box_at(100), "ada")], mode="stream")
    source = FakeSource(200, live=True, interval=0.002)
    runner = None
    waiting = []

    class Slow(RecordingSink):
        def write(self, frame, result):
            waiting.append(runner.queued())     # frames read, detected or analysed, waiting
            time.sleep(0.02)
            super().write(frame, result)

    sink = Slow()
    runner = VideoRunner(source, parts.pipeline, [sink], queue_size=8)
    stats = runner.run()
    assert stats.error is None and stats.dropped > 0
    # one frame at most in each of the reader's slot, the detector's and the writer queue
    assert waiting and max(waiting) <= 3
    assert sink.indices == sorted(set(sink.indices))


def test_each_frame_carries_when_each_step_took_it_and_the_latency_is_reported():
    parts = fake_pipeline(lambda i: [(box_at(100), "ada")], mode="stream")
    source = FakeSource(30, live=True, interval=0.005)
    marks = []

    class Marks(RecordingSink):
        def write(self, frame, result):
            marks.append((frame.read_at, dict(frame.marks)))

    stats = VideoRunner(source, parts.pipeline, [Marks()]).run()
    assert stats.error is None and marks
    for read_at, m in marks:
        assert read_at <= m["detect"] <= m["detected"] <= m["analyse"] <= m["analysed"] \
            <= m["write"]
    assert stats.last_latency == pytest.approx(marks[-1][1]["write"] - marks[-1][0])
    # without the detector thread the analysis detects itself: no detector marks
    marks.clear()
    VideoRunner(FakeSource(5, live=True), parts.pipeline, [Marks()], detect_thread=False).run()
    assert marks and all("detect" not in m and m["analyse"] <= m["write"] for _, m in marks)


def test_a_live_detector_detects_only_frames_the_analysis_takes():
    # the analysis (30 ms) is slower than the stream (3 ms) and the detector: a detector
    # running ahead would detect frames only to see newer ones replace them
    parts = fake_pipeline(lambda i: [(box_at(100), "ada")], mode="stream",
                          frame_stage=FakeFrameStage(delay=0.03))
    source = FakeSource(150, live=True, interval=0.003)
    sink = RecordingSink()
    stats = VideoRunner(source, parts.pipeline, [sink]).run()
    assert stats.error is None and stats.dropped > 0 and stats.frames > 3
    # each detection was analysed (the last may have come as the stream ended)
    assert len(parts.detector.calls) <= stats.frames + 1
    assert sink.indices == sorted(set(sink.indices))
