"""An output path that names an input or another output is refused before anything is written."""
from __future__ import annotations

import os

import pytest

from mobileface.io.paths import PathClash, check_distinct


def test_outputs_that_are_an_input_or_each_other_are_refused(tmp_path):
    video = tmp_path / "in.mp4"
    video.write_bytes(b"not really a video, but precious")
    link = tmp_path / "link.mp4"
    link.symlink_to(video)
    hard = tmp_path / "hard.mp4"
    os.link(video, hard)
    for output in (video, link, hard, tmp_path / "sub" / ".." / "in.mp4"):
        with pytest.raises(PathClash, match="is the input -f/--file"):
            check_distinct({"-f/--file": str(video)}, {"-s/--save": str(output)})
    with pytest.raises(PathClash, match="are the same file"):
        check_distinct({"-f/--file": str(video)},
                       {"-s/--save": str(tmp_path / "out.mp4"),
                        "--events": str(tmp_path / "." / "out.mp4")})
    assert video.read_bytes() == b"not really a video, but precious"


def test_distinct_paths_and_live_sources_pass(tmp_path):
    check_distinct({"-f/--file": "0"}, {"-s/--save": str(tmp_path / "0"), "--events": None})
    check_distinct({"-f/--file": "rtsp://127.0.0.1/cam"},
                   {"-s/--save": str(tmp_path / "a.mp4"), "--events": str(tmp_path / "a.jsonl")})


def test_outputs_inside_a_protected_folder_are_refused(tmp_path):
    bank = tmp_path / "facebank"
    (bank / "obama").mkdir(parents=True)
    for output in (bank / "facebank.sqlite", bank / "obama", bank / "x_crops", bank):
        with pytest.raises(PathClash, match="inside the facebank folder"):
            check_distinct({}, {"--events": str(output)}, folders={"facebank": str(bank)})
    check_distinct({}, {"--events": str(tmp_path / "events.jsonl")},
                   folders={"facebank": str(bank), "other": None})


def test_the_video_app_protects_the_facebank_and_the_embedder_files(tmp_path, capsys):
    """--events or --crops in the facebank would destroy its database or be enrolled by the
    next import; --events onto the spec's model would destroy the model."""
    from scripts import load_script

    infer = load_script("apps/infer_on_video.py")
    video = tmp_path / "in.mp4"
    video.write_bytes(b"x")
    bank = tmp_path / "fb"
    (bank / "obama").mkdir(parents=True)
    model = tmp_path / "model.onnx"
    model.write_bytes(b"precious weights")
    spec = tmp_path / "spec.json"
    spec.write_text('{"name": "m", "model": "model.onnx", "input_size": 112, "color": "rgb", '
                    '"mean": 0, "std": 1, "align": "arcface", "cosine_threshold": 0.4}')
    cases = [["--events", str(bank / "facebank.sqlite")],
             ["--events", str(tmp_path / "e.jsonl"), "--crops", str(bank / "obama")],
             ["--events", str(bank / "e.jsonl")],                    # crops default beside it
             ["--embedder", str(spec), "--events", str(model)]]
    for extra in cases:
        code = infer.main(["-q", "-f", str(video), "--facebank", str(bank), *extra])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, (extra, err)
    assert model.read_bytes() == b"precious weights"
    assert sorted(p.name for p in bank.iterdir()) == ["obama"]


def test_threads_per_model_are_bounded():
    from mobileface.models.runtime import MAX_THREADS, RuntimeConfig

    with pytest.raises(ValueError, match="threads per model"):
        RuntimeConfig(intra_op_threads=MAX_THREADS + 1)
    assert RuntimeConfig(intra_op_threads=MAX_THREADS).intra_op_threads == MAX_THREADS
