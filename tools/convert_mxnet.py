"""Convert an MXNet checkpoint (symbol JSON + params) to ONNX, without MXNet.

    python tools/convert_mxnet.py --symbol X-symbol.json --params X-0000.params \\
        --input-shape 1,3,112,112 -o model.onnx

The ONNX model keeps the given channels and size and has a free batch
dimension. Errors (a missing or corrupt file, an operator the converter does
not support) are one line on stderr and exit code 1.

With --spec-preset (MobileFace's models) or --spec plus --color, --mean, --std
and --align, an embedder spec is written beside the model (model.json for
model.onnx), ready for `--embedder model.json`:

    python tools/convert_mxnet.py --symbol MobileFace_Identification_V1-symbol.json \
        --params MobileFace_Identification_V1-0000.params --input-shape 1,1,100,100 \
        -o mobileface_v1.onnx --spec-preset mobileface-v1 --align-template mobileface_align_v1.npy
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from mobileface.stages.embed.presets import PRESETS
from mobileface.errors import MobileFaceError


def _shape(text: str) -> tuple[int, ...]:
    from mobileface.convert.mxnet import parse_input_shape

    try:
        return parse_input_shape(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python tools/convert_mxnet.py",
        description="Convert an MXNet symbol/params checkpoint to ONNX (MXNet is not needed).")
    parser.add_argument("--symbol", type=Path, required=True, help="the X-symbol.json file")
    parser.add_argument("--params", type=Path, required=True, help="the X-0000.params file")
    parser.add_argument("--input-shape", type=_shape, required=True, metavar="N,C,H,W",
                        help="the network input, e.g. 1,3,112,112 (the batch size N is "
                             "left free in the ONNX model)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the .onnx file to write")
    parser.add_argument("--output-node", default=None, metavar="NAME",
                        help="use this internal node as the output instead of the graph's "
                             "heads (e.g. fc1 of an InsightFace training graph)")
    spec = parser.add_argument_group(
        "embedder spec", "write OUTPUT.json beside the model (see mobileface/stages/embed/spec.py)")
    spec.add_argument("--spec-preset", choices=PRESETS, default=None,
                      help="MobileFace's measured settings for V1, V2 or V3")
    spec.add_argument("--spec", action="store_true",
                      help="write a spec from the options below")
    spec.add_argument("--name", default=None, help="spec name (default: the output file's stem)")
    spec.add_argument("--color", choices=("rgb", "bgr", "gray"), help="the model's colour order")
    spec.add_argument("--mean", type=_numbers, help="pixel mean(s), e.g. 127.5 or 123,117,104")
    spec.add_argument("--std", type=_numbers, help="pixel std(s), e.g. 127.5")
    spec.add_argument("--align", choices=("arcface", "dlib", "template"),
                      help="arcface: 5-point ArcFace template; dlib: dlib chip from 68 points; "
                           "template: --align-template")
    spec.add_argument("--align-template", type=Path, default=None, metavar="NPY",
                      help="template points (.npy, read without pickle); also the V1 preset's "
                           "template (MobileFace's mobileface_align_v1.npy)")
    spec.add_argument("--align-points", choices=("kps5", "eyes_mouth"), default="kps5",
                      help="what the template's rows are: kps5 (eyes, nose, mouth corners) or "
                           "eyes_mouth (eyes, mouth centre) (default: kps5)")
    spec.add_argument("--align-units", choices=("fraction", "pixels"), default="fraction",
                      help="template units: fractions of the chip side or chip pixels "
                           "(default: fraction)")
    spec.add_argument("--align-transform", choices=("similarity", "affine"), default="similarity",
                      help="least-squares similarity or affine map onto the template "
                           "(default: similarity)")
    spec.add_argument("--padding", type=float, default=0.25, help="dlib chip padding")
    spec.add_argument("--normalize", choices=("none", "l2"), default="none",
                      help="normalise the embeddings (default: none)")
    return parser


def _numbers(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of numbers") from None


def _spec(args, model_path: Path, digest: str):
    """The EmbedderSpec the options ask for, or None."""
    from mobileface.stages.embed.presets import mobileface_spec
    from mobileface.stages.embed.spec import EmbedderSpec

    if args.spec_preset:
        return mobileface_spec(args.spec_preset, model_path, args.align_template, sha256=digest)
    if not args.spec:
        return None
    missing = [f"--{k}" for k in ("color", "mean", "std", "align") if getattr(args, k) is None]
    if missing:
        raise ValueError(f"--spec needs {', '.join(missing)} (nothing is guessed)")
    if args.align == "template":
        if args.align_template is None:
            raise ValueError("--align template needs --align-template")
        import numpy as np

        try:
            points = np.load(args.align_template, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read {args.align_template}: {exc}") from None
        align = {"method": "template", "template": points.tolist(), "units": args.align_units,
                 "points": args.align_points, "transform": args.align_transform}
    elif args.align == "dlib":
        align = {"method": "dlib", "padding": args.padding}
    else:
        align = "arcface"
    return EmbedderSpec.from_dict({
        "name": args.name or model_path.stem, "model": str(model_path), "sha256": digest,
        "input_size": args.input_shape[2], "color": args.color, "mean": args.mean,
        "std": args.std, "align": align, "normalize": args.normalize}, base=Path.cwd())


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from mobileface.convert import mxnet
    from mobileface.stages.embed.spec import save_spec

    spec_path = args.output.with_suffix(".json")
    if args.output.suffix.lower() == ".json":
        print("error: the model file must not end in .json (the spec goes there)", file=sys.stderr)
        return 1
    try:
        if args.input_shape[2] != args.input_shape[3] and (args.spec or args.spec_preset):
            raise ValueError("embedder specs need a square input")
        model = mxnet.convert(args.symbol, args.params, args.input_shape, args.output_node)
        data = model.SerializeToString()
        # the spec is checked before anything is written
        spec = _spec(args, args.output, hashlib.sha256(data).hexdigest())
        mxnet.save(data, args.output)
        if spec is not None:
            save_spec(spec, spec_path)
    except (MobileFaceError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot write {spec_path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    outputs = ", ".join(
        f"{o.name} {[d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]}"
        for o in model.graph.output)
    size = args.output.stat().st_size / 1e6
    print(f"wrote {args.output} ({size:.1f} MB): input {model.graph.input[0].name} "
          f"N,{','.join(map(str, args.input_shape[1:]))}; output {outputs}")
    if spec is not None:
        print(f"wrote {spec_path}: use it with --embedder {spec_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
