"""Start the desktop viewer under Xvfb on a clip and save a PNG of the running window.

    python tools/screenshot_viewer.py -o viewer.png
    python tools/screenshot_viewer.py -f clip.mp4 -b 3.5 -d 6 --enrol "Ada=ada.jpg" -o viewer.png

Needs Xvfb (Debian: ``apt-get install xvfb``) unless --display names a running
X server. With no --facebank, a temporary facebank is used; each ``--enrol
NAME=PHOTO`` is enrolled into it through the window's facebank panel before the
clip starts, so that the names show. The defaults use the project's shared
test data (``$MOBILEFACE_SHARED`` or ../shared): seconds 3.5 to 9.5 of
short_hamilton_clip.mp4, with Lin-Manuel Miranda enrolled from his photo.
The window's settings go to a temporary viewer.json (the user's are not touched).
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mobileface.cli.common import add_logging_options, configure_logging, shared_data

log = logging.getLogger("mobileface")
CLIP = shared_data("face_recognition/short_hamilton_clip.mp4")
PHOTO = shared_data("face_recognition/lin-manuel-miranda.png")
TABS = {"facebank": 0, "unknown": 1, "settings": 2}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python tools/screenshot_viewer.py",
                                     description="A PNG of the viewer running on a clip, "
                                                 "under Xvfb.")
    parser.add_argument("-f", "--source", default=str(CLIP), help=f"video (default: {CLIP})")
    parser.add_argument("-b", "--begin", type=float, default=3.5, help="start, seconds")
    parser.add_argument("-d", "--duration", type=float, default=6.0, help="length, seconds")
    parser.add_argument("-o", "--output", default="viewer.png", help="the PNG to write")
    parser.add_argument("--enrol", action="append", metavar="NAME=PHOTO",
                        help="enrol this photo first (repeatable; default: Lin-Manuel Miranda "
                             "from the shared photos)")
    parser.add_argument("--facebank", metavar="DIR",
                        help="use this facebank folder (default: a temporary one)")
    parser.add_argument("--after", type=float, default=2.0,
                        help="seconds of video to let play before the shot (default: 2)")
    parser.add_argument("--tab", choices=tuple(TABS), default="facebank",
                        help="the tab to show on the right (default: facebank)")
    parser.add_argument("--size", default="1360x800", help="window size (default: 1360x800)")
    parser.add_argument("--display", help="use this running X display instead of Xvfb")
    add_logging_options(parser)
    return parser


def start_xvfb(width: int, height: int) -> tuple[subprocess.Popen, str]:
    """An Xvfb server on a free display number; (process, ":N")."""
    if shutil.which("Xvfb") is None:
        raise SystemExit("error: Xvfb is not installed (Debian: apt-get install xvfb)")
    read, write = os.pipe()
    process = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0",
                                f"{width + 40}x{height + 40}x24", "-nolisten", "tcp"],
                               pass_fds=(write,), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as pipe:
        number = pipe.readline().strip()
    if not number:
        process.kill()
        raise SystemExit("error: Xvfb did not start")
    return process, f":{number}"


def wait_until(app, condition, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        app.processEvents()
        if condition():
            return True
        time.sleep(step)
    app.processEvents()
    return condition()


def shoot(args, workdir: Path) -> int:
    from mobileface.gui.app import application
    from mobileface.gui.qtenv import QtStartError, prepare
    from mobileface.gui.window import MainWindow

    try:
        prepare()
    except QtStartError as exc:
        log.error("error: %s", exc)
        return 2
    app = application()
    width, height = (int(v) for v in args.size.lower().split("x"))
    facebank = Path(args.facebank) if args.facebank else workdir / "facebank"
    window = MainWindow(workdir / "viewer.json", facebank)
    window.overlay_boxes["pose_axes"].setChecked(True)
    window.resize(width, height)
    window.move(0, 0)
    window.show()
    enrol = args.enrol if args.enrol is not None else \
        ([f"Lin-Manuel Miranda={PHOTO}"] if PHOTO.is_file() else [])
    for entry in enrol:
        name, _, photo = entry.partition("=")
        if not photo:
            log.error("error: --enrol takes NAME=PHOTO, got %r", entry)
            return 2
        window.add_photos([photo], name)
        if not wait_until(app, lambda: name in window.people_names(), 60):
            log.error("error: %s was not enrolled: %s", name, window.message_label.text())
            return 1
    window.tabs.setCurrentIndex(TABS[args.tab])
    window.start_source(args.source, args.begin, args.duration)
    started = time.monotonic()
    if not wait_until(app, lambda: window.latest is not None, 60):
        log.error("error: no frame was shown: %s", window.error_text() or "timed out")
        return 1
    first = window.latest.timestamp
    wait_until(app, lambda: window.latest.timestamp - first >= args.after
               or window.thread is None, args.after + 60)
    rows = window.track_table.row_texts()
    if rows:
        window.select_track(int(rows[0]["ID"]))
    wait_until(app, lambda: False, 0.5)
    frame = window.frameGeometry()
    shot = window.screen().grabWindow(0, frame.x(), frame.y(), frame.width(), frame.height())
    if shot.isNull():
        shot = window.grab()
    output = Path(args.output)
    if not shot.save(str(output), "PNG"):
        log.error("error: cannot write %s", output)
        return 1
    log.info("saved %s (%dx%d) after %.1f s of video, %.1f s in all; tracks: %s",
             output, shot.width(), shot.height(), window.latest.timestamp - first,
             time.monotonic() - started,
             ", ".join(f"#{r['ID']} {r['Name']}" for r in rows) or "none")
    window.close()
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args)
    from mobileface.io.video import is_live

    files = ([] if is_live(args.source) else [Path(args.source)]) + ([] if args.enrol else [PHOTO])
    missing = [p for p in files if not p.is_file()]
    if missing:
        log.error("error: %s is absent: give -f and --enrol, or set MOBILEFACE_SHARED to the "
                  "shared test data folder", missing[0])
        return 2
    xvfb = None
    try:
        if args.display:
            os.environ["DISPLAY"] = args.display
        else:
            width, height = (int(v) for v in args.size.lower().split("x"))
            xvfb, display = start_xvfb(width, height)
            os.environ["DISPLAY"] = display
        os.environ["QT_QPA_PLATFORM"] = "xcb"
        with tempfile.TemporaryDirectory(prefix="viewer-shot-") as workdir:
            return shoot(args, Path(workdir))
    finally:
        if xvfb is not None:
            xvfb.terminate()
            xvfb.wait(10)


if __name__ == "__main__":
    sys.exit(main())
