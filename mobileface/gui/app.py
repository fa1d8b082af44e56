"""Starting the viewer: a clean Qt environment, the QApplication, the window."""
from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

from mobileface.cli.common import default_facebank
from mobileface.errors import MobileFaceError
from mobileface.gui.qtenv import QtStartError, prepare

log = logging.getLogger("mobileface")


def _validate(args) -> None:
    if args.threshold is not None and not 0.5 <= args.threshold <= 1.0:
        raise MobileFaceError(f"-th/--threshold must be in [0.5, 1] for the viewer, "
                              f"got {args.threshold}")
    if args.begin < 0 or not math.isfinite(args.begin):
        raise MobileFaceError(f"-b/--begin must be >= 0 seconds, got {args.begin}")
    if args.duration is not None and not args.duration > 0:
        raise MobileFaceError(f"-d/--duration must be > 0 seconds, got {args.duration}")
    if args.settings is not None and Path(args.settings).is_dir():
        raise MobileFaceError(f"--settings {args.settings} is a folder, not an .ini file")


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
    from PyQt6.QtCore import QSettings, QTimer

    from mobileface.gui.window import MainWindow

    app = application()
    settings = QSettings(str(args.settings), QSettings.Format.IniFormat) if args.settings \
        else QSettings("MobileFace", "viewer")
    try:
        window = MainWindow(settings, args.facebank or default_facebank(),
                            detector=args.detector, det_size=args.det_size,
                            threshold=args.threshold)
    except MobileFaceError as exc:
        log.error("error: %s", exc)
        return 2
    previous_hook = sys.excepthook
    sys.excepthook = window.report_unhandled    # PyQt6 would abort on an unhandled error
    try:
        window.show()
        if args.source:
            window.guard(lambda: window.start_source(args.source, args.begin, args.duration))()
        if args.quit_after is not None:
            QTimer.singleShot(int(1000 * args.quit_after), window.close)
        return app.exec()
    finally:
        sys.excepthook = previous_hook
