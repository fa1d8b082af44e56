"""Replays recorded detections of two shared clips through a tracker (tests/data/clip_faces.npz).

The recording (RetinaFace at 480 on every frame of friends1.mp4 and short_hamilton_clip.mp4,
with the frames where SceneCutDetector saw a cut) is made by tests/data/record_clip_faces.py.
Each clip is played twice as one stream, with a cut where the recording saw one and between the
two plays; every 7th frame loses its last detection (so that tracks coast on predictions), and
each newly confirmed track gets an appearance (one of four unit vectors, so that lost tracks are
re-identified now and then).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mobileface.types import Faces

DATA = Path(__file__).resolve().parent / "data" / "clip_faces.npz"
CLIPS = ("friends1", "hamilton")


def load() -> dict[str, np.ndarray]:
    with np.load(DATA) as data:
        return {k: data[k] for k in data.files}


def frames(data: dict, clip: str):
    """(boxes, scores, cut) per frame of ``clip``, played twice."""
    counts = data[f"{clip}_counts"]
    starts = np.concatenate([[0], np.cumsum(counts)])
    for play in range(2):
        for i, n in enumerate(counts):
            rows = slice(starts[i], starts[i] + n)
            cut = bool(data[f"{clip}_cuts"][i]) or (play == 1 and i == 0)
            yield data[f"{clip}_boxes"][rows], data[f"{clip}_scores"][rows], cut


def replay(tracker, data: dict, clip: str, fps: float = 25.0) -> dict[str, np.ndarray]:
    """Every output row (frame, track_id, predicted, box), the finished ids per frame and the
    flushed ones."""
    out = {"frame": [], "track_id": [], "predicted": [], "boxes": [], "finished": [],
           "finished_frame": []}
    given = set()
    for index, (boxes, scores, cut) in enumerate(frames(data, clip)):
        if index % 7 == 3 and len(boxes):
            boxes, scores = boxes[:-1], scores[:-1]
        if cut:
            tracker.cut()
        tracks = tracker.update(Faces(boxes, scores), timestamp=index / fps)
        out["frame"].append(np.full(len(tracks), index))
        out["track_id"].append(tracks.track_id)
        out["predicted"].append(tracks.predicted)
        out["boxes"].append(tracks.boxes)
        out["finished"].extend(tracker.finished)
        out["finished_frame"].extend([index] * len(tracker.finished))
        for tid in tracks.track_id[tracks.track_id > 0].tolist():
            if tid not in given:
                given.add(tid)
                tracker.set_appearance(tid, np.eye(4)[len(given) % 4])
    result = {k: np.concatenate(v) if k in ("frame", "track_id", "predicted", "boxes")
              else np.array(v, np.int64) for k, v in out.items()}
    result["flushed"] = np.array(tracker.flush(), np.int64)
    return result
