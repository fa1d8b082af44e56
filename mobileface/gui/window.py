"""The viewer's main window: source, video, tracks, facebank, unknown faces, settings.

Everything slow runs elsewhere: the pipeline in a :class:`.worker.RunThread`,
the facebank and enrolment in a :class:`.facebank_service.FacebankService`.
The window only draws what they send. Every slot goes through
:meth:`MainWindow.guard`, so that an unexpected error is shown in the window
instead of ending the application.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
from PyQt6.QtCore import QByteArray, QSize, Qt, QTimer
from PyQt6.QtGui import QIcon, QPixmap
from PyQt6.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QFormLayout, QGroupBox,
                             QHBoxLayout, QLabel, QLineEdit, QListWidget, QListWidgetItem,
                             QMainWindow, QPushButton, QSizePolicy, QSlider, QSplitter,
                             QTabWidget, QVBoxLayout, QWidget)

from mobileface.enhance import ENHANCE_MODES
from mobileface.outputs.annotators import OverlayOptions
from mobileface.stages.embed.dlib_resnet import DLIB_THRESHOLD
from mobileface.errors import MobileFaceError
from mobileface.io.video import parse_source
from mobileface.gui import DET_SIZES, THRESHOLD_RANGE, VIEWER_DET_SIZE, VIEWER_DETECTORS
from mobileface.gui.facebank_service import FacebankService
from mobileface.identity.store import describe_url, is_database_url
from mobileface.gui.settings import ViewerSettings
from mobileface.gui.unknowns import UnknownFaces
from mobileface.gui.widgets import TrackTable, VideoView, face_at
from mobileface.pipeline.slot import LatestSlot
from mobileface.gui.worker import PipelineHolder, Progress, RunRequest, RunThread, to_qimage

log = logging.getLogger(__name__)

#: the threshold slider's step (its range, THRESHOLD_RANGE, is the command line's too)
THRESHOLD_STEP = 0.005
RECENT_SOURCES = 10
OVERLAYS = (("boxes", "Boxes", True), ("labels", "Names, ids, age and gender", True),
            ("show_scores", "Similarity scores", False), ("landmarks", "68 points", False),
            ("pose_axes", "Head-pose axes", False))
IMAGE_FILTER = "Images (*.jpg *.jpeg *.png *.bmp *.webp *.tif *.tiff)"
VIDEO_FILTER = "Videos (*.mp4 *.avi *.mkv *.mov *.m4v *.webm);;All files (*)"


class MainWindow(QMainWindow):
    """The viewer. ``settings`` keeps the choices between runs: a :class:`ViewerSettings`,
    the path of its JSON file, or None for the user's (tests give a temporary file)."""

    def __init__(self, settings: ViewerSettings | str | os.PathLike | None,
                 facebank: str | Path, detector: str | None = None,
                 det_size: int | None = None, threshold: float | None = None,
                 holder: PipelineHolder | None = None, enhance: str | None = None,
                 precision: str = "auto", detect_every: int | None = None):
        super().__init__()
        #: the detector on at least every this many frames (--detect-every; None: the default)
        self.detect_every = detect_every
        #: model precision of every run (--precision): auto, fp32 or int8
        self.precision = precision
        self.settings = settings_store(settings)
        #: the facebank: a folder (a Path) or a postgresql:// URL (a str)
        self.facebank_folder = facebank if is_database_url(facebank) else Path(facebank)
        self.setWindowTitle("MobileFace viewer")
        #: keeps the loaded pipeline between runs (windows may share one, one run at a time)
        self.holder = holder or PipelineHolder()
        #: cameras and streams: reconnection attempts before a disconnect is an error
        self.reconnect_attempts = 5
        self.mailbox = LatestSlot()
        self.thread: RunThread | None = None
        self.threads: list[RunThread] = []     # ended ones wait here until they are finished
        self.run_id = 0
        self.latest = None                      # the ViewFrame on screen
        #: seconds from the capture of the frame on screen to its display (live sources)
        self.shown_latency: float | None = None
        #: this run's frames that came to the window too late to be shown (max_latency)
        self.late_frames = 0
        self.people: list = []
        self.errors: list[str] = []             # every error shown, oldest first
        self.last_stats = None
        self._pending = None
        self._build()
        self._load_settings(detector, det_size, threshold, enhance)
        self.unknowns = UnknownFaces(self.threshold())
        self._unknown_groups = []
        self._regroup_timer = QTimer(self)
        self._regroup_timer.setSingleShot(True)
        self._regroup_timer.setInterval(300)
        self._regroup_timer.timeout.connect(self.guard(self._show_unknowns))
        self.service = FacebankService(self.facebank_folder)
        self.service.people.connect(self.guard(self._show_people, with_args=True))
        self.service.message.connect(self.guard(self.show_message, with_args=True))
        self.service.changed.connect(self.guard(self._facebank_changed))
        self.service.enrolledShots.connect(self.guard(self._shots_enrolled, with_args=True))
        self.service.start()
        self._set_running(False)

    # -- building -----------------------------------------------------------------------

    def _build(self) -> None:
        central = QWidget()
        left = QVBoxLayout()
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Source:"))
        self.source_box = QComboBox()
        self.source_box.setEditable(True)
        self.source_box.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.source_box.lineEdit().setPlaceholderText("camera index (0), video file or "
                                                      "rtsp:// / http:// URL")
        self.source_box.setToolTip("A camera index (0, 1...), a video file, or an RTSP/HTTP URL")
        bar.addWidget(self.source_box, 1)
        self.file_button = QPushButton("File…")
        self.start_button = QPushButton("Start")
        self.pause_button = QPushButton("Pause")
        self.pause_button.setCheckable(True)
        self.stop_button = QPushButton("Stop")
        for button in (self.file_button, self.start_button, self.pause_button, self.stop_button):
            bar.addWidget(button)
        self.file_button.clicked.connect(self.guard(self._choose_file))
        self.start_button.clicked.connect(self.guard(lambda: self.start_source(
            self.source_box.currentText())))
        self.source_box.lineEdit().returnPressed.connect(self.guard(lambda: self.start_source(
            self.source_box.currentText())))
        self.pause_button.toggled.connect(self.guard(self.set_paused, with_args=True))
        self.stop_button.clicked.connect(self.guard(self.stop))
        left.addLayout(bar)

        self.error_label = _Banner()
        self.error_label.setToolTip("click to dismiss")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("QLabel { background: #b3261e; color: white; "
                                       "padding: 6px; border-radius: 3px; }")
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label.hide()
        left.addWidget(self.error_label)

        self.video = VideoView()
        self.video.clicked.connect(self.guard(self._video_clicked, with_args=True))
        left.addWidget(self.video, 1)
        self.stats_label = QLabel("idle")
        self.stats_label.setStyleSheet("QLabel { font-family: monospace; }")
        left.addWidget(self.stats_label)
        left_widget = QWidget()
        left_widget.setLayout(left)

        right = QSplitter(Qt.Orientation.Vertical)
        tracks_box = QGroupBox("Tracks")
        tracks_layout = QVBoxLayout(tracks_box)
        self.track_table = TrackTable()
        self.track_table.trackSelected.connect(self.guard(self.select_track, with_args=True))
        tracks_layout.addWidget(self.track_table)
        enrol_row = QHBoxLayout()
        enrol_row.addWidget(QLabel("Name:"))
        self.enrol_name = self._name_box("a new or an enrolled name")
        enrol_row.addWidget(self.enrol_name, 1)
        self.enrol_button = QPushButton("Enrol selected face")
        self.enrol_button.setToolTip("Click a face in the video or a row above, then enrol it "
                                     "under this name (its quality is checked first)")
        self.enrol_button.clicked.connect(self.guard(lambda: self.enrol_selected(
            self.enrol_name.currentText())))
        enrol_row.addWidget(self.enrol_button)
        tracks_layout.addLayout(enrol_row)
        right.addWidget(tracks_box)

        self.tabs = QTabWidget()
        self.tabs.addTab(self._build_facebank_tab(), "Facebank")
        self.tabs.addTab(self._build_unknown_tab(), "Unknown faces")
        self.tabs.addTab(self._build_settings_tab(), "Settings")
        lower = QWidget()
        lower_layout = QVBoxLayout(lower)
        lower_layout.setContentsMargins(0, 0, 0, 0)
        lower_layout.addWidget(self.tabs, 1)
        self.message_label = QLabel()
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lower_layout.addWidget(self.message_label)
        right.addWidget(lower)
        right.setStretchFactor(0, 2)
        right.setStretchFactor(1, 3)

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(left_widget)
        self.splitter.addWidget(right)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        layout = QHBoxLayout(central)
        layout.addWidget(self.splitter)
        self.setCentralWidget(central)
        self.resize(1360, 800)

    def _name_box(self, placeholder: str) -> QComboBox:
        box = QComboBox()
        box.setEditable(True)
        box.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        box.lineEdit().setPlaceholderText(placeholder)
        box.setMinimumWidth(160)
        return box

    def _build_facebank_tab(self) -> QWidget:
        tab = QWidget()
        layout = QVBoxLayout(tab)
        self.facebank_label = QLabel(
            f"Database: {describe_url(self.facebank_folder)}" if is_database_url(
                self.facebank_folder) else f"Folder: {self.facebank_folder.resolve()}")
        self.facebank_label.setWordWrap(True)
        layout.addWidget(self.facebank_label)
        self.people_list = QListWidget()
        self.people_list.setIconSize(QSize(56, 56))
        self.people_list.setSpacing(2)
        layout.addWidget(self.people_list, 1)
        row = QHBoxLayout()
        row.addWidget(QLabel("Name:"))
        self.person_name = QLineEdit()
        self.person_name.setPlaceholderText("for new photos, or the selected person's new name")
        row.addWidget(self.person_name, 1)
        layout.addLayout(row)
        buttons = QHBoxLayout()
        self.add_photos_button = QPushButton("Add photos…")
        self.add_photos_button.setToolTip("Enrol photos (one face each) under the name above; "
                                          "with no name, each photo under its file name")
        self.rename_button = QPushButton("Rename")
        self.rename_button.setToolTip("Rename the selected person to the name above")
        self.remove_button = QPushButton("Remove")
        self.remove_button.setToolTip("Remove the selected person (their photos move to .trash)")
        for button in (self.add_photos_button, self.rename_button, self.remove_button):
            buttons.addWidget(button)
        self.add_photos_button.clicked.connect(self.guard(self._choose_photos))
        self.rename_button.clicked.connect(self.guard(lambda: self.rename_person(
            self.selected_person(), self.person_name.text())))
        self.remove_button.clicked.connect(self.guard(lambda: self.remove_person(
            self.selected_person())))
        layout.addLayout(buttons)
        return tab

    def _build_unknown_tab(self) -> QWidget:
        tab = QWidget()
        layout = QVBoxLayout(tab)
        layout.addWidget(QLabel("Best shots of faces nobody is enrolled as, grouped by "
                                "similarity. Select a group, type a name, enrol them all."))
        self.unknown_list = QListWidget()
        self.unknown_list.setIconSize(QSize(4 * 56, 56))
        layout.addWidget(self.unknown_list, 1)
        row = QHBoxLayout()
        row.addWidget(QLabel("Name:"))
        self.group_name = self._name_box("a new or an enrolled name")
        row.addWidget(self.group_name, 1)
        self.enrol_group_button = QPushButton("Enrol group")
        self.clear_unknown_button = QPushButton("Clear")
        row.addWidget(self.enrol_group_button)
        row.addWidget(self.clear_unknown_button)
        self.enrol_group_button.clicked.connect(self.guard(lambda: self.enrol_group(
            self.unknown_list.currentRow(), self.group_name.currentText())))
        self.clear_unknown_button.clicked.connect(self.guard(self._clear_unknowns))
        layout.addLayout(row)
        return tab

    def _build_settings_tab(self) -> QWidget:
        tab = QWidget()
        form = QFormLayout(tab)
        slider_row = QHBoxLayout()
        self.threshold_slider = QSlider(Qt.Orientation.Horizontal)
        lo, hi = THRESHOLD_RANGE
        self.threshold_slider.setRange(0, round((hi - lo) / THRESHOLD_STEP))
        self.threshold_label = QLabel()
        self.threshold_label.setMinimumWidth(48)
        slider_row.addWidget(self.threshold_slider, 1)
        slider_row.addWidget(self.threshold_label)
        self.threshold_slider.valueChanged.connect(self.guard(self._threshold_moved))
        form.addRow("Match threshold:", slider_row)
        form.addRow("", QLabel("cosine similarity a face must reach to be named "
                               f"(default {DLIB_THRESHOLD:.2f}); applies at once"))
        self.detector_box = QComboBox()
        self.detector_box.addItems(VIEWER_DETECTORS)
        form.addRow("Detector:", self.detector_box)
        self.det_size_box = QComboBox()
        self.det_size_box.addItems([str(s) for s in DET_SIZES])
        form.addRow("Detector input:", self.det_size_box)
        form.addRow("", QLabel("the detector applies at the next Start"))
        self.overlay_boxes: dict[str, QCheckBox] = {}
        for key, text, _ in OVERLAYS:
            box = QCheckBox(text)
            box.toggled.connect(self.guard(self._overlay_changed))
            self.overlay_boxes[key] = box
            form.addRow("Overlay:" if key == OVERLAYS[0][0] else "", box)
        self.realtime_box = QCheckBox("Play video files at their frame rate")
        self.realtime_box.toggled.connect(self.guard(self._save_settings))
        form.addRow("Playback:", self.realtime_box)
        self.enhance_box = QComboBox()
        self.enhance_box.addItems(ENHANCE_MODES)
        self.enhance_box.currentTextChanged.connect(self.guard(self._enhance_changed))
        form.addRow("Low-light enhancement:", self.enhance_box)
        form.addRow("", QLabel("auto: only frames that are dark; applies at once"))
        self.show_enhanced_box = QCheckBox("Show the enhanced frame")
        self.show_enhanced_box.toggled.connect(self.guard(self._enhance_changed))
        form.addRow("", self.show_enhanced_box)
        self.detector_box.currentTextChanged.connect(self.guard(self._save_settings))
        self.det_size_box.currentTextChanged.connect(self.guard(self._save_settings))
        return tab

    # -- settings ---------------------------------------------------------------------------

    def _load_settings(self, detector, det_size, threshold, enhance=None) -> None:
        """The remembered choices, each checked by the store; the command line's win."""
        s = self.settings
        self._loading = True
        try:
            self.source_box.addItems(s.texts("recent_sources", RECENT_SOURCES))
            detector = detector or s.text("detector", VIEWER_DETECTORS[0], VIEWER_DETECTORS)
            self.detector_box.setCurrentText(detector if detector in VIEWER_DETECTORS
                                             else VIEWER_DETECTORS[0])
            det_size = det_size or s.integer("det_size", VIEWER_DET_SIZE, DET_SIZES)
            self.det_size_box.setCurrentText(str(det_size if det_size in DET_SIZES
                                                 else VIEWER_DET_SIZE))
            if threshold is None:
                threshold = s.number("threshold", DLIB_THRESHOLD, *THRESHOLD_RANGE)
            self.set_threshold(threshold)
            for key, _, default in OVERLAYS:
                self.overlay_boxes[key].setChecked(s.flag(f"overlay.{key}", default))
            self.realtime_box.setChecked(s.flag("realtime", True))
            self.enhance_box.setCurrentText(enhance or s.text("enhance", "auto", ENHANCE_MODES))
            self.show_enhanced_box.setChecked(s.flag("show_enhanced", False))
            self._restore_geometry(s.data("window_geometry"))
        finally:
            self._loading = False
        self._threshold_moved()
        self._save_settings()

    def _restore_geometry(self, geometry: bytes | None) -> None:
        """Qt checks the bytes itself; bytes it refuses leave the default size."""
        if geometry is not None and not self.restoreGeometry(QByteArray(geometry)):
            log.warning("viewer settings %s: window_geometry is not a saved window "
                        "geometry: using the default size", self.settings.path)

    def _save_settings(self) -> None:
        if getattr(self, "_loading", False):
            return
        s = self.settings
        s.set("recent_sources", [self.source_box.itemText(i)
                                 for i in range(self.source_box.count())])
        s.set("detector", self.detector_box.currentText())
        s.set("det_size", int(self.det_size_box.currentText()))
        s.set("threshold", self.threshold())
        for key, box in self.overlay_boxes.items():
            s.set(f"overlay.{key}", box.isChecked())
        s.set("realtime", self.realtime_box.isChecked())
        s.set("enhance", self.enhance_box.currentText())
        s.set("show_enhanced", self.show_enhanced_box.isChecked())
        s.set_data("window_geometry", bytes(self.saveGeometry()))
        s.save()

    def threshold(self) -> float:
        return round(THRESHOLD_RANGE[0] + self.threshold_slider.value() * THRESHOLD_STEP, 3)

    def set_threshold(self, value: float) -> None:
        lo, hi = THRESHOLD_RANGE
        if not lo <= value <= hi:
            raise MobileFaceError(f"the threshold must be in [{lo}, {hi}], got {value}")
        self.threshold_slider.setValue(round((value - lo) / THRESHOLD_STEP))

    def _threshold_moved(self, *_) -> None:
        value = self.threshold()
        self.threshold_label.setText(f"{value:.3f}")
        if self.thread is not None:
            self.thread.set_threshold(value)
        if hasattr(self, "unknowns"):
            self.unknowns.threshold = value
            self._regroup_timer.start()
        self._save_settings()

    def overlay_options(self) -> OverlayOptions:
        return OverlayOptions(**{k: b.isChecked() for k, b in self.overlay_boxes.items()})

    def _enhance_changed(self, *_) -> None:
        if self.thread is not None:
            self.thread.set_enhance(self.enhance_box.currentText())
            self.thread.set_show_enhanced(self.show_enhanced_box.isChecked())
        self._save_settings()

    def _overlay_changed(self, *_) -> None:
        if self.thread is not None:
            self.thread.set_overlay(self.overlay_options())
        self._save_settings()

    # -- guarding slots ------------------------------------------------------------------------

    def guard(self, function, with_args: bool = False):
        """A slot that shows an error in the window instead of raising into Qt."""
        def slot(*args):
            try:
                return function(*args) if with_args else function()
            except (MobileFaceError, ValueError) as exc:
                self.show_error(str(exc))
            except Exception as exc:
                self.report_exception(exc)
        return slot

    def report_exception(self, exc: BaseException) -> None:
        log.debug("unexpected error in the viewer", exc_info=exc)
        self.show_error(f"unexpected error: {type(exc).__name__}: {exc}")

    def report_unhandled(self, kind, value, traceback) -> None:
        """sys.excepthook while the window runs: show it, never abort."""
        if issubclass(kind, KeyboardInterrupt):
            self.close()
            return
        log.debug("unhandled error", exc_info=(kind, value, traceback))
        self.show_error(f"unexpected error: {kind.__name__}: {value}")

    # -- messages ------------------------------------------------------------------------------

    def show_error(self, text: str) -> None:
        """An error for the user, in the red banner above the video (and the log)."""
        log.error("%s", text)
        self.errors.append(text)
        self.error_label.setText(text)
        self.error_label.show()

    def clear_error(self) -> None:
        self.error_label.hide()
        self.error_label.clear()

    def error_text(self) -> str:
        """The error the window shows now ("" when none)."""
        return "" if self.error_label.isHidden() else self.error_label.text()

    def show_message(self, text: str, error: bool = False) -> None:
        """A facebank message under the tabs (errors in red)."""
        (log.warning if error else log.info)("%s", text)
        self.message_label.setStyleSheet("QLabel { color: #b3261e; }" if error
                                         else "QLabel { color: #1b5e20; }")
        self.message_label.setText(text)
        self.statusBar().showMessage(text, 8000)

    # -- running -----------------------------------------------------------------------------

    def _choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a video", "", VIDEO_FILTER)
        if path:
            self.source_box.setCurrentText(path)
            self.start_source(path)

    def start_source(self, text: str | int, begin: float = 0.0,
                     duration: float | None = None) -> None:
        """Run the pipeline on a camera index, a video file or a stream URL.

        A run still going is stopped first; the new one starts when its thread
        has ended (the window does not wait for it).
        """
        text = str(text).strip()
        if not text:
            raise MobileFaceError("choose a source first: a camera index (0), a video file "
                                  "or a stream URL")
        self._pending = (text, begin, duration)
        self.clear_error()
        self._remember_source(text)
        if self.thread is not None:
            self.stats_label.setText("stopping the current run…")
            self.stop()
            return
        self._start_pending()

    def _start_pending(self) -> None:
        text, begin, duration = self._pending
        self._pending = None
        self.run_id += 1
        self.mailbox.take()
        self.shown_latency, self.late_frames = None, 0
        request = RunRequest(source=parse_source(text), begin=begin, duration=duration,
                             detector=self.detector_box.currentText(),
                             det_size=int(self.det_size_box.currentText()),
                             precision=self.precision, detect_every=self.detect_every,
                             threshold=self.threshold(), facebank=self.facebank_folder,
                             realtime=self.realtime_box.isChecked(),
                             enhance=self.enhance_box.currentText(),
                             show_enhanced=self.show_enhanced_box.isChecked(),
                             reconnect_attempts=self.reconnect_attempts)
        thread = RunThread(self.run_id, request, self.holder, self.mailbox,
                           self.overlay_options())
        thread.frameReady.connect(self.guard(self._frame_ready))
        thread.progress.connect(self.guard(self._show_progress, with_args=True))
        thread.status.connect(self.guard(lambda text: self.statusBar().showMessage(text),
                                         with_args=True))
        thread.failed.connect(self.guard(self.show_error, with_args=True))
        thread.tracks.connect(self.guard(self._tracks, with_args=True))
        thread.ended.connect(self.guard(self._ended, with_args=True))
        thread.finished.connect(self.guard(lambda: self._thread_finished(thread)))
        self.thread = thread
        self.threads.append(thread)
        self.pause_button.setChecked(False)
        self._set_running(True)
        self.stats_label.setText(f"starting {text}…")
        thread.start()

    def _remember_source(self, text: str) -> None:
        items = [self.source_box.itemText(i) for i in range(self.source_box.count())]
        items = [text] + [i for i in items if i != text]
        self.source_box.blockSignals(True)
        self.source_box.clear()
        self.source_box.addItems(items[:RECENT_SOURCES])
        self.source_box.setCurrentIndex(0)
        self.source_box.blockSignals(False)
        self._save_settings()

    def stop(self) -> None:
        """Stop the run (it still finishes its tracks); its thread ends soon after."""
        if self.thread is not None:
            self.thread.stop()

    def set_paused(self, paused: bool) -> None:
        if self.thread is not None:
            self.thread.set_paused(bool(paused))
        self.pause_button.setText("Resume" if paused else "Pause")
        if self.pause_button.isChecked() != bool(paused):
            self.pause_button.setChecked(bool(paused))

    @property
    def running(self) -> bool:
        return self.thread is not None

    def _set_running(self, running: bool) -> None:
        self.pause_button.setEnabled(running)
        self.stop_button.setEnabled(running)
        if not running:
            self.pause_button.setChecked(False)
            self.pause_button.setText("Pause")

    def _ended(self, run_id: int, stats) -> None:
        """A run is over (its thread ends right after)."""
        if stats is not None:
            self.last_stats = stats
        self.unknowns.end_run(run_id)
        self._regroup_timer.start()
        if run_id != self.run_id or stats is None:
            return
        named = ", ".join(sorted(n for n in stats.identities if n != "Unknown")) or "nobody"
        self.stats_label.setText(f"ended: {stats.frames} frames in {stats.seconds:.1f} s, "
                                 f"{stats.tracks} tracks, named: {named}")
        self.statusBar().showMessage("stopped on an error" if stats.error else "stopped")

    def _thread_finished(self, thread: RunThread) -> None:
        if thread in self.threads:
            self.threads.remove(thread)
        if thread is self.thread:
            self.thread = None
            self._set_running(False)
        if self._pending is not None and self.thread is None:
            self._start_pending()

    def _show_progress(self, progress: Progress) -> None:
        # live: from capture to the screen, as measured here; files: to the writer
        latency = progress.latency if self.shown_latency is None else self.shown_latency
        text = (f"{progress.fps:5.1f} fps   latency {1000 * latency:4.0f} ms   "
                f"analysis {1000 * progress.analysis:4.0f} ms   frames {progress.frames}")
        if progress.dropped:
            text += f"   dropped {progress.dropped}"
        if progress.late + self.late_frames:
            text += f"   too late {progress.late + self.late_frames}"
        if self.thread is not None and self.thread.paused:
            text += "   (paused)"
        self.stats_label.setText(text)

    def _frame_ready(self) -> None:
        item = self.mailbox.take()
        if item is None or item.run != self.run_id:
            return
        now = time.perf_counter()
        if item.too_late(now):          # live: older than max_latency by now
            self.late_frames += 1
            return
        if item.show_until is not None:
            self.shown_latency = now - item.captured_at
        self.latest = item
        self.video.set_frame(item.view, self._selected_box())
        self.track_table.show_faces(item.result.faces)

    # -- selecting and enrolling a face ------------------------------------------------------

    @property
    def selected_track(self) -> int:
        return self.track_table.selected_track

    def _selected_row(self) -> int | None:
        if self.latest is None or self.selected_track <= 0:
            return None
        ids = self.latest.result.faces.track_id
        rows = np.flatnonzero(ids == self.selected_track) if ids is not None else []
        return int(rows[0]) if len(rows) else None

    def _selected_box(self):
        row = self._selected_row()
        return None if row is None else self.latest.result.faces.boxes[row]

    def select_track(self, track_id: int) -> None:
        self.track_table.select_track(int(track_id))
        self.video.set_highlight(self._selected_box())

    def _video_clicked(self, x: float, y: float) -> None:
        if self.latest is None:
            return
        faces = self.latest.result.faces
        row = face_at(faces.boxes, x, y)
        if row is None or faces.track_id is None or faces.track_id[row] <= 0:
            self.select_track(-1)
            return
        self.select_track(int(faces.track_id[row]))

    def enrol_selected(self, name: str) -> None:
        """Enrol the selected face of the frame on screen under ``name`` (checked first)."""
        if not name.strip():
            raise MobileFaceError("type the name to enrol the face under")
        row = self._selected_row()
        if row is None:
            raise MobileFaceError("select a face first: click it in the video or in the "
                                  "track list")
        item = self.latest
        faces = item.result.faces[[row]]
        self.show_message(f"enrolling track #{self.selected_track} as {name.strip()}…")
        self.service.call("enrol_face", name, item.image, faces, f"track #{self.selected_track}")

    # -- facebank ------------------------------------------------------------------------------

    def _show_people(self, people: list) -> None:
        self.people = people
        current = self.selected_person()
        self.people_list.clear()
        for person in people:
            text = f"{person.name}\n{person.images} picture(s)"
            if person.outliers:
                text += f", {person.outliers} flagged"
            item = QListWidgetItem(text)
            item.setData(Qt.ItemDataRole.UserRole, person.name)
            if person.thumbnail is not None:
                item.setIcon(QIcon(QPixmap.fromImage(person.thumbnail)))
            self.people_list.addItem(item)
            if person.name == current:
                self.people_list.setCurrentItem(item)
        names = [p.name for p in people]
        for box in (self.enrol_name, self.group_name):
            text = box.currentText()
            box.clear()
            box.addItems(names)
            box.setCurrentText(text)

    def people_names(self) -> list[str]:
        return [self.people_list.item(i).data(Qt.ItemDataRole.UserRole)
                for i in range(self.people_list.count())]

    def selected_person(self) -> str:
        item = self.people_list.currentItem()
        return item.data(Qt.ItemDataRole.UserRole) if item is not None else ""

    def _facebank_changed(self) -> None:
        if self.thread is not None:
            self.thread.reload_facebank()

    def _choose_photos(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Add photos", "", IMAGE_FILTER)
        if paths:
            self.add_photos(paths, self.person_name.text())

    def add_photos(self, paths: list[str], name: str = "") -> None:
        """Enrol photos under ``name`` (empty: each under its file name)."""
        self.show_message(f"enrolling {len(paths)} photo(s)…")
        self.service.call("add_files", name.strip(), [str(p) for p in paths])

    def rename_person(self, old: str, new: str) -> None:
        if not old:
            raise MobileFaceError("select the person to rename in the facebank list")
        if not new.strip():
            raise MobileFaceError("type the new name first")
        self.service.call("rename", old, new)

    def remove_person(self, name: str) -> None:
        if not name:
            raise MobileFaceError("select the person to remove in the facebank list")
        self.service.call("remove", name)

    # -- unknown faces ------------------------------------------------------------------------

    def _tracks(self, run_id: int, summaries: list, final: bool) -> None:
        if self.unknowns.update(run_id, summaries, final):
            if not self._regroup_timer.isActive():
                self._regroup_timer.start()

    def unknown_groups(self) -> list:
        return list(self._unknown_groups)

    def _show_unknowns(self) -> None:
        groups = self.unknowns.groups()
        previous = self.unknown_list.currentRow()
        previous_keys = set(self._unknown_groups[previous].keys) \
            if 0 <= previous < len(self._unknown_groups) else set()
        self._unknown_groups = groups
        self.unknown_list.clear()
        select = -1
        for g, group in enumerate(groups):
            shots = sorted(group.shots, key=lambda s: -s.quality)[:4]
            strip = np.hstack([_square(s.image) for s in shots])
            item = QListWidgetItem(f"{len(group.shots)} track(s)\n"
                                   f"best quality {group.best.quality:.2f}")
            item.setIcon(QIcon(QPixmap.fromImage(to_qimage(strip))))
            self.unknown_list.addItem(item)
            if previous_keys & set(group.keys) and select < 0:
                select = g
        if select >= 0:
            self.unknown_list.setCurrentRow(select)
        self.tabs.setTabText(1, f"Unknown faces ({len(groups)})" if groups else "Unknown faces")

    def enrol_group(self, index: int, name: str) -> None:
        """Enrol every best shot of unknown group ``index`` under ``name``."""
        if not 0 <= index < len(self._unknown_groups):
            raise MobileFaceError("select a group of unknown faces first")
        if not name.strip():
            raise MobileFaceError("type the name to enrol the group under")
        group = self._unknown_groups[index]
        self.show_message(f"enrolling {len(group.shots)} best shot(s) as {name.strip()}…")
        self.service.call("enrol_shots", name, [(s.key, s.image) for s in group.shots])

    def _shots_enrolled(self, keys: list) -> None:
        self.unknowns.remove(keys)
        self._show_unknowns()

    def _clear_unknowns(self) -> None:
        self.unknowns.clear()
        self._show_unknowns()

    # -- closing ---------------------------------------------------------------------------------

    def closeEvent(self, event) -> None:
        try:
            self._save_settings()
            self._pending = None
            for thread in self.threads:
                thread.stop()
            for thread in self.threads:
                if not thread.wait(30000):
                    log.error("the pipeline thread did not stop in time")
            self.service.shutdown()
        except Exception as exc:  # closing must close
            log.debug("error while closing", exc_info=exc)
        super().closeEvent(event)


def settings_store(settings) -> ViewerSettings:
    """The window's settings store from what its caller gave: a store, a JSON path or None
    (the user's). Never a QSettings: reading one is what unpickles (see :mod:`.settings`)."""
    if isinstance(settings, ViewerSettings):
        return settings
    if settings is None or isinstance(settings, (str, os.PathLike)):
        return ViewerSettings(settings)
    raise TypeError(f"settings: a ViewerSettings or a path, not {type(settings).__name__}")


class _Banner(QLabel):
    """The error line above the video; a click hides it."""

    def mousePressEvent(self, event) -> None:
        self.hide()


def _square(image: np.ndarray, size: int = 56) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    side = min(h, w)
    y, x = (h - side) // 2, (w - side) // 2
    return cv2.resize(image[y:y + side, x:x + side], (size, size), interpolation=cv2.INTER_AREA)
