"""Vectorised box helpers shared by the detectors."""
from __future__ import annotations

import numpy as np


def iou_matrix(a: np.ndarray, b: np.ndarray, mode: str = "union") -> np.ndarray:
    """Overlap of every box in ``a`` (N,4 xyxy) with every box in ``b`` (M,4) -> (N, M).

    mode "union": intersection over union (IoU); "min": intersection over the
    smaller box's area (MTCNN's last NMS, which removes a box inside another).
    """
    a = np.asarray(a, np.float32).reshape(-1, 4)
    b = np.asarray(b, np.float32).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    if mode == "min":
        denominator = np.minimum(area_a[:, None], area_b[None, :])
    elif mode == "union":
        denominator = area_a[:, None] + area_b[None, :] - inter
    else:
        raise ValueError(f"mode must be 'union' or 'min', got {mode!r}")
    return inter / np.maximum(denominator, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, max_boxes: int = 1000,
        mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best score first.

    One IoU matrix over the (at most ``max_boxes``) highest-scoring candidates,
    then a single pass that suppresses every box overlapping a kept one
    (overlap as in :func:`iou_matrix` with ``mode``).
    """
    order = np.argsort(-np.asarray(scores), kind="stable")[:max_boxes]
    if len(order) == 0:
        return order
    overlaps = iou_matrix(boxes[order], boxes[order], mode) > threshold
    keep = np.ones(len(order), bool)
    for i in range(len(order)):
        if keep[i]:
            keep[i + 1:] &= ~overlaps[i, i + 1:]
    return order[keep]


def clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
    return boxes
