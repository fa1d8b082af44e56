"""tools/optimize_model.py on five LFW people, and the guard that keeps "dlib-int8" from loading
unless its accuracy check passed."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import DATA
from mobileface.stages.embed import INT8_EMBEDDER, create_embedder
from mobileface.errors import ModelError
from mobileface.models.precision import REPORT_VERSION
from mobileface.stages.embed.int8 import int8_paths, is_usable
from scripts import load_script

optimize = load_script("tools/optimize_model.py")

LFW100 = DATA / "mobileface" / "LFW-Aligned-100Pair"
CALIB = DATA / "face_recognition" / "knn_examples" / "train"
FIVE = ["Aaron_Peirsol", "Aaron_Sorkin", "Abdel_Nasser_Assidi", "Barbara_Walters", "Jackie_Chan"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private model cache holding links to the converted float model and its record."""
    from mobileface.convert.dlib_resnet import converted_model_path
    from mobileface.models.registry import record_path

    float_model = converted_model_path()
    folder = tmp_path / "cache"
    folder.mkdir()
    for path in (float_model, record_path(float_model)):
        (folder / path.name).symlink_to(path)
    monkeypatch.setenv("MOBILEFACE_CACHE", str(folder))
    return folder


def test_usable_only_within_the_bound():
    assert is_usable(0.965, 0.960, 0.005)
    assert is_usable(0.965, 0.975, 0.005)       # a gain is fine
    assert not is_usable(0.965, 0.955, 0.005)
    assert is_usable(0.965, 0.955, 0.01)


def test_optimize_five_people_then_load_dlib_int8(cache, tmp_path, capsys, astronaut_bgr):
    if not all((LFW100 / n).is_dir() for n in FIVE) or not CALIB.is_dir():
        pytest.skip("shared LFW-Aligned-100Pair / knn_examples data is absent")
    data = tmp_path / "five"
    for name in FIVE:
        (data / name).mkdir(parents=True)
        for image in (LFW100 / name).iterdir():
            (data / name / image.name).symlink_to(image)
    out = tmp_path / "out"
    code = optimize.main([str(data), "--calib", str(CALIB), "--out", str(out), "--runs", "2",
                          "--threads", "1", "--max-loss", "0.5"])
    printed = capsys.readouterr().out
    report = json.loads(printed.strip().splitlines()[-1])
    assert code == 0 and report["usable"] is True
    assert report == json.loads((out / "optimize.json").read_text())
    model, sidecar = int8_paths()
    assert model.parent == cache and json.loads(sidecar.read_text())["passed"] is True
    # the report every int8 model has (mobileface.models.precision), with both gates
    cached = json.loads(sidecar.read_text())
    assert [g["name"] for g in cached["gates"]] == ["embed: 10-fold accuracy lost",
                                                    "embed: mean cosine to fp32"]
    assert cached["models"]["dlib_resnet_v1"]["int8_sha256"] == report["int8_sha256"]
    assert report["calibration"]["faces"] == 9 and not report["calibration"]["overlaps_evaluation"]
    rows = {r["model"]: r for r in report["models"]}
    assert set(rows) == {"float", "float-opt", "int8"}
    assert rows["int8"]["size_mb"] < rows["float"]["size_mb"] / 3      # int8 weights
    assert rows["float-opt"]["cosine_to_float_min"] > 0.99999          # same function
    assert rows["int8"]["cosine_to_float_mean"] > 0.99
    assert rows["float"]["accuracy"] > 0.7 and rows["int8"]["accuracy"] > 0.7
    assert rows["int8"]["speedup_batch1"] > 0 and "accuracy change" in printed

    from mobileface import FaceAnalyzer
    int8 = FaceAnalyzer(stages=("embed",), embedder=INT8_EMBEDDER).analyze(astronaut_bgr)
    full = FaceAnalyzer(stages=("embed",)).analyze(astronaut_bgr)
    a, b = int8.embedding[0], full.embedding[0]
    assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.99
    stage = create_embedder(INT8_EMBEDDER)
    # its gate proved it equivalent: it shares the float model's id (facebanks mix them)
    assert stage.model_id == create_embedder("dlib").model_id
    assert stage.model_path == model
    # `mobileface verify` with it: dlib's euclidean measure, no spec needed
    import cv2

    from mobileface.cli.main import main
    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), astronaut_bgr)
    assert main(["-q", "verify", str(photo), str(photo), "--embedder", INT8_EMBEDDER,
                 "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert (verdict["metric"], verdict["same_person"]) == ("distance", True)
    assert verdict["model_id"] == stage.model_id

    # the guard: a failed check, an altered file or a stale report is refused
    saved = sidecar.read_text()
    sidecar.write_text(json.dumps({**json.loads(saved), "passed": False}))
    with pytest.raises(ModelError, match="failed its accuracy gate"):
        create_embedder(INT8_EMBEDDER)
    stale = json.loads(saved)
    stale["models"]["dlib_resnet_v1"]["source_sha256"] = "0" * 64
    sidecar.write_text(json.dumps(stale))
    with pytest.raises(ModelError, match="another version"):
        create_embedder(INT8_EMBEDDER)
    sidecar.write_text(saved)
    with open(model, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelError, match="sha256 differs"):
        create_embedder(INT8_EMBEDDER)


def test_dlib_int8_without_the_tool_says_what_to_run(cache):
    with pytest.raises(ModelError, match="run python -m mobileface models quantize"):
        create_embedder(INT8_EMBEDDER)
    _, sidecar = int8_paths()
    sidecar.write_text(json.dumps({"version": REPORT_VERSION + 1}))
    with pytest.raises(ModelError, match="not an int8 report this version understands"):
        create_embedder(INT8_EMBEDDER)
    sidecar.write_text("{not json")
    with pytest.raises(ModelError, match="cannot read"):
        create_embedder(INT8_EMBEDDER)


def test_optimize_errors_are_one_line(tmp_path, capsys):
    assert optimize.main([str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "no such folder" in err and "Traceback" not in err
    for name in ("p1", "p2"):
        (tmp_path / name).mkdir()
    assert optimize.main([str(tmp_path), "--max-loss", "2"]) == 2
    assert "--max-loss" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        optimize.main(["--help"])
    assert exit_.value.code == 0 and "--max-loss" in capsys.readouterr().out
