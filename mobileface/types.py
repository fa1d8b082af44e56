"""The per-frame result: one record of parallel arrays, one row per face.

Columns a stage has not computed are ``None``. Boxes and points are in pixel
coordinates of the analysed (BGR) frame.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mobileface.enhance import Enhancement

# Columns holding one row per face, in the order they appear in JSON output.
ROW_COLUMNS = (
    "boxes", "scores", "kps5", "landmarks68", "pose", "age", "gender",
    "quality", "embedding", "track_id", "predicted", "identity", "similarity",
    "track_age", "track_gender",
)


@dataclass(eq=False)
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
    track_id:    (N,) int64, -1 for none (the tracker fills it).
    predicted:   (N,) bool: a track the detector missed in this frame, whose
                 box is the tracker's prediction (its other per-frame columns
                 are NaN); None before tracking.
    identity:    (N,) object (str names), similarity: (N,) float32.
    extra:       further per-face columns, name -> array with N rows.

    track_age:   (N,) float32, the track's median age so far (video only).
    track_gender: (N,) float32, the track's confidence-weighted vote for male.

    ``age`` and ``gender`` are always this face's in this frame (NaN on video
    frames where the attributes did not run); ``identity`` and ``similarity``
    are the decision for the face: from the one image
    (:class:`~mobileface.pipeline.image.FaceAnalyzer`), or the track's vote on
    video.

    frame_index, timestamp: the frame's; timings: seconds spent on this frame
    by each step (the detector, the tracker and each stage add their own), one
    dict shared by every subset of the rows; enhancement: what the low-light
    step did to the frame (:class:`mobileface.enhance.Enhancement`: applied or
    not, the frame's brightness), None where no such step ran.
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
    predicted: np.ndarray | None = None
    identity: np.ndarray | None = None
    similarity: np.ndarray | None = None
    track_age: np.ndarray | None = None
    track_gender: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    frame_index: int = -1
    timestamp: float | None = None
    timings: dict[str, float] = field(default_factory=dict, repr=False)
    enhancement: Enhancement | None = field(default=None, repr=False)
    #: how this frame's rows were found: "detector", or "tracks" (re-found from the last
    #: frame's tracks on a frame the detector skipped, see mobileface.track.refind), or
    #: "pending" (the detector skipped the frame and the re-finding has not run yet)
    found_by: str = "detector"
    #: the frame follows a scene cut (see mobileface.track.scene_cut)
    scene_cut: bool = False

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
        """Rows selected by a boolean mask, an index array or a slice (timings are shared)."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        columns = {name: None if value is None else value[index]
                   for name, value in ((n, getattr(self, n)) for n in ROW_COLUMNS)}
        columns.pop("boxes"), columns.pop("scores")
        return Faces(self.boxes[index], self.scores[index], **columns,
                     extra={k: v[index] for k, v in self.extra.items()},
                     frame_index=self.frame_index, timestamp=self.timestamp, timings=self.timings,
                     enhancement=self.enhancement, found_by=self.found_by,
                     scene_cut=self.scene_cut)

    def __eq__(self, other: object) -> bool:
        """Same rows in every column (NaN equals NaN), same frame; timings are not compared."""
        if not isinstance(other, Faces):
            return NotImplemented
        if (self.frame_index, self.timestamp) != (other.frame_index, other.timestamp) or \
                len(self) != len(other) or self.extra.keys() != other.extra.keys():
            return False
        pairs = [(getattr(self, n), getattr(other, n)) for n in ROW_COLUMNS]
        pairs += [(v, other.extra[k]) for k, v in self.extra.items()]
        return all(_same_column(a, b) for a, b in pairs)

    @classmethod
    def concat(cls, parts: "list[Faces]") -> "Faces":
        """The rows of ``parts`` one after the other; a column some parts lack is padded
        (NaN for numbers, -1 for track ids, False for ``predicted``, "" for names).
        Frame index, timestamp, timings, enhancement, found_by and scene_cut are the
        first part's."""
        if not parts:
            return cls.empty()
        first = parts[0]
        columns = {}
        for name in ROW_COLUMNS:
            values = [getattr(p, name) for p in parts]
            columns[name] = _join(values, [len(p) for p in parts], name)
        names = {k for p in parts for k in p.extra}
        extra = {k: _join([p.extra.get(k) for p in parts], [len(p) for p in parts], k)
                 for k in sorted(names)}
        return cls(**columns, extra=extra, frame_index=first.frame_index,
                   timestamp=first.timestamp, timings=first.timings,
                   enhancement=first.enhancement, found_by=first.found_by,
                   scene_cut=first.scene_cut)

    @property
    def areas(self) -> np.ndarray:
        """(N,) box areas in pixels."""
        return (self.boxes[:, 2] - self.boxes[:, 0]) * (self.boxes[:, 3] - self.boxes[:, 1])

    def largest(self) -> "Faces":
        """The one row with the largest box (no row when there is no face)."""
        return self[[int(np.argmax(self.areas))]] if len(self) else self[[]]

    def age_and_gender(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """What to show as each face's age and gender: the track's where tracked, else this
        frame's."""
        if self.track_age is not None:
            return self.track_age, self.track_gender
        return self.age, self.gender

    def column(self, name: str) -> np.ndarray | None:
        """A row column or an extra column by name (None when not filled)."""
        return getattr(self, name) if name in ROW_COLUMNS else self.extra.get(name)

    def set_column(self, name: str, values: np.ndarray) -> None:
        """Set a row column (or an extra column) after checking its length."""
        if len(values) != len(self):
            raise ValueError(f"column {name!r} has {len(values)} rows, expected {len(self)}")
        if name in ROW_COLUMNS:
            setattr(self, name, values)
        else:
            self.extra[name] = values

    def to_records(self, include_embedding: bool = True) -> list[dict]:
        """One plain-Python dict per face, ready for ``json.dumps`` (unknown values are None,
        never NaN, which is not JSON). ``enhanced``: whether the face was found and analysed
        in the low-light enhanced frame (where a low-light step ran, not off)."""
        out = []
        for i in range(len(self)):
            rec: dict[str, Any] = {"box": _rounded(self.boxes[i], 2),
                                   "score": _rounded(self.scores[i], 4)}
            if self.kps5 is not None:
                rec["kps5"] = _rounded(self.kps5[i], 2)
            if self.landmarks68 is not None:
                rec["landmarks"] = _rounded(self.landmarks68[i], 2)
            if self.pose is not None:
                rec["pose"] = dict(zip(("yaw", "pitch", "roll"), _rounded(self.pose[i], 2)))
            if self.age is not None:
                rec["age"] = _rounded(self.age[i], 1)
            if self.gender is not None:
                rec["gender"], rec["gender_confidence"] = gender_label(self.gender[i])
            if self.quality is not None:
                rec["quality"] = _rounded(self.quality[i], 4)
            if self.extra:
                rec["quality_parts"] = {k: _rounded(v[i], 4) for k, v in self.extra.items()
                                        if np.ndim(v) == 1}
                rec.update({k: _rounded(v[i], 2) for k, v in self.extra.items() if np.ndim(v) > 1})
            if self.track_id is not None:
                rec["track_id"] = int(self.track_id[i])
            if self.predicted is not None:
                rec["predicted"] = bool(self.predicted[i])
            if self.identity is not None:
                rec["identity"] = str(self.identity[i])
            if self.similarity is not None:
                rec["similarity"] = _rounded(self.similarity[i], 4)
            if self.track_age is not None:
                rec["track_age"] = _rounded(self.track_age[i], 1)
                rec["track_gender"], rec["track_gender_confidence"] = \
                    gender_label(self.track_gender[i])
            if self.enhancement is not None and self.enhancement.mode != "off":
                rec["enhanced"] = self.enhancement.applied
            if include_embedding and self.embedding is not None:
                rec["embedding"] = _rounded(self.embedding[i], 6)
            out.append(rec)
        return out


def gender_label(p_male: float) -> tuple[str | None, float | None]:
    """("male" or "female", the confidence of that side) for a probability of male;
    (None, None) when it is unknown (NaN)."""
    p_male = float(p_male)
    if not math.isfinite(p_male):
        return None, None
    return ("male" if p_male >= 0.5 else "female"), round(max(p_male, 1.0 - p_male), 4)


def _rounded(value, digits: int):
    """A number or an array as plain Python, rounded; non-finite values become None."""
    if np.ndim(value) == 0:
        value = float(value)
        return round(value, digits) if math.isfinite(value) else None
    return [_rounded(v, digits) for v in value]


_FILL = {"track_id": -1, "predicted": False, "identity": ""}


def _join(values: list, counts: list[int], name: str) -> np.ndarray | None:
    """One column of Faces.concat: None when no part has it, else the parts padded."""
    known = [v for v in values if v is not None]
    if not known:
        return None
    like = known[0]
    fill = _FILL.get(name, np.nan)
    if like.dtype.kind in "iub" and name not in _FILL:
        fill = -1 if like.dtype.kind == "i" else 0
    pieces = [v if v is not None else np.full((n, *like.shape[1:]), fill, like.dtype)
              for v, n in zip(values, counts)]
    return np.concatenate(pieces) if len(pieces) > 1 else pieces[0]


def _same_column(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if a.shape != b.shape:
        return False
    if a.dtype.kind == "f" and b.dtype.kind == "f":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))
