"""Command-line plumbing shared by the scripts in benchmark/ and tools/.

Each script builds an argparse parser with these option groups, then runs its
body through :func:`run_tool`, which turns every error a user can cause into
one line on stderr and a non-zero exit code (never a traceback).
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

from mobileface.cli.common import add_logging_options, providers  # noqa: F401  (re-exported for the tools)
from mobileface.cli.common import add_model_options as _add_model_options
from mobileface.errors import MobileFaceError

log = logging.getLogger("mobileface")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--detector, --det-size, --det-threshold, --providers, --threads (as ``mobileface analyze``;
    --embedder comes from add_embedding_options, repeatable)."""
    _add_model_options(parser, embedder=False)


def add_embedding_options(parser: argparse.ArgumentParser) -> None:
    """--embedder SPEC (repeatable) and --kind, for scripts that embed sets of images."""
    from mobileface.detect.locate import CROP_MAX_SIDE, KINDS

    parser.add_argument("--embedder", action="append", metavar="SPEC", default=None,
                        help="embedding model spec, as create_embedder takes it; repeat it to "
                             "compare models (default: dlib)")
    parser.add_argument("--kind", choices=KINDS, default="auto",
                        help="photo: only detected faces; crop: the images are face crops, "
                             "used whole when no face is detected even on a border; auto "
                             f"(default): crop for images up to {CROP_MAX_SIDE} px, else photo")


def configure_logging(prog: str, args: argparse.Namespace) -> None:
    """Library messages as one line each on stderr, prefixed with the script's name."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{prog}: %(message)s"))
    log.handlers = [handler]
    log.propagate = False
    level = (logging.DEBUG if getattr(args, "verbose", False)
             else logging.ERROR if getattr(args, "quiet", False) else logging.WARNING)
    log.setLevel(level)


def analyzer_from_args(args: argparse.Namespace, stages=("landmarks",)):
    """A FaceAnalyzer from the add_model_options options; by default it finds faces and their
    68 landmarks only (embedders are built separately, one per --embedder)."""
    from mobileface.pipeline.image import FaceAnalyzer

    return FaceAnalyzer(detector=args.detector, det_size=args.det_size,
                        det_threshold=args.det_threshold, providers=providers(args),
                        threads=args.threads, stages=stages)


def embed_folder_from_args(args: argparse.Namespace):
    """The images of the folder-per-person tree ``args.data`` and their embeddings by every
    --embedder (see add_embedding_options and add_model_options): (ImageSet, EmbeddedImages)."""
    from mobileface.eval.dataset import build_embedders, embed_images, read_folder_set

    images = read_folder_set(args.data, getattr(args, "max_per_person", None))
    analyzer = analyzer_from_args(args)
    embedders = build_embedders(args.embedder, analyzer.runtime)
    return images, embed_images(images.paths, analyzer, embedders, args.kind)


def median_ms(fn: Callable[[], object], runs: int, warmup: int = 5) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``runs`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def run_tool(body: Callable[[], int]) -> int:
    """``body()``'s exit code; a user's error is one logged line and exit code 2."""
    try:
        return body()
    except (MobileFaceError, ValueError) as exc:
        log.error("error: %s", exc)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        log.error("error: %s%s", where, exc.strerror or exc)
    except KeyboardInterrupt:
        return 130
    return 2


def main(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int],
         argv=None) -> int:
    """A script's ``main(argv)``: parse, set up logging under the parser's prog, run."""
    args = parser.parse_args(argv)
    configure_logging(parser.prog, args)
    return run_tool(lambda: run(args))


def emit_json(result: dict, json_out: str | None = None) -> None:
    """Print the result as the script's last line, one JSON object; also write it to json_out."""
    print(json.dumps(result))
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=2))
