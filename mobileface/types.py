"""The per-frame result: one record of parallel arrays, one row per face.

Columns a stage has not computed are ``None``. Boxes and points are in pixel
coordinates of the analysed (BGR) frame.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

# Columns holding one row per face, in the order they appear in JSON output.
ROW_COLUMNS = (
    "boxes", "scores", "kps5", "landmarks68", "pose", "age", "gender",
    "quality", "embedding", "track_id", "identity", "similarity",
)


@dataclass
class Faces:
    """All faces of one frame.

    boxes:       (N, 4) float32, pixel x1, y1, x2, y2.
    scores:      (N,) float32 detector confidence.
    kps5:        (N, 5, 2) float32: right eye, left eye, nose, right and left
                 mouth corner, as seen in the image (the subject's right eye is
                 on the image's left).
    landmarks68: (N, 68, 2) float32, iBUG 300-W point order.
    pose:        (N, 3) float32 yaw, pitch, roll in degrees (see pose.py for
                 the sign convention).
    age:         (N,) float32 years (expected value over 81 classes).
    gender:      (N,) float32 probability that the face is male.
    quality:     (N,) float32 in [0, 1] (see quality.py).
    embedding:   (N, D) float32.
    track_id:    (N,) int64, -1 for none.
    identity:    (N,) object (str names), similarity: (N,) float32.
    extra:       further per-face columns, name -> array with N rows.
    """

    boxes: np.ndarray
    scores: np.ndarray
    kps5: np.ndarray | None = None
    landmarks68: np.ndarray | None = None
    pose: np.ndarray | None = None
    age: np.ndarray | None = None
    gender: np.ndarray | None = None
    quality: np.ndarray | None = None
    embedding: np.ndarray | None = None
    track_id: np.ndarray | None = None
    identity: np.ndarray | None = None
    similarity: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    frame_index: int = -1
    timestamp: float | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        n = len(self.boxes)
        for name, column in self._row_items():
            if column is not None and len(column) != n:
                raise ValueError(f"column {name!r} has {len(column)} rows, expected {n}")

    def _row_items(self):
        for name in ROW_COLUMNS:
            yield name, getattr(self, name)
        yield from self.extra.items()

    @classmethod
    def empty(cls, frame_index: int = -1, timestamp: float | None = None) -> "Faces":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                   frame_index=frame_index, timestamp=timestamp)

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index: Any) -> "Faces":
        """Rows selected by a boolean mask, an index array or a slice."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        kwargs = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ROW_COLUMNS:
                kwargs[f.name] = None if value is None else value[index]
        extra = {k: v[index] for k, v in self.extra.items()}
        return Faces(**kwargs, extra=extra, frame_index=self.frame_index,
                     timestamp=self.timestamp)

    def set_column(self, name: str, values: np.ndarray) -> None:
        """Set a row column (or an extra column) after checking its length."""
        if len(values) != len(self):
            raise ValueError(f"column {name!r} has {len(values)} rows, expected {len(self)}")
        if name in ROW_COLUMNS:
            setattr(self, name, values)
        else:
            self.extra[name] = values

    def to_records(self, include_embedding: bool = True) -> list[dict]:
        """One plain-Python dict per face, ready for ``json.dumps``."""
        out = []
        for i in range(len(self)):
            rec: dict[str, Any] = {
                "box": [round(float(v), 2) for v in self.boxes[i]],
                "score": round(float(self.scores[i]), 4),
            }
            if self.kps5 is not None:
                rec["kps5"] = np.round(self.kps5[i], 2).tolist()
            if self.landmarks68 is not None:
                rec["landmarks"] = np.round(self.landmarks68[i], 2).tolist()
            if self.pose is not None:
                yaw, pitch, roll = (round(float(v), 2) for v in self.pose[i])
                rec["pose"] = {"yaw": yaw, "pitch": pitch, "roll": roll}
            if self.age is not None:
                rec["age"] = round(float(self.age[i]), 1)
            if self.gender is not None:
                p_male = float(self.gender[i])
                rec["gender"] = "male" if p_male >= 0.5 else "female"
                rec["gender_confidence"] = round(max(p_male, 1.0 - p_male), 4)
            if self.quality is not None:
                rec["quality"] = round(float(self.quality[i]), 4)
            if self.extra:
                rec["quality_parts"] = {k: round(float(v[i]), 4) for k, v in self.extra.items()
                                        if np.ndim(v) == 1}
            if self.track_id is not None:
                rec["track_id"] = int(self.track_id[i])
            if self.identity is not None:
                rec["identity"] = str(self.identity[i])
            if self.similarity is not None:
                rec["similarity"] = round(float(self.similarity[i]), 4)
            if include_embedding and self.embedding is not None:
                rec["embedding"] = [round(float(v), 6) for v in self.embedding[i]]
            out.append(rec)
        return out
