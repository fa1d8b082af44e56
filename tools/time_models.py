"""Latency of every model at batch 1 and 8, with 1 and 2 onnxruntime threads: a table and JSON.

    python tools/time_models.py [--runs 30] [--models NAME,...] [--embedder SPEC ...]
                                [--json-out times.json]

Each ONNX network is timed alone (onnxruntime ``session.run``; no pre- or
post-processing) on real input built from a photo (../shared's obama.jpg, else
scikit-image's astronaut), with the input each stage gives it:

* retinaface: the 640x360 frame at detector input 640;
* mtcnn_pnet: the packed pyramid canvas of that frame (smallest face 20 px),
  mtcnn_rnet / mtcnn_onet: 24x24 / 48x48 crops of the face;
* age / gender: 64x64 / 32x32 dlib chips of the face;
* embedders (--embedder, default dlib): the embedder's chip batch for dlib; for
  another spec whose stage exposes an onnxruntime ``session``, a random input
  of that session's shape; otherwise the whole stage (chips + network).

Batch 8 is the same input eight times (for detectors: eight frames); times
are per call and per item (ms), median of --runs after warm-up. The 68-point
landmarks are dlib's regression trees, not an ONNX model: timed as the stage
(dlib below four faces, our batched predictor from four), once, thread count
"-". Prints a table, then one JSON line.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np

from mobileface.cli import common
from mobileface.errors import MobileFaceError
from mobileface.eval.bench import load_image

BUILTIN = ("retinaface", "mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet", "landmarks", "age", "gender")
FRAME_SIZE = (640, 360)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="time_models.py",
                                     description=__doc__.strip().splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="timed runs per row (default: 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (default: 3)")
    parser.add_argument("--image", default=None, help="a photo with a clear face")
    parser.add_argument("--models", default=None,
                        help="comma-separated subset of: " + ", ".join(BUILTIN)
                             + ", embed (default: all)")
    parser.add_argument("--embedder", action="append", metavar="SPEC", default=None,
                        help="embedder spec to time, repeatable (default: dlib)")
    parser.add_argument("--threads", default="1,2",
                        help="onnxruntime intra-op thread counts (default: 1,2)")
    parser.add_argument("--batches", default="1,8", help="batch sizes (default: 1,8)")
    parser.add_argument("--json-out", default=None, help="also write the JSON here")
    common.add_logging_options(parser)
    return parser


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--{what} must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"--{what} must be integers >= 1, got {text!r}")
    return values


@dataclass
class Inputs:
    """One item of every model's input, from one photo and its largest face."""

    photo: np.ndarray
    faces: object            # Faces: one row with landmarks68
    retinaface: np.ndarray   # (1, 3, H, W)
    pnet: np.ndarray         # (1, W', H', 3) packed pyramid canvas, transposed as P-net wants
    rnet: np.ndarray         # (1, 24, 24, 3)
    onet: np.ndarray         # (1, 48, 48, 3)
    age: np.ndarray          # (1, 3, 64, 64)
    gender: np.ndarray       # (1, 3, 32, 32)


def prepare_inputs(photo: np.ndarray, source: str) -> Inputs:
    import cv2

    from mobileface import FaceAnalyzer
    from mobileface.stages.align import dlib_chip_transforms, warp_chips
    from mobileface.stages.attributes import AGE_SIZE, CHIP_PADDING, GENDER_SIZE
    from mobileface.detect import mtcnn, retinaface
    from mobileface.io.image import dlib_net_blob

    analyzer = FaceAnalyzer(stages=("landmarks",))
    faces = analyzer.analyze(photo)
    if len(faces) == 0:
        raise MobileFaceError(f"no face found in {source}")
    faces = faces.largest()

    frame = cv2.resize(photo, FRAME_SIZE, interpolation=cv2.INTER_AREA)
    retina = (frame.astype(np.float32) - retinaface.MEANS_BGR).transpose(2, 0, 1)[None]

    rgb = frame[:, :, ::-1]
    h, w = rgb.shape[:2]
    scales = mtcnn.pyramid_scales(h, w, 20, 0.709)
    levels = [cv2.resize(rgb, (int(np.ceil(w * s)), int(np.ceil(h * s))),
                         interpolation=cv2.INTER_AREA) for s in scales]
    offsets, (ch, cw) = mtcnn.pack_levels([lvl.shape[:2] for lvl in levels])
    canvas = np.zeros((ch, cw, 3), np.float32)
    for (y, x), lvl in zip(offsets, levels):
        canvas[y:y + lvl.shape[0], x:x + lvl.shape[1]] = mtcnn._normalise(lvl)
    pnet = canvas.transpose(1, 0, 2)[None]

    x1, y1, x2, y2 = np.round(faces.boxes[0]).astype(int)
    face_rgb = photo[max(y1, 0):y2, max(x1, 0):x2, ::-1]

    def crop(size: int) -> np.ndarray:
        small = cv2.resize(face_rgb, (size, size), interpolation=cv2.INTER_AREA)
        return mtcnn._normalise(small).transpose(1, 0, 2)[None]

    def chips(size: int) -> np.ndarray:
        matrices = dlib_chip_transforms(faces.landmarks68, size, CHIP_PADDING)
        return dlib_net_blob(warp_chips(photo, matrices, size))

    return Inputs(photo, faces, np.ascontiguousarray(retina), np.ascontiguousarray(pnet),
                  crop(24), crop(48), chips(AGE_SIZE), chips(GENDER_SIZE))


def _batch(item: np.ndarray, batch: int) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(item, batch, axis=0))


def onnx_models(inputs: Inputs) -> dict[str, tuple[Callable, np.ndarray, str]]:
    """name -> (model bytes loader, one input item, input description)."""
    from mobileface.models import registry

    def loader(name):
        return lambda: registry.onnx_bytes(name)

    return {
        "retinaface": (loader("retinaface_mnet025"), inputs.retinaface,
                       f"frame {FRAME_SIZE[0]}x{FRAME_SIZE[1]}"),
        "mtcnn_pnet": (loader("mtcnn_pnet"), inputs.pnet, 
                       f"pyramid canvas {inputs.pnet.shape[1]}x{inputs.pnet.shape[2]}"),
        "mtcnn_rnet": (loader("mtcnn_rnet"), inputs.rnet, "face 24x24"),
        "mtcnn_onet": (loader("mtcnn_onet"), inputs.onet, "face 48x48"),
        "age": (loader("age_v1"), inputs.age, "chip 64x64"),
        "gender": (loader("gender_v1"), inputs.gender, "chip 32x32"),
    }


def embedder_input(stage, inputs: Inputs) -> tuple[np.ndarray | None, str]:
    """One input item for an embedder's session, or None to time the whole stage."""
    from mobileface.stages.embed.dlib_resnet import CHIP_PADDING, CHIP_SIZE, DlibEmbedder

    if isinstance(stage, DlibEmbedder):
        from mobileface.stages.align import dlib_chips
        from mobileface.io.image import dlib_net_blob
        return (dlib_net_blob(dlib_chips(inputs.photo, inputs.faces.landmarks68, CHIP_SIZE,
                                         CHIP_PADDING)), f"chip {CHIP_SIZE}x{CHIP_SIZE}")
    session = getattr(stage, "session", None)
    if session is None or len(session.get_inputs()) != 1:
        return None, "whole stage"
    dims = session.get_inputs()[0].shape[1:]
    if not all(isinstance(d, int) and d > 0 for d in dims):
        return None, "whole stage"
    item = np.random.default_rng(0).standard_normal((1, *dims)).astype(np.float32)
    return item, "random " + "x".join(str(d) for d in dims)


def run(args) -> int:
    from mobileface.eval.dataset import build_embedders
    from mobileface.stages.landmarks.dlib68 import Landmarks68
    from mobileface.models.runtime import RuntimeConfig, create_session

    if args.runs < 1 or args.warmup < 0:
        raise ValueError("--runs must be >= 1 and --warmup >= 0")
    threads = _ints(args.threads, "threads")
    batches = _ints(args.batches, "batches")
    wanted = list(BUILTIN) + ["embed"]
    if args.models:
        wanted = [m.strip() for m in args.models.split(",") if m.strip()]
        unknown = [m for m in wanted if m not in BUILTIN + ("embed",)]
        if unknown:
            raise ValueError(f"unknown model(s) {', '.join(unknown)}; choose from "
                             f"{', '.join(BUILTIN)}, embed")
    photo, source = load_image(args.image)
    inputs = prepare_inputs(photo, source)
    rows = []

    def add(model, detail, batch, n_threads, ms):
        rows.append({"model": model, "input": detail, "batch": batch, "threads": n_threads,
                     "ms_per_call": round(ms, 3), "ms_per_item": round(ms / batch, 3)})

    models = onnx_models(inputs)
    for name in (m for m in BUILTIN if m in wanted):
        if name == "landmarks":  # dlib's regression trees, no onnxruntime
            stage = Landmarks68()
            for batch in batches:
                faces = inputs.faces[[0] * batch]
                add(name, "68 points (dlib ERT)", batch, "-",
                    common.median_ms(lambda: stage(photo, faces), args.runs, args.warmup))
            continue
        load, item, detail = models[name]
        model = load()
        for n_threads in threads:
            session = create_session(model, RuntimeConfig(intra_op_threads=n_threads), name)
            feed_name = session.get_inputs()[0].name
            for batch in batches:
                feed = {feed_name: _batch(item, batch)}
                add(name, detail, batch, n_threads,
                    common.median_ms(lambda: session.run(None, feed), args.runs, args.warmup))
    if "embed" in wanted:
        specs = args.embedder or [None]
        for n_threads in threads:
            stages = build_embedders(specs, RuntimeConfig(intra_op_threads=n_threads))
            for label, stage in stages.items():
                item, detail = embedder_input(stage, inputs)
                for batch in batches:
                    if item is None:
                        faces = inputs.faces[[0] * batch]
                        fn = lambda: stage(photo, faces)  # noqa: E731
                    else:
                        feed = {stage.session.get_inputs()[0].name: _batch(item, batch)}
                        fn = lambda: stage.session.run(None, feed)  # noqa: E731
                    add(f"embed {label}", detail, batch, n_threads,
                        common.median_ms(fn, args.runs, args.warmup))

    import onnxruntime

    print(f"input: {source}; runs: {args.runs} (median); cpu cores: {os.cpu_count()}, "
          f"{platform.processor() or platform.machine()}; onnxruntime {onnxruntime.__version__}")
    print(f"{'model':<22} {'input':<28} {'batch':>5} {'threads':>7} {'ms/call':>9} {'ms/item':>9}")
    for r in rows:
        print(f"{r['model']:<22} {r['input']:<28} {r['batch']:>5} {r['threads']!s:>7} "
              f"{r['ms_per_call']:9.2f} {r['ms_per_item']:9.2f}")
    result = {"tool": "time_models", "image": source, "runs": args.runs,
              "cpu_count": os.cpu_count(), "onnxruntime": onnxruntime.__version__, "rows": rows}
    common.emit_json(result, args.json_out)
    return 0


def main(argv=None) -> int:
    return common.main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
