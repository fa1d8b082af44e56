"""Per-stage latency of the face pipeline: median ms over many runs, batch 1 and batch 8.

    python benchmark/stages.py [--runs 200] [--image PATH] [--json-out results.json]
                               [--embedder SPEC.json ...] [--embedders-only]

Detection is timed per 640x360 frame (the first frame of ../shared's
short_hamilton_clip.mp4 when present, else the photo resized): RetinaFace at
input size 640, 480 and 320, and MTCNN. The low-light step is timed per 720p
frame (the first frame of friends1.mp4 when present, else the photo resized to
1280x720): auto on that frame as it is (it measures the frame and leaves it),
and each method applied to it darkened to 15 % of the light. Per-face stages are timed on one face and
on eight faces of the same frame (the detected face repeated), and reported per
face. Prints a table, then one JSON line (also written to --json-out).

Each --embedder SPEC (an embedder spec .json, e.g. a converted MobileFace model;
repeatable) is timed the same way beside the default dlib embedder. For
MobileFace's models the table also shows MXNet 1.9.1's own batch-1 CPU time on
this project's 2-core machine, from ../shared/models/README.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys

import cv2
import numpy as np

from mobileface.cli.common import emit_json, median_ms
from mobileface.errors import ImageError
from mobileface.eval.bench import DATA, load_image
from mobileface.pipeline.image import STAGES, FaceAnalyzer
from mobileface.detect import create_detector
from mobileface.stages.embed import create_embedder

DEFAULT_CLIP = DATA / "face_recognition" / "short_hamilton_clip.mp4"
ENHANCE_CLIP = DATA / "mobileface" / "friends1.mp4"
#: MXNet 1.9.1, batch 1, CPU, ms per face on the 2-core machine (../shared/models/README.md)
MXNET_MS_PER_FACE = {"mobileface_v1": 3.1, "mobileface_v2": 4.0, "mobileface_v3": 0.85}


def video_frame(image: np.ndarray, clip, size: tuple[int, int]) -> tuple[np.ndarray, str]:
    """The first frame of ``clip`` when it has ``size`` (width, height), else the photo
    resized to it."""
    capture = cv2.VideoCapture(str(clip))
    ok, frame = capture.read()
    capture.release()
    if ok and frame.shape[:2] == size[::-1]:
        return frame, f"{clip.name} frame 0"
    return cv2.resize(image, size), f"photo resized to {size[0]}x{size[1]}"


def enhancement_rows(image: np.ndarray, runs: int) -> tuple[list[dict], str]:
    """ms per 720p frame of the low-light step: auto on a normal frame, and each method."""
    from mobileface.enhance.lowlight import LowLightEnhancer
    from mobileface.enhance.methods import METHODS
    from mobileface.eval.lowlight import darken

    frame, source = video_frame(image, ENHANCE_CLIP, (1280, 720))
    dark = darken(frame, 0.15, np.random.default_rng(0))
    auto = LowLightEnhancer("auto")
    rows = [{"stage": "enhance auto, normal 720p frame (left as it is)", "batch": 1,
             "ms_per_call": median_ms(lambda: auto(frame), runs), "ms_per_face": None}]
    for method in METHODS:
        enhancer = LowLightEnhancer("on", method)
        rows.append({"stage": f"enhance {method}, dark 720p frame", "batch": 1,
                     "ms_per_call": median_ms(lambda: enhancer(dark), runs),
                     "ms_per_face": None})
    return rows, source


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--image", default=None, help="a photo with one clear face")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads")
    parser.add_argument("--json-out", default=None)
    parser.add_argument("--embedder", action="append", default=[], metavar="SPEC",
                        help="also time this embedder (a spec .json); repeatable")
    parser.add_argument("--embedders-only", action="store_true",
                        help="time only the embedders (the default one and --embedder ones)")
    args = parser.parse_args(argv)

    try:
        image, source = load_image(args.image)
    except ImageError as exc:
        raise SystemExit(f"benchmark: {exc}") from None
    stages = ("embed",) if args.embedders_only else STAGES
    analyzer = FaceAnalyzer(threads=args.threads, stages=stages)
    faces = analyzer.analyze(image)
    if len(faces) == 0:
        raise SystemExit(f"benchmark: no face in {source}")
    one = faces[[0]]
    eight = faces[[0] * 8]

    rows, enhance_source = ([], None) if args.embedders_only else \
        enhancement_rows(image, args.runs)
    frame, frame_source = video_frame(image, DEFAULT_CLIP, (640, 360))
    detectors = [] if args.embedders_only else [(f"detect retinaface {size}",
                  create_detector("retinaface", input_size=size, runtime=analyzer.runtime),
                  args.runs) for size in (640, 480, 320)]
    if not args.embedders_only:
        detectors.append(("detect mtcnn (min face 20)",
                          create_detector("mtcnn", runtime=analyzer.runtime),
                          max(args.runs // 10, 5)))
    for label, det, runs in detectors:
        ms = median_ms(lambda: det.detect(frame), runs)
        rows.append({"stage": label, "batch": 1, "ms_per_call": ms, "ms_per_face": None})
    timed = [(s.name, s) for s in analyzer.stages
             if not (args.embedders_only and s.name == "landmarks")]
    for spec in args.embedder:
        embedder = create_embedder(spec, analyzer.runtime)
        timed.append((f"embed {embedder.spec.name}", embedder))
    for label, stage in timed:
        mxnet_ms = MXNET_MS_PER_FACE.get(label.removeprefix("embed "))
        for batch, sub in ((1, one), (8, eight)):
            ms = median_ms(lambda: stage(image, sub), args.runs)
            rows.append({"stage": label, "batch": batch, "ms_per_call": ms,
                         "ms_per_face": ms / batch, "mxnet_ms_per_face": None})
        if mxnet_ms is None:
            continue
        # The network alone on a prepared input, as MXNet's figure was taken.
        blob = stage.spec.blob(stage.chips(image, eight))
        for batch in (1, 8):
            ms = median_ms(lambda: stage._run(blob[:batch]), args.runs)
            rows.append({"stage": f"{label} (network only)", "batch": batch, "ms_per_call": ms,
                         "ms_per_face": ms / batch,
                         "mxnet_ms_per_face": mxnet_ms if batch == 1 else None})

    print(f"detection: {frame_source}; low-light step: {enhance_source}; per-face stages: {source} "
          f"{image.shape[1]}x{image.shape[0]}, runs: {args.runs}, "
          f"cpu cores: {os.cpu_count()}, {platform.processor() or platform.machine()}")
    print(f"{'stage':<42} {'batch':>5} {'ms/call':>9} {'ms/face':>9} {'MXNet ms/face':>14}")
    for r in rows:
        per_face = "" if r["ms_per_face"] is None else f"{r['ms_per_face']:9.2f}"
        mxnet_ms = "" if r.get("mxnet_ms_per_face") is None else f"{r['mxnet_ms_per_face']:14.2f}"
        print(f"{r['stage']:<42} {r['batch']:>5} {r['ms_per_call']:9.2f} {per_face:>9} "
              f"{mxnet_ms:>14}")
    result = {"benchmark": "stages", "image": source, "detection_frame": frame_source,
              "enhance_frame": enhance_source,
              "runs": args.runs,
              "cpu_count": os.cpu_count(), "rows": rows}
    emit_json(result, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
