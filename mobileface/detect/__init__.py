"""Face detectors behind one interface, chosen by name."""
from __future__ import annotations

from mobileface.detect.base import Detector

DETECTORS = ("retinaface", "mtcnn")


def create_detector(name: str = "retinaface", **options) -> Detector:
    """A detector by name: "retinaface" (default) or "mtcnn".

    Options are passed to the detector's constructor (runtime, score_threshold,
    and input_size for RetinaFace or min_face_size for MTCNN).
    """
    if name == "retinaface":
        from mobileface.detect.retinaface import RetinaFaceDetector
        return RetinaFaceDetector(**options)
    if name == "mtcnn":
        from mobileface.detect.mtcnn import MTCNNDetector
        return MTCNNDetector(**options)
    raise ValueError(f"unknown detector {name!r}; choose one of: {', '.join(DETECTORS)}")


__all__ = ["DETECTORS", "Detector", "create_detector"]
