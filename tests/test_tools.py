"""benchmark/lfw.py, tools/tsne.py and tools/confusion_matrix.py on five LFW people, and their
error paths (which need no shared data)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from conftest import DATA
from scripts import load_script

lfw = load_script("benchmark/lfw.py")
tsne = load_script("tools/tsne.py")
confusion = load_script("tools/confusion_matrix.py")

LFW100 = DATA / "mobileface" / "LFW-Aligned-100Pair"
FIVE = ["Aaron_Peirsol", "Aaron_Sorkin", "Abdel_Nasser_Assidi", "Barbara_Walters", "Jackie_Chan"]


@pytest.fixture(scope="module")
def five_people(tmp_path_factory):
    """Five people of LFW-Aligned-100Pair, two crops each (links, nothing copied)."""
    if not all((LFW100 / name).is_dir() for name in FIVE):
        pytest.skip(f"test data {LFW100} is absent (set MOBILEFACE_SHARED to the shared folder)")
    root = tmp_path_factory.mktemp("five")
    for name in FIVE:
        (root / name).symlink_to(LFW100 / name, target_is_directory=True)
    return root


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def _png(path, min_side=300):
    image = cv2.imread(str(path))
    assert image is not None, f"{path} is not a readable image"
    assert min(image.shape[:2]) >= min_side
    assert image.std() > 10  # something is drawn
    return image


def test_lfw_on_five_people_beats_chance(five_people, tmp_path, capsys):
    out = tmp_path / "out"
    assert lfw.main([str(five_people), "--out", str(out), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    line = next(l for l in printed.splitlines() if "accuracy=" in l)
    accuracy = float(line.split("accuracy=")[1].split()[0])
    assert accuracy > 0.7  # chance is 0.5 on balanced pairs
    report = _last_json(printed)
    assert report == json.loads((out / "lfw.json").read_text())
    assert report["images"] == {"total": 10, "detected": 0, "padded": 10, "whole": 0, "none": 0,
                                "unreadable": 0}
    assert report["folds"] == 5 and report["accuracy_same_pairs"] == 5
    (dlib,) = report["embedders"]
    assert dlib["embedder"] == "dlib" and dlib["accuracy"] == pytest.approx(accuracy, abs=1e-4)
    assert -1 < dlib["threshold"] < 1 and len(dlib["fold_accuracies"]) == 5
    assert dlib["roc_same_pairs"] == 5 and dlib["roc_different_pairs"] == 10 * 9 // 2 - 5
    assert dlib["auc"] > 0.8
    # 40 different-person pairs cannot measure a FAR of 1e-3: said, not invented
    far3 = next(e for e in dlib["tar_at_far"] if e["far"] == 1e-3)
    assert far3["reachable"] is False and far3["tar"] is None
    assert "n/a (lowest FAR 2.5e-02" in printed
    _png(out / "roc.png")


def test_lfw_with_a_pairs_file(five_people, tmp_path, capsys):
    names = {n: sorted(p.stem.rsplit("_", 1)[1] for p in (five_people / n).iterdir())
             for n in FIVE}
    same = [f"{n} {int(a)} {int(b)}" for n, (a, b) in names.items()]
    diff = [f"{FIVE[k]} {int(names[FIVE[k]][0])} {FIVE[k + 1]} {int(names[FIVE[k + 1]][1])}"
            for k in range(4)] + [f"{FIVE[4]} {int(names[FIVE[4]][0])} {FIVE[0]} 2"]
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("5\n" + "\n".join(same + diff) + "\n")
    assert lfw.main([str(five_people), "--pairs", str(pairs), "--out", str(tmp_path),
                     "--threads", "1", "--far", "0.1"]) == 0
    report = _last_json(capsys.readouterr().out)
    assert report["pairs_file"] == str(pairs)
    (dlib,) = report["embedders"]
    assert dlib["roc_same_pairs"] == 5 and dlib["roc_different_pairs"] == 5
    assert dlib["accuracy"] > 0.7


def test_tsne_map_of_five_people(five_people, tmp_path, capsys):
    png = tmp_path / "tsne.png"
    assert tsne.main([str(five_people), "-o", str(png), "--threads", "1"]) == 0
    result = _last_json(capsys.readouterr().out)
    assert result["faces"] == 10 and result["people"] == 5
    (row,) = result["embedders"]
    # the nearest other face is the same person far more often than by chance (1/9)
    assert row["nn_same_person_embedding"] >= 0.6 > result["chance_same_person"] * 3
    _png(png)


@pytest.mark.parametrize("level", ["person", "image"])
def test_similarity_heatmap_of_five_people(five_people, tmp_path, capsys, level):
    png = tmp_path / "sim.png"
    assert confusion.main([str(five_people), "--level", level, "-o", str(png),
                           "--threads", "1"]) == 0
    result = _last_json(capsys.readouterr().out)
    (row,) = result["embedders"]
    assert result["people"] == FIVE
    assert row["people_rated"] == 5 and row["people_rank1"] >= 4
    assert row["mean_same_person"] > row["mean_different_person"]
    _png(png)


def test_person_similarity_by_hand():
    emb = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])
    labels = np.array([0, 0, 1])
    mat = confusion.person_similarity(emb, labels, 2)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    assert mat[0, 0] == pytest.approx(unit[0] @ unit[1])
    assert np.isnan(mat[1, 1])  # one image: no pair of distinct images
    assert mat[0, 1] == pytest.approx((unit[0] @ unit[2] + unit[1] @ unit[2]) / 2)
    assert confusion.person_rank1(mat) == (1, 1)


# --- error paths: one line, non-zero exit, no traceback (no shared data needed) ------------

SCRIPTS = [lfw, tsne, confusion]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: s.__name__)
def test_help(script, capsys):
    with pytest.raises(SystemExit) as exit_:
        script.main(["--help"])
    assert exit_.value.code == 0
    assert "--embedder" in capsys.readouterr().out


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: s.__name__)
def test_missing_data_folder(script, tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert script.main([str(missing), "-o" if script is not lfw else "--out",
                        str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"{missing}: no such folder" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: s.__name__)
def test_images_without_person_folders(script, tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((20, 20, 3), np.uint8))
    assert script.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "sub-folder" in err and "Traceback" not in err


def test_lfw_bad_pairs_file_and_options(tmp_path, capsys):
    (tmp_path / "A").mkdir()
    assert lfw.main([str(tmp_path), "--pairs", str(tmp_path / "none.txt")]) == 2
    assert "none.txt: no such file" in capsys.readouterr().err
    bad = tmp_path / "pairs.txt"
    bad.write_text("10 300\nA 1 2\n")
    assert lfw.main([str(tmp_path), "--pairs", str(bad)]) == 2
    assert "announces 6000 pairs" in capsys.readouterr().err
    assert lfw.main([str(tmp_path), "--folds", "1"]) == 2
    assert "--folds" in capsys.readouterr().err


def test_unknown_embedder_is_one_line(tmp_path, capsys):
    for name in ("p1", "p2"):
        (tmp_path / name).mkdir()
        for i in range(2):
            cv2.imwrite(str(tmp_path / name / f"{i}.png"), np.zeros((20, 20, 3), np.uint8))
    assert tsne.main([str(tmp_path), "--embedder", "no-such-model", "-o",
                      str(tmp_path / "t.png")]) == 2
    err = capsys.readouterr().err
    assert "unknown embedder 'no-such-model'" in err and "Traceback" not in err


def test_tsne_with_too_few_faces(tmp_path, capsys):
    for name in ("p1", "p2"):
        (tmp_path / name).mkdir()
        cv2.imwrite(str(tmp_path / name / "x.png"), np.zeros((400, 400, 3), np.uint8))
    assert tsne.main([str(tmp_path), "-o", str(tmp_path / "t.png")]) == 2
    assert "at least 4 faces; found 0 in 2 images" in capsys.readouterr().err


# --- tools/time_models.py -------------------------------------------------------------------

time_models = load_script("tools/time_models.py")


def test_time_models_has_a_row_per_model_batch_and_thread_count(tmp_path, capsys):
    out = tmp_path / "times.json"
    assert time_models.main(["--runs", "1", "--warmup", "0", "--json-out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = _last_json(printed)
    assert result == json.loads(out.read_text())
    rows = {(r["model"], r["batch"], r["threads"]): r for r in result["rows"]}
    onnx = ["retinaface", "mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet", "age", "gender", "embed dlib"]
    for model in onnx:
        for batch in (1, 8):
            for threads in (1, 2):
                row = rows[(model, batch, threads)]
                assert row["ms_per_call"] > 0
                assert row["ms_per_item"] == pytest.approx(row["ms_per_call"] / batch, abs=1e-3)
    assert rows[("landmarks", 8, "-")]["ms_per_call"] > 0
    assert len(rows) == len(onnx) * 4 + 2
    assert "embed dlib" in printed and "ms/item" in printed


def test_time_models_bad_options_are_one_line(capsys):
    assert time_models.main(["--models", "retinaface,warp-drive"]) == 2
    assert "unknown model(s) warp-drive" in capsys.readouterr().err
    assert time_models.main(["--threads", "one"]) == 2
    assert "--threads must be" in capsys.readouterr().err
    assert time_models.main(["--image", "/no/such/photo.jpg", "--models", "age"]) == 2
    err = capsys.readouterr().err
    assert "/no/such/photo.jpg: no such file" in err and "Traceback" not in err


def test_time_models_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        time_models.main(["--help"])
    assert exit_.value.code == 0
    assert "--embedder" in capsys.readouterr().out
