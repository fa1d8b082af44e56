"""The apps end to end on ../shared/data: enrol with take_pic, recognise with infer_on_video."""
from __future__ import annotations

import json
import sys

import cv2
import pytest

from conftest import ROOT, shared_file
from mobileface.cli.main import main as cli_main
from scripts import load_script

LIN = "Lin-Manuel Miranda"
OBAMA = "Barack Obama"


infer = load_script("apps/infer_on_video.py")   # its main() is what users run
take_pic = load_script("apps/take_pic.py")


def _frames(path) -> tuple[int, float]:
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    count = 0
    while capture.read()[0]:
        count += 1
    return count, fps


def _events(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def facebank(tmp_path_factory):
    """Lin-Manuel Miranda and Barack Obama, enrolled with take_pic from their photos."""
    bank = tmp_path_factory.mktemp("facebank")
    assert take_pic.main(["-q", "-n", LIN, "--image",
                          str(shared_file("face_recognition/lin-manuel-miranda.png")),
                          "--facebank", str(bank)]) == 0
    assert take_pic.main(["-q", "-n", OBAMA, "--image",
                          str(shared_file("face_recognition/obama.jpg")),
                          "--facebank", str(bank)]) == 0
    return bank


@pytest.fixture(scope="module")
def hamilton():
    return shared_file("face_recognition/short_hamilton_clip.mp4")


@pytest.fixture(scope="module")
def full_run(facebank, hamilton, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    code = infer.main(["-q", "-f", str(hamilton), "-s", str(out / "out.mp4"),
                       "--events", str(out / "events.jsonl"), "--facebank", str(facebank),
                       "-c", "--landmarks", "--pose-axes"])
    return code, out


def test_take_pic_saves_the_aligned_face_and_the_embedding(facebank, capsys):
    people = {p.name: p for p in __import__("mobileface.identity.facebank", fromlist=["x"])
              .Facebank(facebank).people()}
    assert set(people) == {LIN, OBAMA} and people[LIN].images == 1
    saved = list((facebank / LIN).glob("*.jpg"))
    assert len(saved) == 1
    chip = cv2.imread(str(saved[0]))
    assert chip.shape == (256, 256, 3)
    assert cli_main(["facebank", "list", "--json", "--facebank", str(facebank)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {p["name"] for p in listed} == {LIN, OBAMA}


def test_his_track_carries_his_name_and_nobody_else_is_labelled_him(full_run, hamilton):
    code, out = full_run
    assert code == 0
    events = _events(out / "events.jsonl")
    his = [e for e in events if e["identity"] == LIN]
    # him on stage (frames 0-19) and in close-up (83-210); nobody else carries his name
    assert his and all(e["first_frame"] >= 83 and e["last_frame"] <= 210 or
                       e["last_frame"] <= 19 for e in his)
    assert any(e["first_frame"] <= 90 and e["last_frame"] >= 200 for e in his)
    assert all(e["similarity"] >= 0.92 for e in his)
    for event in events:
        assert {"track_id", "identity", "similarity", "first_frame", "last_frame", "first_time",
                "last_time", "age", "gender", "best_shot", "pose_range"} <= set(event)
        assert event["first_frame"] <= event["last_frame"]
        assert set(event["pose_range"]) == {"yaw", "pitch", "roll"}
        crop = cv2.imread(event["best_shot"])
        assert crop is not None and crop.size > 0
    assert len({e["track_id"] for e in events}) == len(events)


def test_his_name_comes_through_a_facebank_too_large_for_exact_search(facebank, hamilton,
                                                                      tmp_path):
    """30,000 more people (random directions, rows written straight into the facebank's
    database: enrolling them through take_pic would take an hour): the gallery searches
    its 1-bit codes, and the run names the same tracks as the two-person facebank."""
    import shutil
    import sqlite3
    from contextlib import closing

    import numpy as np

    from mobileface.identity.facebank import Facebank
    from mobileface.identity.search import EXACT_BELOW

    bank = tmp_path / "large"
    shutil.copytree(facebank, bank, ignore=shutil.ignore_patterns("facebank.sqlite*"))
    with closing(sqlite3.connect(facebank / "facebank.sqlite")) as source, \
            closing(sqlite3.connect(bank / "facebank.sqlite")) as copy:
        source.backup(copy)                     # a consistent copy of a database in use
    strangers = EXACT_BELOW + 10_000
    with closing(sqlite3.connect(bank / "facebank.sqlite")) as db, db:
        model = db.execute("SELECT model FROM images LIMIT 1").fetchone()[0]
        first = db.execute("SELECT max(id) FROM people").fetchone()[0] + 1
        vectors = np.random.default_rng(12).standard_normal((strangers, 128)).astype("<f4")
        db.executemany("INSERT INTO people (id, name, created) VALUES (?, ?, 0)",
                       ((first + i, f"Stranger {i:05d}") for i in range(strangers)))
        db.executemany("INSERT INTO images (person_id, file, sha256, model, embedding, quality, "
                       "added) VALUES (?, ?, ?, ?, ?, 0.8, 0)",
                       ((first + i, f"s{i}.jpg", f"{i:064x}", model, vectors[i].tobytes())
                        for i in range(strangers)))
    assert Facebank(bank, read_only=True).gallery(model).search is not None
    runs = {}
    for name, folder in (("small", facebank), ("large", bank)):
        events = tmp_path / f"{name}.jsonl"
        assert infer.main(["-q", "-f", str(hamilton), "--events", str(events),
                           "--facebank", str(folder)]) == 0
        runs[name] = [(e["track_id"], e["identity"]) for e in _events(events)]
    assert runs["large"] == runs["small"] and (LIN in {n for _, n in runs["large"]})


def test_the_output_has_the_input_frames_and_fps_and_plays(full_run, hamilton):
    _, out = full_run
    assert _frames(out / "out.mp4") == _frames(hamilton)


def test_the_summary_line(facebank, hamilton, tmp_path, capsys):
    assert infer.main(["-q", "-f", str(hamilton), "-b", "3", "-d", "2", "-s",
                       str(tmp_path / "part.mp4"), "--facebank", str(facebank)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("done: 60 frames") and "fps" in line and "tracks" in line
    count, fps = _frames(tmp_path / "part.mp4")
    assert count == 60 and fps == pytest.approx(29.97, abs=0.01)


def test_attributes_only_without_a_facebank(hamilton, tmp_path):
    events = tmp_path / "events.jsonl"
    assert infer.main(["-q", "-f", str(hamilton), "-b", "4", "-d", "1", "--no-recognition",
                       "--events", str(events), "--facebank", str(tmp_path / "none")]) == 0
    records = _events(events)
    assert records and all(r["identity"] is None and r["age"] is not None for r in records)


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.mp4", "no such file"),
    (lambda d: (d / "noise.mp4").write_bytes(b"\x00\x01" * 3000) and d / "noise.mp4",
     "not a readable video"),
    (lambda d: "57", "camera 57 cannot be opened"),
])
def test_bad_sources_exit_with_one_line(make, message, tmp_path, capsys):
    assert infer.main(["-f", str(make(tmp_path)), "-s", str(tmp_path / "o.mp4"),
                       "--no-recognition"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o.mp4").exists()


def test_an_output_that_cannot_be_written(hamilton, tmp_path, capsys):
    assert infer.main(["-f", str(hamilton), "-s", str(tmp_path / "nope" / "o.mp4"),
                       "--no-recognition"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert infer.main(["-f", str(hamilton), "--events", str(tmp_path),
                       "--no-recognition"]) == 2


def test_a_file_that_breaks_off_keeps_what_was_written(hamilton, tmp_path, capsys):
    # an AVI copy of 100 frames, cut in the middle of its data
    capture = cv2.VideoCapture(str(hamilton))
    full = tmp_path / "copy.avi"
    writer = cv2.VideoWriter(str(full), cv2.VideoWriter_fourcc(*"MJPG"), 29.97, (640, 360))
    for _ in range(100):
        writer.write(capture.read()[1])
    writer.release()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    out, events = tmp_path / "out.mp4", tmp_path / "events.jsonl"
    assert infer.main(["-q", "-f", str(cut), "-s", str(out), "--events", str(events),
                       "--no-recognition"]) == 1
    assert "truncated or corrupt" in capsys.readouterr().err
    written, _ = _frames(out)
    assert 20 < written < 100                 # finalised: it plays up to the break
    assert _events(events)                     # complete JSON lines up to the break


def test_a_stream_that_disconnects_keeps_what_was_written(tmp_path, capsys, hamilton):
    from mobileface.eval.mjpeg_server import MjpegServer

    capture = cv2.VideoCapture(str(hamilton))
    capture.set(cv2.CAP_PROP_POS_FRAMES, 100)
    frames = [capture.read()[1] for _ in range(40)]
    out, events = tmp_path / "live.mp4", tmp_path / "live.jsonl"
    with MjpegServer(frames, frames_per_connection=40, connections=1, interval=0.04) as server:
        code = infer.main(["-q", "-f", server.url, "-s", str(out), "--events", str(events),
                           "--no-recognition", "--reconnect", "1"])
    assert code == 1
    err = capsys.readouterr().err
    assert "disconnected and could not be reopened" in err
    written, _ = _frames(out)
    assert 1 <= written <= 40          # live: frames the analysis could not keep up with are dropped
    records = _events(events)
    assert records and all(r["gender"] == "male" for r in records if r["frames"] > 10)


def test_take_pic_refuses_unsafe_names_and_missing_photos(tmp_path, capsys):
    photo = str(shared_file("face_recognition/obama.jpg"))
    for name in ("../evil", "a/b", ".."):
        assert take_pic.main(["-n", name, "--image", photo, "--facebank", str(tmp_path)]) == 2
    assert not (tmp_path.parent / "evil").exists() and not (tmp_path / "a").exists()
    assert take_pic.main(["-n", "Nobody", "--image", str(tmp_path / "missing.jpg"),
                          "--facebank", str(tmp_path)]) == 1
    assert "no such file" in capsys.readouterr().err
    assert take_pic.main(["-n", "X", "--no-window", "--facebank", str(tmp_path)]) == 2


def test_take_pic_keeps_the_most_confident_of_several_faces(tmp_path):
    assert take_pic.main(["-q", "-n", "Group", "--image",
                          str(shared_file("face_recognition/two_people.jpg")),
                          "--facebank", str(tmp_path)]) == 0
    assert len(list((tmp_path / "Group").glob("*.jpg"))) == 1


def test_take_pic_refuses_a_blurred_face_and_says_why(tmp_path, capsys):
    photo = cv2.imread(str(shared_file("face_recognition/obama.jpg")))
    blurred = tmp_path / "blurred.jpg"
    cv2.imwrite(str(blurred), cv2.GaussianBlur(photo, (0, 0), 6))
    assert take_pic.main(["-n", "Blur", "--image", str(blurred),
                          "--facebank", str(tmp_path / "bank")]) == 1
    assert "blurred" in capsys.readouterr().err


def test_take_pic_from_a_video_without_a_window(tmp_path, hamilton):
    assert take_pic.main(["-q", "-n", LIN, "-f", str(hamilton), "--auto", "--no-window",
                          "--facebank", str(tmp_path)]) == 0
    assert len(list((tmp_path / LIN).glob("*.jpg"))) == 1


def test_facebank_commands(facebank, tmp_path, capsys):
    bank = tmp_path / "bank"
    photo = shared_file("face_recognition/biden.jpg")
    assert cli_main(["-q", "facebank", "add", "Joe", str(photo), "--facebank", str(bank)]) == 0
    assert (bank / "Joe").is_dir()
    assert cli_main(["-q", "facebank", "rename", "Joe", "Joe Biden", "--facebank",
                     str(bank)]) == 0
    assert cli_main(["-q", "facebank", "rename", "Joe", "X", "--facebank", str(bank)]) == 2
    assert cli_main(["-q", "facebank", "remove", "Joe Biden", "--facebank", str(bank)]) == 0
    assert cli_main(["-q", "facebank", "remove", "../x", "--facebank", str(bank)]) == 2
    err = capsys.readouterr().err
    assert "no person named 'Joe'" in err and "Traceback" not in err


def test_import_and_calibrate_on_a_folder_per_person_set(tmp_path, capsys):
    import shutil

    train = shared_file("face_recognition/knn_examples/train/obama/obama.jpg").parent.parent
    bank = tmp_path / "bank"
    shutil.copytree(train, bank)
    shutil.copy(shared_file("face_recognition/two_people.jpg"), bank / "biden" / "group.jpg")
    assert cli_main(["facebank", "import", "--facebank", str(bank)]) == 0
    captured = capsys.readouterr()
    assert "group.jpg" in captured.err          # skipped with a warning naming it
    assert "5 people" in captured.out
    assert cli_main(["facebank", "calibrate", "--json", "--facebank", str(bank)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["genuine_pairs"] == 4 and result["impostor_pairs"] > 10
    assert result["false_accept_rate"] == 0 and result["false_reject_rate"] == 0
    assert 0.8 < result["threshold"] < 1.0


def test_help_needs_no_models(capsys):
    for app in (infer, take_pic):
        with pytest.raises(SystemExit) as done:
            app.main(["--help"])
        assert done.value.code == 0
    assert "facebank" in capsys.readouterr().out


def test_apps_run_as_scripts(tmp_path):
    import subprocess

    done = subprocess.run([sys.executable, str(ROOT / "apps" / "infer_on_video.py"), "-f",
                           str(tmp_path / "missing.mp4")], capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == \
        f"mobileface: error: {tmp_path / 'missing.mp4'}: no such file"


def test_a_converted_mobileface_model_as_the_embedder(tmp_path, hamilton, capsys):
    """MobileFace's own V2 network, converted from MXNet, recognises him in the video."""
    from conftest import shared_model

    convert = load_script("tools/convert_mxnet.py")
    symbol = shared_model("mobileface/MobileFace_Identification_V2-symbol.json")
    params = shared_model("mobileface/MobileFace_Identification_V2-0000.params")
    spec = tmp_path / "v2.json"
    assert convert.main(["--symbol", str(symbol), "--params", str(params), "--input-shape",
                         "1,3,112,112", "-o", str(tmp_path / "v2.onnx"),
                         "--spec-preset", "mobileface-v2"]) == 0
    bank = tmp_path / "bank"
    for name, photo in ((LIN, "lin-manuel-miranda.png"), (OBAMA, "obama.jpg")):
        assert take_pic.main(["-q", "-n", name, "--image",
                              str(shared_file(f"face_recognition/{photo}")),
                              "--facebank", str(bank), "--embedder", str(spec)]) == 0
    events = tmp_path / "events.jsonl"
    assert infer.main(["-q", "-f", str(hamilton), "-b", "2.5", "-d", "5", "--events", str(events),
                       "--facebank", str(bank), "--embedder", str(spec)]) == 0
    records = _events(events)
    his = [r for r in records if r["identity"] == LIN]
    assert len(his) == 1 and his[0]["first_frame"] >= 83 and his[0]["last_frame"] <= 210
    assert his[0]["last_frame"] - his[0]["first_frame"] > 100
    # the same facebank with the default embedder: refused, saying how to re-embed
    capsys.readouterr()
    assert infer.main(["-f", str(hamilton), "-d", "1", "--facebank", str(bank)]) == 2
    assert "facebank import --reembed" in capsys.readouterr().err


def test_update_imports_the_facebank_folders_before_the_run(tmp_path, hamilton):
    import shutil

    bank = tmp_path / "bank"
    (bank / LIN).mkdir(parents=True)
    shutil.copy(shared_file("face_recognition/lin-manuel-miranda.png"), bank / LIN)
    events = tmp_path / "events.jsonl"
    assert infer.main(["-q", "-f", str(hamilton), "-b", "3", "-d", "4", "-u", "--events",
                       str(events), "--facebank", str(bank)]) == 0
    assert (bank / "facebank.sqlite").is_file()
    assert any(r["identity"] == LIN for r in _events(events))


def test_take_pic_without_a_reachable_display_says_so(tmp_path, hamilton, monkeypatch, capsys):
    monkeypatch.setenv("DISPLAY", ":987")          # no X server behind it
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert take_pic.main(["-n", "X", "-f", str(hamilton), "--facebank", str(tmp_path)]) == 2
    assert "no display for the live view" in capsys.readouterr().err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the display is checked on Linux")
def test_one_display_check_for_opencv_windows_and_the_viewer(tmp_path, monkeypatch):
    from mobileface.gui.qtenv import QtStartError, check_display
    from mobileface.io import display

    monkeypatch.setattr(display, "X11_SOCKETS", tmp_path)
    (tmp_path / "X3").touch()                      # a local X server on :3
    assert display.display_problem({}) == "DISPLAY is not set"
    assert display.display_problem({"DISPLAY": ":3.0"}) is None
    assert display.display_problem({"DISPLAY": ":4"}) == "no X server at DISPLAY=:4"
    assert display.display_problem({"DISPLAY": "host:0"}) is None      # remote: not checked
    assert display.display_problem({"WAYLAND_DISPLAY": "wayland-0"}) is None
    assert display.display_problem({"WAYLAND_DISPLAY": "wayland-0"}, wayland=False)
    with pytest.raises(QtStartError, match="no X server at DISPLAY=:4"):   # the viewer's too
        check_display({"QT_QPA_PLATFORM": "xcb", "DISPLAY": ":4"})


def test_scripts_and_tests_leave_sys_path_alone():
    """The package is installed: apps/, benchmark/, tools/ and tests/ import it as it is."""
    import re

    edit = re.compile(r"sys\.path\.(insert|append)|sys\.path\s*=")
    scripts = [p for folder in ("apps", "benchmark", "tools", "tests")
               for p in sorted((ROOT / folder).glob("*.py"))]
    assert scripts and [p.name for p in scripts if edit.search(p.read_text())] == []
