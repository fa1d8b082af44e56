"""Helpers shared by the benchmark scripts: timing and the default test photo."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python benchmark/x.py` from anywhere
    sys.path.insert(0, str(ROOT))

from mobileface.cli.tools import emit_json as emit  # noqa: E402,F401  (the closing JSON line)
from mobileface.cli.tools import median_ms  # noqa: E402,F401  (the scripts' timing helper)
from mobileface.io.video import VideoSource  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
DEFAULT_IMAGE = DATA / "face_recognition" / "obama.jpg"


def load_image(path: str | None) -> tuple[np.ndarray, str]:
    """The photo at ``path``, else ../shared's obama.jpg, else scikit-image's astronaut."""
    import cv2

    if path or DEFAULT_IMAGE.is_file():
        path = path or str(DEFAULT_IMAGE)
        image = cv2.imread(path)
        if image is None:
            raise SystemExit(f"benchmark: cannot read {path}")
        return image, path
    from skimage import data
    return np.ascontiguousarray(data.astronaut()[:, :, ::-1]), "skimage astronaut"


#: who the video benchmarks enrol: recognition runs against a real facebank
ENROL = {"Barack Obama": "face_recognition/obama.jpg",
         "Lin-Manuel Miranda": "face_recognition/lin-manuel-miranda.png"}


def demo_facebank(folder: Path, pipeline):
    """A facebank of the ENROL photos in ``folder``, imported with the pipeline's own models,
    and set on the pipeline."""
    from mobileface.identity.enrol import FaceEnroller
    from mobileface.identity.facebank import Facebank

    for name, relative in ENROL.items():
        if (DATA / relative).is_file():
            (folder / name).mkdir(parents=True, exist_ok=True)
            shutil.copy(DATA / relative, folder / name)
    bank = Facebank(folder, outlier_threshold=pipeline.threshold)
    enrol = FaceEnroller(pipeline.analyzer)
    bank.import_folder(enrol.embedding_and_quality, enrol.model_id)
    pipeline.set_facebank(bank)
    return bank


class LoopedSource:
    """A video file played again and again until ``frames`` frames (frame numbers and times go on)."""

    live = False
    reconnects = 0
    truncated = False

    def __init__(self, path: Path, frames: int):
        self.path, self.frames = path, frames
        self._source = VideoSource(path)
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
            self._source = VideoSource(self.path)
            frame = self._source.read()
        frame.index = self._offset + frame.index
        frame.timestamp = frame.index / self.fps
        self._read += 1
        return frame

    def close(self) -> None:
        self._source.close()
