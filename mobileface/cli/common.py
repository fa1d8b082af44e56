"""What every command line shares: ``mobileface``, apps/, benchmark/ and tools/.

Model, embedding and logging options, the facebank folder, where ../shared is,
one way of turning a user's error into one line and an exit code, a progress
bar, timing and the closing JSON line of the scripts.

Kept free of heavy imports (the library's models, onnxruntime, cv2) so that
``--help`` stays quick: what needs them imports them inside the function.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

log = logging.getLogger("mobileface")

#: the facebank folder when neither --facebank nor $MOBILEFACE_FACEBANK is given
DEFAULT_FACEBANK = "facebank"
#: the folder above the package: a source checkout when it holds pyproject.toml
PACKAGE_PARENT = Path(__file__).resolve().parents[2]


def default_facebank() -> str:
    return os.environ.get("MOBILEFACE_FACEBANK", DEFAULT_FACEBANK)


def checkout() -> Path:
    """The source checkout: the one the package is imported from (an editable install or
    a run inside the tree), else, for a copy installed into site-packages, the current
    directory (benchmark/ and tools/ are run from a checkout's root)."""
    if (PACKAGE_PARENT / "pyproject.toml").is_file():
        return PACKAGE_PARENT
    return Path.cwd()


def shared_dir() -> Path:
    """The shared test-data folder (``data/`` and ``models/``): $MOBILEFACE_SHARED, else
    ``../shared`` beside the checkout.

    One place for the tests, benchmark/ and tools/, so that setting the variable moves all
    of them at once.
    """
    return Path(os.environ.get("MOBILEFACE_SHARED") or checkout().parent / "shared")


def shared_data(relative: str = "") -> Path:
    """A path under the shared folder's ``data/`` (it may not exist)."""
    return shared_dir() / "data" / relative if relative else shared_dir() / "data"


# ---------------------------------------------------------------------------
# options


def add_logging_options(parser: argparse.ArgumentParser, inherited: bool = False) -> None:
    """-v/--verbose and -q/--quiet. ``inherited``: on a subcommand, where leaving them out
    must keep what was given before the subcommand (argparse would reset it to False)."""
    default = argparse.SUPPRESS if inherited else False
    parser.add_argument("-v", "--verbose", action="store_true", default=default,
                        help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", default=default,
                        help="log only errors")


def share_logging_options(parser: argparse.ArgumentParser) -> None:
    """Let -v/-q stand after any subcommand too (``mobileface analyze x.jpg -v``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if "--verbose" not in sub._option_string_actions:
                    add_logging_options(sub, inherited=True)
                share_logging_options(sub)


def add_model_options(parser: argparse.ArgumentParser, det_size: int = 640,
                      embedder: bool = True, threads: int = 0, precision: str = "auto") -> None:
    """--detector, --det-size, --det-threshold, --providers, --threads, --precision and, with
    ``embedder``, one --embedder (scripts comparing models take add_embedding_options'
    repeatable one). Measuring scripts pass ``precision="fp32"``, so that their figures are
    the float models' unless int8 is asked for."""
    from mobileface.detect import DETECTORS  # the detector names live with the detectors

    parser.add_argument("--detector", choices=DETECTORS, default=DETECTORS[0],
                        help=f"face detector (default: {DETECTORS[0]})")
    parser.add_argument("--det-size", type=int, default=det_size,
                        help=f"RetinaFace input size, longer image side in px (default: {det_size})")
    parser.add_argument("--det-threshold", type=float, default=None,
                        help="minimum detection score (default: the detector's own)")
    parser.add_argument("--providers", default="cpu",
                        help="onnxruntime providers in order of preference, comma-separated "
                             "(e.g. cuda,cpu; default: cpu)")
    parser.add_argument("--threads", type=int, default=threads,
                        help=f"onnxruntime intra-op threads per model (default: {threads}"
                             f"{' = onnxruntime decides' if threads == 0 else ''})")
    add_precision_option(parser, precision)
    if embedder:
        parser.add_argument("--embedder", default="dlib", metavar="SPEC",
                            help="embedding model: 'dlib' (default) or the path of an embedder "
                                 "spec .json (see README, 'Bring your own models')")


def add_detect_every_option(parser: argparse.ArgumentParser) -> None:
    """--detect-every K: the detector on every K-th frame at least (see mobileface.track.refind)."""
    from mobileface.track.refind import DETECT_EVERY

    parser.add_argument("--detect-every", type=int, default=DETECT_EVERY, metavar="K",
                        help="run the face detector on at least every K-th frame; in between, "
                             "tracked faces are re-found from their 68 points (also on scene "
                             "cuts, sudden motion and new faces; 1: every frame; default: "
                             f"{DETECT_EVERY})")


def check_detect_every(value: int) -> None:
    from mobileface.errors import MobileFaceError

    if value < 1:
        raise MobileFaceError(f"--detect-every must be >= 1, got {value}")


def add_precision_option(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    """--precision auto|fp32|int8 (see mobileface.models.precision)."""
    from mobileface.models.precision import COMMAND, PRECISIONS

    parser.add_argument("--precision", choices=PRECISIONS, default=default,
                        help="model precision: auto (int8 for each model whose accuracy gate "
                             "passed, on a CPU with VNNI or AMX, else fp32), fp32, or int8 "
                             f"(refused for a model without a passed gate; {COMMAND} makes "
                             f"them); default: {default}")


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


def add_enhance_option(parser: argparse.ArgumentParser, default: str | None,
                       default_text: str | None = None) -> None:
    """--enhance off|auto|on: the low-light step before detection (a bad value is argparse's
    one-line usage error, exit code 2). ``default_text`` says what None means."""
    from mobileface.enhance import ENHANCE_MODES  # light: the modes only

    parser.add_argument("--enhance", choices=ENHANCE_MODES, default=default,
                        help="low-light enhancement before detection: auto (only frames that "
                             "are dark), on (every frame) or off (default: "
                             f"{default_text or default})")


def add_facebank_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--facebank", default=None, metavar="DIR|URL",
                        help="facebank folder (one sub-folder of photos per person and "
                             "facebank.sqlite), or a PostgreSQL database with pgvector "
                             "(postgresql://user@host:port/db) that many machines share "
                             f"(default: $MOBILEFACE_FACEBANK or ./{DEFAULT_FACEBANK})")


def providers(args) -> list[str]:
    return [p.strip() for p in args.providers.split(",") if p.strip()]


def analyzer_options(args) -> dict:
    """FaceAnalyzer keyword arguments from the model options."""
    return {"detector": args.detector, "det_size": args.det_size,
            "det_threshold": args.det_threshold, "providers": providers(args),
            "threads": args.threads, "embedder": getattr(args, "embedder", None),
            "enhance": getattr(args, "enhance", None) or "off",
            "precision": getattr(args, "precision", "auto")}


def analyzer_from_args(args: argparse.Namespace, stages=("landmarks",)):
    """A FaceAnalyzer from the add_model_options options; by default it finds faces and their
    68 landmarks only (a script's embedders are built separately, one per --embedder)."""
    from mobileface.pipeline.image import FaceAnalyzer

    options = analyzer_options(args)
    del options["embedder"]  # a list here (add_embedding_options), not the analyzer's one
    return FaceAnalyzer(stages=stages, **options)


def embed_folder_from_args(args: argparse.Namespace):
    """The images of the folder-per-person tree ``args.data`` and their embeddings by every
    --embedder (see add_embedding_options and add_model_options): (ImageSet, EmbeddedImages)."""
    from mobileface.eval.dataset import build_embedders, embed_images, read_folder_set

    images = read_folder_set(args.data, getattr(args, "max_per_person", None))
    analyzer = analyzer_from_args(args)
    embedders = build_embedders(args.embedder, analyzer.runtime)
    return images, embed_images(images.paths, analyzer, embedders, args.kind)


# ---------------------------------------------------------------------------
# logging, errors, the run


def configure_logging(args, prog: str = "mobileface", level: int = logging.INFO) -> None:
    """Our messages as one line each on the current stderr, prefixed with ``prog``.

    ``level`` is what shows without -v or -q: the scripts of benchmark/ and tools/ pass
    WARNING, since their output is a table and a JSON line.
    """
    verbose = getattr(args, "verbose", False)
    level = logging.DEBUG if verbose else logging.ERROR if getattr(args, "quiet", False) \
        else level
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{prog}: %(message)s"))
    log.handlers = [handler]
    log.propagate = False
    log.setLevel(level)
    # Per-session provider lines are debug detail; warnings still show.
    logging.getLogger("mobileface.models.runtime").setLevel(logging.DEBUG if verbose
                                                            else max(level, logging.WARNING))


def run_main(run: Callable, args) -> int:
    """``run(args)`` with the exit codes every command line uses: its own on success or a
    failed run (0, 1), 2 with a one-line message for a user error (a bad value, a file that
    cannot be read or written), 130 on Ctrl-C."""
    from mobileface.errors import MobileFaceError

    try:
        return run(args)
    except (MobileFaceError, ValueError) as exc:
        log.error("error: %s", exc)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        log.error("error: %s%s", where, exc.strerror or exc)
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    return 2


def main(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int],
         argv=None) -> int:
    """A benchmark or tool script's ``main(argv)``: parse, log under the parser's prog
    (warnings and errors only by default), run with :func:`run_main`'s exit codes."""
    args = parser.parse_args(argv)
    configure_logging(args, prog=parser.prog, level=logging.WARNING)
    return run_main(run, args)


# ---------------------------------------------------------------------------
# output


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


def emit_json(result: dict, json_out: str | None = None) -> None:
    """Print the result as the script's last line, one JSON object; also write it to json_out.

    The scripts' output, on stdout: the one print this module allows itself.
    """
    print(json.dumps(result))
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=2))


class Progress:
    """A one-line progress bar on stderr (redrawn in place on a terminal, a line
    every few seconds otherwise)."""

    def __init__(self, total: int | None, stream=None, enabled: bool = True,
                 line_every: float = 5.0):
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.line_every = line_every
        self._last_line = time.monotonic()
        self._drawn = False

    def text(self, frames: int, fps: float, dropped: int = 0) -> str:
        parts = []
        if self.total:
            share = min(1.0, frames / self.total)
            filled = int(round(24 * share))
            parts.append(f"[{'#' * filled}{'.' * (24 - filled)}] {frames}/{self.total} "
                         f"{100 * share:3.0f}%")
        else:
            parts.append(f"{frames} frames")
        parts.append(f"{fps:5.1f} fps")
        if dropped:
            parts.append(f"{dropped} dropped")
        return "  ".join(parts)

    def update(self, stats) -> None:
        if not self.enabled:
            return
        line = self.text(stats.frames, stats.fps, stats.dropped)
        if self.tty:
            self.stream.write("\r" + line + "\033[K")
            self.stream.flush()
            self._drawn = True
        elif time.monotonic() - self._last_line >= self.line_every:
            self._last_line = time.monotonic()
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
