"""Starting the viewer: a clean Qt environment, the QApplication, the window."""
from __future__ import annotations

import logging
import math
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

from mobileface.cli.common import check_detect_every, default_facebank
from mobileface.errors import MobileFaceError
from mobileface.gui import THRESHOLD_RANGE
from mobileface.gui.qtenv import QtStartError, prepare

log = logging.getLogger("mobileface")


def _validate(args) -> None:
    low, high = THRESHOLD_RANGE
    if args.threshold is not None and not low <= args.threshold <= high:
        raise MobileFaceError(f"-th/--threshold must be in [{low:g}, {high:g}] for the viewer, "
                              f"got {args.threshold}")
    if args.begin < 0 or not math.isfinite(args.begin):
        raise MobileFaceError(f"-b/--begin must be >= 0 seconds, got {args.begin}")
    if args.duration is not None and not args.duration > 0:
        raise MobileFaceError(f"-d/--duration must be > 0 seconds, got {args.duration}")
    if args.settings is not None and Path(args.settings).is_dir():
        raise MobileFaceError(f"--settings {args.settings} is a folder, not a settings file")


def application():
    """The QApplication (created once, after :func:`.qtenv.prepare`)."""
    from PyQt6.QtWidgets import QApplication

    app = QApplication.instance()
    if app is None:
        app = QApplication([sys.argv[0] if sys.argv and sys.argv[0] else "mobileface-viewer"])
        app.setApplicationName("viewer")
        app.setOrganizationName("MobileFace")
    return app


def run(args) -> int:
    """Open the viewer and run it until its window closes; the exit status."""
    try:
        _validate(args)
        prepare()
    except (MobileFaceError, QtStartError) as exc:
        log.error("error: %s", exc)
        return 2
    from PyQt6.QtCore import QTimer

    from mobileface.gui.settings import ViewerSettings
    from mobileface.gui.window import MainWindow

    app = application()
    try:
        check_detect_every(args.detect_every)
        window = MainWindow(ViewerSettings(args.settings), args.facebank or default_facebank(),
                            detector=args.detector, det_size=args.det_size,
                            threshold=args.threshold, enhance=args.enhance,
                            precision=args.precision, detect_every=args.detect_every)
    except MobileFaceError as exc:
        log.error("error: %s", exc)
        return 2
    previous_hook = sys.excepthook
    sys.excepthook = window.report_unhandled    # PyQt6 would abort on an unhandled error
    received: list[int] = []
    try:
        window.show()
        if args.source:
            window.guard(lambda: window.start_source(args.source, args.begin, args.duration))()
        if args.quit_after is not None:
            QTimer.singleShot(int(1000 * args.quit_after), window.close)
        with _close_on_signals(window, received):
            code = app.exec()
    finally:
        sys.excepthook = previous_hook
    if received:
        log.error("interrupted by %s: the viewer closed", signal.Signals(received[0]).name)
        return 128 + received[0]
    return code


@contextmanager
def _close_on_signals(window, received: list[int]):
    """SIGTERM, SIGHUP and Ctrl-C close the window as its close button does (runs stop,
    the facebank service ends, the settings are saved) instead of killing the process;
    the first one is appended to ``received``, for the exit status.

    Python runs signal handlers only between its own bytecodes, and Qt's event loop is
    C++: a timer gives the interpreter a moment five times a second.
    """
    from PyQt6.QtCore import QTimer

    from mobileface.pipeline.runner import on_signals

    def close(signum: int) -> None:
        if not received:
            received.append(signum)
        QTimer.singleShot(0, window.close)

    poke = QTimer()
    poke.timeout.connect(lambda: None)
    poke.start(200)
    try:
        with on_signals(close):
            yield
    finally:
        poke.stop()
