"""68-point landmarks: dlib.shape_predictor vs our numpy ERT (mobileface.stages.landmarks.ert), median ms per face.

    python benchmark/landmarks_ert.py [--runs 200] [--image PATH] [--json-out results.json]

One face is found with RetinaFace and mapped to the predictor's box as
mobileface.stages.landmarks.dlib68 does; batch 8 is that face repeated eight times on the
same image (dlib: eight calls, ours: one batched call). Both predictors run in
this one process, interleaved per batch size, on the same image and boxes.
Also checks that both give the same points. Prints a table, then one JSON line
(also written to --json-out when given).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

from mobileface.cli.common import emit_json, median_ms
from mobileface.errors import ImageError
from mobileface.eval.bench import load_image
from mobileface.models import registry
from mobileface.detect import create_detector
from mobileface.stages.landmarks.ert import load_shape_predictor
from mobileface.stages.landmarks.dlib68 import predictor_boxes



def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--image", default=None, help="a photo with one clear face")
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args(argv)

    import dlib

    try:
        image, source = load_image(args.image)
    except ImageError as exc:
        raise SystemExit(f"benchmark: {exc}") from None
    faces = create_detector("retinaface").detect(image)
    if len(faces) == 0:
        raise SystemExit(f"benchmark: no face in {source}")
    box = np.round(predictor_boxes(faces.boxes[:1])).astype(int)
    path = registry.verified_path("dlib_shape_predictor_68")

    start = time.perf_counter()
    theirs = dlib.shape_predictor(str(path))
    load_dlib = time.perf_counter() - start
    start = time.perf_counter()
    ours = load_shape_predictor(path)
    load_ours = time.perf_counter() - start

    rect = dlib.rectangle(*map(int, box[0]))
    want = np.array([(p.x, p.y) for p in theirs(image, rect).parts()], np.float32)
    same = bool(np.array_equal(ours.predict(image, box)[0], want))

    rows = []
    for batch in (1, 8):
        boxes = np.repeat(box, batch, 0)
        ms_dlib = median_ms(lambda: [theirs(image, rect) for _ in range(batch)], args.runs)
        ms_ours = median_ms(lambda: ours.predict(image, boxes), args.runs)
        rows.append({"batch": batch, "dlib_ms_per_face": ms_dlib / batch,
                     "ours_ms_per_face": ms_ours / batch,
                     "speedup_vs_dlib": ms_dlib / ms_ours})

    print(f"image: {source} {image.shape[1]}x{image.shape[0]}, box {box[0].tolist()}, "
          f"runs: {args.runs}, cpu cores: {os.cpu_count()}, "
          f"{platform.processor() or platform.machine()}")
    print(f"model load: dlib {load_dlib:.2f} s, ours {load_ours:.2f} s; "
          f"same points as dlib: {same}")
    print(f"{'batch':>5} {'dlib ms/face':>13} {'ours ms/face':>13} {'dlib/ours':>10}")
    for r in rows:
        print(f"{r['batch']:>5} {r['dlib_ms_per_face']:13.3f} {r['ours_ms_per_face']:13.3f} "
              f"{r['speedup_vs_dlib']:10.2f}")
    result = {"benchmark": "landmarks_ert", "image": source, "runs": args.runs,
              "cpu_count": os.cpu_count(), "load_s": {"dlib": load_dlib, "ours": load_ours},
              "same_points_as_dlib": same, "rows": rows}
    emit_json(result, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
