"""The command line: -v and -q anywhere, and a table that never trips on an unknown value."""
from __future__ import annotations

import os

import pytest

from conftest import ROOT
from mobileface.cli.main import build_parser, main


@pytest.mark.parametrize("argv, verbose, quiet", [
    (["analyze", "x.jpg", "-v"], True, False),
    (["-v", "analyze", "x.jpg"], True, False),
    (["-q", "facebank", "list"], False, True),
    (["facebank", "list", "-q"], False, True),
    (["facebank", "list"], False, False),
    (["verify", "a.jpg", "b.jpg", "--verbose"], True, False),
])
def test_logging_options_stand_anywhere(argv, verbose, quiet):
    args = build_parser().parse_args(argv)
    assert args.verbose is verbose and args.quiet is quiet


def test_quiet_after_the_subcommand_still_shows_errors(tmp_path, capsys):
    (tmp_path / "Ann").mkdir()
    assert main(["facebank", "list", "--facebank", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["facebank", "list", "--facebank", str(tmp_path / "missing"), "-q"]) == 2
    assert "no facebank folder" in capsys.readouterr().err   # errors still show


def test_the_table_shows_unknown_values_as_a_question_mark(capsys):
    """A face whose pose could not be solved is listed, not a traceback."""
    import numpy as np

    from mobileface.cli.main import _print_table
    from mobileface.types import Faces

    faces = Faces([[0, 0, 10, 10]], [0.9], pose=np.full((1, 3), np.nan, np.float32),
                  age=np.array([30.0], np.float32), gender=np.array([np.nan], np.float32),
                  quality=np.array([0.5], np.float32))
    _print_table("x.jpg", faces)
    assert "yaw=? pitch=? roll=? age=30 gender=? quality=0.50" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["5", "nan", "-1"])
def test_take_pic_refuses_a_min_quality_outside_0_to_1(value, tmp_path, capsys):
    from scripts import load_script

    take_pic = load_script("apps/take_pic.py")
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"x")
    code = take_pic.main(["-n", "Ann", "--image", str(photo), "--facebank", str(tmp_path / "fb"),
                          "--min-quality", value])
    err = capsys.readouterr().err
    assert code == 2 and "--min-quality" in err and err.count("\n") == 1


@pytest.mark.parametrize("where", ["analyze", "verify", "facebank add", "infer_on_video",
                                   "take_pic", "viewer", "gui"])
def test_every_tool_takes_precision(where, capsys):
    """--precision auto|fp32|int8 wherever models are chosen; another value is argparse's
    one-line usage error (exit code 2)."""
    from scripts import load_script

    if where in ("infer_on_video", "take_pic"):
        parser = load_script(f"apps/{where}.py").build_parser()
        head = ["-f", "clip.mp4"] if where == "infer_on_video" else ["-n", "Ann"]
    elif where == "viewer":
        from mobileface.gui import build_parser as viewer_parser

        parser, head = viewer_parser(), []
    else:
        parser = build_parser()
        head = {"analyze": ["analyze", "x.jpg"], "verify": ["verify", "a.jpg", "b.jpg"],
                "facebank add": ["facebank", "add", "Ann", "a.jpg"], "gui": ["gui"]}[where]
    assert parser.parse_args(head).precision == "auto"
    assert parser.parse_args(head + ["--precision", "int8"]).precision == "int8"
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(head + ["--precision", "fp16"])
    assert exit_.value.code == 2 and "--precision" in capsys.readouterr().err


def test_models_quantize_options():
    args = build_parser().parse_args(["models", "quantize", "--models", "embed",
                                      "--max-age-diff", "0"])
    assert (args.models_command, args.models, args.max_age_diff) == ("quantize", "embed", 0.0)
    assert build_parser().parse_args(["models"]).models_command is None


@pytest.mark.parametrize("script", ["apps/infer_on_video.py", "apps/viewer.py"])
def test_detect_every_below_one_is_one_line_and_exit_2(script, tmp_path):
    import subprocess
    import sys

    clip = tmp_path / "in.mp4"
    clip.write_bytes(b"")                 # never opened: the option is checked first
    args = ["-f", str(clip), "-s", str(tmp_path / "out.mp4")] if "infer" in script else []
    done = subprocess.run([sys.executable, script, *args, "--detect-every", "0"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == ["mobileface: error: --detect-every must be >= 1, "
                                                "got 0"]
