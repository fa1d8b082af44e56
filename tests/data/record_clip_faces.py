"""Makes tests/data/clip_faces.npz: detections and pose points of two shared clips, and the
outputs of the reference implementations on them.

    PYTHONPATH=. python tests/data/record_clip_faces.py

It was run at commit 7af6a80, whose SortTracker (filterpy's KalmanFilter per track) and
per-face cv2.solvePnP (SQPnP, then Levenberg-Marquardt) are the references that the
vectorised ones are tested against (tests/test_track_recorded.py, tests/test_pose.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from track_replay import CLIPS, DATA, replay  # noqa: E402
from mobileface.cli.common import shared_dir  # noqa: E402

VIDEOS = {"friends1": "mobileface/friends1.mp4",
          "hamilton": "face_recognition/short_hamilton_clip.mp4"}


def record(clip: str, detector, landmarks) -> dict[str, np.ndarray]:
    from mobileface.stages.pose.solvepnp import POSE_INDICES
    from mobileface.track.scene_cut import SceneCutDetector

    capture = cv2.VideoCapture(str(shared_dir() / "data" / VIDEOS[clip]))
    cuts = SceneCutDetector()
    rows = {"boxes": [], "scores": [], "counts": [], "cuts": [], "pose_points": []}
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        faces = detector.detect(frame)
        rows["cuts"].append(cuts(frame))
        rows["counts"].append(len(faces))
        rows["boxes"].append(faces.boxes)
        rows["scores"].append(faces.scores)
        if len(faces):
            landmarks(frame, faces)
            rows["pose_points"].append(faces.landmarks68[:, POSE_INDICES])
        size = frame.shape[1], frame.shape[0]
    capture.release()
    out = {f"{clip}_{k}": (np.concatenate(v).astype(np.float32) if k in
                          ("boxes", "scores", "pose_points") else np.array(v))
           for k, v in rows.items()}
    out[f"{clip}_size"] = np.array(size)
    return out


def main() -> int:
    from mobileface.detect import create_detector
    from mobileface.stages.landmarks.dlib68 import Landmarks68
    from mobileface.stages.pose.solvepnp import POSE_INDICES, solve_pose
    from mobileface.track.sort import SortTracker

    detector, landmarks = create_detector("retinaface", input_size=480), Landmarks68()
    data = {}
    for clip in CLIPS:
        data.update(record(clip, detector, landmarks))
    for clip in CLIPS:
        for key, value in replay(SortTracker(), data, clip).items():
            data[f"{clip}_sort_{key}"] = value
        points = data[f"{clip}_pose_points"]
        full = np.zeros((len(points), 68, 2), np.float64)
        full[:, POSE_INDICES] = points
        data[f"{clip}_pose"] = solve_pose(full, *data[f"{clip}_size"])[0]
    np.savez_compressed(DATA, **data)
    print({k: v.shape for k, v in data.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
