"""Is there a display a window can open on? Asked before anything tries to open one.

Both OpenCV's ``cv2.imshow`` (through the Qt 5 that opencv-python bundles) and
the PyQt6 viewer abort the whole process when the display is missing or
unreachable, so apps/take_pic.py and :mod:`mobileface.gui.qtenv` ask here
first and turn the answer into one line that says what to do. No Qt, no cv2.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

#: where a local X server listens for display ":N"
X11_SOCKETS = Path("/tmp/.X11-unix")


def display_problem(environ=None, wayland: bool = True) -> str | None:
    """None when a window can open here, else why not (a few words, for a message).

    Only Linux is checked (elsewhere the system's window server is always there).
    ``wayland`` False: a Wayland session does not count, for a client that will
    speak X11 only (Qt told QT_QPA_PLATFORM=xcb).
    """
    environ = os.environ if environ is None else environ
    if not sys.platform.startswith("linux"):
        return None
    if wayland and environ.get("WAYLAND_DISPLAY"):
        return None
    display = environ.get("DISPLAY", "")
    if not display:
        return "DISPLAY is not set"
    if display.startswith(":"):  # a local X server listens on its socket
        number = display[1:].split(".")[0]
        if not (X11_SOCKETS / f"X{number}").exists():
            return f"no X server at DISPLAY={display}"
    return None  # a remote display (host:N): only connecting would tell
