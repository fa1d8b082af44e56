"""Video in and out: files, cameras and stream URLs; a writer that checks it really writes.

Every failure a user can cause (a missing, corrupt or empty file, a codec
OpenCV cannot decode, a camera that cannot be opened or disconnects, an output
that cannot be written) raises :class:`VideoError` with a one-line message.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mobileface.errors import MobileFaceError

log = logging.getLogger(__name__)

STREAM_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
#: frames per second assumed for a live source that does not say
DEFAULT_LIVE_FPS = 25.0
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
    read_at: float = 0.0  # time.perf_counter() when it was read (for latency)


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
        if begin < 0:
            raise VideoError(f"begin must be >= 0 seconds, got {begin}")
        if duration is not None and duration <= 0:
            raise VideoError(f"duration must be > 0 seconds, got {duration}")
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
        self._open(first=True)
        self.fps = self._capture.get(cv2.CAP_PROP_FPS) or 0.0
        if not np.isfinite(self.fps) or self.fps <= 0 or self.fps > 1000:
            self.fps = DEFAULT_LIVE_FPS if self.live else 25.0
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
        length = self.total_frames / self.fps if self.total_frames else None
        if begin:
            if length is not None and begin >= length:
                raise VideoError(f"{self.label}: begin {begin:g} s is past the end of the "
                                 f"video ({length:.2f} s)")
            self.first_index = int(round(begin * self.fps))
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, self.first_index)
        if duration is not None:
            self.end_index = self.first_index + max(1, int(round(duration * self.fps)))
        ok, image = self._capture.read()
        if not ok or image is None:
            if self.total_frames == 0:
                raise VideoError(f"{self.label}: the video has no frames")
            fourcc = int(self._capture.get(cv2.CAP_PROP_FOURCC))
            codec = "".join(chr((fourcc >> 8 * i) & 0xFF) for i in range(4)).strip("\x00 ")
            raise VideoError(f"{self.label}: no frame can be decoded "
                             f"(codec {codec or 'unknown'} unsupported, or the file is corrupt)")
        self._pending = image
        self._read = self.first_index

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
                    if self.total_frames and self._read < self.total_frames - 1 and \
                            (self.end_index is None or self._read < self.end_index):
                        self.truncated = True
                        log.warning("%s: decoding stopped at frame %d of %d (truncated or corrupt "
                                    "file)", self.label, self._read, self.total_frames)
                    return None
                image = self._reconnect()
        index = self._read
        self._read += 1
        if self.live:
            timestamp = time.monotonic() - self._start
        else:
            timestamp = index / self.fps
        return Frame(index, timestamp, image, time.perf_counter())

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
    """An annotated video file, opened with the first codec that works for its container."""

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
        if image.shape[1::-1] != self.size:
            image = cv2.resize(image, self.size)
        self._writer.write(image)
        self.frames += 1

    def close(self) -> None:
        """Finalise the file so that it plays (safe to call twice)."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
