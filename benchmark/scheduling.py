"""Detection every k frames (re-finding in between) against detection on every frame.

    python benchmark/scheduling.py [--every 2 3 4 6] [--video PATH ...] [--json-out F]

For each clip (default: ../shared/data/mobileface/friends1.mp4 and
face_recognition/short_hamilton_clip.mp4), the video pipeline runs once with
the detector on every frame (``detect_every=1``, the reference) and once per k
of ``--every``, with every stage and recognition against the shared photos of
the people in the clips. Per run:

* detector frames: the share of frames the detector ran on (the schedule's
  every k-th frame, cuts, and the frames re-finding asked for);
* recall: the reference's faces that the run also has in that frame (box IoU
  >= 0.5, one-to-one); precision: the run's faces the reference has;
* extra faces far from any face: rows of the run with no reference face of
  IoU >= 0.3 within 3 frames (made-up faces, as opposed to faces the detector
  missed for a frame that re-finding kept);
* detect + 68 points, ms per frame: the two steps the schedule trades;
* names: the people named on the clip's tracks, which must not change.

Prints a table, then one JSON line with a list ``rows``.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from mobileface.cli.common import add_precision_option, emit_json as emit
from mobileface.detect.boxes import iou_matrix
from mobileface.eval.bench import DATA, demo_facebank, read_frames
from mobileface.pipeline import FacePipeline, PipelineConfig
from mobileface.track.assignment import linear_sum_assignment

DEFAULT_VIDEOS = [DATA / "mobileface" / "friends1.mp4",
                  DATA / "face_recognition" / "short_hamilton_clip.mp4"]
MATCH_IOU = 0.5
NEAR_IOU, NEAR_FRAMES = 0.3, 3

def run(frames: list[np.ndarray], fps: float, every: int, facebank: Path, det_size: int,
        precision: str) -> dict:
    """One pass of the pipeline: per frame the boxes found and how, the time spent."""
    pipeline = FacePipeline.from_config(PipelineConfig(det_size=det_size, threads=1,
                                                       detect_every=every, precision=precision))
    demo_facebank(facebank, pipeline)
    boxes, found_by, ms = [], [], 0.0
    for index, frame in enumerate(frames):
        result = pipeline.process(frame, index, index / fps)
        boxes.append(result.detected.boxes.copy())
        found_by.append(result.faces.found_by)
        ms += 1000 * sum(result.timings.get(k, 0.0) for k in ("detect", "landmarks"))
    names = sorted({s.identity for s in pipeline.finish() if s.identity and
                    s.identity != "Unknown"})
    return {"boxes": boxes, "found_by": found_by, "ms": ms / max(len(frames), 1), "names": names}

def compare(reference: list[np.ndarray], test: list[np.ndarray]) -> dict:
    matched = total = found = far = 0
    for index, (ref, got) in enumerate(zip(reference, test)):
        total += len(ref)
        found += len(got)
        if len(ref) and len(got):
            iou = iou_matrix(ref, got)
            rows, cols = linear_sum_assignment(-iou)
            matched += int((iou[rows, cols] >= MATCH_IOU).sum())
        for box in got:
            near = [b for b in reference[max(0, index - NEAR_FRAMES):index + NEAR_FRAMES + 1]
                    if len(b)]
            if not any(iou_matrix(box[None], b).max() >= NEAR_IOU for b in near):
                far += 1
    return {"recall": matched / max(total, 1), "precision": matched / max(found, 1),
            "reference_faces": total, "far_faces": far}

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", nargs="+", default=[str(v) for v in DEFAULT_VIDEOS])
    parser.add_argument("--every", nargs="+", type=int, default=[2, 3, 4, 6],
                        help="values of detect_every to compare with 1 (default: 2 3 4 6)")
    parser.add_argument("--det-size", type=int, default=480)
    add_precision_option(parser, "fp32")
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args(argv)
    if any(k < 1 for k in args.every):
        raise SystemExit("benchmark: --every values must be >= 1")
    rows = []
    with tempfile.TemporaryDirectory(prefix="mobileface-sched-") as tmp:
        for number, name in enumerate(args.video):
            video = Path(name)
            if not video.is_file():
                raise SystemExit(f"benchmark: no video at {video}")
            frames, fps = read_frames(video)
            runs = {k: run(frames, fps, k, Path(tmp) / f"bank{number}-{k}", args.det_size,
                           args.precision)
                    for k in [1, *[k for k in args.every if k != 1]]}
            reference = runs[1]
            for every, result in runs.items():
                row = {"video": video.name, "frames": len(frames), "detect_every": every,
                       "detector_share": result["found_by"].count("detector") / len(frames),
                       **compare(reference["boxes"], result["boxes"]),
                       "detect_landmarks_ms": result["ms"], "names": result["names"],
                       "names_as_every_frame": result["names"] == reference["names"]}
                rows.append(row)
    print(f"cpu cores: {os.cpu_count()}; precision {args.precision}; reference: the detector "
          "on every frame")
    print(f"{'video':<26} {'k':>2} {'detector':>9} {'recall':>7} {'precision':>9} {'far':>4} "
          f"{'det+68 ms':>9}  names")
    for r in rows:
        print(f"{r['video']:<26} {r['detect_every']:>2} {r['detector_share']:9.0%} "
              f"{r['recall']:7.3f} {r['precision']:9.3f} {r['far_faces']:>4} "
              f"{r['detect_landmarks_ms']:9.1f}  {', '.join(r['names']) or '-'}"
              f"{'' if r['names_as_every_frame'] else '  (differs)'}")
    emit({"benchmark": "scheduling", "cpu_count": os.cpu_count(), "precision": args.precision,
          "rows": [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}
                   for r in rows]}, args.json_out)
    return 0

if __name__ == "__main__":
    sys.exit(main())
