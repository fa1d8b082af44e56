"""The desktop viewer (PyQt6): live recognition on a camera, a video file or a stream.

    python apps/viewer.py [-f SOURCE]
    python -m mobileface gui [-f SOURCE]

This module and :mod:`.qtenv` and :mod:`.unknowns` import no Qt, so that the
command line can offer ``gui`` without loading Qt; the window lives in
:mod:`.window` and starts from :func:`mobileface.gui.app.run`. The rest of
the library never imports this package.
"""
from __future__ import annotations

import argparse
from typing import Sequence

from mobileface.detect import DETECTORS

#: RetinaFace input size for the live view (the longer frame side is scaled to it)
VIEWER_DET_SIZE = 480
DET_SIZES = (320, 480, 640)
#: the detectors the viewer offers (the first is the default)
VIEWER_DETECTORS = DETECTORS
#: the match threshold's range in the viewer (its slider's, cosine similarity)
THRESHOLD_RANGE = (0.50, 1.00)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The viewer's options (shared by apps/viewer.py and ``python -m mobileface gui``)."""
    from mobileface.cli.common import (add_detect_every_option, add_enhance_option,
                                       add_facebank_option, add_precision_option)

    parser.add_argument("-f", "--source", metavar="SOURCE",
                        help="start at once on this source: a camera index (0), a video file "
                             "or a stream URL (rtsp://, http://)")
    parser.add_argument("-b", "--begin", type=float, default=0.0,
                        help="video files: start this many seconds in (default: 0)")
    parser.add_argument("-d", "--duration", type=float, default=None,
                        help="video files: play this many seconds (default: to the end)")
    add_facebank_option(parser)
    parser.add_argument("--detector", choices=VIEWER_DETECTORS, default=None,
                        help="face detector (default: the remembered choice, else retinaface)")
    parser.add_argument("--det-size", type=int, choices=DET_SIZES, default=None,
                        help=f"RetinaFace input size (default: the remembered choice, "
                             f"else {VIEWER_DET_SIZE})")
    parser.add_argument("-th", "--threshold", type=float, default=None,
                        help="cosine similarity a match must reach (default: the remembered "
                             "value, else the embedder's)")
    add_enhance_option(parser, None, "the remembered choice, else auto")
    add_precision_option(parser)
    add_detect_every_option(parser)
    parser.add_argument("--settings", metavar="JSON",
                        help="keep the viewer's settings in this JSON file (default: "
                             "$XDG_CONFIG_HOME/mobileface/viewer.json, else "
                             "~/.config/mobileface/viewer.json)")
    parser.add_argument("--quit-after", type=float, default=None, metavar="SECONDS",
                        help=argparse.SUPPRESS)  # start-up checks: close the window after this


def build_parser(prog: str = "python apps/viewer.py") -> argparse.ArgumentParser:
    from mobileface.cli.common import add_logging_options

    parser = argparse.ArgumentParser(
        prog=prog, description="Desktop viewer: live face recognition on a camera, a video "
                               "file or a stream, with the facebank and unknown faces.")
    add_arguments(parser)
    add_logging_options(parser)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "python apps/viewer.py") -> int:
    from mobileface.cli.common import configure_logging

    args = build_parser(prog).parse_args(argv)
    configure_logging(args)
    from mobileface.gui.app import run

    return run(args)
