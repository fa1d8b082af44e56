"""End-to-end video speed: our pipeline against the floor and face_recognition, in one run.

    python benchmark/video.py [--video PATH] [--json-out video.json]

On ../shared/data/mobileface/friends1.mp4 (720p) by default. Three figures,
measured in the same process. The 141-frame clip is short, so each run plays it
``--loops`` times as one stream (the loops meet at a scene cut, as the clip's
own cuts do), and the floor and ours alternate ``--repeat`` times; the medians
are reported:

* floor: OpenCV decoding the file and re-encoding every frame, nothing else;
* ours: apps/infer_on_video.py's defaults with every stage on (detect, track,
  68 points, pose, quality every frame; alignment, age/gender and embeddings
  per track; recognition against a facebank of two people; boxes, labels,
  68 points and pose axes drawn; the annotated video and the events written),
  through the same reader/inference/writer threads as the app;
* face_recognition: that package's per-frame pipeline (face_locations then
  face_encodings on every frame), when it is installed. It needs no compiler:
  ``pip install --no-deps face_recognition==1.3.0`` (dlib-bin provides dlib).

Model loading is not timed. Also reported: the CPU time (all threads) per
frame of the floor and of ours, which a busy host disturbs less than fps.
Prints a table, then one JSON line (also written to --json-out).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2

from mobileface.cli.common import emit_json as emit
from mobileface.eval.bench import DATA, LoopedSource, demo_facebank, floor_run
from mobileface.outputs.annotators import Overlay, OverlayOptions
from mobileface.pipeline import FacePipeline, PipelineConfig
from mobileface.outputs.sinks import EventsSink, VideoFileSink
from mobileface.pipeline.runner import VideoRunner

DEFAULT_VIDEO = DATA / "mobileface" / "friends1.mp4"
APP_DET_SIZE = 480  # apps/infer_on_video.py's default


def ours_fps(video: Path, workdir: Path, pipeline: FacePipeline, frames: int) -> dict:
    """One run of the app's work over the video played until ``frames`` frames (models loaded)."""
    pipeline.reset()
    source = LoopedSource(video, frames)
    overlay = Overlay(OverlayOptions(show_scores=True, landmarks=True, pose_axes=True))
    sinks = [VideoFileSink(workdir / "ours.mp4", source.fps, (source.width, source.height),
                           overlay),
             EventsSink(workdir / "events.jsonl")]
    totals: dict[str, float] = {}
    per_track = [0]

    def on_result(frame, result):
        for key, seconds in result.timings.items():
            totals[key] = totals.get(key, 0.0) + seconds
        per_track[0] += result.recognised

    cpu = time.process_time()
    stats = VideoRunner(source, pipeline, sinks, on_result=on_result).run()
    cpu_ms = 1000 * (time.process_time() - cpu) / max(stats.frames, 1)
    if stats.error:
        raise SystemExit(f"benchmark: the run failed: {stats.error}")
    return {"fps": stats.fps, "cpu_ms_per_frame": round(cpu_ms, 2), "frames": stats.frames,
            "tracks": stats.tracks,
            "per_track_runs": per_track[0],
            "stage_ms": {k: round(1000 * v / max(stats.frames, 1), 2) for k, v in totals.items()}}


def face_recognition_fps(video: Path, limit: int) -> dict | None:
    if limit <= 0:
        return None
    try:
        import face_recognition
    except ImportError:
        return None
    capture = cv2.VideoCapture(str(video))
    frames, faces = 0, 0
    start = time.perf_counter()
    while frames < limit:
        ok, frame = capture.read()
        if not ok:
            break
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        locations = face_recognition.face_locations(rgb)
        faces += len(face_recognition.face_encodings(rgb, locations))
        frames += 1
    capture.release()
    seconds = time.perf_counter() - start
    return {"fps": frames / seconds, "frames": frames, "faces": faces}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default=str(DEFAULT_VIDEO))
    parser.add_argument("--det-size", type=int, default=APP_DET_SIZE,
                        help=f"RetinaFace input size (default: the app's, {APP_DET_SIZE})")
    parser.add_argument("--threads", type=int, default=1,
                        help="onnxruntime intra-op threads per model (default: the app's, 1)")
    parser.add_argument("--loops", type=int, default=4,
                        help="each run plays the clip this many times as one stream, so that "
                             "starting the threads does not count (default: 4)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of the floor and of ours, alternated; the medians are "
                             "reported (default: %(default)s)")
    parser.add_argument("--facebank", default=None, metavar="DIR",
                        help="recognise against this facebank (default: one enrolled from the "
                             "shared photos of the people in the default clip)")
    parser.add_argument("--fr-frames", type=int, default=60,
                        help="frames face_recognition is timed on (it is slow; default 60; "
                             "0 skips it)")
    parser.add_argument("--precision", choices=("auto", "fp32", "int8"), default="auto",
                        help="model precision, as the app's --precision (default: auto)")
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args(argv)
    video = Path(args.video)
    if not video.is_file():
        raise SystemExit(f"benchmark: no video at {video}")

    with tempfile.TemporaryDirectory(prefix="mobileface-bench-") as tmp:
        workdir = Path(tmp)
        pipeline = FacePipeline.from_config(PipelineConfig(det_size=args.det_size, threads=args.threads,
                                                           precision=args.precision))
        if args.facebank:
            from mobileface.identity.store import open_facebank

            bank = open_facebank(args.facebank, outlier_threshold=pipeline.threshold)
            pipeline.set_facebank(bank)
        else:
            bank = demo_facebank(workdir / "facebank", pipeline)
        if not bank.names():
            print("benchmark: the facebank is empty: recognition runs, but nobody can be named "
                  "(give --facebank, or set MOBILEFACE_SHARED for the demo one)", file=sys.stderr)
        floors, floor_cpu_ms, runs = [], [], []
        for _ in range(args.repeat):  # alternated, so that both see the same machine
            floor = floor_run(video, workdir / "floor.mp4", args.loops)
            frames = floor.frames
            floors.append(floor.fps)
            floor_cpu_ms.append(floor.cpu_ms)
            runs.append(ours_fps(video, workdir, pipeline, frames))
        theirs = face_recognition_fps(video, args.fr_frames)
    floor = statistics.median(floors)
    ours = sorted(runs, key=lambda r: r["fps"])[len(runs) // 2]   # the median run
    ours["people_enrolled"] = len(bank.names())
    ours["fps_runs"] = [round(r["fps"], 2) for r in runs]

    capture = cv2.VideoCapture(str(video))
    size = f"{int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))}x{int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))}"
    capture.release()
    print(f"video: {video.name} {size}, played {args.loops} times: {frames} frames a run; "
          f"cpu cores: {os.cpu_count()}; precision {args.precision}: "
          + ", ".join(f"{k} {v}" for k, v in sorted(pipeline.runtime.chosen.items())))
    print(f"{'pipeline':<58} {'fps':>7}")
    print(f"{'floor: OpenCV decode + encode only':<58} {floor:7.1f}  "
          f"(median of {' '.join(f'{f:.0f}' for f in floors)})")
    print(f"{'ours: every stage, tracking, recognition, overlays, output':<58} {ours['fps']:7.1f}  "
          f"(median of {' '.join(f'{f:.0f}' for f in ours['fps_runs'])})")
    if theirs is None:
        print(f"{'face_recognition per frame':<58} {'n/a':>7}  (not installed, or skipped)")
    else:
        print(f"{'face_recognition: locations + encodings every frame':<58} {theirs['fps']:7.1f}"
              f"  ({theirs['frames']} frames)")
    print(f"ours / floor = {ours['fps'] / floor:.2f}; " +
          (f"ours / face_recognition = {ours['fps'] / theirs['fps']:.1f}x; " if theirs else "") +
          f"{ours['tracks']} tracks, {ours['per_track_runs']} per-track runs in {ours['frames']} "
          f"frames")
    floor_cpu = statistics.median(floor_cpu_ms)
    ours_cpu = statistics.median(r["cpu_ms_per_frame"] for r in runs)
    print(f"CPU time per frame, all threads: floor {floor_cpu:.1f} ms, ours {ours_cpu:.1f} ms "
          f"(less sensitive to a busy host than fps)")
    print("inference ms/frame: " + ", ".join(f"{k} {v}" for k, v in ours["stage_ms"].items()))
    result = {"benchmark": "video", "video": video.name, "size": size, "frames": frames,
              "cpu_count": os.cpu_count(), "det_size": args.det_size,
              "precision": args.precision, "chosen": dict(pipeline.runtime.chosen),
              "loops": args.loops, "repeat": args.repeat, "floor_fps_runs": [round(f, 2) for f in floors],
              "floor_fps": round(floor, 2), "ours_fps": round(ours["fps"], 2),
              "face_recognition_fps": round(theirs["fps"], 2) if theirs else None,
              "floor_cpu_ms_per_frame": round(floor_cpu, 2), "ours_cpu_ms_per_frame": ours_cpu,
              "ours": ours, "face_recognition": theirs}
    emit(result, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
