"""FaceAnalyzer: the detector followed by every per-face stage, batched per frame."""
from __future__ import annotations

import logging
import time
from typing import Iterable, Sequence

import numpy as np

from mobileface.detect import create_detector
from mobileface.io.image import to_bgr8
from mobileface.models.runtime import ACTIVE_PROVIDERS, RuntimeConfig
from mobileface.stages.base import Stage
from mobileface.types import Faces

log = logging.getLogger(__name__)

#: every stage, in the order they run; each needs the columns of the ones before it
STAGES = ("landmarks", "pose", "attributes", "quality", "embed")
_NEEDS = {"pose": ("landmarks",), "attributes": ("landmarks",), "embed": ("landmarks",),
          "quality": ("landmarks", "pose"), "landmarks": ()}


def resolve_stages(names: Iterable[str]) -> list[str]:
    """The requested stages plus what they need, in running order."""
    wanted = set()
    for name in names:
        if name not in _NEEDS:
            raise ValueError(f"unknown stage {name!r}; choose from: {', '.join(STAGES)}")
        wanted.add(name)
        wanted.update(_NEEDS[name])
        for dep in _NEEDS[name]:
            wanted.update(_NEEDS[dep])
    return [s for s in STAGES if s in wanted]


def build_stage(name: str, runtime: RuntimeConfig, embedder=None) -> Stage:
    if name == "landmarks":
        from mobileface.stages.landmarks.dlib68 import Landmarks68
        return Landmarks68()
    if name == "pose":
        from mobileface.stages.pose.solvepnp import HeadPose
        return HeadPose()
    if name == "attributes":
        from mobileface.stages.attributes import Attributes
        return Attributes(runtime)
    if name == "quality":
        from mobileface.stages.quality import Quality
        return Quality()
    if name == "embed":
        from mobileface.stages.embed.dlib_resnet import create_embedder
        return create_embedder(embedder, runtime)
    raise ValueError(f"unknown stage {name!r}")


class FaceAnalyzer:
    """Detect faces, then fill every column of :class:`Faces` for all of them.

    >>> analyzer = FaceAnalyzer()                       # RetinaFace, CPU
    >>> faces = analyzer.analyze(cv2.imread("group.jpg"))
    >>> faces.boxes, faces.pose, faces.age, faces.embedding

    detector: "retinaface" (default) or "mtcnn".
    det_size: RetinaFace input size (longer image side, pixels).
    det_threshold: minimum detection score.
    providers: onnxruntime providers in order of preference ("cpu", "cuda", ...).
    threads: onnxruntime intra-op threads (0 = onnxruntime's default).
    stages: which per-face stages to run (their prerequisites are added).
    embedder: the embedding model (see :func:`mobileface.stages.embed.dlib_resnet.create_embedder`;
        None is dlib's ResNet).
    """

    def __init__(self, detector: str = "retinaface", det_size: int = 640,
                 det_threshold: float | None = None, providers: Sequence[str] = ("cpu",),
                 threads: int = 0, stages: Iterable[str] = STAGES, embedder=None):
        self.runtime = RuntimeConfig(providers=tuple(providers), intra_op_threads=threads)
        options: dict = {"runtime": self.runtime}
        if det_threshold is not None:
            options["score_threshold"] = det_threshold
        if detector == "retinaface":
            options["input_size"] = det_size
        self.detector = create_detector(detector, **options)
        self.stages = [build_stage(name, self.runtime, embedder) for name in resolve_stages(stages)]
        active = sorted(set(ACTIVE_PROVIDERS.values()))
        log.info("detector %s; stages %s; onnxruntime running on %s", detector,
                 ", ".join(s.name for s in self.stages), ", ".join(active))
        #: seconds spent in each step during the last analyze() call
        self.last_timings: dict[str, float] = {}

    def analyze(self, image: np.ndarray, frame_index: int = -1,
                timestamp: float | None = None) -> Faces:
        """Every column for every face of a BGR image (grey, BGRA, 16-bit are converted)."""
        image = to_bgr8(image)
        start = time.perf_counter()
        faces = self.detector.detect(image)
        faces.frame_index, faces.timestamp = frame_index, timestamp
        timings = {"detect": time.perf_counter() - start}
        for stage in self.stages:
            start = time.perf_counter()
            stage(image, faces)
            timings[stage.name] = time.perf_counter() - start
        self.last_timings = timings
        return faces
