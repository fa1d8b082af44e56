"""What the benchmark scripts and tools/time_models.py share: the test photo, a
video read whole or played in a loop, the floor (decoding and encoding alone), a
facebank to recognise against.

A library module (not a sibling ``common.py`` beside the scripts) so that each
script runs as ``python benchmark/x.py`` from anywhere with nothing but the
installed package; the test data is found by :func:`mobileface.cli.common.shared_dir`.
"""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mobileface.cli.common import shared_data

log = logging.getLogger(__name__)

#: ../shared/data (or $MOBILEFACE_SHARED/data): the benchmarks' default photo and videos
DATA = shared_data()
DEFAULT_IMAGE = DATA / "face_recognition" / "obama.jpg"
#: who the video benchmarks enrol: recognition runs against a real facebank
ENROL = {"Barack Obama": "face_recognition/obama.jpg",
         "Lin-Manuel Miranda": "face_recognition/lin-manuel-miranda.png"}


def read_frames(path: Path) -> tuple[list[np.ndarray], float]:
    """Every frame of the video at ``path`` (BGR) and its frame rate (30 when it says none)."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames, fps


def write_looped(video: Path, frames: int, out: Path, fps: float | None = None) -> Path:
    """``video`` played again and again until ``frames`` frames, as one MPEG-4 file ``out``
    (at ``fps``, default the video's own); DataError when the video has no frame."""
    import cv2

    from mobileface.errors import DataError

    clip, rate = read_frames(video)
    if not clip:
        raise DataError(f"{video}: no frames")
    height, width = clip[0].shape[:2]
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps or rate,
                             (width, height))
    for i in range(frames):
        writer.write(clip[i % len(clip)])
    writer.release()
    return out


@dataclass
class FloorRun:
    """The floor: OpenCV decoding a video and encoding every frame, nothing else."""

    fps: float
    frames: int
    #: CPU time of the process (all threads) per frame, ms
    cpu_ms: float


def floor_run(video: Path, out: Path, loops: int = 1) -> FloorRun:
    """The floor over ``video`` played ``loops`` times into one MPEG-4 file ``out``."""
    import cv2

    capture = cv2.VideoCapture(str(video))
    fps = capture.get(cv2.CAP_PROP_FPS)
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    capture.release()
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    frames, start, cpu = 0, time.perf_counter(), time.process_time()
    for _ in range(loops):
        capture = cv2.VideoCapture(str(video))
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            writer.write(frame)
            frames += 1
        capture.release()
    writer.release()
    return FloorRun(frames / (time.perf_counter() - start), frames,
                    1000 * (time.process_time() - cpu) / max(frames, 1))


def load_image(path: str | None) -> tuple[np.ndarray, str]:
    """The photo at ``path`` (ImageError if unreadable), else the shared obama.jpg, else
    scikit-image's astronaut: a real face wherever the benchmark runs. Returns the BGR
    image and where it came from."""
    from mobileface.io.image import read_image

    if path or DEFAULT_IMAGE.is_file():
        path = path or str(DEFAULT_IMAGE)
        return read_image(path), path
    from skimage import data

    log.warning("%s is absent (set MOBILEFACE_SHARED to the shared folder): timing on "
                "scikit-image's astronaut", DEFAULT_IMAGE)
    return np.ascontiguousarray(data.astronaut()[:, :, ::-1]), "skimage astronaut"


def demo_facebank(folder: Path, pipeline, people: dict | None = None):
    """A facebank in ``folder`` of ``people`` (name -> a photo, or a list of photos, relative
    to DATA; default: ENROL), imported with the pipeline's own models and set on the
    pipeline (the photos that are absent are left out)."""
    from mobileface.identity.enrol import FaceEnroller
    from mobileface.identity.facebank import Facebank

    for name, photos in (ENROL if people is None else people).items():
        for relative in [photos] if isinstance(photos, str) else photos:
            if (DATA / relative).is_file():
                (folder / name).mkdir(parents=True, exist_ok=True)
                shutil.copy(DATA / relative, folder / name)
    bank = Facebank(folder, outlier_threshold=pipeline.threshold)
    enrol = FaceEnroller(pipeline.analyzer)
    bank.import_folder(enrol.embedding_and_quality, enrol.model_id)
    pipeline.set_facebank(bank)
    return bank


class LoopedSource:
    """A video file played again and again until ``frames`` frames (frame numbers and times
    go on), so that a short clip measures a long run."""

    live = False
    reconnects = 0
    truncated = False

    def __init__(self, path: Path, frames: int):
        from mobileface.io.video import VideoSource

        self._open = lambda: VideoSource(path)
        self.path, self.frames = path, frames
        self._source = self._open()
        self.label, self.fps = self._source.label, self._source.fps
        self.width, self.height = self._source.width, self._source.height
        self.expected_frames = frames
        self._offset = 0
        self._read = 0

    def read(self):
        if self._read >= self.frames:
            return None
        frame = self._source.read()
        if frame is None:
            self._offset = self._read
            self._source.close()
            self._source = self._open()
            frame = self._source.read()
        frame.index = self._offset + frame.index
        frame.timestamp = frame.index / self.fps
        self._read += 1
        return frame

    def close(self) -> None:
        self._source.close()
