"""Video in and out: every bad source gives a one-line error; the writer falls back and plays."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import shared_file
from mobileface.io import video
from mobileface.io.video import VideoError, VideoSource, VideoWriter, check_writable, parse_source


def _avi(path: Path, frames: int = 50, fps: float = 25.0, size=(160, 120)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), (i * 5) % 256, np.uint8))
    writer.release()
    return path


def _read_all(source: VideoSource) -> list:
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    return frames


def test_a_file_is_read_whole_with_video_timestamps(tmp_path):
    source = VideoSource(_avi(tmp_path / "clip.avi"))
    assert not source.live and source.fps == 25.0 and source.expected_frames == 50
    frames = _read_all(source)
    assert [f.index for f in frames] == list(range(50))
    np.testing.assert_allclose([f.timestamp for f in frames], np.arange(50) / 25.0)


def test_begin_and_duration_select_seconds(tmp_path):
    source = VideoSource(_avi(tmp_path / "clip.avi"), begin=1.0, duration=0.4)
    assert source.expected_frames == 10
    frames = _read_all(source)
    assert [f.index for f in frames] == list(range(25, 35))
    assert frames[0].timestamp == pytest.approx(1.0)
    # the frame at 1.0 s is the 26th written (grey level 25 * 5)
    assert abs(int(frames[0].image.mean()) - 125) <= 2


def test_begin_past_the_end_is_refused(tmp_path):
    with pytest.raises(VideoError, match="past the end"):
        VideoSource(_avi(tmp_path / "clip.avi"), begin=10.0)


def _file(folder: Path, name: str, data: bytes) -> Path:
    (folder / name).write_bytes(data)
    return folder / name


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.mp4", "no such file"),
    (lambda d: d, "is a directory"),
    (lambda d: _file(d, "empty.mp4", b""), "the file is empty"),
    (lambda d: _file(d, "noise.mp4", os.urandom(4096)), "not a readable video"),
])
def test_unusable_files_give_one_line_errors(tmp_path, make, message):
    with pytest.raises(VideoError, match=message) as error:
        VideoSource(make(tmp_path))
    assert "\n" not in str(error.value)


def test_a_video_with_zero_frames(tmp_path):
    path = tmp_path / "zero.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 48))
    writer.release()
    with pytest.raises(VideoError, match="no frames"):
        VideoSource(path)


def test_a_codec_that_cannot_be_decoded(tmp_path):
    data = _avi(tmp_path / "clip.avi").read_bytes()
    # The same file, its codec renamed to one no decoder knows.
    unknown = tmp_path / "unknown_codec.avi"
    unknown.write_bytes(data.replace(b"MJPG", b"QQQQ"))
    with pytest.raises(VideoError, match="codec"):
        VideoSource(unknown)
    # The container is fine but every frame's data is garbage.
    garbage = bytearray(data)
    start = data.index(b"movi") + 16
    garbage[start:-2000] = os.urandom(len(garbage) - 2000 - start)
    broken = tmp_path / "broken_frames.avi"
    broken.write_bytes(bytes(garbage))
    with pytest.raises(VideoError):
        VideoSource(broken)


def test_a_truncated_file_is_read_up_to_the_cut_and_flagged(tmp_path):
    data = _avi(tmp_path / "clip.avi").read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    source = VideoSource(cut)
    frames = _read_all(source)
    assert 5 < len(frames) < 50 and source.truncated


def test_sources_are_parsed():
    assert parse_source("0") == 0 and parse_source(" 2 ") == 2
    assert parse_source("rtsp://cam/1") == "rtsp://cam/1"
    assert video.is_live(0) and video.is_live("http://x/y.mjpg") and not video.is_live("a.mp4")


def test_a_camera_that_cannot_be_opened():
    with pytest.raises(VideoError, match="camera 57 cannot be opened"):
        VideoSource(57)


def test_a_stream_that_cannot_be_reached():
    with pytest.raises(VideoError, match="cannot be opened"):
        VideoSource("http://127.0.0.1:9/stream.mjpg", open_timeout=2.0)


def test_begin_and_duration_are_for_files_only():
    with pytest.raises(VideoError, match="files only"):
        VideoSource(0, begin=3.0)


def test_written_video_has_the_frames_and_fps_and_plays(tmp_path):
    out = tmp_path / "out.mp4"
    writer = VideoWriter(out, 29.97, (160, 120))
    for i in range(20):
        writer.write(np.full((120, 160, 3), 10 * i, np.uint8))
    writer.close()
    writer.close()  # twice is harmless
    capture = cv2.VideoCapture(str(out))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 20
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(29.97, abs=0.01)
    count = 0
    while capture.read()[0]:
        count += 1
    assert count == 20


def test_the_writer_falls_back_to_a_codec_that_opens(tmp_path, monkeypatch):
    monkeypatch.setitem(video.CODECS, ".mp4", ("QQQQ", "mp4v"))
    writer = VideoWriter(tmp_path / "out.mp4", 25, (64, 48))
    assert writer.codec == "mp4v"
    writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.close()
    monkeypatch.setitem(video.CODECS, ".mp4", ("QQQQ",))
    with pytest.raises(VideoError, match="none of the codecs"):
        VideoWriter(tmp_path / "never.mp4", 25, (64, 48))


def test_outputs_that_cannot_be_written(tmp_path):
    with pytest.raises(VideoError, match="does not exist"):
        VideoWriter(tmp_path / "no" / "such" / "out.mp4", 25, (64, 48))
    with pytest.raises(VideoError, match="is a directory"):
        VideoWriter(tmp_path, 25, (64, 48))
    with pytest.raises(VideoError, match="unsupported extension"):
        VideoWriter(tmp_path / "out.gif", 25, (64, 48))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    target = locked / "out.mp4"
    if os.access(locked, os.W_OK):      # root ignores permissions: use a place nobody may write
        target = Path("/sys/mobileface-test-out.mp4")
    with pytest.raises(VideoError, match="cannot write"):
        check_writable(target)


def test_the_hamilton_clip_reads_whole():
    source = VideoSource(shared_file("face_recognition/short_hamilton_clip.mp4"))
    assert (source.width, source.height) == (640, 360)
    assert len(_read_all(source)) == 275 and not source.truncated


def test_a_live_stream_reconnects_then_reports_the_disconnection():
    from mobileface.eval.mjpeg_server import MjpegServer

    frames = [np.full((120, 160, 3), 4 * i, np.uint8) for i in range(30)]
    with MjpegServer(frames, frames_per_connection=15, connections=2) as server:
        source = VideoSource(server.url, reconnect_attempts=2, reconnect_delay=0.05)
        assert source.live and source.expected_frames is None
        got = []
        with pytest.raises(VideoError, match="disconnected and could not be reopened after 2"):
            while (frame := source.read()) is not None:
                got.append(frame)
    assert source.reconnects == 1
    assert len(got) == 30          # both connections' frames, none lost at the reconnection
    assert all(b.timestamp >= a.timestamp for a, b in zip(got, got[1:]))
