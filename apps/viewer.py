"""Desktop viewer: live face recognition on a camera, a video file or a stream (PyQt6).

    python apps/viewer.py                          # choose the source in the window
    python apps/viewer.py -f 0                     # camera 0, started at once
    python apps/viewer.py -f clip.mp4 -b 3 -d 10   # seconds 3 to 13 of a video
    python apps/viewer.py -f rtsp://host/stream --facebank people/

Also ``python -m mobileface gui``. Exit status: 0 when the window was closed,
2 when it could not start (bad options, no display, Qt cannot load).
"""
from __future__ import annotations

import sys

from mobileface.gui import main as gui_main


def main(argv=None) -> int:
    return gui_main(argv, prog="python apps/viewer.py")


if __name__ == "__main__":
    sys.exit(main())
