"""`python -m mobileface analyze|verify|models`: output a user reads, and bad input."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from conftest import shared_file
from mobileface.cli.main import SAME_PERSON_DISTANCE, main


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def astronaut_png(tmp_path_factory, astronaut_bgr):
    path = tmp_path_factory.mktemp("img") / "astronaut.png"
    cv2.imwrite(str(path), astronaut_bgr)
    return str(path)


def test_analyze_json_has_every_column(astronaut_png, capsys):
    assert main(["-q", "analyze", astronaut_png, "--json"]) == 0
    (record,) = _json_lines(capsys.readouterr().out)
    assert record["image"] == astronaut_png
    (face,) = record["faces"]
    assert len(face["box"]) == 4 and 0.6 < face["score"] <= 1
    assert np.array(face["landmarks"]).shape == (68, 2)
    assert set(face["pose"]) == {"yaw", "pitch", "roll"} and abs(face["pose"]["yaw"]) < 15
    assert face["gender"] == "female" and 15 < face["age"] < 60
    assert 0 < face["quality"] <= 1
    assert len(face["embedding"]) == 128


def test_table_output_and_provider_log(astronaut_png, capsys):
    assert main(["analyze", astronaut_png]) == 0
    captured = capsys.readouterr()
    assert "1 face(s)" in captured.out and "yaw=" in captured.out
    assert "CPUExecutionProvider" in captured.err  # the active provider is logged at start


def test_unavailable_provider_warns_and_falls_back(astronaut_png, capsys):
    assert main(["analyze", astronaut_png, "--providers", "tensorrt,cpu", "--json",
                 "--no-embedding"]) == 0
    captured = capsys.readouterr()
    assert "TensorrtExecutionProvider" in captured.err and "falling back" in captured.err
    assert "embedding" not in _json_lines(captured.out)[0]["faces"][0]


def test_bad_files_give_one_line_each_and_the_rest_still_run(tmp_path, astronaut_png, capsys):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    missing = tmp_path / "missing.jpg"
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 300, 3), 128, np.uint8))
    paths = [str(missing), str(corrupt), str(empty), str(text), str(tmp_path), astronaut_png,
             str(blank)]
    assert main(["analyze", *paths, "--json", "--no-embedding"]) == 1
    captured = capsys.readouterr()
    records = _json_lines(captured.out)
    assert [r["image"] for r in records] == paths
    assert all("error" in r and r["faces"] == [] for r in records[:5])
    assert len(records[5]["faces"]) == 1 and "error" not in records[5]
    assert records[6] == {"image": str(blank), "faces": []}  # no face is not an error
    assert "Traceback" not in captured.err
    errors = [line for line in captured.err.splitlines() if "error" in line.lower()
              or any(p in line for p in paths[:5])]
    assert len(errors) >= 5


def test_grey_rgba_and_16bit_images_are_analysed(tmp_path, astronaut_bgr, capsys):
    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2GRAY))
    rgba = tmp_path / "rgba.png"
    cv2.imwrite(str(rgba), cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2BGRA))
    deep = tmp_path / "deep.png"
    cv2.imwrite(str(deep), astronaut_bgr.astype(np.uint16) * 257)
    assert main(["-q", "analyze", str(grey), str(rgba), str(deep), "--json",
                 "--no-embedding"]) == 0
    assert [len(r["faces"]) for r in _json_lines(capsys.readouterr().out)] == [1, 1, 1]


def test_verify_same_and_different_people(capsys):
    obama = str(shared_file("face_recognition/obama.jpg"))
    obama2 = str(shared_file("face_recognition/obama2.jpg"))
    biden = str(shared_file("face_recognition/biden.jpg"))
    assert main(["-q", "verify", obama, obama2, "--json"]) == 0
    same = json.loads(capsys.readouterr().out)
    assert same["same_person"] is True and same["distance"] < SAME_PERSON_DISTANCE
    assert main(["-q", "verify", obama, biden]) == 0
    out = capsys.readouterr().out
    assert "different people" in out


def test_verify_without_a_face_is_a_clear_error(tmp_path, astronaut_png, capsys):
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((100, 100, 3), 200, np.uint8))
    assert main(["verify", astronaut_png, str(blank)]) == 2
    err = capsys.readouterr().err
    assert "no face found" in err and "Traceback" not in err


def test_threshold_is_dlibs():
    from mobileface.stages.embed.dlib_resnet import DISTANCE_THRESHOLD

    assert SAME_PERSON_DISTANCE == DISTANCE_THRESHOLD


def test_models_lists_every_model(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILEFACE_CACHE", str(tmp_path))  # a cache in a known state: empty
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = {r["name"] for r in rows}
    assert {"retinaface_mnet025", "mtcnn_pnet", "dlib_resnet_v1", "age_v1"} <= names
    for row in rows:
        assert row["status"] == "ok" and len(row["sha256"]) == 64
        assert row["package"] and row["licence"] and row["file"]
    assert {r["name"]: r["cache"] for r in rows}["dlib_resnet_v1"].startswith("not converted")
    assert main(["models"]) == 0
    assert "face-recognition-models==0.3.0" in capsys.readouterr().out


def test_bad_options_exit_non_zero(astronaut_png, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["analyze", astronaut_png, "--detector", "nope"])
    assert exc.value.code == 2
    assert main(["analyze", astronaut_png, "--det-size", "5"]) == 2
    assert "input_size" in capsys.readouterr().err


def test_the_shared_test_data_is_found_in_one_place(tmp_path, monkeypatch):
    from conftest import ROOT
    from mobileface.cli.common import shared_data, shared_dir
    from mobileface.eval import bench

    monkeypatch.setenv("MOBILEFACE_SHARED", str(tmp_path))
    assert shared_dir() == tmp_path
    assert shared_data("face_recognition/obama.jpg") == tmp_path / "data/face_recognition/obama.jpg"
    monkeypatch.delenv("MOBILEFACE_SHARED")
    assert shared_dir() == ROOT.parent / "shared"          # beside the checkout
    assert bench.DATA == shared_data()                     # what benchmark/ uses


def test_help_lists_the_detectors_the_library_has(capsys):
    from mobileface.detect import DETECTORS

    with pytest.raises(SystemExit):
        main(["analyze", "--help"])
    assert "{" + ",".join(DETECTORS) + "}" in capsys.readouterr().out
