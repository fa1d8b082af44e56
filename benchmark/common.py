"""Helpers shared by the benchmark scripts: timing and the default test photo."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python benchmark/x.py` from anywhere
    sys.path.insert(0, str(ROOT))

from mobileface.tooling import median_ms  # noqa: E402,F401  (the scripts' timing helper)

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
