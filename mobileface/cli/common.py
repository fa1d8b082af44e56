"""What every command line shares: model and logging options, the facebank folder, a progress bar.

Kept free of heavy imports so that ``--help`` stays quick.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time

log = logging.getLogger("mobileface")

#: the facebank folder when neither --facebank nor $MOBILEFACE_FACEBANK is given
DEFAULT_FACEBANK = "facebank"


def default_facebank() -> str:
    return os.environ.get("MOBILEFACE_FACEBANK", DEFAULT_FACEBANK)


def add_logging_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", help="log only errors")


def add_model_options(parser: argparse.ArgumentParser, det_size: int = 640,
                      embedder: bool = True, threads: int = 0) -> None:
    parser.add_argument("--detector", choices=("retinaface", "mtcnn"), default="retinaface",
                        help="face detector (default: retinaface)")
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
    if embedder:
        parser.add_argument("--embedder", default="dlib", metavar="SPEC",
                            help="embedding model: 'dlib' (default) or the path of an embedder "
                                 "spec .json (see README, 'Bring your own models')")


def add_facebank_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--facebank", default=None, metavar="DIR",
                        help="facebank folder: one sub-folder of photos per person and "
                             f"facebank.sqlite (default: $MOBILEFACE_FACEBANK or ./{DEFAULT_FACEBANK})")


def providers(args) -> list[str]:
    return [p.strip() for p in args.providers.split(",") if p.strip()]


def analyzer_options(args) -> dict:
    """FaceAnalyzer keyword arguments from the model options."""
    return {"detector": args.detector, "det_size": args.det_size,
            "det_threshold": args.det_threshold, "providers": providers(args),
            "threads": args.threads, "embedder": getattr(args, "embedder", None)}


def configure_logging(args) -> None:
    """Our messages as one line each on the current stderr."""
    verbose = getattr(args, "verbose", False)
    level = logging.DEBUG if verbose else logging.ERROR if getattr(args, "quiet", False) \
        else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("mobileface: %(message)s"))
    log.handlers = [handler]
    log.propagate = False
    log.setLevel(level)
    # Per-session provider lines are debug detail; warnings still show.
    logging.getLogger("mobileface.models.runtime").setLevel(logging.DEBUG if verbose
                                                     else max(level, logging.WARNING))


def run_main(run, args) -> int:
    """``run(args)`` with the exit codes every command line uses: its own on success or a
    failed run (0, 1), 2 with a one-line message for a user error, 130 on Ctrl-C."""
    from mobileface.errors import MobileFaceError

    try:
        return run(args)
    except (MobileFaceError, ValueError) as exc:
        log.error("error: %s", exc)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


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
