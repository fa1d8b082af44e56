"""The desktop viewer, driven offscreen (QT_QPA_PLATFORM=offscreen, set in conftest).

Each test opens its own window with a temporary facebank and a temporary
settings file; the windows share one loaded pipeline (PipelineHolder), as
runs of one window do.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import cv2
import pytest

pytest.importorskip("PyQt6.QtWidgets")

from PyQt6.QtCore import QPoint, Qt  # noqa: E402
from PyQt6.QtTest import QTest  # noqa: E402
from PyQt6.QtWidgets import QApplication  # noqa: E402

from conftest import ROOT, shared_file  # noqa: E402
from mobileface.identity.enrol import MIN_ENROL_QUALITY, PART_MINIMUMS  # noqa: E402
from mobileface.identity.facebank import Facebank  # noqa: E402

LIN = "Lin-Manuel Miranda"
# seconds 3.5 to 7.0 of the Hamilton clip: his close-up (frames 105-210), nobody else
CLOSE_UP = (3.5, 3.0)


@pytest.fixture(scope="module")
def holder():
    from mobileface.gui.worker import PipelineHolder

    return PipelineHolder()


@pytest.fixture
def clip():
    return str(shared_file("face_recognition/short_hamilton_clip.mp4"))


@pytest.fixture
def lin_photo():
    return str(shared_file("face_recognition/lin-manuel-miranda.png"))


@pytest.fixture
def make_window(window_maker, holder, tmp_path):
    def make(realtime: bool = False, settings=None, **options):
        window = window_maker(settings or tmp_path / "viewer.json", holder, **options)
        window.realtime_box.setChecked(realtime)
        window.resize(1200, 700)
        return window

    return make


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        QApplication.processEvents()
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def settle(seconds: float) -> None:
    """Let events arrive for a while."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.02)


def names_on_screen(window) -> list[str]:
    faces = window.latest.result.faces if window.latest is not None else None
    return [] if faces is None or faces.identity is None else [str(n) for n in faces.identity]


def enrolable_row(window):
    """A tracked face of the frame on screen that passes the enrolment quality check."""
    faces = window.latest.result.faces if window.latest is not None else None
    if faces is None or faces.track_id is None:
        return None
    for row, tid in enumerate(faces.track_id):
        parts_ok = all(faces.extra[k][row] >= v for k, v in PART_MINIMUMS.items())
        if tid > 0 and parts_ok and faces.quality[row] >= MIN_ENROL_QUALITY + 0.05:
            return row
    return None


def click_face(window, row: int) -> None:
    """A mouse click on the centre of a face in the video."""
    x1, y1, x2, y2 = window.latest.result.faces.boxes[row]
    rect = window.video.image_rect()
    scale = rect.width() / window.latest.view.width()
    point = QPoint(round(rect.x() + (x1 + x2) / 2 * scale), round(rect.y() + (y1 + y2) / 2 * scale))
    QTest.mouseClick(window.video, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                     point)


def wait_ended(window, timeout=60):
    wait_until(lambda: window.thread is None, timeout, "the run to end")


def test_a_clip_shows_its_tracks_in_the_list(make_window, clip):
    window = make_window()
    start = time.perf_counter()
    window.start_source(clip, 3.5, 1.5)
    assert time.perf_counter() - start < 0.5, "starting must not wait for the models"
    rows = wait_until(lambda: window.track_table.row_texts(), 60, "a track in the list")
    row = rows[0]
    assert int(row["ID"]) >= 1 and row["Name"] == "Unknown"
    assert 10 < float(row["Age"]) < 80 and row["Gender"][0] in "MF"
    assert abs(float(row["Yaw"])) < 60 and 0 < float(row["Quality"]) <= 1
    assert window.latest.view.width() == 640 and window.video.image is not None
    wait_ended(window)
    assert window.error_text() == ""
    assert window.last_stats.frames == 45 and window.last_stats.error is None
    assert "ended: 45 frames" in window.stats_label.text()


def test_the_newest_frame_wins_and_the_window_never_queues_frames(make_window, clip):
    window = make_window(realtime=True)
    window.start_source(clip, 3.5, 3.0)
    wait_until(lambda: window.latest is not None, 60, "the first frame")
    signals = []
    window.thread.frameReady.connect(lambda: signals.append(1))
    replaced = window.mailbox.replaced
    time.sleep(1.0)                       # the UI thread is busy: no events for a second
    QApplication.processEvents()
    # frames went on being analysed, but only the newest one reached the window
    assert window.mailbox.replaced - replaced >= 5
    assert len(signals) <= 1
    progress = window.stats_label.text()
    assert "fps" in progress and "latency" in progress
    window.stop()
    wait_ended(window)


def test_an_enrolled_face_is_named_on_later_frames(make_window, clip, tmp_path):
    window = make_window(realtime=True)
    window.start_source(clip, *CLOSE_UP)
    for _ in range(20):
        wait_until(lambda: enrolable_row(window) is not None, 30, "a face good enough to enrol")
        window.set_paused(True)
        settle(0.4)                                  # frames already analysed arrive
        row = enrolable_row(window)
        if row is not None:
            break
        window.set_paused(False)
    assert row is not None
    click_face(window, row)
    track = int(window.latest.result.faces.track_id[row])
    assert window.selected_track == track and window.video.highlight is not None
    window.enrol_name.setCurrentText("Lin")
    window.enrol_button.click()
    wait_until(lambda: "Lin" in window.people_names(), 60, "Lin in the facebank list")
    assert "enrolled as Lin" in window.message_label.text()
    assert Facebank(tmp_path / "facebank").names() == ["Lin"]
    enrolled_at = window.latest.index
    window.set_paused(False)
    wait_until(lambda: window.latest.index > enrolled_at and "Lin" in names_on_screen(window),
               30, "his name on a later frame")
    table = {r["ID"]: r["Name"] for r in window.track_table.row_texts()}
    assert table[str(track)] == "Lin"
    window.stop()
    wait_ended(window)


def test_renamed_and_removed_people_change_the_names_at_once(make_window, clip, lin_photo,
                                                            tmp_path):
    window = make_window(realtime=True)
    window.add_photos([lin_photo], LIN)
    wait_until(lambda: window.people_names() == [LIN], 60, "the photo to be enrolled")
    assert not window.people_list.item(0).icon().isNull()      # his thumbnail
    window.start_source(clip, *CLOSE_UP)
    wait_until(lambda: LIN in names_on_screen(window), 60, "his name")

    window.set_paused(True)
    window.people_list.setCurrentRow(0)
    window.person_name.setText("Lin")
    window.rename_button.click()
    wait_until(lambda: window.people_names() == ["Lin"], 10, "the new name in the list")
    window.set_paused(False)
    wait_until(lambda: "Lin" in names_on_screen(window), 10, "the new name on the video")

    window.set_paused(True)
    window.people_list.setCurrentRow(0)
    window.remove_button.click()
    wait_until(lambda: window.people_names() == [], 10, "the list to empty")
    assert "Lin removed" in window.message_label.text()
    removed_at = window.latest.index
    window.set_paused(False)
    wait_until(lambda: window.latest.index > removed_at + 3 and names_on_screen(window), 10,
               "later frames")
    assert "Lin" not in names_on_screen(window)
    assert Facebank(tmp_path / "facebank").names() == []
    assert not (tmp_path / "facebank" / "Lin").exists()
    assert list((tmp_path / "facebank" / ".trash").iterdir())
    window.stop()
    wait_ended(window)


def test_the_threshold_and_the_overlays_apply_to_the_next_frames(make_window, clip, lin_photo):
    from mobileface.gui.worker import to_qimage

    window = make_window(realtime=True)
    window.add_photos([lin_photo], LIN)
    wait_until(lambda: window.people_names() == [LIN], 60, "the photo to be enrolled")
    window.start_source(clip, *CLOSE_UP)
    wait_until(lambda: LIN in names_on_screen(window), 60, "his name")
    assert window.latest.view != to_qimage(window.latest.image)      # overlays drawn

    window.set_paused(True)
    window.threshold_slider.setValue(window.threshold_slider.maximum())   # 1.0: nobody
    for box in window.overlay_boxes.values():
        box.setChecked(False)
    settle(0.3)
    changed_at = window.latest.index
    window.set_paused(False)
    wait_until(lambda: window.latest.index > changed_at + 2, 10, "later frames")
    assert names_on_screen(window) == ["Unknown"]
    assert window.latest.view == to_qimage(window.latest.image)      # nothing drawn

    window.set_threshold(0.92)
    wait_until(lambda: LIN in names_on_screen(window), 10, "his name again")
    window.stop()
    wait_ended(window)


def test_a_blurred_photo_is_refused_and_the_window_says_why(make_window, tmp_path):
    image = cv2.imread(str(shared_file("face_recognition/obama.jpg")))
    blurred = tmp_path / "blurred_obama.jpg"
    cv2.imwrite(str(blurred), cv2.GaussianBlur(image, (0, 0), 6))
    window = make_window()
    window.add_photos([str(blurred)], "Barack Obama")
    wait_until(lambda: "refused" in window.message_label.text(), 60, "the refusal")
    assert "blurred" in window.message_label.text()
    assert window.people_names() == [] and Facebank(tmp_path / "facebank").names() == []


def test_unknown_faces_are_grouped_and_one_click_enrols_a_group(make_window, clip, tmp_path):
    window = make_window()
    window.start_source(clip, 3.5, 1.5)
    wait_ended(window)
    groups = wait_until(lambda: window.unknown_groups(), 5, "groups of unknown faces")
    assert window.unknown_list.count() == len(groups)
    assert window.tabs.tabText(1) == f"Unknown faces ({len(groups)})"
    biggest = groups[0]
    window.unknown_list.setCurrentRow(0)
    window.group_name.setCurrentText("Lin")
    window.enrol_group_button.click()
    wait_until(lambda: "Lin" in window.people_names(), 60, "the group to be enrolled")
    (person,) = Facebank(tmp_path / "facebank").people()
    assert person.name == "Lin" and 1 <= person.images <= len(biggest.shots)
    assert "enrolled as Lin" in window.message_label.text()
    assert len(window.unknown_groups()) == len(groups) - 1 or person.images < len(biggest.shots)


def test_a_bad_source_shows_an_error_in_the_window(make_window, tmp_path):
    window = make_window()
    window.start_source(str(tmp_path / "missing.mp4"))
    wait_until(lambda: "no such file" in window.error_text(), 30, "the missing-file error")
    wait_ended(window)
    assert window.start_button.isEnabled() and not window.stop_button.isEnabled()

    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(20000))
    window.start_source(str(corrupt))
    wait_until(lambda: "corrupt.mp4" in window.error_text(), 30, "the corrupt-file error")
    wait_ended(window)

    window.start_source("7")
    wait_until(lambda: "camera 7 cannot be opened" in window.error_text(), 30,
               "the camera error")
    wait_ended(window)
    assert len(window.errors) == 3 and all("\n" not in e for e in window.errors)


def test_a_stream_that_disconnects_shows_an_error(make_window, clip):
    from mobileface.eval.mjpeg_server import MjpegServer

    capture = cv2.VideoCapture(clip)
    capture.set(cv2.CAP_PROP_POS_FRAMES, 110)
    frames = [capture.read()[1] for _ in range(10)]
    window = make_window()
    window.reconnect_attempts = 1
    with MjpegServer(frames, frames_per_connection=40, connections=1) as server:
        window.start_source(server.url)
        wait_until(lambda: "disconnected" in window.error_text(), 60, "the disconnect")
        wait_ended(window)
    assert window.last_stats.frames > 0


def test_errors_in_slots_are_shown_not_raised(make_window):
    window = make_window()
    window.guard(lambda: 1 / 0)()
    assert "ZeroDivisionError" in window.error_text()
    window.enrol_button.click()                 # no name typed
    assert "type the name" in window.error_text()
    window.guard(lambda: window.enrol_selected("Ada"))()
    assert "select a face first" in window.error_text()
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        window.report_unhandled(*sys.exc_info())
    assert "RuntimeError: boom" in window.error_text()


def test_settings_are_remembered_between_runs(make_window, tmp_path):
    path = tmp_path / "remembered.json"
    window = make_window(settings=path)
    assert window.threshold() == pytest.approx(0.92)          # the embedder's default
    window.set_threshold(0.88)
    window.detector_box.setCurrentText("mtcnn")
    window.det_size_box.setCurrentText("320")
    window.overlay_boxes["landmarks"].setChecked(True)
    window.overlay_boxes["boxes"].setChecked(False)
    window.realtime_box.setChecked(False)
    window._remember_source("rtsp://camera.local/stream")
    window.close()

    again = make_window(settings=path)
    assert again.threshold() == pytest.approx(0.88)
    assert again.detector_box.currentText() == "mtcnn"
    assert again.det_size_box.currentText() == "320"
    options = again.overlay_options()
    assert options.landmarks and not options.boxes and options.labels
    assert not again.realtime_box.isChecked()
    assert again.source_box.currentText() == "rtsp://camera.local/stream"
    # the command line wins over what was remembered
    third = make_window(settings=path, threshold=0.95,
                        det_size=640, detector="retinaface")
    assert third.threshold() == pytest.approx(0.95)
    assert third.det_size_box.currentText() == "640"
    assert third.detector_box.currentText() == "retinaface"


def test_the_detector_choice_applies_at_the_next_start(make_window, clip, holder):
    window = make_window()
    window.detector_box.setCurrentText("mtcnn")
    window.start_source(clip, 3.5, 0.4)
    wait_until(lambda: window.track_table.row_texts(), 60, "a track found by MTCNN")
    wait_ended(window)
    assert type(holder.pipeline(window_request(window)).detector).__name__.lower().startswith(
        "mtcnn")
    assert window.error_text() == ""


def test_detect_every_reaches_the_viewers_pipeline(make_window, holder, clip):
    """--detect-every (MainWindow(detect_every=...)) is the pipeline's, and a run with it
    detects every frame when it is 1 (the shared pipeline is rebuilt for another value)."""
    from mobileface.gui.worker import RunRequest
    from mobileface.track.refind import DETECT_EVERY

    window = make_window(detect_every=1)
    window.start_source(clip, 3.5, 0.3)
    wait_until(lambda: window.track_table.row_texts(), 60, "a track")
    wait_ended(window)
    request = RunRequest(source=0, detect_every=window.detect_every)
    pipeline = holder.pipeline(request)
    assert pipeline.config.detect_every == 1 and pipeline.refinder is None
    assert holder.pipeline(RunRequest(source=0)).config.detect_every == DETECT_EVERY


def window_request(window):
    from mobileface.gui.worker import RunRequest

    return RunRequest(source=0, detector=window.detector_box.currentText(),
                      det_size=int(window.det_size_box.currentText()))


# -- start-up ------------------------------------------------------------------------------

def _run(code: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_opencv_sets_qt_variables_and_prepare_removes_only_those():
    from mobileface.gui.qtenv import remove_cv2_variables

    cv2_dir = os.path.dirname(cv2.__file__)
    env = {"QT_QPA_PLATFORM_PLUGIN_PATH": os.path.join(cv2_dir, "qt", "plugins"),
           "QT_QPA_FONTDIR": "/usr/share/fonts/mine"}
    assert remove_cv2_variables(env) == ["QT_QPA_PLATFORM_PLUGIN_PATH"]
    assert env == {"QT_QPA_FONTDIR": "/usr/share/fonts/mine"}


def test_no_display_or_an_unloadable_plugin_is_one_line_not_an_abort(tmp_path):
    from mobileface.gui.qtenv import QtStartError, check_display, check_xcb_plugin

    with pytest.raises(QtStartError, match="no display"):
        check_display({"QT_QPA_PLATFORM": "xcb"})
    check_display({"QT_QPA_PLATFORM": "offscreen"})
    fake = tmp_path / "libqxcb.so"
    fake.write_bytes(b"not a library")
    with pytest.raises(QtStartError, match="cannot be loaded.*apt-get install libxcb-cursor0"):
        check_xcb_plugin(fake)
    with pytest.raises(QtStartError, match="missing"):
        check_xcb_plugin(tmp_path / "nothing.so")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["QT_QPA_PLATFORM"] = "xcb"
    done = subprocess.run([sys.executable, "apps/viewer.py", "--settings",
                           str(tmp_path / "s.json"), "--facebank", str(tmp_path / "fb")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "no display" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.skipif(shutil.which("xvfb-run") is None,
                    reason="needs xvfb-run (apt-get install xvfb)")
@pytest.mark.parametrize("first", ["import cv2", "from PyQt6 import QtWidgets",
                                   "import cv2; from PyQt6 import QtWidgets"])
def test_the_viewer_starts_on_x11_whatever_the_import_order(first, tmp_path):
    code = (f"{first}\n"
            "import os, sys\n"
            "from mobileface.gui import main\n"
            "print('cv2 set', os.environ.get('QT_QPA_PLATFORM_PLUGIN_PATH', '-'), flush=True)\n"
            f"code = main(['--quit-after', '1', '--settings', {str(tmp_path / 's.json')!r}, "
            f"'--facebank', {str(tmp_path / 'fb')!r}])\n"
            "print('after', os.environ.get('QT_QPA_PLATFORM_PLUGIN_PATH', '-'), flush=True)\n"
            "sys.exit(code)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_")}
    done = subprocess.run(["xvfb-run", "-a", sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "qt.qpa.plugin" not in done.stderr and "Aborted" not in done.stderr
    if "cv2" in first:      # opencv-python did set its path: it was there when main() ran
        assert "cv2 set " in done.stdout and "cv2/qt/plugins" in done.stdout
    assert "after -" in done.stdout          # ... and was gone when the QApplication started


def test_python_m_mobileface_gui(tmp_path):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    done = subprocess.run([sys.executable, "-m", "mobileface", "gui", "--quit-after", "0.5",
                           "--settings", str(tmp_path / "s.json"), "--facebank",
                           str(tmp_path / "fb")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "s.json").read_text())["detector"] == "retinaface"
    bad = subprocess.run([sys.executable, "-m", "mobileface", "gui", "-th", "2"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "threshold" in bad.stderr and "Traceback" not in bad.stderr


def test_the_library_and_the_command_line_import_no_qt():
    code = ("import sys\n"
            "import mobileface, mobileface.cli.main, mobileface.pipeline.video, mobileface.pipeline.runner\n"
            "import mobileface.identity.facebank, mobileface.outputs.annotators, mobileface.identity.enrol, mobileface.io.video\n"
            "import mobileface.gui, mobileface.gui.unknowns, mobileface.gui.qtenv\n"
            "mobileface.cli.main.build_parser().parse_args(['gui', '-f', '0'])\n"
            "print(sorted(m for m in sys.modules if m.startswith('PyQt')))\n")
    done = _run(code, dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.skipif(shutil.which("Xvfb") is None, reason="needs Xvfb (apt-get install xvfb)")
def test_the_screenshot_tool_saves_a_png_of_the_running_window(tmp_path, lin_photo, clip):
    out = tmp_path / "viewer.png"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QT_") and k != "DISPLAY"}
    done = subprocess.run([sys.executable, "tools/screenshot_viewer.py", "-f", clip, "-b", "3.5",
                           "-d", "2", "--after", "0.5", "--size", "1360x800", "--enrol",
                           f"{LIN}={lin_photo}", "-o", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"#1 {LIN}" in done.stderr                  # his track, named, was on screen
    shot = cv2.imread(str(out))
    assert shot.shape == (800, 1360, 3)
    assert shot.std() > 20                             # not a blank window
