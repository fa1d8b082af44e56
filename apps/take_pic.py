"""Enrol a person into the facebank: from a camera, a stream, photos or a folder of photos.

    python apps/take_pic.py -n "Ada Lovelace"                   # camera 0: t or space captures, q quits
    python apps/take_pic.py -n "Ada Lovelace" -f 1 --count 3    # camera 1, three pictures
    python apps/take_pic.py -n "Ada Lovelace" --image ada.jpg --image ada2.jpg
    python apps/take_pic.py -n "Ada Lovelace" --folder photos/ada/
    python apps/take_pic.py -n "Ada Lovelace" -f clip.mp4 --auto --no-window

Each capture keeps the most confident face, checks its quality (refusing a
blurred, dark, small or strongly turned face, and saying why), saves the
aligned face into the facebank folder (FACEBANK/NAME/) and adds its embedding
to the SQLite facebank. Exit status: 0 when every picture was enrolled, 1 when
some could not be, 2 for bad arguments or setup, 130 on Ctrl-C.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mobileface.cli.common import (add_enhance_option, add_facebank_option, add_logging_options,
                                   add_model_options, analyzer_options, configure_logging,
                                   default_facebank, log, run_main)
from mobileface.errors import MobileFaceError
from mobileface.identity.enrol import MIN_ENROL_QUALITY

WINDOW = "take_pic: t or space captures, q or Esc quits"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python apps/take_pic.py",
                                     description="Enrol a person into the facebank.")
    parser.add_argument("-n", "--name", required=True, help="the person's name")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("-f", "--source", default="0",
                        help="camera index, stream URL or video file (default: camera 0)")
    source.add_argument("--image", action="append", metavar="FILE",
                        help="enrol from this photo (repeatable) instead of a camera")
    source.add_argument("--folder", metavar="DIR", help="enrol every photo in this folder")
    parser.add_argument("--count", type=int, default=1,
                        help="camera: how many pictures to take (default: 1)")
    parser.add_argument("--auto", action="store_true",
                        help="camera: capture by itself whenever the face is good enough")
    parser.add_argument("--no-window", action="store_true",
                        help="camera: show no live view (needs --auto)")
    parser.add_argument("--min-quality", type=float, default=MIN_ENROL_QUALITY,
                        help=f"refuse faces of lower quality (default: {MIN_ENROL_QUALITY})")
    add_enhance_option(parser, None, "auto for a camera, stream or video, off for --image "
                                     "and --folder")
    add_facebank_option(parser)
    add_model_options(parser)
    add_logging_options(parser)
    return parser


class Enrolment:
    """The enroller and the facebank, and what was enrolled so far (``stream``: the pictures
    are the frames of a camera, stream or video, whose low-light step follows the stream)."""

    def __init__(self, args, stream: bool = False):
        from mobileface.identity.enrol import FaceEnroller
        from mobileface.identity.facebank import check_name
        from mobileface.identity.store import open_facebank

        self.name = check_name(args.name)
        if not 0.0 <= args.min_quality <= 1.0:      # NaN too: qualities are in [0, 1]
            raise MobileFaceError(f"--min-quality is a quality in [0, 1], got {args.min_quality}")
        self.min_quality = args.min_quality
        options = analyzer_options(args)
        if stream:
            from mobileface.enhance.lowlight import LowLightEnhancer

            options["enhance"] = LowLightEnhancer(options["enhance"])   # with hysteresis
        self.enroller = FaceEnroller(**options)
        self.bank = open_facebank(args.facebank or default_facebank(), embedder=args.embedder,
                                  outlier_threshold=self.enroller.threshold)
        self.saved: list[str] = []

    def add(self, face, label: str) -> bool:
        """Enrol one face (already checked); False with a message when refused."""
        problem = face.problem(self.min_quality)
        if problem:
            log.error("%s: not enrolled: %s", label, problem)
            return False
        from mobileface.identity.enrol import store

        stem = "take_pic-" + time.strftime("%Y%m%d-%H%M%S")
        files = store(self.bank, self.name, [face.enrolment(stem)], self.enroller.model_id,
                      warn=log.warning)
        self.saved += files
        log.info("%s: enrolled as %s (quality %.2f) -> %s", label, self.name, face.quality,
                 self.bank.where_is(files[0]))
        return True


def enrol_photos(enrolment: Enrolment, paths: list[Path]) -> int:
    from mobileface.io.image import read_image

    failures = 0
    for path in paths:
        try:
            face = enrolment.enroller.embed_image(read_image(path), str(path), several="best")
        except MobileFaceError as exc:
            log.error("%s", exc)
            failures += 1
            continue
        if not enrolment.add(face, str(path)):
            failures += 1
    return failures


def folder_photos(folder: str) -> list[Path]:
    from mobileface.identity.facebank import IMAGE_SUFFIXES

    path = Path(folder)
    if not path.is_dir():
        raise MobileFaceError(f"{path}: no such folder")
    photos = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not photos:
        raise MobileFaceError(f"{path}: no photos ({', '.join(IMAGE_SUFFIXES)})")
    return photos


def enrol_camera(enrolment: Enrolment, args) -> int:
    import cv2

    from mobileface.io.display import display_problem
    from mobileface.io.video import VideoSource
    from mobileface.outputs.annotators import draw_status

    window = not args.no_window
    if not window and not args.auto:
        raise MobileFaceError("--no-window needs --auto (nothing could press the capture key)")
    problem = display_problem() if window else None  # OpenCV's Qt would abort the process
    if problem:
        raise MobileFaceError(f"no display for the live view ({problem}): use --auto "
                              "--no-window, or --image / --folder")
    source = VideoSource(args.source)
    wanted, last_capture = args.count, 0.0
    try:
        while len(enrolment.saved) < wanted:
            frame = source.read()
            if frame is None:
                break
            try:
                face = enrolment.enroller.embed_image(frame.image, source.label, several="best")
            except MobileFaceError:
                face = None
            capture = False
            if window:
                view = frame.image.copy()
                if face is not None:
                    x1, y1, x2, y2 = face.box.astype(int)
                    good = face.problem(enrolment.min_quality) is None
                    cv2.rectangle(view, (x1, y1), (x2, y2), (0, 200, 0) if good else (0, 0, 220), 2)
                status = (f"{enrolment.name}: {len(enrolment.saved)}/{wanted}  "
                          + (f"quality {face.quality:.2f}" if face else "no face"))
                try:
                    cv2.imshow(WINDOW, draw_status(view, status))
                    key = cv2.waitKey(1) & 0xFF
                except cv2.error as exc:  # an OpenCV build without a window backend
                    raise MobileFaceError("cannot show the live view (OpenCV: "
                                          f"{str(exc).strip().splitlines()[-1]}); use --auto "
                                          "--no-window, or --image / --folder") from None
                if key in (ord("q"), 27):
                    break
                capture = key in (ord("t"), ord(" "))
            if args.auto and face is not None and time.monotonic() - last_capture > 0.5:
                capture = face.problem(enrolment.min_quality) is None
            if not capture:
                continue
            if face is None:
                log.error("no face to capture")
                continue
            if enrolment.add(face, f"{source.label} frame {frame.index}"):
                last_capture = time.monotonic()
    finally:
        source.close()
        if window:
            try:
                cv2.destroyAllWindows()
            except cv2.error:
                pass
    if len(enrolment.saved) < wanted:
        log.error("%d of %d picture(s) taken from %s", len(enrolment.saved), wanted, source.label)
        return 1
    return 0


def run(args) -> int:
    if args.count < 1:
        raise MobileFaceError("--count must be at least 1")
    photos = [Path(p) for p in args.image] if args.image else \
        folder_photos(args.folder) if args.folder else None
    if args.enhance is None:      # a camera's frames may be dark; photos are taken as they are
        args.enhance = "auto" if photos is None else "off"
    enrolment = Enrolment(args, stream=photos is None)
    if photos is not None:
        failures = enrol_photos(enrolment, photos)
    else:
        failures = enrol_camera(enrolment, args)
    print(f"{enrolment.name}: {len(enrolment.saved)} picture(s) enrolled into "
          f"{enrolment.bank.location}")
    return 1 if failures else 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args)
    return run_main(run, args)


if __name__ == "__main__":
    sys.exit(main())
