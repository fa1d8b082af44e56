"""Hostile input and a full disk: one clear line and a non-zero exit, never a traceback,
a hang or a memory blow-up; in a list of files the bad one is named and the rest go on.

Images: headers declaring gigapixels, decompression bombs, devices and FIFOs, huge
files. Videos: non-finite -b/-d, a begin within the last frame, a WebM whose stream
starts after 0, a header frame rate above 1000. Outputs: a disk that fills up
during a run (a small tmpfs where the system allows mounting one, /dev/full and a
failing os.write otherwise).
"""
from __future__ import annotations

import errno
import itertools
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from conftest import ROOT
from fakes import FakeDetector, box_at, fake_pipeline
from mobileface.errors import ImageError
from mobileface.io.image import read_image
from mobileface.io.video import VideoError, VideoSource, VideoWriter
from mobileface.outputs.sinks import EventsSink
from mobileface.track.memory import TrackSummary
from scripts import load_script

infer = load_script("apps/infer_on_video.py")


def _one_line(text: str) -> str:
    assert "\n" not in text.strip() and "Traceback" not in text, text
    return text


# -- images: sizes declared in headers -----------------------------------------------------


def _png(width: int, height: int) -> bytes:
    """A valid 8x8 PNG whose IHDR (and its CRC) is patched to say width x height."""
    data = bytearray(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _patched(ext: str, patch) -> bytes:
    data = bytearray(cv2.imencode(ext, np.full((8, 8, 3), 100, np.uint8))[1].tobytes())
    patch(data)
    return bytes(data)


def _jpeg_sof(data: bytearray) -> None:
    at = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, at + 5, 65500, 65500)


def _tiff_tags(data: bytearray) -> None:
    ifd = struct.unpack_from("<I", data, 4)[0]
    for i in range(struct.unpack_from("<H", data, ifd)[0]):
        at = ifd + 2 + 12 * i
        tag, kind = struct.unpack_from("<HH", data, at)
        if tag in (256, 257):
            struct.pack_into("<HHII", data, at, tag, 4, 1, 70000)


def _webp_size(data: bytearray) -> None:
    if data[12:16] == b"VP8L":                # lossless: 14 bits each of width-1, height-1
        bits = struct.unpack_from("<I", data, 21)[0]
        struct.pack_into("<I", data, 21, (bits & ~0xFFFFFFF) | 16383 | 16383 << 14)
    else:
        struct.pack_into("<HH", data, 26, 16383, 16383)


HUGE_HEADERS = {
    "png": lambda: _png(65535, 65535),
    "jpg": lambda: _patched(".jpg", _jpeg_sof),
    "bmp": lambda: _patched(".bmp", lambda d: struct.pack_into("<ii", d, 18, 60000, 60000)),
    "gif": lambda: _patched(".gif", lambda d: struct.pack_into("<HH", d, 6, 65535, 65535)),
    "webp": lambda: _patched(".webp", _webp_size),
    "tif": lambda: _patched(".tif", _tiff_tags),
}


@pytest.mark.parametrize("ext", HUGE_HEADERS)
def test_a_header_declaring_too_many_pixels_is_refused_before_decoding(ext, tmp_path):
    path = tmp_path / f"huge.{ext}"
    path.write_bytes(HUGE_HEADERS[ext]())
    with pytest.raises(ImageError, match=r"declares \d+x\d+ pixels, more than the limit") as err:
        read_image(path)
    assert str(path) in _one_line(str(err.value))


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".gif", ".webp", ".tif", ".ppm",
                                 ".pgm", ".pfm", ".hdr", ".ras", ".jp2", ".pam", ".avif"])
def test_the_header_sizes_of_every_format_opencv_reads(ext):
    from mobileface.io.image import image_size

    image = np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    try:
        ok, data = cv2.imencode(ext, image[:, :, 0] if ext == ".pgm" else image)
    except cv2.error:
        ok = False
    if not ok:
        pytest.skip(f"this OpenCV cannot write {ext}")
    assert image_size(data.tobytes())[1:] == (53, 37)


def test_a_decompression_bomb_is_refused(tmp_path):
    """A 16 kB PNG that decodes to 121 megapixels (1-bit grey, all zero)."""
    width = height = 11000
    row = b"\x00" + bytes((width + 7) // 8)          # filter byte and a row of zero bits

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + \
            struct.pack(">I", zlib.crc32(kind + body))

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(row * height, 9)) + chunk(b"IEND", b""))
    assert bomb.stat().st_size < 100_000
    with pytest.raises(ImageError, match="11000x11000 pixels, more than the limit"):
        read_image(bomb)


def test_the_pixel_limit_is_set_by_an_environment_variable(tmp_path, monkeypatch):
    path = tmp_path / "small.png"
    cv2.imwrite(str(path), np.zeros((40, 40, 3), np.uint8))
    monkeypatch.setenv("MOBILEFACE_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(ImageError, match=r"40x40 pixels, more than the limit of 1,000 "
                                         r"\(set \$MOBILEFACE_MAX_IMAGE_PIXELS"):
        read_image(path)
    monkeypatch.setenv("MOBILEFACE_MAX_IMAGE_PIXELS", "1600")
    assert read_image(path).shape == (40, 40, 3)
    monkeypatch.setenv("MOBILEFACE_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ImageError, match="MOBILEFACE_MAX_IMAGE_PIXELS must be a whole number"):
        read_image(path)


def test_a_file_too_large_for_any_image_within_the_limit_is_not_read(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILEFACE_MAX_IMAGE_PIXELS", "100")
    sparse = tmp_path / "big.jpg"
    with open(sparse, "wb") as file:     # 40 MB on paper, nothing on disk
        file.write(b"\xff\xd8")
        file.truncate(40 << 20)
    with pytest.raises(ImageError, match="the file has 41,943,040 bytes, more than"):
        read_image(sparse)


# -- images: special files -------------------------------------------------------------------

_CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))   # a runaway read fails fast
from mobileface.errors import ImageError
from mobileface.io.image import read_image
try:
    read_image(sys.argv[1])
except ImageError as exc:
    print(exc)
    sys.exit(3)
"""


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs and /dev/zero are POSIX")
@pytest.mark.parametrize("kind", ["fifo", "device", "link to a device"])
def test_devices_and_fifos_are_refused_without_being_read(kind, tmp_path):
    """In a child process with a memory cap and a timeout: before the fix /dev/zero was read
    until memory ran out and a FIFO blocked forever."""
    path = tmp_path / "picture.jpg"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path = Path("/dev/zero")
    else:
        path.symlink_to("/dev/zero")
    done = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 3, done.stderr[-2000:]
    line = _one_line(done.stdout)
    assert line.startswith(f"{path}: is a ") and "regular files only" in line


# -- images: lists and folders go on after a bad file ----------------------------------------


def test_analyze_names_the_bad_image_and_analyses_the_next(tmp_path, monkeypatch, capsys):
    from mobileface.cli import main as cli
    from mobileface.types import Faces

    huge, good = tmp_path / "huge.png", tmp_path / "good.png"
    huge.write_bytes(_png(65535, 65535))
    cv2.imwrite(str(good), np.zeros((32, 32, 3), np.uint8))
    seen = []
    fake = SimpleNamespace(analyze=lambda image: seen.append(image.shape) or Faces.empty())
    monkeypatch.setattr(cli, "_analyzer", lambda args, stages=None: fake)
    assert cli.main(["analyze", "--json", str(huge), str(good)]) == 1
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert out[0]["image"] == str(huge) and "65535x65535" in out[0]["error"]
    assert out[1] == {"image": str(good), "faces": []} and seen == [(32, 32, 3)]


def test_a_huge_picture_in_a_person_folder_is_skipped_and_the_rest_imported(tmp_path):
    """Facebank.import_folder with FaceEnroller.embedding_and_quality, which reads each
    picture with read_image (its face model is stood in for)."""
    from mobileface.identity.enrol import FaceEnroller
    from mobileface.identity.facebank import Facebank

    bank_dir = tmp_path / "bank"
    for name in ("ann", "bob"):
        (bank_dir / name).mkdir(parents=True)
        cv2.imwrite(str(bank_dir / name / "good.png"), np.full((32, 32, 3), 90, np.uint8))
    (bank_dir / "ann" / "huge.png").write_bytes(_png(65535, 65535))
    enroller = FaceEnroller.__new__(FaceEnroller)       # no models: embed_image is faked
    enroller.model_id = "test-model:1"
    enroller.embed_image = lambda image, label, several="refuse": SimpleNamespace(
        embedding=np.array([0.6, 0.8, 0, 0], np.float32), quality=0.8, jpeg=lambda: b"chip")
    report = Facebank(bank_dir).import_folder(enroller.embedding_and_quality, "test-model:1")
    assert sorted(report.added) == ["ann/good.png", "bob/good.png"]
    [(file, reason)] = report.skipped
    assert file == "ann/huge.png" and "65535x65535 pixels" in reason


# -- videos -------------------------------------------------------------------------------


def _avi(path: Path, frames: int = 50, fps: float = 25.0, size=(160, 120), noise=False) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for i in range(frames):
        image = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8) if noise else \
            np.full((size[1], size[0], 3), (i * 5) % 256, np.uint8)
        writer.write(image)
    writer.release()
    return path


@pytest.mark.parametrize("begin, duration, message", [
    (float("nan"), None, "begin must be a finite number"),
    (float("inf"), None, "begin must be a finite number"),
    (-1.0, None, "begin must be a finite number of seconds >= 0"),
    (0.0, float("inf"), "duration must be a finite number"),
    (0.0, float("nan"), "duration must be a finite number"),
    (0.0, 0.0, "duration must be a finite number of seconds > 0"),
])
def test_begin_and_duration_must_be_finite(begin, duration, message, tmp_path):
    with pytest.raises(VideoError, match=message):
        VideoSource(_avi(tmp_path / "clip.avi"), begin=begin, duration=duration)


@pytest.mark.parametrize("option, value", [("-b", "nan"), ("-b", "inf"), ("-b", "-2"),
                                           ("-d", "inf"), ("-d", "nan"), ("-d", "0")])
def test_the_app_refuses_non_finite_seconds_naming_the_option(option, value, tmp_path, capsys):
    clip = _avi(tmp_path / "clip.avi")
    assert infer.main(["--no-progress", "-f", str(clip), option, value, "--no-recognition",
                       "--events", str(tmp_path / "e.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error" in line]
    long = "--begin" if option == "-b" else "--duration"
    assert len(lines) == 1 and f"{option}/{long} must be a finite number" in lines[0], err
    assert not (tmp_path / "e.jsonl").exists()


def test_a_begin_within_the_last_frame_starts_there_and_past_it_says_how_long(tmp_path):
    clip = _avi(tmp_path / "clip.avi")           # 50 frames at 25 fps: 2 s
    source = VideoSource(clip, begin=1.99)        # rounds to frame 50, which does not exist
    frames = [source.read(), source.read()]
    assert frames[0].index == 49 and frames[1] is None and not source.truncated
    with pytest.raises(VideoError, match=r"begin 2 s is past the end: the video is only "
                                         r"2\.000 s long \(50 frames at 25 fps\)"):
        VideoSource(clip, begin=2.0)


# WebM written by OpenCV, its clusters moved later: a stream that starts at 2 s, as in a
# recording cut from a longer one. Its seek index and Cues would point at the old places
# and are dropped (the demuxer reads such a file as it does a live recording).
_EBML_MASTERS = {0x18538067, 0x1F43B675, 0x1549A966, 0x1654AE6B, 0xAE, 0x1254C367}
_EBML_DROPPED = {0x114D9B74, 0x1C53BB6B, 0xEC}      # SeekHead, Cues, Void


def _ebml_vint(data: bytes, pos: int, keep_marker: bool) -> tuple[int, int]:
    length = 1
    while not data[pos] & (0x80 >> (length - 1)):
        length += 1
    value = data[pos] if keep_marker else data[pos] & (0xFF >> length)
    for byte in data[pos + 1:pos + length]:
        value = value << 8 | byte
    return value, pos + length


def _ebml_size(n: int) -> bytes:
    length = 1
    while n >= (1 << 7 * length) - 1:
        length += 1
    return ((1 << 7 * length) | n).to_bytes(length, "big")


def _shift_webm(data: bytes, offset_ms: int) -> bytes:
    out, pos = b"", 0
    while pos < len(data):
        eid, p = _ebml_vint(data, pos, True)
        size, p = _ebml_vint(data, p, False)
        body, pos = data[p:p + size], p + size
        if eid in _EBML_DROPPED:
            continue
        if eid in _EBML_MASTERS:
            body = _shift_webm(body, offset_ms)
        elif eid == 0xE7:                               # a Cluster's Timecode (ms)
            body = (int.from_bytes(body, "big") + offset_ms).to_bytes(4, "big")
        elif eid == 0x4489:                             # the Segment's Duration (ms)
            duration = struct.unpack(">d" if len(body) == 8 else ">f", body)[0]
            body = struct.pack(">d", duration + offset_ms)
        out += eid.to_bytes((eid.bit_length() + 7) // 8, "big") + _ebml_size(len(body)) + body
    return out


@pytest.fixture
def late_webm(tmp_path) -> Path:
    """50 frames at 25 fps (2 s) whose first frame is at 2 s: the header says 4 s."""
    plain = tmp_path / "plain.webm"
    writer = cv2.VideoWriter(str(plain), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"VP80"), 25,
                             (160, 120))
    if not writer.isOpened():
        pytest.skip("this OpenCV's FFmpeg cannot write VP8 WebM")
    for i in range(50):
        writer.write(np.full((120, 160, 3), i * 5, np.uint8))
    writer.release()
    late = tmp_path / "late.webm"
    late.write_bytes(_shift_webm(plain.read_bytes(), 2000))
    return late


def test_a_complete_webm_starting_after_zero_is_not_called_truncated(late_webm):
    source = VideoSource(late_webm)
    count = 0
    while source.read() is not None:
        count += 1
    assert count == 50 and not source.truncated


def test_a_begin_past_a_late_webm_s_frames_says_how_long_it_is(late_webm):
    with pytest.raises(VideoError, match=r"begin 3 s is past the end: the video is only "
                                         r"2\.000 s long \(50 frames"):
        VideoSource(late_webm, begin=3.0)
    assert VideoSource(late_webm, begin=1.99).read().index == 49


def test_a_header_frame_rate_above_1000_is_said_and_what_is_used(tmp_path, caplog):
    data = bytearray(_avi(tmp_path / "clip.avi", frames=20).read_bytes())
    header = data.index(b"strh")
    struct.pack_into("<II", data, header + 28, 1, 5000)      # dwScale, dwRate: 5000 fps
    fast = tmp_path / "fast.avi"
    fast.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="mobileface.io.video"):
        source = VideoSource(fast)
    assert source.fps == 25.0
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "5000 frames per second" in warning and "using 25 fps" in warning


# -- a full disk ------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 256 kB tmpfs: writing more fails with ENOSPC, as on a full disk (needs root)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if getattr(os, "geteuid", lambda: 1)() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _noise(i: int, size=(320, 240)) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)


def test_the_video_writer_reports_a_full_disk_and_an_unfinished_file(small_disk):
    writer = VideoWriter(small_disk / "out.mp4", 25, (320, 240))
    with pytest.raises(VideoError, match="no space left on device") as err:
        for i in range(400):
            writer.write(_noise(i))
    _one_line(str(err.value))
    with pytest.raises(VideoError, match="could not be finalised"):
        writer.close()
    assert not writer.finalised
    writer.close()                          # twice is harmless


def test_a_healthy_video_is_checked_and_said_to_play(tmp_path):
    writer = VideoWriter(tmp_path / "out.mp4", 25, (64, 48))
    for i in range(5):
        writer.write(_noise(i, (64, 48)))
    writer.close()
    assert writer.finalised and writer.failure is None


def _summary(track_id: int) -> TrackSummary:
    return TrackSummary(track_id, None, None, 0, 9, 0.0, 0.36, 10, None, None, None, 0.5,
                        {"yaw": [0.0, 1.0]})


def test_an_events_write_that_fails_midway_is_cut_back_to_the_last_whole_line(tmp_path,
                                                                             monkeypatch):
    path = tmp_path / "events.jsonl"
    sink = EventsSink(path)
    inode, real_write, calls = path.stat().st_ino, os.write, itertools.count()

    def write(fd, data):                      # the disk fills up during the second line
        if os.fstat(fd).st_ino != inode:
            return real_write(fd, data)
        call = next(calls)
        if call == 0:
            return real_write(fd, data)
        if call == 1:
            return real_write(fd, bytes(data)[:len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", write)
    sink.finish([_summary(4)])
    with pytest.raises(VideoError, match=r"No space left on device; it is complete up to "
                                         r"track 4 \(1 lines\)") as err:
        sink.finish([_summary(7)])
    _one_line(str(err.value))
    with pytest.raises(VideoError):          # nothing is written after a failure
        sink.finish([_summary(8)])
    sink.close()
    lines = path.read_text().splitlines(keepends=True)
    assert len(lines) == 1 and json.loads(lines[0])["track_id"] == 4
    assert sink.outcome() == f"the events file {path} is complete up to track 4"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="/dev/full is Linux's")
def test_an_events_file_on_a_full_device_gives_one_line(tmp_path):
    sink = EventsSink("/dev/full", crops_dir=tmp_path / "crops")
    with pytest.raises(VideoError, match="No space left on device; it holds no track"):
        sink.finish([_summary(1)])
    sink.close()
    assert sink.outcome() == "the events file /dev/full holds no track"


def _counting_script():
    """Faces by call (the detector sees the frames in order; their pixels, decoded from a
    lossy file, cannot carry the index): ada on the first 6 frames, bob from the 10th."""
    calls = itertools.count()

    def script(_index):
        i = next(calls)
        if i < 6:
            return [(box_at(20), "ada")]
        return [(box_at(180), "bob")] if i >= 10 else []
    return script


def test_a_run_on_a_full_disk_says_what_is_true_of_its_outputs(small_disk, tmp_path,
                                                              monkeypatch, capsys):
    from mobileface.pipeline import FacePipeline

    clip = _avi(tmp_path / "noise.avi", frames=120, size=(320, 240), noise=True)
    parts = fake_pipeline(None, detector=FakeDetector(_counting_script()), embed=False,
                          attributes=False, max_age=1, reid_seconds=0.0)
    monkeypatch.setattr(FacePipeline, "from_config",
                        classmethod(lambda cls, config, facebank=None: parts.pipeline))
    out, events = small_disk / "out.mp4", small_disk / "events.jsonl"
    code = infer.main(["--no-progress", "-f", str(clip), "-s", str(out), "--events",
                       str(events), "--no-recognition"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    [line] = [line for line in err.splitlines() if "error" in line]
    assert "no space left on device" in line.lower()
    assert f"the video {out} could not be finalised" in line
    assert "the output so far is saved" not in line
    for text in events.read_text().splitlines():     # whatever is there is whole
        json.loads(text)
