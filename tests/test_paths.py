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
