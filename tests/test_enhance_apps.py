"""--enhance in every app, on pictures made here (no ../shared): the astronaut photo of
scikit-image, small and in very little light, which RetinaFace misses without the
low-light step; the viewer's toggle; bad values refused in one line."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import ROOT
from mobileface.cli.main import main as cli_main
from mobileface.eval.lowlight import darken, jpeg
from scripts import load_script
from test_enhance import DARK_LIGHT, small_astronaut_frame

infer = load_script("apps/infer_on_video.py")
take_pic = load_script("apps/take_pic.py")
FRAMES, FPS = 20, 25.0
#: the clip's light (MPEG-4 coding of a dark frame loses more than JPEG): at 1 % and 160 px
#: RetinaFace misses her in every frame without the low-light step, and finds her with it
CLIP_LIGHT, CLIP_SIDE = 0.01, 160


@pytest.fixture(scope="module")
def dark_clip(tmp_path_factory, astronaut_bgr):
    """20 frames, 640x360: the small astronaut sliding right 3 px a frame, at 1 % of the light."""
    path = tmp_path_factory.mktemp("dark") / "dark.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (640, 360))
    rng = np.random.default_rng(0)
    for i in range(FRAMES):
        frame = np.roll(small_astronaut_frame(astronaut_bgr, CLIP_SIDE), 3 * i, axis=1)
        writer.write(darken(frame, CLIP_LIGHT, rng))
    writer.release()
    return path


@pytest.fixture(scope="module")
def dark_photo(tmp_path_factory, astronaut_bgr):
    """The astronaut photo at 2 % of the light: her face is too dark (and so too flat to look
    sharp) to enrol as it is."""
    path = tmp_path_factory.mktemp("photo") / "dark_astronaut.png"
    cv2.imwrite(str(path), darken(astronaut_bgr, 0.02, np.random.default_rng(0)))
    return path


def _video(clip, out, *options):
    events = out / "events.jsonl"
    code = infer.main(["-q", "--no-progress", "-f", str(clip), "--no-recognition",
                       "--events", str(events), "-s", str(out / "out.mp4"), *options])
    return code, [json.loads(line) for line in events.read_text().splitlines()]


def _mean_brightness(path) -> float:
    capture = cv2.VideoCapture(str(path))
    values = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        values.append(frame.mean())
    capture.release()
    return float(np.mean(values))


# -- infer_on_video -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def video_runs(dark_clip, tmp_path_factory):
    runs = {}
    for label, options in (("auto", []), ("off", ["--enhance", "off"]),
                           ("shown", ["--show-enhanced"])):
        out = tmp_path_factory.mktemp(label)
        runs[label] = (*_video(dark_clip, out, *options), out)
    return runs


def test_infer_on_video_finds_her_in_the_dark_clip_by_default(video_runs, capsys):
    code, events, _ = video_runs["auto"]
    assert code == 0
    tracked = [e for e in events if e["frames"] >= FRAMES // 2]
    assert len(tracked) == 1
    assert tracked[0]["enhanced_frames"] == tracked[0]["frames"]   # found in enhanced frames


def test_infer_on_video_with_enhance_off_misses_her(video_runs):
    code, events, _ = video_runs["off"]
    assert code == 0
    assert sum(e["frames"] for e in events) < FRAMES // 4
    assert all(e["enhanced_frames"] == 0 for e in events)


def test_show_enhanced_writes_the_enhanced_frames(video_runs):
    plain = _mean_brightness(video_runs["auto"][2] / "out.mp4")
    shown = _mean_brightness(video_runs["shown"][2] / "out.mp4")
    assert shown > 2 * plain


def test_the_summary_line_counts_the_enhanced_frames(dark_clip, tmp_path, capsys):
    assert infer.main(["--no-progress", "-f", str(dark_clip), "--no-recognition",
                       "-d", "0.4"]) == 0
    assert "10 frames low-light enhanced" in capsys.readouterr().out


def test_show_enhanced_without_enhancement_or_video_is_refused(dark_clip, tmp_path, capsys):
    for options in (["--show-enhanced", "--enhance", "off", "-s", str(tmp_path / "o.mp4")],
                    ["--show-enhanced"]):
        assert infer.main(["-f", str(dark_clip), "--no-recognition", *options]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--show-enhanced" in err and "Traceback" not in err
    assert not (tmp_path / "o.mp4").exists()


# -- take_pic and analyze -----------------------------------------------------------------------


def test_take_pic_enrols_a_dark_photo_only_with_the_enhancement(dark_photo, tmp_path, capsys):
    bank = tmp_path / "facebank"
    assert take_pic.main(["-n", "Eileen Collins", "--image", str(dark_photo),
                          "--facebank", str(bank)]) == 1            # photos: off by default
    assert "not enrolled: the face is" in capsys.readouterr().err
    assert take_pic.main(["-q", "-n", "Eileen Collins", "--image", str(dark_photo),
                          "--facebank", str(bank), "--enhance", "auto"]) == 0
    (chip,) = (bank / "Eileen Collins").glob("*.jpg")
    saved = cv2.imread(str(chip))
    assert saved.mean() > 2 * cv2.imread(str(dark_photo)).mean()    # the enhanced face


def test_analyze_reports_what_the_enhancement_did(astronaut_bgr, tmp_path, capsys):
    path = tmp_path / "dark_small.jpg"
    cv2.imwrite(str(path), jpeg(darken(small_astronaut_frame(astronaut_bgr), DARK_LIGHT,
                                       np.random.default_rng(1))))
    results = {}
    for mode in ("off", "auto"):
        capsys.readouterr()
        assert cli_main(["analyze", str(path), "--json", "--no-embedding", "--det-size", "480",
                         "--enhance", mode]) == 0
        results[mode] = json.loads(capsys.readouterr().out)
    assert results["off"] == {"image": str(path), "faces": []}   # off: as before, no step
    auto = results["auto"]
    assert auto["enhancement"]["applied"] and auto["enhancement"]["mode"] == "auto"
    assert auto["enhancement"]["brightness"] < 0.4
    assert [f["enhanced"] for f in auto["faces"]] == [True]


# -- bad values ---------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [
    ["apps/infer_on_video.py", "-f", "clip.mp4"],
    ["apps/take_pic.py", "-n", "Ann", "--image", "a.jpg"],
    ["-m", "mobileface", "analyze", "a.jpg"],
    ["apps/viewer.py"],
])
def test_a_bad_enhance_value_is_refused_in_one_line(command, tmp_path):
    done = subprocess.run([sys.executable, *command, "--enhance", "bright"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert "Traceback" not in done.stderr
    error = done.stderr.strip().splitlines()[-1]
    assert "argument --enhance: invalid choice: 'bright'" in error
    assert "off" in error and "auto" in error and "on" in error


# -- the viewer ---------------------------------------------------------------------------------


def test_the_viewer_remembers_its_enhancement_toggle_and_runs_with_it(window_maker, tmp_path):
    path = tmp_path / "viewer.json"
    window = window_maker(path)
    assert window.enhance_box.currentText() == "auto"            # the default
    assert not window.show_enhanced_box.isChecked()
    window.enhance_box.setCurrentText("on")
    window.show_enhanced_box.setChecked(True)
    saved = json.loads(path.read_text())
    assert saved["enhance"] == "on" and saved["show_enhanced"] is True
    window.close()
    again = window_maker(path)
    assert again.enhance_box.currentText() == "on" and again.show_enhanced_box.isChecked()
    assert window_maker(path, enhance="off").enhance_box.currentText() == "off"  # -f options win


def test_a_running_viewer_switches_the_enhancement_between_frames(qapp, tmp_path):
    from mobileface.gui.worker import RunRequest, RunThread
    from mobileface.outputs.annotators import OverlayOptions
    from mobileface.pipeline.slot import LatestSlot

    thread = RunThread(1, RunRequest(source="clip.mp4", enhance="auto"), None, LatestSlot(),
                       OverlayOptions())

    class Pipeline:
        class enhancer:
            mode = "auto"

        def live_summaries(self):
            return []

    class Runner:
        pipeline = Pipeline()
        paused = False

    thread._runner = Runner()
    thread.request.realtime = False
    thread.set_enhance("off")
    assert Runner.pipeline.enhancer.mode == "auto"        # not from the window's thread

    class Result:
        timings = {}

    thread._on_result(None, Result())                     # between two frames: applied
    assert Runner.pipeline.enhancer.mode == "off"
