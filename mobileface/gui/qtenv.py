"""Getting Qt's platform plugin to start on Linux, whatever opencv-python did on import.

opencv-python's Linux wheels bundle their own Qt 5 (for ``cv2.imshow``) and,
when ``cv2`` is first imported, set two variables for it (cv2/config-3.py):

* ``QT_QPA_PLATFORM_PLUGIN_PATH`` -> ``.../cv2/qt/plugins``
* ``QT_QPA_FONTDIR`` -> ``.../cv2/qt/fonts`` (a folder the wheel does not ship)

Qt 6 reads them when the QApplication is created, whatever the order of the
imports, and looks for its platform plugin in cv2's folder first. There it
finds Qt 5's ``libqxcb.so``: Qt 6 skips it, but when its own xcb plugin
cannot be loaded either (most often because a system library such as
``libxcb-cursor0`` is missing), the fatal message names cv2's folder and
the process aborts. Without a display it aborts as well.

:func:`prepare` is called before the QApplication exists: it imports cv2
(so that its side effect has happened), removes the two variables when they
point into cv2's package (a user's own values are kept), and checks up front
what would otherwise abort inside Qt, returning one line that says what to do.
No Qt is imported here except QtCore, to find Qt's plugin folder.
"""
from __future__ import annotations

import ctypes
import logging
import os
import sys
from pathlib import Path

from mobileface.io.display import display_problem

log = logging.getLogger(__name__)

#: what cv2 sets on import
CV2_VARIABLES = ("QT_QPA_PLATFORM_PLUGIN_PATH", "QT_QPA_FONTDIR")
#: Debian/Ubuntu packages Qt 6's xcb plugin needs beyond a minimal X11 client
XCB_PACKAGES = ("libxcb-cursor0", "libxcb-icccm4", "libxcb-keysyms1", "libxcb-image0",
                "libxcb-render-util0", "libxkbcommon-x11-0", "libegl1")


class QtStartError(Exception):
    """Qt's platform plugin cannot start; the message says what to do (one line)."""


def remove_cv2_variables(environ=None) -> list[str]:
    """Drop the Qt variables that point into cv2's package; returns the names removed."""
    environ = os.environ if environ is None else environ
    try:
        import cv2
    except ImportError:  # pragma: no cover - cv2 is a requirement
        return []
    package = Path(cv2.__file__).resolve().parent
    removed = []
    for name in CV2_VARIABLES:
        value = environ.get(name)
        if not value:
            continue
        try:
            inside = Path(value).resolve().is_relative_to(package)
        except (OSError, ValueError):
            inside = False
        if inside:
            del environ[name]
            removed.append(name)
            log.debug("removed %s=%s (set by opencv-python for its own Qt 5)", name, value)
    return removed


def platform_name(environ=None) -> str:
    """The platform plugin Qt will try first ("" when Qt chooses)."""
    environ = os.environ if environ is None else environ
    return environ.get("QT_QPA_PLATFORM", "").split(":")[0].split(";")[0].strip().lower()


def qt_plugin_folder() -> Path:
    from PyQt6.QtCore import QLibraryInfo

    return Path(QLibraryInfo.path(QLibraryInfo.LibraryPath.PluginsPath))


def check_xcb_plugin(plugin: Path) -> None:
    """Load Qt's xcb platform plugin as Qt would; QtStartError naming the missing library."""
    if not plugin.is_file():
        raise QtStartError(f"Qt's xcb platform plugin {plugin} is missing: reinstall PyQt6-Qt6")
    try:
        ctypes.CDLL(str(plugin), mode=os.RTLD_LAZY | os.RTLD_LOCAL)
    except OSError as exc:
        reason = str(exc).split(": ", 1)[-1] if ": " in str(exc) else str(exc)
        raise QtStartError(
            f"Qt's xcb platform plugin cannot be loaded ({reason}); install the X11 client "
            f"libraries Qt 6 needs (Debian/Ubuntu: apt-get install {' '.join(XCB_PACKAGES)}), "
            "or run with QT_QPA_PLATFORM=offscreen") from None


def check_display(environ=None, plugin_folder: Path | None = None) -> None:
    """On Linux, a display for the platform Qt will use (QtStartError if none)."""
    environ = os.environ if environ is None else environ
    if not sys.platform.startswith("linux"):
        return
    platform = platform_name(environ)
    if platform not in ("", "xcb"):
        return          # offscreen, wayland, eglfs, vnc...: Qt reports its own problems
    problem = display_problem(environ, wayland=platform == "")  # "": Qt may pick wayland
    if problem:
        raise QtStartError(f"no display ({problem}): run it on a desktop, under "
                           "xvfb-run, or with QT_QPA_PLATFORM=offscreen")
    if platform == "" and not environ.get("DISPLAY"):
        return          # Qt picks its wayland plugin
    folder = plugin_folder if plugin_folder is not None else qt_plugin_folder()
    check_xcb_plugin(folder / "platforms" / "libqxcb.so")


def prepare(environ=None) -> None:
    """Make the environment safe for creating the QApplication (QtStartError if it cannot start)."""
    remove_cv2_variables(environ)
    check_display(environ)
