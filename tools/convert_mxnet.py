"""Convert an MXNet checkpoint (symbol JSON + params) to ONNX, without MXNet.

    python tools/convert_mxnet.py --symbol X-symbol.json --params X-0000.params \\
        --input-shape 1,3,112,112 -o model.onnx

The ONNX model keeps the given channels and size and has a free batch
dimension. Errors (a missing or corrupt file, an operator the converter does
not support) are one line on stderr and exit code 1.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mobileface.errors import MobileFaceError  # noqa: E402


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
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from mobileface.convert import mxnet

    try:
        model = mxnet.convert(args.symbol, args.params, args.input_shape, args.output_node)
        mxnet.save(model, args.output)
    except (MobileFaceError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    outputs = ", ".join(f"{o.name} {[d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]}"
                        for o in model.graph.output)
    size = args.output.stat().st_size / 1e6
    print(f"wrote {args.output} ({size:.1f} MB): input {model.graph.input[0].name} "
          f"N,{','.join(map(str, args.input_shape[1:]))}; output {outputs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
