"""The viewer and live latency: a frame too old to show is dropped, in the writer thread
and again in the window, and counted; the status bar shows capture-to-screen latency.

Fake parts (tests/fakes.py) feed a real RunThread; the window is driven offscreen.
"""
from __future__ import annotations

import time

import pytest

pytest.importorskip("PyQt6.QtWidgets")

from PyQt6.QtWidgets import QApplication  # noqa: E402

from fakes import FakeFrameStage, FakeSource, box_at, fake_pipeline, make_frame  # noqa: E402
from mobileface.gui.worker import (PipelineHolder, Progress, RunRequest, RunThread,  # noqa: E402
                                   ViewFrame, to_qimage)
from mobileface.outputs.annotators import OverlayOptions  # noqa: E402
from mobileface.pipeline.slot import LatestSlot  # noqa: E402


class FakeHolder(PipelineHolder):
    """Hands the runs a pipeline of fake parts instead of loading the models."""

    def __init__(self, pipeline):
        super().__init__()
        self.fake = pipeline

    def pipeline(self, request):
        return self.fake


def _ada_then_bob(i):
    """ada on frames 0-9, then bob elsewhere: ada's track ends during the run."""
    return [(box_at(20), "ada")] if i < 10 else [(box_at(200), "bob")]


def test_live_frames_too_old_to_show_are_not_drawn_and_their_ended_tracks_still_go(qapp):
    # every analysis takes 0.1 s, more than the 0.05 s limit: no frame can be shown
    parts = fake_pipeline(_ada_then_bob, mode="stream", max_age=1, reid_seconds=0.0,
                          frame_stage=FakeFrameStage(delay=0.1))
    mailbox = LatestSlot()
    source = FakeSource(20, live=True, interval=0.12)
    thread = RunThread(1, RunRequest(source="fake camera", max_latency=0.05),
                       FakeHolder(parts.pipeline), mailbox, OverlayOptions(),
                       open_source=lambda request: source)
    shown, tracks, ended, progress = [], [], [], []
    thread.frameReady.connect(lambda: shown.append(mailbox.take()))
    thread.tracks.connect(lambda run, summaries, final: tracks.append((final, summaries)))
    thread.progress.connect(progress.append)
    thread.ended.connect(lambda run, stats: ended.append(stats))
    thread.start()
    deadline = time.monotonic() + 30
    while not ended and time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.01)
    thread.stop()
    assert thread.wait(10000)
    QApplication.processEvents()
    stats = ended[0]
    assert stats.error is None and stats.frames > 0 and stats.late == stats.frames
    assert shown == [] and mailbox.take() is None
    assert progress and progress[-1].late == stats.late
    # ada's track ended mid-run, with a frame that was not shown: it still reached the
    # window, on its own (bob's came with the end of the run)
    finals = [[s.track_id for s in summaries] for final, summaries in tracks if final]
    assert finals == [[1], [2]] and source.closed


def _view(parts, index: int, captured_at: float, show_until):
    image = make_frame(index)
    result = parts.pipeline.process(image, index, index / 25.0)
    return ViewFrame(1, index, index / 25.0, image, to_qimage(image), result, captured_at,
                     show_until)


def test_the_window_drops_a_frame_that_is_too_old_by_the_time_it_gets_to_it(window_maker,
                                                                            tmp_path):
    window = window_maker(tmp_path / "viewer.json", PipelineHolder())
    window.run_id = 1
    parts = fake_pipeline(lambda i: [(box_at(100), "ada")])
    now = time.perf_counter()
    window.mailbox.put(_view(parts, 0, now - 1.0, now - 0.9))     # 1 s old, limit 0.1 s
    window._frame_ready()
    assert window.latest is None and window.late_frames == 1 and window.shown_latency is None

    fresh = _view(parts, 1, time.perf_counter(), time.perf_counter() + 60.0)
    window.mailbox.put(fresh)
    window._frame_ready()
    assert window.latest is fresh and window.late_frames == 1
    assert 0.0 <= window.shown_latency < 60.0

    # the status bar: the window's own capture-to-screen latency, and every frame too late
    window._show_progress(Progress(fps=10.0, latency=0.5, analysis=0.02, frames=100,
                                   dropped=3, late=2))
    text = window.stats_label.text()
    assert "latency" in text and " 500 ms" not in text and "too late 3" in text

    # a file's frame (no limit) is shown however old
    old = _view(parts, 2, now - 5.0, None)
    window.mailbox.put(old)
    window._frame_ready()
    assert window.latest is old and window.late_frames == 1
