"""Per-stage latency of the face pipeline: median ms over many runs, batch 1 and batch 8.

    python benchmark/stages.py [--runs 200] [--image PATH] [--json-out results.json]
                               [--embedder SPEC.json ...] [--embedders-only]
                               [--precision fp32,int8]

Detection is timed per 640x360 frame (the first frame of ../shared's
short_hamilton_clip.mp4 when present, else the photo resized): RetinaFace at
input size 640, 480 and 320, and MTCNN. The low-light step is timed per 720p
frame (the first frame of friends1.mp4 when present, else the photo resized to
1280x720): auto on that frame as it is (it measures the frame and leaves it),
and each method applied to it darkened to 15 % of the light. Per-face stages are timed on one face and
on eight faces of the same frame (the detected face repeated), and reported per
face. Prints a table, then one JSON line (also written to --json-out).

--precision fp32,int8 (the default) times the models that have int8 versions
(RetinaFace at 640 and 480, age + gender, dlib's embedder) at both precisions,
each int8 model right after its float one, and prints them side by side with
the speed-up; the int8 models are those ``python -m mobileface models quantize``
made and checked (a missing one is a one-line error, exit code 2; give
--precision fp32 to time the float models only).

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
from mobileface.errors import ImageError, ModelError
from mobileface.eval.bench import DATA, load_image
from mobileface.pipeline.image import STAGES, FaceAnalyzer
from mobileface.detect import create_detector
from mobileface.models.precision import int8_flags
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
    rows = [{"stage": "enhance auto, normal 720p frame (left as it is)", "precision": None,
             "batch": 1,
             "ms_per_call": median_ms(lambda: auto(frame), runs), "ms_per_face": None}]
    for method in METHODS:
        enhancer = LowLightEnhancer("on", method)
        rows.append({"stage": f"enhance {method}, dark 720p frame", "precision": None,
                     "batch": 1,
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
    parser.add_argument("--precision", default="fp32,int8", metavar="LIST",
                        help="fp32, int8 or fp32,int8 (default: both, side by side)")
    parser.add_argument("--profile", action="store_true",
                        help="also time each network alone on its prepared input (detector on "
                             "the 640x360 frame, the others on the face) and show where its "
                             "time goes, by operator type (onnxruntime's profiler)")
    args = parser.parse_args(argv)
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    if not precisions or set(precisions) - {"fp32", "int8"}:
        raise SystemExit(f"benchmark: --precision takes fp32, int8 or fp32,int8, "
                         f"got {args.precision!r}")
    try:
        return _run(args, precisions)
    except ModelError as exc:
        print(f"benchmark: {exc}", file=sys.stderr)
        return 2


def _int8_parts(analyzer, threads: int) -> dict:
    """The int8 versions of the detector (640, 480), attributes and the embedder."""
    from mobileface.models.runtime import RuntimeConfig
    from mobileface.stages.attributes import Attributes
    from mobileface.stages.embed.dlib_resnet import DlibEmbedder

    runtime = RuntimeConfig(intra_op_threads=threads, precision="int8")
    parts = {f"detect retinaface {size}": create_detector("retinaface", input_size=size,
                                                          runtime=runtime)
             for size in (640, 480)}
    names = {s.name for s in analyzer.stages}
    if "attributes" in names:
        parts["attributes"] = Attributes(runtime)
    if "embed" in names:
        parts["embed"] = DlibEmbedder(runtime)
    return parts


def _run(args, precisions: list[str]) -> int:

    try:
        image, source = load_image(args.image)
    except ImageError as exc:
        raise SystemExit(f"benchmark: {exc}") from None
    stages = ("embed",) if args.embedders_only else STAGES
    analyzer = FaceAnalyzer(threads=args.threads, stages=stages, precision="fp32")
    int8 = _int8_parts(analyzer, args.threads) if "int8" in precisions else {}
    base = "fp32" in precisions
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
        # each int8 model is timed right after its float one: the ratio of one minute
        for precision, model in (("fp32", det if base else None), ("int8", int8.get(label))):
            if model is None:
                continue
            ms = median_ms(lambda: model.detect(frame), runs)
            rows.append({"stage": label, "precision": precision, "batch": 1, "ms_per_call": ms,
                         "ms_per_face": None})
    timed = [(s.name, s) for s in analyzer.stages
             if not (args.embedders_only and s.name == "landmarks")]
    if base and any(s.name == "attributes" for s in analyzer.stages):
        # the nets as their package ships them, before mobileface.models.graph folds them
        from mobileface.models.registry import verified_path
        from mobileface.stages.attributes import Attributes

        shipped = Attributes(analyzer.runtime, model_paths={n: verified_path(n)
                                                            for n in ("age_v1", "gender_v1")})
        at = next(i for i, (name, _) in enumerate(timed) if name == "attributes")
        timed.insert(at + 1, ("attributes, nets not folded", shipped))
    for spec in args.embedder:
        embedder = create_embedder(spec, analyzer.runtime)
        timed.append((f"embed {embedder.spec.name}", embedder))
    for label, stage in timed:
        mxnet_ms = MXNET_MS_PER_FACE.get(label.removeprefix("embed "))
        for batch, sub in ((1, one), (8, eight)):
            for precision, model in (("fp32", stage if base or label not in int8 else None),
                                     ("int8", int8.get(label))):
                if model is None:
                    continue
                ms = median_ms(lambda: model(image, sub), args.runs)
                rows.append({"stage": label, "precision": precision, "batch": batch,
                             "ms_per_call": ms, "ms_per_face": ms / batch,
                             "mxnet_ms_per_face": None})
        if mxnet_ms is None:
            continue
        # The network alone on a prepared input, as MXNet's figure was taken.
        blob = stage.spec.blob(stage.chips(image, eight))
        for batch in (1, 8):
            ms = median_ms(lambda: stage._run(blob[:batch]), args.runs)
            rows.append({"stage": f"{label} (network only)", "precision": "fp32", "batch": batch,
                         "ms_per_call": ms,
                         "ms_per_face": ms / batch,
                         "mxnet_ms_per_face": mxnet_ms if batch == 1 else None})

    print(f"detection: {frame_source}; low-light step: {enhance_source}; per-face stages: {source} "
          f"{image.shape[1]}x{image.shape[0]}, runs: {args.runs}, "
          f"cpu cores: {os.cpu_count()}, {platform.processor() or platform.machine()}")
    print(f"{'stage':<42} {'prec':>5} {'batch':>5} {'ms/call':>9} {'ms/face':>9} "
          f"{'MXNet ms/face':>14}")
    for r in rows:
        per_face = "" if r["ms_per_face"] is None else f"{r['ms_per_face']:9.2f}"
        mxnet_ms = "" if r.get("mxnet_ms_per_face") is None else f"{r['mxnet_ms_per_face']:14.2f}"
        print(f"{r['stage']:<42} {r['precision'] or '':>5} {r['batch']:>5} "
              f"{r['ms_per_call']:9.2f} {per_face:>9} {mxnet_ms:>14}")
    profiles = network_profiles(analyzer, int8, image, one, frame, args) if args.profile else []
    side = side_by_side(rows)
    if side:
        print(f"\n{'fp32 and int8, ms per call (frame) or face':<42} {'batch':>5} {'fp32':>8} "
              f"{'int8':>8} {'speed-up':>9}")
        for r in side:
            print(f"{r['stage']:<42} {r['batch']:>5} {r['fp32_ms']:8.2f} {r['int8_ms']:8.2f} "
                  f"{r['speedup']:8.2f}x")
    result = {"benchmark": "stages", "image": source, "detection_frame": frame_source,
              "enhance_frame": enhance_source,
              "runs": args.runs,
              "cpu_count": os.cpu_count(), "precisions": precisions,
              "int8_flags": int8_flags(), "rows": rows, "side_by_side": side,
              "profiles": profiles}
    emit_json(result, args.json_out)
    return 0


def network_profiles(analyzer, int8: dict, image, one, frame, args) -> list[dict]:
    """Each network alone (batch 1): median ms and the share of its time per operator type,
    printed as a table."""
    from mobileface.stages.attributes import Attributes
    from mobileface.stages.embed.dlib_resnet import DlibEmbedder
    from mobileface.io.image import dlib_net_blob

    fp32 = {s.name: s for s in analyzer.stages}
    det32 = create_detector("retinaface", input_size=640, runtime=analyzer.runtime)
    blob = det32._prepare(frame)[0]
    age, gender = Attributes.blobs(image, one)
    chip = dlib_net_blob(DlibEmbedder.chips(image, one))
    nets = [("retinaface 640", "fp32", det32.session, det32.model_path, "input", blob)]
    if "detect retinaface 640" in int8:
        det8 = int8["detect retinaface 640"]
        nets.append(("retinaface 640", "int8", det8.session, det8.model_path, "input", blob))
    for precision, stages in (("fp32", fp32), ("int8", int8)):
        if "attributes" in stages:
            at = stages["attributes"]
            nets += [("age", precision, at.age_session, at.model_paths["age_v1"], "images", age),
                     ("gender", precision, at.gender_session, at.model_paths["gender_v1"],
                      "images", gender)]
        if "embed" in stages:
            em = stages["embed"]
            nets.append(("embed dlib", precision, em.session, str(em.model_path), "images", chip))
    out = []
    for label, precision, session, path, name, x in nets:
        ms = median_ms(lambda: session.run(None, {name: x}), args.runs)
        out.append({"network": label, "precision": precision, "ms": round(ms, 3),
                    "ops": op_shares(path, name, x, args.threads)})
    print(f"\n{'network alone, batch 1':<24} {'prec':>5} {'ms':>7}  share of time by operator")
    for r in out:
        ops = ", ".join(f"{op} {share:.0%}" for op, share in r["ops"][:4])
        print(f"{r['network']:<24} {r['precision']:>5} {r['ms']:7.2f}  {ops}")
    return out


def op_shares(path: str, name: str, x, threads: int, runs: int = 20) -> list:
    """[(operator type, share of the kernel time)] of ``runs`` runs, largest first."""
    import collections
    import json
    import tempfile

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = os.path.join(tmp, "profile")
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            session.run(None, {name: x})
        with open(session.end_profiling()) as fh:
            events = json.load(fh)
    by_op = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            by_op[e["args"]["op_name"]] += e["dur"]
    total = sum(by_op.values()) or 1
    return [(op, round(t / total, 3)) for op, t in by_op.most_common()]


def side_by_side(rows: list[dict]) -> list[dict]:
    """fp32 and int8 of each stage and batch measured at both (ms per face, or per frame)."""
    def ms(r):
        return r["ms_per_call"] if r["ms_per_face"] is None else r["ms_per_face"]

    by_key = {(r["stage"], r["batch"], r["precision"]): ms(r) for r in rows}
    out = []
    for (stage, batch, precision), fp32 in by_key.items():
        int8 = by_key.get((stage, batch, "int8"))
        if precision == "fp32" and int8 is not None:
            out.append({"stage": stage, "batch": batch, "fp32_ms": round(fp32, 3),
                        "int8_ms": round(int8, 3), "speedup": round(fp32 / int8, 3)})
    return out


if __name__ == "__main__":
    sys.exit(main())
