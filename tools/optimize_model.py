"""Optimise the embedder: onnxruntime graph optimisation and int8 quantisation, with a report of
the speed-up and the change in verification accuracy.

    python tools/optimize_model.py DATA [--pairs pairs.txt] [--calib DIR] [--method static]
                                   [--max-loss 0.005] [--out DIR]

Works on the default embedder (dlib's ResNet, converted to ONNX), with the same
quantiser and report as ``python -m mobileface models quantize --models embed``
(mobileface/eval/quantize.py), and adds the speed comparison. Writes into --out
the graph-optimised model (onnxruntime, level EXTENDED), the int8 model and
optimize.json; installs the int8 model into the model cache with its gate report,
where ``--precision int8|auto`` and ``--embedder dlib-int8`` find it. The int8
model passes only when its 10-fold accuracy on DATA (a folder-per-person tree,
or the image root of --pairs; see benchmark/lfw.py) is at most --max-loss below
the float model's and its embeddings are within a mean cosine of 0.99 of the
float ones; otherwise it is refused and the exit code is 1.

--method static (default): weights int8 per channel, activations uint8, QDQ,
activation ranges (--ranges percentile, the default, minmax or entropy)
calibrated on face chips of --calib (any folder of photos or crops, searched
recursively; default: DATA's images, which the report flags, since the check
is fairer on faces the calibration has not seen). --method dynamic: weights
only; activations are quantised at run time.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from mobileface.cli import common
from mobileface.detect.locate import KINDS
from mobileface.eval.dataset import (DEFAULT_FOLDS, IMAGE_EXTENSIONS, verify_embedders,
                                     load_verification_set)
from mobileface.errors import DataError, ImageError
from mobileface.stages.embed.int8 import CALIBRATIONS, DEFAULT_MAX_LOSS, METHODS
from mobileface.eval.verification import l2_normalise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="optimize_model.py",
                                     description=__doc__.strip().split("\n\n")[0])
    parser.add_argument("data", help="folder-per-person tree, or the image root of --pairs")
    parser.add_argument("--pairs", default=None, metavar="FILE",
                        help="a standard LFW pairs.txt whose images lie under DATA")
    parser.add_argument("--calib", default=None, metavar="DIR",
                        help="images for the static calibration (default: DATA's)")
    parser.add_argument("--calib-max", type=int, default=200,
                        help="use at most this many calibration images (default: 200)")
    parser.add_argument("--method", choices=METHODS, default="static",
                        help="int8 quantisation method (default: static)")
    parser.add_argument("--ranges", choices=CALIBRATIONS, default="percentile",
                        help="static method: activation ranges from the extremes the "
                             "calibration faces reach (minmax), ignoring their top "
                             "0.001%% (percentile, default: the one that passes the gate, as "
                             "in python -m mobileface models quantize), or by onnxruntime's "
                             "entropy search")
    parser.add_argument("--max-loss", type=float, default=DEFAULT_MAX_LOSS,
                        help="the most 10-fold accuracy the int8 model may lose and still be "
                             f"usable, as a fraction (default: {DEFAULT_MAX_LOSS} = "
                             f"{DEFAULT_MAX_LOSS * 100:g} points)")
    parser.add_argument("--out", default="optimized", metavar="DIR",
                        help="where the models and optimize.json go (default: ./optimized)")
    parser.add_argument("--runs", type=int, default=30,
                        help="timed runs per speed figure (default: 30)")
    parser.add_argument("--folds", type=int, default=DEFAULT_FOLDS, help=argparse.SUPPRESS)
    parser.add_argument("--kind", choices=KINDS, default="auto",
                        help="photo, crop or auto (default), as in benchmark/lfw.py")
    common.add_model_options(parser, embedder=False, precision="fp32")
    common.add_logging_options(parser)
    return parser


def calibration_images(folder: Path, limit: int) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder" if not folder.exists()
                        else f"{folder}: is not a folder")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
                   and p.is_file() and not p.name.startswith("."))
    if not paths:
        raise DataError(f"{folder}: no images for the calibration")
    return paths[:limit]


def face_chips(paths: list[Path], analyzer, kind: str) -> np.ndarray:
    """(N, 3, 150, 150) network inputs of the main face of each image that has one."""
    from mobileface.stages.align import dlib_chips
    from mobileface.stages.embed.dlib_resnet import CHIP_PADDING, CHIP_SIZE
    from mobileface.io.image import dlib_net_blob, read_image
    from mobileface.detect.locate import find_main_face

    blobs = []
    for path in paths:
        try:
            image = read_image(path)
        except ImageError as exc:
            common.log.warning("%s", exc)
            continue
        found = find_main_face(analyzer, image, kind)
        if found.found:
            chips = dlib_chips(found.image, found.faces.landmarks68, CHIP_SIZE, CHIP_PADDING)
            blobs.append(dlib_net_blob(chips))
    if not blobs:
        raise DataError("no face found in the calibration images")
    return np.concatenate(blobs)


def speed(path: Path, chips: np.ndarray, runs: int, threads: int) -> dict:
    """Session start time and batch 1 / batch 8 latency of one model file."""
    from mobileface.convert.dlib_resnet import INPUT_NAME
    from mobileface.models.runtime import RuntimeConfig, create_session

    config = RuntimeConfig(intra_op_threads=threads)
    starts = []
    for _ in range(3):
        begin = time.perf_counter()
        session = create_session(str(path), config, "embed")
        starts.append(time.perf_counter() - begin)
    batch8 = np.ascontiguousarray(np.resize(chips, (8, *chips.shape[1:])))
    one = {INPUT_NAME: batch8[:1]}
    eight = {INPUT_NAME: batch8}
    b1 = common.median_ms(lambda: session.run(None, one), runs)
    b8 = common.median_ms(lambda: session.run(None, eight), max(runs // 4, 3))
    return {"start_ms": round(statistics.median(starts) * 1000, 1), "batch1_ms": round(b1, 3),
            "batch8_ms_per_face": round(b8 / 8, 3)}


def run(args) -> int:
    from mobileface.models import registry
    from mobileface.convert.dlib_resnet import INPUT_NAME, MODEL_NAME, converted_model_path
    from mobileface.stages.embed.dlib_resnet import DlibEmbedder
    from mobileface.eval.quantize import cpu_record, gate, install, quantize_onnx
    from mobileface.models.graph import optimize_graph
    from mobileface.models.precision import Bounds
    from mobileface.stages.embed.int8 import int8_paths, is_usable

    if not 0 <= args.max_loss < 1:
        raise ValueError("--max-loss must be a fraction in [0, 1)")
    if args.runs < 1 or args.calib_max < 1:
        raise ValueError("--runs and --calib-max must be at least 1")
    vset = load_verification_set(args.data, args.pairs, args.folds)
    calib_folder = Path(args.calib) if args.calib else None
    calib_paths = (calibration_images(calib_folder, args.calib_max) if calib_folder
                   else vset.pairs.images[:args.calib_max])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    analyzer = common.analyzer_from_args(args)
    runtime = analyzer.runtime
    chips = face_chips(calib_paths, analyzer, args.kind)
    float_path = converted_model_path()
    opt_path = out / f"{MODEL_NAME}-opt.onnx"
    variant = args.method if args.method == "dynamic" else f"static-{args.ranges}"
    int8_out = out / f"{MODEL_NAME}-int8-{variant}.onnx"
    optimize_graph(float_path, opt_path)
    begin = time.perf_counter()
    quantize_onnx(float_path, int8_out, INPUT_NAME, np.array_split(chips, max(1, len(chips) // 8)),
                  args.ranges, args.method)
    quantize_s = time.perf_counter() - begin

    embedders = {"float": DlibEmbedder(runtime),
                 "float-opt": DlibEmbedder(runtime, model_path=opt_path),
                 "int8": DlibEmbedder(runtime, model_path=int8_out)}
    vset, dropped, embedded, results = verify_embedders(vset, analyzer, embedders, args.kind)
    ok = embedded.ok
    pairs = vset.pairs
    ref = l2_normalise(embedded.embeddings["float"][ok])
    drift = {label: (l2_normalise(embedded.embeddings[label][ok]) * ref).sum(1)
             for label in ("float-opt", "int8")}

    threads = args.threads or os.cpu_count() or 1
    files = {"float": float_path, "float-opt": opt_path, "int8": int8_out}
    speeds = {label: speed(path, chips, args.runs, threads) for label, path in files.items()}
    base = speeds["float"]
    acc = {label: r.kfold.accuracy for label, r in results.items()}
    loss = acc["float"] - acc["int8"]
    usable = is_usable(acc["float"], acc["int8"], args.max_loss)

    rows = []
    for label, path in files.items():
        r = results[label]
        tar = r.tar_at_far()[0]
        rows.append({
            "model": label, "file": str(path), "size_mb": round(path.stat().st_size / 1e6, 2),
            **speeds[label],
            "speedup_batch1": round(base["batch1_ms"] / speeds[label]["batch1_ms"], 3),
            "speedup_batch8": round(base["batch8_ms_per_face"]
                                    / speeds[label]["batch8_ms_per_face"], 3),
            "accuracy": round(r.kfold.accuracy, 6), "accuracy_std": round(r.kfold.accuracy_std, 6),
            "threshold": round(r.kfold.threshold, 6), "auc": round(r.roc.auc, 6),
            "tar_at_far": tar,
            "cosine_to_float_mean": (None if label == "float"
                                     else round(float(drift[label].mean()), 6)),
            "cosine_to_float_min": (None if label == "float"
                                    else round(float(drift[label].min()), 6)),
        })

    int8_cache, report_cache = int8_paths()
    min_cosine = Bounds().min_cosine
    gates = [gate("embed: 10-fold accuracy lost", loss, args.max_loss, False,
                  accuracy_fp32=round(acc["float"], 6), accuracy_int8=round(acc["int8"], 6),
                  data=str(args.data), pairs=int(len(pairs.same)), pairs_left_out=dropped),
             gate("embed: mean cosine to fp32", float(drift["int8"].mean()), min_cosine, True,
                  min=round(float(drift["int8"].min()), 6))]
    usable = usable and gates[1]["passed"]
    report = {
        "tool": "optimize_model", "model": MODEL_NAME,
        "source_sha256": registry.get_spec(MODEL_NAME).sha256,
        "method": variant,
        "method_detail": (f"static QDQ: weights int8 per channel, activations uint8, "
                          f"{args.ranges} calibration" if args.method == "static"
                          else "dynamic: weights int8 per channel, activations at run time"),
        "calibration": {"folder": str(calib_folder or args.data), "images": len(calib_paths),
                        "faces": int(len(chips)),
                        "overlaps_evaluation": calib_folder is None},
        "evaluation": {"data": str(args.data), "pairs_file": args.pairs,
                       "pairs": pairs.source, "same_pairs": int(pairs.same.sum()),
                       "different_pairs": int((~pairs.same).sum()), "pairs_left_out": dropped,
                       "images": {"total": len(ok), **embedded.counts()},
                       "score": "cosine similarity of L2-normalised embeddings"},
        "threads": threads, "runs": args.runs, "quantize_seconds": round(quantize_s, 1),
        "cpu": cpu_record(),
        "accuracy_float": round(acc["float"], 6), "accuracy_int8": round(acc["int8"], 6),
        "accuracy_loss": round(loss, 6), "max_loss": args.max_loss, "usable": bool(usable),
        "int8_sha256": registry.sha256_file(int8_out),
        "gates": gates, "models": rows,
    }

    # the cache copy is what "dlib-int8" and --precision int8/auto load, with the report
    # every quantised model has (mobileface.eval.quantize.install)
    install("embed", {MODEL_NAME: int8_out},
            {"made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "tool": "optimize_model",
             "method": report["method_detail"], "data": str(args.data),
             "calibration": report["calibration"], "cpu": report["cpu"],
             "seconds": round(quantize_s, 1), "gates": gates})
    report["installed_as"] = str(int8_cache)
    report["report"] = str(report_cache)
    text = json.dumps(report, indent=2)
    (out / "optimize.json").write_text(text)

    print(f"evaluation: {vset.described}; {pairs.source}")
    print(f"calibration: {len(chips)} faces from {len(calib_paths)} images of "
          f"{calib_folder or args.data}"
          + (" (the evaluation images themselves)" if calib_folder is None else ""))
    print(f"speed: onnxruntime, {threads} thread(s), median of {args.runs} runs")
    print(f"{'model':<10} {'MB':>6} {'start ms':>9} {'b1 ms':>7} {'b8 ms/face':>10} "
          f"{'speed-up b1/b8':>15} {'accuracy':>17} {'AUC':>7} {'cos to float':>13}")
    for r in rows:
        cos = "" if r["cosine_to_float_mean"] is None else f"{r['cosine_to_float_mean']:.5f}"
        print(f"{r['model']:<10} {r['size_mb']:6.1f} {r['start_ms']:9.1f} {r['batch1_ms']:7.2f} "
              f"{r['batch8_ms_per_face']:10.2f} {r['speedup_batch1']:7.2f}x/{r['speedup_batch8']:.2f}x "
              f"{r['accuracy']:.4f} ± {r['accuracy_std']:.4f} {r['auc']:7.4f} {cos:>13}")
    verdict = "usable" if usable else "NOT usable: dlib-int8 and --precision int8 refuse it"
    if usable and rows[-1]["speedup_batch1"] < 1:
        verdict += f" (but {1 / rows[-1]['speedup_batch1']:.1f}x slower than float here)"
    print(f"int8 ({variant}) accuracy change: {-loss:+.4f} (bound: a loss of at most "
          f"{args.max_loss:g}) -> {verdict}")
    print(f"wrote {opt_path}, {int8_out}, {out / 'optimize.json'}; installed {int8_cache}")
    common.emit_json(report)
    return 0 if usable else 1


def main(argv=None) -> int:
    return common.main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
