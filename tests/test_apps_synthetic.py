"""The apps end to end on a clip made here (no ../shared): the astronaut photo that ships
with scikit-image, moving slowly across a plain background.

She is enrolled with apps/take_pic.py, then apps/infer_on_video.py must name her
in the clip, write a video that plays with every frame and an events file.
The models are the ones that ship in the installed pip packages.
"""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from mobileface.cli.main import main as cli_main
from scripts import load_script

NAME = "Eileen Collins"
FRAMES, FPS, SIZE = 48, 25.0, (640, 360)

infer = load_script("apps/infer_on_video.py")
take_pic = load_script("apps/take_pic.py")


def _read_video(path) -> tuple[list[np.ndarray], float]:
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = []
    while len(frames) < 10 * FRAMES:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    capture.release()
    return frames, fps


def _events(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _one_line_error(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert "Traceback" not in err
    assert lines and lines[-1].startswith("mobileface: error: "), err
    return lines[-1]


@pytest.fixture(scope="module")
def photo(tmp_path_factory, astronaut_bgr):
    path = tmp_path_factory.mktemp("photo") / "astronaut.png"
    cv2.imwrite(str(path), astronaut_bgr)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory, astronaut_bgr):
    """48 frames, 640x360 at 25 fps: her head and shoulders sliding right, 6 px a frame."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    patch = astronaut_bgr[0:256, 96:352]           # her face is at x 82-176, y 58-178 in it
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE)
    assert writer.isOpened()
    for i in range(FRAMES):
        frame = np.full((SIZE[1], SIZE[0], 3), (120, 140, 150), np.uint8)
        x = 40 + 6 * i
        frame[50:306, x:x + 256] = patch
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def facebank(tmp_path_factory, photo):
    bank = tmp_path_factory.mktemp("facebank")
    assert take_pic.main(["-q", "-n", NAME, "--image", str(photo), "--facebank", str(bank)]) == 0
    return bank


@pytest.fixture(scope="module")
def full_run(clip, facebank, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    code = infer.main(["-q", "--no-progress", "-f", str(clip), "-s", str(out / "out.mp4"),
                       "--events", str(out / "events.jsonl"), "--facebank", str(facebank),
                       "-c", "--landmarks", "--pose-axes"])
    return code, out


def test_take_pic_enrols_her_photo_into_a_new_facebank(facebank, capsys):
    chips = list((facebank / NAME).glob("*.jpg"))
    assert len(chips) == 1
    assert cv2.imread(str(chips[0])).shape == (256, 256, 3)          # the aligned face
    assert (facebank / "facebank.sqlite").is_file()
    capsys.readouterr()
    assert cli_main(["facebank", "list", "--json", "--facebank", str(facebank)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(p["name"], p["images"]) for p in listed] == [(NAME, 1)]


def test_infer_on_video_names_her_in_one_track_with_a_best_shot(full_run):
    code, out = full_run
    assert code == 0
    records = _events(out / "events.jsonl")
    assert len(records) == 1
    (her,) = records
    assert her["identity"] == NAME and her["similarity"] >= 0.92
    assert (her["first_frame"], her["last_frame"]) == (0, FRAMES - 1)
    assert her["gender"] == "female" and 15 < her["age"] < 60
    crop = cv2.imread(her["best_shot"])
    assert crop is not None and min(crop.shape[:2]) > 50


def test_the_annotated_video_plays_with_every_frame_and_the_fps(full_run, clip):
    _, out = full_run
    frames, fps = _read_video(out / "out.mp4")
    originals, source_fps = _read_video(clip)
    assert len(frames) == len(originals) == FRAMES
    assert fps == pytest.approx(source_fps) == pytest.approx(FPS)
    assert frames[0].shape == (SIZE[1], SIZE[0], 3)
    # her box and name are drawn on it
    assert np.abs(frames[20].astype(int) - originals[20].astype(int)).max() > 100


def test_the_summary_line_counts_the_frames_and_names_her(clip, facebank, tmp_path, capsys):
    assert infer.main(["-q", "--no-progress", "-f", str(clip), "-b", "0.4", "-d", "1",
                       "-s", str(tmp_path / "part.mp4"), "--facebank", str(facebank)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("done: 25 frames") and f"named: {NAME} (1)" in line
    assert len(_read_video(tmp_path / "part.mp4")[0]) == 25


def test_with_an_empty_facebank_she_is_unknown(clip, tmp_path):
    empty = tmp_path / "empty_bank"
    empty.mkdir()
    events = tmp_path / "events.jsonl"
    assert infer.main(["-q", "--no-progress", "-f", str(clip), "--events", str(events),
                       "--facebank", str(empty)]) == 0
    assert [r["identity"] for r in _events(events)] == ["Unknown"]


def test_attributes_only_needs_no_facebank(clip, tmp_path):
    events = tmp_path / "events.jsonl"
    assert infer.main(["-q", "--no-progress", "-f", str(clip), "--no-recognition",
                       "--events", str(events), "--facebank", str(tmp_path / "none")]) == 0
    (record,) = _events(events)
    assert record["identity"] is None and record["gender"] == "female"
    assert record["age"] is not None


def test_a_missing_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys):
    missing = tmp_path / "missing.mp4"
    assert infer.main(["-f", str(missing), "-s", str(tmp_path / "o.mp4"),
                       "--events", str(tmp_path / "e.jsonl")]) == 2
    assert _one_line_error(capsys.readouterr().err) == f"mobileface: error: {missing}: no such file"
    assert not (tmp_path / "o.mp4").exists() and not (tmp_path / "e.jsonl").exists()


@pytest.mark.parametrize("option, spelling", [("-s", "same"), ("--events", "same"),
                                              ("-s", "other")])
def test_an_output_path_equal_to_the_input_is_refused_and_the_input_kept(option, spelling, clip,
                                                                         tmp_path, capsys):
    video = tmp_path / "mine.mp4"
    video.write_bytes(clip.read_bytes())
    before = video.read_bytes()
    (tmp_path / "sub").mkdir()
    output = video if spelling == "same" else tmp_path / "sub" / ".." / "mine.mp4"
    code = infer.main(["-q", "--no-progress", "-f", str(video), option, str(output),
                       "--no-recognition"])
    err = capsys.readouterr().err
    assert video.read_bytes() == before, "the input video was overwritten"
    assert code != 0
    _one_line_error(err)


def test_take_pic_refuses_a_missing_photo_and_a_photo_without_a_face(tmp_path, capsys):
    bank = tmp_path / "bank"
    assert take_pic.main(["-n", "Nobody", "--image", str(tmp_path / "missing.jpg"),
                          "--facebank", str(bank)]) == 1
    err = capsys.readouterr().err
    assert "missing.jpg" in err and "no such file" in err and "Traceback" not in err
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
    assert take_pic.main(["-n", "Nobody", "--image", str(blank), "--facebank", str(bank)]) == 1
    err = capsys.readouterr().err
    assert "blank.png" in err and "Traceback" not in err
    assert not (bank / "Nobody").exists() or not list((bank / "Nobody").iterdir())
    assert take_pic.main(["-n", "../evil", "--image", str(blank), "--facebank", str(bank)]) == 2
    assert not (tmp_path / "evil").exists()
