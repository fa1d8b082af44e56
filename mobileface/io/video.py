"""Video in and out: files, cameras and stream URLs; a writer that checks it really writes.

Every failure a user can cause (a missing, corrupt or empty file, a codec
OpenCV cannot decode, a camera that cannot be opened or disconnects, an output
that cannot be written) raises :class:`VideoError` with a one-line message.
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mobileface.errors import MobileFaceError

log = logging.getLogger(__name__)

STREAM_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
#: frames per second assumed for a live source that does not say
DEFAULT_LIVE_FPS = 25.0
#: ... and for a file whose header gives no frame rate, or one that cannot be right
DEFAULT_FILE_FPS = 25.0
#: the highest frame rate taken from a header: above it the value is a muxer's time base
#: (VFR Matroska files say 1000) or garbage, not how often frames come
MAX_FPS = 1000.0
#: an output container -> the codecs tried, in order, until one opens
CODECS = {
    ".mp4": ("mp4v", "avc1", "XVID"),
    ".m4v": ("mp4v", "avc1"),
    ".mov": ("mp4v", "avc1", "MJPG"),
    ".avi": ("XVID", "MJPG", "mp4v"),
    ".mkv": ("XVID", "mp4v", "MJPG"),
}

# OpenCV's and FFmpeg's own messages (a missing camera, "moov atom not found")
# would repeat our one-line errors; OPENCV_FFMPEG_LOGLEVEL is read when FFmpeg
# is first used, so setting it here works. Set it yourself to see them.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
try:
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
except AttributeError:  # pragma: no cover - builds without the logging module
    pass


class VideoError(MobileFaceError):
    """A video source or output cannot be used."""


def parse_source(text: str | int) -> str | int:
    """A camera index (``"0"`` -> 0), a stream URL or a file path."""
    if isinstance(text, int):
        return text
    text = str(text).strip()
    if text.isdigit():
        return int(text)
    return text


def is_live(source: str | int) -> bool:
    return isinstance(source, int) or str(source).lower().startswith(STREAM_PREFIXES)


def describe(source: str | int) -> str:
    return f"camera {source}" if isinstance(source, int) else str(source)


@dataclass
class Frame:
    index: int          # position in the source (files: the frame number in the file)
    timestamp: float    # seconds: video time for files, since the start for live sources
    image: np.ndarray   # BGR uint8
    #: time.perf_counter() when the reader got it: for a live source its capture time, as
    #: near as the reader can tell (the read returns as the frame arrives); latency counts
    #: from here
    read_at: float = 0.0
    #: time.perf_counter() when each step of a runner took it or was done with it
    #: ("detect", "detected", "analyse", "analysed", "write"), for latency breakdowns
    marks: dict[str, float] = field(default_factory=dict)


class VideoSource:
    """Frames from a video file, a camera index or a stream URL, opened at once.

    begin, duration: seconds (files only): start at ``begin``, stop after
    ``duration``. Live sources reconnect when a read fails: up to
    ``reconnect_attempts`` tries, waiting ``reconnect_delay`` seconds more
    each time, before giving up with VideoError.
    """

    def __init__(self, source: str | int, begin: float = 0.0, duration: float | None = None,
                 reconnect_attempts: int = 5, reconnect_delay: float = 0.5,
                 open_timeout: float = 10.0):
        self.source = parse_source(source)
        self.live = is_live(self.source)
        self.label = describe(self.source)
        check_times(begin, duration)
        if self.live and (begin or duration):
            raise VideoError(f"{self.label}: begin and duration apply to video files only")
        self.reconnect_attempts = int(reconnect_attempts)
        self.reconnect_delay = float(reconnect_delay)
        self.open_timeout = float(open_timeout)
        self.reconnects = 0
        self.truncated = False
        self._capture = None
        self._start = time.monotonic()
        self._read = 0
        #: frames between the container's time zero and the stream's first frame
        self._start_frames = 0
        self._open(first=True)
        self._header_fps = self._capture.get(cv2.CAP_PROP_FPS) or 0.0
        self.fps = self._frame_rate(self._header_fps)
        self.width = int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.total_frames = 0 if self.live else max(0, int(self._capture.get(
            cv2.CAP_PROP_FRAME_COUNT)))
        self.first_index = 0
        self.end_index: int | None = None
        self._pending: np.ndarray | None = None
        if not self.live:
            self._check_file_decodes(begin, duration)

    # -- opening -------------------------------------------------------------------

    def _frame_rate(self, header: float) -> float:
        """The header's frame rate, or a stand-in when it is missing or cannot be right
        (said in one line: the timestamps and the output video depend on it)."""
        if np.isfinite(header) and 0 < header <= MAX_FPS:
            return float(header)
        fallback = DEFAULT_LIVE_FPS if self.live else DEFAULT_FILE_FPS
        if np.isfinite(header) and header > MAX_FPS:
            log.warning("%s: its header says %g frames per second, which cannot be right; "
                        "using %g fps for its timestamps and the output video", self.label,
                        header, fallback)
        elif self.live:
            log.info("%s gives no frame rate; the output video is written at %g fps",
                     self.label, fallback)
        else:
            log.warning("%s: its header gives no frame rate; using %g fps for its timestamps "
                        "and the output video", self.label, fallback)
        return fallback

    def _open(self, first: bool) -> None:
        if not self.live:
            path = Path(self.source)
            if not path.exists():
                raise VideoError(f"{path}: no such file")
            if path.is_dir():
                raise VideoError(f"{path}: is a directory, not a video")
            if path.stat().st_size == 0:
                raise VideoError(f"{path}: the file is empty")
            # One decoding thread: FFmpeg's frame threads cost a fifth more CPU per
            # frame (2.7 against 2.2 ms for 720p H.264), and the analysis needs the cores.
            capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
            if not capture.isOpened():
                capture = cv2.VideoCapture(str(path))
            if not capture.isOpened():
                raise VideoError(f"{path}: not a readable video (corrupt, or a format or codec "
                                 "that OpenCV's FFmpeg cannot decode)")
        else:
            timeout_ms = int(self.open_timeout * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms,
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
            if isinstance(self.source, int):
                capture = cv2.VideoCapture(self.source)
            else:
                capture = cv2.VideoCapture(self.source, cv2.CAP_FFMPEG, params)
            if not capture.isOpened():
                capture.release()
                what = "cannot be opened" if first else "could not be reopened"
                raise VideoError(f"{self.label} {what}")
        self._capture = capture

    def _check_file_decodes(self, begin: float, duration: float | None) -> None:
        """Seek to ``begin`` and decode one frame now, so that a bad file fails up front."""
        if begin:
            if self.total_frames and begin >= self.total_frames / self.fps:
                raise self._past_the_end(begin, self.total_frames)
            self.first_index = int(round(begin * self.fps))
            if self.total_frames:   # rounding must not step past the last frame
                self.first_index = min(self.first_index, self.total_frames - 1)
        image = self._frame_at(self.first_index)
        if image is None and self.first_index and self._frame_at(0) is not None:
            # The header's length was an estimate: the frames end before it says.
            last = self._last_decodable(self.first_index)
            if begin >= (last + 1) / self.fps:
                raise self._past_the_end(begin, last + 1)
            self.first_index = last          # begin falls within the last frame
            image = self._frame_at(last)
        if image is None:
            if self.total_frames == 0:
                raise VideoError(f"{self.label}: the video has no frames")
            fourcc = int(self._capture.get(cv2.CAP_PROP_FOURCC))
            codec = "".join(chr((fourcc >> 8 * i) & 0xFF) for i in range(4)).strip("\x00 ")
            raise VideoError(f"{self.label}: no frame can be decoded "
                             f"(codec {codec or 'unknown'} unsupported, or the file is corrupt)")
        if duration is not None:
            self.end_index = self.first_index + max(1, int(round(duration * self.fps)))
        self._start_frames = self._stream_start()
        self._pending = image
        self._read = self.first_index

    def _past_the_end(self, begin: float, frames: int) -> VideoError:
        return VideoError(f"{self.label}: begin {begin:g} s is past the end: the video is only "
                          f"{frames / self.fps:.3f} s long ({frames} frames at {self.fps:g} fps)")

    def _frame_at(self, index: int) -> np.ndarray | None:
        """The frame ``index`` (seeking there unless it is the next one), or None."""
        if index or self._capture.get(cv2.CAP_PROP_POS_FRAMES):
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, float(index))
        ok, image = self._capture.read()
        return image if ok and image is not None else None

    def _last_decodable(self, bad: int) -> int:
        """The last frame before ``bad`` that a seek reaches (frame 0 decodes): doubling,
        then bisecting, a few dozen seeks, done only to tell the user how long the video is."""
        good, probe = 0, 1
        for _ in range(64):
            if probe >= bad or self._frame_at(probe) is None:
                break
            good, probe = probe, probe * 2
        bad = min(bad, probe)
        for _ in range(64):
            if bad - good <= 1:
                break
            middle = (good + bad) // 2
            good, bad = (middle, bad) if self._frame_at(middle) is not None else (good, middle)
        return good

    def _stream_start(self) -> int:
        """How many frames after the container's time zero the video stream starts.

        A WebM or MPEG-TS cut from a longer recording starts later than 0, and when
        its header has no frame count OpenCV derives one from the container's
        duration, which counts from 0. CAP_PROP_PTS counts (in frames) from the
        container's zero, CAP_PROP_POS_MSEC from the stream's own start: their
        difference is the start, wherever the frame just read is.
        """
        if not np.isfinite(self._header_fps) or self._header_fps <= 0:
            return 0
        pts = self._capture.get(cv2.CAP_PROP_PTS)
        msec = self._capture.get(cv2.CAP_PROP_POS_MSEC)
        if not (np.isfinite(pts) and np.isfinite(msec)) or pts <= 0:
            return 0
        return max(0, int(round(pts - msec * self._header_fps / 1000.0)))

    # -- reading -------------------------------------------------------------------

    @property
    def expected_frames(self) -> int | None:
        """How many frames a file run will read (None for live sources or unknown length)."""
        if self.live:
            return None
        end = self.end_index if self.end_index is not None else self.total_frames
        if self.total_frames:
            end = min(end, self.total_frames)
        return max(0, end - self.first_index) if end else None

    def read(self) -> Frame | None:
        """The next frame, or None at the end of a file. Live sources reconnect."""
        if self._capture is None:
            return None
        if self.end_index is not None and self._read >= self.end_index:
            return None
        if self._pending is not None:
            image, self._pending = self._pending, None
        else:
            ok, image = self._capture.read()
            if not ok or image is None:
                if not self.live:
                    if self._ended_early():
                        self.truncated = True
                        log.warning("%s: decoding stopped at frame %d of %d (truncated or corrupt "
                                    "file)", self.label, self._read, self.total_frames)
                    return None
                image = self._reconnect()
        read_at = time.perf_counter()
        index = self._read
        self._read += 1
        if self.live:
            timestamp = time.monotonic() - self._start
        else:
            timestamp = index / self.fps
        return Frame(index, timestamp, image, read_at)

    def _ended_early(self) -> bool:
        """Whether a file stopped decoding before its header's last frame.

        The frames are counted from the stream's own start, and also from the
        container's zero (see :meth:`_stream_start`): a header whose frame count is
        derived from the container's duration includes the time before the stream
        starts, one that counts the frames (MP4, AVI) does not. Only a file short
        of both is cut.
        """
        if not self.total_frames or (self.end_index is not None
                                     and self._read >= self.end_index):
            return False
        return self._read + self._start_frames < self.total_frames - 1

    def _reconnect(self) -> np.ndarray:
        """Reopen a live source after a failed read; the first frame it gives."""
        delay = self.reconnect_delay
        for attempt in range(1, self.reconnect_attempts + 1):
            log.warning("%s: no frame; reconnecting (attempt %d of %d)", self.label, attempt,
                        self.reconnect_attempts)
            self._capture.release()
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            try:
                self._open(first=False)
            except VideoError:
                continue
            ok, image = self._capture.read()
            if ok and image is not None:
                self.reconnects += 1
                return image
        raise VideoError(f"{self.label} disconnected and could not be reopened after "
                         f"{self.reconnect_attempts} attempts")

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_times(begin: float, duration: float | None) -> None:
    """begin (>= 0) and duration (> 0, or None), finite numbers of seconds, or VideoError.

    NaN passes every comparison and infinity cannot become a frame index:
    both are refused here, before they reach a seek.
    """
    if not math.isfinite(begin) or begin < 0:
        raise VideoError(f"begin must be a finite number of seconds >= 0, got {begin}")
    if duration is not None and (not math.isfinite(duration) or duration <= 0):
        raise VideoError(f"duration must be a finite number of seconds > 0, got {duration}")


def check_writable(path: str | os.PathLike, what: str = "output") -> Path:
    """The path, after checking that the file can be created there (one-line VideoError if not).

    An existing file is left as it is; a file created by the check is removed.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise VideoError(f"{what} {path} is a directory")
    if not parent.is_dir():
        raise VideoError(f"cannot write {what} {path}: the folder {parent} does not exist")
    existed = path.exists()
    try:
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise VideoError(f"cannot write {what} {path}: {exc.strerror or exc}") from None
    if not existed:
        path.unlink(missing_ok=True)
    return path


class VideoWriter:
    """An annotated video file, opened with the first codec that works for its container.

    A frame the encoder or the disk refuses raises VideoError at once; :meth:`close`
    then checks that the finished file opens and decodes, since a full disk can
    leave an MP4 without the index it is written last (``finalised`` and
    ``failure`` say what became of it).
    """

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int]):
        self.path = check_writable(path, "output video")
        suffix = self.path.suffix.lower()
        if suffix not in CODECS:
            raise VideoError(f"output video {self.path}: unsupported extension {suffix or '(none)'}"
                             f"; use one of {', '.join(CODECS)}")
        width, height = size
        if width <= 0 or height <= 0:
            raise VideoError(f"output video {self.path}: bad frame size {width}x{height}")
        self.size = (int(width), int(height))
        self.fps = float(fps)
        self.frames = 0
        self.codec = None
        #: whether close() found the file whole (it opens and its first frame decodes)
        self.finalised = False
        #: why a frame could not be written or the file could not be finalised, or None
        self.failure: str | None = None
        self._writer = None
        for codec in CODECS[suffix]:
            writer = cv2.VideoWriter(str(self.path), cv2.CAP_FFMPEG,
                                     cv2.VideoWriter_fourcc(*codec), self.fps, self.size)
            if writer.isOpened():
                self._writer, self.codec = writer, codec
                break
            writer.release()
            log.info("codec %s did not open for %s; trying the next one", codec, self.path)
        if self._writer is None:
            raise VideoError(f"cannot write output video {self.path}: none of the codecs "
                             f"{', '.join(CODECS[suffix])} could be opened")
        log.debug("writing %s with codec %s at %.3f fps", self.path, self.codec, self.fps)

    def write(self, image: np.ndarray) -> None:
        if self._writer is None:
            raise VideoError(f"output video {self.path} is closed")
        if image.shape[1::-1] != self.size:
            image = cv2.resize(image, self.size)
        # OpenCV 4.x returns None whatever happens; 5.x says False when FFmpeg failed.
        if self._writer.write(image) is False:
            self.failure = _write_failure(self.path)
            raise VideoError(f"cannot write output video {self.path} after {self.frames} "
                             f"frames: {self.failure}")
        self.frames += 1

    def close(self) -> None:
        """Finalise the file so that it plays (safe to call twice); VideoError when the
        finished file does not open and decode."""
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        if self.frames == 0 and self.failure is None:
            return              # nothing was written: there is nothing to play
        if _plays(self.path):
            self.finalised = True
            return
        self.failure = self.failure or _write_failure(self.path)
        raise VideoError(f"output video {self.path} could not be finalised ({self.failure})")


def _plays(path: Path) -> bool:
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        return capture.isOpened() and capture.read()[0]
    finally:
        capture.release()


def _write_failure(path: Path) -> str:
    """Why writing ``path`` failed, as far as can be told: OpenCV gives no errno."""
    try:
        folder = os.statvfs(path.parent if str(path.parent) else ".")
    except (OSError, AttributeError):   # AttributeError: no statvfs (Windows)
        return "the encoder or the disk refused the data"
    # root may also fill the blocks reserved for it
    free = folder.f_bfree if getattr(os, "geteuid", lambda: -1)() == 0 else folder.f_bavail
    if free * folder.f_frsize < (1 << 20):
        return "no space left on device"
    return "the encoder or the disk refused the data"
