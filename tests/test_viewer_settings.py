"""The viewer's settings file: JSON of plain values, checked on read, never unpickled.

PyQt's QSettings unpickled ``@Variant(... PyQt_PyObject ...)`` entries of the file it
parsed, so a crafted settings file ran code when the viewer started. The payloads
here would create a marker file if anything unpickled them.
"""
from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from mobileface.gui.settings import MAX_BYTES, ViewerSettings, default_path

SETTINGS_LOGGERS = ("mobileface.gui.settings", "mobileface.gui.window")


@pytest.fixture
def warnings():
    """The warning lines about the settings, whatever the loggers above were set to."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Keep(logging.WARNING)
    loggers = [logging.getLogger(name) for name in SETTINGS_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)
    yield lambda: [r for r in records if "viewer settings" in r.getMessage()]
    for logger, level in zip(loggers, levels):
        logger.removeHandler(handler)
        logger.setLevel(level)


def _one_line(records) -> str:
    (record,) = records
    assert record.exc_info is None
    message = record.getMessage()
    assert "\n" not in message and "Traceback" not in message
    return message


# -- the store ----------------------------------------------------------------------------


def test_values_round_trip_and_the_file_is_plain_json(tmp_path, warnings):
    path = tmp_path / "conf" / "viewer.json"
    s = ViewerSettings(path)
    s.set("detector", "mtcnn")
    s.set("det_size", 320)
    s.set("threshold", 0.875)
    s.set("overlay.boxes", False)
    s.set("recent_sources", ["rtsp://cam/1", "", "clip.mp4"])
    s.set_data("window_geometry", b"\x01\xd9\xd0\xcb\x00\x03")
    assert s.save()
    assert json.loads(path.read_text())["window_geometry"] == "AdnQywAD"
    again = ViewerSettings(path)
    assert again.text("detector", "retinaface", ("retinaface", "mtcnn")) == "mtcnn"
    assert again.integer("det_size", 480, (320, 480, 640)) == 320
    assert again.number("threshold", 0.92, 0.5, 1.0) == 0.875
    assert again.flag("overlay.boxes", True) is False
    assert again.texts("recent_sources", 10) == ["rtsp://cam/1", "clip.mp4"]
    assert again.data("window_geometry") == b"\x01\xd9\xd0\xcb\x00\x03"
    assert sorted(p.name for p in path.parent.iterdir()) == ["viewer.json"]   # no temp left
    assert warnings() == []


BAD_VALUES = [
    ("window_geometry", 5, lambda s: s.data("window_geometry"), None),
    ("window_geometry", "@Variant(\\0\\0\\0\\x7f\\0\\0\\0\\x18PyQt_PyObject)",
     lambda s: s.data("window_geometry"), None),
    ("det_size", "zz", lambda s: s.integer("det_size", 480, (320, 480, 640)), 480),
    ("det_size", True, lambda s: s.integer("det_size", 480, (320, 480, 640)), 480),
    ("det_size", 333, lambda s: s.integer("det_size", 480, (320, 480, 640)), 480),
    ("threshold", 1.5, lambda s: s.number("threshold", 0.92, 0.5, 1.0), 0.92),
    ("threshold", float("nan"), lambda s: s.number("threshold", 0.92, 0.5, 1.0), 0.92),
    ("threshold", "0.9", lambda s: s.number("threshold", 0.92, 0.5, 1.0), 0.92),
    ("threshold", {"py/object": "os.system"}, lambda s: s.number("threshold", 0.92, 0.5, 1.0),
     0.92),
    ("detector", "yolo", lambda s: s.text("detector", "retinaface", ("retinaface", "mtcnn")),
     "retinaface"),
    ("overlay.boxes", "yes", lambda s: s.flag("overlay.boxes", True), True),
    ("recent_sources", "rtsp://cam", lambda s: s.texts("recent_sources", 10), []),
    ("recent_sources", ["ok", 3], lambda s: s.texts("recent_sources", 10), []),
]


@pytest.mark.parametrize("key, value, read, default", BAD_VALUES,
                         ids=[f"{k}={v!r}"[:40] for k, v, _, _ in BAD_VALUES])
def test_a_corrupt_value_falls_back_to_its_default_with_one_warning(key, value, read, default,
                                                                    tmp_path, warnings):
    path = tmp_path / "viewer.json"
    path.write_text(json.dumps({key: value, "det_size": 640} if key != "det_size"
                               else {key: value}))
    s = ViewerSettings(path)
    got = read(s)
    assert got == default or (isinstance(default, float) and math.isclose(got, default))
    assert key in _one_line(warnings())
    read(s)
    assert len(warnings()) == 1                       # once, not at every read
    if key != "det_size":                             # the good value next to it is kept
        assert s.integer("det_size", 480, (320, 480, 640)) == 640
    s.save()
    assert key not in json.loads(path.read_text())    # the next save drops it


@pytest.mark.parametrize("content", [b"not json {", b"[1, 2, 3]", b'"a string"', b"\xff\xfe\x00",
                                     b"[" * 100_000, b"\x80\x04\x95 pickle"],
                         ids=["not-json", "list", "string", "not-utf8", "deep", "pickle"])
def test_a_file_that_is_not_a_json_object_gives_the_defaults_with_one_warning(content, tmp_path,
                                                                              warnings):
    path = tmp_path / "viewer.json"
    path.write_bytes(content)
    s = ViewerSettings(path)
    assert s.number("threshold", 0.92, 0.5, 1.0) == 0.92
    assert s.flag("realtime", True) is True
    assert str(path) in _one_line(warnings())
    s.set("threshold", 0.8)
    assert s.save()
    assert json.loads(path.read_text()) == {"threshold": 0.8}


def test_a_huge_file_is_not_read(tmp_path, warnings):
    path = tmp_path / "viewer.json"
    path.write_text(json.dumps({"recent_sources": ["x" * 100] * (MAX_BYTES // 100)}))
    assert ViewerSettings(path).texts("recent_sources", 10) == []
    assert "larger than" in _one_line(warnings())


def test_no_file_is_the_defaults_without_a_word(tmp_path, warnings):
    s = ViewerSettings(tmp_path / "nothing" / "viewer.json")
    assert s.text("detector", "retinaface") == "retinaface" and s.data("window_geometry") is None
    assert warnings() == []


def test_the_default_file_is_in_the_xdg_config_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert default_path() == tmp_path / "xdg" / "mobileface" / "viewer.json"
    assert ViewerSettings().path == default_path()
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_path() == tmp_path / "home" / ".config" / "mobileface" / "viewer.json"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/ignored")      # the spec: ignore it
    assert default_path() == tmp_path / "home" / ".config" / "mobileface" / "viewer.json"


def test_a_failed_save_keeps_the_old_file_whole_and_warns_once(tmp_path, monkeypatch, warnings):
    path = tmp_path / "viewer.json"
    path.write_text('{"threshold": 0.8}')
    s = ViewerSettings(path)
    s.set("threshold", 0.9)

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    assert not s.save()
    s.set("threshold", 0.95)
    assert not s.save()
    assert "No space left on device" in _one_line(warnings())
    assert json.loads(path.read_text()) == {"threshold": 0.8}
    assert [p.name for p in tmp_path.iterdir()] == ["viewer.json"]     # no temp left
    monkeypatch.undo()
    assert s.save() and json.loads(path.read_text()) == {"threshold": 0.95}


def test_a_folder_that_cannot_be_made_is_one_warning(tmp_path, warnings):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    s = ViewerSettings(blocker / "viewer.json")
    s.set("detector", "mtcnn")
    assert not s.save()
    assert "cannot be saved" in _one_line(warnings())


@pytest.mark.parametrize("value", [object(), {"a": 1}, float("inf"), b"bytes", [1, 2], None])
def test_only_plain_values_can_be_stored(value, tmp_path):
    with pytest.raises(TypeError, match="viewer settings hold str, int, float, bool"):
        ViewerSettings(tmp_path / "v.json").set("key", value)


# -- the window ------------------------------------------------------------------------------


def _pickle_payload_ini(path, marker) -> None:
    """An .ini whose entries QSettings would unpickle: each creates ``marker``."""
    from PyQt6.QtCore import QSettings

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    crafted = QSettings(str(path), QSettings.Format.IniFormat)
    for key in ("window/geometry", "pipeline/threshold", "source/recent"):
        crafted.setValue(key, Payload())
    crafted.sync()
    del crafted
    assert b"PyQt_PyObject" in path.read_bytes() and not marker.exists()


@pytest.fixture
def open_window(window_maker):
    return window_maker


def _viewer(args, env, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mobileface", "gui", "--quit-after", "0.5",
                           *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_a_pickled_payload_in_the_settings_file_runs_nothing(tmp_path):
    crafted, marker = tmp_path / "crafted.ini", tmp_path / "PWNED"
    _pickle_payload_ini(crafted, marker)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_CONFIG_HOME=str(tmp_path / "cfg"))
    done = _viewer(["--settings", str(crafted), "--facebank", str(tmp_path / "fb")], env)
    assert not marker.exists(), "the settings file's pickle was run"
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if "viewer settings" in line]
    assert len(warned) == 1 and "not a JSON settings file" in warned[0], done.stderr
    assert "Traceback" not in done.stderr
    assert json.loads(crafted.read_text())["detector"] == "retinaface"     # replaced by JSON


def test_the_old_default_qsettings_file_is_never_read(tmp_path):
    """QSettings("MobileFace", "viewer") read $XDG_CONFIG_HOME/MobileFace/viewer.conf."""
    config, marker = tmp_path / "cfg", tmp_path / "PWNED"
    (config / "MobileFace").mkdir(parents=True)
    _pickle_payload_ini(config / "MobileFace" / "viewer.conf", marker)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_CONFIG_HOME=str(config),
               HOME=str(tmp_path / "home"))
    done = _viewer(["--facebank", str(tmp_path / "fb")], env)
    assert not marker.exists(), "the old QSettings file was unpickled"
    assert done.returncode == 0, done.stderr
    assert "viewer settings" not in done.stderr
    assert json.loads((config / "mobileface" / "viewer.json").read_text())["det_size"] == 480


def test_a_qsettings_is_refused_never_read(tmp_path):
    from PyQt6.QtCore import QSettings

    from mobileface.gui.window import settings_store

    crafted, marker = tmp_path / "old.ini", tmp_path / "PWNED"
    _pickle_payload_ini(crafted, marker)
    with pytest.raises(TypeError, match="ViewerSettings or a path"):
        settings_store(QSettings(str(crafted), QSettings.Format.IniFormat))
    assert not marker.exists()


def test_variant_strings_and_objects_in_the_json_file_are_only_bad_values(open_window, tmp_path,
                                                                         warnings):
    marker = tmp_path / "PWNED"
    variant = ("@Variant(\\0\\0\\0\\x7f\\0\\0\\0\\x18PyQt_PyObject\\0\\0\\0\\0\\x32\\x80\\x4"
               f"\\x8c\\x2io\\x8c\\x4open\\x93\\x8c\\r{marker}\\x8c\\x1w\\x86R.)")
    path = tmp_path / "viewer.json"
    path.write_text(json.dumps({"window_geometry": variant, "threshold": variant,
                                "detector": {"__reduce__": ["open", [str(marker), "w"]]}}))
    window = open_window(path)
    assert not marker.exists()
    assert window.threshold() == pytest.approx(0.92)
    assert window.detector_box.currentText() == "retinaface"
    assert len(warnings()) == 3


def test_corrupt_values_give_a_working_window_with_the_defaults(open_window, tmp_path, warnings):
    path = tmp_path / "viewer.json"
    path.write_text(json.dumps({"window_geometry": 5, "det_size": "zz", "threshold": 7,
                                "detector": 3, "overlay.landmarks": "yes", "realtime": 0,
                                "recent_sources": {"a": 1}}))
    window = open_window(path)
    assert window.error_text() == ""
    assert window.threshold() == pytest.approx(0.92)
    assert window.det_size_box.currentText() == "480"
    assert window.detector_box.currentText() == "retinaface"
    assert not window.overlay_options().landmarks and window.realtime_box.isChecked()
    assert window.source_box.count() == 0
    messages = [_one_line([r]) for r in warnings()]
    assert len(messages) == 7
    for key in ("window_geometry", "det_size", "threshold", "detector", "overlay.landmarks",
                "realtime", "recent_sources"):
        assert sum(key in m for m in messages) == 1, key
    saved = json.loads(path.read_text())          # rewritten at once with good values
    assert saved["det_size"] == 480 and saved["threshold"] == pytest.approx(0.92)


def test_geometry_that_qt_refuses_is_one_warning(open_window, tmp_path, warnings):
    path = tmp_path / "viewer.json"
    path.write_text(json.dumps({"window_geometry": "AAAAAAAAAAAAAAAA"}))
    open_window(path)
    assert "window_geometry" in _one_line(warnings())


def test_the_choices_round_trip_between_windows(open_window, tmp_path, warnings):
    path = tmp_path / "viewer.json"
    window = open_window(path)
    window.set_threshold(0.855)
    window.detector_box.setCurrentText("mtcnn")
    window.det_size_box.setCurrentText("640")
    window.overlay_boxes["pose_axes"].setChecked(True)
    window.overlay_boxes["labels"].setChecked(False)
    window.realtime_box.setChecked(False)
    window._remember_source("clip.mp4")
    window._remember_source("rtsp://camera.local/stream")
    window.resize(1290, 730)
    assert (window.width(), window.height()) == (1290, 730)
    window.close()

    again = open_window(path)
    assert again.threshold() == pytest.approx(0.855)
    assert again.detector_box.currentText() == "mtcnn"
    assert again.det_size_box.currentText() == "640"
    options = again.overlay_options()
    assert options.pose_axes and not options.labels and options.boxes
    assert not again.realtime_box.isChecked()
    assert [again.source_box.itemText(i) for i in range(again.source_box.count())] == \
        ["rtsp://camera.local/stream", "clip.mp4"]
    # the geometry came back (not the default 1360x800); Qt fits the width to the 800 px
    # offscreen screen, then to the window's minimum width
    assert again.height() == 730 and again.width() < 1290
    assert warnings() == []
