"""Command line: ``mobileface analyze|verify|models|facebank|gui|serve|status`` (or
``python -m mobileface``)."""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Sequence

from mobileface.cli.common import (add_enhance_option, add_logging_options, add_model_options,
                                   analyzer_options, configure_logging, run_main,
                                   share_logging_options)
from mobileface.cli import facebank as facebank_cli
from mobileface.cli import serve as serve_cli
from mobileface.errors import MobileFaceError

log = logging.getLogger("mobileface")

#: Euclidean distance between dlib ResNet embeddings below which two faces are
#: the same person (dlib's own threshold, 99.38% on LFW); kept in embed.py.
SAME_PERSON_DISTANCE = 0.6  # == embed.DISTANCE_THRESHOLD, without importing onnx at start-up


def default_prog() -> str:
    """How the user started us, for the usage line: the installed ``mobileface`` command,
    else ``python -m mobileface`` (argparse alone would say ``__main__.py``)."""
    return "mobileface" if Path(sys.argv[0]).name == "mobileface" else "python -m mobileface"


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog or default_prog(),
                                     description="Real-time face analytics: detection, landmarks, "
                                                 "pose, attributes and recognition on images "
                                                 "(analyze, verify), the facebank of enrolled "
                                                 "people, the models, and the desktop viewer "
                                                 "(gui). Video: apps/infer_on_video.py.")
    add_logging_options(parser)
    sub = parser.add_subparsers(dest="command", required=True)

    analyze = sub.add_parser("analyze", help="analyse the faces in images")
    analyze.add_argument("images", nargs="+", help="image files")
    analyze.add_argument("--json", action="store_true",
                         help="print one JSON object per image (JSON Lines) instead of a table")
    analyze.add_argument("--no-embedding", action="store_true",
                         help="leave the embedding out of the JSON")
    analyze.add_argument("--shape-predictor", metavar="DAT", action="append", default=[],
                         help="also run this dlib shape-predictor file (e.g. MobileFace's 3-point "
                              "mobileface_landmark_eme_v1.dat); its points go into a column named "
                              "after the file (landmarks_eme) or landmarks<N>; repeatable")
    analyze.add_argument("--mobileface-pose", metavar="DAT", default=None,
                         help="also run MobileFace's keypoint pose regressor "
                              "(mobileface_pose_emnme_v1.dat): column pose_mobileface")
    add_model_options(analyze)
    add_enhance_option(analyze, "off")

    verify = sub.add_parser("verify", help="are the largest faces of two images the same person?")
    verify.add_argument("image_a")
    verify.add_argument("image_b")
    verify.add_argument("--threshold", type=float, default=None,
                        help=f"dlib: same person below this euclidean distance (default: "
                             f"{SAME_PERSON_DISTANCE}); other embedders: same person at or above "
                             "this cosine similarity (default: the spec's cosine_threshold)")
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    add_model_options(verify)
    add_enhance_option(verify, "off")

    models = sub.add_parser("models", help="list the models, their sources, licences and status; "
                                           "models quantize: make and check their int8 versions")
    models.add_argument("--json", action="store_true", help="print JSON")
    models_sub = models.add_subparsers(dest="models_command")
    add_quantize_parser(models_sub)

    facebank_cli.add_parser(sub)
    serve_cli.add_parsers(sub)

    from mobileface import gui  # the options only: Qt is imported when the viewer starts
    viewer = sub.add_parser("gui", help="open the desktop viewer (live recognition, facebank, "
                                        "unknown faces)")
    gui.add_arguments(viewer)
    share_logging_options(parser)
    return parser


def _analyzer(args, stages=None):
    from mobileface.pipeline.image import STAGES, FaceAnalyzer

    return FaceAnalyzer(stages=list(stages or STAGES) + _model_file_stages(args),
                        **analyzer_options(args))


def _model_file_stages(args) -> list:
    """The extra stages of `analyze` that run model files a user brings."""
    stages = []
    for path in getattr(args, "shape_predictor", None) or []:
        from mobileface.stages.landmarks.shape_predictor import ShapePredictorLandmarks

        stages.append(ShapePredictorLandmarks(path, column=_shape_column(path)))
    if getattr(args, "mobileface_pose", None):
        from mobileface.stages.pose.mobileface import MobileFacePose

        stages.append(MobileFacePose(args.mobileface_pose))
    return stages


def _shape_column(path: str) -> str | None:
    """MobileFace's files name their points: mobileface_landmark_eme_v1.dat -> landmarks_eme."""
    parts = Path(path).stem.split("_")
    if len(parts) >= 3 and parts[:2] == ["mobileface", "landmark"]:
        return f"landmarks_{parts[2]}"
    return None


def cmd_analyze(args) -> int:
    from mobileface.io.image import read_image

    analyzer = _analyzer(args)
    failures = 0
    for path in args.images:
        try:
            faces = analyzer.analyze(read_image(path))
        except MobileFaceError as exc:
            failures += 1
            log.error("%s", exc)
            if args.json:
                print(json.dumps({"image": path, "error": str(exc), "faces": []},
                                 allow_nan=False), flush=True)
            continue
        if args.json:
            records = faces.to_records(include_embedding=not args.no_embedding)
            # to_records gives None for unknown values; allow_nan=False makes sure no NaN
            # (not JSON) is ever printed, should one slip past it
            result = {"image": path, "faces": records}
            if faces.enhancement is not None and faces.enhancement.mode != "off":
                result = {"image": path, "enhancement": faces.enhancement.to_record(),
                          "faces": records}
            print(json.dumps(result, allow_nan=False), flush=True)
        else:
            _print_table(path, faces)
    return 1 if failures else 0


def _print_table(path: str, faces) -> None:
    applied = faces.enhancement is not None and faces.enhancement.applied
    print(f"{path}: {len(faces)} face(s)" + (" (low-light enhanced)" if applied else ""))
    for i, rec in enumerate(faces.to_records(include_embedding=False)):
        x1, y1, x2, y2 = (round(v) for v in rec["box"])
        pose = rec["pose"]
        print(f"  #{i} box=({x1},{y1},{x2},{y2}) score={_shown(rec['score'], '.3f')} "
              f"yaw={_shown(pose['yaw'], '+.1f')} pitch={_shown(pose['pitch'], '+.1f')} "
              f"roll={_shown(pose['roll'], '+.1f')} age={_shown(rec['age'], '.0f')} "
              f"gender={rec['gender'] or '?'} quality={_shown(rec['quality'], '.2f')}")


def _shown(value, spec: str) -> str:
    """A number of the table, or "?" where it is unknown (a pose solvePnP could not find)."""
    return "?" if value is None else format(value, spec)


def _largest_face_embedding(analyzer, path):
    from mobileface.io.image import read_image

    faces = analyzer.analyze(read_image(path))
    if len(faces) == 0:
        raise MobileFaceError(f"{path}: no face found")
    return faces.largest().embedding[0]


def cmd_verify(args) -> int:
    import numpy as np

    from mobileface.vectors import normalise

    if args.threshold is not None and not math.isfinite(args.threshold):
        raise MobileFaceError("--threshold must be a finite number")
    analyzer = _analyzer(args, stages=("embed",))
    embedder = next(s for s in analyzer.stages if s.name == "embed")
    metric, threshold = _verify_threshold(embedder, args.threshold)
    a = _largest_face_embedding(analyzer, args.image_a)
    b = _largest_face_embedding(analyzer, args.image_b)
    distance = float(np.linalg.norm(a - b))
    similarity = float(normalise(a) @ normalise(b))
    same = distance < threshold if metric == "distance" else similarity >= threshold
    result = {"image_a": args.image_a, "image_b": args.image_b, "distance": round(distance, 4),
              "similarity": round(similarity, 4), "threshold": threshold, "metric": metric,
              "same_person": same, "model_id": embedder.model_id}
    if args.json:
        print(json.dumps(result, allow_nan=False))
    else:
        verdict = "same person" if same else "different people"
        print(f"distance={distance:.4f} similarity={similarity:.4f} "
              f"threshold({metric})={threshold} -> {verdict}")
    return 0


def _verify_threshold(embedder, given: float | None) -> tuple[str, float]:
    """("distance" or "similarity", the threshold) for ``embedder``.

    Asked of the embedder itself, not of the --embedder text: dlib's network
    (float or int8) has a euclidean ``distance_threshold``; the others have
    None there and compare by cosine, from their ``threshold`` (a spec's
    cosine_threshold). Every embedder has both attributes, none needs a spec.
    """
    distance = getattr(embedder, "distance_threshold", None)
    if distance is not None:
        if given is not None and given <= 0:
            raise MobileFaceError("--threshold must be positive (a euclidean distance)")
        return "distance", given if given is not None else distance
    if given is not None:
        if not -1 <= given <= 1:
            raise MobileFaceError("--threshold must be a cosine similarity in [-1, 1]")
        return "similarity", given
    if getattr(embedder, "threshold", None) is None:
        raise MobileFaceError(f"embedder {embedder.model_id!r} has no cosine_threshold in its "
                              "spec: give --threshold")
    return "similarity", embedder.threshold


def add_quantize_parser(sub) -> None:
    from mobileface.models.precision import GROUPS

    quantize = sub.add_parser(
        "quantize", help="make the int8 models, check them against the float ones on real "
                         "faces and keep those that pass in the model cache",
        description="Quantise the detector, the embedder and the age/gender nets to int8 "
                    "(static QDQ, per channel, calibrated on real faces), run each one's "
                    "accuracy gate and write the int8 files and a report per model into the "
                    "model cache. --precision auto uses an int8 model only once its gate "
                    "passed here. Exit code 0 when every gate passed, 1 when one failed.")
    quantize.add_argument("--data", default=None, metavar="DIR",
                          help="the test data, laid out as ../shared/data (default: "
                               "$MOBILEFACE_SHARED/data, else ../shared/data)")
    quantize.add_argument("--models", default=",".join(GROUPS), metavar="LIST",
                          help=f"comma-separated, from {', '.join(GROUPS)} (default: all)")
    quantize.add_argument("--ranges", choices=("minmax", "percentile", "entropy"),
                          default="percentile",
                          help="how activation ranges are set from the calibration faces "
                               "(default: percentile)")
    quantize.add_argument("--frame-step", type=int, default=10, metavar="N",
                          help="check the detector on every Nth frame of the clips "
                               "(default: 10)")
    quantize.add_argument("--threads", type=int, default=0,
                          help="onnxruntime threads per model (default: 0 = it decides)")
    from mobileface.models.precision import Bounds

    defaults = Bounds()
    for name, text in (("max_loss", "embed: the most 10-fold accuracy (a fraction) the int8 "
                                    "model may lose on LFW-Aligned-100Pair"),
                       ("min_cosine", "embed: least mean cosine of int8 to fp32 embeddings"),
                       ("min_detect_agreement", "detect: least share of images where both "
                                                "find the same faces"),
                       ("min_gender_agreement", "attributes: least share of faces with the "
                                                "same gender"),
                       ("max_age_diff", "attributes: largest median |age difference|, years")):
        quantize.add_argument(f"--{name.replace('_', '-')}", type=float,
                              default=getattr(defaults, name),
                              help=f"{text} (default: {getattr(defaults, name):g})")
    quantize.add_argument("--json", action="store_true", help="print the reports as JSON")


def cmd_quantize(args) -> int:
    from mobileface.cli.common import shared_data
    from mobileface.eval.quantize import quantize_groups
    from mobileface.models.precision import Bounds, check_groups, gate_summary, report_path

    groups = check_groups(g.strip() for g in args.models.split(",") if g.strip())
    bounds = Bounds(args.max_loss, args.min_cosine, args.min_detect_agreement,
                    args.min_gender_agreement, args.max_age_diff)
    reports = quantize_groups(Path(args.data) if args.data else shared_data(), groups, bounds,
                              args.ranges, args.frame_step, args.threads)
    if args.json:
        print(json.dumps(reports, indent=2, allow_nan=False))
    else:
        for group, report in reports.items():
            verdict = "passed: used by --precision auto/int8" if report["passed"] else \
                "FAILED: its int8 model is not used"
            print(f"{group:<11} {verdict}")
            for g in report["gates"]:
                detail = ", ".join(f"{k} {v}" for k, v in g.items() if k not in (
                    "name", "measured", "bound", "passed", "criterion", "data")
                    and not isinstance(v, (list, dict)))
                print(f"{'':<11} {g['name']}: {g['measured']:g} ({g['bound']}) "
                      f"{'ok' if g['passed'] else 'FAILED'}; {detail}")
            print(f"{'':<11} report {report_path(group)}")
        log.debug("%s", "; ".join(gate_summary(r) for r in reports.values()))
    return 0 if all(r["passed"] for r in reports.values()) else 1


def cmd_models(args) -> int:
    """Every model of the manifest with its source, licence and status; exit 1 unless all
    are "ok". A converted model whose cache is damaged or replaced shows "cache: <problem>,
    will be converted again" (the next use repairs it, but someone should know)."""
    from mobileface.models import registry

    if getattr(args, "models_command", None) == "quantize":
        return cmd_quantize(args)
    rows = []
    for name, spec in registry.load_manifest().items():
        try:
            path = str(registry.locate(spec))
        except MobileFaceError:
            path = ""
        cache, cache_ok = _cache_status(name)
        status = registry.status(name)
        if status == "ok" and not cache_ok:
            status = f"cache: {cache}"
        rows.append({"name": name, "task": spec.task, "package": f"{spec.package}=={spec.version}",
                     "file": spec.file, "path": path, "sha256": spec.sha256,
                     "licence": spec.licence, "status": status, "cache": cache})
    if args.json:
        print(json.dumps(rows, indent=2, allow_nan=False))
        return 0 if all(r["status"] == "ok" for r in rows) else 1
    for r in rows:
        print(f"{r['name']:<26} {r['task']:<11} {r['package']:<32} {r['status']}")
        print(f"{'':<26} file    {r['file']}")
        print(f"{'':<26} sha256  {r['sha256']}")
        if r["cache"] is not None:
            print(f"{'':<26} cache   {r['cache']}")
        print(f"{'':<26} licence {r['licence']}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def _cache_status(name: str) -> tuple[str | None, bool]:
    """The converted copy's state for a model used through a conversion (None for the
    others), and whether it is fine: verified, or not converted yet."""
    from mobileface.convert import dlib_resnet

    if name != dlib_resnet.MODEL_NAME:
        return None, True
    text = dlib_resnet.cache_status()
    return text, text in ("ok", dlib_resnet.NOT_CONVERTED)


def cmd_gui(args) -> int:
    from mobileface.gui.app import run

    return run(args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args)
    commands = {"analyze": cmd_analyze, "verify": cmd_verify, "models": cmd_models,
                "facebank": facebank_cli.run, "gui": cmd_gui, "serve": serve_cli.cmd_serve,
                "status": serve_cli.cmd_status}
    return run_main(commands[args.command], args)
