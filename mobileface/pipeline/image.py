"""FaceAnalyzer: IMAGE mode. The detector, then every per-face stage, batched per image."""
from __future__ import annotations

import importlib
import logging
from typing import Iterable, Sequence

import numpy as np

from mobileface.detect import create_detector
from mobileface.enhance.lowlight import Enhancement, LowLightEnhancer
from mobileface.io.image import to_bgr8
from mobileface.models.runtime import RuntimeConfig
from mobileface.stages.base import Stage, order_stages, run_stages
from mobileface.types import Faces

log = logging.getLogger(__name__)

#: the stages by name: the module and class that make each ("embed": the default embedder)
CATALOG = {
    "landmarks": ("mobileface.stages.landmarks.dlib68", "Landmarks68"),
    "pose": ("mobileface.stages.pose.solvepnp", "HeadPose"),
    "attributes": ("mobileface.stages.attributes", "Attributes"),
    "quality": ("mobileface.stages.quality", "Quality"),
    "embed": ("mobileface.stages.embed.dlib_resnet", "DlibEmbedder"),
}
#: every stage name
STAGES = tuple(CATALOG)


def stage_class(name: str) -> type[Stage]:
    if name not in CATALOG:
        raise ValueError(f"unknown stage {name!r}; choose from: {', '.join(STAGES)}")
    module, cls = CATALOG[name]
    return getattr(importlib.import_module(module), cls)


def resolve_stages(names: Iterable[str]) -> list[str]:
    """The requested stages plus the stages that provide what they require, in running
    order (from each stage's ``requires`` and ``provides``)."""
    wanted = {name: stage_class(name) for name in names}
    while True:
        provided = {c for cls in wanted.values() for c in cls.provides}
        needed = {c for cls in wanted.values() for c in cls.requires} - provided
        extra = {n: stage_class(n) for n in STAGES if n not in wanted and
                 needed & set(stage_class(n).provides)}
        if not extra:
            break
        wanted.update(extra)
    by_class = {cls: name for name, cls in wanted.items()}
    catalog_order = sorted(wanted.values(), key=lambda cls: STAGES.index(by_class[cls]))
    return [by_class[cls] for cls in order_stages(catalog_order)]


def build_stage(name: str, runtime: RuntimeConfig, embedder=None) -> Stage:
    """The stage ``name`` (``embedder``: what :func:`create_embedder` takes, for "embed")."""
    if name == "embed":
        from mobileface.stages.embed import create_embedder
        return create_embedder(embedder, runtime)
    cls = stage_class(name)
    return cls(runtime) if name == "attributes" else cls()


def detector_from(name: str, det_size: int, det_threshold: float | None,
                  runtime: RuntimeConfig):
    """A detector by name with the analyzer options (det_size is RetinaFace's input size)."""
    options: dict = {"runtime": runtime}
    if det_threshold is not None:
        options["score_threshold"] = det_threshold
    if name == "retinaface":
        options["input_size"] = det_size
    return create_detector(name, **options)


class FaceAnalyzer:
    """Detect faces, then fill every column of :class:`Faces` for all of them.

    >>> analyzer = FaceAnalyzer()                       # RetinaFace, CPU
    >>> faces = analyzer.analyze(cv2.imread("group.jpg"))
    >>> faces.boxes, faces.pose, faces.age, faces.embedding

    detector: "retinaface" (default), "mtcnn", or any object with ``detect(image) -> Faces``.
    det_size: RetinaFace input size (longer image side, pixels).
    det_threshold: minimum detection score.
    providers: onnxruntime providers in order of preference ("cpu", "cuda", ...).
    threads: onnxruntime intra-op threads (0 = onnxruntime's default).
    stages: which per-face stages to run, by name (their prerequisites are added)
        or as Stage objects.
    embedder: the embedding model (see :func:`mobileface.stages.embed.create_embedder`;
        None is dlib's ResNet).
    enhance: low-light enhancement before detection: "off" (default), "auto" (an
        image that is dark, see :mod:`mobileface.enhance.lowlight`) or "on"; or a
        :class:`~mobileface.enhance.LowLightEnhancer`. The detector and every stage
        then see the enhanced image; ``faces.enhancement`` says what was done.
    precision: "auto" (default: int8 for each model whose accuracy gate passed, on a CPU
        with VNNI or AMX, else fp32), "fp32" or "int8" (a model without a passed int8
        gate is a ModelError naming the command that makes it); see
        :mod:`mobileface.models.precision`. ``chosen_precision`` says what each got.
    """

    def __init__(self, detector="retinaface", det_size: int = 640,
                 det_threshold: float | None = None, providers: Sequence[str] = ("cpu",),
                 threads: int = 0, stages: Iterable[str | Stage] = STAGES, embedder=None,
                 enhance: str | LowLightEnhancer = "off", precision: str = "auto"):
        # IMAGE mode: each image is decided alone (no hysteresis between unrelated images)
        self.enhancer = enhance if isinstance(enhance, LowLightEnhancer) else \
            LowLightEnhancer(enhance, hysteresis=False)
        self.runtime = RuntimeConfig(providers=tuple(providers), intra_op_threads=threads,
                                     precision=precision)
        self.detector = detector_from(detector, det_size, det_threshold, self.runtime) \
            if isinstance(detector, str) else detector
        stages = list(stages)
        names = [s for s in stages if isinstance(s, str)]
        built = [build_stage(name, self.runtime, embedder) for name in resolve_stages(names)] \
            if names else []
        self.stages = order_stages(built + [s for s in stages if not isinstance(s, str)])
        log.info("detector %s; stages %s; onnxruntime running on %s",
                 getattr(self.detector, "name", type(self.detector).__name__),
                 ", ".join(s.name for s in self.stages), ", ".join(self.active_providers))
        #: seconds spent in each step during the last analyze() call
        self.last_timings: dict[str, float] = {}

    @property
    def chosen_precision(self) -> dict[str, str]:
        """Model group (detect, attributes, embed) -> the precision it runs at."""
        return dict(self.runtime.chosen)

    @property
    def active_providers(self) -> list[str]:
        """The onnxruntime providers this analyzer's models really run on."""
        return sorted(set(self.runtime.active.values()))

    def enhance(self, image: np.ndarray) -> Enhancement:
        """The low-light step of this analyzer on a BGR image: ``.image`` is what the detector
        and the stages are to see (the image itself when nothing was applied)."""
        return self.enhancer(to_bgr8(image))

    def analyze(self, image: np.ndarray, frame_index: int = -1,
                timestamp: float | None = None) -> Faces:
        """Every column for every face of a BGR image (grey, BGRA, 16-bit are converted)."""
        import time

        start = time.perf_counter()
        enhancement = self.enhance(image)
        image = enhancement.image
        mark = time.perf_counter()
        faces = self.detector.detect(image)
        if enhancement.mode != "off":
            faces.timings["enhance"] = mark - start
        faces.timings["detect"] = time.perf_counter() - mark
        faces.frame_index, faces.timestamp = frame_index, timestamp
        faces.enhancement = enhancement
        run_stages(self.stages, image, faces)
        self.last_timings = faces.timings
        return faces
