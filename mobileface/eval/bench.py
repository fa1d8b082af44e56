"""What the benchmark scripts and tools/time_models.py share: the test photo, a
video played in a loop, a facebank to recognise against.

A library module (not a sibling ``common.py`` beside the scripts) so that each
script runs as ``python benchmark/x.py`` from anywhere with nothing but the
installed package; the test data is found by :func:`mobileface.cli.common.shared_dir`.
"""
from __future__ import annotations

import logging
import shutil
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
