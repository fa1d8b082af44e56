"""What a service manager sends ends a run as Ctrl-C does: the outputs are finalised.

SIGTERM (systemd, docker stop, kill), SIGHUP (a closed terminal, systemd's SendSIGHUP)
and SIGINT stop apps/infer_on_video.py through :func:`stop_on_signals`: the video
plays, the events file is whole, the exit status is 128 + the signal's number. The
apps run for real in a subprocess, on a long clip made here from the astronaut photo
that ships with scikit-image (no ../shared).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from conftest import ROOT
from fakes import FakeSource, RecordingSink, box_at, fake_pipeline
from mobileface.pipeline.runner import VideoRunner, stop_on_signals

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

FRAMES, FPS, SIZE = 1500, 25.0, (320, 240)     # a minute: far longer than a test waits


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory, astronaut_bgr):
    """A minute of her face drifting over a plain background, 320x240."""
    path = tmp_path_factory.mktemp("long_clip") / "long.mp4"
    patch = cv2.resize(astronaut_bgr[0:256, 96:352], (160, 160))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE)
    assert writer.isOpened()
    for i in range(FRAMES):
        frame = np.full((SIZE[1], SIZE[0], 3), (120, 140, 150), np.uint8)
        x = 20 + (i % 120)
        frame[40:200, x:x + 160] = patch
        writer.write(frame)
    writer.release()
    return path


def _wait_for_output(process: subprocess.Popen, path, timeout: float) -> None:
    """Until the video has some frames in it (the run is under way), or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the app ended before the signal (exit {process.returncode}): "
                        f"{process.stderr.read()}")
        if path.is_file() and path.stat().st_size > 20_000:
            return
        time.sleep(0.1)
    pytest.fail(f"no output in {path} after {timeout} s")


def _signal_and_wait(process: subprocess.Popen, *signals) -> str:
    """Send ``signals``, wait (bounded) for the process to end; its stderr. The process is
    killed if it is still there, whatever happened."""
    try:
        for signum in signals:
            process.send_signal(signum)
        return process.communicate(timeout=60)[1]
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)


def _frames_in(path) -> int:
    capture = cv2.VideoCapture(str(path))
    try:
        assert capture.isOpened(), f"{path} does not open"
        count = 0
        while count <= FRAMES:
            ok, _ = capture.read()
            if not ok:
                break
            count += 1
        return count
    finally:
        capture.release()


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129),
                                          (signal.SIGINT, 130)],
                         ids=["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_termination_signal_finalises_the_video_and_the_events(signum, code, long_clip,
                                                                 tmp_path):
    out, events = tmp_path / "out.mp4", tmp_path / "events.jsonl"
    process = subprocess.Popen(
        [sys.executable, "apps/infer_on_video.py", "--no-progress", "--no-recognition",
         "-f", str(long_clip), "-s", str(out), "--events", str(events)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_output(process, out, timeout=120)
    finally:
        err = _signal_and_wait(process, signum)
    name = signal.Signals(signum).name
    assert process.returncode == code, err
    assert f"interrupted by {name}: the output so far is saved" in err
    assert "Traceback" not in err
    assert 0 < _frames_in(out) < FRAMES               # it plays, and the run was cut short
    lines = events.read_text().splitlines()
    assert lines, "the track going on at the signal is written at the end"
    for line in lines:
        json.loads(line)


def test_sigterm_then_sighup_at_once_still_finalises(long_clip, tmp_path):
    """systemd's SendSIGHUP=yes sends SIGHUP right after SIGTERM: the second signal must
    not kill the run while it finalises. The status names the first one Python handled
    (signals pending together are handled in the order of their numbers, SIGHUP first)."""
    out = tmp_path / "out.mp4"
    process = subprocess.Popen(
        [sys.executable, "apps/infer_on_video.py", "-q", "--no-progress", "--no-recognition",
         "-f", str(long_clip), "-s", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_output(process, out, timeout=120)
    finally:
        err = _signal_and_wait(process, signal.SIGTERM, signal.SIGHUP)
    assert process.returncode in (143, 129), err
    assert 0 < _frames_in(out) < FRAMES


# -- stop_on_signals in-process ---------------------------------------------------------------


def _one_visitor(i):
    return [(box_at(20), "ada", 0.6)]


def test_a_signal_during_a_run_stops_it_and_the_handlers_come_back():
    previous = []
    signal.signal(signal.SIGTERM, lambda *a: previous.append(a))
    try:
        sink = RecordingSink()
        runner = VideoRunner(FakeSource(2000), fake_pipeline(_one_visitor).pipeline, [sink])

        def kill_at_5(frame, result):
            if frame.index == 5:
                os.kill(os.getpid(), signal.SIGTERM)

        runner.on_result = kill_at_5
        with stop_on_signals(runner):
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
            stats = runner.run()
        assert stats.interrupted and stats.signal == signal.SIGTERM
        assert 5 < stats.frames < 2000 and stats.error is None
        assert sink.closed == 1 and [s.identity for s in sink.final] == ["ada"]
        assert stats.outputs_saved
        assert previous == []                           # ours ran, not the one before
        handler = signal.getsignal(signal.SIGTERM)
        assert handler is not None and handler.__name__ == "<lambda>"   # restored
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_outside_the_main_thread_nothing_is_installed_and_nothing_fails():
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    result = {}

    def run():
        try:
            runner = VideoRunner(FakeSource(10), fake_pipeline(_one_visitor).pipeline,
                                 [RecordingSink()])
            with stop_on_signals(runner):
                result["stats"] = runner.run()
        except BaseException as exc:   # noqa: BLE001 - reported below
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert "error" not in result, result.get("error")
    assert result["stats"].frames == 10 and not result["stats"].interrupted
    assert {s: signal.getsignal(s) for s in before} == before


def test_ctrl_c_without_the_handlers_records_sigint():
    runner = VideoRunner(FakeSource(2000), fake_pipeline(_one_visitor).pipeline,
                         [RecordingSink()])

    def interrupt_at_3(frame, result):
        if frame.index == 3:
            raise KeyboardInterrupt

    runner.on_result = interrupt_at_3
    stats = runner.run()
    assert stats.interrupted and stats.signal == signal.SIGINT and stats.outputs_saved


def test_a_sink_that_fails_to_close_is_not_called_saved():
    class BadClose(RecordingSink):
        def close(self):
            raise OSError("disk gone")

    stats = VideoRunner(FakeSource(10), fake_pipeline(_one_visitor).pipeline,
                        [BadClose()]).run()
    assert not stats.outputs_saved and "closing the output failed" in stats.error


def test_the_app_says_saved_only_when_every_output_closed():
    from mobileface.pipeline.runner import RunStats
    from scripts import load_script

    infer = load_script("apps/infer_on_video.py")
    lines = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    logger = logging.getLogger("mobileface")
    handler, level = Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        clean = RunStats(interrupted=True, signal=signal.SIGTERM, outputs_saved=True)
        assert infer._interrupted(clean, []) == 143
        broken = RunStats(interrupted=True, signal=signal.SIGHUP, outputs_saved=False,
                          error="closing the output failed: disk gone")
        assert infer._interrupted(broken, []) == 129
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert lines == ["interrupted by SIGTERM: the output so far is saved",
                     "interrupted by SIGHUP; error: closing the output failed: disk gone"]


# -- the viewer -------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_the_viewer_closes_its_window_on_a_termination_signal(signum, tmp_path):
    """Closed as by its close button (runs stopped, the facebank service ended, the settings
    saved), not killed: the exit status says which signal."""
    pytest.importorskip("PyQt6.QtWidgets")
    settings = tmp_path / "viewer.json"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    process = subprocess.Popen(
        [sys.executable, "-m", "mobileface", "gui", "--settings", str(settings),
         "--facebank", str(tmp_path / "fb")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not settings.is_file():               # written once the window is built
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "the viewer did not start"
            time.sleep(0.1)
        time.sleep(0.5)                             # into its event loop
        settings.unlink()
    finally:
        err = _signal_and_wait(process, signum)
    assert process.returncode == 128 + signum, err
    assert f"interrupted by {signal.Signals(signum).name}" in err and "Traceback" not in err
    assert json.loads(settings.read_text())["detector"] == "retinaface"   # closeEvent saved
